//! Judge for huggingface/gpu-fryer output: its final per-GPU summary
//! (`GPU #0:   4444 Gflops/s (min: ..., max: ..., dev: ...)`, a
//! temperature line, `Throttling HW: false, Thermal SW: false, Thermal HW:
//! false`) and its verdict line.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "gpu-fryer";

/// How far below the best GPU of its node a GPU may fall without a profile,
/// percent. gpu-fryer's own check compares GPUs of one node with each other
/// (its README); hardware profiles set their own (`burnin.max_spread_pct`).
pub const DEFAULT_MAX_SPREAD_PCT: f64 = 10.0;

#[derive(Debug, Default)]
struct Gpu {
    gflops: Option<f64>,
    temp_c: Option<f64>,
    throttled: Vec<String>,
}

/// Judges gpu-fryer output.
///
/// Fails on: a GPU at 0 Gflops/s (it did no work, even though older
/// gpu-fryer still said "All GPUs seem healthy", its issue #10), a GPU more
/// than `max_spread_pct` percent below the best GPU, any throttling flag
/// `true` (HW slowdown or thermal throttling, as nvidia-smi's clocks event
/// reasons), and the tool's own unhealthy verdict. `Unknown` when the
/// summary is there but no verdict line ("All GPUs seem healthy" or an
/// unhealthy report) follows: a cut log.
///
/// Metrics: `gpus`, `best_gflops`, `per_gpu` (`gpu`, `gflops`, `temp_c`,
/// `throttled`), `healthy_line`.
pub fn judge_gpu_fryer(text: &str, max_spread_pct: f64) -> Result<Judgement, ParseError> {
    let mut gpus: BTreeMap<usize, Gpu> = BTreeMap::new();
    let mut current: Option<usize> = None;
    let mut healthy_line = false;
    let mut unhealthy: Vec<String> = Vec::new();
    for line in split_lines(text) {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("GPU #")
            && let Some((index, rest)) = rest.split_once(':')
            && let Ok(index) = index.trim().parse::<usize>()
        {
            let gflops = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
            if rest.contains("Gflops") {
                gpus.entry(index).or_default().gflops = gflops;
                current = Some(index);
                continue;
            }
        }
        if t.contains("seem healthy") {
            healthy_line = true;
        } else if t.to_ascii_lowercase().contains("unhealthy") {
            unhealthy.push(t.to_owned());
        } else if let Some(gpu) = current.and_then(|i| gpus.get_mut(&i)) {
            if let Some(rest) = t.strip_prefix("Temperature:") {
                gpu.temp_c = rest
                    .trim()
                    .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .next()
                    .and_then(|v| v.parse().ok());
            } else if t.starts_with("Throttling") {
                for part in t.split(',') {
                    if let Some((name, value)) = part.split_once(':')
                        && value.trim() == "true"
                    {
                        gpu.throttled.push(name.trim().to_owned());
                    }
                }
            }
        }
    }
    if gpus.is_empty() {
        return Err(ParseError {
            expected: "gpu-fryer's summary: 'GPU #N: X Gflops/s (min: ..., max: ..., dev: ...)' \
                       lines"
                .to_owned(),
        });
    }

    let best = gpus
        .values()
        .filter_map(|g| g.gflops)
        .fold(0.0_f64, f64::max);
    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    for (i, g) in &gpus {
        match g.gflops {
            Some(v) if v <= 0.0 => failures.push(format!(
                "GPU {i}: 0 Gflops/s: it did no work (check it with nvidia-smi and dmesg for Xids)"
            )),
            Some(v) if best > 0.0 && v < best * (1.0 - max_spread_pct / 100.0) => {
                failures.push(format!(
                    "GPU {i}: {v:.0} Gflops/s is {:.0}% below the best GPU ({best:.0}); \
                     allowed {max_spread_pct}%",
                    (1.0 - v / best) * 100.0
                ));
            }
            Some(_) => {}
            None => inconclusive.push(format!("GPU {i}: no Gflops/s figure")),
        }
        if !g.throttled.is_empty() {
            failures.push(format!(
                "GPU {i}: throttled ({}): check cooling and power",
                g.throttled.join(", ")
            ));
        }
    }
    if let Some(first) = unhealthy.first() {
        failures.push(format!("gpu-fryer reported: {first}"));
    }
    if !healthy_line && unhealthy.is_empty() {
        inconclusive.push(
            "no final verdict line ('All GPUs seem healthy'): the output stops early".to_owned(),
        );
    }
    let per_gpu: Vec<_> = gpus
        .iter()
        .map(|(i, g)| json!({"gpu": i, "gflops": g.gflops, "temp_c": g.temp_c, "throttled": g.throttled}))
        .collect();
    let metrics = json!({
        "gpus": gpus.len(),
        "best_gflops": best,
        "per_gpu": per_gpu,
        "healthy_line": healthy_line,
    });
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    #[test]
    fn slow_and_throttled_gpus_fail() {
        let text = "GPU #0:   1000 Gflops/s (min: 1, max: 2, dev: 0)\n\
                    \x20        Throttling HW: false, Thermal SW: false, Thermal HW: false\n\
                    GPU #1:    800 Gflops/s (min: 1, max: 2, dev: 0)\n\
                    \x20        Throttling HW: true, Thermal SW: false, Thermal HW: true\n\
                    All GPUs seem healthy\n";
        let j = judge_gpu_fryer(text, DEFAULT_MAX_SPREAD_PCT).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(
            j.reasons,
            [
                "GPU 1: 800 Gflops/s is 20% below the best GPU (1000); allowed 10%",
                "GPU 1: throttled (Throttling HW, Thermal HW): check cooling and power"
            ]
        );
    }
}
