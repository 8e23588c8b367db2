//! `kiln bmc …`: one Redfish operation on every selected node's BMC, at
//! most `--concurrency` at once and one request at a time per BMC (the
//! inventory's `limits.per_bmc`). Each node's outcome is a row; a node
//! that fails is named with its reason and the command exits 1.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::bmc::client::{BmcClient, BmcError};
use crate::bmc::discover::{Layout, discover};
use crate::bmc::ops::{self, PowerOp, Waits};
use crate::bmc::transport::TransportOptions;
use crate::bmc::trust::{TrustStore, TrustTarget, fetch_fingerprint, state_dir};
use crate::bmc::{connect, facts};
use crate::cli::{BmcCommand, BmcTarget, MediaCommand};
use crate::commands::Ctx;
use crate::exit::{BadInput, ExitStatus};
use crate::imaging::deploy::redact_tokens;
use crate::inventory::{Inventory, Node, Selection, TlsPolicy};
use crate::output::table;

/// Runs a `kiln bmc` command.
pub fn run(ctx: &Ctx, cmd: BmcCommand) -> anyhow::Result<ExitStatus> {
    let runtime = crate::commands::runtime()?;
    runtime.block_on(dispatch(ctx, cmd))
}

async fn dispatch(ctx: &Ctx, cmd: BmcCommand) -> anyhow::Result<ExitStatus> {
    match cmd {
        BmcCommand::Status(target) => status(ctx, &target).await,
        BmcCommand::Power {
            op,
            allow_in_service,
            wait,
            target,
        } => power(ctx, &target, op, allow_in_service, wait).await,
        BmcCommand::Boot {
            device,
            once: _,
            persistent,
            uri,
            target,
        } => {
            let work = Work::new(ctx, &target)?;
            let rows = work
                .run(true, move |c, layout| {
                    let uri = uri.clone();
                    async move {
                        ops::set_boot(&c, &layout, device, persistent, uri.as_deref()).await
                    }
                })
                .await;
            work.finish(
                ctx,
                &rows,
                &["NODE", "TARGET", "ENABLED", "VIA", "NOTE"],
                |o| {
                    vec![
                        o.target.clone(),
                        o.enabled.clone(),
                        o.via.to_owned(),
                        o.notes.join("; "),
                    ]
                },
            )
        }
        BmcCommand::Media(MediaCommand::Insert { url, wait, target }) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(BadInput(format!(
                    "`{url}` is not an http:// or https:// URL the BMC can fetch"
                ))
                .into());
            }
            let work = Work::new(ctx, &target)?;
            let waits = Waits {
                media: wait,
                ..Waits::default()
            };
            let rows = work
                .run(true, move |c, layout| {
                    let url = url.clone();
                    async move { ops::insert_media(&c, &layout, &url, &waits, true).await }
                })
                .await;
            work.finish(ctx, &rows, &["NODE", "SLOT", "VIA", "IMAGE"], |o| {
                vec![
                    o.slot.clone(),
                    if o.unchanged {
                        "already inserted".into()
                    } else {
                        o.via.to_owned()
                    },
                    o.state.image.clone().unwrap_or_default(),
                ]
            })
        }
        BmcCommand::Media(MediaCommand::Eject { wait, target }) => {
            let work = Work::new(ctx, &target)?;
            let waits = Waits {
                media: wait,
                ..Waits::default()
            };
            let rows = work
                .run(true, move |c, layout| async move {
                    ops::eject_media(&c, &layout, &waits).await
                })
                .await;
            work.finish(ctx, &rows, &["NODE", "EJECTED"], |o| {
                vec![if o.is_empty() {
                    "nothing inserted".into()
                } else {
                    o.iter()
                        .map(|m| m.slot.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }]
            })
        }
        BmcCommand::Media(MediaCommand::Status(target)) => {
            let work = Work::new(ctx, &target)?;
            let rows = work
                .run(false, |_c, layout| async move { Ok(layout.media.clone()) })
                .await;
            work.finish(ctx, &rows, &["NODE", "SLOTS"], |slots| {
                vec![
                    slots
                        .iter()
                        .map(|s| {
                            let how = match s.insert {
                                crate::bmc::discover::InsertMethod::Action { .. } => "action",
                                crate::bmc::discover::InsertMethod::Patch => "patch",
                            };
                            let what = match (&s.state.image, s.state.inserted) {
                                (Some(i), true) => i.clone(),
                                _ => "empty".into(),
                            };
                            format!("{} [{}; {how}]: {what}", s.id, s.media_types.join("/"))
                        })
                        .collect::<Vec<_>>()
                        .join("  "),
                ]
            })
        }
        BmcCommand::Inventory(target) => {
            let work = Work::new(ctx, &target)?;
            let rows = work
                .run(false, |c, layout| async move {
                    let firmware = facts::firmware(&c, &layout).await?;
                    let gpus = crate::bmc::discover::gpus(&c, &layout).await?;
                    Ok(json!({"identity": layout.identity, "firmware": firmware, "gpus": gpus}))
                })
                .await;
            work.finish(ctx, &rows, &["NODE", "FIRMWARE", "GPUS"], |v| {
                let firmware = v["firmware"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|f| {
                                format!(
                                    "{}={}",
                                    f["name"].as_str().unwrap_or("?"),
                                    f["version"].as_str().unwrap_or("?")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let gpus = v["gpus"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|g| {
                                format!(
                                    "{} {} sn={} pn={}",
                                    g["id"].as_str().unwrap_or("?"),
                                    g["model"].as_str().unwrap_or(""),
                                    g["serial"].as_str().unwrap_or("-"),
                                    g["part_number"].as_str().unwrap_or("-")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                vec![crate::diag::clip(&firmware, 120), gpus]
            })
        }
        BmcCommand::Sensors(target) => {
            let work = Work::new(ctx, &target)?;
            let rows = work
                .run(false, |c, layout| async move {
                    facts::sensors(&c, &layout).await
                })
                .await;
            let celsius = |v: Option<f64>| v.map_or("-".into(), |c| format!("{c:.0} °C"));
            work.finish(
                ctx,
                &rows,
                &["NODE", "POWER", "INLET", "CPU MAX", "GPU MAX", "READINGS"],
                |s| {
                    vec![
                        s.power_watts.map_or("-".into(), |w| format!("{w:.0} W")),
                        celsius(s.hottest("intake").or_else(|| s.hottest("inlet"))),
                        celsius(s.hottest("cpu")),
                        celsius(s.hottest("gpu")),
                        // What the BMC did not report is said, not left blank.
                        if s.notes.is_empty() {
                            s.temperatures.len().to_string()
                        } else {
                            format!("{} ({})", s.temperatures.len(), s.notes.join("; "))
                        },
                    ]
                },
            )
        }
        BmcCommand::Trust { replace, target } => trust(ctx, &target, replace).await,
    }
}

/// One node's outcome.
#[derive(Serialize)]
pub(crate) struct Row<T> {
    pub(crate) node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// The selected nodes and everything needed to reach their BMCs.
pub(crate) struct Work {
    pub(crate) inventory: Inventory,
    names: Vec<String>,
    concurrency: usize,
    options: TransportOptions,
    state: std::path::PathBuf,
    /// A running count on stderr (only on a terminal, not with -q).
    progress: bool,
}

impl Work {
    pub(crate) fn new(ctx: &Ctx, target: &BmcTarget) -> anyhow::Result<Work> {
        let inventory = ctx.load_inventory()?;
        let state = state_dir(ctx.inventory_path()?);
        let selection = match &target.select {
            Some(expr) => expr.parse()?,
            None => Selection::all(),
        };
        let names = inventory
            .select(&selection)?
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let concurrency = target
            .concurrency
            .unwrap_or(inventory.limits.concurrency)
            .max(1);
        let options = TransportOptions {
            request_timeout: target.timeout,
            max_in_flight: inventory.limits.per_bmc.max(1),
            ..TransportOptions::default()
        };
        Ok(Work {
            inventory,
            names,
            concurrency,
            options,
            state,
            progress: !ctx.printer.quiet && crate::output::Printer::stderr_is_terminal(),
        })
    }

    pub(crate) fn nodes(&self) -> Vec<&Node> {
        self.names
            .iter()
            .filter_map(|n| self.inventory.node(n))
            .collect()
    }

    /// Discovers each BMC's layout, runs `op` on it, and logs out.
    /// `report` prints a line per finished node (for long, changing work).
    pub(crate) async fn run<T, F, Fut>(&self, report: bool, op: F) -> Vec<Row<T>>
    where
        T: Send + 'static,
        F: Fn(Arc<BmcClient>, Arc<Layout>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, BmcError>> + Send + 'static,
    {
        let nodes = self.nodes();
        let store = match TrustStore::load(&TrustStore::path_in(&self.state)) {
            Ok(s) => s,
            Err(e) => return self.all_failed(&format!("{e:#}")),
        };
        let clients = match connect::clients(&nodes, &store, &self.options) {
            Ok(c) => c,
            Err(e) => return self.all_failed(&format!("{e:#}")),
        };
        let items: Vec<(Arc<BmcClient>, Option<String>)> = clients
            .into_iter()
            .zip(&nodes)
            .map(|(c, n)| (c, n.bmc.system.clone()))
            .collect();
        let op = Arc::new(op);
        connect::each(
            items,
            self.concurrency,
            move |(client, system)| {
                let op = Arc::clone(&op);
                async move {
                    let outcome = async {
                        let layout = Arc::new(discover(&client, system.as_deref()).await?);
                        op(Arc::clone(&client), layout).await
                    }
                    .await;
                    client.logout().await;
                    let (result, error) = match outcome {
                        Ok(v) => (Some(v), None),
                        // A BMC's error may echo an image URL and its token.
                        Err(e) => (None, Some(redact_tokens(&e.to_string()))),
                    };
                    if report {
                        match &error {
                            None => tracing::info!("{}: done", client.node),
                            Some(e) => tracing::warn!("{e}"),
                        }
                    }
                    Row {
                        node: client.node.clone(),
                        result,
                        error,
                    }
                }
            },
            |done, total| self.tick(done, total),
        )
        .await
    }

    /// Rewrites one progress line on stderr.
    fn tick(&self, done: usize, total: usize) {
        if self.progress && total > 1 {
            use std::io::Write as _;
            let mut err = crate::output::Printer::err();
            let _ = write!(err, "\r{done}/{total} BMCs done");
            if done == total {
                let _ = writeln!(err);
            }
        }
    }

    fn all_failed<T>(&self, why: &str) -> Vec<Row<T>> {
        self.names
            .iter()
            .map(|n| Row {
                node: n.clone(),
                result: None,
                error: Some(why.to_owned()),
            })
            .collect()
    }

    /// Prints the rows (a table, or JSON) and the failures; exit 1 if any.
    pub(crate) fn finish<T: Serialize>(
        &self,
        ctx: &Ctx,
        rows: &[Row<T>],
        header: &[&str],
        cells: impl Fn(&T) -> Vec<String>,
    ) -> anyhow::Result<ExitStatus> {
        finish(ctx, rows, header, cells)
    }
}

/// Virtual-media URLs carry boot-server tokens (`/iso/TOKEN/…`): what
/// `kiln bmc` prints, as tables, JSON or errors, has them cut.
fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = redact_tokens(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

fn finish<T: Serialize>(
    ctx: &Ctx,
    rows: &[Row<T>],
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<ExitStatus> {
    // Setup problems (passwords, trust) fail every row alike: say it once.
    if let Some(first) = rows.first().and_then(|r| r.error.as_deref())
        && rows
            .iter()
            .all(|r| r.result.is_none() && r.error.as_deref() == Some(first))
        && rows.len() > 1
        && !first.starts_with(&format!("{}:", rows[0].node))
    {
        return Err(BadInput(first.to_owned()).into());
    }
    if ctx.printer.json {
        let mut nodes = serde_json::to_value(rows)?;
        redact_json(&mut nodes);
        ctx.printer.json_data(&json!({ "nodes": nodes }))?;
    } else {
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .filter_map(|r| {
                r.result.as_ref().map(|v| {
                    let mut row = vec![r.node.clone()];
                    row.extend(cells(v).iter().map(|c| redact_tokens(c)));
                    row
                })
            })
            .collect();
        if !table_rows.is_empty() {
            ctx.printer.data(&table(header, &table_rows));
        }
    }
    let failed: Vec<&Row<T>> = rows.iter().filter(|r| r.error.is_some()).collect();
    if failed.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let mut text = format!("{} of {} node(s) failed:", failed.len(), rows.len());
    for r in &failed {
        let e = r.error.as_deref().unwrap_or_default();
        // Errors name their node already; don't say it twice.
        if e.starts_with(&format!("{}:", r.node)) {
            text.push_str(&format!("\n  {e}"));
        } else {
            text.push_str(&format!("\n  {}: {e}", r.node));
        }
    }
    ctx.printer.info(&text);
    Ok(ExitStatus::NodeFailed)
}

async fn status(ctx: &Ctx, target: &BmcTarget) -> anyhow::Result<ExitStatus> {
    let work = Work::new(ctx, target)?;
    let expected: std::collections::BTreeMap<String, Option<u32>> = work
        .nodes()
        .iter()
        .map(|n| {
            let gpus = work
                .inventory
                .catalog
                .hardware
                .get(&n.hardware)
                .map(|e| e.profile.gpu.count);
            (n.name.clone(), gpus)
        })
        .collect();
    let rows = work
        .run(false, |c, layout| async move {
            facts::status(&c, &layout).await
        })
        .await;
    let status = work.finish(
        ctx,
        &rows,
        &[
            "NODE", "VENDOR", "MODEL", "POWER", "HEALTH", "BMC FW", "BIOS", "GPUS", "MEDIA",
        ],
        |s| {
            vec![
                match s.identity.generation {
                    Some(g) => format!("{:?} {g}", s.identity.vendor).to_lowercase(),
                    None => format!("{:?}", s.identity.vendor).to_lowercase(),
                },
                s.host.model.clone(),
                s.host.power.clone(),
                s.host.health.clone(),
                s.identity.firmware.clone(),
                s.host.bios.clone(),
                s.gpus.len().to_string(),
                s.media.clone().unwrap_or_else(|| "-".into()),
            ]
        },
    )?;
    // A node whose BMC sees fewer GPUs than its profile has is worth a
    // warning here; the acceptance stages judge it.
    for r in &rows {
        if let (Some(s), Some(Some(want))) = (&r.result, expected.get(&r.node))
            && (s.gpus.len() as u32) < *want
        {
            ctx.printer.info(&format!(
                "warning: {}: the BMC sees {} GPU(s); its hardware profile has {want}",
                r.node,
                s.gpus.len()
            ));
        }
    }
    Ok(status)
}

async fn power(
    ctx: &Ctx,
    target: &BmcTarget,
    op: PowerOp,
    allow_in_service: bool,
    wait: Duration,
) -> anyhow::Result<ExitStatus> {
    let work = Work::new(ctx, target)?;
    // Powering on disrupts nothing; off, cycle and reset do.
    if op != PowerOp::On {
        let harm = format!(
            "refusing a power {}, which would disrupt them",
            serde_json::to_value(op)?.as_str().unwrap_or("off")
        );
        crate::pipeline::guard::in_service(work.nodes(), &harm, allow_in_service)?;
    }
    let waits = Waits {
        power: wait,
        ..Waits::default()
    };
    let rows = work
        .run(true, move |c, layout| async move {
            ops::power(&c, &layout, op, &waits).await
        })
        .await;
    work.finish(ctx, &rows, &["NODE", "BEFORE", "AFTER", "SENT"], |o| {
        vec![
            o.before.clone(),
            o.after.clone(),
            if o.sent.is_empty() {
                "nothing (already so)".into()
            } else {
                o.sent.join(", ")
            },
        ]
    })
}

/// What `kiln bmc trust` did for one node.
#[derive(Serialize)]
struct TrustOutcome {
    address: String,
    fingerprint: String,
    result: &'static str,
}

async fn trust(ctx: &Ctx, target: &BmcTarget, replace: bool) -> anyhow::Result<ExitStatus> {
    let work = Work::new(ctx, target)?;
    let path = TrustStore::path_in(&work.state);
    let store = Arc::new(std::sync::Mutex::new(TrustStore::load(&path)?));
    let items: Vec<TrustTarget> = work.nodes().into_iter().map(TrustTarget::of).collect();
    let timeout = work.options.connect_timeout;
    let shared = Arc::clone(&store);
    let rows = connect::each(
        items,
        work.concurrency,
        move |TrustTarget {
                  node,
                  address,
                  host,
                  port,
                  tls,
              }| {
            let store = Arc::clone(&shared);
            async move {
                let outcome = match fetch_fingerprint(&host, port, timeout).await {
                    Err(e) => Err(format!("{node}: {e}")),
                    Ok(seen) => {
                        let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
                        decide(&mut store, &node, &address, &tls, seen, replace)
                    }
                };
                match outcome {
                    Ok(o) => Row {
                        node,
                        result: Some(o),
                        error: None,
                    },
                    Err(e) => Row {
                        node,
                        result: None,
                        error: Some(e),
                    },
                }
            }
        },
        |_, _| {},
    )
    .await;
    store.lock().unwrap_or_else(|e| e.into_inner()).save()?;
    ctx.printer
        .info(&format!("fingerprints recorded in {}", path.display()));
    finish(ctx, &rows, &["NODE", "BMC", "FINGERPRINT", "RESULT"], |o| {
        vec![
            o.address.clone(),
            o.fingerprint.clone(),
            o.result.to_owned(),
        ]
    })
}

/// Records `seen` for a node, unless that would silently replace a
/// different fingerprint or contradict the inventory's own pin.
fn decide(
    store: &mut TrustStore,
    node: &str,
    address: &str,
    policy: &TlsPolicy,
    seen: crate::inventory::Fingerprint,
    replace: bool,
) -> Result<TrustOutcome, String> {
    let outcome = |result| TrustOutcome {
        address: address.to_owned(),
        fingerprint: seen.to_string(),
        result,
    };
    match policy {
        TlsPolicy::Pin(pin) if *pin == seen => return Ok(outcome("matches the inventory pin")),
        TlsPolicy::Pin(pin) => {
            return Err(format!(
                "{node}: the BMC at {address} shows certificate {seen}, but the inventory pins {pin}"
            ));
        }
        TlsPolicy::Ca(_) => return Ok(outcome("verified by CA (not recorded)")),
        TlsPolicy::Insecure | TlsPolicy::Recorded => {}
    }
    match store.get(node, address) {
        Some(old) if old == seen => Ok(outcome("unchanged")),
        Some(old) if !replace => Err(format!(
            "{node}: the BMC at {address} now shows certificate {seen}; {old} was recorded. \
             If the BMC was reset or its certificate renewed, check and run again with --replace"
        )),
        Some(_) => {
            store.set(node, address, &seen);
            Ok(outcome("replaced"))
        }
        None => {
            store.set(node, address, &seen);
            Ok(outcome("recorded"))
        }
    }
}
