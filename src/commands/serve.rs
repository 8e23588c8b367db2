//! `kiln serve`: the boot server on its own, for installing by hand or
//! from other tooling. Serves every `*.iso` of `--dir` at `/iso/NAME`, and
//! registers the selected inventory nodes (seed and per-node installer
//! image behind a token), printing their URLs. `kiln image deploy` starts
//! the same server itself.

use std::sync::Arc;

use serde_json::json;

use super::Ctx;
use crate::cli::ServeArgs;
use crate::exit::{BadInput, ExitStatus};
use crate::imaging::server::{BootServer, ServedFile};
use crate::imaging::{hostkeys, iso, seed};
use crate::inventory::Selection;
use crate::output::table;
use crate::ssh::auth::Credentials;

/// Runs `kiln serve`.
pub fn run(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<ExitStatus> {
    let runtime = crate::commands::runtime()?;
    runtime.block_on(serve(ctx, args))
}

async fn serve(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<ExitStatus> {
    let server = Arc::new(
        BootServer::start(args.bind, args.advertise.as_deref())
            .await
            .map_err(|e| BadInput(e.to_string()))?,
    );
    let mut rows = Vec::new();
    if let Some(dir) = &args.dir {
        let read = std::fs::read_dir(dir)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", dir.display())))?;
        let mut files: Vec<_> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "iso"))
            .collect();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let url = server.add_iso(&name, ServedFile::plain(&path)?);
            rows.push(vec![name, "image".into(), url]);
        }
    }
    if let Some(expr) = &args.select {
        let inventory = ctx.load_inventory()?;
        let state = crate::bmc::trust::state_dir(ctx.inventory_path()?);
        let inv_dir = ctx.inventory_dir()?;
        let catalog = super::profile::catalog(ctx)?;
        let selection: Selection = expr.parse()?;
        let creds = Credentials::new();
        for node in inventory.select(&selection)? {
            let profile = catalog
                .images
                .get(&node.image)
                .map(|e| e.profile.clone())
                .ok_or_else(|| BadInput(format!("{}: unknown image {}", node.name, node.image)))?;
            let installer = crate::imaging::installer_path(&profile, args.iso.as_deref(), None)?;
            let keys = match &node.ssh.key {
                Some(p) => {
                    let k = creds
                        .key(p)
                        .map_err(|e| BadInput(format!("{}: {e}", node.name)))?;
                    vec![
                        k.public_key()
                            .to_openssh()
                            .map_err(|e| BadInput(e.to_string()))?,
                    ]
                }
                None => Vec::new(),
            };
            let key = hostkeys::load_or_create(&state, &node.name)?;
            let target = crate::ssh::Target::from_node(node);
            crate::imaging::hostkeys::record(
                &crate::ssh::hostkeys::store_path(&inv_dir),
                &crate::ssh::known_hosts::host_name(&target.host, target.port),
                &node.name,
                std::slice::from_ref(&key.public),
            )?;
            let grub_path = profile
                .installer
                .as_ref()
                .map(|i| i.grub_cfg.clone())
                .unwrap_or_default();
            let (found, original) = iso::read_file(&installer, &grub_path)?;
            let original = String::from_utf8_lossy(&original).into_owned();
            let reg = server.register(&node.name, |urls| {
                let (seed_url, done) = (urls.seed.as_str(), urls.done.as_str());
                let cx = seed::context_with(
                    &profile,
                    &node.name,
                    &node.ssh.user,
                    keys.clone(),
                    key.private_pem.expose().to_owned(),
                    key.public_line.clone(),
                    seed_url,
                    done,
                    &urls.report,
                    node.mac.as_ref().map(|m| m.to_string()),
                    &format!("kiln-{}-{}", node.name, crate::pipeline::step::now_ms()),
                );
                let files = seed::render_seed(&profile, &cx)?;
                let grub = seed::grub_cfg(&profile, &node.name, &original, seed_url, &cx.ks_url)?;
                let overlay = iso::plan_replace(&installer, &grub_path, &found, grub.as_bytes())?;
                let mut served = ServedFile::plain(&installer)?;
                served.overlay = Arc::new(overlay);
                Ok::<_, anyhow::Error>((files, Some(served)))
            })?;
            rows.push(vec![
                node.name.clone(),
                "installer".into(),
                reg.iso_url.clone(),
            ]);
            rows.push(vec![node.name.clone(), "seed".into(), reg.seed_url.clone()]);
        }
    }
    if ctx.printer.json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| json!({"name": r[0], "kind": r[1], "url": r[2]}))
            .collect();
        ctx.printer.json_data(
            &json!({"listening": server.addr(), "base_url": server.base_url(), "urls": list}),
        )?;
    } else {
        ctx.printer.info(&format!(
            "boot server listening on {} (reached at {})",
            server.addr(),
            server.base_url()
        ));
        if !rows.is_empty() {
            ctx.printer.data(&table(&["NAME", "KIND", "URL"], &rows));
        }
    }
    match args.duration {
        Some(d) => tokio::time::sleep(d).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    Ok(ExitStatus::Success)
}
