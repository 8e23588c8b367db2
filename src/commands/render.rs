//! `kiln render --node NAME TEMPLATE`: one installer template rendered for
//! one node, with the node's name, user, MAC, profile and authorized key,
//! and placeholder host key, token and boot-server URLs (the real ones
//! exist only while `kiln image deploy` or `kiln serve` runs).

use super::Ctx;
use crate::cli::RenderArgs;
use crate::diag::did_you_mean;
use crate::exit::{BadInput, ExitStatus};
use crate::imaging::seed;

/// Runs `kiln render`.
pub fn run(ctx: &Ctx, args: &RenderArgs) -> anyhow::Result<ExitStatus> {
    let inventory = ctx.load_inventory()?;
    let catalog = super::profile::catalog(ctx)?;
    let Some(node) = inventory.node(&args.node) else {
        return Err(BadInput(format!("no node `{}` in the inventory", args.node)).into());
    };
    let image = args.image.as_deref().unwrap_or(&node.image);
    let Some(entry) = catalog.images.get(image) else {
        return Err(BadInput(format!("no image profile `{image}`; see `kiln image list`")).into());
    };
    let profile = &entry.profile;
    let mut cx = seed::sample_context(profile, &node.name);
    cx.user = node.ssh.user.clone();
    cx.sudoers_line = format!("{} ALL=(ALL) NOPASSWD:ALL", node.ssh.user);
    cx.mac = node.mac.as_ref().map(|m| m.to_string());
    if let Some(path) = &node.ssh.key {
        let pubfile = path.with_extension("pub");
        if let Ok(text) = std::fs::read_to_string(&pubfile)
            && let Some(line) = text.lines().next()
        {
            cx.authorized_keys = vec![line.trim().to_owned()];
        }
    }
    let text = if args.template == "grub.cfg" {
        seed::grub_cfg(
            profile,
            &node.name,
            crate::imaging::iso::DEMO_GRUB_CFG,
            &cx.seed_url,
            &cx.ks_url,
        )?
    } else {
        let name = seed::template_for(profile, &args.template)
            .map(str::to_owned)
            .or_else(|| {
                seed::names()
                    .contains(&args.template.as_str())
                    .then(|| args.template.clone())
            });
        let Some(name) = name else {
            let mut known: Vec<&str> = profile.seed_files().to_vec();
            known.extend(seed::names());
            let hint = did_you_mean(&args.template, known.iter().copied())
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            return Err(BadInput(format!(
                "no template `{}` for {}{hint}; known: {}",
                args.template,
                profile.name,
                known.join(", ")
            ))
            .into());
        };
        seed::render(&name, &cx)?
    };
    ctx.printer.data(text.trim_end_matches('\n'));
    Ok(ExitStatus::Success)
}
