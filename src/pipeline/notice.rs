//! What a run tells the operator while it runs ([`Notice`]) and where it
//! goes ([`Report`]): stages report through it too (the boot server's
//! address), so it lives with the pipeline rather than with the run.

use std::sync::Arc;

/// Something the run tells the operator, for the command to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The boot server listens at `url`.
    BootServer {
        /// Its base URL.
        url: String,
    },
    /// A second Ctrl-C aborted run `run`; the process exits right after.
    Aborted {
        /// The run's id, to resume it.
        run: String,
    },
}

/// Where a run sends its [`Notice`]s (also from the Ctrl-C watcher, hence
/// shared and thread-safe).
pub type Report = Arc<dyn Fn(Notice) + Send + Sync>;
