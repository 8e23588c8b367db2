//! What a run is asked to do, independent of clap so `kiln demo` and the
//! benchmarks can ask for runs too, and how it ended.

use std::path::PathBuf;
use std::time::Duration;

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

/// The imaging stage's flags.
#[derive(Clone, Debug, Default)]
pub struct ImagingRequest {
    /// `--bind` (default `0.0.0.0:8080`).
    pub bind: Option<std::net::SocketAddr>,
    /// `--advertise`.
    pub advertise: Option<String>,
    /// `--iso`.
    pub iso: Option<PathBuf>,
    /// `--iso-dir` / `--image-dir`.
    pub iso_dir: Option<PathBuf>,
    /// `--deploy-env` (default: the state folder's `deploy-env/`).
    pub deploy_env: Option<PathBuf>,
    /// `--advertise-bmc`: where BMCs fetch virtual media.
    pub advertise_bmc: Option<String>,
    /// `--boot-timeout`: power-on to the deploy agent's first call
    /// (default 15 minutes).
    pub boot_timeout: Option<Duration>,
    /// `--reimage`.
    pub reimage: bool,
    /// Have each deploy agent time a plain copy of the image first
    /// (`kiln bench deploy`).
    pub bench_peer: bool,
    /// `--install-timeout` (default 60 minutes).
    pub install_timeout: Option<Duration>,
    /// Longest wait from the install call-back to a verified SSH login
    /// (default 10 minutes).
    pub ssh_timeout: Option<Duration>,
    /// Poll interval for BMC read-backs (default 1 s).
    pub poll: Option<Duration>,
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
