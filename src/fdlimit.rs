//! Open files: a site is one TLS connection per BMC, and the simulator is
//! one listener and one connection per BMC, so thousands of descriptors.
//! Many systems start processes with a soft limit of 1,024 under a much
//! higher hard limit; kiln raises its own soft limit to the hard one.

use std::time::Duration;

/// Raises the soft open-files limit to the hard limit; returns the limit
/// now in force (`None` where it cannot be read).
pub fn raise() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Waits after a failed `accept`. When descriptors run out (EMFILE) the
/// pending connection stays queued and the listener stays readable, so
/// retrying at once would spin a core and starve every other task.
pub async fn accept_failed(error: &std::io::Error) {
    tracing::warn!("cannot accept a connection: {error}; retrying in 50 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
