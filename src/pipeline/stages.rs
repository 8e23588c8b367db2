//! The stage contract: what every stage states about itself ([`StageDef`])
//! and the cheap handle ([`Stage`]) the plan, the engine and the records
//! pass around. The stages themselves and their order live in the
//! registry (the crate's `stages` folder), whose handles reach the engine
//! through the run's [`Setup`]; the pipeline never names a stage.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use crate::inventory::Inventory;
use crate::pipeline::node::NodeCx;
use crate::pipeline::prepare::{Prepare, PrepareCx};
use crate::pipeline::setup::Setup;
use crate::pipeline::step::{Outcome, StepSink, Steps, Stop};

/// A stage's boxed future: a node's task then holds only the stage it is
/// in, not space for the largest one, which matters with 12,500 node tasks
/// alive at once.
pub type StageFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a rack part decided: an outcome for each node it has something to
/// say about (the others pass); `Err(())` when it could not decide (a stop,
/// or the journal unreadable), which leaves the nodes pending.
pub type RackVerdicts = Result<HashMap<String, Outcome>, ()>;

/// Whether a stage works on one node at a time, on a rack's nodes
/// together, or after all of a rack's other stages (the run's last step
/// for those nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Each node on its own.
    Node,
    /// Each node's own part, then the rack's surviving nodes together
    /// (cross-node measurements).
    Rack,
    /// Last in the run, once per rack as soon as that rack's other stages
    /// ended, over that rack's nodes (handoff), while other racks still
    /// work; such a stage decides the verdicts of the nodes that reached it.
    Run,
}

/// What a stage states about itself; every field is required, so a new
/// stage cannot inherit a scope or a "not destructive" by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct About {
    /// The stage's name on the command line, in the journal and records.
    pub name: &'static str,
    /// How the stage is scheduled.
    pub scope: Scope,
    /// Whether the stage changes the node (power, disks, packages): such
    /// stages need `--allow-in-service` for nodes marked `in_service`.
    pub destructive: bool,
}

/// A node's own work in a stage.
pub type NodeWork<'a> = StageFuture<'a, Result<(), Stop>>;

/// What a stage's rack part works on.
#[derive(Clone, Copy)]
pub struct RackCx<'a> {
    /// The run.
    pub setup: &'a Setup,
    /// Where the rack's own steps are recorded.
    pub sink: &'a Arc<dyn StepSink>,
    /// One rack's nodes of one hardware profile, each past its own part.
    pub group: &'a [Arc<NodeCx>],
}

/// One stage of provisioning. [`StageDef::about`] and the node's own part
/// have no default: a new stage must state them.
pub trait StageDef: Send + Sync + 'static {
    /// Its name, scope and whether it is destructive.
    fn about(&self) -> About;

    /// Whether the stage is planned when the operator names no stages
    /// (handoff only where the inventory says where to hand off).
    fn in_default_plan(&self, _inventory: &Inventory) -> bool {
        true
    }

    /// The stage's run-wide setup: checks what would fail every node alike
    /// and returns what to start once the run goes (see
    /// [`crate::pipeline::prepare`]); by default nothing.
    fn prepare(&self, _run: &PrepareCx<'_>) -> anyhow::Result<Option<Box<dyn Prepare>>> {
        Ok(None)
    }

    /// The node's own work (for a rack stage: before the rack part).
    fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a>;

    /// The journal step under which each node records the rack part's
    /// verdict (rack stages only).
    fn rack_step(&self) -> &'static str {
        "rack"
    }

    /// The rack part (rack stages only): compares the nodes of `rack.group`
    /// (one rack, one hardware profile), all of which passed their own part.
    fn run_rack<'a>(&'a self, _rack: RackCx<'a>) -> StageFuture<'a, RackVerdicts> {
        Box::pin(async { Ok(HashMap::new()) })
    }

    /// The run stage's part (run stages only), once `rack`'s other stages
    /// ended: `passed` are the rack's nodes that passed every stage before
    /// it; it must touch no node of another rack. Returns `true` when a
    /// stop left some node pending.
    fn run_after_rack<'a>(
        &'a self,
        _setup: &'a Arc<Setup>,
        _sink: &'a Arc<dyn StepSink>,
        _rack: &'a str,
        _passed: Vec<Arc<NodeCx>>,
    ) -> StageFuture<'a, bool> {
        Box::pin(async { false })
    }
}

/// A handle on a registered stage: its place in the pipeline and its
/// definition. Cheap to copy; compared and ordered by pipeline place.
#[derive(Clone, Copy)]
pub struct Stage {
    order: u8,
    def: &'static dyn StageDef,
}

impl Stage {
    /// A handle for the stage `def` at place `order` of the pipeline (the
    /// registry's business).
    pub const fn new(order: u8, def: &'static dyn StageDef) -> Stage {
        Stage { order, def }
    }

    /// The stage's name on the command line and in records.
    pub fn name(self) -> &'static str {
        self.def.about().name
    }

    /// How the stage is scheduled.
    pub fn scope(self) -> Scope {
        self.def.about().scope
    }

    /// Whether the stage changes the node: see [`About::destructive`].
    pub fn destructive(self) -> bool {
        self.def.about().destructive
    }

    /// The stage's definition, for the engine to run.
    pub fn def(self) -> &'static dyn StageDef {
        self.def
    }
}

impl PartialEq for Stage {
    fn eq(&self, other: &Stage) -> bool {
        self.order == other.order
    }
}

impl Eq for Stage {}

impl PartialOrd for Stage {
    fn partial_cmp(&self, other: &Stage) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Stage {
    fn cmp(&self, other: &Stage) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

impl Hash for Stage {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.order.hash(state);
    }
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
