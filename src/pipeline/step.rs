//! Named, journaled steps. A stage is plain async code that runs each unit
//! of work through [`Steps::run`]; the runner asks the journal whether the
//! step already finished in an earlier attempt of the same run (resume) and,
//! if so, returns that outcome without running it again. Otherwise it
//! records the start, runs the step under its deadline and records the end.
//!
//! Steps must still be idempotent on their own: a step killed mid-way (the
//! journal says `running`) runs again on resume, so "power on" must read the
//! power state first, "insert media" must check what is inserted, and so on.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bmc::client::BmcClient;
use crate::pipeline::record::{StepRecord, StepStatus, UnixMs};

/// What a step reports when it ends without an error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// `Done`, `Skipped` (already true), `Failed` or `Unverified`.
    pub status: StepStatus,
    /// One line on what it did or found.
    pub detail: String,
    /// Why the node fails or is unverified (empty when done or skipped).
    pub reasons: Vec<String>,
    /// Measurements (see [`crate::pipeline::record::metrics`]).
    pub metrics: Value,
    /// Raw outputs kept, relative to the run folder.
    pub artifacts: Vec<String>,
}

impl Outcome {
    /// The step did its work.
    pub fn done(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: StepStatus::Done,
            detail: detail.into(),
            ..Outcome::default()
        }
    }

    /// The step found its work already done.
    pub fn skipped(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: StepStatus::Skipped,
            detail: detail.into(),
            ..Outcome::default()
        }
    }

    /// A check failed; the node stops here.
    pub fn failed(reason: impl Into<String>) -> Outcome {
        let reason = reason.into();
        Outcome {
            status: StepStatus::Failed,
            detail: reason.clone(),
            reasons: vec![reason],
            ..Outcome::default()
        }
    }

    /// The result could not be proven either way; the node stops here.
    pub fn unverified(reason: impl Into<String>) -> Outcome {
        let reason = reason.into();
        Outcome {
            status: StepStatus::Unverified,
            detail: reason.clone(),
            reasons: vec![reason],
            ..Outcome::default()
        }
    }

    /// Adds measurements.
    pub fn with_metrics(mut self, metrics: Value) -> Outcome {
        self.metrics = metrics;
        self
    }

    /// Adds a kept raw output.
    pub fn with_artifact(mut self, path: impl Into<String>) -> Outcome {
        self.artifacts.push(path.into());
        self
    }

    /// Whether the node may go on to its next step.
    pub fn passed(&self) -> bool {
        matches!(self.status, StepStatus::Done | StepStatus::Skipped)
    }
}

/// Why a stage stops before its end.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// A step failed or could not verify; the outcome is recorded.
    #[error("{step}: {}", .outcome.detail)]
    Failed {
        /// The step.
        step: &'static str,
        /// What it reported.
        outcome: Box<Outcome>,
    },
    /// Ctrl-C: no new step is started; the run is resumable.
    #[error("interrupted before {0}")]
    Interrupted(&'static str),
}

/// Where step records go: the journal during a run, or nowhere for a
/// one-off command. Implementations must be cheap; they are called from
/// every node's task.
pub trait StepSink: Send + Sync {
    /// The record of `stage/step` for `node` from an earlier attempt of
    /// this run, if it ended (`Done`, `Skipped`, `Failed`, `Unverified`).
    fn finished_before(&self, node: &str, stage: &str, step: &str) -> Option<StepRecord>;
    /// The step starts.
    fn started(&self, node: &str, stage: &str, step: &str, at: UnixMs);
    /// The step ended; the returned [`Committed`] resolves once the
    /// record is stored, so a step is never repeated on resume after its
    /// caller went on.
    fn ended(&self, node: &str, record: &StepRecord) -> Committed;
}

/// A record on its way to the journal; [`Committed::wait`] returns once
/// it is stored, or why storing it failed.
#[derive(Debug)]
pub struct Committed(Option<tokio::sync::oneshot::Receiver<Result<(), String>>>);

impl Committed {
    /// Nothing to wait for.
    pub fn now() -> Committed {
        Committed(None)
    }

    /// Resolves when `rx` is answered: `Err` with why the write failed.
    pub fn when(rx: tokio::sync::oneshot::Receiver<Result<(), String>>) -> Committed {
        Committed(Some(rx))
    }

    /// Waits for the write; `Err` if it was not stored (a writer gone
    /// without answering stored nothing either).
    pub async fn wait(self) -> Result<(), String> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err("the journal writer stopped".into())),
        }
    }
}

/// A sink that keeps nothing: every step runs, nothing is recorded.
#[derive(Debug, Default)]
pub struct NoJournal;

impl StepSink for NoJournal {
    fn finished_before(&self, _: &str, _: &str, _: &str) -> Option<StepRecord> {
        None
    }
    fn started(&self, _: &str, _: &str, _: &str, _: UnixMs) {}
    fn ended(&self, _: &str, _: &StepRecord) -> Committed {
        Committed::now()
    }
}

/// Runs the steps of one stage of one node.
pub struct Steps {
    node: String,
    stage: &'static str,
    sink: Arc<dyn StepSink>,
    stopping: Arc<AtomicBool>,
    /// The node's BMC client, whose requests each step records.
    bmc: Option<Arc<BmcClient>>,
    /// Where the next step's count starts, when earlier than the step.
    since: Option<u64>,
}

impl Steps {
    /// Steps of `stage` for `node`, recorded in `sink`. Once `stopping` is
    /// set, no new step starts.
    pub fn new(
        node: impl Into<String>,
        stage: &'static str,
        sink: Arc<dyn StepSink>,
        stopping: Arc<AtomicBool>,
    ) -> Steps {
        Steps {
            node: node.into(),
            stage,
            sink,
            stopping,
            bmc: None,
            since: None,
        }
    }

    /// Counts in the next step run the requests sent since `since` (a
    /// reading of [`BmcClient::requests`]): work an unresumable step does
    /// before it is recorded (imaging's `prepare`).
    pub fn count_from(&mut self, since: u64) {
        self.since = Some(since);
    }

    /// Records in each step how many requests `bmc` sent during it.
    pub fn counting(mut self, bmc: &Arc<BmcClient>) -> Steps {
        self.bmc = Some(Arc::clone(bmc));
        self
    }

    /// Steps that nobody records and nobody stops: one-off commands.
    pub fn unjournaled(node: impl Into<String>, stage: &'static str) -> Steps {
        Steps::unrecorded(node, stage, Arc::new(AtomicBool::new(false)))
    }

    /// Steps that nobody records, stopped by `stopping`: a command that
    /// acts on many nodes outside a run and stops on Ctrl-C.
    pub fn unrecorded(
        node: impl Into<String>,
        stage: &'static str,
        stopping: Arc<AtomicBool>,
    ) -> Steps {
        Steps::new(node, stage, Arc::new(NoJournal), stopping)
    }

    /// The node these steps belong to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether `step` ended in an earlier attempt of the run (a resumed run
    /// picks up after it).
    pub fn ended_before(&self, step: &str) -> bool {
        self.sink
            .finished_before(&self.node, self.stage, step)
            .is_some()
    }

    /// Runs `step` unless it already ended in an earlier attempt, giving it
    /// `deadline` to finish. An `Err` from the step is recorded as a failure
    /// with the error's text (the node and step are named by the caller's
    /// report). A failed or unverified outcome stops the stage.
    pub async fn run<F, Fut>(
        &mut self,
        step: &'static str,
        deadline: Duration,
        work: F,
    ) -> Result<Outcome, Stop>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Outcome>>,
    {
        let since = self.since.take();
        if let Some(before) = self.sink.finished_before(&self.node, self.stage, step) {
            let outcome = Outcome {
                status: before.status,
                detail: before.detail,
                reasons: before.reasons,
                metrics: before.metrics,
                artifacts: before.artifacts,
            };
            return check(step, outcome);
        }
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Stop::Interrupted(step));
        }
        let started_ms = now_ms();
        self.sink.started(&self.node, self.stage, step, started_ms);
        let clock = Instant::now();
        let sent_before = self
            .bmc
            .as_ref()
            .map(|b| since.unwrap_or_else(|| b.requests()));
        let outcome = match tokio::time::timeout(deadline, work()).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::failed(error_text(&e)),
            Err(_) => Outcome::failed(format!("{step} did not finish within {deadline:?}")),
        };
        // The outcome moves into the record and back out of it once the
        // journal has its copy: every node of a site ends a step in the
        // same second, and a second copy of each one's metrics held across
        // the commit was a tenth of kiln's memory at fleet scale.
        let record = StepRecord {
            stage: self.stage.to_owned(),
            step: step.to_owned(),
            status: outcome.status,
            started_ms: Some(started_ms),
            duration_ms: Some(clock.elapsed().as_millis() as u64),
            detail: outcome.detail,
            reasons: outcome.reasons,
            metrics: outcome.metrics,
            artifacts: outcome.artifacts,
            // Only steps that talked to the BMC say so: records of the
            // others keep their shape.
            bmc_requests: self
                .bmc
                .as_ref()
                .zip(sent_before)
                .map(|(b, before)| b.requests().saturating_sub(before))
                .filter(|&n| n > 0),
        };
        let committed = self.sink.ended(&self.node, &record);
        let outcome = Outcome {
            status: record.status,
            detail: record.detail,
            reasons: record.reasons,
            metrics: record.metrics,
            artifacts: record.artifacts,
        };
        // A step whose end is not in the journal would run again on
        // resume, after its node went on: it fails instead.
        if let Err(why) = committed.wait().await {
            return check(
                step,
                Outcome::failed(format!(
                    "{step}: cannot record its end in the journal: {why}"
                )),
            );
        }
        check(step, outcome)
    }
}

/// An error and its causes as one line, leaving out a cause whose text the
/// line already holds (many errors repeat their source in their message).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn check(step: &'static str, outcome: Outcome) -> Result<Outcome, Stop> {
    if outcome.passed() {
        Ok(outcome)
    } else {
        Err(Stop::Failed {
            step,
            outcome: Box::new(outcome),
        })
    }
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
