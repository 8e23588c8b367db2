//! `kiln profile list|show`.

use super::Ctx;
use crate::cli::ProfileCommand;
use crate::diag::did_you_mean;
use crate::exit::{BadInput, ExitStatus};
use crate::output::table;
use crate::profiles::Catalog;

/// Runs `kiln profile …`.
pub fn run(ctx: &Ctx, cmd: ProfileCommand) -> anyhow::Result<ExitStatus> {
    let catalog = catalog(ctx)?;
    match cmd {
        ProfileCommand::List => {
            if ctx.printer.json {
                let list: Vec<_> = catalog.hardware.values().map(|e| &e.profile).collect();
                ctx.printer.json_data(&list)?;
                return Ok(ExitStatus::Success);
            }
            let rows: Vec<Vec<String>> = catalog
                .hardware
                .values()
                .map(|e| {
                    let p = &e.profile;
                    vec![
                        p.name.clone(),
                        format!("{}x {}", p.gpu.count, p.gpu.model),
                        format!("{}x{}", p.gpu.nvlink.links_per_gpu, p.gpu.nvlink.link_gbps),
                        format!("{}x{}G", p.infiniband.nics, p.infiniband.rate_gbps),
                        format!("{}", p.nccl.in_node_busbw_gbps),
                        format!("{}", p.nccl.cross_node_busbw_gbps),
                        p.description.clone(),
                    ]
                })
                .collect();
            ctx.printer.data(&table(
                &[
                    "NAME",
                    "GPUS",
                    "NVLINK",
                    "FABRIC",
                    "BUSBW-NODE",
                    "BUSBW-NET",
                    "DESCRIPTION",
                ],
                &rows,
            ));
            Ok(ExitStatus::Success)
        }
        ProfileCommand::Show { name } => {
            let Some(entry) = catalog.hardware.get(&name) else {
                let hint = did_you_mean(&name, catalog.hardware.keys().map(String::as_str))
                    .map(|h| format!(" (did you mean `{h}`?)"))
                    .unwrap_or_default();
                return Err(BadInput(format!(
                    "no hardware profile `{name}`{hint}; see `kiln profile list`"
                ))
                .into());
            };
            if ctx.printer.json {
                ctx.printer.json_data(&entry.profile)?;
            } else {
                ctx.printer.info(&format!("# {}", entry.file));
                ctx.printer.data(&entry.text);
                ctx.printer.data(&pins(&entry.profile));
                let p = &entry.profile;
                ctx.printer
                    .data(&crate::profiles::firmware::explain(&p.firmware, &p.bios));
            }
            Ok(ExitStatus::Success)
        }
    }
}

/// What the drivers stage checks downloads against, as `kiln profile
/// show` prints it after the profile (YAML comments, so the output stays a
/// profile).
pub(crate) fn pins(hw: &crate::profiles::HardwareProfile) -> String {
    use crate::drivers::script::{
        GPU_BURN_UPSTREAM, NCCL_TESTS_UPSTREAM, NVBANDWIDTH_UPSTREAM, tool_url,
    };
    let d = &hw.drivers;
    let key = |k: &Option<String>| {
        k.clone()
            .unwrap_or_else(|| "none pinned: installs from it refuse to start".to_owned())
    };
    let mut out = String::from("# Pins the drivers stage checks downloads against:\n");
    out.push_str(&format!(
        "#   repository key (apt, cuda-keyring): {}\n",
        key(&d.repo_key)
    ));
    out.push_str(&format!(
        "#   repository key (rpm, D42D0685.pub): {}\n",
        key(&d.rpm_repo_key)
    ));
    for (name, source, upstream) in [
        ("nccl-tests", &d.tools.nccl_tests, NCCL_TESTS_UPSTREAM),
        ("gpu-burn", &d.tools.gpu_burn, GPU_BURN_UPSTREAM),
        ("nvbandwidth", &d.tools.nvbandwidth, NVBANDWIDTH_UPSTREAM),
    ] {
        let url = match &source.url {
            Some(u) => u.clone(),
            None => format!(
                "{} (without a mirror; MIRROR/tools/{name}.tar.gz with one)",
                tool_url(source, None, name, upstream)
            ),
        };
        let sum = source
            .sha256
            .clone()
            .unwrap_or_else(|| "none pinned: not built, preinstall it in the image".to_owned());
        out.push_str(&format!("#   {name}: sha256 {sum}\n#     from {url}\n"));
    }
    out
}

/// The built-in profiles, plus those beside the inventory when one is given.
pub(crate) fn catalog(ctx: &Ctx) -> anyhow::Result<Catalog> {
    let mut catalog = Catalog::builtin().map_err(|d| {
        anyhow::anyhow!(
            "built-in profiles are invalid:\n{}",
            d.iter().map(|d| d.render(false)).collect::<String>()
        )
    })?;
    if let Some(path) = &ctx.global.inventory {
        let dir = path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("profiles");
        let mut diags = Vec::new();
        catalog.add_hardware_dir(&dir, &mut diags);
        for d in &diags {
            ctx.printer.diagnostic(d);
        }
        if diags
            .iter()
            .any(|d| d.severity == crate::diag::Severity::Error)
        {
            return Err(BadInput(format!("invalid profiles in {}", dir.display())).into());
        }
    }
    Ok(catalog)
}
