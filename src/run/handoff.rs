//! The handoff stage's preparation: signing key, targets and tokens read
//! once for the run's racks. (To become the handoff stage's `prepare`
//! hook.)

use std::path::Path;

use anyhow::Context as _;

use super::Request;
use crate::handoff::HandoffSetup;
use crate::inventory::{Inventory, Node};

/// Reads what the handoff stage needs for `nodes`' racks; the SSH pool is
/// added once the run has one. An error here would fail every node alike.
pub fn prepare_handoff(
    inventory: &Inventory,
    inventory_path: &Path,
    state: &Path,
    nodes: &[&Node],
    request: &Request,
) -> anyhow::Result<HandoffSetup> {
    let bytes = std::fs::read(inventory_path)
        .with_context(|| format!("cannot read {}", inventory_path.display()))?;
    let mut racks: Vec<&str> = nodes.iter().map(|n| n.rack.as_str()).collect();
    racks.dedup();
    let mut setup = HandoffSetup::prepare(inventory, &bytes, state, &racks)?;
    if let Some(base) = request.handoff_retry {
        setup.retry_base = base;
    }
    Ok(setup)
}
