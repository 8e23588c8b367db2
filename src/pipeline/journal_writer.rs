//! The journal's writer thread. The engine's writes (step starts and ends,
//! verdicts, events) queue here and whatever queued while one commit ran
//! goes into the next, as one transaction (group commit).
//!
//! Why a thread: at thousands of nodes every step start and end was its
//! own SQLite commit on a tokio worker, under the journal's lock: a file
//! lock, a WAL append and sometimes a checkpoint each time, with the other
//! nodes' tasks waiting on the lock. Batched, the per-commit work is paid
//! once per batch and the workers never touch the disk.
//!
//! Nothing is lost by queueing: a step's end is acknowledged only once
//! committed ([`Committed`]), so a step never runs again on resume after
//! its node went on; one that could not be committed is answered with the
//! error and its step fails; [`Writer::flush`] waits for everything sent
//! before it; dropping the writer commits what is queued and stops the
//! thread.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use crate::pipeline::step::Committed;

/// Most writes in one transaction (bounds how long a commit holds the
/// database from other readers).
const MAX_BATCH: usize = 2048;

/// One write to the journal.
#[derive(Debug)]
pub enum Write {
    /// A step starts (or starts again on resume: its attempt is counted).
    Started {
        /// Node.
        node: String,
        /// Stage.
        stage: String,
        /// Step.
        step: String,
        /// Its place in the node's order.
        seq: i64,
        /// Start time, ms since the epoch.
        at: i64,
    },
    /// A step ended.
    Ended {
        /// Node.
        node: String,
        /// Stage.
        stage: String,
        /// Step.
        step: String,
        /// Status word.
        status: String,
        /// How long it took.
        duration_ms: Option<i64>,
        /// One-line detail.
        detail: String,
        /// Reasons, as a JSON list.
        reasons: String,
        /// Metrics, as JSON.
        metrics: String,
        /// Artifacts, as a JSON list.
        artifacts: String,
        /// Requests sent to the BMC during the step, when any were.
        bmc_requests: Option<i64>,
    },
    /// A node's verdict.
    Verdict {
        /// Node.
        node: String,
        /// Verdict word.
        verdict: String,
        /// The stage that failed it.
        failed_stage: Option<String>,
        /// Reasons, as a JSON list.
        reasons: String,
    },
    /// A notable event.
    Event {
        /// The node it concerns, if one.
        node: Option<String>,
        /// Kind word.
        kind: String,
        /// Text.
        text: String,
        /// When, ms since the epoch.
        at: i64,
    },
    /// The run's end state.
    Finish {
        /// State word.
        state: String,
        /// When, ms since the epoch.
        at: i64,
    },
}

impl Write {
    fn what(&self) -> &'static str {
        match self {
            Write::Started { .. } => "a step's start",
            Write::Ended { .. } => "a step's end",
            Write::Verdict { .. } => "a node's verdict",
            Write::Event { .. } => "an event",
            Write::Finish { .. } => "the run's end",
        }
    }

    fn apply(&self, db: &Connection, run_id: &str) -> rusqlite::Result<()> {
        match self {
            Write::Started {
                node,
                stage,
                step,
                seq,
                at,
            } => {
                // A step that was running when an earlier attempt was
                // killed starts again: count the attempt, keep its place.
                db.prepare_cached(
                    "INSERT INTO steps (run_id, node, seq, stage, step, status, started_ms, detail, reasons, metrics, artifacts)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, '', '[]', 'null', '[]')
                     ON CONFLICT (run_id, node, stage, step) DO UPDATE SET
                         status = 'running', started_ms = excluded.started_ms, attempts = attempts + 1",
                )?
                .execute(params![run_id, node, seq, stage, step, at])?;
            }
            Write::Ended {
                node,
                stage,
                step,
                status,
                duration_ms,
                detail,
                reasons,
                metrics,
                artifacts,
                bmc_requests,
            } => {
                let rows = db.prepare_cached(
                    "UPDATE steps SET status = ?5, duration_ms = ?6, detail = ?7, reasons = ?8, metrics = ?9, artifacts = ?10, bmc_requests = ?11
                     WHERE run_id = ?1 AND node = ?2 AND stage = ?3 AND step = ?4",
                )?
                .execute(params![
                    run_id,
                    node,
                    stage,
                    step,
                    status,
                    duration_ms,
                    detail,
                    reasons,
                    metrics,
                    artifacts,
                    bmc_requests
                ])?;
                // Its start was not stored (that write failed): the end
                // went nowhere, which is a failure too.
                if rows == 0 {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTFOUND),
                        Some("the step's start is not in the journal".into()),
                    ));
                }
            }
            Write::Verdict {
                node,
                verdict,
                failed_stage,
                reasons,
            } => {
                db.prepare_cached(
                    "UPDATE nodes SET verdict = ?3, failed_stage = ?4, reasons = ?5 WHERE run_id = ?1 AND name = ?2",
                )?
                .execute(params![run_id, node, verdict, failed_stage, reasons])?;
            }
            Write::Event {
                node,
                kind,
                text,
                at,
            } => {
                db.prepare_cached(
                    "INSERT INTO events (run_id, at_ms, node, kind, text) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![run_id, at, node, kind, text])?;
            }
            Write::Finish { state, at } => {
                db.prepare_cached("UPDATE runs SET state = ?2, finished_ms = ?3 WHERE id = ?1")?
                    .execute(params![run_id, state, at])?;
            }
        }
        Ok(())
    }
}

/// Who waits for a write.
enum Ack {
    /// Nobody.
    None,
    /// A task (a step's end), told whether it was stored.
    Task(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// A thread ([`Writer::flush`]).
    Thread(mpsc::SyncSender<()>),
}

impl Ack {
    fn answer(self, result: Result<(), String>) {
        match self {
            Ack::None => {}
            Ack::Task(tx) => {
                let _ = tx.send(result);
            }
            Ack::Thread(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

struct Job {
    write: Option<Write>,
    ack: Ack,
}

/// The writer thread of one run and the queue to it.
pub struct Writer {
    db: Arc<Mutex<Connection>>,
    run_id: String,
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the thread writing `run_id`'s records into `db`.
    pub fn start(db: Arc<Mutex<Connection>>, run_id: &str) -> anyhow::Result<Writer> {
        let (queue, jobs) = mpsc::channel();
        let thread = {
            let db = Arc::clone(&db);
            let run_id = run_id.to_owned();
            std::thread::Builder::new()
                .name("kiln-journal".into())
                .spawn(move || write_loop(&db, &run_id, &jobs))?
        };
        Ok(Writer {
            db,
            run_id: run_id.to_owned(),
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    fn enqueue(&self, write: Option<Write>, ack: Ack) {
        let job = Job { write, ack };
        let Some(queue) = &self.queue else {
            return direct(&self.db, &self.run_id, job);
        };
        // The thread is gone only if it panicked: write here instead.
        if let Err(mpsc::SendError(job)) = queue.send(job) {
            direct(&self.db, &self.run_id, job);
        }
    }

    /// Queues a write; nobody waits for it.
    pub fn send(&self, write: Write) {
        self.enqueue(Some(write), Ack::None);
    }

    /// Queues a write; the answer resolves once it is committed.
    pub fn send_committed(&self, write: Write) -> Committed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(Some(write), Ack::Task(tx));
        Committed::when(rx)
    }

    /// Blocks until every write queued before is committed (for reads of
    /// the run's own record). Blocks a thread for at most one commit.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.enqueue(None, Ack::Thread(tx));
        let _ = rx.recv();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has committed the rest.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(db: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave SQLite inconsistent (it
    // rolls back), so a poisoned lock is still usable.
    db.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one job on the calling thread.
fn direct(db: &Mutex<Connection>, run_id: &str, job: Job) {
    let result = match &job.write {
        Some(write) => report(write.apply(&lock(db), run_id), write.what()),
        None => Ok(()),
    };
    job.ack.answer(result);
}

fn write_loop(db: &Mutex<Connection>, run_id: &str, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(db, run_id, batch);
    }
}

/// Commits a batch in one transaction; if that fails, each write alone,
/// so one bad write does not take the others with it. Answers every job
/// with whether its write was stored.
fn commit(db: &Mutex<Connection>, run_id: &str, batch: Vec<Job>) {
    if batch.iter().all(|j| j.write.is_none()) {
        for job in batch {
            job.ack.answer(Ok(()));
        }
        return;
    }
    let mut db = lock(db);
    let together = (|| {
        let tx = db.transaction()?;
        for write in batch.iter().filter_map(|j| j.write.as_ref()) {
            write.apply(&tx, run_id)?;
        }
        tx.commit()
    })();
    if together.is_ok() {
        drop(db);
        for job in batch {
            job.ack.answer(Ok(()));
        }
        return;
    }
    for job in batch {
        let result = match &job.write {
            Some(write) => report(write.apply(&db, run_id), write.what()),
            None => Ok(()),
        };
        job.ack.answer(result);
    }
}

/// A journal write that fails (disk full, the file removed) is logged
/// and handed back as text: a step's end that failed fails its step, the
/// rest must not stop the run's real work.
pub fn report(result: rusqlite::Result<()>, what: &str) -> Result<(), String> {
    result.map_err(|e| {
        tracing::error!("cannot record {what} in the journal: {e}");
        e.to_string()
    })
}
