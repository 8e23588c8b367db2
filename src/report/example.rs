//! A hand-built run that shows every verdict: the fixture for the report
//! tests, and something to render when trying the formats by hand.

use serde_json::{Value, json};

use crate::pipeline::record::{
    NodeRecord, NodeVerdict, RunInfo, RunRecord, RunState, StepRecord, StepStatus,
};

/// 2026-11-25T10:15:00Z.
const RUN_START_MS: u64 = 1_795_601_700_000;

/// An interrupted run over two racks: on `r01`, one node accepted and one failed
/// in burn-in (telemetry of a GPU running hot); on `r02`, one failed in NCCL
/// (busbw below the floor, with rows), one unverified (diagnostics skipped)
/// and one still pending. Timestamps are fixed, so renders are stable.
pub fn example_record() -> RunRecord {
    let mut nodes = vec![
        accepted("r01-n01", "r01", 0),
        failed_burnin("r01-n02", "r01", 20_000),
        failed_nccl("r02-n01", "r02", 40_000),
        unverified("r02-n02", "r02", 60_000),
        pending("r02-n03", "r02", 80_000),
    ];
    for node in &mut nodes {
        node.hardware = "hgx-h100-80gb-8x".into();
    }
    RunRecord {
        run: RunInfo {
            id: "20261125-101500-3f9a".into(),
            site: "fra-2".into(),
            inventory: "inventories/fra-2.yaml".into(),
            stages: ["preflight", "image", "drivers", "burnin", "nccl"]
                .map(String::from)
                .to_vec(),
            started_ms: RUN_START_MS,
            finished_ms: Some(RUN_START_MS + 3 * 3_600_000 + 25 * 60_000),
            state: RunState::Interrupted,
            kiln_version: "0.1.0".into(),
        },
        nodes,
    }
}

/// Builds steps one after another from a node's start time.
struct Steps {
    at_ms: u64,
    steps: Vec<StepRecord>,
}

impl Steps {
    fn new(offset_ms: u64) -> Steps {
        Steps {
            at_ms: RUN_START_MS + offset_ms,
            steps: Vec::new(),
        }
    }

    fn add(&mut self, stage: &str, step: &str, status: StepStatus, secs: f64, detail: &str) {
        let duration_ms = (secs * 1000.0) as u64;
        let ran = !matches!(status, StepStatus::Pending);
        self.steps.push(StepRecord {
            stage: stage.into(),
            step: step.into(),
            status,
            started_ms: ran.then_some(self.at_ms),
            duration_ms: (ran && status != StepStatus::Running).then_some(duration_ms),
            detail: detail.into(),
            reasons: Vec::new(),
            metrics: Value::Null,
            artifacts: Vec::new(),
            bmc_requests: None,
        });
        self.at_ms += duration_ms + 250;
    }

    fn last(&mut self) -> &mut StepRecord {
        let i = self.steps.len() - 1;
        &mut self.steps[i]
    }

    /// gpu-burn done on all eight GPUs, with clean telemetry.
    fn gpu_burn_passed(&mut self) {
        self.add(
            "burnin",
            "gpu-burn",
            StepStatus::Done,
            600.0,
            "8 GPUs, 0 errors",
        );
        self.last().metrics = telemetry(None);
    }

    /// preflight, image and drivers, all done.
    fn through_drivers(&mut self) {
        use StepStatus::Done;
        self.add(
            "preflight",
            "bmc-reach",
            Done,
            1.4,
            "Dell iDRAC 9, firmware 7.10.50.00",
        );
        self.add(
            "preflight",
            "power-off",
            Done,
            12.0,
            "was on; off after 11 s",
        );
        self.add(
            "image",
            "insert-media",
            Done,
            6.2,
            "ubuntu-24.04 on virtual CD",
        );
        self.add("image", "boot-once", Done, 2.1, "boot once from Cd (UEFI)");
        self.add(
            "image",
            "install",
            Done,
            612.0,
            "ubuntu 24.04, kernel 6.8.0-45",
        );
        self.add("image", "eject-media", Done, 3.3, "slot empty");
        self.add(
            "drivers",
            "install",
            Done,
            402.5,
            "driver 570.133.20, CUDA 12.8",
        );
        self.add("drivers", "verify", Done, 8.9, "8 × NVIDIA H100 80GB HBM3");
    }
}

fn node(name: &str, rack: &str, verdict: NodeVerdict, steps: Steps) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        rack: rack.into(),
        hardware: String::new(),
        verdict,
        failed_stage: None,
        reasons: Vec::new(),
        steps: steps.steps,
    }
}

/// Burn-in telemetry: 8 GPUs every 30 s for 10 minutes; `hot` runs to
/// about 92 °C where the others settle near 70 °C.
fn telemetry(hot: Option<u64>) -> Value {
    let mut samples = Vec::new();
    for i in 0..=20u32 {
        let t = f64::from(i) * 30.0;
        for gpu in 0..8u64 {
            let rise = if Some(gpu) == hot {
                55.0
            } else {
                28.0 + gpu as f64
            };
            let temp = 38.0 + rise * (1.0 - (-t / 140.0).exp());
            let power = if t == 0.0 {
                95.0
            } else {
                640.0 + gpu as f64 * 3.0
            };
            samples.push(json!({
                "t_s": t,
                "gpu": gpu,
                "temp_c": (temp * 10.0).round() / 10.0,
                "power_w": power,
                "sm_mhz": 1980.0,
            }));
        }
    }
    let gflops: Vec<f64> = (0..8u64)
        .map(|g| {
            if Some(g) == hot {
                41_200.0
            } else {
                49_800.0 + g as f64 * 37.0
            }
        })
        .collect();
    // The BMC, every minute: the chassis idles near 1.5 kW and draws ~6.6 kW
    // burning; the inlet stays in spec.
    let bmc: Vec<Value> = (0..=10u32)
        .map(|i| {
            let t = f64::from(i) * 60.0;
            let power = if i == 0 {
                1510.0
            } else {
                6580.0 + f64::from(i % 3) * 20.0
            };
            json!({"t_s": t, "power_w": power, "inlet_c": 23.0 + f64::from(i % 2) * 0.5})
        })
        .collect();
    json!({
        "telemetry": samples,
        "gflops": gflops,
        "bmc": {
            "samples": bmc,
            "max_inlet_c": 23.5,
            "inlet_limit_c": 35.0,
            "peak_power_w": 6620.0,
            "expected_min_power_w": 2800.0,
            "warnings": [],
        },
    })
}

/// nccl-tests rows from 8 B to 8 GiB, bandwidth rising to `peak` GB/s.
fn nccl_metrics(host: &str, peak: f64) -> Value {
    let rows: Vec<Value> = (0..31)
        .map(|k| {
            let size = 8u64 << k;
            let s = size as f64;
            let busbw = peak * s / (s + 48.0 * 1024.0 * 1024.0);
            let out = (busbw * 100.0).round() / 100.0;
            let inp = (busbw * 1.01 * 100.0).round() / 100.0;
            json!({
                "size": size,
                "busbw_out_of_place": out,
                "busbw_in_place": inp,
                "wrong_out_of_place": 0,
                "wrong_in_place": 0,
            })
        })
        .collect();
    json!({
        "test": "all_reduce_perf",
        "hosts": [host],
        "gpus": 8,
        "rows": rows,
        "largest_size": 8u64 << 30,
        "busbw_floor": 360.0,
    })
}

fn burnin_and_nccl(steps: &mut Steps, name: &str) {
    steps.gpu_burn_passed();
    steps.add(
        "burnin",
        "dcgm-diag",
        StepStatus::Done,
        910.0,
        "dcgmi diag -r 3: all pass",
    );
    steps.add(
        "nccl",
        "all-reduce-node",
        StepStatus::Done,
        95.0,
        "busbw 474.0 GB/s at 8 GiB",
    );
    steps.last().metrics = nccl_metrics(name, 482.0);
}

/// A node failed at `stage` for `reason`.
fn failed_node(name: &str, rack: &str, steps: Steps, stage: &str, reason: &str) -> NodeRecord {
    let mut n = node(name, rack, NodeVerdict::Failed, steps);
    n.failed_stage = Some(stage.into());
    n.reasons = vec![reason.into()];
    n
}

fn accepted(name: &str, rack: &str, offset_ms: u64) -> NodeRecord {
    let mut steps = Steps::new(offset_ms);
    steps.through_drivers();
    burnin_and_nccl(&mut steps, name);
    node(name, rack, NodeVerdict::Accepted, steps)
}

fn failed_burnin(name: &str, rack: &str, offset_ms: u64) -> NodeRecord {
    let mut steps = Steps::new(offset_ms);
    steps.through_drivers();
    let reason = "GPU 3 (serial 1654923001234) reached 92 °C under load, above the 87 °C limit";
    steps.add(
        "burnin",
        "gpu-burn",
        StepStatus::Failed,
        600.0,
        "8 GPUs; GPU 3 throttled",
    );
    steps.last().metrics = telemetry(Some(3));
    steps.last().reasons = vec![reason.into()];
    steps.last().artifacts = vec![format!("{name}/burnin/gpu-burn.log")];
    steps.add("burnin", "dcgm-diag", StepStatus::Pending, 0.0, "");
    steps.add("nccl", "all-reduce-node", StepStatus::Pending, 0.0, "");
    failed_node(name, rack, steps, "burnin", reason)
}

fn failed_nccl(name: &str, rack: &str, offset_ms: u64) -> NodeRecord {
    let mut steps = Steps::new(offset_ms);
    steps.through_drivers();
    steps.gpu_burn_passed();
    steps.add(
        "burnin",
        "dcgm-diag",
        StepStatus::Done,
        905.0,
        "dcgmi diag -r 3: all pass",
    );
    // A reason quoting tool output: a table separator and a line break.
    let reason = "busbw 305.6 GB/s at 8 GiB is below the 360 GB/s floor \
                  (all_reduce_perf | 8 GPUs)\nlast row: 8589934592 2147483648 float sum -1";
    steps.add(
        "nccl",
        "all-reduce-node",
        StepStatus::Failed,
        97.0,
        "busbw 305.6 GB/s at 8 GiB",
    );
    steps.last().metrics = nccl_metrics(name, 311.0);
    steps.last().reasons = vec![reason.into()];
    let judgement = json!({"kind": "nccl-tests", "verdict": "fail", "reasons": [reason]});
    if let Value::Object(map) = &mut steps.last().metrics {
        map.insert("judgement".into(), judgement);
    }
    steps.last().artifacts = vec![format!("{name}/nccl/all_reduce_perf.txt")];
    failed_node(name, rack, steps, "nccl", reason)
}

fn unverified(name: &str, rack: &str, offset_ms: u64) -> NodeRecord {
    let mut steps = Steps::new(offset_ms);
    steps.through_drivers();
    steps.gpu_burn_passed();
    let reason = "dcgmi diag skipped the memory test: \"nv-hostengine is not running\"";
    steps.add(
        "burnin",
        "dcgm-diag",
        StepStatus::Unverified,
        41.0,
        "level 3, 1 test skipped",
    );
    steps.last().reasons = vec![reason.into()];
    steps.add("nccl", "all-reduce-node", StepStatus::Pending, 0.0, "");
    let mut n = node(name, rack, NodeVerdict::Unverified, steps);
    n.reasons = vec![reason.into()];
    n
}

fn pending(name: &str, rack: &str, offset_ms: u64) -> NodeRecord {
    let mut steps = Steps::new(offset_ms);
    steps.add(
        "preflight",
        "bmc-reach",
        StepStatus::Done,
        1.1,
        "Dell iDRAC 9, firmware 7.10.50.00",
    );
    steps.add(
        "preflight",
        "power-off",
        StepStatus::Skipped,
        0.3,
        "already off",
    );
    steps.add(
        "image",
        "insert-media",
        StepStatus::Done,
        5.8,
        "ubuntu-24.04 on virtual CD",
    );
    steps.add("image", "boot-once", StepStatus::Running, 0.0, "");
    node(name, rack, NodeVerdict::Pending, steps)
}
