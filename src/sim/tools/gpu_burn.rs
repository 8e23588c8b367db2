//! `gpu_burn [-d] [-tc] [-m N|N%] [-i N] [-c FILE] [-stts T] [SECONDS]`
//! (github.com/wilicc/gpu-burn, current layout with `power:` and the
//! SIGTERM soft kill).

use super::nvidia_smi::nvml_error;
use super::{Tm, ToolCtx, ToolRun, cuda_error};
use crate::sim::hw::{CudaProblem, Gpu, signed_unit};

/// Operations per 8192x8192 GEMM, as gpu_burn counts them.
const OPS_PER_MUL: f64 = 1_100_048_498_688.0;
const SIZE: u64 = 8192;

/// The error line a CUDA binary prints when libcuda is not installed.
pub(crate) fn missing_libcuda(bin: &str) -> ToolRun {
    ToolRun::err(
        127,
        format!(
            "{bin}: error while loading shared libraries: libcuda.so.1: cannot open shared object file: No such file or directory\n"
        ),
    )
}

struct Worker<'a> {
    gpu: &'a Gpu,
    gflops: f64,
    iters: u64,
    batch_s: f64,
    /// Simulated second at which the worker dies (uncorrectable ECC).
    dies_at: Option<f64>,
}

pub(super) fn run(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let mut doubles = false;
    let mut tensor = false;
    let mut device: Option<usize> = None;
    let mut use_mem: Option<String> = None;
    let mut kernel = "compare.fatbin".to_owned();
    let mut stts: u64 = 30;
    let mut positional: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a.starts_with("-h") {
            return ToolRun::ok(
                "GPU Burn\nUsage: gpu-burn [OPTIONS] [TIME]\n\n-m X\tUse X MB of memory.\n-m N%\tUse N% of the available GPU memory.  Default is 90%\n-d\tUse doubles\n-tc\tTry to use Tensor cores\n-l\tLists all GPUs in the system\n-i N\tExecute only on GPU N\n-c FILE\tUse FILE as compare kernel.  Default is compare.fatbin\n-stts T\tSet timeout threshold to T seconds for using SIGTERM to abort child processes before using SIGKILL.  Default is 30\n-h\tShow this help message\n\nExamples:\n  gpu-burn -d 3600 # burns all GPUs with doubles for an hour\n  gpu-burn -m 50% # burns using 50% of the available GPU memory\n  gpu-burn -l # list GPUs\n  gpu-burn -i 2 # burns only GPU of index 2\n",
            );
        }
        if a == "-l" {
            return list(ctx);
        }
        let take = |i: &mut usize, flag: &str| -> Result<String, ToolRun> {
            if a.len() > flag.len() {
                return Ok(a[flag.len()..].to_owned());
            }
            *i += 1;
            args.get(*i)
                .map(|s| (*s).to_owned())
                .ok_or_else(|| ToolRun::err(22, format!("Syntax error near {flag}\n")))
        };
        match a {
            "-d" => doubles = true,
            "-tc" => tensor = true,
            _ if a.starts_with("-stts") => match take(&mut i, "-stts") {
                Ok(v) => stts = v.parse().unwrap_or(30),
                Err(e) => return e,
            },
            _ if a.starts_with("-m") => match take(&mut i, "-m") {
                Ok(v) => use_mem = Some(v),
                Err(e) => return e,
            },
            _ if a.starts_with("-i") => match take(&mut i, "-i") {
                Ok(v) => device = v.parse().ok(),
                Err(e) => return e,
            },
            _ if a.starts_with("-c") => match take(&mut i, "-c") {
                Ok(v) => kernel = v,
                Err(e) => return e,
            },
            _ => positional.push(a),
        }
        i += 1;
    }
    let mut header = String::new();
    let secs: u64 = match positional.first() {
        Some(s) => s.parse().unwrap_or(0),
        None => {
            header.push_str("Run length not specified in the command line. ");
            10
        }
    };

    let problem = ctx.sw.cuda_problem(ctx.hw);
    if problem == Some(CudaProblem::NoDriver) {
        return missing_libcuda("./gpu_burn");
    }
    let mut run = ToolRun::steps(1.0);
    // `nvidia-smi -L` runs first (a separate process, so it prints first).
    let smi = match nvml_error(ctx) {
        Some(e) => e.stdout(),
        None => list_lines(ctx),
    };
    let mut first = smi;
    first.push_str(&header);
    first.push_str(&format!(
        "Using compare file: {kernel}\nBurning for {secs} seconds.\n"
    ));

    if let Some(p) = &problem {
        let (_, msg) = cuda_error(p);
        run.step(0.0, first);
        run.stderr = format!(
            "Couldn't init CUDA: Error (gpu_burn-drv.cpp:293): {msg}\nNo CUDA devices\nCouldn't init a GPU test: Error (gpu_burn-drv.cpp:103): initialization error\n"
        );
        run.code = 19;
        run.step(1.0, "");
        return run;
    }

    let gpus: Vec<&Gpu> = ctx.hw.present_gpus().collect();
    let gpus: Vec<&Gpu> = match device {
        Some(d) if d < gpus.len() => vec![gpus[d]],
        Some(_) => {
            run.step(0.0, first);
            run.stderr =
                "Couldn't init a GPU test: Error (gpu_burn-drv.cpp:102): invalid device ordinal\n"
                    .to_owned();
            run.code = 0;
            run.step(1.0, "\nKilling processes with SIGTERM (soft kill)\ndone\n\nTested 1 GPUs:\n\tGPU 0: OK\n");
            return run;
        }
        None => gpus,
    };
    if gpus.is_empty() {
        run.step(0.0, first);
        run.stderr = "No CUDA devices\n".to_owned();
        run.code = 19;
        return run;
    }

    let spec = ctx.hw.spec();
    let total_mb = ctx.hw.profile.gpu.memory_mib.saturating_sub(480);
    let avail_mb = total_mb.saturating_sub(553);
    let use_mb = match use_mem.as_deref() {
        Some(m) if m.ends_with('%') => {
            avail_mb * m.trim_end_matches('%').parse::<u64>().unwrap_or(90) / 100
        }
        Some(m) => m.parse::<u64>().unwrap_or(avail_mb * 9 / 10),
        None => avail_mb * 9 / 10,
    };
    let elem: u64 = if doubles { 8 } else { 4 };
    let result_size = elem * SIZE * SIZE;
    let iters = ((use_mb << 20).saturating_sub(2 * result_size) / result_size).max(1);
    let base = match (doubles, tensor) {
        (false, false) => spec.fp32_gflops,
        (false, true) => spec.fp32_gflops * 6.4,
        (true, _) => spec.fp64_gflops,
    };
    let workers: Vec<Worker> = gpus
        .iter()
        .map(|g| {
            let mut gflops = base * g.perf * g.slow_factor;
            if g.hot_temp_c.is_some() {
                gflops *= 0.8;
            }
            Worker {
                gpu: g,
                gflops,
                iters,
                batch_s: iters as f64 * OPS_PER_MUL / (gflops * 1e9),
                dies_at: (g.ecc_uncorrectable > 0).then_some(secs as f64 * 0.4),
            }
        })
        .collect();

    run.step(0.0, first);
    let secs_f = secs as f64;
    let mut next_report = 10.0f64;
    let mut errors: Vec<i64> = vec![0; workers.len()];
    let mut faulty: Vec<bool> = vec![false; workers.len()];
    let mut died_logged = vec![false; workers.len()];
    let mut t = 0.0;
    let mut prev = 0.0;
    let step_s = 10.0f64;
    loop {
        t = (t + step_s).min(secs_f.max(1.0));
        let pct = (t / secs_f.max(1.0) * 100.0).min(100.0);
        let mut procd = Vec::new();
        let mut notes = Vec::new();
        let mut temps = Vec::new();
        let mut powers = Vec::new();
        for (k, w) in workers.iter().enumerate() {
            let dead = w.dies_at.is_some_and(|d| t >= d);
            let live_t = w.dies_at.map_or(t, |d| t.min(d));
            let batches = ((live_t - 1.5) / w.batch_s).floor().max(0.0) as u64;
            let noise = 1.0 + signed_unit(ctx.hw.seed, (t as u64) << 8 | k as u64) * 0.003;
            let gf = if batches == 0 { 0.0 } else { w.gflops * noise };
            if dead {
                if !died_logged[k] {
                    died_logged[k] = true;
                    errors[k] -= 1;
                    run.stderr.push_str(&format!(
                        "Failure during compute: Error in \"Read faultyelemdata\" (gpu_burn-drv.cpp:263): uncorrectable ECC error encountered\nread[{k}] error 0"
                    ));
                }
                procd.push(format!("-1 ({gf:.0} Gflop/s) "));
            } else {
                procd.push(format!("{} ({gf:.0} Gflop/s) ", batches * w.iters));
            }
            if errors[k] != 0 {
                faulty[k] = true;
            }
            let note = if dead {
                "  (DIED!)"
            } else if errors[k] != 0 {
                "  (WARNING!)"
            } else {
                " "
            };
            notes.push(format!("{}{note}", errors[k]));
            let load: f64 = if dead { 0.0 } else { 1.0 };
            let r = ctx.hw.reading(w.gpu, load.min(t / 60.0 + 0.3));
            temps.push(format!("{} C ", r.temp_c));
            powers.push(format!("{} W ", r.power_w as u64));
        }
        let mut line = format!("\r{pct:.1}%  proc'd: {}", procd.join("- "));
        line.push_str(&format!("  errors: {}", notes.join("- ")));
        line.push_str(&format!("  temps: {}", temps.join("- ")));
        line.push_str(&format!("  power: {}", powers.join("- ")));
        if next_report < pct {
            next_report = pct + 10.0;
            line.push_str(&format!(
                "\n\tSummary at:   {}\n\n",
                Tm::utc(ctx.now_unix + t as u64).date()
            ));
            errors.iter_mut().for_each(|e| *e = 0);
        }
        run.step(t - prev, line);
        prev = t;
        if t >= secs_f {
            break;
        }
    }
    let mut end = String::from("\nKilling processes with SIGTERM (soft kill)\n");
    for (k, w) in workers.iter().enumerate() {
        let dev = if device.is_some() {
            device.unwrap_or(0)
        } else {
            k
        };
        end.push_str(&format!(
            "Initialized device {dev} with {total_mb} MB of memory ({avail_mb} MB available, using {use_mb} MB of it), {}{}\nResults are {result_size} bytes each, thus performing {} iterations\n",
            if doubles { "using DOUBLES" } else { "using FLOATS" },
            if tensor { ", using Tensor Cores" } else { "" },
            w.iters
        ));
        if w.dies_at.is_none() {
            end.push_str(&format!("Freed memory for dev {dev}\nUninitted cublas\n"));
        }
    }
    end.push_str(&format!("done\n\nTested {} GPUs:\n", workers.len()));
    for (k, f) in faulty.iter().enumerate() {
        end.push_str(&format!(
            "\tGPU {k}: {}\n",
            if *f { "FAULTY" } else { "OK" }
        ));
    }
    run.step(stts as f64, end);
    run
}

/// `nvidia-smi -L` lines.
fn list_lines(ctx: &ToolCtx) -> String {
    ctx.hw
        .present_gpus()
        .enumerate()
        .map(|(i, g)| {
            format!(
                "GPU {i}: {} (UUID: {})\n",
                ctx.hw.profile.gpu.model,
                g.uuid_string()
            )
        })
        .collect()
}

/// `gpu_burn -l`.
fn list(ctx: &ToolCtx) -> ToolRun {
    if let Some(p) = ctx.sw.cuda_problem(ctx.hw) {
        if p == CudaProblem::NoDriver {
            return missing_libcuda("./gpu_burn");
        }
        let (_, msg) = cuda_error(&p);
        return ToolRun::done(
            134,
            "",
            format!(
                "Couldn't init CUDA: Error (gpu_burn-drv.cpp:293): {msg}\nterminate called after throwing an instance of 'std::runtime_error'\n  what():  No CUDA capable GPUs found.\n\n"
            ),
        );
    }
    let mb = ctx.hw.profile.gpu.memory_mib * 1_048_576 / 1_000_000;
    let out: String = ctx
        .hw
        .present_gpus()
        .enumerate()
        .map(|(i, _)| format!("ID {i}: {}, {mb}MB\n", ctx.hw.profile.gpu.model))
        .collect();
    ToolRun::ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::judge::{Verdict, judge_gpu_burn};
    use crate::sim::hw::HwFault;
    use crate::sim::hw::tests::h100;

    fn burn(b: &mut Bench, line: &str) -> (super::ToolRun, String) {
        let r = b.run(line);
        let text = format!("{}{}", r.stdout(), r.stderr);
        (r, text)
    }

    #[test]
    fn healthy_node_passes_the_judge() {
        let mut b = Bench::ready("node001");
        let (r, text) = burn(&mut b, "gpu_burn -tc 1800");
        assert_eq!(r.code, 0);
        assert_eq!(r.load, 1.0);
        // One progress line per 10 simulated seconds, plus start and end.
        assert_eq!(r.steps.len(), 180 + 2);
        assert_eq!(r.duration().as_secs(), 1800 + 30);
        let j = judge_gpu_burn(&text).unwrap().into_json();
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
        assert_eq!(j.metrics["tested"], 8);
        assert!(text.contains("\tSummary at:   Fri Nov  8 02:"));
        let last = j.metrics["per_gpu"][0]["last_gflops"].as_f64().unwrap();
        assert!(last > 250_000.0, "{last}");
    }

    #[test]
    fn slow_gpu_falls_behind_its_node() {
        let mut b = Bench::ready("node001");
        b.hw.apply(&HwFault::SlowGpu {
            gpu: 5,
            factor: 0.6,
        })
        .unwrap();
        let (_, text) = burn(&mut b, "gpu_burn 120");
        let j = judge_gpu_burn(&text).unwrap().into_json();
        let gflops: Vec<f64> = (0..8)
            .map(|i| j.metrics["per_gpu"][i]["last_gflops"].as_f64().unwrap())
            .collect();
        let best = gflops.iter().cloned().fold(0.0, f64::max);
        let spread = b.hw.profile.burnin.max_spread_pct;
        for (i, g) in gflops.iter().enumerate() {
            let below = (best - g) / best * 100.0 > spread;
            assert_eq!(below, i == 5, "GPU {i}: {g} vs best {best}");
        }
    }

    #[test]
    fn ecc_gpu_dies_and_fails() {
        let mut b = Bench::ready("node001");
        b.hw.apply(&HwFault::EccUncorrectable { gpu: 2 }).unwrap();
        let (_, text) = burn(&mut b, "gpu_burn 300");
        let j = judge_gpu_burn(&text).unwrap().into_json();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reasons.iter().any(|r| r.contains("GPU 2")),
            "{:?}",
            j.reasons
        );
        assert!(text.contains("\tGPU 2: FAULTY"));
    }

    #[test]
    fn fabric_manager_down_fails_to_init() {
        let mut b = Bench::ready("node001");
        b.run("systemctl stop nvidia-fabricmanager");
        let (r, text) = burn(&mut b, "gpu_burn 60");
        assert_eq!(r.code, 19);
        let j = judge_gpu_burn(&text).unwrap().into_json();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reasons[0].contains("system not yet initialized"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn no_driver_cannot_start() {
        let mut b = Bench::bare("n", &h100());
        let r = b.run("gpu_burn 60");
        assert_eq!(r.code, 127);
        assert!(r.stderr.contains("libcuda.so.1"));
    }

    #[test]
    fn missing_gpu_tests_seven() {
        let mut b = Bench::ready("n");
        b.hw.apply(&HwFault::GpuMissing { gpu: 0 }).unwrap();
        let (_, text) = burn(&mut b, "gpu_burn -d 30");
        let j = judge_gpu_burn(&text).unwrap().into_json();
        assert_eq!(j.metrics["tested"], 7);
        assert!(text.contains("using DOUBLES"));
    }
}
