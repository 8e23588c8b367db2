//! What a run shares with its stages: the [`Setup`] the command builds and
//! [`fail_node`], which records a node's failure. Kept apart from the
//! engine so that stages (handoff) can use them without depending on the
//! engine that calls them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::pipeline::gates::Gates;
use crate::pipeline::journal::RunJournal;
use crate::pipeline::node::NodeCx;
use crate::pipeline::progress::Progress;
use crate::pipeline::record::{NodeVerdict, StepStatus};
use crate::pipeline::stages::Stage;
use crate::pipeline::step::Outcome;

/// Everything a run needs, built by the command.
pub struct Setup {
    /// The nodes to work on (on resume: the ones still pending), each with
    /// its context.
    pub nodes: Vec<Arc<NodeCx>>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// The run's journal.
    pub journal: Arc<RunJournal>,
    /// The run folder.
    pub run_dir: PathBuf,
    /// The site's gates.
    pub gates: Arc<Gates>,
    /// The live display.
    pub progress: Arc<Progress>,
    /// Stop every node at its first failure's news.
    pub fail_fast: bool,
    /// Set by Ctrl-C (or fail-fast): start no new step.
    pub stopping: Arc<AtomicBool>,
    /// `--allow-in-service`: destructive stages may work on nodes marked
    /// `in_service` (the engine refuses them otherwise, as a second line
    /// behind the run's up-front check).
    pub allow_in_service: bool,
}

/// Records a node's failure: verdict, event, progress; with fail-fast,
/// stops the run.
pub(crate) fn fail_node(setup: &Setup, cx: &NodeCx, stage: Stage, step: &str, outcome: &Outcome) {
    let verdict = if outcome.status == StepStatus::Unverified {
        NodeVerdict::Unverified
    } else {
        NodeVerdict::Failed
    };
    let reasons = if outcome.reasons.is_empty() {
        vec![outcome.detail.clone()]
    } else {
        outcome.reasons.clone()
    };
    setup
        .journal
        .set_verdict(&cx.node.name, verdict, Some(stage.name()), &reasons);
    setup.journal.event(
        Some(&cx.node.name),
        verdict.word(),
        &format!("{stage}/{step}: {}", reasons.join("; ")),
    );
    setup.progress.node_finished(
        &cx.node.name,
        &cx.node.rack,
        verdict,
        Some(stage.name()),
        &reasons,
    );
    if setup.fail_fast {
        setup.stopping.store(true, Ordering::SeqCst);
        setup.gates.close();
    }
}
