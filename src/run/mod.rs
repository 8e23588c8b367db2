//! One run from request to record: pick the work (new or resumed), check
//! everything that would fail every node alike, open the journal, build
//! each node's context, run the engine with Ctrl-C handling, and close the
//! BMC sessions. Commands ask for a run with a [`Request`] and print what
//! comes back; nothing here prints, it reports through a [`Report`].
//!
//! Each planned stage prepares its own run-wide setup (its
//! `StageDef::prepare`); nothing here names a stage.
//!
//! - [`request`]: what is asked, and how it ended ([`Finished`]).
//! - `interrupt`: Ctrl-C.

mod interrupt;
pub mod request;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

pub use crate::pipeline::notice::{Notice, Report};
pub use request::{Finished, ImagingRequest, Request};

use crate::bmc::connect;
use crate::bmc::transport::TransportOptions;
use crate::bmc::trust::TrustStore;
use crate::exit::BadInput;
use crate::inventory::{Inventory, Node, Selection};
use crate::pipeline::engine;
use crate::pipeline::gates::Gates;
use crate::pipeline::journal::{Journal, RunJournal};
use crate::pipeline::node::{NodeCx, Prepared, SiteCx};
use crate::pipeline::prepare::{PrepareCx, StartCx};
use crate::pipeline::progress::{Mode, Progress, rfc3339};
use crate::pipeline::record::{NodeRecord, NodeVerdict, RunInfo, RunRecord, RunState};
use crate::pipeline::setup::Setup;
use crate::pipeline::stages::Stage;
use crate::pipeline::step::now_ms;
use crate::ssh::auth::Credentials;
use crate::ssh::hostkeys::store_path;
use crate::ssh::{ClientOptions, Remote, Target};
use crate::stages;

/// How [`execute`] ended.
pub enum Outcome<'a> {
    /// A dry run: what would run, checked but not started.
    Planned {
        /// The nodes.
        nodes: Vec<&'a Node>,
        /// The stages, in order.
        stages: Vec<Stage>,
    },
    /// The run went to its end (or was stopped).
    Finished(Finished),
}

impl Outcome<'_> {
    /// The finished run; `None` for a dry run.
    pub fn finished(self) -> Option<Finished> {
        match self {
            Outcome::Planned { .. } => None,
            Outcome::Finished(f) => Some(f),
        }
    }
}

/// Plans or reopens a run and takes it to its end.
pub async fn execute<'a>(
    inventory: &'a Inventory,
    inventory_path: &Path,
    state: &Path,
    request: &Request,
    mode: Mode,
    report: Report,
) -> anyhow::Result<Outcome<'a>> {
    // One run per state folder, held to the end: two runs would drive the
    // same BMCs and interleave one journal. A dry run changes nothing.
    let lock = match request.dry_run {
        true => None,
        false => Some(crate::state::StateLock::acquire(state)?),
    };
    let journal = Journal::open(state)?;
    let (stages, nodes, resumed) = choose_work(inventory, &journal, request)?;
    let destructive: Vec<&str> = stages
        .iter()
        .filter(|s| s.destructive())
        .map(|s| s.name())
        .collect();
    if !destructive.is_empty() {
        crate::pipeline::guard::in_service(
            nodes.iter().copied(),
            &format!("stages {} would disrupt them", destructive.join(",")),
            request.allow_in_service,
        )?;
    }

    // Everything that would fail every node alike fails here, before any
    // request: passwords, trust, profiles.
    let store = TrustStore::load(&TrustStore::path_in(state))?;
    let options = TransportOptions {
        request_timeout: request.bmc_timeout.unwrap_or(Duration::from_secs(60)),
        max_in_flight: inventory.limits.per_bmc.max(1),
        ..TransportOptions::default()
    };
    let clients = connect::clients(&nodes, &store, &options)?;
    let profiles = Profiles::resolve(inventory, &nodes)?;
    let credentials = Arc::new(Credentials::new());
    // Each stage checks its run-wide needs now, so that a dry run fails
    // as the run would; what it prepared starts once the run goes.
    let preparing = {
        let run = PrepareCx {
            inventory,
            inventory_path,
            state,
            nodes: &nodes,
            images: &profiles.images,
            credentials: &credentials,
            imaging: &request.imaging,
            handoff_retry: request.handoff_retry,
        };
        let mut preparing = Vec::new();
        for stage in &stages {
            preparing.extend(stage.def().prepare(&run)?);
        }
        preparing
    };
    if request.dry_run {
        return Ok(Outcome::Planned { nodes, stages });
    }

    let (run, id) = open_run(journal, inventory, inventory_path, &stages, &nodes, resumed)?;
    if let Some(lock) = &lock {
        lock.note(&format!("run {id}"))?;
    }
    let run: Arc<RunJournal> = Arc::new(run);
    let run_dir = state.join("runs").join(&id);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create the run folder {}", run_dir.display()))?;

    let mut limits = inventory.limits.clone();
    if let Some(c) = request.concurrency {
        limits.concurrency = c.max(1);
    }
    let gates = Arc::new(Gates::new(&limits));
    let inventory_dir = inventory_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let pool = crate::ssh::site::pool(
        &inventory_dir,
        Arc::clone(&credentials),
        false,
        ClientOptions::default(),
    );
    let mut prepared = Prepared::default();
    for prepare in preparing {
        let value = prepare
            .start(StartCx {
                pool: &pool,
                report: &report,
                started: &mut prepared,
            })
            .await?;
        prepared.add(value);
    }
    let site = Arc::new(SiteCx {
        state: state.to_path_buf(),
        known_hosts: store_path(&inventory_dir),
        inventory_dir,
        credentials,
        prepared,
    });
    let contexts: Vec<Arc<NodeCx>> = nodes
        .iter()
        .zip(&clients)
        .map(|(node, client)| {
            Arc::new(NodeCx::new(
                (*node).clone(),
                profiles.of(node),
                Arc::clone(&site),
                run_dir.clone(),
                Arc::clone(&gates),
                Arc::clone(client),
                Remote::Ssh {
                    pool: Arc::clone(&pool),
                    target: Target::from_node(node),
                },
            ))
        })
        .collect();
    let progress = Arc::new(Progress::new(
        mode,
        &nodes
            .iter()
            .map(|n| (n.name.clone(), n.rack.clone()))
            .collect::<Vec<_>>(),
    ));
    progress.json_line(&json!({
        "event": "run_started", "at": now_ms(), "run": id, "nodes": nodes.len(),
        "stages": stages.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "resumed": request.resume.is_some(),
    }));
    if mode != Mode::Json && mode != Mode::Quiet {
        let verb = match request.resume.is_some() {
            true => "resuming",
            false => "starting",
        };
        progress.note(&format!(
            "{verb} run {id}: {} node(s), stages {}",
            nodes.len(),
            stages
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }

    let stopping = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(interrupt::watch_ctrl_c(
        Arc::clone(&stopping),
        Arc::clone(&gates),
        Arc::clone(&progress),
        Arc::clone(&run),
        report,
    ));
    let record = engine::run(Setup {
        nodes: contexts,
        stages,
        journal: Arc::clone(&run),
        run_dir,
        gates,
        progress: Arc::clone(&progress),
        fail_fast: request.fail_fast,
        stopping,
        allow_in_service: request.allow_in_service,
    })
    .await;
    watcher.abort();
    // Sessions are closed even when the run failed, all at once: one by
    // one, a site's slow BMCs would add minutes.
    let mut logouts = tokio::task::JoinSet::new();
    for client in &clients {
        let client = Arc::clone(client);
        logouts.spawn(async move { client.logout().await });
    }
    while logouts.join_next().await.is_some() {}
    let record = record?;
    progress.json_line(&json!({
        "event": "run_finished", "at": now_ms(), "run": record.run.id,
        "state": record.run.state, "counts": counts(&record),
    }));
    Ok(Outcome::Finished(Finished {
        record,
        state: state.to_path_buf(),
    }))
}

/// The run's stages and nodes: new from the request, or what is left of
/// the run being resumed (whose id comes third).
fn choose_work<'a>(
    inventory: &'a Inventory,
    journal: &Journal,
    request: &Request,
) -> anyhow::Result<(Vec<Stage>, Vec<&'a Node>, Option<String>)> {
    let Some(id) = &request.resume else {
        let mut stages = stages::plan(request.stages.as_deref(), request.until.as_deref())?;
        // Some stages run by default only where the inventory asks for them.
        if request.stages.is_none() {
            stages.retain(|s| s.def().in_default_plan(inventory));
        }
        let selection = match &request.select {
            Some(expr) => expr.parse()?,
            None => Selection::all(),
        };
        return Ok((stages, inventory.select(&selection)?, None));
    };
    let id = if id.is_empty() {
        journal
            .latest()?
            .ok_or_else(|| BadInput(format!("no run to resume in {}", journal.path().display())))?
    } else {
        id.clone()
    };
    let record = journal.load(&id)?;
    let stages = record
        .run
        .stages
        .iter()
        .map(|s| s.parse::<Stage>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes = Vec::new();
    for n in record
        .nodes
        .iter()
        .filter(|n| n.verdict == NodeVerdict::Pending)
    {
        nodes.push(inventory.node(&n.name).ok_or_else(|| {
            BadInput(format!(
                "run {id} includes node {} that is no longer in the inventory",
                n.name
            ))
        })?);
    }
    Ok((stages, nodes, Some(id)))
}

/// The hardware and image profiles the run's nodes name, each read once.
struct Profiles {
    hardware: HashMap<String, Arc<crate::profiles::hardware::HardwareProfile>>,
    images: HashMap<String, Arc<crate::profiles::image::ImageProfile>>,
}

impl Profiles {
    /// Looks up every node's profiles; an unknown one fails the run.
    fn resolve(inventory: &Inventory, nodes: &[&Node]) -> Result<Profiles, BadInput> {
        let mut hardware = HashMap::new();
        let mut images = HashMap::new();
        for node in nodes {
            if !hardware.contains_key(&node.hardware) {
                let entry = inventory
                    .catalog
                    .hardware
                    .get(&node.hardware)
                    .ok_or_else(|| {
                        BadInput(format!(
                            "{}: hardware profile `{}` is not known",
                            node.name, node.hardware
                        ))
                    })?;
                hardware.insert(node.hardware.clone(), Arc::new(entry.profile.clone()));
            }
        }
        for node in nodes {
            if !images.contains_key(&node.image) {
                let entry = inventory.catalog.images.get(&node.image).ok_or_else(|| {
                    BadInput(format!(
                        "{}: image profile `{}` is not known",
                        node.name, node.image
                    ))
                })?;
                images.insert(node.image.clone(), Arc::new(entry.profile.clone()));
            }
        }
        Ok(Profiles { hardware, images })
    }

    /// A node's pair, as [`NodeCx::new`] takes it.
    fn of(
        &self,
        node: &Node,
    ) -> (
        Arc<crate::profiles::hardware::HardwareProfile>,
        Arc<crate::profiles::image::ImageProfile>,
    ) {
        (
            Arc::clone(&self.hardware[&node.hardware]),
            Arc::clone(&self.images[&node.image]),
        )
    }
}

/// Reopens the run being resumed, or records a new one for `nodes`.
fn open_run(
    journal: Journal,
    inventory: &Inventory,
    inventory_path: &Path,
    stages: &[Stage],
    nodes: &[&Node],
    resumed: Option<String>,
) -> anyhow::Result<(RunJournal, String)> {
    if let Some(id) = resumed {
        let (run, _) = journal.resume_run(&id)?;
        return Ok((run, id));
    }
    let id = new_run_id();
    let info = RunInfo {
        id: id.clone(),
        site: inventory.site.clone(),
        inventory: inventory_path.display().to_string(),
        stages: stages.iter().map(|s| s.name().to_owned()).collect(),
        started_ms: now_ms(),
        finished_ms: None,
        state: RunState::Running,
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let records: Vec<NodeRecord> = nodes.iter().map(|n| NodeRecord::pending(n)).collect();
    Ok((journal.create_run(&info, &records)?, id))
}

/// A new run's id: its start time and a random tail.
fn new_run_id() -> String {
    let stamp = rfc3339(now_ms());
    // 2026-11-25T10:15:00Z → 20261125-101500
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let mut tail = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tail);
    format!(
        "{}-{}-{:02x}{:02x}",
        &digits[..8],
        &digits[8..14],
        tail[0],
        tail[1]
    )
}

/// How many nodes ended with each verdict.
fn counts(record: &RunRecord) -> serde_json::Value {
    let mut c: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for n in &record.nodes {
        *c.entry(n.verdict.word()).or_default() += 1;
    }
    json!(c)
}
