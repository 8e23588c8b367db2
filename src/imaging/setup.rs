//! The imaging stage's run-wide parts, built once per run and shared by
//! every node's imaging, and the operator's options they are built from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::bmc::ops::Waits;
use crate::imaging::deploy::Deadlines;
use crate::imaging::server::BootServer;

/// The imaging stage's run-wide parts.
pub struct ImagingSetup {
    /// The boot server every node's BMC fetches its installer from.
    pub server: Arc<BootServer>,
    /// What each image profile boots and writes, by profile name.
    pub installers: HashMap<String, crate::imaging::Media>,
    /// Step deadlines.
    pub deadlines: Deadlines,
    /// BMC read-back waits.
    pub waits: Waits,
    /// Reimage nodes that already run their profile's OS.
    pub reimage: bool,
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
