//! The node's BMC during the burn: chassis power and inlet air temperature,
//! sampled over Redfish while the GPUs are loaded, kept as a series and
//! judged.
//!
//! The GPUs' own telemetry says how hot they run; it cannot say whether
//! the room fed them air in spec or whether the node drew the power a full
//! load needs. The BMC can: `Chassis/Power` `PowerControl[].PowerConsumedWatts`
//! (or `EnvironmentMetrics.PowerWatts` on newer BMCs) and the `Intake`
//! sensor of `Chassis/Thermal` (or `ThermalSubsystem/ThermalMetrics`), read
//! by the same code as `kiln bmc sensors` ([`crate::bmc::facts::sensors`]).
//!
//! - Inlet above the profile's `burnin.max_inlet_c` fails the node: the
//!   burn ran out of spec, so it proves nothing either way, and the reason
//!   names the reading so the facility, not the node, gets fixed first.
//! - Power under load far below what the GPUs alone should draw is a
//!   warning (a BMC that misreads, a power cap, GPUs not really loaded): it
//!   is recorded beside the result, not a failure on its own.
//! - A BMC that cannot be read is a warning too: the GPU checks stand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::bmc::client::BmcClient;
use crate::bmc::discover::{Layout, discover_bmc};
use crate::bmc::facts::{Sensors, sensors};
use crate::profiles::HardwareProfile;

/// Share of the GPUs' combined power limit a node must draw under a GEMM
/// burn before kiln warns. Policy, from how the load behaves: gpu_burn's
/// GEMMs and DCGM's targeted power test hold each GPU at or near its power
/// limit (DCGM docs, "Targeted Power": the plugin drives the GPUs to the
/// target power, by default the enforced limit), and the rest of the node
/// only adds to the chassis reading. Under half of it means the BMC
/// misreads or the GPUs were capped or idle.
pub const MIN_LOAD_POWER_SHARE: f64 = 0.5;

/// Reads a node's chassis sensors through its BMC, discovering the BMC's
/// layout once (shared with the pipeline's other stages when built by
/// [`crate::pipeline::node::NodeCx::acceptance`]).
#[derive(Clone)]
pub struct BmcSensors {
    client: Arc<BmcClient>,
    system: Option<String>,
    layout: Arc<OnceCell<Arc<Layout>>>,
}

impl BmcSensors {
    /// A reader over `client`; `system` picks the host system when the BMC
    /// lists several (the inventory's `bmc.system`).
    pub fn new(client: Arc<BmcClient>, system: Option<String>) -> BmcSensors {
        BmcSensors::shared(client, system, Arc::new(OnceCell::new()))
    }

    /// Like [`BmcSensors::new`], sharing an already (or later) discovered
    /// layout.
    pub fn shared(
        client: Arc<BmcClient>,
        system: Option<String>,
        layout: Arc<OnceCell<Arc<Layout>>>,
    ) -> BmcSensors {
        BmcSensors {
            client,
            system,
            layout,
        }
    }

    /// Reads chassis power and temperatures once.
    pub async fn read(&self) -> anyhow::Result<Sensors> {
        let layout = self
            .layout
            .get_or_try_init(|| async {
                discover_bmc(&self.client, self.system.as_deref())
                    .await
                    .map(Arc::new)
            })
            .await?;
        Ok(sensors(&self.client, layout).await?)
    }
}

/// One reading of the BMC during the burn.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChassisSample {
    /// Seconds since the burn started.
    pub t_s: f64,
    /// Chassis power draw, W.
    pub power_w: Option<f64>,
    /// Inlet (intake) air temperature, °C.
    pub inlet_c: Option<f64>,
}

impl ChassisSample {
    /// The sample as `{t_s, power_w, inlet_c}`.
    pub fn to_json(&self) -> Value {
        json!({"t_s": self.t_s, "power_w": self.power_w, "inlet_c": self.inlet_c})
    }
}

/// The inlet reading of `s`: the hottest sensor whose context is `Intake`
/// or whose name says inlet (Redfish `PhysicalContext` is optional).
pub fn inlet_of(s: &Sensors) -> Option<f64> {
    s.hottest("intake").or_else(|| s.hottest("inlet"))
}

/// Reads the BMC every `every` until `done`, the first read at once (the
/// inlet before the load, for the record). Stops early, returning what it
/// has and the error, when a read fails: a BMC that errors once under
/// polling is left alone for the rest of the burn.
pub(crate) async fn sample(
    bmc: &BmcSensors,
    every: std::time::Duration,
    done: &AtomicBool,
    started: Instant,
) -> (Vec<ChassisSample>, Option<String>) {
    let mut out = Vec::new();
    loop {
        if done.load(Ordering::SeqCst) {
            break;
        }
        let t_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        match bmc.read().await {
            Ok(s) => out.push(ChassisSample {
                t_s,
                power_w: s.power_watts,
                inlet_c: inlet_of(&s),
            }),
            Err(e) => return (out, Some(format!("{e:#}"))),
        }
        sleep_unless_done(every, done).await;
    }
    (out, None)
}

/// Sleeps for `d`, or less once `done` is set (checked every 50 ms), so a
/// sampler stops soon after the burn rather than a whole interval later.
pub(crate) async fn sleep_unless_done(d: std::time::Duration, done: &AtomicBool) {
    let until = tokio::time::Instant::now() + d;
    while !done.load(Ordering::SeqCst) {
        let now = tokio::time::Instant::now();
        if now >= until {
            break;
        }
        tokio::time::sleep((until - now).min(std::time::Duration::from_millis(50))).await;
    }
}

/// What the BMC's series says about a burn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChassisVerdict {
    /// Reasons that fail the node.
    pub failures: Vec<String>,
    /// Things to look at that do not fail it.
    pub warnings: Vec<String>,
    /// `{samples, max_inlet_c, inlet_limit_c, peak_power_w,
    /// expected_min_power_w, warnings}`.
    pub metrics: Value,
}

/// Judges the BMC's series of one burn against the profile. `loaded` says
/// whether the burn held the GPUs at full load throughout (gpu_burn; a DCGM
/// diag alternates plugins, so its power says little). `error` is why
/// sampling stopped, if it did.
pub fn judge(
    samples: &[ChassisSample],
    error: Option<&str>,
    profile: &HardwareProfile,
    loaded: bool,
) -> ChassisVerdict {
    let mut v = ChassisVerdict::default();
    let limit = profile.burnin.max_inlet_c;
    let max_inlet = samples.iter().filter_map(|s| s.inlet_c).reduce(f64::max);
    let peak_power = samples.iter().filter_map(|s| s.power_w).reduce(f64::max);
    let expected =
        f64::from(profile.gpu.count) * f64::from(profile.gpu.power_limit_w) * MIN_LOAD_POWER_SHARE;
    if let Some(e) = error {
        v.warnings.push(format!(
            "BMC: chassis sensors could not be read during the burn: {e}"
        ));
    }
    match max_inlet {
        Some(t) if t > limit => {
            let at = samples
                .iter()
                .find(|s| s.inlet_c == Some(t))
                .map_or(0.0, |s| s.t_s);
            v.failures.push(format!(
                "BMC inlet temperature {t} C at {at:.0} s into the burn, above the {limit} C \
                 limit: the node was cooled out of spec, fix the aisle's cooling and burn in again"
            ));
        }
        Some(_) => {}
        None if !samples.is_empty() => v
            .warnings
            .push("BMC: no inlet (intake) temperature sensor in the chassis".to_owned()),
        None => {}
    }
    // The first sample is taken as the burn starts, before the GPUs ramp
    // up: the peak is the reading under load.
    match peak_power {
        Some(p) if loaded && samples.len() > 1 && p < expected => v.warnings.push(format!(
            "BMC: chassis power peaked at {p:.0} W under load, under {expected:.0} W (half of \
             the GPUs' {} W power limits): a power cap, a misreading BMC, or GPUs not loaded",
            profile.gpu.count * profile.gpu.power_limit_w
        )),
        None if !samples.is_empty() => v.warnings.push("BMC: no chassis power reading".to_owned()),
        _ => {}
    }
    v.metrics = json!({
        "samples": samples.iter().map(ChassisSample::to_json).collect::<Vec<_>>(),
        "max_inlet_c": max_inlet,
        "inlet_limit_c": limit,
        "peak_power_w": peak_power,
        "expected_min_power_w": loaded.then_some(expected),
        "warnings": v.warnings,
    });
    v
}

/// The series as CSV (`t_s,power_w,inlet_c`), for the run folder.
pub fn csv(samples: &[ChassisSample]) -> String {
    let mut out = String::from("t_s,power_w,inlet_c\n");
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for s in samples {
        out.push_str(&format!(
            "{:.1},{},{}\n",
            s.t_s,
            cell(s.power_w),
            cell(s.inlet_c)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> HardwareProfile {
        crate::profiles::Catalog::builtin().unwrap().hardware["hgx-h100-80gb-8x"]
            .profile
            .clone()
    }

    fn s(t_s: f64, power_w: f64, inlet_c: f64) -> ChassisSample {
        ChassisSample {
            t_s,
            power_w: Some(power_w),
            inlet_c: Some(inlet_c),
        }
    }

    #[test]
    fn a_hot_inlet_fails_and_names_the_reading() {
        let p = h100();
        assert_eq!(p.burnin.max_inlet_c, 35.0);
        let ok = judge(
            &[s(0.0, 1500.0, 24.0), s(10.0, 7100.0, 25.0)],
            None,
            &p,
            true,
        );
        assert!(ok.failures.is_empty() && ok.warnings.is_empty(), "{ok:?}");
        assert_eq!(ok.metrics["max_inlet_c"], 25.0);
        let hot = judge(
            &[s(0.0, 1500.0, 36.0), s(10.0, 7100.0, 41.0)],
            None,
            &p,
            true,
        );
        assert_eq!(hot.failures.len(), 1);
        assert!(
            hot.failures[0].starts_with(
                "BMC inlet temperature 41 C at 10 s into the burn, above the 35 C limit"
            ),
            "{hot:?}"
        );
    }

    #[test]
    fn low_power_under_load_and_an_unreadable_bmc_only_warn() {
        let p = h100();
        let low = judge(
            &[s(0.0, 1500.0, 24.0), s(10.0, 2000.0, 24.0)],
            None,
            &p,
            true,
        );
        assert!(low.failures.is_empty());
        assert!(
            low.warnings[0].contains("peaked at 2000 W under load, under 2800 W"),
            "{low:?}"
        );
        // A DCGM diag is not a steady load: no expectation.
        let dcgm = judge(
            &[s(0.0, 1500.0, 24.0), s(10.0, 2000.0, 24.0)],
            None,
            &p,
            false,
        );
        assert!(dcgm.warnings.is_empty(), "{dcgm:?}");
        let broken = judge(&[], Some("connection refused"), &p, true);
        assert!(broken.failures.is_empty());
        assert!(broken.warnings[0].contains("connection refused"));
        assert_eq!(
            csv(&[s(0.5, 1500.0, 24.0)]),
            "t_s,power_w,inlet_c\n0.5,1500,24\n"
        );
    }
}
