//! Ctrl-C during a run: stop gently the first time, at once the second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Notice, Report};
use crate::exit::ExitStatus;
use crate::pipeline::gates::Gates;
use crate::pipeline::journal::RunJournal;
use crate::pipeline::progress::Progress;
use crate::pipeline::record::RunState;

/// Ctrl-C once: finish running steps, start nothing new. Twice: record
/// the run as interrupted and leave at once.
pub(super) async fn watch_ctrl_c(
    stopping: Arc<AtomicBool>,
    gates: Arc<Gates>,
    progress: Arc<Progress>,
    run: Arc<RunJournal>,
    report: Report,
) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    stopping.store(true, Ordering::SeqCst);
    gates.close();
    run.event(None, "interrupt", "Ctrl-C: finishing running steps");
    progress
        .note("stopping: running steps finish, nothing new starts (Ctrl-C again to abort at once)");
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    run.event(None, "abort", "second Ctrl-C: aborted");
    run.finish(RunState::Interrupted);
    progress.finish();
    report(Notice::Aborted {
        run: run.run_id().to_owned(),
    });
    std::process::exit(i32::from(ExitStatus::NodeFailed.code()));
}
