//! The `preflight` stage: before anything is touched, each node's BMC must
//! answer (over its pinned TLS), be identified, report a healthy host, and
//! see the GPUs its hardware profile promises. Its last step powers on a
//! node that is off, in the rack's power-on waves, so the stages after it
//! find the node running; it never powers anything off.
//!
//! The GPU verdict ([`judge_gpus`]) holds the BMC's list to the profile's
//! count, model and maker. A model is compared by its product name (`H100`,
//! `A100`, `MI250X`, or the die, `GH100`, that several products share)
//! and, where both say it, its memory size; a BMC that names no product
//! (a bare part number, `GPU 3`) cannot be checked and is said to be
//! unchecked. The maker expected is the one the profile's model names
//! (`NVIDIA …`). A BMC that lists no GPUs fails the node where the vendor's
//! BMCs are known to list them ([`crate::bmc::vendor::Quirks::lists_gpus`]),
//! and is a warning, recorded with the step, elsewhere.

use std::time::Duration;

pub mod metrics;

use serde_json::json;

use crate::bmc::discover::Gpu;
use crate::bmc::ops::{self, PowerOp, Waits};
use crate::bmc::vendor::Identity;
use crate::bmc::{discover, facts};
use crate::pipeline::node::NodeCx;
use crate::pipeline::record::StepMetrics as _;
use crate::pipeline::stages::{About, NodeWork, Scope, StageDef};
use crate::pipeline::step::{Outcome, Steps, Stop};
use crate::profiles::HardwareProfile;
use metrics::{BmcMetrics, FirmwareMetrics, HostMetrics};

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
            let metrics = BmcMetrics {
                identity: Some(json!(id)),
                system: Some(json!(layout.system)),
            }
            .to_metrics();
            // A sled or blade BMC serves several hosts: acting on a guess
            // would power-cycle another node.
            if !layout.other_hosts.is_empty() && cx.node.bmc.system.is_none() {
                let mut hosts = vec![layout.system.as_str()];
                hosts.extend(layout.other_hosts.iter().map(String::as_str));
                return Ok(Outcome::failed(format!(
                    "the BMC serves {} host systems ({}): set this node's bmc.system to its own",
                    hosts.len(),
                    crate::diag::clip(&hosts.join(", "), 200)
                ))
                .with_metrics(metrics));
            }
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
            .with_metrics(metrics))
        })
        .await?;
    steps
        .run("host", DEADLINE, || async {
            // Discovery read the system document moments ago (or, on a
            // resume, just now): its summary is as fresh as another GET.
            let layout = cx.layout().await?;
            let host = layout.host.clone();
            let metrics = HostMetrics {
                host: Some(json!(host)),
            }
            .to_metrics();
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
            let outcome = judge_gpus(&gpus, &cx.hardware, &layout.identity);
            for w in outcome.metrics["warnings"].as_array().into_iter().flatten() {
                tracing::warn!(node = %cx.node.name, "{}", w.as_str().unwrap_or_default());
            }
            Ok(outcome)
        })
        .await?;
    steps
        .run("firmware", DEADLINE, || async {
            let layout = cx.layout().await?;
            let firmware = facts::firmware(cx.bmc(), &layout).await?;
            Ok(
                Outcome::done(format!("{} firmware components listed", firmware.len()))
                    .with_metrics(
                        FirmwareMetrics {
                            firmware: Some(json!(firmware)),
                        }
                        .to_metrics(),
                    ),
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
            let waited_long = tokio::select! {
                () = &mut wave => false,
                () = tokio::time::sleep(KEEP_CONNECTION_FOR) => {
                    cx.bmc().close_idle();
                    wave.await;
                    true
                }
            };
            // After a long wait someone may have powered it on: look again
            // (some BMCs refuse `On` for a node already on).
            let waits = Waits::default();
            let done = if waited_long {
                ops::power(cx.bmc(), &layout, PowerOp::On, &waits).await?
            } else {
                ops::power_from(cx.bmc(), &layout, PowerOp::On, &waits, state).await?
            };
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

/// What a GPU model string says: the product (`H100`, `MI250X`, or a die
/// such as `GH100`), the memory size in GB, and the maker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ModelKey {
    product: Option<String>,
    memory_gb: Option<u32>,
    maker: Option<&'static str>,
}

/// Dies several products share: a BMC naming the die names any of them.
const DIES: &[(&str, &[&str])] = &[
    ("GA100", &["A100", "A800", "A30"]),
    ("GH100", &["H100", "H200", "H800", "H20"]),
    ("GB100", &["B100", "B200"]),
    ("GB102", &["B100", "B200"]),
];

/// The maker a text names (`NVIDIA Corporation`, `Advanced Micro
/// Devices, Inc.`, `AMD`, `Intel`).
fn maker_of(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_uppercase();
    let words: Vec<&str> = t
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if words.contains(&"NVIDIA") {
        Some("NVIDIA")
    } else if words.contains(&"AMD") || t.contains("ADVANCED MICRO DEVICES") {
        Some("AMD")
    } else if words.contains(&"INTEL") {
        Some("Intel")
    } else {
        None
    }
}

impl ModelKey {
    fn of(text: &str) -> ModelKey {
        let upper = text.to_ascii_uppercase();
        let words: Vec<&str> = upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let is_product = |w: &str| {
            let letters = w.len()
                - w.trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .len();
            let rest = &w[letters..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let tail = &rest[digits..];
            (1..=2).contains(&letters)
                && (2..=4).contains(&digits)
                && tail.len() <= 2
                && tail.chars().all(|c| c.is_ascii_alphabetic())
        };
        let product = words
            .iter()
            .find(|w| is_product(w))
            .map(|w| (*w).to_owned());
        let mut memory_gb = None;
        for (i, w) in words.iter().enumerate() {
            let gb = match w.strip_suffix("GB") {
                Some(n) if !n.is_empty() => n.parse::<u32>().ok(),
                None if words.get(i + 1) == Some(&"GB") => w.parse::<u32>().ok(),
                _ => None,
            };
            if gb.is_some() {
                memory_gb = gb;
                break;
            }
        }
        let maker = maker_of(text).or_else(|| {
            product
                .as_deref()
                .filter(|p| p.starts_with("MI"))
                .map(|_| "AMD")
        });
        ModelKey {
            product,
            memory_gb,
            maker,
        }
    }

    /// Whether a BMC's product names the profile's.
    fn same_product(bmc: &str, profile: &str) -> bool {
        bmc == profile
            || DIES
                .iter()
                .any(|(die, products)| bmc == *die && products.contains(&profile))
    }
}

/// Why a GPU the BMC lists is not the profile's, or `None` when it is (or
/// the BMC does not say enough to tell).
fn model_mismatch(gpu: &Gpu, profile: &HardwareProfile) -> Option<String> {
    let want = ModelKey::of(&profile.gpu.model);
    let texts = [Some(gpu.model.as_str()), gpu.name.as_deref()];
    let seen = texts
        .into_iter()
        .flatten()
        .map(ModelKey::of)
        .find(|k| k.product.is_some())
        .unwrap_or_default();
    let maker = gpu.vendor.as_deref().and_then(maker_of).or(seen.maker);
    if let (Some(m), Some(w)) = (maker, want.maker)
        && m != w
    {
        return Some(format!("made by {m}, not {w}"));
    }
    if let (Some(p), Some(w)) = (&seen.product, &want.product)
        && !ModelKey::same_product(p, w)
    {
        return Some(format!("model {p}, not {w}"));
    }
    let want_gb = want
        .memory_gb
        .map(f64::from)
        .unwrap_or(profile.gpu.memory_mib as f64 / 1024.0);
    if let Some(gb) = seen.memory_gb
        && want_gb > 0.0
        && (f64::from(gb) - want_gb).abs() > want_gb * 0.05
    {
        return Some(format!("{gb} GB, not {want_gb:.0} GB"));
    }
    None
}

/// How a GPU reads in a reason: its model, the product name where the
/// model is a part number, and its maker.
fn describe(gpu: &Gpu) -> String {
    let mut out = if gpu.model.is_empty() {
        "a GPU of no stated model".to_owned()
    } else {
        gpu.model.clone()
    };
    // The name only where the model is a part number (HPE), not where it
    // is a per-slot label (`GPU 3`).
    if let Some(name) = &gpu.name
        && ModelKey::of(&gpu.model).product.is_none()
        && ModelKey::of(name).product.is_some()
    {
        out.push_str(&format!(" ({name})"));
    }
    if let Some(v) = &gpu.vendor
        && maker_of(&out).is_none_or(|m| maker_of(v) != Some(m))
    {
        out.push_str(&format!(" by {v}"));
    }
    out
}

/// Judges the GPUs a BMC lists against the hardware profile: count, then
/// model and maker (see the module docs). The outcome's metrics carry the
/// GPUs found, what the profile expects, and any warning.
pub fn judge_gpus(gpus: &[Gpu], profile: &HardwareProfile, identity: &Identity) -> Outcome {
    let want = profile.gpu.count as usize;
    let expected = json!({"count": want, "model": profile.gpu.model});
    if gpus.is_empty() {
        if want == 0 {
            return Outcome::done("no GPUs, as the profile expects")
                .with_metrics(json!({"gpus": gpus, "expected": expected}));
        }
        let vendor = format!("{:?}", identity.vendor).to_lowercase();
        if identity.quirks().lists_gpus {
            return Outcome::failed(format!(
                "the BMC lists no GPUs, but {} expects {want} × {} and {vendor} BMCs list the \
                 GPUs they see: check that the GPUs are seated and powered, or reset the BMC \
                 if its inventory is stale",
                profile.name, profile.gpu.model
            ))
            .with_metrics(json!({"gpus": gpus, "expected": expected}));
        }
        let warning = format!(
            "the BMC lists no GPUs ({vendor} BMCs may not), so it cannot confirm the {want} \
             that {} expects; nvidia-smi counts them later",
            profile.name
        );
        return Outcome::done(format!("warning: {warning}"))
            .with_metrics(json!({"gpus": gpus, "expected": expected, "warnings": [warning]}));
    }
    let metrics = json!({"gpus": gpus, "expected": expected});
    if gpus.len() != want {
        let ids: Vec<&str> = gpus.iter().map(|g| g.id.as_str()).collect();
        let which = match missing_ids(&ids, want) {
            Some(missing) if !missing.is_empty() => {
                format!("missing: {}", missing.join(", "))
            }
            _ => format!("seen: {}", crate::diag::clip(&ids.join(", "), 200)),
        };
        return Outcome::failed(format!(
            "the BMC sees {} of {want} GPUs that {} expects ({which})",
            gpus.len(),
            profile.name,
        ))
        .with_metrics(metrics);
    }
    // Distinct wrong models, each with how many and why.
    let mut wrong: Vec<(String, usize, String)> = Vec::new();
    for g in gpus {
        if let Some(why) = model_mismatch(g, profile) {
            let what = describe(g);
            match wrong.iter_mut().find(|(d, _, _)| *d == what) {
                Some(entry) => entry.1 += 1,
                None => wrong.push((what, 1, why)),
            }
        }
    }
    if !wrong.is_empty() {
        let found: Vec<String> = wrong
            .iter()
            .map(|(what, n, why)| format!("{n} × {what}: {why}"))
            .collect();
        return Outcome::failed(format!(
            "the BMC lists GPUs that are not the {} that {} expects ({})",
            profile.gpu.model,
            profile.name,
            crate::diag::clip(&found.join("; "), 300)
        ))
        .with_metrics(metrics);
    }
    let named = gpus
        .iter()
        .filter(|g| {
            [Some(g.model.as_str()), g.name.as_deref()]
                .into_iter()
                .flatten()
                .any(|t| ModelKey::of(t).product.is_some())
        })
        .count();
    let first = describe(&gpus[0]);
    if named < gpus.len() {
        let warning = format!(
            "the BMC does not name the model of {} of the GPUs ({first}); the model is checked by nvidia-smi later",
            gpus.len() - named
        );
        return Outcome::done(format!("{} × {first}; warning: {warning}", gpus.len()))
            .with_metrics(json!({"gpus": gpus, "expected": expected, "warnings": [warning]}));
    }
    Outcome::done(format!("{} × {first}", gpus.len())).with_metrics(metrics)
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

/// The `preflight` stage.
pub struct Preflight;

impl StageDef for Preflight {
    // It powers on a node that is off, never off: nothing is lost.
    fn about(&self) -> About {
        About {
            name: "preflight",
            scope: Scope::Node,
            destructive: false,
        }
    }
    fn run_node<'a>(&'a self, cx: &'a NodeCx, steps: &'a mut Steps) -> NodeWork<'a> {
        Box::pin(run(cx, steps))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bmc::vendor::Vendor;
    use crate::pipeline::record::StepStatus;

    fn h100() -> HardwareProfile {
        crate::profiles::Catalog::builtin().unwrap().hardware["hgx-h100-80gb-8x"]
            .profile
            .clone()
    }

    fn bmc(vendor: Vendor) -> Identity {
        Identity {
            vendor,
            generation: None,
            model: String::new(),
            firmware: "1.0".into(),
        }
    }

    fn eight(model: &str, name: Option<&str>, vendor: Option<&str>) -> Vec<Gpu> {
        (1..=8)
            .map(|i| Gpu {
                path: format!("/redfish/v1/Systems/1/Processors/GPU{i}"),
                id: format!("GPU{i}"),
                model: model.to_owned(),
                name: name.map(str::to_owned),
                vendor: vendor.map(str::to_owned),
                serial: None,
                part_number: None,
                firmware: None,
                health: None,
            })
            .collect()
    }

    #[test]
    fn gpus_of_another_model_or_maker_fail_naming_what_was_found() {
        let p = h100();
        let dell = bmc(Vendor::Dell);
        let amd = judge_gpus(
            &eight(
                "AMD Instinct MI250X OAM",
                None,
                Some("Advanced Micro Devices, Inc."),
            ),
            &p,
            &dell,
        );
        assert_eq!(amd.status, StepStatus::Failed);
        assert!(
            amd.detail.contains("8 × AMD Instinct MI250X OAM"),
            "{}",
            amd.detail
        );
        assert!(
            amd.detail.contains("made by AMD, not NVIDIA"),
            "{}",
            amd.detail
        );
        let a100 = judge_gpus(
            &eight("NVIDIA A100-SXM4-40GB", None, Some("NVIDIA")),
            &p,
            &dell,
        );
        assert_eq!(a100.status, StepStatus::Failed);
        assert!(
            a100.detail.contains("model A100, not H100"),
            "{}",
            a100.detail
        );
        let small = judge_gpus(&eight("NVIDIA H100 94GB", None, None), &p, &dell);
        assert!(
            small.detail.contains("94 GB, not 80 GB"),
            "{}",
            small.detail
        );
    }

    #[test]
    fn the_profiles_model_as_real_bmcs_spell_it_passes() {
        let p = h100();
        let dell = bmc(Vendor::Dell);
        for (model, name, vendor) in [
            ("H100 80GB HBM3", None, Some("NVIDIA")), // DGX (AMI), Supermicro
            ("NVIDIA H100 PCIe", None, Some("NVIDIA Corporation")), // iDRAC
            (
                "900-21010-0320-030",
                Some("NVIDIA H100 NVL"),
                Some("NVIDIA"),
            ), // iLO
            ("GH100", None, Some("NVIDIA")),          // the die
            ("HGX H100 8-GPU", None, Some("NVIDIA")), // a board as a PCIe device
        ] {
            let o = judge_gpus(&eight(model, name, vendor), &p, &dell);
            assert_eq!(o.status, StepStatus::Done, "{model}: {}", o.detail);
            assert!(!o.detail.contains("warning"), "{model}: {}", o.detail);
        }
        // Lenovo names no model: passed, and said to be unchecked.
        let o = judge_gpus(&eight("GPU 3", None, Some("NVIDIA Corporation")), &p, &dell);
        assert_eq!(o.status, StepStatus::Done);
        assert!(
            o.metrics["warnings"][0]
                .as_str()
                .unwrap()
                .contains("does not name the model")
        );
        assert_eq!(o.metrics["expected"]["model"], "NVIDIA H100 80GB HBM3");
    }

    #[test]
    fn no_gpus_fail_where_the_vendor_lists_them_and_warn_elsewhere() {
        let p = h100();
        let dell = judge_gpus(&[], &p, &bmc(Vendor::Dell));
        assert_eq!(dell.status, StepStatus::Failed);
        assert!(dell.detail.contains("lists no GPUs"), "{}", dell.detail);
        let hpe = judge_gpus(&[], &p, &bmc(Vendor::Hpe));
        assert_eq!(hpe.status, StepStatus::Failed);
        let generic = judge_gpus(&[], &p, &bmc(Vendor::Generic));
        assert_eq!(generic.status, StepStatus::Done);
        assert!(generic.detail.starts_with("warning:"), "{}", generic.detail);
        assert_eq!(generic.metrics["warnings"].as_array().unwrap().len(), 1);
    }

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
