//! Judge for gpu-burn output (github.com/wilicc/gpu-burn).
//!
//! gpu-burn redraws one progress line with `\r`:
//! `50.0%  proc'd: 2261 (7150 Gflop/s) - 0 (0 Gflop/s)   errors: 0 - 0   temps: 38 C - 36 C`
//! and ends with `Tested N GPUs:` and one `GPU i: OK|FAULTY` line per GPU.
//! The summary alone is not trusted: issue #7 shows every GPU "OK" after
//! `Couldn't init a GPU test` and 0 Gflop/s throughout.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "gpu-burn";

/// Lines gpu-burn (or its worker processes) print when a GPU could not be
/// tested at all; from gpu_burn-drv.cpp.
const FAILURE_MARKERS: &[&str] = &[
    "Couldn't ",
    "Failure during compute",
    "No clients are alive",
    "No CUDA devices",
];

/// What one GPU showed over the run.
#[derive(Debug, Default, Clone)]
struct Gpu {
    model: Option<String>,
    status: Option<String>,
    /// The error count with the largest magnitude seen in any progress line.
    /// gpu-burn resets counts at each periodic summary, so the max, not the
    /// last, is what matters.
    max_errors: i64,
    last_gflops: Option<f64>,
    died: bool,
}

/// The metrics of [`judge_gpu_burn`]; fields in alphabetical order, the
/// order the JSON has always had.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuBurnMetrics {
    /// Lines that report a failure, as printed.
    pub failure_lines: Vec<String>,
    /// GPUs the run covered (the summary's count, else those seen).
    pub gpus: usize,
    /// The error count with the largest magnitude over all GPUs.
    pub max_errors: i64,
    /// One entry per GPU seen.
    pub per_gpu: Vec<GpuBurnGpu>,
    /// Progress lines read.
    pub progress_lines: usize,
    /// The `Tested N GPUs:` count, when the summary was printed.
    pub tested: Option<usize>,
}

/// One GPU in [`GpuBurnMetrics`], alphabetical like the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuBurnGpu {
    /// Its gpu-burn worker died.
    pub died: bool,
    /// The GPU's index.
    pub gpu: usize,
    /// Throughput in the last progress line, Gflop/s.
    pub last_gflops: Option<f64>,
    /// The error count with the largest magnitude seen.
    pub max_errors: i64,
    /// The model, as gpu-burn printed it.
    pub model: Option<String>,
    /// `OK` or `FAULTY` from the summary.
    pub status: Option<String>,
}

#[derive(Debug, Default)]
struct Parsed {
    gpus: BTreeMap<usize, Gpu>,
    tested: Option<usize>,
    progress_lines: usize,
    failures: Vec<String>,
}

fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    for raw in split_lines(text) {
        let line = raw.trim();
        if line.contains("proc'd:") {
            p.progress_lines += 1;
            parse_progress(line, &mut p.gpus);
        } else if let Some(n) = line
            .strip_prefix("Tested ")
            .and_then(|r| r.strip_suffix(" GPUs:").or_else(|| r.strip_suffix(" GPU:")))
        {
            p.tested = n.trim().parse().ok();
        } else if let Some((index, rest)) = gpu_line(line) {
            let gpu = p.gpus.entry(index).or_default();
            if rest == "OK" || rest == "FAULTY" {
                gpu.status = Some(rest.to_owned());
            } else {
                // `nvidia-smi -L` at start: `GPU 0: NVIDIA A100-SXM4-80GB (UUID: ...)`.
                let model = rest.split(" (UUID").next().unwrap_or(rest);
                gpu.model = Some(model.trim().to_owned());
            }
        } else if FAILURE_MARKERS.iter().any(|m| line.contains(m)) {
            p.failures.push(line.to_owned());
        }
    }
    p
}

/// `GPU 3: rest` -> (3, "rest").
fn gpu_line(line: &str) -> Option<(usize, &str)> {
    let (head, rest) = line.strip_prefix("GPU ")?.split_once(':')?;
    Some((head.trim().parse().ok()?, rest.trim()))
}

/// Reads the per-GPU `proc'd (Gflop/s)` and `errors` lists of one progress
/// line into `gpus`.
fn parse_progress(line: &str, gpus: &mut BTreeMap<usize, Gpu>) {
    let Some((_, after)) = line.split_once("proc'd:") else {
        return;
    };
    let (procd, rest) = after.split_once("errors:").unwrap_or((after, ""));
    // Later sections (temps, power) follow the errors list.
    let errors = rest.split("temps:").next().unwrap_or("");
    let errors = errors.split("power:").next().unwrap_or("");

    // `2261 (7150 Gflop/s) - 0 (0 Gflop/s)`; a count of -1 marks a dead worker.
    let procd = procd.replace(['(', ')'], " ");
    let tokens: Vec<&str> = procd.split_whitespace().collect();
    let mut index = 0;
    for (i, token) in tokens.iter().enumerate() {
        if *token != "Gflop/s" || i < 2 {
            continue;
        }
        let gpu = gpus.entry(index).or_default();
        gpu.last_gflops = tokens[i - 1].parse().ok();
        if tokens[i - 2] == "-1" {
            gpu.died = true;
        }
        index += 1;
    }

    // `0 - -524288000  (WARNING!)- 0`: counts are signed (they overflow,
    // issue #12), separated by a bare `-`, and may carry a note.
    let errors = errors
        .replace("(WARNING!)", " ")
        .replace("(DIED!)", " DIED ");
    let mut index: usize = 0;
    for token in errors.split_whitespace() {
        if token == "DIED" {
            if let Some(gpu) = index.checked_sub(1).and_then(|i| gpus.get_mut(&i)) {
                gpu.died = true;
            }
        } else if let Ok(count) = token.parse::<i64>() {
            let gpu = gpus.entry(index).or_default();
            if count.unsigned_abs() > gpu.max_errors.unsigned_abs() {
                gpu.max_errors = count;
            }
            index += 1;
        }
    }
}

/// `0, 1, 2` for a reason.
fn list(indices: &[usize]) -> String {
    let items: Vec<String> = indices.iter().map(usize::to_string).collect();
    items.join(", ")
}

/// Judges gpu-burn output.
///
/// Fails on: any GPU reported FAULTY, any nonzero error count in a progress
/// line (negative counts are an overflowed counter, issue #12), a dead
/// worker, an init or compute failure line (`Couldn't init a GPU test`,
/// even when the summary then says every GPU is OK, issue #7), or a GPU at
/// 0 Gflop/s in the final progress line (it never reported any work).
///
/// Returns `Unknown` when nothing failed but the final `Tested N GPUs:`
/// summary or the progress lines are missing (a truncated log cannot show
/// the run completed), and a [`ParseError`] when nothing gpu-burn prints is
/// found.
///
/// Metrics: `gpus` (count), `tested` (from the summary), `max_errors`,
/// `per_gpu` (`gpu`, `model`, `status`, `max_errors`, `last_gflops`,
/// `died`), `progress_lines`, `failure_lines`.
pub fn judge_gpu_burn(text: &str) -> Result<Judgement<GpuBurnMetrics>, ParseError> {
    let p = parse(text);
    let seen_status = p.gpus.values().any(|g| g.status.is_some());
    if p.progress_lines == 0 && p.tested.is_none() && !seen_status && p.failures.is_empty() {
        return Err(ParseError {
            expected: "gpu-burn output: progress lines (\"proc'd: ... errors: ...\"), \
                       a 'Tested N GPUs:' summary, or a 'Couldn't init' line"
                .to_owned(),
        });
    }

    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    let select = |pred: &dyn Fn(&Gpu) -> bool| -> Vec<usize> {
        p.gpus
            .iter()
            .filter(|(_, g)| pred(g))
            .map(|(i, _)| *i)
            .collect()
    };

    if let Some(first) = p.failures.first() {
        let mut reason = format!("gpu-burn could not test the GPUs: {first}");
        if first.contains("load module") {
            // gpu-burn loads its kernel from its working directory.
            reason.push_str(
                " (compare kernel not loadable: run gpu_burn from its build directory, \
                 where compare.fatbin or, before May 2026, compare.ptx is)",
            );
        }
        if p.failures.len() > 1 {
            reason.push_str(&format!(" [{} failure lines in all]", p.failures.len()));
        }
        failures.push(reason);
    }
    let faulty = select(&|g| g.status.as_deref() == Some("FAULTY"));
    if !faulty.is_empty() {
        failures.push(format!(
            "GPU {} reported FAULTY: computed results did not match",
            list(&faulty)
        ));
    }
    let erring = select(&|g| g.max_errors != 0);
    if !erring.is_empty() {
        let worst = p
            .gpus
            .values()
            .map(|g| g.max_errors)
            .max_by_key(|e| e.unsigned_abs())
            .unwrap_or(0);
        let mut reason = format!(
            "GPU {} had calculation errors (worst count {worst})",
            list(&erring)
        );
        if worst < 0 {
            reason.push_str("; a negative count is gpu-burn's error counter overflowing");
        }
        failures.push(reason);
    }
    let died = select(&|g| g.died);
    if !died.is_empty() {
        failures.push(format!("GPU {}: gpu-burn worker died", list(&died)));
    }
    // A GPU is only absent from the progress lines if it never reported.
    let idle = select(&|g| g.last_gflops == Some(0.0));
    if !idle.is_empty() {
        failures.push(format!(
            "GPU {} at 0 Gflop/s in the final progress line: no work was done",
            list(&idle)
        ));
    }

    if p.tested.is_none() {
        inconclusive.push(
            "no 'Tested N GPUs:' summary: the output stops before gpu-burn finished".to_owned(),
        );
    }
    if p.progress_lines == 0 {
        inconclusive.push(
            "no progress lines: cannot confirm the GPUs computed anything (the summary alone is not trusted)"
                .to_owned(),
        );
    }
    let with_status = p.gpus.values().filter(|g| g.status.is_some()).count();
    if let Some(tested) = p.tested
        && tested != with_status
    {
        inconclusive.push(format!(
            "summary says {tested} GPUs tested but lists {with_status}"
        ));
    }

    let gpu_count = p.tested.unwrap_or(p.gpus.len());
    let max_errors = p
        .gpus
        .values()
        .map(|g| g.max_errors)
        .max_by_key(|e| e.unsigned_abs())
        .unwrap_or(0);
    let metrics = GpuBurnMetrics {
        gpus: gpu_count,
        tested: p.tested,
        max_errors,
        per_gpu: p
            .gpus
            .into_iter()
            .map(|(gpu, g)| GpuBurnGpu {
                gpu,
                model: g.model,
                status: g.status,
                max_errors: g.max_errors,
                last_gflops: g.last_gflops,
                died: g.died,
            })
            .collect(),
        progress_lines: p.progress_lines,
        failure_lines: p.failures,
    };
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    #[test]
    fn warning_counts_parse_as_signed() {
        let mut gpus = BTreeMap::new();
        parse_progress(
            "100.0%  proc'd: 1 (5 Gflop/s) - 2 (6 Gflop/s) - 3 (7 Gflop/s)   errors: 0 - -524288000  (WARNING!)- 7  (WARNING!)  temps: 51 C - 45 C - 40 C",
            &mut gpus,
        );
        let errors: Vec<i64> = gpus.values().map(|g| g.max_errors).collect();
        assert_eq!(errors, [0, -524_288_000, 7]);
        let gflops: Vec<Option<f64>> = gpus.values().map(|g| g.last_gflops).collect();
        assert_eq!(gflops, [Some(5.0), Some(6.0), Some(7.0)]);
    }

    #[test]
    fn died_worker_fails() {
        let text = "10.0%  proc'd: -1 (0 Gflop/s) - 5 (9 Gflop/s)   errors: 0  (DIED!)- 0   temps: 40 C - 41 C\n\
                    Tested 2 GPUs:\n\tGPU 0: OK\n\tGPU 1: OK\n";
        let j = judge_gpu_burn(text).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reasons
                .iter()
                .any(|r| r.contains("GPU 0: gpu-burn worker died"))
        );
    }

    #[test]
    fn progress_without_summary_is_unknown() {
        let text = "50.0%  proc'd: 5 (9 Gflop/s)   errors: 0   temps: 40 C\r";
        let j = judge_gpu_burn(text).unwrap();
        assert_eq!(j.verdict, Verdict::Unknown);
    }

    #[test]
    fn gpu_list_alone_is_a_parse_error() {
        let text = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)\n";
        assert!(judge_gpu_burn(text).is_err());
    }
}
