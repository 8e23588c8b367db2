//! The `burnin` stage of one node: steps `health`, `nvlink`, `burn`, `xid`.
//!
//! - `health`: `nvidia-smi -q -x` before any load: GPU count and model,
//!   ECC, row remapping, PCIe (idle, so a slow link only warns).
//! - `nvlink`: `nvidia-smi nvlink -s`: every link up at the profile's speed.
//! - `burn`: gpu_burn (`-tc`) or `dcgmi diag -r LEVEL -j`, per the
//!   profile, for its duration; meanwhile GPU telemetry (temperature,
//!   power, SM clock, clock event reasons) is sampled with repeated
//!   `nvidia-smi --query-gpu` calls, and one `nvidia-smi -q -x` is taken
//!   under load and judged as such (PCIe at full width and generation,
//!   temperature limit, no thermal or power-brake slowdown). gpu_burn's
//!   per-GPU throughput is held against the best GPU of the node. When the
//!   node's BMC is at hand, its chassis power and inlet temperature are
//!   sampled as well ([`super::chassis`]): an inlet above the profile's
//!   `max_inlet_c` fails the burn, low power under load is a warning.
//! - `xid`: `dmesg` after the load, against the profile's fatal Xids.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{NodeCtx, artifact_path, capture, judgement_metrics, limits, node_spread, outcome_of};
use crate::judge::{
    Judgement, Verdict, judge_dcgm, judge_dmesg, judge_gpu_burn, judge_nvidia_smi, judge_nvlink,
};
use crate::pipeline::record::{StepMetrics, step_metrics};
use crate::pipeline::step::{Outcome, Steps, Stop};
use crate::profiles::HardwareProfile;
use crate::profiles::hardware::BurninTool;

const STAGE: &str = "burnin";

/// Fields sampled during the burn, in this order.
const TELEMETRY_QUERY: &str = "index,temperature.gpu,power.draw,clocks.sm";

/// How a burn-in runs beyond what the profile says.
#[derive(Clone, Debug)]
pub struct BurninOptions {
    /// The gpu_burn command line before its duration. gpu_burn reads
    /// `compare.fatbin` (`compare.ptx` before May 2026) from its working
    /// folder, so a real node needs e.g.
    /// `cd /opt/gpu-burn && ./gpu_burn -tc`. Operator configuration, not
    /// inventory data: it is not quoted.
    pub gpu_burn: String,
    /// Burn duration in the tool's seconds (the profile's by default).
    pub duration_s: u64,
    /// Time between telemetry samples.
    pub sample_every: Duration,
    /// Time between BMC readings (three Redfish GETs each; BMCs refresh
    /// their sensors every few seconds and fall over when polled hard).
    pub bmc_sample_every: Duration,
    /// When to take the `nvidia-smi -q -x` snapshot under load, after the
    /// burn starts (half-way by default: past warm-up, clocks settled).
    pub snapshot_after: Duration,
    /// Deadline of each short step (health, nvlink, xid).
    pub short_deadline: Duration,
    /// Time allowed beyond the duration for the burn step (tool start-up,
    /// DCGM's own test overheads: a level-3 diag alone runs ~15 min).
    pub burn_slack: Duration,
}

impl BurninOptions {
    /// The profile's duration, a GPU sample every 10 s and a BMC reading
    /// every 15 s, the snapshot half-way.
    pub fn for_profile(profile: &HardwareProfile) -> BurninOptions {
        BurninOptions {
            gpu_burn: "gpu_burn -tc".to_owned(),
            duration_s: profile.burnin.duration_s,
            sample_every: Duration::from_secs(10),
            bmc_sample_every: Duration::from_secs(15),
            snapshot_after: Duration::from_secs(profile.burnin.duration_s / 2),
            short_deadline: Duration::from_secs(120),
            burn_slack: Duration::from_secs(30 * 60),
        }
    }
}

/// One GPU's burn-in throughput, as the `burn` step keeps it in its
/// metrics under `gflops_by_gpu` (`[{"gpu": 0, "gflops": 1234.5}, ...]`)
/// and the rack comparison reads it back, from this run or a resumed one.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuGflops {
    /// The GPU's index on the node.
    pub gpu: u32,
    /// Its throughput, in GFLOP/s.
    pub gflops: f64,
}

impl GpuGflops {
    /// The metrics key.
    pub const KEY: &'static str = "gflops_by_gpu";

    /// Writes `gflops` (GPU index, GFLOP/s) into a step's metrics.
    pub fn put_metrics(metrics: &mut Value, gflops: &[(u32, f64)]) {
        let list: Vec<GpuGflops> = gflops
            .iter()
            .map(|&(gpu, gflops)| GpuGflops { gpu, gflops })
            .collect();
        metrics[Self::KEY] = serde_json::to_value(list).unwrap_or(Value::Null);
    }

    /// The per-GPU numbers a step's metrics hold, if it has them; entries
    /// that are not numbers (a non-finite value is kept as `null`) are left
    /// out.
    pub fn from_metrics(metrics: &Value) -> Option<Vec<GpuGflops>> {
        let list = metrics.get(Self::KEY)?.as_array()?;
        Some(
            list.iter()
                .filter_map(|e| GpuGflops::deserialize(e).ok())
                .collect(),
        )
    }
}

/// What a burn-in leaves for the rack-level checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BurninReport {
    /// The outcome of each step, in order.
    pub outcomes: Vec<Outcome>,
    /// gpu_burn throughput per GPU, `(nvidia-smi index, Gflop/s)`; empty
    /// for DCGM burns (the diag reports pass/fail, not a rate).
    pub gflops: Vec<(u32, f64)>,
}

/// Runs the burn-in of one node. Stops at the first failed step
/// ([`Stop::Failed`], the outcome recorded); a resumed run skips finished
/// steps and reads the gflops back from the `burn` step's metrics.
pub async fn burnin(
    ctx: &NodeCtx,
    steps: &mut Steps,
    profile: &HardwareProfile,
    opts: &BurninOptions,
) -> Result<BurninReport, Stop> {
    let mut report = BurninReport::default();
    let node = ctx.node().to_owned();

    let o = steps
        .run("health", opts.short_deadline, || async {
            let rel = artifact_path(&node, STAGE, "nvidia-smi-q-before.xml");
            let c = capture(
                ctx,
                &rel,
                "nvidia-smi --query --xml-format".into(),
                false,
                opts.short_deadline,
            )
            .await?;
            let j = match judge_nvidia_smi(&c.text, &limits::nvidia_smi(Some(profile), false)) {
                Ok(j) => j,
                Err(e) => return Ok(unreadable(&c, e).with_artifact(rel)),
            };
            let gpus = j.metrics.gpus;
            Ok(outcome_of(&j, format!("{gpus} GPUs healthy before load")).with_artifact(rel))
        })
        .await?;
    report.outcomes.push(o);

    if profile.gpu.nvlink.links_per_gpu > 0 {
        let o = steps
            .run("nvlink", opts.short_deadline, || async {
                let rel = artifact_path(&node, STAGE, "nvidia-smi-nvlink-s.txt");
                let c = capture(
                    ctx,
                    &rel,
                    "nvidia-smi nvlink -s".into(),
                    false,
                    opts.short_deadline,
                )
                .await?;
                // Empty output is a verdict (no NVLink) only from a tool that ran.
                if !c.output.success() && c.text.trim().is_empty() {
                    return Ok(Outcome::unverified(format!(
                        "nvidia-smi nvlink -s {} with no output",
                        c.output.outcome()
                    ))
                    .with_artifact(rel));
                }
                let j = match judge_nvlink(&c.text, &limits::nvlink(Some(profile))) {
                    Ok(j) => j,
                    Err(e) => return Ok(unreadable(&c, e).with_artifact(rel)),
                };
                Ok(outcome_of(&j, "every NVLink up at full speed").with_artifact(rel))
            })
            .await?;
        report.outcomes.push(o);
    }

    let burn_deadline = Duration::from_secs(opts.duration_s) + opts.burn_slack;
    let o = steps
        .run("burn", burn_deadline, || {
            burn(ctx, profile, opts, burn_deadline)
        })
        .await?;
    report.gflops = GpuGflops::from_metrics(&o.metrics)
        .unwrap_or_default()
        .into_iter()
        .map(|g| (g.gpu, g.gflops))
        .collect();
    report.outcomes.push(o);

    let o = steps
        .run("xid", opts.short_deadline, || async {
            let rel = artifact_path(&node, STAGE, "dmesg.txt");
            // The whole kernel log since boot: an Xid logged before the
            // burn (at driver load) fails the node as well.
            let c = capture(
                ctx,
                &rel,
                "dmesg".into(),
                ctx.sudo_dmesg,
                opts.short_deadline,
            )
            .await?;
            if !c.output.success() && c.text.trim().is_empty() {
                return Ok(Outcome::unverified(format!(
                    "dmesg {}: cannot read the kernel log (set sudo for dmesg?)",
                    c.output.outcome()
                ))
                .with_artifact(rel));
            }
            let j = match judge_dmesg(&c.text, &profile.xid.fail) {
                Ok(j) => j,
                // An empty or unrecognised log has no Xid in it; the judge
                // refuses it only because it cannot tell it is a kernel log.
                Err(_) if c.output.success() => {
                    return Ok(Outcome::done("no kernel log lines").with_artifact(rel));
                }
                Err(e) => return Ok(unreadable(&c, e).with_artifact(rel)),
            };
            Ok(outcome_of(&j, "no fatal Xid in the kernel log").with_artifact(rel))
        })
        .await?;
    report.outcomes.push(o);
    Ok(report)
}

/// The outcome of a tool output no judge could read.
fn unreadable(c: &super::Captured, e: crate::judge::ParseError) -> Outcome {
    Outcome::unverified(format!(
        "cannot judge the output ({}): {e}",
        c.output.outcome()
    ))
}

/// The `burn` step: the tool, with telemetry and a snapshot alongside.
async fn burn(
    ctx: &NodeCtx,
    profile: &HardwareProfile,
    opts: &BurninOptions,
    deadline: Duration,
) -> anyhow::Result<Outcome> {
    let node = ctx.node();
    let (script, file) = match profile.burnin.tool {
        BurninTool::GpuBurn => (
            format!("{} {}", opts.gpu_burn, opts.duration_s),
            "gpu_burn.log",
        ),
        // `-j`: JSON, the format the judge reads best; the level decides
        // which plugins run (DCGM docs, dcgmi diag: 1 short, 2 medium,
        // 3 long, 4 xlong).
        BurninTool::Dcgm => (
            format!("dcgmi diag -r {} -j", profile.dcgm.level),
            "dcgmi-diag.json",
        ),
    };
    let rel = artifact_path(node, STAGE, file);
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let tool = async {
        let c = capture(ctx, &rel, script, false, deadline).await;
        done.store(true, Ordering::SeqCst);
        c
    };
    let sampler = sample(ctx, opts, &done, started);
    let snapshot = async {
        // Wakes early when the tool ends (a simulated or short burn).
        super::chassis::sleep_unless_done(opts.snapshot_after, &done).await;
        if done.load(Ordering::SeqCst) {
            return None;
        }
        let rel = artifact_path(node, STAGE, "nvidia-smi-q-load.xml");
        Some(
            capture(
                ctx,
                &rel,
                "nvidia-smi --query --xml-format".into(),
                false,
                opts.short_deadline,
            )
            .await
            .map(|c| (c, rel)),
        )
    };
    let bmc = async {
        match &ctx.bmc {
            Some(b) => Some(super::chassis::sample(b, opts.bmc_sample_every, &done, started).await),
            None => None,
        }
    };
    let (tool, samples, snapshot, bmc) = tokio::join!(tool, sampler, snapshot, bmc);
    let tool = tool?;

    let mut failures: Vec<String> = Vec::new();
    let mut inconclusive: Vec<String> = Vec::new();
    let mut artifacts = vec![rel.clone()];
    let mut metrics = json!({});

    // gpu-burn reports each GPU's throughput; DCGM's diag does not.
    let mut gflops: Vec<(u32, f64)> = Vec::new();
    let judged = match profile.burnin.tool {
        BurninTool::GpuBurn => judge_gpu_burn(&tool.text).map(|j| {
            gflops = j
                .metrics
                .per_gpu
                .iter()
                .filter_map(|g| Some((u32::try_from(g.gpu).ok()?, g.last_gflops?)))
                .collect();
            j.into_json()
        }),
        BurninTool::Dcgm => judge_dcgm(&tool.text).map(Judgement::into_json),
    };
    match &judged {
        Ok(j) => {
            match j.verdict {
                Verdict::Fail => failures.extend(j.reasons.iter().cloned()),
                Verdict::Unknown => inconclusive.extend(j.reasons.iter().cloned()),
                Verdict::Pass => {}
            }
            metrics["tool"] = judgement_metrics(j);
        }
        Err(e) => inconclusive.push(format!(
            "cannot judge the burn output ({}): {e}",
            tool.output.outcome()
        )),
    }
    if judged.is_ok() && !tool.output.success() && failures.is_empty() {
        failures.push(format!("the burn tool {}", tool.output.outcome()));
    }
    // A slow GPU is often the effect of heat or power named below; it
    // comes last so the first reason is the cause.
    let spread = node_spread(&gflops, profile.burnin.max_spread_pct);

    // Telemetry: the hottest reading of each GPU against the limit.
    let (telemetry, samples_rel) = match samples {
        Ok(s) => s,
        Err(e) => {
            inconclusive.push(format!("GPU telemetry could not be sampled: {e:#}"));
            (Vec::new(), None)
        }
    };
    artifacts.extend(samples_rel);
    let max_temp = f64::from(profile.burnin.max_temp_c);
    let mut hottest: std::collections::BTreeMap<u64, f64> = Default::default();
    for s in &telemetry {
        if let GpuKey::Index(g) = s.gpu {
            let e = hottest.entry(g).or_insert(s.temp_c);
            *e = e.max(s.temp_c);
        }
    }
    for (gpu, t) in &hottest {
        // The profile's limit sits below the GPU's max operating
        // temperature (nvidia-smi -q "GPU Max Operating Temp"; slowdown
        // follows above it).
        if *t > max_temp {
            failures.push(format!(
                "GPU {gpu}: reached {t} C under load, above the {max_temp} C limit: check \
                 cooling and airflow"
            ));
        }
    }

    match snapshot {
        Some(Ok((c, snap_rel))) => {
            artifacts.push(snap_rel);
            match judge_nvidia_smi(&c.text, &limits::nvidia_smi(Some(profile), true)) {
                Ok(j) => {
                    if j.verdict == Verdict::Fail {
                        // The temperature is already reported from the
                        // telemetry when it was sampled.
                        failures.extend(
                            j.reasons
                                .iter()
                                .filter(|r| hottest.is_empty() || !r.contains("C limit"))
                                .cloned(),
                        );
                    }
                    metrics["under_load"] = judgement_metrics(&j);
                }
                Err(e) => inconclusive.push(format!("cannot judge nvidia-smi under load: {e}")),
            }
        }
        Some(Err(e)) => inconclusive.push(format!("nvidia-smi under load: {e:#}")),
        None => {}
    }

    failures.extend(spread);
    let mut warnings = Vec::new();
    if let Some((series, error)) = bmc {
        let loaded = profile.burnin.tool == BurninTool::GpuBurn;
        let v = super::chassis::judge(&series, error.as_deref(), profile, loaded);
        let rel = artifact_path(node, STAGE, "bmc.csv");
        let path = ctx.run_dir.join(&rel);
        match std::fs::write(&path, super::chassis::csv(&series)) {
            Ok(()) => artifacts.push(rel),
            Err(e) => warnings.push(format!("cannot write {}: {e}", path.display())),
        }
        // The air the node was fed comes before what it did with it: a hot
        // inlet explains hot or slow GPUs, so it is the first reason.
        failures.splice(0..0, v.failures);
        for w in &v.warnings {
            tracing::warn!(node = %node, "{w}");
        }
        warnings.extend(v.warnings);
        metrics["bmc"] = v.metrics;
    }
    metrics["telemetry"] = BurnTelemetry { telemetry }.to_metrics()["telemetry"].take();
    metrics["gflops"] = json!(gflops.iter().map(|(_, g)| *g).collect::<Vec<_>>());
    GpuGflops::put_metrics(&mut metrics, &gflops);
    let detail = match profile.burnin.tool {
        BurninTool::GpuBurn => format!("gpu_burn {} s on {} GPUs", opts.duration_s, gflops.len()),
        BurninTool::Dcgm => format!("dcgmi diag -r {}", profile.dcgm.level),
    };
    let mut outcome = if let Some(first) = failures.first() {
        let mut o = Outcome::failed(first.clone());
        o.reasons = failures;
        o
    } else if let Some(first) = inconclusive.first() {
        let mut o = Outcome::unverified(first.clone());
        o.reasons = inconclusive;
        o
    } else if warnings.is_empty() {
        Outcome::done(detail)
    } else {
        Outcome::done(format!("{detail}; {}", warnings.join("; ")))
    };
    outcome.metrics = metrics;
    outcome.artifacts = artifacts;
    Ok(outcome)
}

step_metrics! {
    STAGE, "burn",
    /// The `burn` step's GPU telemetry, as the HTML report plots it.
    pub struct BurnTelemetry {
        /// The samples, in the order they were taken; empty when none were.
        pub telemetry: Vec<TelemetrySample>,
    }
}

/// One GPU's reading at one moment of the burn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    /// Seconds since the burn started, to a tenth.
    pub t_s: f64,
    /// Which GPU.
    pub gpu: GpuKey,
    /// Its temperature.
    pub temp_c: f64,
    /// Its power draw, when nvidia-smi gave one.
    #[serde(default)]
    pub power_w: Option<f64>,
    /// Its SM clock, when nvidia-smi gave one.
    #[serde(default)]
    pub sm_mhz: Option<f64>,
}

/// A GPU in telemetry: nvidia-smi's index, or a `GPU-…` UUID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GpuKey {
    /// nvidia-smi's index.
    Index(u64),
    /// A UUID.
    Uuid(String),
}

impl GpuKey {
    /// The key as the report labels it.
    pub fn label(&self) -> String {
        match self {
            GpuKey::Index(i) => i.to_string(),
            GpuKey::Uuid(u) => u.clone(),
        }
    }
}

/// Samples GPU telemetry until `done`, every `opts.sample_every`, each
/// sample a separate `nvidia-smi --query-gpu` call (`-lms` never ends on
/// its own). Returns the samples as `{t_s, gpu, temp_c, power_w, sm_mhz}`
/// and the CSV they were kept in.
async fn sample(
    ctx: &NodeCtx,
    opts: &BurninOptions,
    done: &AtomicBool,
    started: Instant,
) -> anyhow::Result<(Vec<TelemetrySample>, Option<String>)> {
    use anyhow::Context as _;
    let node = ctx.node();
    let rel = artifact_path(node, STAGE, "telemetry.csv");
    let mut csv = String::from("t_s,gpu,temp_c,power_w,sm_mhz\n");
    let mut out = Vec::new();
    let cmd = format!("nvidia-smi --query-gpu={TELEMETRY_QUERY} --format=csv,noheader,nounits");
    let scratch = artifact_path(node, STAGE, "telemetry-last.txt");
    loop {
        super::chassis::sleep_unless_done(opts.sample_every, done).await;
        if done.load(Ordering::SeqCst) {
            break;
        }
        let t_s = started.elapsed().as_secs_f64();
        let c = capture(ctx, &scratch, cmd.clone(), false, opts.short_deadline).await?;
        for line in c.text.lines() {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let [gpu, temp, power, sm] = f.as_slice() else {
                continue;
            };
            let (Ok(gpu), Ok(temp)) = (gpu.parse::<u64>(), temp.parse::<f64>()) else {
                continue;
            };
            let power = power.parse::<f64>().ok();
            let sm = sm.parse::<f64>().ok();
            csv.push_str(&format!(
                "{t_s:.1},{gpu},{temp},{},{}\n",
                power.map_or(String::new(), |p| p.to_string()),
                sm.map_or(String::new(), |s| s.to_string())
            ));
            out.push(TelemetrySample {
                t_s: (t_s * 10.0).round() / 10.0,
                gpu: GpuKey::Index(gpu),
                temp_c: temp,
                power_w: power,
                sm_mhz: sm,
            });
        }
    }
    let _ = std::fs::remove_file(ctx.run_dir.join(&scratch));
    let path = ctx.run_dir.join(&rel);
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    Ok((out, Some(rel)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The typed numbers are written as the untyped ones were, so journals
    /// written before still resume.
    #[test]
    fn gflops_by_gpu_keeps_its_journal_shape() {
        let gflops = [(0u32, 1234.5f64), (3, 99.0)];
        let mut typed = json!({});
        GpuGflops::put_metrics(&mut typed, &gflops);
        let mut before = json!({});
        before["gflops_by_gpu"] = json!(
            gflops
                .iter()
                .map(|(gpu, g)| json!({"gpu": gpu, "gflops": g}))
                .collect::<Vec<_>>()
        );
        assert_eq!(typed.to_string(), before.to_string());
        let back = GpuGflops::from_metrics(&before).unwrap();
        assert_eq!(
            back[1],
            GpuGflops {
                gpu: 3,
                gflops: 99.0
            }
        );
        assert_eq!(GpuGflops::from_metrics(&json!({})), None);
    }
}
