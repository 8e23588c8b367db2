//! The run journal: one SQLite database per state folder
//! (`.kiln/journal.sqlite`) holding every run, each node's verdict, each
//! step's record and notable events. A run killed at any point (`kill -9`,
//! a laptop lid) resumes from it: steps that ended are not run again.
//!
//! A run's writes go through one writer thread that commits them in
//! batches ([`crate::pipeline::journal_writer`]), in WAL mode with
//! `synchronous=NORMAL`: a step's end is committed before its node goes
//! on, so it survives the process being killed (only a power loss of the
//! machine running kiln can lose the last few), and a commit costs
//! microseconds, not an fsync. Reads of earlier steps during a run come
//! from a cache loaded once at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension, params};

use crate::pipeline::journal_writer::{Write, Writer};
use crate::pipeline::record::{
    NodeRecord, NodeVerdict, RunInfo, RunRecord, RunState, StepRecord, StepStatus, UnixMs,
};
use crate::pipeline::step::{Committed, StepSink};

/// The journal's file name inside the state folder.
pub const FILE: &str = "journal.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    inventory TEXT NOT NULL,
    stages TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    state TEXT NOT NULL,
    kiln_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    rack TEXT NOT NULL,
    hardware TEXT NOT NULL,
    verdict TEXT NOT NULL,
    failed_stage TEXT,
    reasons TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stage TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    started_ms INTEGER,
    duration_ms INTEGER,
    detail TEXT NOT NULL,
    reasons TEXT NOT NULL,
    metrics TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    bmc_requests INTEGER,
    PRIMARY KEY (run_id, node, stage, step)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    node TEXT,
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
";

/// A run and how many of its nodes have each verdict.
pub type RunListing = (RunInfo, Vec<(NodeVerdict, usize)>);

/// An open journal.
pub struct Journal {
    path: PathBuf,
    db: Arc<Mutex<Connection>>,
}

/// A journal bound to one run: what the engine writes through, and the
/// [`StepSink`] that lets finished steps be skipped on resume.
pub struct RunJournal {
    journal: Journal,
    run_id: String,
    /// Steps that ended in an earlier attempt, by (node, stage, step).
    ended: HashMap<(String, String, String), StepRecord>,
    /// The next step's sequence number per node (keeps `runs show` in the
    /// order steps ran).
    seq: Mutex<HashMap<String, i64>>,
    /// Where the run's writes go (a thread committing them in batches).
    writer: Writer,
}

impl Journal {
    /// Opens (creating if needed) the journal in `state_dir`.
    pub fn open(state_dir: &Path) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;
        let path = state_dir.join(FILE);
        let db = Connection::open(&path)
            .map_err(|e| damaged(&path, e))
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        (|| {
            db.busy_timeout(std::time::Duration::from_secs(10))?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "NORMAL")?;
            db.execute_batch(SCHEMA)?;
            add_bmc_requests(&db)
        })()
        .map_err(|e| damaged(&path, e))
        .with_context(|| format!("cannot prepare the journal {}", path.display()))?;
        Ok(Journal {
            path,
            db: Arc::new(Mutex::new(db)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (it rolls back), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new run and its nodes (all pending).
    pub fn create_run(self, info: &RunInfo, nodes: &[NodeRecord]) -> anyhow::Result<RunJournal> {
        {
            let mut db = self.db();
            let tx = db.transaction()?;
            tx.execute(
                "INSERT INTO runs (id, site, inventory, stages, started_ms, finished_ms, state, kiln_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7)",
                params![
                    info.id,
                    info.site,
                    info.inventory,
                    serde_json::to_string(&info.stages)?,
                    info.started_ms as i64,
                    word(&info.state),
                    info.kiln_version
                ],
            )
            .with_context(|| format!("cannot record run {}", info.id))?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO nodes (run_id, seq, name, rack, hardware, verdict, failed_stage, reasons)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, '[]')",
                )?;
                for (i, n) in nodes.iter().enumerate() {
                    insert.execute(params![
                        info.id,
                        i as i64,
                        n.name,
                        n.rack,
                        n.hardware,
                        word(&n.verdict)
                    ])?;
                }
            }
            tx.commit()?;
        }
        Ok(RunJournal {
            writer: Writer::start(Arc::clone(&self.db), &info.id)?,
            journal: self,
            run_id: info.id.clone(),
            ended: HashMap::new(),
            seq: Mutex::new(HashMap::new()),
        })
    }

    /// Reopens a run to resume it: loads the steps that ended.
    pub fn resume_run(self, run_id: &str) -> anyhow::Result<(RunJournal, RunRecord)> {
        let record = self.load(run_id)?;
        let mut ended = HashMap::new();
        let mut seq = HashMap::new();
        for node in &record.nodes {
            seq.insert(node.name.clone(), node.steps.len() as i64);
            for step in &node.steps {
                if !matches!(step.status, StepStatus::Running | StepStatus::Pending) {
                    ended.insert(
                        (node.name.clone(), step.stage.clone(), step.step.clone()),
                        step.clone(),
                    );
                }
            }
        }
        self.db().execute(
            "UPDATE runs SET state = 'running', finished_ms = NULL WHERE id = ?1",
            params![run_id],
        )?;
        Ok((
            RunJournal {
                writer: Writer::start(Arc::clone(&self.db), run_id)?,
                journal: self,
                run_id: run_id.to_owned(),
                ended,
                seq: Mutex::new(seq),
            },
            record,
        ))
    }

    /// The newest run's id, if any.
    pub fn latest(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .db()
            .query_row(
                "SELECT id FROM runs ORDER BY started_ms DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every run, newest first, without nodes.
    pub fn runs(&self) -> anyhow::Result<Vec<RunListing>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, site, inventory, stages, started_ms, finished_ms, state, kiln_version
             FROM runs ORDER BY started_ms DESC, id DESC",
        )?;
        let infos: Vec<RunInfo> = stmt.query_map([], run_info)?.collect::<Result<_, _>>()?;
        let mut counts = db.prepare(
            "SELECT verdict, COUNT(*) FROM nodes WHERE run_id = ?1 GROUP BY verdict ORDER BY verdict",
        )?;
        let mut out = Vec::new();
        for info in infos {
            let c: Vec<(NodeVerdict, usize)> = counts
                .query_map(params![info.id], |r| {
                    Ok((
                        parse_word(&r.get::<_, String>(0)?),
                        r.get::<_, i64>(1)? as usize,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            out.push((info, c));
        }
        Ok(out)
    }

    /// The whole record of one run.
    pub fn load(&self, run_id: &str) -> anyhow::Result<RunRecord> {
        self.load_parts(run_id, None, true)
    }

    /// One run's record over one rack's nodes only, metrics included: what
    /// a rack's handoff needs while other racks still write theirs.
    pub fn load_rack(&self, run_id: &str, rack: &str) -> anyhow::Result<RunRecord> {
        self.load_parts(run_id, Some(rack), true)
    }

    /// One run's record without its steps' metrics: verdicts, reasons and
    /// timings, for a summary. At 12,500 nodes the metrics (GPU and
    /// firmware lists, bandwidth tables) would be hundreds of megabytes
    /// parsed only to be dropped.
    pub fn load_summary(&self, run_id: &str) -> anyhow::Result<RunRecord> {
        self.load_parts(run_id, None, false)
    }

    fn load_parts(
        &self,
        run_id: &str,
        rack: Option<&str>,
        metrics: bool,
    ) -> anyhow::Result<RunRecord> {
        let db = self.db();
        let run = db
            .query_row(
                "SELECT id, site, inventory, stages, started_ms, finished_ms, state, kiln_version
                 FROM runs WHERE id = ?1",
                params![run_id],
                run_info,
            )
            .optional()?
            .ok_or_else(|| {
                crate::exit::BadInput(format!(
                    "no run `{run_id}` in {} (see `kiln runs list`)",
                    self.path.display()
                ))
            })?;
        // `?2` is the rack when there is one; the whole run's queries keep
        // their plain form.
        let (node_filter, step_filter) = match rack {
            Some(_) => (
                " AND rack = ?2",
                " AND node IN (SELECT name FROM nodes WHERE run_id = ?1 AND rack = ?2)",
            ),
            None => ("", ""),
        };
        let mut nodes_stmt = db.prepare(&format!(
            "SELECT name, rack, hardware, verdict, failed_stage, reasons
             FROM nodes WHERE run_id = ?1{node_filter} ORDER BY seq"
        ))?;
        let map_node = |r: &rusqlite::Row<'_>| {
            Ok(NodeRecord {
                name: r.get(0)?,
                rack: r.get(1)?,
                hardware: r.get(2)?,
                verdict: parse_word(&r.get::<_, String>(3)?),
                failed_stage: r.get(4)?,
                reasons: json_col(&r.get::<_, String>(5)?),
                steps: Vec::new(),
            })
        };
        let with_rack;
        let args: &[&dyn rusqlite::ToSql] = match &rack {
            Some(rack) => {
                with_rack = [&run_id as &dyn rusqlite::ToSql, rack];
                &with_rack
            }
            None => &[&run_id],
        };
        let mut nodes: Vec<NodeRecord> = nodes_stmt
            .query_map(args, map_node)?
            .collect::<Result<_, _>>()?;
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let metrics_col = if metrics { "metrics" } else { "'null'" };
        let mut steps_stmt = db.prepare(&format!(
            "SELECT node, stage, step, status, started_ms, duration_ms, detail, reasons, {metrics_col}, artifacts, bmc_requests
             FROM steps WHERE run_id = ?1{step_filter} ORDER BY node, seq"
        ))?;
        let map_step = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                StepRecord {
                    stage: r.get(1)?,
                    step: r.get(2)?,
                    status: parse_word(&r.get::<_, String>(3)?),
                    started_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                    duration_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    detail: r.get(6)?,
                    reasons: json_col(&r.get::<_, String>(7)?),
                    metrics: serde_json::from_str(&r.get::<_, String>(8)?)
                        .unwrap_or(serde_json::Value::Null),
                    artifacts: json_col(&r.get::<_, String>(9)?),
                    bmc_requests: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                },
            ))
        };
        for row in steps_stmt.query_map(args, map_step)? {
            let (node, step) = row?;
            if let Some(&i) = index.get(&node) {
                nodes[i].steps.push(step);
            }
        }
        Ok(RunRecord { run, nodes })
    }

    /// The racks of a run's nodes, in the order their first node was
    /// recorded.
    pub fn racks(&self, run_id: &str) -> anyhow::Result<Vec<String>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT rack FROM nodes WHERE run_id = ?1 GROUP BY rack ORDER BY MIN(seq)")?;
        let rows = stmt
            .query_map(params![run_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The metrics of one node's steps in one stage, in order: what a
    /// rack-wide comparison needs without loading the whole run.
    pub fn stage_metrics(
        &self,
        run_id: &str,
        node: &str,
        stage: &str,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT metrics FROM steps WHERE run_id = ?1 AND node = ?2 AND stage = ?3 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![run_id, node, stage], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?).unwrap_or(serde_json::Value::Null));
        }
        Ok(out)
    }

    /// How many times each step of a run was started (1 unless a killed
    /// attempt was resumed mid-step): (node, stage, step, attempts).
    pub fn attempts(&self, run_id: &str) -> anyhow::Result<Vec<(String, String, String, u32)>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT node, stage, step, attempts FROM steps WHERE run_id = ?1 ORDER BY node, seq",
        )?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u32))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

impl RunJournal {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The journal underneath.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Records a node's verdict.
    pub fn set_verdict(
        &self,
        node: &str,
        verdict: NodeVerdict,
        failed_stage: Option<&str>,
        reasons: &[String],
    ) {
        self.writer.send(Write::Verdict {
            node: node.to_owned(),
            verdict: word(&verdict),
            failed_stage: failed_stage.map(str::to_owned),
            reasons: serde_json::to_string(reasons).unwrap_or_else(|_| "[]".into()),
        });
    }

    /// Records a notable event (a failure, an interruption, a warning).
    pub fn event(&self, node: Option<&str>, kind: &str, text: &str) {
        self.writer.send(Write::Event {
            node: node.map(str::to_owned),
            kind: kind.to_owned(),
            text: text.to_owned(),
            at: crate::pipeline::step::now_ms() as i64,
        });
    }

    /// Marks the run's end state, and returns once everything recorded so
    /// far is committed (the process may exit next).
    pub fn finish(&self, state: RunState) {
        self.writer.send(Write::Finish {
            state: word(&state),
            at: crate::pipeline::step::now_ms() as i64,
        });
        self.writer.flush();
    }

    /// The whole record as it stands.
    pub fn load(&self) -> anyhow::Result<RunRecord> {
        self.writer.flush();
        self.journal.load(&self.run_id)
    }

    /// The racks of the run's nodes (see [`Journal::racks`]).
    pub fn racks(&self) -> anyhow::Result<Vec<String>> {
        self.writer.flush();
        self.journal.racks(&self.run_id)
    }

    /// The run's record over one rack's nodes (see [`Journal::load_rack`]).
    pub fn load_rack(&self, rack: &str) -> anyhow::Result<RunRecord> {
        self.writer.flush();
        self.journal.load_rack(&self.run_id, rack)
    }

    /// One node's step metrics in one stage (see [`Journal::stage_metrics`]).
    pub fn stage_metrics(&self, node: &str, stage: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        self.journal.stage_metrics(&self.run_id, node, stage)
    }

    /// The record without step metrics (see [`Journal::load_summary`]).
    pub fn load_summary(&self) -> anyhow::Result<RunRecord> {
        self.writer.flush();
        self.journal.load_summary(&self.run_id)
    }

    fn next_seq(&self, node: &str) -> i64 {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let n = seq.entry(node.to_owned()).or_insert(0);
        *n += 1;
        *n
    }
}

impl StepSink for RunJournal {
    fn finished_before(&self, node: &str, stage: &str, step: &str) -> Option<StepRecord> {
        self.ended
            .get(&(node.to_owned(), stage.to_owned(), step.to_owned()))
            .cloned()
    }

    fn started(&self, node: &str, stage: &str, step: &str, at: UnixMs) {
        self.writer.send(Write::Started {
            node: node.to_owned(),
            stage: stage.to_owned(),
            step: step.to_owned(),
            seq: self.next_seq(node),
            at: at as i64,
        });
    }

    fn ended(&self, node: &str, r: &StepRecord) -> Committed {
        self.writer.send_committed(Write::Ended {
            node: node.to_owned(),
            stage: r.stage.clone(),
            step: r.step.clone(),
            status: word(&r.status),
            duration_ms: r.duration_ms.map(|v| v as i64),
            detail: r.detail.clone(),
            reasons: serde_json::to_string(&r.reasons).unwrap_or_else(|_| "[]".into()),
            metrics: serde_json::to_string(&r.metrics).unwrap_or_else(|_| "null".into()),
            artifacts: serde_json::to_string(&r.artifacts).unwrap_or_else(|_| "[]".into()),
            bmc_requests: r.bmc_requests.map(|v| v as i64),
        })
    }
}

/// Gives a journal written before steps counted their BMC requests the
/// column (empty for its old steps), so it loads and resumes as before.
fn add_bmc_requests(db: &Connection) -> rusqlite::Result<()> {
    let has: bool = db.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('steps') WHERE name = 'bmc_requests'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        db.execute_batch("ALTER TABLE steps ADD COLUMN bmc_requests INTEGER")?;
    }
    Ok(())
}

/// A journal SQLite cannot read is the user's to move aside or restore
/// (exit 2, naming the file); any other failure stays kiln's (exit 3).
fn damaged(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(NotADatabase | DatabaseCorrupt) => crate::exit::BadInput(format!(
            "{}: not a kiln journal, or damaged ({e}); move it aside to start afresh",
            path.display()
        ))
        .into(),
        _ => e.into(),
    }
}

fn run_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunInfo> {
    Ok(RunInfo {
        id: r.get(0)?,
        site: r.get(1)?,
        inventory: r.get(2)?,
        stages: json_col(&r.get::<_, String>(3)?),
        started_ms: r.get::<_, i64>(4)? as u64,
        finished_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        state: parse_word(&r.get::<_, String>(6)?),
        kiln_version: r.get(7)?,
    })
}

fn json_col<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

/// The snake_case word serde gives a unit enum variant.
fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn parse_word<T: serde::de::DeserializeOwned + Default>(w: &str) -> T {
    serde_json::from_value(serde_json::Value::String(w.to_owned())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pipeline::step::{Outcome, Steps};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    fn info(id: &str) -> RunInfo {
        RunInfo {
            id: id.into(),
            site: "s".into(),
            inventory: "site.yaml".into(),
            stages: vec!["preflight".into()],
            started_ms: 1,
            finished_ms: None,
            state: RunState::Running,
            kiln_version: "0".into(),
        }
    }

    fn node(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            rack: "r1".into(),
            hardware: "hw".into(),
            ..NodeRecord::default()
        }
    }

    #[tokio::test]
    async fn a_resumed_run_skips_ended_steps_and_reruns_the_interrupted_one() {
        let dir = tempfile::tempdir().unwrap();
        let run = Journal::open(dir.path())
            .unwrap()
            .create_run(&info("r1"), &[node("a"), node("b")])
            .unwrap();
        let sink: Arc<dyn StepSink> = Arc::new(run);
        let stop = Arc::new(AtomicBool::new(false));
        let mut steps = Steps::new("a", "preflight", Arc::clone(&sink), stop);
        let t = Duration::from_secs(5);
        steps
            .run("one", t, || async { Ok(Outcome::done("did one")) })
            .await
            .unwrap();
        // "two" starts but the process dies before it ends.
        sink.started("a", "preflight", "two", 5);
        drop(steps);
        drop(sink);

        let (run, record) = Journal::open(dir.path()).unwrap().resume_run("r1").unwrap();
        assert_eq!(record.nodes[0].steps.len(), 2);
        assert_eq!(record.nodes[0].steps[1].status, StepStatus::Running);
        let sink: Arc<dyn StepSink> = Arc::new(run);
        let stop = Arc::new(AtomicBool::new(false));
        let mut steps = Steps::new("a", "preflight", Arc::clone(&sink), stop);
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for name in ["one", "two"] {
            let ran = Arc::clone(&ran);
            let out = steps
                .run(name, t, || async move {
                    ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Outcome::done(format!("did {name}")))
                })
                .await
                .unwrap();
            assert_eq!(out.detail, format!("did {name}"));
        }
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);

        let journal = Journal::open(dir.path()).unwrap();
        let attempts = journal.attempts("r1").unwrap();
        assert_eq!(
            attempts,
            vec![
                ("a".into(), "preflight".into(), "one".into(), 1),
                ("a".into(), "preflight".into(), "two".into(), 2)
            ]
        );
        let record = journal.load("r1").unwrap();
        assert_eq!(record.nodes[0].steps[1].status, StepStatus::Done);
        assert_eq!(record.nodes[1].steps.len(), 0);
        assert_eq!(journal.latest().unwrap().as_deref(), Some("r1"));
    }

    #[tokio::test]
    async fn a_step_whose_end_cannot_be_recorded_fails() {
        let dir = tempfile::tempdir().unwrap();
        let run = Journal::open(dir.path())
            .unwrap()
            .create_run(&info("r1"), &[node("a")])
            .unwrap();
        // The disk refuses the step's end (as a full disk would).
        Connection::open(dir.path().join(FILE))
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER full BEFORE UPDATE ON steps BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            )
            .unwrap();
        let sink: Arc<dyn StepSink> = Arc::new(run);
        let stop = Arc::new(AtomicBool::new(false));
        let mut steps = Steps::new("a", "preflight", sink, stop);
        let out = steps
            .run("one", Duration::from_secs(5), || async {
                Ok(Outcome::done("did one"))
            })
            .await;
        let Err(crate::pipeline::step::Stop::Failed { outcome, .. }) = out else {
            panic!("the step passed: {out:?}");
        };
        assert!(outcome.detail.contains("journal"), "{}", outcome.detail);
        assert!(outcome.detail.contains("disk full"), "{}", outcome.detail);
    }

    #[test]
    fn a_damaged_journal_is_bad_input_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![b'x'; 4096]).unwrap();
        let err = Journal::open(dir.path()).err().unwrap();
        assert_eq!(
            crate::exit::status_for(&err),
            crate::exit::ExitStatus::BadInput
        );
        let path = dir.path().join(FILE).display().to_string();
        assert!(format!("{err:#}").contains(&path), "{err:#}");
    }

    #[test]
    fn an_unknown_run_is_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = Journal::open(dir.path()).unwrap().load("nope").unwrap_err();
        assert!(crate::exit::status_for(&err) == crate::exit::ExitStatus::BadInput);
        assert!(err.to_string().contains("kiln runs list"), "{err}");
    }

    #[tokio::test]
    async fn steps_keep_their_bmc_requests_and_older_journals_load_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let run = Journal::open(dir.path())
            .unwrap()
            .create_run(&info("r1"), &[node("a")])
            .unwrap();
        for (step, count) in [("bmc", Some(7)), ("host", None)] {
            run.started("a", "preflight", step, 1);
            let record = StepRecord {
                stage: "preflight".into(),
                step: step.into(),
                status: StepStatus::Done,
                bmc_requests: count,
                ..StepRecord::default()
            };
            run.ended("a", &record).wait().await.unwrap();
        }
        let steps = run.load().unwrap().nodes[0].steps.clone();
        assert_eq!(steps[0].bmc_requests, Some(7));
        assert_eq!(steps[1].bmc_requests, None);
        drop(run);

        // A journal from before the count: the column is added back, empty.
        let journal = Journal::open(dir.path()).unwrap();
        journal
            .db()
            .execute_batch("ALTER TABLE steps DROP COLUMN bmc_requests")
            .unwrap();
        drop(journal);
        let record = Journal::open(dir.path()).unwrap().load("r1").unwrap();
        assert_eq!(record.nodes[0].steps.len(), 2);
        assert!(
            record.nodes[0]
                .steps
                .iter()
                .all(|s| s.bmc_requests.is_none())
        );

        // A step record without the field, as `runs show --json` wrote it.
        let old: StepRecord = serde_json::from_str(
            r#"{"stage":"preflight","step":"bmc","status":"done","started_ms":1,"duration_ms":2,"detail":"","reasons":[],"metrics":null,"artifacts":[]}"#,
        )
        .unwrap();
        assert_eq!(old.bmc_requests, None);
        assert!(
            !serde_json::to_string(&old)
                .unwrap()
                .contains("bmc_requests")
        );
    }
}
