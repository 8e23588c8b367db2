//! The handoff stage's run-wide setup: signing key, targets and tokens
//! read once for the run's racks; the run's SSH pool is added when it
//! starts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::handoff::HandoffSetup;
use crate::inventory::{Inventory, Node};
use crate::pipeline::prepare::{Prepare, PrepareCx, PreparedValue, StartCx};
use crate::pipeline::stages::StageFuture;

/// The handoff's setup, read and checked, waiting for the run's SSH pool.
pub struct Handoff(HandoffSetup);

impl Handoff {
    /// Reads what the handoff needs for the run's nodes.
    pub fn read(run: &PrepareCx<'_>) -> anyhow::Result<Handoff> {
        prepare_handoff(
            run.inventory,
            run.inventory_path,
            run.state,
            run.nodes,
            run.handoff_retry,
        )
        .map(Handoff)
    }
}

impl Prepare for Handoff {
    fn start<'a>(
        self: Box<Self>,
        cx: StartCx<'a>,
    ) -> StageFuture<'a, anyhow::Result<PreparedValue>> {
        let mut setup = self.0;
        setup.pool = Some(Arc::clone(cx.pool));
        Box::pin(async move { Ok(Arc::new(setup) as PreparedValue) })
    }
}

/// Reads what the handoff stage needs for `nodes`' racks; the SSH pool is
/// added once the run has one. An error here would fail every node alike.
pub fn prepare_handoff(
    inventory: &Inventory,
    inventory_path: &Path,
    state: &Path,
    nodes: &[&Node],
    retry: Option<Duration>,
) -> anyhow::Result<HandoffSetup> {
    let bytes = std::fs::read(inventory_path)
        .with_context(|| format!("cannot read {}", inventory_path.display()))?;
    let mut racks: Vec<&str> = nodes.iter().map(|n| n.rack.as_str()).collect();
    racks.dedup();
    let mut setup = HandoffSetup::prepare(inventory, &bytes, state, &racks)?;
    if let Some(base) = retry {
        setup.retry_base = base;
    }
    Ok(setup)
}
