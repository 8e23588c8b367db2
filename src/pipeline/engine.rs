//! The engine: every selected node goes through the planned stages as its
//! own task, bounded by the site's gates. Stages that work on one node run
//! back to back per node; a rack-scoped stage waits for the rack's
//! surviving nodes and then works on them together. One node's failure
//! never stops the others unless `fail_fast` is set.
//!
//! Stopping (Ctrl-C): the `stopping` flag stops every node before its next
//! step and the gates admit no new node; steps already running finish and
//! are recorded. Nodes left pending keep the run resumable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinSet;

use crate::pipeline::gates::Gates;
use crate::pipeline::journal::RunJournal;
use crate::pipeline::node::NodeCx;
use crate::pipeline::preflight;
use crate::pipeline::progress::Progress;
use crate::pipeline::record::{NodeVerdict, RunRecord, RunState, StepRecord, StepStatus, UnixMs};
use crate::pipeline::stages::{Scope, Stage};
use crate::pipeline::step::{StepSink, Steps, Stop};

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
}

/// How one node's segment ended.
enum NodeEnd {
    Passed,
    Stopped,
    Interrupted,
}

/// Records steps in the journal and shows them.
struct Sink {
    journal: Arc<RunJournal>,
    progress: Arc<Progress>,
    racks: HashMap<String, String>,
}

impl Sink {
    fn rack(&self, node: &str) -> &str {
        self.racks.get(node).map(String::as_str).unwrap_or("")
    }
}

impl StepSink for Sink {
    fn finished_before(&self, node: &str, stage: &str, step: &str) -> Option<StepRecord> {
        self.journal.finished_before(node, stage, step)
    }

    fn started(&self, node: &str, stage: &str, step: &str, at: UnixMs) {
        self.journal.started(node, stage, step, at);
        self.progress
            .step_started(node, self.rack(node), stage, step);
    }

    fn ended(&self, node: &str, record: &StepRecord) {
        self.journal.ended(node, record);
        self.progress.step_ended(node, self.rack(node), record);
    }
}

/// Runs the plan to its end (or to a stop) and returns the run's record.
pub async fn run(setup: Setup) -> anyhow::Result<RunRecord> {
    let setup = Arc::new(setup);
    let sink: Arc<dyn StepSink> = Arc::new(Sink {
        journal: Arc::clone(&setup.journal),
        progress: Arc::clone(&setup.progress),
        racks: setup
            .nodes
            .iter()
            .map(|cx| (cx.node.name.clone(), cx.node.rack.clone()))
            .collect(),
    });
    let mut racks: Vec<(String, Vec<Arc<NodeCx>>)> = Vec::new();
    for cx in &setup.nodes {
        match racks.iter_mut().find(|(r, _)| *r == cx.node.rack) {
            Some((_, nodes)) => nodes.push(Arc::clone(cx)),
            None => racks.push((cx.node.rack.clone(), vec![Arc::clone(cx)])),
        }
    }
    let mut tasks = JoinSet::new();
    for (_, nodes) in racks {
        let setup = Arc::clone(&setup);
        let sink = Arc::clone(&sink);
        tasks.spawn(async move { run_rack(setup, sink, nodes).await });
    }
    let mut interrupted = false;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(rack_interrupted) => interrupted |= rack_interrupted,
            Err(e) => anyhow::bail!("a rack's task failed: {e}"),
        }
    }
    let state = if interrupted || setup.stopping.load(Ordering::SeqCst) {
        RunState::Interrupted
    } else {
        RunState::Finished
    };
    setup.journal.finish(state);
    setup.progress.finish();
    let record = setup.journal.load()?;
    // A fail-fast stop leaves nodes pending; the run is then not finished.
    if record
        .nodes
        .iter()
        .any(|n| n.verdict == NodeVerdict::Pending)
        && state == RunState::Finished
    {
        setup.journal.finish(RunState::Interrupted);
        return setup.journal.load();
    }
    Ok(record)
}

/// Consecutive node-scoped stages, or one rack-scoped stage.
fn segments(stages: &[Stage]) -> Vec<(Scope, Vec<Stage>)> {
    let mut out: Vec<(Scope, Vec<Stage>)> = Vec::new();
    for &stage in stages {
        match (stage.scope(), out.last_mut()) {
            (Scope::Node, Some((Scope::Node, v))) => v.push(stage),
            (scope, _) => out.push((scope, vec![stage])),
        }
    }
    out
}

/// Runs one rack; `true` if some node was left pending by a stop.
async fn run_rack(setup: Arc<Setup>, sink: Arc<dyn StepSink>, nodes: Vec<Arc<NodeCx>>) -> bool {
    let mut alive = nodes;
    let mut interrupted = false;
    for (scope, stages) in segments(&setup.stages) {
        if alive.is_empty() {
            break;
        }
        match scope {
            Scope::Node => {
                let mut tasks = JoinSet::new();
                for cx in &alive {
                    let (setup, sink, cx, stages) = (
                        Arc::clone(&setup),
                        Arc::clone(&sink),
                        Arc::clone(cx),
                        stages.clone(),
                    );
                    tasks.spawn(async move {
                        let end = run_node(&setup, &sink, &cx, &stages).await;
                        (cx, end)
                    });
                }
                let mut next = Vec::new();
                while let Some(done) = tasks.join_next().await {
                    match done {
                        Ok((cx, NodeEnd::Passed)) => next.push(cx),
                        Ok((_, NodeEnd::Stopped)) => {}
                        Ok((_, NodeEnd::Interrupted)) => interrupted = true,
                        Err(e) => {
                            tracing::error!("a node's task failed: {e}");
                            interrupted = true;
                        }
                    }
                }
                // Keep inventory order for the rack stage and the verdicts.
                next.sort_by_key(|cx| {
                    alive
                        .iter()
                        .position(|a| Arc::ptr_eq(a, cx))
                        .unwrap_or(usize::MAX)
                });
                alive = next;
            }
            Scope::Rack => {
                // No rack-scoped stage is built yet; `Stage::scope` says
                // Node for all of them until the cross-node NCCL stage lands.
            }
        }
    }
    if setup.stopping.load(Ordering::SeqCst) && !alive.is_empty() {
        // Stopped between segments: the survivors are not done.
        return true;
    }
    for cx in alive {
        setup
            .journal
            .set_verdict(&cx.node.name, NodeVerdict::Accepted, None, &[]);
        setup.progress.node_finished(
            &cx.node.name,
            &cx.node.rack,
            NodeVerdict::Accepted,
            None,
            &[],
        );
    }
    interrupted
}

/// Runs one node through `stages`, holding a node slot throughout.
async fn run_node(
    setup: &Setup,
    sink: &Arc<dyn StepSink>,
    cx: &NodeCx,
    stages: &[Stage],
) -> NodeEnd {
    if setup.stopping.load(Ordering::SeqCst) {
        return NodeEnd::Interrupted;
    }
    let Some(_permit) = setup.gates.node(&cx.node.rack).await else {
        return NodeEnd::Interrupted;
    };
    for &stage in stages {
        let mut steps = Steps::new(
            cx.node.name.clone(),
            stage.name(),
            Arc::clone(sink),
            Arc::clone(&setup.stopping),
        );
        let result = match stage {
            Stage::Preflight => preflight::run(cx, &mut steps).await,
            other => Err(Stop::Failed {
                step: "start",
                outcome: Box::new(crate::pipeline::step::Outcome::failed(format!(
                    "stage {other} is not built into this kiln"
                ))),
            }),
        };
        match result {
            Ok(()) => {}
            Err(Stop::Interrupted(_)) => return NodeEnd::Interrupted,
            Err(Stop::Failed { step, outcome }) => {
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
                return NodeEnd::Stopped;
            }
        }
    }
    NodeEnd::Passed
}
