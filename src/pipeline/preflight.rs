//! The `preflight` stage: before anything is touched, each node's BMC must
//! answer (over its pinned TLS), be identified, report a healthy host, and
//! see the GPUs its hardware profile promises. Nothing here changes the
//! node.

use std::time::Duration;

use serde_json::json;

use crate::bmc::{discover, facts};
use crate::pipeline::node::NodeCx;
use crate::pipeline::step::{Outcome, Steps, Stop};

/// The longest one preflight step may take (a slow BMC answers each of
/// its requests in seconds, and discovery takes a few dozen).
const DEADLINE: Duration = Duration::from_secs(300);

/// Runs the preflight steps for one node.
pub async fn run(cx: &NodeCx, steps: &mut Steps) -> Result<(), Stop> {
    steps
        .run("bmc", DEADLINE, || async {
            let layout = cx.layout().await?;
            let id = &layout.identity;
            let vendor = match id.generation {
                Some(g) => format!("{:?} {g}", id.vendor),
                None => format!("{:?}", id.vendor),
            };
            Ok(Outcome::done(format!(
                "{} {}, BMC firmware {}",
                vendor.to_lowercase(),
                id.model,
                id.firmware
            ))
            .with_metrics(json!({"identity": id, "system": layout.system})))
        })
        .await?;
    steps
        .run("host", DEADLINE, || async {
            let layout = cx.layout().await?;
            let host = facts::host(cx.bmc(), &layout).await?;
            let metrics = json!({"host": host});
            if host.health == "Critical" {
                return Ok(Outcome::failed(format!(
                    "the BMC reports the host's health as Critical ({} {}, serial {})",
                    host.manufacturer, host.model, host.serial
                ))
                .with_metrics(metrics));
            }
            Ok(Outcome::done(format!(
                "{} {} serial {}, power {}, health {}",
                host.manufacturer, host.model, host.serial, host.power, host.health
            ))
            .with_metrics(metrics))
        })
        .await?;
    steps
        .run("gpus", DEADLINE, || async {
            let layout = cx.layout().await?;
            let gpus = discover::gpus(cx.bmc(), &layout).await?;
            let want = cx.hardware.gpu.count as usize;
            let metrics = json!({"gpus": gpus});
            if gpus.is_empty() {
                // Many BMCs list no GPUs at all; the drivers and burn-in
                // stages count them with nvidia-smi.
                return Ok(Outcome::skipped(
                    "the BMC lists no GPUs; they are counted by nvidia-smi later",
                )
                .with_metrics(metrics));
            }
            if gpus.len() != want {
                let seen: Vec<String> = gpus
                    .iter()
                    .map(|g| match &g.serial {
                        Some(s) => format!("{} (serial {s})", g.id),
                        None => g.id.clone(),
                    })
                    .collect();
                return Ok(Outcome::failed(format!(
                    "the BMC sees {} of {want} GPUs ({} expects {want}): {}",
                    gpus.len(),
                    cx.hardware.name,
                    crate::diag::clip(&seen.join(", "), 300)
                ))
                .with_metrics(metrics));
            }
            Ok(Outcome::done(format!("{} × {}", gpus.len(), gpus[0].model)).with_metrics(metrics))
        })
        .await?;
    steps
        .run("firmware", DEADLINE, || async {
            let firmware = facts::firmware(cx.bmc()).await?;
            Ok(
                Outcome::done(format!("{} firmware components listed", firmware.len()))
                    .with_metrics(json!({ "firmware": firmware })),
            )
        })
        .await?;
    Ok(())
}
