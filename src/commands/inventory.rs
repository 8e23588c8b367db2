//! `kiln inventory check|show|generate`.

use serde_json::json;

use super::Ctx;
use crate::cli::{GenerateArgs, InventoryCommand, ShowArgs};
use crate::exit::ExitStatus;
use crate::inventory::generate::{SiteSpec, generate};
use crate::inventory::{Node, TlsPolicy};
use crate::output::table;

/// Runs `kiln inventory …`.
pub fn run(ctx: &Ctx, cmd: InventoryCommand) -> anyhow::Result<ExitStatus> {
    match cmd {
        InventoryCommand::Check => check(ctx),
        InventoryCommand::Show(args) => show(ctx, &args),
        InventoryCommand::Generate(args) => generate_site(ctx, &args),
    }
}

fn check(ctx: &Ctx) -> anyhow::Result<ExitStatus> {
    let path = ctx.inventory_path()?;
    let checked = ctx.check(path)?;
    let (errors, warnings) = (checked.errors(), checked.warnings());
    let (nodes, racks) = checked
        .inventory
        .as_ref()
        .map_or((0, 0), |i| (i.nodes.len(), i.racks.len()));
    if ctx.printer.json {
        ctx.printer.json_data(&json!({
            "file": path.display().to_string(),
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "racks": racks,
            "nodes": nodes,
            "diagnostics": checked.diagnostics.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
        }))?;
    } else {
        for d in &checked.diagnostics {
            ctx.printer.diagnostic(d);
        }
        let summary = if errors == 0 {
            format!(
                "{}: ok, {nodes} nodes in {racks} racks, {warnings} warning(s)",
                path.display()
            )
        } else {
            format!(
                "{}: {errors} error(s), {warnings} warning(s)",
                path.display()
            )
        };
        if errors > 0 {
            ctx.printer.notice(&summary);
        } else {
            ctx.printer.info(&summary);
        }
    }
    Ok(if errors > 0 {
        ExitStatus::BadInput
    } else {
        ExitStatus::Success
    })
}

fn tls_label(tls: &TlsPolicy) -> &'static str {
    match tls {
        TlsPolicy::Recorded => "recorded",
        TlsPolicy::Pin(_) => "pinned",
        TlsPolicy::Ca(_) => "ca",
        TlsPolicy::Insecure => "INSECURE",
    }
}

fn show(ctx: &Ctx, args: &ShowArgs) -> anyhow::Result<ExitStatus> {
    let inventory = ctx.load_inventory()?;
    let nodes: Vec<&Node> = crate::commands::select(&inventory, &args.select)?;
    if ctx.printer.json {
        ctx.printer.json_data(&json!({
            "site": inventory.site,
            "limits": inventory.limits,
            "nodes": nodes,
        }))?;
        return Ok(ExitStatus::Success);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let bmc = match &n.bmc.system {
                Some(s) => format!("{} #{s}", n.bmc.endpoint),
                None => n.bmc.endpoint.to_string(),
            };
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                n.name.clone(),
                n.rack.clone(),
                n.hardware.clone(),
                n.image.clone(),
                bmc,
                tls_label(&n.bmc.tls).into(),
                format!("{}@{}", n.ssh.user, n.ssh.endpoint),
                if n.in_service {
                    "yes".into()
                } else {
                    "no".into()
                },
                labels.join(","),
            ]
        })
        .collect();
    ctx.printer.data(&table(
        &[
            "NODE",
            "RACK",
            "HARDWARE",
            "IMAGE",
            "BMC",
            "TLS",
            "SSH",
            "IN-SERVICE",
            "LABELS",
        ],
        &rows,
    ));
    ctx.printer.info(&format!(
        "{} of {} nodes selected",
        nodes.len(),
        inventory.nodes.len()
    ));
    Ok(ExitStatus::Success)
}

fn generate_site(ctx: &Ctx, args: &GenerateArgs) -> anyhow::Result<ExitStatus> {
    let spec = SiteSpec {
        site: args.site.clone(),
        racks: args.racks,
        nodes_per_rack: args.nodes_per_rack,
        base_bmc: args.base_bmc,
        bmc_port: args.bmc_port,
        base_ssh: args.base_ssh,
        ssh_port: args.ssh_port,
        hardware: args.hardware.clone(),
        image: args.image.clone(),
        ..SiteSpec::default()
    };
    let text = generate(&spec)?;
    match &args.output {
        Some(path) => {
            super::write_new_file(path, &text)?;
            ctx.printer.info(&format!(
                "wrote {} nodes to {}",
                u64::from(args.racks) * u64::from(args.nodes_per_rack),
                path.display()
            ));
        }
        None => ctx.printer.data(&text),
    }
    Ok(ExitStatus::Success)
}
