//! The engine: every selected node goes through the planned stages as its
//! own task, bounded by the site's gates. Stages that work on one node run
//! back to back per node; a rack-scoped stage waits for the rack's
//! surviving nodes and then works on them together. One node's failure
//! never stops the others unless `fail_fast` is set.
//!
//! A run-scoped stage (handoff) runs for each rack as soon as that rack's
//! task ends, over that rack's nodes, while other racks still work.
//!
//! Stopping (Ctrl-C): the `stopping` flag stops every node before its next
//! step and the gates admit no new node; steps already running finish and
//! are recorded. Nodes left pending keep the run resumable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::pipeline::journal::RunJournal;
use crate::pipeline::node::NodeCx;
use crate::pipeline::progress::Progress;
use crate::pipeline::record::{NodeVerdict, RunRecord, RunState, StepRecord, UnixMs};
use crate::pipeline::stages::{RackCx, Scope, Stage};
use crate::pipeline::step::Outcome;
use crate::pipeline::step::{Committed, StepSink, Steps, Stop};

pub use crate::pipeline::setup::Setup;
use crate::pipeline::setup::fail_node;

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

    fn ended(&self, node: &str, record: &StepRecord) -> Committed {
        let committed = self.journal.ended(node, record);
        self.progress.step_ended(node, self.rack(node), record);
        committed
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
    // Racks in inventory order; the index keeps grouping linear (a site of
    // 12,500 nodes has over 1,500 racks, and every rack waits for this).
    let mut racks: Vec<(String, Vec<Arc<NodeCx>>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for cx in &setup.nodes {
        let at = *index.entry(cx.node.rack.as_str()).or_insert_with(|| {
            racks.push((cx.node.rack.clone(), Vec::new()));
            racks.len() - 1
        });
        racks[at].1.push(Arc::clone(cx));
    }
    let worked: HashSet<String> = racks.iter().map(|(rack, _)| rack.clone()).collect();
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
    interrupted |= after_idle_racks(&setup, &sink, &worked).await?;
    let state = if interrupted || setup.stopping.load(Ordering::SeqCst) {
        RunState::Interrupted
    } else {
        RunState::Finished
    };
    setup.journal.finish(state);
    setup.progress.finish();
    // The summary needs verdicts and reasons; reports load the metrics.
    let record = setup.journal.load_summary()?;
    // A fail-fast stop leaves nodes pending; the run is then not finished.
    if record
        .nodes
        .iter()
        .any(|n| n.verdict == NodeVerdict::Pending)
        && state == RunState::Finished
    {
        setup.journal.finish(RunState::Interrupted);
        return setup.journal.load_summary();
    }
    Ok(record)
}

/// On a resume, a rack with no pending node gets no task, yet a stop may
/// have come before its run stage (handoff) ended: that stage runs for it
/// here, with no node to accept, so its failed nodes are still given back
/// (steps already journaled are skipped). `worked`: the racks that had a
/// task in this run. `true` if a stop left some node pending.
async fn after_idle_racks(
    setup: &Arc<Setup>,
    sink: &Arc<dyn StepSink>,
    worked: &HashSet<String>,
) -> anyhow::Result<bool> {
    if run_stages(&setup.stages).next().is_none() || setup.stopping.load(Ordering::SeqCst) {
        return Ok(false);
    }
    let mut idle = setup.journal.racks()?;
    idle.retain(|rack| !worked.contains(rack));
    let mut interrupted = false;
    for rack in &idle {
        for stage in run_stages(&setup.stages) {
            if setup.stopping.load(Ordering::SeqCst) {
                return Ok(true);
            }
            interrupted |= stage
                .def()
                .run_after_rack(setup, sink, rack, Vec::new())
                .await;
        }
    }
    Ok(interrupted)
}

/// The stages that run once a rack is done, over that rack's nodes.
fn run_stages(stages: &[Stage]) -> impl Iterator<Item = Stage> + '_ {
    stages.iter().copied().filter(|s| s.scope() == Scope::Run)
}

/// Consecutive node-scoped stages, or one rack-scoped stage (run-scoped
/// stages are left out: they run after the rack's other stages).
fn segments(stages: &[Stage]) -> Vec<(Scope, Vec<Stage>)> {
    let mut out: Vec<(Scope, Vec<Stage>)> = Vec::new();
    for &stage in stages.iter().filter(|s| s.scope() != Scope::Run) {
        match (stage.scope(), out.last_mut()) {
            (Scope::Node, Some((Scope::Node, v))) => v.push(stage),
            (scope, _) => out.push((scope, vec![stage])),
        }
    }
    out
}

/// Runs one rack; `true` if some node was left pending by a stop. With a
/// run stage (handoff) planned, the nodes that passed every stage go to it
/// right away instead of being accepted here, so the rack's nodes need not
/// wait for the slowest rack of the run.
async fn run_rack(setup: Arc<Setup>, sink: Arc<dyn StepSink>, nodes: Vec<Arc<NodeCx>>) -> bool {
    let rack = nodes
        .first()
        .map(|cx| cx.node.rack.clone())
        .unwrap_or_default();
    let mut alive = nodes;
    let mut interrupted = false;
    let plan = segments(&setup.stages);
    let count = plan.len();
    for (index, (scope, stages)) in plan.into_iter().enumerate() {
        if alive.is_empty() {
            break;
        }
        let last = index + 1 == count;
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
                        let end = run_node(&setup, &sink, &cx, &stages, last).await;
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
            Scope::Rack | Scope::Run => {
                for &stage in &stages {
                    let (survivors, stopped) =
                        rack_stage(&setup, &sink, stage, std::mem::take(&mut alive)).await;
                    interrupted |= stopped;
                    alive = survivors;
                }
            }
        }
    }
    if setup.stopping.load(Ordering::SeqCst) && !alive.is_empty() {
        // Stopped between segments: the survivors are not done.
        return true;
    }
    if run_stages(&setup.stages).next().is_some() {
        // A run stage (handoff) sees the rack's nodes: the survivors are
        // handed over, the failed given back; it decides the survivors'
        // verdicts. A stop skips it, leaving the run resumable.
        for stage in run_stages(&setup.stages) {
            if setup.stopping.load(Ordering::SeqCst) {
                return true;
            }
            interrupted |= stage
                .def()
                .run_after_rack(&setup, &sink, &rack, alive.clone())
                .await;
        }
        return interrupted;
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

/// Runs one node through `stages`, holding a node slot throughout. `last`:
/// no stage after these needs the node's BMC session.
async fn run_node(
    setup: &Setup,
    sink: &Arc<dyn StepSink>,
    cx: &NodeCx,
    stages: &[Stage],
    last: bool,
) -> NodeEnd {
    if setup.stopping.load(Ordering::SeqCst) {
        return NodeEnd::Interrupted;
    }
    let Some(_permit) = setup.gates.node(&cx.node.rack).await else {
        return NodeEnd::Interrupted;
    };
    for (index, &stage) in stages.iter().enumerate() {
        if let Some(refusal) = in_service_refusal(setup, cx, stage) {
            fail_node(setup, cx, stage, "start", &refusal);
            return NodeEnd::Stopped;
        }
        let mut steps = Steps::new(
            cx.node.name.clone(),
            stage.name(),
            Arc::clone(sink),
            Arc::clone(&setup.stopping),
        )
        .counting(cx.bmc());
        // Each stage's future is boxed (see `StageFuture`).
        let result = stage.def().run_node(cx, &mut steps).await;
        if last && index + 1 == stages.len() && result.is_ok() {
            // Done with the BMC: end the session over the connection still
            // open (BMCs allow few sessions; a failed node's session is
            // ended with the others' at the end of the run, so a hung BMC
            // does not hold its node slot).
            cx.bmc().logout().await;
        }
        // The BMC is idle until the next stage that needs it.
        cx.bmc().close_idle();
        match result {
            Ok(()) => {}
            Err(Stop::Interrupted(_)) => return NodeEnd::Interrupted,
            Err(Stop::Failed { step, outcome }) => {
                fail_node(setup, cx, stage, step, &outcome);
                return NodeEnd::Stopped;
            }
        }
    }
    NodeEnd::Passed
}

/// Why `stage` may not touch the node: it is destructive, the inventory
/// marks the node in service and the run does not allow that. The run
/// refuses such work up front; this keeps any other caller of the engine
/// from wiping a node in service.
fn in_service_refusal(setup: &Setup, cx: &NodeCx, stage: Stage) -> Option<Outcome> {
    if !stage.destructive() || !cx.node.in_service || setup.allow_in_service {
        return None;
    }
    Some(Outcome::failed(format!(
        "{} is marked in service and stage {stage} would disrupt it; pass {} to allow it",
        cx.node.name,
        crate::pipeline::guard::FLAG
    )))
}

/// A rack-scoped stage: each node's own part (as a node stage), then the
/// rack's part over the nodes that passed theirs. Returns the survivors
/// and whether a stop left some node pending.
async fn rack_stage(
    setup: &Arc<Setup>,
    sink: &Arc<dyn StepSink>,
    stage: Stage,
    nodes: Vec<Arc<NodeCx>>,
) -> (Vec<Arc<NodeCx>>, bool) {
    let mut interrupted = false;
    let mut tasks = JoinSet::new();
    for (i, cx) in nodes.iter().enumerate() {
        let (setup, sink, cx) = (Arc::clone(setup), Arc::clone(sink), Arc::clone(cx));
        tasks.spawn(async move {
            let end = run_node(&setup, &sink, &cx, &[stage], false).await;
            (i, end)
        });
    }
    let mut passed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, NodeEnd::Passed)) => passed.push(i),
            Ok((_, NodeEnd::Stopped)) => {}
            Ok((_, NodeEnd::Interrupted)) | Err(_) => interrupted = true,
        }
    }
    passed.sort_unstable();
    let survivors: Vec<Arc<NodeCx>> = passed.into_iter().map(|i| Arc::clone(&nodes[i])).collect();
    if survivors.is_empty() || setup.stopping.load(Ordering::SeqCst) {
        let pending = !survivors.is_empty();
        return (survivors, interrupted || pending);
    }
    // Nodes of one rack normally share a profile; compare like with like.
    let mut groups: Vec<(String, Vec<Arc<NodeCx>>)> = Vec::new();
    for cx in survivors {
        match groups.iter_mut().find(|(hw, _)| *hw == cx.node.hardware) {
            Some((_, g)) => g.push(cx),
            None => groups.push((cx.node.hardware.clone(), vec![cx])),
        }
    }
    let mut out = Vec::new();
    for (_, group) in groups {
        let verdicts = stage
            .def()
            .run_rack(RackCx {
                setup,
                sink,
                group: &group,
            })
            .await;
        let verdicts = match verdicts {
            Ok(v) => v,
            Err(()) => {
                interrupted = true;
                continue;
            }
        };
        for cx in group {
            let outcome = verdicts
                .get(&cx.node.name)
                .cloned()
                .unwrap_or_else(|| Outcome::done("passed the rack's checks"));
            let mut steps = Steps::new(
                cx.node.name.clone(),
                stage.name(),
                Arc::clone(sink),
                Arc::clone(&setup.stopping),
            );
            let step = stage.def().rack_step();
            match steps
                .run(step, Duration::from_secs(5), || async { Ok(outcome) })
                .await
            {
                Ok(_) => out.push(cx),
                Err(Stop::Interrupted(_)) => interrupted = true,
                Err(Stop::Failed { step, outcome }) => fail_node(setup, &cx, stage, step, &outcome),
            }
        }
    }
    (out, interrupted)
}

#[cfg(test)]
mod tests {
    //! The engine with fake stages over a real journal in a temp folder:
    //! no BMC is contacted (a client sends nothing until asked, and a
    //! logout without a session sends nothing) and no command is run.
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;
    use crate::bmc::client::BmcClient;
    use crate::bmc::transport::{Transport, TransportOptions};
    use crate::inventory::generate::{SiteSpec, generate};
    use crate::pipeline::gates::Gates;
    use crate::pipeline::journal::Journal;
    use crate::pipeline::node::SiteCx;
    use crate::pipeline::progress::Mode;
    use crate::pipeline::record::{NodeRecord, RunInfo};
    use crate::pipeline::stages::{About, NodeWork, RackVerdicts, StageDef, StageFuture};
    use crate::profiles::Catalog;
    use crate::secret::Secret;
    use crate::ssh::Remote;
    use crate::ssh::auth::Credentials;

    /// A stage that records one `work` step per node, failing `fails`, and
    /// (as a rack stage) failing `straggler` in its rack part.
    struct Fake {
        name: &'static str,
        scope: Scope,
        fails: Option<&'static str>,
        straggler: Option<&'static str>,
        destructive: bool,
        calls: AtomicUsize,
    }

    fn fake(
        order: u8,
        name: &'static str,
        scope: Scope,
        fails: Option<&'static str>,
        straggler: Option<&'static str>,
    ) -> (Stage, &'static Fake) {
        let def: &'static Fake = Box::leak(Box::new(Fake {
            name,
            scope,
            fails,
            straggler,
            destructive: false,
            calls: AtomicUsize::new(0),
        }));
        (Stage::new(order, def), def)
    }

    /// A node stage that changes the node (like imaging).
    fn destructive(order: u8, name: &'static str) -> (Stage, &'static Fake) {
        let def: &'static Fake = Box::leak(Box::new(Fake {
            name,
            scope: Scope::Node,
            fails: None,
            straggler: None,
            destructive: true,
            calls: AtomicUsize::new(0),
        }));
        (Stage::new(order, def), def)
    }

    impl StageDef for Fake {
        fn about(&self) -> About {
            About {
                name: self.name,
                scope: self.scope,
                destructive: self.destructive,
            }
        }
        fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
            Box::pin(async move {
                let failed = self.fails == Some(cx.node.name.as_str());
                steps
                    .run("work", Duration::from_secs(5), || async {
                        self.calls.fetch_add(1, Ordering::SeqCst);
                        Ok(if failed {
                            Outcome::failed("the fake stage failed it")
                        } else {
                            Outcome::done("worked")
                        })
                    })
                    .await
                    .map(drop)
            })
        }
        fn rack_step(&self) -> &'static str {
            "rack-fake"
        }
        fn run_rack<'a>(&'a self, rack: RackCx<'a>) -> StageFuture<'a, RackVerdicts> {
            Box::pin(async move {
                Ok(rack
                    .group
                    .iter()
                    .filter(|cx| self.straggler == Some(cx.node.name.as_str()))
                    .map(|cx| {
                        (
                            cx.node.name.clone(),
                            Outcome::failed("slower than the rack's median"),
                        )
                    })
                    .collect())
            })
        }
    }

    /// A node stage whose nodes outside `fast_rack` wait for `release`.
    struct Held {
        fast_rack: std::sync::Mutex<String>,
        release: tokio::sync::Semaphore,
    }

    impl StageDef for Held {
        fn about(&self) -> About {
            About {
                name: "held",
                scope: Scope::Node,
                destructive: false,
            }
        }
        fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
            Box::pin(async move {
                let held = *self.fast_rack.lock().unwrap() != cx.node.rack;
                steps
                    .run("work", Duration::from_secs(60), || async {
                        if held {
                            self.release.acquire().await.unwrap().forget();
                        }
                        Ok(Outcome::done("worked"))
                    })
                    .await
                    .map(drop)
            })
        }
    }

    /// A run stage that notes each rack it is called for (with its nodes)
    /// and releases [`Held`] once the fast rack's call came.
    struct After {
        held: &'static Held,
        calls: std::sync::Mutex<Vec<(String, Vec<String>)>>,
    }

    impl StageDef for After {
        fn about(&self) -> About {
            About {
                name: "after",
                scope: Scope::Run,
                destructive: false,
            }
        }
        fn run_node<'a>(&'a self, _cx: &'a NodeCx, _steps: &'a mut Steps) -> NodeWork<'a> {
            Box::pin(async { Ok(()) })
        }
        fn run_after_rack<'a>(
            &'a self,
            _setup: &'a Arc<Setup>,
            _sink: &'a Arc<dyn StepSink>,
            rack: &'a str,
            passed: Vec<Arc<NodeCx>>,
        ) -> StageFuture<'a, bool> {
            Box::pin(async move {
                let names = passed.iter().map(|cx| cx.node.name.clone()).collect();
                self.calls.lock().unwrap().push((rack.to_owned(), names));
                if *self.held.fast_rack.lock().unwrap() == rack {
                    self.held.release.add_permits(64);
                }
                false
            })
        }
    }

    /// A run stage like the handoff: over a rack's journaled nodes, sends
    /// each node that passed or failed once (a journaled `send` step is
    /// skipped) and accepts the passed. `stop_at`: the node before whose
    /// send the stage acts as if a stop came (once). `sent` counts the
    /// sends that really happened, per node.
    struct GiveBack {
        stop_at: std::sync::Mutex<Option<String>>,
        sent: std::sync::Mutex<HashMap<String, usize>>,
        racks: std::sync::Mutex<Vec<(String, usize)>>,
    }

    impl StageDef for GiveBack {
        fn about(&self) -> About {
            About {
                name: "giveback",
                scope: Scope::Run,
                destructive: false,
            }
        }
        fn run_node<'a>(&'a self, _cx: &'a NodeCx, _steps: &'a mut Steps) -> NodeWork<'a> {
            Box::pin(async { Ok(()) })
        }
        fn run_after_rack<'a>(
            &'a self,
            setup: &'a Arc<Setup>,
            sink: &'a Arc<dyn StepSink>,
            rack: &'a str,
            passed: Vec<Arc<NodeCx>>,
        ) -> StageFuture<'a, bool> {
            Box::pin(async move {
                self.racks
                    .lock()
                    .unwrap()
                    .push((rack.to_owned(), passed.len()));
                let record = setup.journal.load_rack(rack).unwrap();
                for node in record.nodes {
                    let accept = passed.iter().any(|cx| cx.node.name == node.name);
                    if !accept && node.verdict != NodeVerdict::Failed {
                        continue;
                    }
                    let stop = {
                        let mut stop_at = self.stop_at.lock().unwrap();
                        let here = stop_at.as_deref() == Some(node.name.as_str());
                        if here {
                            *stop_at = None;
                        }
                        here
                    };
                    if stop {
                        return true;
                    }
                    let mut steps = Steps::new(
                        node.name.clone(),
                        "giveback",
                        Arc::clone(sink),
                        Arc::clone(&setup.stopping),
                    );
                    let sent = steps
                        .run("send", Duration::from_secs(5), || async {
                            *self
                                .sent
                                .lock()
                                .unwrap()
                                .entry(node.name.clone())
                                .or_default() += 1;
                            Ok(Outcome::done("sent"))
                        })
                        .await;
                    if sent.is_ok() && accept {
                        setup
                            .journal
                            .set_verdict(&node.name, NodeVerdict::Accepted, None, &[]);
                    }
                }
                false
            })
        }
    }

    /// A run of three nodes in one rack over `stages`; `resume` opens the
    /// journal's run `r1` again instead of creating it.
    fn setup(dir: &std::path::Path, stages: Vec<Stage>, resume: bool) -> Setup {
        setup_racks(dir, stages, resume, 1)
    }

    /// A run of three nodes in each of `racks` racks (see [`setup`]).
    fn setup_racks(dir: &std::path::Path, stages: Vec<Stage>, resume: bool, racks: u32) -> Setup {
        let spec = SiteSpec {
            site: "t".into(),
            racks,
            nodes_per_rack: 3,
            base_bmc: std::net::Ipv4Addr::new(127, 19, 1, 1),
            base_ssh: std::net::Ipv4Addr::new(127, 19, 2, 1),
            ..SiteSpec::default()
        };
        let catalog = Catalog::builtin().map_err(drop).unwrap();
        let inventory =
            crate::inventory::check_str("t.yaml", generate(&spec).unwrap(), dir, catalog)
                .inventory
                .unwrap();
        let journal = Journal::open(dir).unwrap();
        let journal = if resume {
            journal.resume_run("r1").unwrap().0
        } else {
            let info = RunInfo {
                id: "r1".into(),
                site: "t".into(),
                inventory: "t.yaml".into(),
                stages: stages.iter().map(|s| s.name().to_owned()).collect(),
                started_ms: 1,
                finished_ms: None,
                state: RunState::Running,
                kiln_version: "0".into(),
            };
            let records: Vec<NodeRecord> =
                inventory.nodes.iter().map(NodeRecord::pending).collect();
            journal.create_run(&info, &records).unwrap()
        };
        let gates = Arc::new(Gates::new(&inventory.limits));
        let site = Arc::new(SiteCx {
            state: dir.to_path_buf(),
            inventory_dir: dir.to_path_buf(),
            credentials: Arc::new(Credentials::new()),
            known_hosts: dir.join("known_hosts"),
            prepared: Default::default(),
        });
        let tls = crate::bmc::tls::insecure("t").unwrap();
        let nodes: Vec<Arc<NodeCx>> = inventory
            .nodes
            .iter()
            .map(|node| {
                let hardware = &inventory.catalog.hardware[&node.hardware].profile;
                let image = &inventory.catalog.images[&node.image].profile;
                let transport = Transport::new(
                    "127.19.1.1",
                    9,
                    Arc::clone(&tls),
                    TransportOptions::default(),
                );
                Arc::new(NodeCx::new(
                    node.clone(),
                    (Arc::new(hardware.clone()), Arc::new(image.clone())),
                    Arc::clone(&site),
                    dir.join("run"),
                    Arc::clone(&gates),
                    Arc::new(BmcClient::new(&node.name, transport, "u", Secret::new("p"))),
                    Remote::Local {
                        name: node.name.clone(),
                    },
                ))
            })
            .collect();
        let progress = Arc::new(Progress::new(
            Mode::Quiet,
            &nodes
                .iter()
                .map(|cx| (cx.node.name.clone(), cx.node.rack.clone()))
                .collect::<Vec<_>>(),
        ));
        Setup {
            nodes,
            stages,
            journal: Arc::new(journal),
            run_dir: dir.join("run"),
            gates,
            progress,
            fail_fast: false,
            stopping: Arc::new(AtomicBool::new(false)),
            allow_in_service: false,
        }
    }

    fn verdicts(record: &RunRecord) -> Vec<(NodeVerdict, Vec<String>)> {
        record
            .nodes
            .iter()
            .map(|n| (n.verdict, n.reasons.clone()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rack_part_fails_only_its_straggler() {
        let dir = tempfile::tempdir().unwrap();
        let (node, _) = fake(0, "one", Scope::Node, None, None);
        let (rack, def) = fake(1, "two", Scope::Rack, None, Some("r01-n02"));
        let setup = setup(dir.path(), vec![node, rack], false);
        let names: Vec<String> = setup.nodes.iter().map(|cx| cx.node.name.clone()).collect();
        let record = run(setup).await.unwrap();
        assert_eq!(def.calls.load(Ordering::SeqCst), 3);
        let got = verdicts(&record);
        for (name, (verdict, reasons)) in names.iter().zip(&got) {
            if name == "r01-n02" {
                assert_eq!(*verdict, NodeVerdict::Failed, "{got:?}");
                assert_eq!(reasons, &vec!["slower than the rack's median".to_owned()]);
            } else {
                assert_eq!(*verdict, NodeVerdict::Accepted, "{name}: {got:?}");
            }
        }
        assert!(names.iter().any(|n| n == "r01-n02"), "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_failure_stops_only_that_node_and_a_resume_skips_ended_steps() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_def) = fake(0, "one", Scope::Node, Some("r01-n01"), None);
        let (second, second_def) = fake(1, "two", Scope::Node, None, None);
        let setup1 = setup(dir.path(), vec![first, second], false);
        let record = run(setup1).await.unwrap();
        assert_eq!(first_def.calls.load(Ordering::SeqCst), 3);
        // The failed node never reached the second stage.
        assert_eq!(second_def.calls.load(Ordering::SeqCst), 2);
        let got = verdicts(&record);
        assert_eq!(got[0].0, NodeVerdict::Failed, "{got:?}");
        assert_eq!(got[0].1, vec!["the fake stage failed it".to_owned()]);
        assert!(
            got[1..].iter().all(|(v, _)| *v == NodeVerdict::Accepted),
            "{got:?}"
        );

        // Resumed: every step already ended is skipped, not run again.
        let mut setup2 = setup(dir.path(), vec![first, second], true);
        setup2.nodes.retain(|cx| cx.node.name != "r01-n01");
        let _ = run(setup2).await.unwrap();
        assert_eq!(first_def.calls.load(Ordering::SeqCst), 3);
        assert_eq!(second_def.calls.load(Ordering::SeqCst), 2);
    }

    /// A run stage runs for a rack as soon as that rack is done, over its
    /// nodes only: the other rack's nodes are held until the first rack's
    /// call came, so a run stage that waited for every rack would hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_stage_runs_for_a_rack_as_soon_as_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let held: &'static Held = Box::leak(Box::new(Held {
            fast_rack: std::sync::Mutex::new(String::new()),
            release: tokio::sync::Semaphore::new(0),
        }));
        let after: &'static After = Box::leak(Box::new(After {
            held,
            calls: std::sync::Mutex::new(Vec::new()),
        }));
        let stages = vec![Stage::new(0, held), Stage::new(1, after)];
        let setup = setup_racks(dir.path(), stages, false, 2);
        let rack_of = |i: usize| setup.nodes[i].node.rack.clone();
        let (fast, slow) = (rack_of(0), rack_of(5));
        assert_ne!(fast, slow);
        *held.fast_rack.lock().unwrap() = fast.clone();
        let names = |rack: &str| -> Vec<String> {
            setup
                .nodes
                .iter()
                .filter(|cx| cx.node.rack == rack)
                .map(|cx| cx.node.name.clone())
                .collect()
        };
        let expected = vec![(fast.clone(), names(&fast)), (slow.clone(), names(&slow))];
        // A guard against a hang, not a synchronisation.
        tokio::time::timeout(Duration::from_secs(60), run(setup))
            .await
            .expect("the slow rack was never released: the run stage waited for it")
            .unwrap();
        assert_eq!(*after.calls.lock().unwrap(), expected);
    }

    /// A resumed run where a rack has no pending node (its handoff stopped
    /// before its failed node was given back) runs the run stage for that
    /// rack anyway: the failed node is given back, once; nodes already
    /// handed over, and a rack whose run stage had ended, send nothing again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resume_gives_back_an_idle_racks_failed_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let (one, _) = fake(0, "one", Scope::Node, Some("r01-n03"), None);
        let give: &'static GiveBack = Box::leak(Box::new(GiveBack {
            stop_at: std::sync::Mutex::new(Some("r01-n03".into())),
            sent: std::sync::Mutex::new(HashMap::new()),
            racks: std::sync::Mutex::new(Vec::new()),
        }));
        let stages = vec![one, Stage::new(1, give)];
        let record = run(setup_racks(dir.path(), stages.clone(), false, 2))
            .await
            .unwrap();
        assert_eq!(record.run.state, RunState::Interrupted);
        let sent = |name: &str| give.sent.lock().unwrap().get(name).copied();
        assert_eq!(sent("r01-n03"), None, "the stop came before its send");
        assert_eq!(sent("r01-n01"), Some(1));
        assert_eq!(give.sent.lock().unwrap().len(), 5);
        // No node is left pending: both racks are idle on the resume.
        assert!(
            record
                .nodes
                .iter()
                .all(|n| n.verdict != NodeVerdict::Pending),
            "{:?}",
            verdicts(&record)
        );
        give.racks.lock().unwrap().clear();

        for _ in 0..2 {
            let mut resumed = setup_racks(dir.path(), stages.clone(), true, 2);
            // Only pending nodes are worked on again (none here).
            resumed.nodes.retain(|cx| {
                record
                    .nodes
                    .iter()
                    .any(|n| n.name == cx.node.name && n.verdict == NodeVerdict::Pending)
            });
            assert!(resumed.nodes.is_empty());
            let again = run(resumed).await.unwrap();
            assert_eq!(again.run.state, RunState::Finished);
            let failed = again.nodes.iter().find(|n| n.name == "r01-n03").unwrap();
            assert_eq!(failed.verdict, NodeVerdict::Failed);
            assert_eq!(failed.reasons, vec!["the fake stage failed it".to_owned()]);
        }
        // Each rack's run stage was called on each resume, with no node to
        // accept; the failed node was given back exactly once, and nothing
        // else was sent again.
        let racks: Vec<(String, usize)> = ["r01", "r02", "r01", "r02"]
            .iter()
            .map(|r| ((*r).to_owned(), 0))
            .collect();
        assert_eq!(*give.racks.lock().unwrap(), racks);
        let sent = give.sent.lock().unwrap();
        assert_eq!(sent.len(), 6, "{sent:?}");
        assert!(sent.values().all(|&n| n == 1), "{sent:?}");
    }

    /// A destructive stage never touches a node in service unless the run
    /// allows it: the node fails at that stage, naming the flag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_destructive_stage_is_refused_on_a_node_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let (wipe, def) = destructive(0, "wipe");
        let mut refused = setup(dir.path(), vec![wipe], false);
        Arc::get_mut(&mut refused.nodes[0]).unwrap().node.in_service = true;
        let record = run(refused).await.unwrap();
        // Only the two nodes not in service were worked on.
        assert_eq!(def.calls.load(Ordering::SeqCst), 2);
        let got = verdicts(&record);
        assert_eq!(got[0].0, NodeVerdict::Failed, "{got:?}");
        assert_eq!(record.nodes[0].failed_stage.as_deref(), Some("wipe"));
        assert!(got[0].1[0].contains("--allow-in-service"), "{got:?}");
        assert!(
            got[1..].iter().all(|(v, _)| *v == NodeVerdict::Accepted),
            "{got:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let (wipe, def) = destructive(0, "wipe");
        let mut allowed = setup(dir.path(), vec![wipe], false);
        Arc::get_mut(&mut allowed.nodes[0]).unwrap().node.in_service = true;
        allowed.allow_in_service = true;
        let record = run(allowed).await.unwrap();
        assert_eq!(def.calls.load(Ordering::SeqCst), 3);
        let got = verdicts(&record);
        assert!(
            got.iter().all(|(v, _)| *v == NodeVerdict::Accepted),
            "{got:?}"
        );
    }
}
