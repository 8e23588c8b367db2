//! `kiln provision` and `kiln runs`: plan a run (or reopen one to resume),
//! build each node's context, run the engine with progress and Ctrl-C
//! handling, and print the summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::bmc::connect;
use crate::bmc::ops::Waits;
use crate::bmc::transport::TransportOptions;
use crate::bmc::trust::{TrustStore, state_dir};
use crate::cli::{ProvisionArgs, RunsCommand};
use crate::commands::Ctx;
use crate::exit::{BadInput, ExitStatus};
use crate::imaging::deploy::Deadlines;
use crate::imaging::server::BootServer;
use crate::imaging::setup::ImagingSetup;
use crate::inventory::{Inventory, Node, Selection};
use crate::output::table;
use crate::pipeline::engine::{self, Setup};
use crate::pipeline::gates::Gates;
use crate::pipeline::journal::{Journal, RunJournal};
use crate::pipeline::node::{NodeCx, SiteCx};
use crate::pipeline::progress::{Mode, Progress, rfc3339};
use crate::pipeline::record::{NodeRecord, NodeVerdict, RunInfo, RunRecord, RunState};
use crate::pipeline::stages::Stage;
use crate::pipeline::step::now_ms;
use crate::ssh::auth::Credentials;
use crate::ssh::hostkeys::{Verifier, store_path};
use crate::ssh::{Client, ClientOptions, Pool, Remote, Target};
use crate::stages;

/// What to run: the command's flags, independent of clap so `kiln demo`
/// and the fleet benchmark can ask for runs too.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Node selection.
    pub select: Option<String>,
    /// `--stages`.
    pub stages: Option<String>,
    /// `--until`.
    pub until: Option<String>,
    /// `--resume [RUN]`: `Some("")` for the newest run.
    pub resume: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--fail-fast`.
    pub fail_fast: bool,
    /// `--allow-in-service`.
    pub allow_in_service: bool,
    /// `--concurrency`.
    pub concurrency: Option<usize>,
    /// Per-request Redfish timeout.
    pub bmc_timeout: Option<Duration>,
    /// The imaging stage's options.
    pub imaging: ImagingRequest,
    /// First pause between webhook attempts (default 1 s; tests shorten it).
    pub handoff_retry: Option<Duration>,
}

/// The imaging stage's flags.
#[derive(Clone, Debug, Default)]
pub struct ImagingRequest {
    /// `--bind` (default `0.0.0.0:8080`).
    pub bind: Option<std::net::SocketAddr>,
    /// `--advertise`.
    pub advertise: Option<String>,
    /// `--iso`.
    pub iso: Option<PathBuf>,
    /// `--iso-dir` / `--image-dir`.
    pub iso_dir: Option<PathBuf>,
    /// `--deploy-env` (default: the state folder's `deploy-env/`).
    pub deploy_env: Option<PathBuf>,
    /// `--advertise-bmc`: where BMCs fetch virtual media.
    pub advertise_bmc: Option<String>,
    /// `--boot-timeout`: power-on to the deploy agent's first call
    /// (default 15 minutes).
    pub boot_timeout: Option<Duration>,
    /// `--reimage`.
    pub reimage: bool,
    /// Have each deploy agent time a plain copy of the image first
    /// (`kiln bench deploy`).
    pub bench_peer: bool,
    /// `--install-timeout` (default 60 minutes).
    pub install_timeout: Option<Duration>,
    /// Longest wait from the install call-back to a verified SSH login
    /// (default 10 minutes).
    pub ssh_timeout: Option<Duration>,
    /// Poll interval for BMC read-backs (default 1 s).
    pub poll: Option<Duration>,
}

impl From<&ProvisionArgs> for Request {
    fn from(a: &ProvisionArgs) -> Request {
        Request {
            select: a.select.clone(),
            stages: a.stages.clone(),
            until: a.until.clone(),
            resume: a.resume.clone(),
            dry_run: a.dry_run,
            fail_fast: a.fail_fast,
            allow_in_service: a.allow_in_service,
            concurrency: a.concurrency,
            bmc_timeout: Some(a.bmc_timeout),
            imaging: ImagingRequest {
                bind: Some(a.bind),
                advertise: a.advertise.clone(),
                iso: a.iso.clone(),
                iso_dir: a.iso_dir.clone(),
                deploy_env: a.deploy_env.clone(),
                advertise_bmc: a.advertise_bmc.clone(),
                boot_timeout: Some(a.boot_timeout),
                reimage: a.reimage,
                bench_peer: false,
                install_timeout: Some(a.install_timeout),
                ssh_timeout: None,
                poll: None,
            },
            handoff_retry: None,
        }
    }
}

/// How a run ended, for the caller to print and exit with.
pub struct Finished {
    /// The record as the journal has it.
    pub record: RunRecord,
    /// Where the journal and run folders are.
    pub state: PathBuf,
}

impl Finished {
    /// 0 when every node was accepted, 1 otherwise (failed, unverified, or
    /// left pending by a stop).
    pub fn status(&self) -> ExitStatus {
        if self.record.run.state == RunState::Finished
            && self
                .record
                .nodes
                .iter()
                .all(|n| n.verdict == NodeVerdict::Accepted)
        {
            ExitStatus::Success
        } else {
            ExitStatus::NodeFailed
        }
    }
}

/// Runs `kiln provision`.
pub fn run(ctx: &Ctx, args: &ProvisionArgs) -> anyhow::Result<ExitStatus> {
    let inventory = ctx.load_inventory()?;
    let path = ctx.inventory_path()?.to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let request = Request::from(args);
    let mode = Progress::mode_for(ctx.printer.json, ctx.printer.quiet);
    let Some(finished) = runtime.block_on(execute(
        &inventory,
        &path,
        &state_dir(&path),
        &request,
        mode,
        ctx,
    ))?
    else {
        return Ok(ExitStatus::Success);
    };
    print_summary(ctx, &finished, mode);
    Ok(finished.status())
}

/// Plans or reopens a run and takes it to its end. `None` for a dry run.
pub async fn execute(
    inventory: &Inventory,
    inventory_path: &Path,
    state: &Path,
    request: &Request,
    mode: Mode,
    ctx: &Ctx,
) -> anyhow::Result<Option<Finished>> {
    // One run per state folder, held to the end: two runs would drive the
    // same BMCs and interleave one journal. A dry run changes nothing.
    let lock = match request.dry_run {
        true => None,
        false => Some(crate::state::StateLock::acquire(state)?),
    };
    let journal = Journal::open(state)?;
    // The run's stages and nodes: new, or what is left of an earlier run.
    let (stages, nodes, resumed) = match &request.resume {
        Some(id) => {
            let id = if id.is_empty() {
                journal.latest()?.ok_or_else(|| {
                    BadInput(format!("no run to resume in {}", journal.path().display()))
                })?
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
            (stages, nodes, Some(id))
        }
        None => {
            let mut stages = stages::plan(request.stages.as_deref(), request.until.as_deref())?;
            // By default, hand off only where the inventory says where to.
            if request.stages.is_none() && inventory.handoff.is_empty() {
                stages.retain(|s| *s != Stage::Handoff);
            }
            let selection = match &request.select {
                Some(expr) => expr.parse()?,
                None => Selection::all(),
            };
            let nodes = inventory.select(&selection)?;
            (stages, nodes, None)
        }
    };
    guard_in_service(&nodes, &stages, request.allow_in_service)?;

    // Everything that would fail every node alike fails here, before any
    // request: passwords, trust, profiles.
    let store = TrustStore::load(&TrustStore::path_in(state))?;
    let options = TransportOptions {
        request_timeout: request.bmc_timeout.unwrap_or(Duration::from_secs(60)),
        max_in_flight: inventory.limits.per_bmc.max(1),
        ..TransportOptions::default()
    };
    let clients = connect::clients(&nodes, &store, &options)?;
    let mut profiles = HashMap::new();
    for node in &nodes {
        if !profiles.contains_key(&node.hardware) {
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
            profiles.insert(node.hardware.clone(), Arc::new(entry.profile.clone()));
        }
    }
    let mut images = HashMap::new();
    for node in &nodes {
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
    let credentials = Arc::new(Credentials::new());
    let installers = if stages.contains(&Stage::Image) {
        Some(check_imaging(
            &nodes,
            &images,
            &credentials,
            &request.imaging,
            state,
        )?)
    } else {
        None
    };

    let handoff = if stages.contains(&Stage::Handoff) {
        let bytes = std::fs::read(inventory_path)
            .with_context(|| format!("cannot read {}", inventory_path.display()))?;
        let mut racks: Vec<&str> = nodes.iter().map(|n| n.rack.as_str()).collect();
        racks.dedup();
        let mut setup = crate::handoff::HandoffSetup::prepare(inventory, &bytes, state, &racks)?;
        if let Some(base) = request.handoff_retry {
            setup.retry_base = base;
        }
        Some(setup)
    } else {
        None
    };

    if request.dry_run {
        print_plan(ctx, &nodes, &stages, inventory);
        return Ok(None);
    }

    let (run, id) = match resumed {
        Some(id) => {
            let (run, _) = journal.resume_run(&id)?;
            (run, id)
        }
        None => {
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
            let records: Vec<NodeRecord> = nodes
                .iter()
                .map(|n| NodeRecord {
                    name: n.name.clone(),
                    rack: n.rack.clone(),
                    hardware: n.hardware.clone(),
                    ..NodeRecord::default()
                })
                .collect();
            (journal.create_run(&info, &records)?, id)
        }
    };
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
    let imaging = match installers {
        Some(installers) => Some(start_imaging(installers, &request.imaging, ctx).await?),
        None => None,
    };
    let known_hosts = store_path(&inventory_dir);
    let pool = ssh_pool(&known_hosts, &credentials);
    let handoff = handoff.map(|mut h| {
        h.pool = Some(Arc::clone(&pool));
        Arc::new(h)
    });
    let site = Arc::new(SiteCx {
        state: state.to_path_buf(),
        known_hosts,
        inventory_dir,
        credentials: Arc::clone(&credentials),
        imaging,
        handoff,
    });
    let contexts: Vec<Arc<NodeCx>> = nodes
        .iter()
        .zip(&clients)
        .map(|(node, client)| {
            Arc::new(NodeCx::new(
                (*node).clone(),
                (
                    Arc::clone(&profiles[&node.hardware]),
                    Arc::clone(&images[&node.image]),
                ),
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
    if mode != Mode::Json && !ctx.printer.quiet {
        let verb = if request.resume.is_some() {
            "resuming"
        } else {
            "starting"
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
    let watcher = tokio::spawn(watch_ctrl_c(
        Arc::clone(&stopping),
        Arc::clone(&gates),
        Arc::clone(&progress),
        Arc::clone(&run),
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
    Ok(Some(Finished {
        record,
        state: state.to_path_buf(),
    }))
}

/// One SSH pool for the run: host keys verified against kiln's records
/// (and each node's own known_hosts file); never trust on first use.
fn ssh_pool(known_hosts: &Path, credentials: &Arc<Credentials>) -> Arc<Pool> {
    let verifier = Verifier::new(
        Verifier::default_files(),
        Some(known_hosts.to_path_buf()),
        false,
    );
    Arc::new(Pool::new(Client::new(
        Arc::new(verifier),
        Arc::clone(credentials),
        ClientOptions::default(),
    )))
}

/// Checks, before any request, what imaging needs for every node: a local
/// installer image, or the deploy environment and a disk image (a local
/// one's digest checked), per image profile, and a key to log in with
/// afterwards. Returns the media by profile name.
fn check_imaging(
    nodes: &[&Node],
    images: &HashMap<String, Arc<crate::profiles::image::ImageProfile>>,
    credentials: &Credentials,
    request: &ImagingRequest,
    state: &Path,
) -> Result<HashMap<String, crate::imaging::Media>, BadInput> {
    let bind = request.bind.unwrap_or(DEFAULT_BIND);
    crate::listen::check_bind(bind, request.advertise.as_deref()).map_err(BadInput)?;
    let mut problems = Vec::new();
    let mut installers = HashMap::new();
    for (name, profile) in images {
        if !nodes.iter().any(|n| &n.image == name) {
            continue;
        }
        match crate::imaging::locate(
            profile,
            crate::imaging::Places {
                iso: request.iso.as_deref(),
                image_dir: request.iso_dir.as_deref(),
                deploy_env: request.deploy_env.as_deref(),
                state,
            },
        ) {
            Ok(mut media) => {
                if let crate::imaging::Media::Disk(d) = &mut media {
                    d.bench_peer = request.bench_peer;
                }
                installers.insert(name.clone(), media);
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    for node in nodes {
        if let Err(e) = crate::imaging::authorized_keys(credentials, node) {
            problems.push(format!("{e:#}"));
        }
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        Ok(installers)
    } else {
        Err(BadInput(crate::diag::clip(&problems.join("\n"), 4000)))
    }
}

/// The default `--bind` of the boot server.
const DEFAULT_BIND: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// Starts the run's boot server.
async fn start_imaging(
    installers: HashMap<String, crate::imaging::Media>,
    request: &ImagingRequest,
    ctx: &Ctx,
) -> anyhow::Result<ImagingSetup> {
    let server = BootServer::start(
        request.bind.unwrap_or(DEFAULT_BIND),
        request.advertise.as_deref(),
    )
    .await
    .map_err(|e| BadInput(e.to_string()))?
    .with_media_url(request.advertise_bmc.as_deref());
    ctx.printer
        .info(&format!("boot server at {}", server.base_url()));
    let defaults = Deadlines::default();
    Ok(ImagingSetup {
        server: Arc::new(server),
        installers,
        deadlines: Deadlines {
            install: request.install_timeout.unwrap_or(defaults.install),
            ssh: request.ssh_timeout.unwrap_or(defaults.ssh),
            agent: request.boot_timeout.unwrap_or(defaults.agent),
            ..defaults
        },
        waits: Waits {
            poll: request.poll.unwrap_or(Duration::from_secs(1)),
            ..Waits::default()
        },
        reimage: request.reimage,
    })
}

/// Ctrl-C once: finish running steps, start nothing new. Twice: record
/// the run as interrupted and leave at once.
async fn watch_ctrl_c(
    stopping: Arc<AtomicBool>,
    gates: Arc<Gates>,
    progress: Arc<Progress>,
    run: Arc<RunJournal>,
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
    eprintln!(
        "aborted; resume with `kiln provision --resume {}`",
        run.run_id()
    );
    std::process::exit(i32::from(ExitStatus::NodeFailed.code()));
}

/// Refuses destructive stages on nodes in service without the opt-in.
fn guard_in_service(nodes: &[&Node], stages: &[Stage], allowed: bool) -> Result<(), BadInput> {
    if allowed || !stages.iter().any(|s| s.destructive()) {
        return Ok(());
    }
    let in_service: Vec<&str> = nodes
        .iter()
        .filter(|n| n.in_service)
        .map(|n| n.name.as_str())
        .collect();
    if in_service.is_empty() {
        return Ok(());
    }
    Err(BadInput(format!(
        "{} node(s) are marked in service ({}); stages {} would disrupt them. \
         Leave them out with --select, or pass --allow-in-service",
        in_service.len(),
        crate::diag::clip(&in_service.join(", "), 200),
        stages
            .iter()
            .filter(|s| s.destructive())
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(",")
    )))
}

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

fn counts(record: &RunRecord) -> serde_json::Value {
    let mut c: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for n in &record.nodes {
        *c.entry(n.verdict.word()).or_default() += 1;
    }
    json!(c)
}

fn print_plan(ctx: &Ctx, nodes: &[&Node], stages: &[Stage], inventory: &Inventory) {
    let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
    let mut racks: Vec<&str> = nodes.iter().map(|n| n.rack.as_str()).collect();
    racks.dedup();
    let handoff = if stages.contains(&Stage::Handoff) {
        crate::handoff::plan(&inventory.handoff, &racks)
    } else {
        Vec::new()
    };
    if ctx.printer.json {
        let _ = ctx.printer.json_data(&json!({
            "handoff": handoff.iter().map(|(rack, target, sends)| json!({"rack": rack, "target": target, "sends": sends})).collect::<Vec<_>>(),
            "stages": names,
            "nodes": nodes.iter().map(|n| json!({"node": n.name, "rack": n.rack, "hardware": n.hardware, "image": n.image})).collect::<Vec<_>>(),
            "limits": {"concurrency": inventory.limits.concurrency, "per_rack": inventory.limits.per_rack, "per_bmc": inventory.limits.per_bmc},
        }));
        return;
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.rack.clone(),
                n.hardware.clone(),
                n.image.clone(),
            ]
        })
        .collect();
    ctx.printer
        .data(&table(&["NODE", "RACK", "HARDWARE", "IMAGE"], &rows));
    if !handoff.is_empty() {
        let rows: Vec<Vec<String>> = handoff
            .iter()
            .map(|(r, t, s)| vec![r.clone(), t.clone(), s.clone()])
            .collect();
        ctx.printer.data("\n");
        ctx.printer
            .data(&table(&["RACK", "HANDOFF TARGET", "WOULD SEND"], &rows));
    }
    ctx.printer.info(&format!(
        "dry run: {} node(s) would go through {}; credentials and BMC trust are in order",
        nodes.len(),
        names.join(" → ")
    ));
}

/// The final table: node, verdict, failing stage, reason.
pub fn print_summary(ctx: &Ctx, finished: &Finished, mode: Mode) {
    let record = &finished.record;
    if mode != Mode::Json {
        let rows: Vec<Vec<String>> = record
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.rack.clone(),
                    n.verdict.word().to_owned(),
                    n.failed_stage.clone().unwrap_or_default(),
                    crate::diag::clip(&n.reasons.join("; "), 160),
                ]
            })
            .collect();
        ctx.printer.data(&table(
            &["NODE", "RACK", "VERDICT", "STAGE", "REASON"],
            &rows,
        ));
    }
    let accepted = record
        .nodes
        .iter()
        .filter(|n| n.verdict == NodeVerdict::Accepted)
        .count();
    let id = &record.run.id;
    ctx.printer.info(&format!(
        "run {id}: {accepted} of {} node(s) accepted; raw outputs in {}",
        record.nodes.len(),
        finished.state.join("runs").join(id).display()
    ));
    if record.run.state != RunState::Finished {
        ctx.printer.info(&format!(
            "the run was stopped; continue it with `kiln provision --resume {id}`"
        ));
    }
}

/// Runs `kiln runs …`.
pub fn runs(ctx: &Ctx, cmd: RunsCommand) -> anyhow::Result<ExitStatus> {
    let path = ctx.inventory_path()?;
    let journal = Journal::open(&state_dir(path))?;
    match cmd {
        RunsCommand::List => {
            let runs = journal.runs()?;
            if ctx.printer.json {
                let list: Vec<_> = runs
                    .iter()
                    .map(|(info, counts)| {
                        let c: serde_json::Map<String, serde_json::Value> = counts
                            .iter()
                            .map(|(v, n)| (v.word().to_owned(), json!(n)))
                            .collect();
                        json!({"run": info, "counts": c})
                    })
                    .collect();
                ctx.printer.json_data(&json!({ "runs": list }))?;
            } else {
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|(info, counts)| {
                        vec![
                            info.id.clone(),
                            info.site.clone(),
                            format!("{:?}", info.state).to_lowercase(),
                            rfc3339(info.started_ms),
                            info.stages.join(","),
                            counts
                                .iter()
                                .map(|(v, n)| format!("{n} {}", v.word()))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ]
                    })
                    .collect();
                ctx.printer.data(&table(
                    &["RUN", "SITE", "STATE", "STARTED", "STAGES", "NODES"],
                    &rows,
                ));
            }
            Ok(ExitStatus::Success)
        }
        RunsCommand::Show { run } => {
            let id = match run {
                Some(id) => id,
                None => journal
                    .latest()?
                    .ok_or_else(|| BadInput(format!("no runs in {}", journal.path().display())))?,
            };
            let record = journal.load(&id)?;
            if ctx.printer.json {
                ctx.printer.json_data(&record)?;
            } else {
                let finished = Finished {
                    record,
                    state: state_dir(path),
                };
                print_summary(ctx, &finished, Mode::Lines);
            }
            Ok(ExitStatus::Success)
        }
    }
}
