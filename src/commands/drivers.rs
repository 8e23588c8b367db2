//! `kiln drivers install|verify`: the drivers stage on its own, outside a
//! journaled run.

use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::Ctx;
use crate::bmc::trust::state_dir;
use crate::cli::{DriversArgs, DriversCommand};
use crate::drivers::{Deadlines, DriversCx, Mode, stage};
use crate::exit::ExitStatus;
use crate::output::table;
use crate::pipeline::step::{Steps, Stop};
use crate::ssh::auth::Credentials;
use crate::ssh::{ClientOptions, Remote, Target};

#[derive(Serialize)]
struct Row {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rebooted: Option<bool>,
    #[serde(skip_serializing_if = "Value::is_null")]
    verify: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_step: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
}

/// Runs `kiln drivers …`.
pub fn run(ctx: &Ctx, cmd: DriversCommand) -> anyhow::Result<ExitStatus> {
    let (mode, args) = match cmd {
        DriversCommand::Install(a) => (Mode::Install, a),
        DriversCommand::Verify(a) => (Mode::Verify, a),
    };
    crate::commands::runtime()?.block_on(drivers(ctx, mode, &args))
}

async fn drivers(ctx: &Ctx, mode: Mode, args: &DriversArgs) -> anyhow::Result<ExitStatus> {
    let inventory = ctx.load_inventory()?;
    let state = state_dir(ctx.inventory_path()?);
    let inv_dir = ctx.inventory_dir()?;
    let nodes = crate::commands::select(&inventory, &args.select)?;
    if mode == Mode::Install {
        crate::pipeline::guard::in_service(
            nodes.iter().copied(),
            "installing drivers may reboot them",
            args.allow_in_service,
        )?;
    }
    let run_dir = match &args.dir {
        Some(d) => d.clone(),
        None => state
            .join("drivers")
            .join(crate::pipeline::step::now_ms().to_string()),
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let pool = crate::ssh::site::pool(
        &inv_dir,
        Arc::new(Credentials::new()),
        false,
        ClientOptions::default(),
    );
    let deadlines = Deadlines {
        install: args.install_timeout,
        reboot: args.reboot_timeout,
        ..Deadlines::default()
    };
    let mut items = Vec::new();
    for node in &nodes {
        let hardware = inventory
            .catalog
            .hardware
            .get(&node.hardware)
            .with_context(|| {
                format!("{}: unknown hardware profile {}", node.name, node.hardware)
            })?;
        let image = inventory
            .catalog
            .images
            .get(&node.image)
            .with_context(|| format!("{}: unknown image profile {}", node.name, node.image))?;
        items.push(DriversCx {
            node: (*node).clone(),
            hardware: Arc::new(hardware.profile.clone()),
            image: Arc::new(image.profile.clone()),
            remote: Remote::Ssh {
                pool: Arc::clone(&pool),
                target: Target::from_node(node),
            },
            run_dir: run_dir.clone(),
            mode,
            deadlines,
        });
    }
    ctx.printer
        .info(&format!("logs and outputs in {}", run_dir.display()));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stopping = Arc::clone(&stopping);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!("interrupted: finishing the steps under way, starting no new one");
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let concurrency = args
        .concurrency
        .unwrap_or(inventory.limits.concurrency)
        .max(1);
    let rows = crate::bmc::connect::each(
        items,
        concurrency,
        move |cx: DriversCx| {
            let stopping = Arc::clone(&stopping);
            async move {
                let mut steps = Steps::unrecorded(cx.node.name.clone(), "drivers", stopping);
                let result = stage(&cx, &mut steps).await;
                cx.remote.close().await;
                match result {
                    Ok(r) => Row {
                        node: r.node,
                        installed: Some(r.installed),
                        rebooted: Some(r.rebooted),
                        verify: r.metrics,
                        failed_step: None,
                        reasons: Vec::new(),
                    },
                    Err(stop) => {
                        let (step, reasons, verify) = match stop {
                            Stop::Failed { step, outcome } => (
                                step.to_owned(),
                                if outcome.reasons.is_empty() {
                                    vec![outcome.detail.clone()]
                                } else {
                                    outcome.reasons.clone()
                                },
                                outcome.metrics.clone(),
                            ),
                            Stop::Interrupted(step) => {
                                (step.to_owned(), vec!["interrupted".into()], Value::Null)
                            }
                        };
                        tracing::warn!(node = %cx.node.name, step = %step, "drivers: {}", reasons.join("; "));
                        Row {
                            node: cx.node.name.clone(),
                            installed: None,
                            rebooted: None,
                            verify,
                            failed_step: Some(step),
                            reasons,
                        }
                    }
                }
            }
        },
        |_, _| {},
    )
    .await;
    if ctx.printer.json {
        ctx.printer
            .json_data(&json!({ "run_dir": run_dir, "nodes": rows }))?;
    } else {
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let result = match (&r.failed_step, r.installed, r.rebooted) {
                    (Some(step), _, _) => format!("failed at {step}"),
                    (None, Some(true), Some(true)) => "installed, rebooted".into(),
                    (None, Some(true), _) => "installed".into(),
                    (None, _, _) => "verified".into(),
                };
                let detail = match r.reasons.first() {
                    Some(why) => why.clone(),
                    None => format!(
                        "driver {}, {} GPUs",
                        r.verify["driver"].as_str().unwrap_or("?"),
                        r.verify["gpus"].as_array().map_or(0, Vec::len)
                    ),
                };
                vec![r.node.clone(), result, detail]
            })
            .collect();
        ctx.printer
            .data(&table(&["NODE", "RESULT", "DETAIL"], &table_rows));
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.failed_step.is_some()).collect();
    if failed.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let mut text = format!(
        "{} of {} node(s) failed the drivers stage:",
        failed.len(),
        rows.len()
    );
    for r in failed {
        text.push_str(&format!(
            "\n  {}: {}: {}",
            r.node,
            r.failed_step.as_deref().unwrap_or_default(),
            r.reasons.join("; ")
        ));
    }
    ctx.printer.error(&anyhow::anyhow!(text));
    Ok(ExitStatus::NodeFailed)
}
