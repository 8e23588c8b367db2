//! Acceptance stages: burn-in and NCCL bandwidth, as plain async functions
//! over [`Remote`], each unit of work a journaled step
//! ([`crate::pipeline::step::Steps::run`]). Every raw tool output is kept
//! in the run folder and listed in its step's artifacts; every verdict
//! comes from the same judges `kiln judge` uses ([`crate::judge`]).
//!
//! - [`burnin`]: per node, a health check, the burn (gpu_burn or `dcgmi
//!   diag`) with GPU telemetry and the BMC's chassis power and inlet
//!   temperature ([`chassis`]) sampled while it runs, and an Xid check.
//! - [`stragglers`]: per rack, GPUs that pass every floor but fall behind
//!   the rack median.
//! - [`nccl`]: per node, nvbandwidth (copy engines), ib_write_bw (each
//!   HCA in GPUDirect loopback) and nccl-tests collectives; across nodes, pairs and
//!   the whole rack with `NCCL_ALGO=RING`, and [`nccl::bisect`] to find the
//!   node (or the link between groups) that holds a rack run back.
//!
//! Stages take what they need of the hardware profile as the profile
//! itself; limits come from it through [`limits`].

pub mod burnin;
pub mod chassis;
pub mod limits;
pub mod nccl;

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::judge::{Judgement, Verdict};
use crate::ssh::{ExecOptions, Input, Output, Remote, RemoteCommand, Sink, Stream};

pub use burnin::{BurninOptions, BurninReport, burnin};
pub use chassis::BmcSensors;
pub use nccl::{
    Bisection, NcclOptions, RackNccl, bisect, nccl_node, nccl_pairs, nccl_rack, run_multi_node,
};

/// Raw outputs larger than this are judged on their last
/// [`JUDGED_TAIL_BYTES`] (a burn's progress lines can run long; its
/// verdict is at the end).
const JUDGED_MAX_BYTES: u64 = 64 << 20;
/// See [`JUDGED_MAX_BYTES`].
const JUDGED_TAIL_BYTES: u64 = 16 << 20;

/// One node as a stage sees it: where its commands run, where its raw
/// outputs go and, when the caller has one, its BMC.
#[derive(Clone)]
pub struct NodeCtx {
    /// How to run commands on the node.
    pub remote: Remote,
    /// The run folder; outputs go to `RUN/NODE/STAGE/FILE`, and artifacts
    /// are listed relative to it.
    pub run_dir: PathBuf,
    /// Run `dmesg` through sudo (kernels with `kernel.dmesg_restrict=1`,
    /// the Ubuntu default, refuse it to other users).
    pub sudo_dmesg: bool,
    /// How much output to keep in memory and how to answer sudo.
    pub exec: ExecOptions,
    /// The node's BMC, read for chassis power and inlet temperature during
    /// the burn; without one (`kiln judge`, a node without Redfish) the
    /// burn-in judges the GPUs alone.
    pub bmc: Option<BmcSensors>,
}

impl NodeCtx {
    /// A node reached through `remote`, its outputs under `run_dir`.
    pub fn new(remote: Remote, run_dir: impl Into<PathBuf>) -> NodeCtx {
        NodeCtx {
            remote,
            run_dir: run_dir.into(),
            sudo_dmesg: false,
            exec: ExecOptions::default(),
            bmc: None,
        }
    }

    /// The acceptance view of a node in a run: its remote, the run folder
    /// and its BMC (the layout shared with the run's own context).
    pub fn for_run(cx: &crate::pipeline::node::NodeCx) -> NodeCtx {
        NodeCtx::new(cx.remote.clone(), cx.run_dir.clone()).with_bmc(BmcSensors::shared(
            std::sync::Arc::clone(cx.bmc()),
            cx.node.bmc.system.clone(),
            cx.layout_cell(),
        ))
    }

    /// The same node, its chassis sensors read through `bmc`.
    pub fn with_bmc(mut self, bmc: BmcSensors) -> NodeCtx {
        self.bmc = Some(bmc);
        self
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        self.remote.node()
    }
}

/// Writes everything a command prints, stdout and stderr in arrival
/// order, to one file (as `2>&1` would).
struct FileSink {
    file: std::io::BufWriter<std::fs::File>,
    error: Option<std::io::Error>,
}

impl Sink for FileSink {
    fn output(&mut self, _: Stream, data: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.file.write_all(data)
        {
            self.error = Some(e);
        }
    }
}

/// A command's raw output, kept in the run folder.
pub(crate) struct Captured {
    /// How the command ended.
    pub output: Output,
    /// What it printed (stdout and stderr interleaved), or its last
    /// [`JUDGED_TAIL_BYTES`] when it printed more than [`JUDGED_MAX_BYTES`].
    pub text: String,
    /// The file, relative to the run folder.
    pub artifact: String,
}

/// Runs `script` on the node under `timeout`, saving what it prints to
/// `RUN/rel`. The command's own failure is not an error here: judges read
/// crashed runs too.
pub(crate) async fn capture(
    ctx: &NodeCtx,
    rel: &str,
    script: String,
    sudo: bool,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    use anyhow::Context as _;
    let path = ctx.run_dir.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut sink = FileSink {
        file: std::io::BufWriter::new(file),
        error: None,
    };
    let cmd = RemoteCommand::shell(script)
        .sudo(sudo)
        .timeout(Some(timeout));
    let output = ctx
        .remote
        .run(&cmd, Input::None, &mut sink, &ctx.exec)
        .await
        .with_context(|| format!("{}: running `{}`", ctx.node(), cmd.script))?;
    if let Some(e) = sink.error {
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    sink.file
        .flush()
        .with_context(|| format!("writing {}", path.display()))?;
    let text = read_judged(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Captured {
        output,
        text,
        artifact: rel.to_owned(),
    })
}

/// A saved output, or its tail when it is very large.
fn read_judged(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > JUDGED_MAX_BYTES {
        file.seek(SeekFrom::Start(len - JUDGED_TAIL_BYTES))?;
    }
    let mut bytes = Vec::new();
    file.take(JUDGED_MAX_BYTES).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `RUN/NODE/STAGE/FILE`, relative to the run folder. Node names are host
/// names (the inventory checks them), so they are safe path segments.
pub(crate) fn artifact_path(node: &str, stage: &str, file: &str) -> String {
    format!("{node}/{stage}/{file}")
}

/// The judgement as step metrics: `{"judgement": {kind, verdict, reasons}}`
/// plus the judge's own metrics under `metrics`.
pub(crate) fn judgement_metrics<M: serde::Serialize>(j: &Judgement<M>) -> serde_json::Value {
    serde_json::json!({
        "judgement": {"kind": j.kind, "verdict": j.verdict, "reasons": j.reasons},
        "metrics": j.metrics,
    })
}

/// A judgement as a step outcome: pass is done, fail is failed, unknown is
/// unverified (a node is not accepted on output nobody could read).
pub(crate) fn outcome_of<M: serde::Serialize>(
    j: &Judgement<M>,
    detail: impl Into<String>,
) -> crate::pipeline::step::Outcome {
    use crate::pipeline::step::Outcome;
    let detail = detail.into();
    let mut o = match j.verdict {
        Verdict::Pass => Outcome::done(detail),
        Verdict::Fail | Verdict::Unknown => {
            let mut o = if j.verdict == Verdict::Fail {
                Outcome::failed(j.reasons.first().cloned().unwrap_or_default())
            } else {
                Outcome::unverified(j.reasons.first().cloned().unwrap_or_default())
            };
            o.reasons = j.reasons.clone();
            o
        }
    };
    o.metrics = judgement_metrics(j);
    o
}

/// The median of `values` (NaNs left out); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// GPUs that fall more than `max_below_pct` percent below the best GPU of
/// their node: one reason each. The tolerance is the profile's
/// `burnin.max_spread_pct`, the same rule as gpu-fryer's
/// `--tflops-tolerance` (huggingface/gpu-fryer README: a GPU more than the
/// tolerance below the fastest is reported as slow). Entries are
/// `(gpu index, gflops)`.
pub fn node_spread(gflops: &[(u32, f64)], max_below_pct: f64) -> Vec<String> {
    let best = gflops.iter().map(|(_, g)| *g).fold(0.0, f64::max);
    if best <= 0.0 {
        return Vec::new();
    }
    let floor = best * (1.0 - max_below_pct / 100.0);
    gflops
        .iter()
        .filter(|(_, g)| *g < floor)
        .map(|(gpu, g)| {
            format!(
                "GPU {gpu}: {g:.0} Gflop/s, {:.0}% below the best GPU of this node ({best:.0}); \
                 allowed {max_below_pct}%: a slow GPU (clocks, power, cooling)",
                (1.0 - g / best) * 100.0
            )
        })
        .collect()
}

/// Burn-in throughput of one node: its name and `(gpu, gflops)` per GPU.
pub type NodeGflops = (String, Vec<(u32, f64)>);

/// Stragglers of a rack: GPUs more than `max_below_pct` percent below the
/// median GPU of the whole rack, grouped per node as `(node, reasons)`.
///
/// A GPU like that passes its node's checks when all of its node's GPUs
/// are equally slow (a power cap, a BIOS setting, a hot aisle), yet a
/// synchronous job runs at the pace of its slowest rank, so one such node
/// slows every job it joins. The pipeline passes the profile's
/// `burnin.max_spread_pct` (the same tolerance as within a node); with
/// fewer than [`MIN_RACK_GPUS`] GPUs the median means little and nothing is
/// flagged.
pub fn stragglers(rack: &[NodeGflops], max_below_pct: f64) -> Vec<(String, Vec<String>)> {
    let all: Vec<f64> = rack
        .iter()
        .flat_map(|(_, g)| g.iter().map(|(_, v)| *v))
        .collect();
    if all.len() < MIN_RACK_GPUS {
        return Vec::new();
    }
    let Some(med) = median(&all) else {
        return Vec::new();
    };
    let floor = med * (1.0 - max_below_pct / 100.0);
    rack.iter()
        .filter_map(|(node, gpus)| {
            let slow: Vec<String> = gpus
                .iter()
                .filter(|(_, g)| *g < floor)
                .map(|(gpu, g)| {
                    format!(
                        "GPU {gpu}: {g:.0} Gflop/s, {:.0}% below the rack median ({med:.0}); \
                         allowed {max_below_pct}%: a straggler slows every job it joins",
                        (1.0 - g / med) * 100.0
                    )
                })
                .collect();
            (!slow.is_empty()).then(|| (node.clone(), slow))
        })
        .collect()
}

/// Fewest GPUs in a rack for [`stragglers`] to judge against its median
/// (two 8-GPU nodes).
pub const MIN_RACK_GPUS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let node = [(0, 100.0), (1, 95.0), (2, 60.0)];
        let r = node_spread(&node, 10.0);
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("GPU 2: 60 Gflop/s, 40% below the best GPU of this node (100)"));
    }

    #[test]
    fn a_uniformly_slow_node_is_a_straggler() {
        let fast: Vec<(u32, f64)> = (0..8).map(|g| (g, 45_000.0)).collect();
        let slow: Vec<(u32, f64)> = (0..8).map(|g| (g, 36_000.0)).collect();
        // Within the slow node the spread is 0: only the rack sees it.
        assert!(node_spread(&slow, 10.0).is_empty());
        let rack = vec![
            ("n1".to_owned(), fast.clone()),
            ("n2".to_owned(), slow),
            ("n3".to_owned(), fast),
        ];
        let s = stragglers(&rack, 10.0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "n2");
        assert_eq!(s[0].1.len(), 8);
        assert!(s[0].1[0].contains("20% below the rack median (45000)"));
        // Too few GPUs to have a meaningful median.
        assert!(stragglers(&rack[..1], 10.0).is_empty());
    }
}
