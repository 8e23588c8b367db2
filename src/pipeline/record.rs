//! What a run leaves behind: the shape the journal stores, `kiln runs show`
//! prints and every report format renders. Plain data, serialisable, with
//! no behaviour beyond small helpers, so reports can be tested without a run.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMs = u64;

/// The whole record of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run itself.
    pub run: RunInfo,
    /// One entry per node the run selected, in inventory order.
    pub nodes: Vec<NodeRecord>,
}

/// A run's identity and state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run's id, e.g. `20261125-101500-3f9a`.
    pub id: String,
    /// The inventory's site name.
    pub site: String,
    /// The inventory file the run was started from.
    pub inventory: String,
    /// The stages the run was asked to go through, in order.
    pub stages: Vec<String>,
    /// When the run started.
    pub started_ms: UnixMs,
    /// When it ended (the last time, for a resumed run); `None` while running.
    pub finished_ms: Option<UnixMs>,
    /// Where it stands.
    pub state: RunState,
    /// The kiln version that ran it.
    pub kiln_version: String,
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Running now, or killed without a chance to record it (resumable).
    #[default]
    Running,
    /// Stopped by Ctrl-C after the safe steps finished (resumable).
    Interrupted,
    /// Every selected node reached a verdict.
    Finished,
}

/// One node's record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// Its rack.
    pub rack: String,
    /// Its hardware profile's name.
    pub hardware: String,
    /// The verdict so far.
    pub verdict: NodeVerdict,
    /// The stage that failed it, if any.
    pub failed_stage: Option<String>,
    /// Why it is not accepted, one technician-readable sentence each.
    pub reasons: Vec<String>,
    /// Its steps, in the order they ran.
    pub steps: Vec<StepRecord>,
}

impl NodeRecord {
    /// A node of the inventory as a new run records it: pending, no steps.
    pub fn pending(node: &crate::inventory::Node) -> NodeRecord {
        NodeRecord {
            name: node.name.clone(),
            rack: node.rack.clone(),
            hardware: node.hardware.clone(),
            ..NodeRecord::default()
        }
    }
}

/// A node's verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeVerdict {
    /// Not yet through all of its stages.
    #[default]
    Pending,
    /// Passed every stage the run asked for.
    Accepted,
    /// A check failed; `reasons` say what.
    Failed,
    /// A check could not be completed (skipped diagnostics, no data), so the
    /// node is not proven good; `reasons` say what.
    Unverified,
}

impl NodeVerdict {
    /// The lower-case word used in tables and reports.
    pub fn word(self) -> &'static str {
        match self {
            NodeVerdict::Pending => "pending",
            NodeVerdict::Accepted => "accepted",
            NodeVerdict::Failed => "failed",
            NodeVerdict::Unverified => "unverified",
        }
    }
}

/// One step of one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The stage it belongs to (`preflight`, `image`, `burnin`, …).
    pub stage: String,
    /// The step's name within the stage (`power-off`, `insert-media`, …).
    pub step: String,
    /// How it ended.
    pub status: StepStatus,
    /// When it started.
    pub started_ms: Option<UnixMs>,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// One line on what it did or found (`ubuntu 24.04, kernel 6.8.0-45`).
    pub detail: String,
    /// Why it failed or could not verify (empty otherwise).
    pub reasons: Vec<String>,
    /// Measurements, in the shapes described in [`metrics`].
    pub metrics: Value,
    /// Raw outputs kept for it, relative to the run folder.
    pub artifacts: Vec<String>,
    /// HTTP requests the node's BMC client sent during the step (retries
    /// and logins included); absent for a step that sent none, and in
    /// journals written before it was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_requests: Option<u64>,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    #[default]
    Pending,
    /// Started and not yet ended.
    Running,
    /// Did what it had to.
    Done,
    /// Found its work already done (resume, idempotence) or not needed.
    Skipped,
    /// Failed; the node stops here.
    Failed,
    /// Could not prove the result either way; the node stops here.
    Unverified,
}

impl StepStatus {
    /// The status as records and reports spell it (its serde name).
    pub fn word(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Done => "done",
            StepStatus::Skipped => "skipped",
            StepStatus::Failed => "failed",
            StepStatus::Unverified => "unverified",
        }
    }
}

/// A step's metrics as a type: the step that writes them and the readers
/// (handoff, reports, later steps) share one definition, so renaming a key
/// or a step cannot silently turn a signed record's fields "not recorded".
/// Implementations keep today's JSON keys (serde renames) so old journals
/// still read and old records still verify.
pub trait StepMetrics: Serialize + DeserializeOwned {
    /// The stage of the step that writes them.
    const STAGE: &'static str;
    /// The step that writes them.
    const STEP: &'static str;

    /// Reads them from a step's metrics; `None` when they do not fit.
    fn from_metrics(metrics: &Value) -> Option<Self> {
        Self::deserialize(metrics).ok()
    }

    /// Them as a step's metrics.
    fn to_metrics(&self) -> Value {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Declares one step's metrics type: the struct with the derives all step
/// metrics share, every field defaulting (a journal from an older kiln may
/// lack one), and its [`StepMetrics`] stage and step names.
macro_rules! step_metrics {
    ($stage:expr, $step:literal, $(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name { $($body)* }

        impl $crate::pipeline::record::StepMetrics for $name {
            const STAGE: &'static str = $stage;
            const STEP: &'static str = $step;
        }
    };
}
pub(crate) use step_metrics;

/// The latest value `pick` finds in the metrics of `node`'s
/// `T::STAGE`/`T::STEP` steps, newest first: a step that did not record a
/// part leaves an earlier step's part in force.
pub fn latest<T: StepMetrics, V>(node: &NodeRecord, pick: impl Fn(T) -> Option<V>) -> Option<V> {
    node.steps
        .iter()
        .rev()
        .filter(|s| s.stage == T::STAGE && s.step == T::STEP)
        .filter_map(|s| T::from_metrics(&s.metrics))
        .find_map(pick)
}

/// Conventions for [`StepRecord::metrics`] that reports plot.
///
/// - `burnin` steps: `{"telemetry": [{"t_s": 0.0, "gpu": 0, "temp_c": 41.0,
///   "power_w": 650.0, "sm_mhz": 1980.0}, …], "gflops": [per-GPU numbers]}`.
/// - `nccl` steps: the `nccl-tests` judge's metrics (`rows` of `size`,
///   `busbw_out_of_place`, `busbw_in_place`; `busbw_floor`; `test`; `hosts`).
/// - any step: `{"judgement": {kind, verdict, reasons}}` when it judged
///   a tool's output.
pub mod metrics {}
