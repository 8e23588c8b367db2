//! `kiln sim`: serve a virtual rack built from an inventory.

use std::time::Duration;

use serde_json::json;

use crate::cli::{SimCommand, SimToolArgs, SimUpArgs};
use crate::commands::Ctx;
use crate::exit::{BadInput, ExitStatus};
use crate::output::table;
use crate::sim::faults::FaultPlan;
use crate::sim::redfish::flavour::Vendor;
use crate::sim::{SimOptions, node};

/// Runs a `kiln sim` subcommand.
pub fn run(ctx: &Ctx, cmd: SimCommand) -> anyhow::Result<ExitStatus> {
    match cmd {
        SimCommand::Up(args) => up(ctx, &args),
        SimCommand::Tool(args) => tool(&args),
    }
}

fn tool(args: &SimToolArgs) -> ! {
    // The tool's own exit code is the result, whatever it is.
    std::process::exit(crate::sim::toolsock::call(&args.name, &args.args))
}

/// Reads `--flavour`.
pub fn parse_flavour(name: &str) -> anyhow::Result<Option<Vendor>> {
    if name == "mixed" {
        return Ok(None);
    }
    Vendor::parse(name).map(Some).ok_or_else(|| {
        BadInput(format!(
            "unknown flavour `{name}`; known: {}, mixed",
            Vendor::ALL.map(Vendor::name).join(", ")
        ))
        .into()
    })
}

/// One message per line read on stdin, until it closes
/// (`--requests-on-stdin`); a thread, as tokio's stdin is one anyway.
fn asks_on_stdin() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if line.is_err() || tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

fn up(ctx: &Ctx, args: &SimUpArgs) -> anyhow::Result<ExitStatus> {
    let inventory = ctx.load_inventory()?;
    let nodes = crate::commands::select(&inventory, &args.select)?;
    let faults = match &args.faults {
        Some(path) => FaultPlan::load(path).map_err(|e| BadInput(e.to_string()))?,
        None => FaultPlan::none(),
    };
    if !(args.time_scale.is_finite() && args.time_scale >= 1.0) {
        return Err(BadInput(format!(
            "--time-scale must be 1 or more, not {}",
            args.time_scale
        ))
        .into());
    }
    let imaged = match &args.imaged {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BadInput(format!("cannot read public key {}: {e}", path.display())))?;
            let keys: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            if keys.is_empty() {
                return Err(BadInput(format!("{} holds no public key", path.display())).into());
            }
            Some(keys)
        }
        None => None,
    };
    let options = SimOptions {
        time_scale: args.time_scale,
        faults,
        flavour: parse_flavour(&args.flavour)?,
        imaged,
        ssh: !args.no_ssh,
        tool_exe: None,
        root: None,
    };
    let runtime = crate::commands::runtime()?;
    runtime.block_on(async {
        let rack = crate::sim::start(&inventory, &nodes, options).await?;
        if ctx.printer.json {
            ctx.printer.json_data(&json!({ "nodes": rack.endpoints }))?;
        } else {
            let rows: Vec<Vec<String>> = rack
                .endpoints
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.flavour.name().to_owned(),
                        e.bmc_url.clone(),
                        e.username.clone(),
                        e.password.clone(),
                        e.ssh.clone(),
                    ]
                })
                .collect();
            ctx.printer.data(&table(
                &["NODE", "FLAVOUR", "BMC", "USER", "PASSWORD", "SSH"],
                &rows,
            ));
        }
        ctx.printer.info(&format!(
            "kiln sim: serving {} node(s) at time scale {}; Ctrl-C to stop",
            rack.nodes.len(),
            args.time_scale
        ));
        let mut asks = if args.requests_on_stdin {
            asks_on_stdin()
        } else {
            tokio::sync::mpsc::unbounded_channel().1
        };
        let mut last: Vec<String> = vec![String::new(); rack.nodes.len()];
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                Some(()) = asks.recv() => {
                    let counts: serde_json::Map<String, serde_json::Value> = rack
                        .endpoints
                        .iter()
                        .zip(&rack.bmcs)
                        .map(|(e, b)| (e.name.clone(), b.requests().into()))
                        .collect();
                    // One line, whatever --json says: the reader reads lines.
                    ctx.printer.data(&format!("{}\n", json!({ "requests": counts })));
                    continue;
                }
            }
            // Boot progress, one line per change, for whoever watches.
            for (i, n) in rack.nodes.iter().enumerate() {
                let now = node::describe(&n.lock().phase);
                if now != last[i] {
                    if !last[i].is_empty() || now != "off" {
                        tracing::info!(node = %n.name, "{now}");
                    }
                    last[i] = now;
                }
            }
        }
        ctx.printer.info("kiln sim: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitStatus::Success)
}
