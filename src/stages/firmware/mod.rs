//! The `firmware` stage: brings a node's firmware and BIOS to its
//! hardware profile's baseline over Redfish before it is imaged.
//!
//! Steps, each journaled (a resumed run picks up after the last one that
//! ended, and the update step reads the inventory again, so nothing is
//! flashed twice):
//! - `inventory`: the firmware inventory against the baseline
//!   ([`compliance`]); a component the inventory does not list fails here.
//! - `update`: each component below the baseline, one at a time (several
//!   vendors refuse concurrent updates, and one at a time is never wrong),
//!   by the method the BMC offers ([`crate::bmc::update`]), its task
//!   followed to the end and through the BMC's own reboot; at most
//!   `limits.firmware.per_rack` nodes of a rack update at once.
//! - `bios`: the BIOS settings ([`bios`]); differing values written to the
//!   settings object, applied at the next reset.
//! - `reset`: one system reset when an update or a setting waits for it.
//! - `verify`: versions and settings read back; a component still below
//!   the baseline or a setting the BMC accepted but the BIOS does not show
//!   fails the node, naming it.

pub mod bios;
pub mod compliance;
pub mod metrics;
pub mod prepare;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bmc::client::{BmcClient, BmcError};
use crate::bmc::discover::{Layout, link};
use crate::bmc::facts::{self, Firmware};
use crate::bmc::ops::{self, PowerOp, Waits};
use crate::bmc::update::{self, Bios, TaskEnd, UpdateMethod, UpdateService};
use crate::inventory::Inventory;
use crate::pipeline::node::NodeCx;
use crate::pipeline::prepare::{Prepare, PrepareCx};
use crate::pipeline::record::StepMetrics as _;
use crate::pipeline::stages::{About, NodeWork, Scope, StageDef};
use crate::pipeline::step::{Outcome, Steps, Stop};
use compliance::ComponentCheck;
use metrics::{
    BiosCheck, BiosMetrics, ComponentUpdate, InventoryMetrics, UpdateMetrics, VerifyMetrics,
};
use prepare::FirmwareSetup;

/// The longest a reading step may take.
const READ_DEADLINE: Duration = Duration::from_secs(300);

/// The longest one component's update may take, task included (a GPU
/// baseboard bundle takes tens of minutes on real BMCs).
const TASK_LIMIT: Duration = Duration::from_secs(60 * 60);

/// How long a BMC that reboots while updating itself may stay silent.
const REBOOT_GRACE: Duration = Duration::from_secs(15 * 60);

/// The longest the whole update step may take.
const UPDATE_DEADLINE: Duration = Duration::from_secs(4 * 60 * 60);

/// The `firmware` stage.
pub struct FirmwareStage;

impl StageDef for FirmwareStage {
    fn about(&self) -> About {
        About {
            name: "firmware",
            scope: Scope::Node,
            destructive: true,
        }
    }

    /// Planned by default only where some hardware profile sets a
    /// baseline: without one there is nothing to bring nodes to.
    fn in_default_plan(&self, inventory: &Inventory) -> bool {
        inventory.nodes.iter().any(|n| {
            inventory
                .catalog
                .hardware
                .get(&n.hardware)
                .is_some_and(|e| has_baseline(&e.profile))
        })
    }

    fn prepare(&self, run: &PrepareCx<'_>) -> anyhow::Result<Option<Box<dyn Prepare>>> {
        Ok(Some(Box::new(prepare::Packages::check(run)?)))
    }

    fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
        Box::pin(run(cx, steps))
    }
}

/// Whether a hardware profile sets any firmware or BIOS baseline.
pub fn has_baseline(p: &crate::profiles::HardwareProfile) -> bool {
    !p.firmware.is_empty()
        || !p.bios.attributes.is_empty()
        || p.bios.boot_mode.is_some()
        || p.bios.secure_boot.is_some()
}

/// Brings one node to its profile's baseline.
pub async fn run(cx: &NodeCx, steps: &mut Steps) -> Result<(), Stop> {
    if !has_baseline(&cx.hardware) {
        steps
            .run("inventory", READ_DEADLINE, || async {
                Ok(Outcome::skipped(format!(
                    "hardware profile {} sets no firmware or BIOS baseline",
                    cx.hardware.name
                )))
            })
            .await?;
        return Ok(());
    }
    let Some(setup) = cx.site.prepared::<FirmwareSetup>() else {
        return Err(Stop::Failed {
            step: "start",
            outcome: Box::new(Outcome::failed(
                "the run has no firmware setup (a bug in kiln)",
            )),
        });
    };
    let baseline = &cx.hardware.firmware;
    // What this attempt read, so later steps need not ask the BMC again
    // while nothing has changed it (a step ended by an earlier attempt
    // leaves these empty, and the later step reads for itself).
    let fresh = Fresh::default();

    steps
        .run("inventory", READ_DEADLINE, || async {
            let (service, inventory) = read_inventory(cx).await?;
            let components = compliance::check(baseline, &inventory);
            fresh.keep_inventory(service, inventory);
            let missing: Vec<String> = components
                .iter()
                .filter(|c| c.members.is_empty())
                .filter_map(ComponentCheck::shortfall)
                .collect();
            let below = components.iter().filter(|c| !c.meets()).count();
            let metrics = InventoryMetrics {
                components: components.clone(),
            }
            .to_metrics();
            if !missing.is_empty() {
                return Ok(Outcome::failed(missing.join("; ")).with_metrics(metrics));
            }
            Ok(Outcome::done(match below {
                0 => format!("all {} components meet the baseline", components.len()),
                n => format!("{n} of {} components below the baseline", components.len()),
            })
            .with_metrics(metrics))
        })
        .await?;

    let updated = steps
        .run("update", UPDATE_DEADLINE, || {
            update_components(cx, &setup, &fresh)
        })
        .await?;
    let updated = UpdateMetrics::from_metrics(&updated.metrics).unwrap_or_default();

    let written = steps
        .run("bios", READ_DEADLINE, || write_bios(cx, &fresh))
        .await?;
    let written = BiosMetrics::from_metrics(&written.metrics).unwrap_or_default();
    let secure_boot_written = written
        .before
        .iter()
        .any(|c| c.setting == bios::SECURE_BOOT && !c.meets);

    let reset = updated.reset || !written.written.is_empty() || secure_boot_written;
    steps
        .run("reset", READ_DEADLINE, || async {
            if !reset {
                return Ok(Outcome::skipped("nothing waits for a reset"));
            }
            let layout = cx.layout().await?;
            let waits = Waits {
                poll: setup.poll,
                ..Waits::default()
            };
            if ops::power_state(cx.bmc(), &layout).await? == "Off" {
                cx.gates.power_on(&cx.node.rack).await;
            }
            let done = ops::power(cx.bmc(), &layout, PowerOp::Reset, &waits).await?;
            Ok(Outcome::done(format!(
                "reset to apply pending updates and settings ({})",
                done.sent.join(", ")
            ))
            .with_metrics(json!(done)))
        })
        .await?;

    let settle = if reset { setup.settle } else { Duration::ZERO };
    steps
        .run("verify", settle + READ_DEADLINE, || {
            // Nothing changed since the readings above: they are the answer.
            let unchanged = !reset && updated.updates.is_empty();
            verify(
                cx,
                &setup,
                &updated,
                &written,
                settle,
                unchanged.then_some(&fresh),
            )
        })
        .await?;
    Ok(())
}

/// The readings of this attempt's `inventory` and `bios` steps.
#[derive(Default)]
struct Fresh {
    inventory: Mutex<Option<(Option<UpdateService>, Vec<Firmware>)>>,
    bios: Mutex<Option<(Option<Bios>, Option<bool>)>>,
}

impl Fresh {
    fn keep_inventory(&self, service: Option<UpdateService>, members: Vec<Firmware>) {
        *lock(&self.inventory) = Some((service, members));
    }
    fn keep_bios(&self, bios: Option<Bios>, secure_boot: Option<bool>) {
        *lock(&self.bios) = Some((bios, secure_boot));
    }
    fn inventory(&self) -> Option<(Option<UpdateService>, Vec<Firmware>)> {
        lock(&self.inventory).clone()
    }
    fn bios(&self) -> Option<(Option<Bios>, Option<bool>)> {
        lock(&self.bios).clone()
    }
}

/// A poisoned lock still holds a whole reading (it is only ever replaced).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The BMC's update service and firmware inventory.
async fn read_inventory(cx: &NodeCx) -> anyhow::Result<(Option<UpdateService>, Vec<Firmware>)> {
    let layout = cx.layout().await?;
    Ok(inventory_of(cx.bmc(), &layout).await?)
}

/// A BMC's update service (none when it offers no `UpdateService`) and
/// firmware inventory: shared by the stage and `kiln firmware check`.
pub async fn inventory_of(
    client: &BmcClient,
    layout: &Layout,
) -> Result<(Option<UpdateService>, Vec<Firmware>), BmcError> {
    let Some(path) = &layout.update_service else {
        return Ok((None, Vec::new()));
    };
    let service = UpdateService::of(path, &client.get(path).await?);
    let members = match &service.inventory {
        Some(inventory) => {
            facts::firmware_members(client, layout.expand.as_deref(), inventory).await?
        }
        None => Vec::new(),
    };
    Ok((Some(service), members))
}

/// The `update` step: each component below the baseline, one at a time.
async fn update_components(
    cx: &NodeCx,
    setup: &FirmwareSetup,
    fresh: &Fresh,
) -> anyhow::Result<Outcome> {
    let baseline = &cx.hardware.firmware;
    // A resumed run reads again: it skips what an earlier attempt updated.
    let (service, inventory) = match fresh.inventory() {
        Some(read) => read,
        None => read_inventory(cx).await?,
    };
    let checks = compliance::check(baseline, &inventory);
    let todo: Vec<_> = baseline
        .iter()
        .zip(&checks)
        .filter(|(_, check)| !check.meets())
        .collect();
    if todo.is_empty() {
        return Ok(Outcome::skipped("every component meets the baseline"));
    }
    let Some(service) = service else {
        return Ok(Outcome::failed(
            "the BMC has no UpdateService: kiln cannot update its firmware",
        ));
    };
    let _slot = setup.rack_slot(&cx.node.rack).await;
    let mut metrics = UpdateMetrics::default();
    let mut done = Vec::new();
    for (component, check) in todo {
        let why = check.shortfall().unwrap_or_default();
        let fail = |reason: String, metrics: &UpdateMetrics| {
            Ok(Outcome::failed(reason).with_metrics(metrics.to_metrics()))
        };
        let Some(package) = setup.package(&cx.hardware.name, &component.component) else {
            return fail(
                format!("{why}; the profile names no package to update it"),
                &metrics,
            );
        };
        let scheme = package.url.split(':').next().unwrap_or("http");
        let method = match service.method(scheme, package.len) {
            Ok(m) => m,
            Err(e) => return fail(format!("{}: {e}", component.component), &metrics),
        };
        let apply = component.apply.redfish();
        let started = match &method {
            UpdateMethod::Pull(action) => {
                update::simple_update(cx.bmc(), action, &package.url, &[], apply).await
            }
            UpdateMethod::Push(uri) => {
                // A push sends the package itself (BMCs without
                // SimpleUpdate take no URL): read and checked once for the
                // run, one copy shared by every node's upload.
                let sha256 = component.package.as_ref().map_or("", |p| p.sha256.as_str());
                match package.bytes(sha256).await {
                    Ok(image) => {
                        update::push(cx.bmc(), uri, &[], apply, &package.name, image, sha256).await
                    }
                    Err(e) => return fail(format!("{}: {e}", component.component), &metrics),
                }
            }
        };
        let method_name = match &method {
            UpdateMethod::Pull(_) => "SimpleUpdate",
            UpdateMethod::Push(_) => "MultipartHttpPushUri",
        };
        let monitor = match started {
            Ok(monitor) => monitor,
            Err(e) => {
                return fail(
                    format!(
                        "{}: the BMC refused the update: {}",
                        component.component,
                        crate::diag::clip(&e.to_string(), 400)
                    ),
                    &metrics,
                );
            }
        };
        let end = match monitor {
            Some(monitor) => {
                let node = cx.node.name.clone();
                let name = component.component.clone();
                update::follow_task(
                    cx.bmc(),
                    &monitor,
                    TASK_LIMIT,
                    REBOOT_GRACE,
                    setup.poll,
                    |p| {
                        tracing::info!(node = %node, component = %name, state = %p.state, percent = ?p.percent, "firmware update: {}", p.message.as_deref().unwrap_or(""));
                    },
                )
                .await?
            }
            None => TaskEnd::Completed,
        };
        let task = match &end {
            TaskEnd::Completed => "Completed".to_owned(),
            TaskEnd::Lost => "Lost".to_owned(),
            TaskEnd::Failed(why) => why.clone(),
        };
        metrics.updates.push(ComponentUpdate {
            component: component.component.clone(),
            method: method_name.into(),
            apply: apply.into(),
            task,
        });
        if let TaskEnd::Failed(why) = end {
            return fail(
                format!(
                    "{}: the BMC's update task failed: {why}",
                    component.component
                ),
                &metrics,
            );
        }
        metrics.reset |= component.apply == crate::profiles::firmware::ApplyTime::OnReset;
        done.push(component.component.clone());
    }
    Ok(Outcome::done(format!("updated {}", done.join(", "))).with_metrics(metrics.to_metrics()))
}

/// The system's BIOS and secure-boot state, and where secure boot is set.
async fn read_bios(cx: &NodeCx) -> anyhow::Result<(Option<Bios>, Option<bool>, Option<String>)> {
    let layout = cx.layout().await?;
    Ok(bios_of(cx.bmc(), &layout).await?)
}

/// A system's BIOS, whether Secure Boot is on, and the Secure Boot
/// resource's path: shared by the stage and `kiln firmware check`.
pub async fn bios_of(
    client: &BmcClient,
    layout: &Layout,
) -> Result<(Option<Bios>, Option<bool>, Option<String>), BmcError> {
    let system = client.get(&layout.system).await?;
    let bios = update::bios(client, &system).await?;
    let secure = link(&system["SecureBoot"]);
    let enabled = match &secure {
        Some(path) => match client.get(path).await {
            Ok(doc) => doc["SecureBootEnable"].as_bool(),
            Err(e) if e.is_absent() => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    Ok((bios, enabled, secure))
}

/// The vendor name BIOS attribute aliases are keyed by.
pub fn vendor(cx_layout: &Layout) -> String {
    format!("{:?}", cx_layout.identity.vendor).to_lowercase()
}

/// The `bios` step: writes the settings that differ, pending a reset.
async fn write_bios(cx: &NodeCx, fresh: &Fresh) -> anyhow::Result<Outcome> {
    let wanted = &cx.hardware.bios;
    let layout = cx.layout().await?;
    let (bios, secure_boot, secure_path) = read_bios(cx).await?;
    fresh.keep_bios(bios.clone(), secure_boot);
    let before = bios::check(wanted, bios.as_ref(), secure_boot, &vendor(&layout));
    let written = bios::changes(&before);
    let mut metrics = BiosMetrics {
        before: before.clone(),
        written: serde_json::Map::new(),
    };
    let unfixable: Vec<String> = before
        .iter()
        .filter(|c| !c.meets && c.attribute.is_none())
        .filter_map(bios::shortfall)
        .collect();
    if !unfixable.is_empty() {
        return Ok(Outcome::failed(unfixable.join("; ")).with_metrics(metrics.to_metrics()));
    }
    if !written.is_empty() {
        let Some(bios) = &bios else {
            return Ok(Outcome::failed("the system links no Bios resource"));
        };
        if let Err(e) = update::write_bios(cx.bmc(), bios, written.clone()).await {
            return Ok(Outcome::failed(format!(
                "the BMC refused the BIOS settings {}: {}",
                written.keys().cloned().collect::<Vec<_>>().join(", "),
                crate::diag::clip(&e.to_string(), 400)
            ))
            .with_metrics(metrics.to_metrics()));
        }
        metrics.written = written;
    }
    if let (Some(want), Some(path)) = (wanted.secure_boot, &secure_path)
        && secure_boot != Some(want)
    {
        cx.bmc()
            .patch(path, &json!({ "SecureBootEnable": want }), None)
            .await?;
    }
    let changed = before.iter().filter(|c| !c.meets).count();
    Ok(match changed {
        0 => Outcome::done(format!("all {} settings meet the baseline", before.len())),
        n => Outcome::done(format!(
            "{n} of {} settings written, pending a reset",
            before.len()
        )),
    }
    .with_metrics(metrics.to_metrics()))
}

/// The `verify` step: reads versions and settings back, waiting up to
/// `settle` for values that apply while the host starts.
async fn verify(
    cx: &NodeCx,
    setup: &FirmwareSetup,
    updated: &UpdateMetrics,
    written: &BiosMetrics,
    settle: Duration,
    unchanged: Option<&Fresh>,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let layout = cx.layout().await?;
    let mut reuse = unchanged.and_then(|f| Some((f.inventory()?, f.bios()?)));
    loop {
        let ((_, inventory), (bios, secure_boot)) = match reuse.take() {
            Some(read) => read,
            None => (
                read_inventory(cx).await?,
                read_bios(cx).await.map(|(b, s, _)| (b, s))?,
            ),
        };
        let components = compliance::check(&cx.hardware.firmware, &inventory);
        let settings: Vec<BiosCheck> = bios::check(
            &cx.hardware.bios,
            bios.as_ref(),
            secure_boot,
            &vendor(&layout),
        );
        let mut reasons: Vec<String> = components
            .iter()
            .filter_map(|c| {
                let why = c.shortfall()?;
                let tried = updated.updates.iter().any(|u| u.component == c.component);
                Some(if tried {
                    format!("{why}: unchanged after the BMC's update")
                } else {
                    why
                })
            })
            .collect();
        reasons.extend(settings.iter().filter_map(|c| {
            let why = bios::shortfall(c)?;
            let accepted = c
                .attribute
                .as_ref()
                .is_some_and(|a| written.written.contains_key(a));
            Some(if accepted {
                format!("{why}: the BMC accepted the new value but the BIOS does not show it after the reset")
            } else {
                why
            })
        }));
        let metrics = VerifyMetrics {
            components,
            bios: settings,
        };
        if reasons.is_empty() {
            return Ok(Outcome::done(format!(
                "{} components and {} settings at the baseline",
                metrics.components.len(),
                metrics.bios.len()
            ))
            .with_metrics(metrics.to_metrics()));
        }
        if started.elapsed() >= settle {
            let mut outcome = Outcome::failed(reasons.remove(0));
            outcome.reasons.extend(reasons);
            return Ok(outcome.with_metrics(metrics.to_metrics()));
        }
        tokio::time::sleep(setup.poll.max(Duration::from_millis(200))).await;
    }
}
