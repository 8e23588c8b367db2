//! `kiln burnin --profile NAME`: the burn-in stage's steps (health, NVLink,
//! burn with telemetry, Xid scan) run on this machine through the local
//! transport, judged against a hardware profile: an integrator's burn-in
//! station, or a GPU node testing itself before it joins a run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::Ctx;
use crate::acceptance::NodeCtx;
use crate::acceptance::burnin::{BurninOptions, burnin};
use crate::cli::BurninArgs;
use crate::exit::{BadInput, ExitStatus};
use crate::output::Printer;
use crate::pipeline::record::{StepRecord, StepStatus, UnixMs};
use crate::pipeline::step::{Committed, StepSink, Steps, Stop};
use crate::profiles::hardware::BurninTool;
use crate::ssh::Remote;

/// What `--json` prints.
#[derive(Serialize)]
struct Summary<'a> {
    node: &'a str,
    profile: &'a str,
    passed: bool,
    /// Where the captured outputs are (the steps' artifacts are relative
    /// to it).
    out: &'a PathBuf,
    steps: Vec<StepRecord>,
}

/// Prints each step as it starts and ends, and keeps its record.
struct Printed {
    printer: Printer,
    records: Mutex<Vec<StepRecord>>,
}

impl StepSink for Printed {
    fn finished_before(&self, _: &str, _: &str, _: &str) -> Option<StepRecord> {
        None
    }

    fn started(&self, _: &str, stage: &str, step: &str, _: UnixMs) {
        self.printer.info(&format!("{stage}/{step} …"));
    }

    fn ended(&self, _: &str, record: &StepRecord) -> Committed {
        let secs = record.duration_ms.unwrap_or(0) as f64 / 1000.0;
        self.printer.info(&format!(
            "{}/{}: {} in {secs:.1} s: {}",
            record.stage,
            record.step,
            record.status.word(),
            record.detail
        ));
        for reason in &record.reasons {
            self.printer.info(&format!("  - {reason}"));
        }
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record.clone());
        Committed::now()
    }
}

/// Runs `kiln burnin`.
pub fn run(ctx: &Ctx, args: &BurninArgs) -> anyhow::Result<ExitStatus> {
    let profile = super::judge::find_profile(ctx, &args.profile)?;
    let mut opts = BurninOptions::for_profile(&profile);
    opts.gpu_burn.clone_from(&args.gpu_burn);
    if let Some(d) = args.duration {
        if d < Duration::from_secs(10) {
            return Err(BadInput("--duration must be at least 10s".into()).into());
        }
        opts.duration_s = d.as_secs();
        opts.snapshot_after = d / 2;
    }
    if let Some(every) = args.sample_every {
        opts.sample_every = every.max(Duration::from_secs(1));
    }
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    std::fs::create_dir_all(&args.out)
        .map_err(|e| BadInput(format!("cannot create {}: {e}", args.out.display())))?;
    let mut cx = NodeCtx::new(Remote::Local { name: node.clone() }, &args.out);
    cx.sudo_dmesg = args.sudo_dmesg;
    let sink = Arc::new(Printed {
        printer: ctx.printer.clone(),
        records: Mutex::new(Vec::new()),
    });
    let mut steps = Steps::new(
        node.clone(),
        "burnin",
        Arc::clone(&sink) as Arc<dyn StepSink>,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    ctx.printer.info(&format!(
        "burning in {node} against {} ({}x {}), {} s with {}",
        profile.name,
        profile.gpu.count,
        profile.gpu.model,
        opts.duration_s,
        match profile.burnin.tool {
            BurninTool::GpuBurn => "gpu_burn",
            BurninTool::Dcgm => "dcgmi diag",
        }
    ));
    let runtime = super::runtime()?;
    let ended = runtime.block_on(async {
        // Ctrl-C drops the burn: the local transport kills the tool.
        tokio::select! {
            r = burnin(&cx, &mut steps, &profile, &opts) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let passed = match ended {
        None => {
            ctx.printer.info("interrupted: the tool was stopped");
            return Ok(ExitStatus::NodeFailed);
        }
        Some(Ok(_)) => true,
        Some(Err(Stop::Failed { .. })) => false,
        Some(Err(Stop::Interrupted(step))) => {
            ctx.printer.info(&format!("interrupted before {step}"));
            return Ok(ExitStatus::NodeFailed);
        }
    };
    let records = std::mem::take(&mut *sink.records.lock().unwrap_or_else(|e| e.into_inner()));
    // An unverified step (a tool missing, an unreadable capture) is not a
    // pass, even though the burn-in went on past it.
    let passed = passed && records.iter().all(|r| r.status != StepStatus::Unverified);
    if ctx.printer.json {
        ctx.printer.json_data(&Summary {
            node: &node,
            profile: &profile.name,
            passed,
            out: &args.out,
            steps: records,
        })?;
    } else {
        ctx.printer.data(&format!(
            "{node}: {} (outputs in {})\n",
            if passed { "PASS" } else { "FAIL" },
            args.out.join(&node).join("burnin").display()
        ));
    }
    Ok(if passed {
        ExitStatus::Success
    } else {
        ExitStatus::NodeFailed
    })
}
