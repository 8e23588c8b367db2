//! `kiln firmware check` and `kiln firmware update`: where each selected
//! node stands against its hardware profile's firmware and BIOS baseline,
//! and the `firmware` stage run on them (through `kiln provision`'s path).

use std::sync::Arc;

use serde::Serialize;

use crate::bmc::client::BmcError;
use crate::cli::{BmcTarget, FirmwareCommand, FirmwareUpdateArgs};
use crate::commands::Ctx;
use crate::commands::bmc::Work;
use crate::commands::provision::{self, Request};
use crate::exit::ExitStatus;
use crate::pipeline::progress::Progress;
use crate::profiles::HardwareProfile;
use crate::stages::firmware::{self as stage, bios, compliance};

/// Runs a `kiln firmware` command.
pub fn run(ctx: &Ctx, cmd: FirmwareCommand) -> anyhow::Result<ExitStatus> {
    match cmd {
        FirmwareCommand::Check(target) => crate::commands::runtime()?.block_on(check(ctx, &target)),
        FirmwareCommand::Update(args) => update(ctx, &args),
    }
}

/// One node's standing against its baseline.
#[derive(Serialize)]
struct Standing {
    /// Whether every component and setting meets the baseline.
    meets: bool,
    /// Components and settings checked.
    checked: usize,
    /// What falls short, one line each.
    shortfalls: Vec<String>,
}

async fn check(ctx: &Ctx, target: &BmcTarget) -> anyhow::Result<ExitStatus> {
    let work = Work::new(ctx, target)?;
    let profiles: std::collections::BTreeMap<String, Arc<HardwareProfile>> = work
        .nodes()
        .iter()
        .filter_map(|n| {
            let p = &work.inventory.catalog.hardware.get(&n.hardware)?.profile;
            Some((n.name.clone(), Arc::new(p.clone())))
        })
        .collect();
    let profiles = Arc::new(profiles);
    let rows = work
        .run(false, move |c, layout| {
            let profiles = Arc::clone(&profiles);
            async move {
                let Some(profile) = profiles.get(&c.node).filter(|p| stage::has_baseline(p)) else {
                    return Ok::<_, BmcError>(Standing {
                        meets: true,
                        checked: 0,
                        shortfalls: Vec::new(),
                    });
                };
                let (_, inventory) = stage::inventory_of(&c, &layout).await?;
                let components = compliance::check(&profile.firmware, &inventory);
                let (bios_doc, secure_boot, _) = stage::bios_of(&c, &layout).await?;
                let settings = bios::check(
                    &profile.bios,
                    bios_doc.as_ref(),
                    secure_boot,
                    &stage::vendor(&layout),
                );
                let shortfalls: Vec<String> = components
                    .iter()
                    .filter_map(compliance::ComponentCheck::shortfall)
                    .chain(settings.iter().filter_map(bios::shortfall))
                    .collect();
                Ok(Standing {
                    meets: shortfalls.is_empty(),
                    checked: components.len() + settings.len(),
                    shortfalls,
                })
            }
        })
        .await;
    let status = work.finish(ctx, &rows, &["NODE", "STANDING"], |s| {
        vec![match (s.meets, s.checked) {
            (true, 0) => "no baseline".to_owned(),
            (true, n) => format!("meets the baseline ({n} checked)"),
            (false, _) => s.shortfalls.join("; "),
        }]
    })?;
    if rows
        .iter()
        .any(|r| r.result.as_ref().is_some_and(|s| !s.meets))
    {
        return Ok(ExitStatus::NodeFailed);
    }
    Ok(status)
}

/// Runs `preflight,firmware` on the selection, as `kiln provision` would.
fn update(ctx: &Ctx, args: &FirmwareUpdateArgs) -> anyhow::Result<ExitStatus> {
    let inventory = ctx.load_inventory()?;
    let path = ctx.inventory_path()?.to_path_buf();
    let request = Request {
        stages: Some("preflight,firmware".into()),
        ..Request::from(&args.run)
    };
    let mode = Progress::mode_for(ctx.printer.json, ctx.printer.quiet);
    let outcome = crate::commands::runtime()?.block_on(provision::execute(
        ctx,
        &inventory,
        &path,
        &crate::bmc::trust::state_dir(&path),
        &request,
        mode,
    ))?;
    provision::finish(ctx, &inventory, outcome, mode)
}
