//! What a run is asked to do, independent of clap so `kiln demo` and the
//! benchmarks can ask for runs too, and how it ended.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::imaging::setup::ImagingRequest;

use crate::exit::ExitStatus;
use crate::pipeline::record::{NodeVerdict, RunRecord, RunState};

/// What to run: the command's flags.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Node selection.
    pub select: Option<String>,
    /// `--stages`.
    pub stages: Option<String>,
    /// `--until`.
    pub until: Option<String>,
    /// `--resume [RUN]`: `Some("")` for the newest run.
    pub resume: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--fail-fast`.
    pub fail_fast: bool,
    /// `--allow-in-service`.
    pub allow_in_service: bool,
    /// `--concurrency`.
    pub concurrency: Option<usize>,
    /// Per-request Redfish timeout.
    pub bmc_timeout: Option<Duration>,
    /// The imaging stage's options.
    pub imaging: ImagingRequest,
    /// First pause between webhook attempts (default 1 s; tests shorten it).
    pub handoff_retry: Option<Duration>,
}

/// How a run ended, for the caller to print and exit with.
pub struct Finished {
    /// The record as the journal has it.
    pub record: RunRecord,
    /// Where the journal and run folders are.
    pub state: PathBuf,
}

impl Finished {
    /// 0 when every node was accepted, 1 otherwise (failed, unverified, or
    /// left pending by a stop).
    pub fn status(&self) -> ExitStatus {
        if self.record.run.state == RunState::Finished
            && self
                .record
                .nodes
                .iter()
                .all(|n| n.verdict == NodeVerdict::Accepted)
        {
            ExitStatus::Success
        } else {
            ExitStatus::NodeFailed
        }
    }
}
