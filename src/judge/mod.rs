//! Parsers and verdicts for captured GPU and fabric test outputs.
//!
//! Each judge is a pure function from the text a tool printed to a
//! [`Judgement`]: a verdict, the reasons a technician needs to act on it, and
//! the numbers it was based on. Judges know nothing about hardware profiles:
//! the caller passes any limits (such as a bus-bandwidth floor) as plain
//! numbers, so a judge can also run "integrity only" with no limits at all.
//!
//! Text that cannot be judged (empty, a fragment, another tool's output) is a
//! [`ParseError`], never a pass: an acceptance gate must not wave through
//! output it did not understand.

mod aznhc;
mod dcgm;
mod dmesg;
mod gpu_burn;
mod gpu_fryer;
mod ib_write_bw;
mod nccl;
mod nvbandwidth;
mod nvidia_smi;
mod nvlink;
mod topo;
mod xml;

pub use aznhc::judge_aznhc;
pub use dcgm::{DcgmMetrics, DcgmTest, judge_dcgm};
pub use dmesg::{DEFAULT_FATAL_XIDS, judge_dmesg};
pub use gpu_burn::{GpuBurnGpu, GpuBurnMetrics, judge_gpu_burn};
pub use gpu_fryer::{DEFAULT_MAX_SPREAD_PCT, judge_gpu_fryer};
pub use ib_write_bw::{IbWriteBwMetrics, IbWriteBwRow, judge_ib_write_bw};
pub use nccl::{NcclMetrics, NcclOutOfBounds, NcclRow, judge_nccl};
pub use nvbandwidth::{NvbandwidthFloors, NvbandwidthMetrics, NvbandwidthTest, judge_nvbandwidth};
pub use nvidia_smi::{
    GpuReadings, LOAD_THRESHOLD_PCT, LoadState, NvidiaSmiLimits, NvidiaSmiMetrics, judge_nvidia_smi,
};
pub use nvlink::{NvlinkLimits, judge_nvlink};
pub use topo::{TopoLimits, judge_topo};

use serde::Serialize;

/// The outcome of judging one tool output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The output shows a complete run with no failure.
    Pass,
    /// The output shows a failure; `reasons` says which.
    Fail,
    /// The output was understood but cannot settle the question, e.g. it
    /// stops before the tool's own final check (a truncated log).
    Unknown,
}

/// A verdict with its reasons and the metrics it was based on.
///
/// `M` is the judge's metrics type: a typed struct for judges that have one
/// (see [`NvidiaSmiMetrics`]), JSON for the rest. Either serializes to the
/// same JSON, so `kiln judge --json` and journal metrics do not depend on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement<M = serde_json::Value> {
    /// Which tool's output was judged, e.g. `"nccl-tests"` or `"gpu-burn"`.
    pub kind: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// Why the verdict is not a pass, one technician-readable sentence each;
    /// empty for a pass.
    pub reasons: Vec<String>,
    /// What was parsed (shape documented on each judge).
    pub metrics: M,
}

impl<M: Serialize> Judgement<M> {
    /// The same judgement with its metrics as JSON, for callers that hold
    /// judgements of several judges together.
    pub fn into_json(self) -> Judgement {
        Judgement {
            kind: self.kind,
            verdict: self.verdict,
            reasons: self.reasons,
            // Metrics are plain data (numbers, strings, lists): they always
            // serialize.
            metrics: serde_json::to_value(&self.metrics).unwrap_or_default(),
        }
    }
}

impl<M> Judgement<M> {
    /// Builds a judgement: `Fail` if any failure reason, else `Unknown` if
    /// any reason the run is inconclusive, else `Pass`.
    fn decide(
        kind: &'static str,
        failures: Vec<String>,
        inconclusive: Vec<String>,
        metrics: M,
    ) -> Self {
        let (verdict, reasons) = if !failures.is_empty() {
            (Verdict::Fail, failures)
        } else if !inconclusive.is_empty() {
            (Verdict::Unknown, inconclusive)
        } else {
            (Verdict::Pass, Vec::new())
        };
        Self {
            kind,
            verdict,
            reasons,
            metrics,
        }
    }
}

/// The output could not be judged at all: empty, a fragment, or another
/// tool's output. Callers report it as "cannot judge", not as a failure of
/// the hardware.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot judge this output: expected {expected}")]
pub struct ParseError {
    /// What the judge was looking for and did not find.
    pub expected: String,
}

/// Lines of captured output. Progress meters redraw with a bare `\r`, so a
/// carriage return ends a line just like `\n` does.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\r', '\n'])
}

/// A byte count as a technician reads it: `8 GiB`, `1.5 MiB`, `512 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (unit, name) in UNITS {
        if n >= unit {
            return if n.is_multiple_of(unit) {
                format!("{} {name}", n / unit)
            } else {
                format!("{:.1} {name}", n as f64 / unit as f64)
            };
        }
    }
    format!("{n} B")
}

/// The keys of a JSON object, in serialized order: what tests compare to
/// the keys journals and reports have always read.
#[cfg(test)]
fn json_keys(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(8_589_934_592), "8 GiB");
        assert_eq!(human_bytes(1_048_576), "1 MiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn carriage_returns_split_lines() {
        let lines: Vec<&str> = split_lines("a\rb\r\nc").collect();
        assert_eq!(lines, ["a", "b", "", "c"]);
    }

    #[test]
    fn verdict_serializes_lowercase() {
        let json = serde_json::to_string(&Verdict::Unknown).unwrap();
        assert_eq!(json, "\"unknown\"");
    }
}
