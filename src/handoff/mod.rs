//! Handoff: the run's last stage. Every node of the run gets a signed
//! acceptance record; accepted nodes are handed to the platform that will
//! sell them (webhook, Slurm resume, Kubernetes join + uncordon) and failed
//! or unverified ones are given back (webhook if asked, Slurm drain with
//! the reason, Kubernetes stays cordoned with an annotation).
//!
//! Unlike the other stages it runs once per rack, as soon as that rack's
//! other stages ended (other racks may still work), over every node of the
//! rack, and it decides the final verdict: a node that
//! passed every stage is accepted only when each of its targets took it.
//! Each unit is a journaled step of stage `handoff` (`record`, `sign`,
//! `webhook`, `slurm`, `kubernetes`, numbered `-2`, `-3` for a second target
//! of a kind), so a resumed run sends nothing twice.
//!
//! - [`setup`]: what the stage needs for a run ([`HandoffSetup`]).
//! - [`record`]: what a record holds ([`baseline`]: its firmware part); [`sign`]: canonical JSON and Ed25519.
//! - [`webhook`], [`slurm`], [`kubernetes`]: the targets; [`http`]: their
//!   small HTTP client.

pub mod baseline;
pub mod http;
pub mod kubernetes;
pub mod record;
pub mod setup;
pub mod sign;
pub mod slurm;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::task::JoinSet;

use crate::inventory::handoff::{HandoffTarget, HandoffTargets, SlurmVia};
use crate::pipeline::node::NodeCx;
use crate::pipeline::record::{NodeRecord, NodeVerdict};
use crate::pipeline::setup::{Setup, fail_node};
use crate::pipeline::stages::Stage;
use crate::pipeline::step::{Outcome, StepSink, Steps, Stop, now_ms};
use crate::ssh::{Remote, Target};
use record::RunFacts;
pub use setup::HandoffSetup;
use sign::SignedRecord;

/// The file each node's signed record is written to, in its run folder.
pub const RECORD_FILE: &str = "acceptance.json";

/// Lines saying what a run would send, per rack, for `--dry-run`.
pub fn plan(targets: &HandoffTargets, racks: &[&str]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for rack in racks {
        for t in targets.for_rack(rack) {
            let (accepted, failed) = match t {
                HandoffTarget::Webhook(w) => (
                    format!(
                        "POST the signed record to {} ({} attempts)",
                        w.url, w.attempts
                    ),
                    if w.failed {
                        "POST the signed record with its failed verdict".to_owned()
                    } else {
                        "nothing".to_owned()
                    },
                ),
                HandoffTarget::Slurm(_) => (
                    "scontrol update NodeName=NODE State=RESUME".to_owned(),
                    "scontrol update NodeName=NODE State=DRAIN Reason='kiln: REASON'".to_owned(),
                ),
                HandoffTarget::Kubernetes(k) => (
                    format!(
                        "{}label ({} labels), taint ({}), uncordon",
                        if k.join.is_some() {
                            "join if absent, "
                        } else {
                            ""
                        },
                        k.labels.len(),
                        k.taints.len()
                    ),
                    format!("cordon, annotate {}", kubernetes::REASON),
                ),
            };
            out.push((
                (*rack).to_owned(),
                t.describe(),
                format!("accepted: {accepted}; failed: {failed}"),
            ));
        }
    }
    out
}

/// Step names for the `n`-th target of a kind (0-based): the journal keys
/// resume on them, so they must be stable.
fn step_name(kind: &str, n: usize) -> &'static str {
    const NAMES: [[&str; 4]; 3] = [
        ["webhook", "webhook-2", "webhook-3", "webhook-4"],
        ["slurm", "slurm-2", "slurm-3", "slurm-4"],
        ["kubernetes", "kubernetes-2", "kubernetes-3", "kubernetes-4"],
    ];
    let row = match kind {
        "webhook" => 0,
        "slurm" => 1,
        _ => 2,
    };
    NAMES[row][n.min(3)]
}

/// Runs the handoff over one rack's nodes: `accepted` passed every other
/// stage; every failed or unverified node of `rack` in the journal is given
/// back (nodes of other racks are left to their own rack's call, so none is
/// given back twice). Returns `true` if a stop left some node pending.
/// `stage` is the handoff stage's handle, which the registry owns and
/// failures are recorded under.
pub async fn run(
    stage: Stage,
    setup: &Arc<Setup>,
    sink: &Arc<dyn StepSink>,
    rack: &str,
    accepted: Vec<Arc<NodeCx>>,
) -> bool {
    let hs = setup
        .nodes
        .first()
        .and_then(|cx| cx.site.prepared::<crate::handoff::setup::HandoffSetup>());
    let record = match setup.journal.load_rack(rack) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot read the journal for the handoff: {e:#}");
            return true;
        }
    };
    let Some(hs) = hs else {
        for cx in &accepted {
            let o = Outcome::failed("handoff: no handoff setup (a bug in kiln)");
            fail_node(setup, cx, stage, "start", &o);
        }
        return false;
    };
    let mut facts = hs.facts.clone();
    facts.run = record.run.id.clone();
    facts.started_ms = record.run.started_ms;
    let facts = Arc::new(facts);
    let by_name: HashMap<&str, &Arc<NodeCx>> = accepted
        .iter()
        .map(|cx| (cx.node.name.as_str(), cx))
        .collect();
    // Shared by every rack's call: the targets see one run-wide limit.
    let gate = hs.gate();
    let mut tasks = JoinSet::new();
    for node in record.nodes {
        let cx = by_name.get(node.name.as_str()).map(|cx| Arc::clone(cx));
        let give_back = matches!(node.verdict, NodeVerdict::Failed | NodeVerdict::Unverified);
        if cx.is_none() && !give_back {
            continue;
        }
        let (setup, sink, hs, facts, gate) = (
            Arc::clone(setup),
            Arc::clone(sink),
            Arc::clone(&hs),
            Arc::clone(&facts),
            Arc::clone(&gate),
        );
        tasks.spawn(async move {
            let Ok(_permit) = gate.acquire().await else {
                return true;
            };
            one(stage, &setup, &sink, &hs, &facts, node, cx).await
        });
    }
    let mut interrupted = false;
    while let Some(done) = tasks.join_next().await {
        interrupted |= done.unwrap_or(true);
    }
    interrupted
}

/// Where one node stands during its handoff.
struct State {
    verdict: NodeVerdict,
    stage: Option<String>,
    reasons: Vec<String>,
}

/// One node's handoff; `true` if interrupted.
async fn one(
    stage: Stage,
    setup: &Setup,
    sink: &Arc<dyn StepSink>,
    hs: &HandoffSetup,
    facts: &RunFacts,
    node: NodeRecord,
    cx: Option<Arc<NodeCx>>,
) -> bool {
    let name = node.name.clone();
    let mut steps = Steps::new(
        name.clone(),
        stage.name(),
        Arc::clone(sink),
        Arc::clone(&setup.stopping),
    );
    let mut st = match &cx {
        Some(_) => State {
            verdict: NodeVerdict::Accepted,
            stage: None,
            reasons: Vec::new(),
        },
        None => State {
            verdict: node.verdict,
            stage: node.failed_stage.clone(),
            reasons: node.reasons.clone(),
        },
    };
    let (labels, mac) = hs.nodes.get(&name).cloned().unwrap_or_default();
    let path = setup.run_dir.join(&name).join(RECORD_FILE);

    // The identity check: the BMC's and nvidia-smi's GPU serials agree.
    let result = steps
        .run("record", Duration::from_secs(30), || async {
            let (identity, agreement) = record::identity(&node, mac.map(|m| m.to_string()));
            let metrics = json!({"identity": identity});
            Ok(match agreement {
                record::Agreement::Disagree(why) => {
                    Outcome::failed(format!("identity: {why}")).with_metrics(metrics)
                }
                record::Agreement::Agree => {
                    Outcome::done("identity: the BMC and nvidia-smi list the same GPUs")
                        .with_metrics(metrics)
                }
                record::Agreement::NotRecorded => Outcome::done(
                    "identity: GPU serials not recorded by both the BMC and nvidia-smi",
                )
                .with_metrics(metrics),
            })
        })
        .await;
    match result {
        Ok(_) => {}
        Err(Stop::Interrupted(_)) => return true,
        Err(Stop::Failed { step, outcome }) => {
            failed(stage, setup, &name, cx.as_deref(), &mut st, step, &outcome);
        }
    }

    let result = steps
        .run("sign", Duration::from_secs(30), || async {
            let signed = write_record(hs, facts, &node, &st, &path)?;
            Ok(Outcome::done(format!(
                "signed ({}) as {}",
                signed.signature.key_id,
                st.verdict.word()
            ))
            .with_metrics(json!({"key_id": signed.signature.key_id, "verdict": st.verdict.word()}))
            .with_artifact(format!("{name}/{RECORD_FILE}")))
        })
        .await;
    match result {
        Ok(_) => {}
        Err(Stop::Interrupted(_)) => return true,
        Err(Stop::Failed { step, outcome }) => {
            failed(stage, setup, &name, cx.as_deref(), &mut st, step, &outcome);
            // Without a record nothing can be sent.
            return false;
        }
    }

    let targets = hs.targets.for_rack(&node.rack);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for target in targets {
        let n = seen.entry(target.kind()).or_insert(0);
        let step = step_name(target.kind(), *n);
        *n += 1;
        let accepted = st.verdict == NodeVerdict::Accepted;
        if !accepted && !target.takes_failed() {
            continue;
        }
        let result = steps
            .run(step, Duration::from_secs(900), || async {
                deliver(hs, facts, target, &name, &st, &path, cx.as_deref(), &labels).await
            })
            .await;
        match result {
            Ok(_) => {}
            Err(Stop::Interrupted(_)) => return true,
            Err(Stop::Failed { step, outcome }) => {
                if accepted {
                    failed(stage, setup, &name, cx.as_deref(), &mut st, step, &outcome);
                    // Later targets get the failed record and give it back.
                    if let Err(e) = write_record(hs, facts, &node, &st, &path) {
                        tracing::error!(node = %name, "cannot rewrite the record: {e:#}");
                    }
                } else {
                    setup.journal.event(
                        Some(&name),
                        "give-back-failed",
                        &format!("handoff/{step}: {}", outcome.detail),
                    );
                }
            }
        }
    }
    if st.verdict == NodeVerdict::Accepted
        && let Some(cx) = &cx
    {
        setup
            .journal
            .set_verdict(&name, NodeVerdict::Accepted, None, &[]);
        setup
            .progress
            .node_finished(&name, &cx.node.rack, NodeVerdict::Accepted, None, &[]);
    }
    false
}

/// A candidate for acceptance failed `step`: it becomes failed with
/// `handoff/STEP: …` as its reason. A node already failed keeps its own.
fn failed(
    stage: Stage,
    setup: &Setup,
    name: &str,
    cx: Option<&NodeCx>,
    st: &mut State,
    step: &str,
    outcome: &Outcome,
) {
    let Some(cx) = cx else {
        setup.journal.event(
            Some(name),
            "give-back-failed",
            &format!("handoff/{step}: {}", outcome.detail),
        );
        return;
    };
    if st.verdict != NodeVerdict::Accepted {
        return;
    }
    let reason = format!("handoff/{step}: {}", outcome.detail);
    let mut o = outcome.clone();
    o.reasons = vec![reason.clone()];
    fail_node(setup, cx, stage, step, &o);
    st.verdict = if outcome.status == crate::pipeline::record::StepStatus::Unverified {
        NodeVerdict::Unverified
    } else {
        NodeVerdict::Failed
    };
    st.stage = Some(stage.name().to_owned());
    st.reasons = vec![reason];
}

/// Builds, signs and writes the node's record as it stands.
fn write_record(
    hs: &HandoffSetup,
    facts: &RunFacts,
    node: &NodeRecord,
    st: &State,
    path: &PathBuf,
) -> anyhow::Result<SignedRecord> {
    let mac = hs.nodes.get(&node.name).and_then(|(_, m)| *m);
    let mut view = node.clone();
    view.failed_stage = st.stage.clone();
    let value = record::build(
        facts,
        &view,
        mac.map(|m| m.to_string()),
        st.verdict,
        &st.reasons,
        now_ms(),
    );
    let signed = hs.key.sign(value);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&signed)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(signed)
}

/// The reason Slurm and Kubernetes are given: `kiln: …`.
fn give_back_reason(st: &State) -> String {
    let text = if st.reasons.is_empty() {
        st.verdict.word().to_owned()
    } else {
        st.reasons.join("; ")
    };
    crate::diag::clip(&format!("kiln: {text}"), 250)
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    hs: &HandoffSetup,
    facts: &RunFacts,
    target: &HandoffTarget,
    name: &str,
    st: &State,
    path: &PathBuf,
    cx: Option<&NodeCx>,
    labels: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Outcome> {
    let accepted = st.verdict == NodeVerdict::Accepted;
    match target {
        HandoffTarget::Webhook(w) => {
            let body = std::fs::read(path)
                .with_context(|| format!("cannot read the signed record {}", path.display()))?;
            webhook::deliver(w, name, &body, hs.retry_base).await
        }
        HandoffTarget::Slurm(s) => {
            let controller = match &s.via {
                SlurmVia::Scontrol { controller: None } => Some(Remote::Local {
                    name: "slurm-controller".into(),
                }),
                SlurmVia::Scontrol {
                    controller: Some(c),
                } => {
                    let pool = hs
                        .pool
                        .clone()
                        .context("no SSH pool for the Slurm controller")?;
                    let host = c.endpoint.host.to_string();
                    Some(Remote::Ssh {
                        pool,
                        target: Target {
                            node: format!("slurm-controller {host}"),
                            host: host
                                .trim_start_matches('[')
                                .trim_end_matches(']')
                                .to_owned(),
                            port: c.endpoint.port,
                            user: c.user.clone().unwrap_or_else(|| "root".into()),
                            key: cx.and_then(|cx| cx.node.ssh.key.clone()),
                            known_hosts: None,
                            jump: None,
                        },
                    })
                }
                SlurmVia::Restd { .. } => None,
            };
            let action = if accepted {
                slurm::Action::Resume
            } else {
                slurm::Action::Drain(give_back_reason(st))
            };
            slurm::deliver(s, name, &action, controller).await
        }
        HandoffTarget::Kubernetes(k) => {
            let mut all = labels.clone();
            all.extend(k.labels.iter().map(|(a, b)| (a.clone(), b.clone())));
            let reason = give_back_reason(st);
            let action = if accepted {
                kubernetes::Action::Accept {
                    labels: &all,
                    remote: cx.map(|cx| &cx.remote),
                }
            } else {
                kubernetes::Action::Reject {
                    verdict: st.verdict.word(),
                    reason: &reason,
                }
            };
            kubernetes::deliver(k, name, &facts.run, action, hs.join_wait).await
        }
    }
}
