//! `kiln bench deploy`: the image stage on a rack of real virtual machines
//! ([`crate::vmlab`]), measured. Per machine: the time from power-on to a
//! verified SSH login into the OS kiln wrote, and the deploy agent's write
//! rate against a plain `wget | gunzip | dd` of the same image to the same
//! disk in the same boot (the agent runs that peer first when the plan
//! says `bench=1`); for the run: kiln's CPU time per GiB its boot server
//! served (an upper bound for the boot server: the whole process is
//! counted, BMC and SSH work included).

use std::path::PathBuf;

use serde_json::json;

use super::Ctx;
use crate::exit::{BadInput, ExitStatus};
use crate::pipeline::record::{NodeRecord, NodeVerdict, StepRecord};
use crate::vmlab::VmSpec;

/// The bench rack's loopback network.
const NET: u8 = 204;

fn step<'a>(n: &'a NodeRecord, name: &str) -> Option<&'a StepRecord> {
    n.steps
        .iter()
        .find(|s| s.stage == "image" && s.step == name)
}

/// Runs `kiln bench deploy`.
pub fn run(ctx: &Ctx, vms: u8, dir: Option<PathBuf>) -> anyhow::Result<ExitStatus> {
    if let Some(why) = super::demo_vm::lacks("kiln bench deploy") {
        return Err(BadInput(why).into());
    }
    if !(1..=8).contains(&vms) {
        return Err(BadInput(format!("--vms must be 1 to 8, not {vms}")).into());
    }
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("kiln-bench-deploy"));
    super::demo::prepare(&dir)?;
    let specs: Vec<VmSpec> = (0..vms)
        .map(|i| VmSpec::new(&format!("vm-n{}", i + 1), NET, i))
        .collect();
    let served_before = crate::imaging::server::bytes_served();
    let run = super::demo_vm::image_rack(ctx, &dir, "kiln-bench", &specs, &[], true)?;
    let served = crate::imaging::server::bytes_served() - served_before;
    let Some(finished) = &run.finished else {
        return Ok(ExitStatus::Success);
    };
    // The run's summary leaves out step metrics; the journal has them.
    let full =
        crate::pipeline::journal::Journal::open(&run.state)?.load(&finished.record.run.id)?;
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for n in &full.nodes {
        let on = step(n, "power-on").and_then(|s| s.started_ms);
        let ssh = step(n, "wait-ssh").and_then(|s| Some(s.started_ms? + s.duration_ms?));
        let written = step(n, "wait-written");
        let m = written.map(|s| &s.metrics);
        let write_s = m.and_then(|m| m["write_s"].as_f64());
        let peer_s = m.and_then(|m| m["peer_write_s"].as_f64());
        let bytes = m.and_then(|m| m["bytes"].as_u64());
        let ratio = match (write_s, peer_s) {
            (Some(k), Some(p)) if k > 0.0 => Some(p / k),
            _ => None,
        };
        ratios.extend(ratio);
        rows.push(json!({
            "node": n.name,
            "verdict": n.verdict,
            "power_on_to_ssh_s": match (on, ssh) {
                (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1000.0),
                _ => None,
            },
            "image_bytes": bytes,
            "write_s": write_s,
            "peer_write_s": peer_s,
            "write_rate_ratio": ratio,
            "reasons": n.reasons,
        }));
    }
    let gib = served as f64 / f64::from(1u32 << 30);
    let all_ok = finished
        .record
        .nodes
        .iter()
        .all(|n| n.verdict == NodeVerdict::Accepted);
    let min_ratio = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let report = json!({
        "vms": vms,
        "accel": run.rack.info.accel,
        "nodes": rows,
        "write_rate_ratio_min": (!ratios.is_empty()).then_some(min_ratio),
        "write_rate_goal": 0.8,
        "boot_server_bytes": served,
        "kiln_cpu_s": run.cpu_s,
        "kiln_cpu_s_per_gib_served": (gib > 0.0).then(|| run.cpu_s / gib),
    });
    if ctx.printer.json {
        ctx.printer.json_data(&report)?;
    } else {
        let mut text = format!(
            "kiln bench deploy: {vms} VM(s), {} ({})\n",
            run.rack.info.accel,
            if run.rack.info.accel == "tcg" {
                "software emulation: every time is the emulator's, compare ratios"
            } else {
                "hardware virtualisation"
            }
        );
        for r in report["nodes"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "  {}: {}, power-on to verified SSH {} s, image write {} s against a plain dd's {} s (ratio {})\n",
                r["node"].as_str().unwrap_or_default(),
                r["verdict"].as_str().unwrap_or_default(),
                fmt(&r["power_on_to_ssh_s"]),
                fmt(&r["write_s"]),
                fmt(&r["peer_write_s"]),
                fmt(&r["write_rate_ratio"]),
            ));
        }
        text.push_str(&format!(
            "  boot server: {gib:.2} GiB served; kiln's CPU {:.1} s in all, {} s per GiB served (whole process)\n  write-rate goal: >= 0.8 of the plain copy; lowest {}\n",
            run.cpu_s,
            fmt(&report["kiln_cpu_s_per_gib_served"]),
            fmt(&report["write_rate_ratio_min"]),
        ));
        ctx.printer.data(&text);
    }
    Ok(if all_ok {
        ExitStatus::Success
    } else {
        ExitStatus::NodeFailed
    })
}

fn fmt(v: &serde_json::Value) -> String {
    v.as_f64()
        .map(|f| format!("{f:.2}"))
        .unwrap_or_else(|| "-".into())
}
