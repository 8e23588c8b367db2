//! `kiln provision` and `kiln runs`: turn the flags into a run request,
//! hand it to [`crate::run`], and print the plan or summary.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::bmc::trust::state_dir;
use crate::cli::{ProvisionArgs, RunArgs, RunsCommand};
use crate::commands::Ctx;
use crate::exit::{BadInput, ExitStatus};
use crate::inventory::{Inventory, Node};
use crate::output::{Printer, table};
use crate::pipeline::journal::Journal;
use crate::pipeline::progress::{Mode, Progress, rfc3339};
use crate::pipeline::record::{NodeVerdict, RunState};
use crate::pipeline::stages::Stage;
use crate::run::{self, Notice, Outcome};

pub use crate::run::{Finished, ImagingRequest, Request};

impl From<&RunArgs> for Request {
    fn from(a: &RunArgs) -> Request {
        Request {
            select: a.select.clone(),
            allow_in_service: a.allow_in_service,
            concurrency: a.concurrency,
            bmc_timeout: Some(a.bmc_timeout),
            imaging: ImagingRequest {
                bind: Some(a.bind),
                advertise: a.advertise.clone(),
                ..ImagingRequest::default()
            },
            ..Request::default()
        }
    }
}

impl From<&ProvisionArgs> for Request {
    fn from(a: &ProvisionArgs) -> Request {
        let run = Request::from(&a.run);
        Request {
            stages: a.stages.clone(),
            until: a.until.clone(),
            resume: a.resume.clone(),
            dry_run: a.dry_run,
            fail_fast: a.fail_fast,
            imaging: ImagingRequest {
                iso: a.iso.clone(),
                iso_dir: a.dirs.iso_dir.clone(),
                deploy_env: a.dirs.deploy_env.clone(),
                advertise_bmc: a.advertise_bmc.clone(),
                boot_timeout: Some(a.boot_timeout),
                reimage: a.reimage,
                install_timeout: Some(a.install_timeout),
                ..run.imaging
            },
            ..run
        }
    }
}

/// Runs `kiln provision`.
pub fn run(ctx: &Ctx, args: &ProvisionArgs) -> anyhow::Result<ExitStatus> {
    let inventory = ctx.load_inventory()?;
    let path = ctx.inventory_path()?.to_path_buf();
    let runtime = crate::commands::runtime()?;
    let request = Request::from(args);
    let mode = Progress::mode_for(ctx.printer.json, ctx.printer.quiet);
    let outcome = runtime.block_on(execute(
        ctx,
        &inventory,
        &path,
        &state_dir(&path),
        &request,
        mode,
    ))?;
    finish(ctx, &inventory, outcome, mode)
}

/// Runs `request` over `inventory` (read from `site`, its state in
/// `state`), with the run's notices on the command's printer.
pub(crate) async fn execute<'a>(
    ctx: &Ctx,
    inventory: &'a Inventory,
    site: &Path,
    state: &Path,
    request: &run::Request,
    mode: Mode,
) -> anyhow::Result<Outcome<'a>> {
    run::execute(inventory, site, state, request, mode, notices(&ctx.printer)).await
}

/// Prints a run's outcome (the plan of a dry run, else the summary) and
/// gives the exit status.
pub fn finish(
    ctx: &Ctx,
    inventory: &Inventory,
    outcome: Outcome<'_>,
    mode: Mode,
) -> anyhow::Result<ExitStatus> {
    match outcome {
        Outcome::Planned { nodes, stages } => {
            print_plan(ctx, &nodes, &stages, inventory);
            Ok(ExitStatus::Success)
        }
        Outcome::Finished(finished) => {
            print_summary(ctx, &finished, mode);
            Ok(finished.status())
        }
    }
}

/// Prints what a run reports while it runs, through `printer`.
pub fn notices(printer: &Printer) -> run::Report {
    let printer = printer.clone();
    Arc::new(move |notice| match notice {
        Notice::BootServer { url } => printer.info(&format!("boot server at {url}")),
        // Shown even with -q: the process exits right after.
        Notice::Aborted { run } => printer.data_stderr(&format!(
            "aborted; resume with `kiln provision --resume {run}`\n"
        )),
    })
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
