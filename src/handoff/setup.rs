//! What the handoff stage needs for a whole run, prepared by the command
//! before the run starts. Kept apart from the stage itself so that the
//! pipeline's node context can hold it without depending on the stage.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;

use crate::handoff::record::RunFacts;
use crate::handoff::sign::SiteKey;
use crate::inventory::handoff::{HandoffTarget, HandoffTargets, SlurmVia};
use crate::inventory::{Inventory, Mac};
use crate::ssh::Pool;

/// What the handoff stage needs for a whole run.
pub struct HandoffSetup {
    /// Targets per rack.
    pub targets: HandoffTargets,
    /// The site's signing key.
    pub key: Arc<SiteKey>,
    /// Site, kiln version and the inventory's digest.
    pub facts: RunFacts,
    /// Labels and install MAC of every inventory node, by name.
    pub nodes: HashMap<String, (std::collections::BTreeMap<String, String>, Option<Mac>)>,
    /// SSH pool for `scontrol` on a controller (and the node joins).
    pub pool: Option<Arc<Pool>>,
    /// First pause between webhook attempts (doubles each time).
    pub retry_base: Duration,
    /// How long a joined node may take to register with Kubernetes.
    pub join_wait: Duration,
    /// How many nodes are handed off at once, over the whole run.
    pub concurrency: usize,
    /// The slots behind `concurrency`, made on first use (after the
    /// command set `concurrency`) and shared by every rack's handoff.
    gate: OnceLock<Arc<tokio::sync::Semaphore>>,
}

impl HandoffSetup {
    /// Everything but the pool, from the inventory and the state folder;
    /// a missing key or an unreadable token is an error that would fail
    /// every node alike.
    pub fn prepare(
        inventory: &Inventory,
        inventory_bytes: &[u8],
        state: &std::path::Path,
        racks: &[&str],
    ) -> anyhow::Result<HandoffSetup> {
        use sha2::Digest as _;
        let mut problems = Vec::new();
        for rack in racks {
            let targets = inventory.handoff.for_rack(rack);
            if targets.is_empty() {
                problems.push(format!(
                    "rack {rack} has no handoff targets: add `handoff:` to `defaults` or the rack"
                ));
            }
            for t in targets {
                if let Err(e) = check_secrets(t) {
                    problems.push(format!("rack {rack}: {} : {e}", t.describe()));
                }
            }
        }
        let key = match SiteKey::load(state) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        problems.sort();
        problems.dedup();
        if !problems.is_empty() || key.is_none() {
            return Err(crate::exit::BadInput(problems.join("\n")).into());
        }
        let key = key.context("no site key")?;
        let digest = sha2::Sha256::digest(inventory_bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(HandoffSetup {
            targets: inventory.handoff.clone(),
            key: Arc::new(key),
            facts: RunFacts {
                site: inventory.site.clone(),
                inventory_sha256: format!("sha256:{hex}"),
                kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
                ..RunFacts::default()
            },
            nodes: inventory
                .nodes
                .iter()
                .map(|n| (n.name.clone(), (n.labels.clone(), n.mac)))
                .collect(),
            pool: None,
            retry_base: Duration::from_secs(1),
            join_wait: Duration::from_secs(300),
            concurrency: 32,
            gate: OnceLock::new(),
        })
    }

    /// The run-wide handoff slots: every rack's handoff takes one per node,
    /// so racks handing off at once stay within `concurrency` together.
    pub fn gate(&self) -> Arc<tokio::sync::Semaphore> {
        Arc::clone(
            self.gate
                .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(self.concurrency.max(1)))),
        )
    }
}

fn check_secrets(t: &HandoffTarget) -> anyhow::Result<()> {
    match t {
        HandoffTarget::Webhook(w) => {
            if let Some(s) = &w.token {
                s.resolve()?;
            }
        }
        HandoffTarget::Slurm(s) => {
            if let SlurmVia::Restd { token, .. } = &s.via {
                token.resolve()?;
            }
        }
        HandoffTarget::Kubernetes(k) => {
            k.token.resolve()?;
            if let Some(j) = &k.join {
                j.token.resolve()?;
            }
        }
    }
    Ok(())
}
