//! `kiln image list|show|verify|deploy`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use super::Ctx;
use crate::bmc::connect;
use crate::bmc::ops::Waits;
use crate::bmc::transport::TransportOptions;
use crate::bmc::trust::{TrustStore, state_dir};
use crate::cli::{DeployArgs, ImageCommand};
use crate::diag::did_you_mean;
use crate::exit::{BadInput, ExitStatus};
use crate::imaging::deploy::{Deadlines, Deployed, ImageCx, deploy};
use crate::imaging::server::BootServer;
use crate::imaging::{authorized_keys, installer_path};
use crate::inventory::Inventory;
use crate::output::table;
use crate::pipeline::gates::Gates;
use crate::pipeline::step::Steps;
use crate::profiles::{Catalog, ImageProfile};
use crate::ssh::auth::Credentials;

/// Runs `kiln image …`.
pub fn run(ctx: &Ctx, cmd: ImageCommand) -> anyhow::Result<ExitStatus> {
    let catalog = super::profile::catalog(ctx)?;
    match cmd {
        ImageCommand::List => {
            if ctx.printer.json {
                let list: Vec<_> = catalog.images.values().map(|e| &e.profile).collect();
                ctx.printer.json_data(&list)?;
                return Ok(ExitStatus::Success);
            }
            let rows: Vec<Vec<String>> = catalog
                .images
                .values()
                .map(|e| {
                    let p = &e.profile;
                    vec![
                        p.name.clone(),
                        format!("{:?}", p.family).to_lowercase(),
                        p.version.clone(),
                        json!(p.boot).as_str().unwrap_or_default().to_owned(),
                        json!(p.seed).as_str().unwrap_or_default().to_owned(),
                        if p.includes_driver_stack { "yes" } else { "no" }.into(),
                        p.installer
                            .as_ref()
                            .and_then(|i| i.file_name())
                            .or_else(|| p.disk_image.as_ref().and_then(|d| d.file_name()))
                            .unwrap_or("-")
                            .to_owned(),
                    ]
                })
                .collect();
            ctx.printer.data(&table(
                &[
                    "NAME", "FAMILY", "VERSION", "BOOT", "SEED", "DRIVERS", "IMAGE",
                ],
                &rows,
            ));
            Ok(ExitStatus::Success)
        }
        ImageCommand::Show { name } => {
            let entry = find(&catalog, &name)?;
            if ctx.printer.json {
                ctx.printer.json_data(&entry)?;
            } else {
                ctx.printer
                    .info(&format!("# {}", catalog.images[&name].file));
                ctx.printer.data(&catalog.images[&name].text);
            }
            Ok(ExitStatus::Success)
        }
        ImageCommand::Verify { name, iso, iso_dir } => {
            let profile = find(&catalog, &name)?;
            match &profile.disk_image {
                None => {
                    let path = installer_path(profile, iso.as_deref(), iso_dir.as_deref())?;
                    let expected = profile
                        .installer
                        .as_ref()
                        .map(|i| i.sha256.clone())
                        .unwrap_or_default();
                    verify(ctx, profile, &path, &expected)
                }
                Some(disk) => {
                    let path = iso
                        .clone()
                        .or_else(|| disk.path.as_deref().map(PathBuf::from).filter(|p| p.is_file()))
                        .or_else(|| {
                            iso_dir
                                .as_deref()
                                .and_then(|d| disk.file_name().map(|f| d.join(f)))
                        })
                        .ok_or_else(|| {
                            BadInput(format!(
                                "no local copy of the {name} disk image: pass --iso FILE or --image-dir DIR"
                            ))
                        })?;
                    let expected = match &disk.sha256 {
                        Some(d) => d.clone(),
                        None => {
                            let mut side = path.as_os_str().to_owned();
                            side.push(".sha256");
                            std::fs::read_to_string(&side)
                                .ok()
                                .and_then(|t| t.split_whitespace().next().map(str::to_owned))
                                .ok_or_else(|| {
                                    BadInput(format!(
                                        "{name} gives no sha256 and {} cannot be read",
                                        PathBuf::from(side).display()
                                    ))
                                })?
                        }
                    };
                    verify(ctx, profile, &path, &expected)
                }
            }
        }
        ImageCommand::Build { what, out } => {
            // The state folder beside the inventory when there is one, else
            // `KILN_STATE_DIR` or `./.kiln`.
            let state = match ctx.global.inventory.as_deref() {
                Some(inventory) => state_dir(inventory),
                None => crate::state::state_dir_in(Path::new(".")),
            };
            super::image_build::build(ctx, what, out.as_deref(), &state)
        }
        ImageCommand::Deploy(args) => {
            let runtime = crate::commands::runtime()?;
            runtime.block_on(deploy_cmd(ctx, &catalog, &args))
        }
    }
}

fn find<'a>(catalog: &'a Catalog, name: &str) -> anyhow::Result<&'a ImageProfile> {
    match catalog.images.get(name) {
        Some(e) => Ok(&e.profile),
        None => {
            let hint = did_you_mean(name, catalog.images.keys().map(String::as_str))
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            Err(BadInput(format!(
                "no image profile `{name}`{hint}; see `kiln image list`"
            ))
            .into())
        }
    }
}

fn verify(
    ctx: &Ctx,
    profile: &ImageProfile,
    path: &Path,
    expected: &str,
) -> anyhow::Result<ExitStatus> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let bar = ctx.printer.bar(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("sha256 {}", profile.name));
    let digest = crate::imaging::verify::sha256_file(path, |done| bar.set_position(done))
        .with_context(|| format!("reading {}", path.display()))?;
    bar.finish_and_clear();
    let ok = digest == expected;
    if ctx.printer.json {
        ctx.printer.json_data(&json!({
            "profile": profile.name, "file": path, "bytes": len,
            "sha256": digest, "expected": expected, "ok": ok,
        }))?;
    } else if ok {
        ctx.printer.data(&format!(
            "{}: OK ({} bytes, sha256 {digest})",
            path.display(),
            len
        ));
    } else {
        ctx.printer.data(&format!(
            "{}: MISMATCH\n  expected {expected}\n  actual   {digest}",
            path.display(),
        ));
    }
    Ok(if ok {
        ExitStatus::Success
    } else {
        ExitStatus::NodeFailed
    })
}

/// One node's outcome.
#[derive(Serialize)]
struct Row {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Deployed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn deploy_cmd(ctx: &Ctx, catalog: &Catalog, args: &DeployArgs) -> anyhow::Result<ExitStatus> {
    let inventory: Inventory = ctx.load_inventory()?;
    let state = state_dir(ctx.inventory_path()?);
    let inv_dir = ctx.inventory_dir()?;
    let nodes = crate::commands::select(&inventory, &args.select)?;
    crate::pipeline::guard::in_service(
        nodes.iter().copied(),
        "imaging would wipe them",
        args.allow_in_service,
    )?;
    crate::listen::check_bind(args.bind, args.advertise.as_deref()).map_err(BadInput)?;
    // Everything that would fail every node alike is checked first.
    let creds = Arc::new(Credentials::new());
    let mut problems = Vec::new();
    let mut plans = Vec::new();
    for node in &nodes {
        let Some(profile) = catalog.images.get(&node.image).map(|e| e.profile.clone()) else {
            problems.push(format!(
                "{}: unknown image profile {}",
                node.name, node.image
            ));
            continue;
        };
        let installer = match crate::imaging::locate(
            &profile,
            crate::imaging::Places {
                iso: args.iso.as_deref(),
                image_dir: args.dirs.iso_dir.as_deref(),
                deploy_env: args.dirs.deploy_env.as_deref(),
                state: &state,
            },
        ) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{e:#}"));
                continue;
            }
        };
        match authorized_keys(&creds, node) {
            Ok(keys) => plans.push(((*node).clone(), profile, installer, keys)),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    problems.dedup();
    if !problems.is_empty() {
        return Err(BadInput(problems.join("\n")).into());
    }
    let store = TrustStore::load(&TrustStore::path_in(&state))?;
    let options = TransportOptions {
        request_timeout: args.timeout,
        max_in_flight: inventory.limits.per_bmc.max(1),
        ..TransportOptions::default()
    };
    let clients = connect::clients(&nodes, &store, &options)?;
    let server = Arc::new(
        BootServer::start(args.bind, args.advertise.as_deref())
            .await
            .map_err(|e| BadInput(e.to_string()))?
            .with_media_url(args.advertise_bmc.as_deref()),
    );
    ctx.printer
        .info(&format!("boot server at {}", server.base_url()));
    let known_hosts = crate::ssh::hostkeys::store_path(&inv_dir);
    let deadlines = Deadlines {
        graceful: args.graceful_timeout,
        bmc: Duration::from_secs(300).max(args.timeout * 4),
        install: args.install_timeout,
        ssh: args.ssh_timeout,
        connect: Duration::from_secs(10),
        agent: args.boot_timeout,
    };
    let waits = Waits {
        poll: args.poll,
        ..Waits::default()
    };
    let gates = Arc::new(Gates::new(&inventory.limits));
    // Ctrl-C: no new step or node starts; steps under way finish (a node
    // is never left half-way through a power change).
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stopping = Arc::clone(&stopping);
        let gates = Arc::clone(&gates);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!("interrupted: finishing the steps under way, starting no new one");
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                gates.close();
            }
        });
    }
    let items: Vec<ImageCx> = plans
        .into_iter()
        .zip(clients)
        .map(|((node, profile, installer, keys), bmc)| ImageCx {
            node,
            profile,
            bmc,
            server: Arc::clone(&server),
            media: installer,
            authorized_keys: keys,
            credentials: Arc::clone(&creds),
            state_dir: state.clone(),
            known_hosts: known_hosts.clone(),
            deadlines,
            waits,
            reimage: args.reimage,
            gates: Some(Arc::clone(&gates)),
            layout: None,
        })
        .collect();
    let concurrency = args
        .concurrency
        .unwrap_or(inventory.limits.concurrency)
        .max(1);
    let rows = connect::each(
        items,
        concurrency,
        move |cx: ImageCx| {
            let stopping = Arc::clone(&stopping);
            async move {
            // The rack's and site's limits (limits.per_rack, concurrency).
            let _permit = match &cx.gates {
                Some(g) => g.node(&cx.node.rack).await,
                None => None,
            };
            let mut steps = Steps::unrecorded(cx.node.name.clone(), "image", stopping);
            let outcome = deploy(&cx, &mut steps).await;
            cx.bmc.logout().await;
            match outcome {
                Ok(d) => {
                    tracing::info!(node = %cx.node.name, "imaged: {} ({})", d.os, d.kernel);
                    Row {
                        node: cx.node.name.clone(),
                        result: Some(d),
                        error: None,
                    }
                }
                Err(stop) => {
                    tracing::warn!(node = %cx.node.name, bmc = %cx.node.bmc.endpoint, "imaging stopped: {stop}");
                    Row {
                        node: cx.node.name.clone(),
                        result: None,
                        error: Some(format!("{stop} (BMC {})", cx.node.bmc.endpoint)),
                    }
                }
            }
            }
        },
        |_, _| {},
    )
    .await;
    if ctx.printer.json {
        ctx.printer.json_data(&json!({ "nodes": rows }))?;
    } else {
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| match (&r.result, &r.error) {
                (Some(d), _) => vec![
                    r.node.clone(),
                    if d.already {
                        "already imaged"
                    } else {
                        "imaged"
                    }
                    .into(),
                    d.os.clone(),
                    d.kernel.clone(),
                ],
                (None, e) => vec![
                    r.node.clone(),
                    "failed".into(),
                    String::new(),
                    e.clone().unwrap_or_default(),
                ],
            })
            .collect();
        ctx.printer.data(&table(
            &["NODE", "RESULT", "OS", "KERNEL / REASON"],
            &table_rows,
        ));
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.error.is_some()).collect();
    if failed.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let mut text = format!("{} of {} node(s) failed imaging:", failed.len(), rows.len());
    for r in failed {
        text.push_str(&format!(
            "\n  {}: {}",
            r.node,
            r.error.as_deref().unwrap_or_default()
        ));
    }
    ctx.printer.error(&anyhow::anyhow!(text));
    Ok(ExitStatus::NodeFailed)
}
