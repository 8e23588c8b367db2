//! The `preflight` stage: before anything is touched, each node's BMC must
//! answer (over its pinned TLS), be identified, report a healthy host, and
//! see the GPUs its hardware profile promises. Its last step powers on a
//! node that is off, in the rack's power-on waves, so the stages after it
//! find the node running; it never powers anything off.

use std::time::Duration;

use serde_json::json;

use crate::bmc::ops::{self, PowerOp, Waits};
use crate::bmc::{discover, facts};
use crate::pipeline::node::NodeCx;
use crate::pipeline::step::{Outcome, Steps, Stop};

/// The longest one preflight step may take (a slow BMC answers each of
/// its requests in seconds, and discovery takes a few dozen).
const DEADLINE: Duration = Duration::from_secs(300);

/// How long a node waiting for its power-on wave keeps its BMC connection
/// open; BMCs drop idle connections after a few seconds anyway.
const KEEP_CONNECTION_FOR: Duration = Duration::from_secs(2);

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
                let ids: Vec<&str> = gpus.iter().map(|g| g.id.as_str()).collect();
                let which = match missing_ids(&ids, want) {
                    Some(missing) if !missing.is_empty() => {
                        format!("missing: {}", missing.join(", "))
                    }
                    _ => format!("seen: {}", crate::diag::clip(&ids.join(", "), 200)),
                };
                return Ok(Outcome::failed(format!(
                    "the BMC sees {} of {want} GPUs that {} expects ({which})",
                    gpus.len(),
                    cx.hardware.name,
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
    steps
        .run("power-on", DEADLINE, || async {
            let layout = cx.layout().await?;
            let state = ops::power_state(cx.bmc(), &layout).await?;
            if state == "On" {
                return Ok(Outcome::skipped("already on"));
            }
            // A rack powering on at once draws an inrush that trips its
            // breakers: wait for this rack's next wave. A wave that comes
            // soon keeps the connection (a new TLS handshake costs both
            // ends more than the request); a long wait does not hold one.
            let wave = cx.gates.power_on(&cx.node.rack);
            tokio::pin!(wave);
            tokio::select! {
                () = &mut wave => {}
                () = tokio::time::sleep(KEEP_CONNECTION_FOR) => {
                    cx.bmc().close_idle();
                    wave.await;
                }
            }
            let done = ops::power(cx.bmc(), &layout, PowerOp::On, &Waits::default()).await?;
            Ok(Outcome::done(format!(
                "powered on ({} → {}, sent {})",
                done.before,
                done.after,
                done.sent.join(", ")
            )))
        })
        .await?;
    Ok(())
}

/// The GPU ids a BMC leaves out, when its ids are numbered (`GPU_SXM_1`,
/// `GPU3`): the numbers run from 0 or 1 to `want`, so the gaps are the
/// missing ones. `None` when the ids are not numbered that way.
fn missing_ids(ids: &[&str], want: usize) -> Option<Vec<String>> {
    let mut prefix = None;
    let mut numbers = Vec::new();
    for id in ids {
        let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let (head, tail) = id.split_at(id.len() - digits);
        match prefix {
            None => prefix = Some(head),
            Some(p) if p != head => return None,
            Some(_) => {}
        }
        numbers.push(tail.parse::<usize>().ok()?);
    }
    let prefix = prefix?;
    let first = usize::from(!numbers.contains(&0));
    Some(
        (first..first + want)
            .filter(|n| !numbers.contains(n))
            .map(|n| format!("{prefix}{n}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::missing_ids;

    #[test]
    fn missing_gpus_are_named_from_the_gaps() {
        assert_eq!(
            missing_ids(&["GPU1", "GPU2", "GPU4"], 4),
            Some(vec!["GPU3".to_owned()])
        );
        assert_eq!(
            missing_ids(&["GPU_SXM_0", "GPU_SXM_2"], 3),
            Some(vec!["GPU_SXM_1".to_owned()])
        );
        assert_eq!(missing_ids(&["GPU1", "Accel2"], 3), None);
        assert_eq!(missing_ids(&["A", "B"], 3), None);
    }
}
