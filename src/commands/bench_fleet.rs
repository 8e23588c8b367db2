//! `kiln bench fleet`: a whole simulated site through `kiln provision
//! --stages preflight` (every BMC reached, identified, its GPUs and
//! firmware read, and powered on in rack waves), against the critical path
//! measured in the same run: one node alone through the same stage, plus
//! the waits its rack's power-on waves impose. Reports the ratio and this
//! process's peak memory. The simulator runs as a child process (`kiln sim
//! up`), so the memory is kiln's own.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::commands::bench_sim::{self, SimChild, pin};
use crate::commands::provision::notices;
use crate::exit::{BadInput, ExitStatus};
use crate::inventory::generate::SiteSpec;
use crate::pipeline::progress::Mode;
use crate::pipeline::record::NodeVerdict;
use crate::run::{Request, execute};

/// Nodes per rack in the generated site (8-GPU HGX nodes draw ~10 kW; a
/// 40 kW rack holds four to eight).
const PER_RACK: u32 = 8;
/// Power-on waves: nodes per wave and rack, and the interval.
const WAVE: usize = 4;
const WAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Open files kept for everything but BMC connections (journal, logs).
const FD_SPARE: u64 = 256;
/// Most nodes one simulator process serves.
const SIM_MAX_NODES: u64 = 4_000;

/// A scratch folder removed at the end (unless kept).
struct Scratch(std::path::PathBuf, bool);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.1 {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark.
pub fn run(ctx: &Ctx, nodes: u32, latency: Duration, keep: bool) -> anyhow::Result<ExitStatus> {
    if nodes == 0 {
        return Err(BadInput("--nodes must be at least 1".into()).into());
    }
    let dir = Scratch(
        std::env::temp_dir().join(format!("kiln-bench-fleet-{}", std::process::id())),
        keep,
    );
    std::fs::create_dir_all(dir.path()).context("cannot create a scratch folder")?;
    let site = write_site(dir.path(), nodes, latency)?;
    let checked = crate::inventory::load_file(&site)?;
    let inventory = checked
        .inventory
        .ok_or_else(|| anyhow::anyhow!("the generated inventory has errors"))?;
    // kiln holds a connection per BMC; each simulator process a listener
    // and a connection per BMC. Split the site over enough simulators.
    let files = crate::fdlimit::raise().unwrap_or(1024);
    let site_nodes = inventory.nodes.len() as u64;
    if site_nodes + FD_SPARE > files {
        return Err(BadInput(format!(
            "{site_nodes} nodes need about {} open files and the limit is {files}; raise it (ulimit -n)",
            site_nodes + FD_SPARE
        ))
        .into());
    }
    let per_sim = ((files - FD_SPARE) / 2).clamp(u64::from(PER_RACK), SIM_MAX_NODES);
    let racks_per_sim = (per_sim / u64::from(PER_RACK)) as usize;
    let started = Instant::now();
    let mut sims = Vec::new();
    let mut endpoints = Vec::new();
    for racks in inventory.racks.chunks(racks_per_sim.max(1)) {
        let select: Vec<String> = racks.iter().map(|r| format!("rack:{}", r.name)).collect();
        let (sim, mut more) = start_sim(dir.path(), &site, &select.join(","))?;
        sims.push(sim);
        endpoints.append(&mut more);
    }
    let sim_start = started.elapsed();
    let sims_count = sims.len();
    let state = dir.path().join("state");
    pin(&state, &inventory, &endpoints)?;
    // The site is whole racks, so it may hold a few more nodes than asked.
    let asked = nodes;
    let nodes = u32::try_from(inventory.nodes.len()).unwrap_or(u32::MAX);
    let runtime = crate::commands::runtime()?;
    // The runs report nothing: only the benchmark's own figures print.
    let quiet = crate::output::Printer::new(false, true, crate::output::ColorChoice::Never);
    let request = |select: Option<&str>| Request {
        select: select.map(str::to_owned),
        stages: Some("preflight".into()),
        concurrency: Some(nodes as usize),
        bmc_timeout: Some(Duration::from_secs(120)),
        ..Request::default()
    };
    // The bound: one node alone, then the rack's waves on top.
    let first = inventory
        .nodes
        .first()
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let t = Instant::now();
    let one = runtime
        .block_on(execute(
            &inventory,
            &site,
            &state,
            &request(Some(&first)),
            Mode::Quiet,
            notices(&quiet),
        ))?
        .finished()
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    let one_node = t.elapsed();
    // That node stays on: in the site run its power-on step finds it on,
    // which leaves its rack's wave count unchanged.
    let per_rack = nodes.min(PER_RACK) as usize;
    let waves = per_rack.div_ceil(WAVE).saturating_sub(1) as u32;
    let bound = one_node + WAVE_INTERVAL * waves;

    let sim_pids: Vec<u32> = sims.iter().map(|s| s.id()).collect();
    let sim_before: f64 = sim_pids.iter().filter_map(|p| process_cpu(*p)).sum();
    let cpu_before = cpu_seconds(UsageWho::RUSAGE_SELF);
    let t = Instant::now();
    let all = runtime
        .block_on(execute(
            &inventory,
            &site,
            &state,
            &request(None),
            Mode::Quiet,
            notices(&quiet),
        ))?
        .finished()
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    let wall = t.elapsed();
    let kiln_cpu = cpu_seconds(UsageWho::RUSAGE_SELF) - cpu_before;
    let sim_site_cpu = sim_pids.iter().filter_map(|p| process_cpu(*p)).sum::<f64>() - sim_before;
    // With kiln and the simulators sharing the cores, the site cannot take
    // less than their CPU time spread over every core: the ratio this
    // machine allows at best.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let floor = (kiln_cpu + sim_site_cpu) / cores as f64 / bound.as_secs_f64();
    let accepted = all
        .record
        .nodes
        .iter()
        .filter(|n| n.verdict == NodeVerdict::Accepted)
        .count();
    let failures: Vec<String> = all
        .record
        .nodes
        .iter()
        .filter(|n| n.verdict != NodeVerdict::Accepted)
        .take(3)
        .map(|n| format!("{}: {}", n.name, n.reasons.join("; ")))
        .collect();
    let peak = super::bench::peak_rss_bytes();
    let journal = std::fs::metadata(state.join(crate::pipeline::journal::FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    drop(sims);
    // The simulators have been waited for, so their time is counted now
    // (start-up and the one-node run included).
    let sim_cpu = cpu_seconds(UsageWho::RUSAGE_CHILDREN);
    // Then a few nodes of each BMC flavour: what each step asks of it.
    let flavours = crate::commands::bench_requests::per_flavour(&runtime, dir.path())?;
    let (requests_per_node, requests_total) = crate::commands::bench_requests::to_json(&flavours);
    let ratio = wall.as_secs_f64() / bound.as_secs_f64();
    let report = json!({
        "nodes": nodes,
        "nodes_asked": asked,
        "racks": nodes.div_ceil(PER_RACK),
        "bmc_latency_ms": latency.as_millis() as u64,
        "power_on_waves": {"per_rack": WAVE, "interval_s": WAVE_INTERVAL.as_secs_f64()},
        "sim_start_s": sim_start.as_secs_f64(),
        "simulators": sims_count,
        "one_node_s": one_node.as_secs_f64(),
        "one_node_verdict": one.record.nodes.first().map(|n| n.verdict.word()),
        "critical_path_s": bound.as_secs_f64(),
        "wall_s": wall.as_secs_f64(),
        "ratio": ratio,
        "goal_ratio": 1.10,
        "accepted": accepted,
        "failures": failures,
        "peak_rss_mib": peak.map(|b| b as f64 / 1048576.0),
        "goal_rss_mib": 1024,
        "journal_mib": journal as f64 / 1048576.0,
        "kiln_cpu_s": kiln_cpu,
        "simulator_cpu_s": sim_cpu,
        "simulator_site_cpu_s": sim_site_cpu,
        "cores": cores,
        "cpu_floor_ratio": floor,
        // What one node costs both sides: with the cores shared, this
        // times the nodes over the cores is the floor's numerator.
        "cpu_ms_per_node": {
            "kiln": kiln_cpu * 1000.0 / f64::from(nodes),
            "simulators": sim_site_cpu * 1000.0 / f64::from(nodes),
        },
        "requests_per_node": requests_per_node,
        "requests_total": requests_total,
        "kept": keep.then(|| dir.path().display().to_string()),
    });
    if ctx.printer.json {
        ctx.printer.json_data(&report)?;
    } else {
        ctx.printer.data(&format!(
            "fleet of {nodes} nodes ({} racks), BMC latency {} ms\n\
             one node through preflight + power-on: {:.2} s; critical path with {waves} wave wait(s): {:.2} s\n\
             whole site: {:.2} s  →  ratio {ratio:.3} (goal ≤ 1.10)\n\
             accepted {accepted} of {nodes}; peak memory {:.0} MiB (goal ≤ 1024); journal {:.1} MiB; simulator start {:.1} s\n\
             CPU during the site run: kiln {kiln_cpu:.1} s, simulators {sim_site_cpu:.1} s ({} process(es); {sim_cpu:.1} s with start-up); {:.2} of {cores} cores busy on average; per node {:.2} ms kiln, {:.2} ms simulators\n\
             CPU floor: kiln and simulators on {cores} cores allow a ratio of {floor:.3} at best\n",
            nodes.div_ceil(PER_RACK),
            latency.as_millis(),
            one_node.as_secs_f64(),
            bound.as_secs_f64(),
            wall.as_secs_f64(),
            report["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            report["journal_mib"].as_f64().unwrap_or(0.0),
            sim_start.as_secs_f64(),
            sims_count,
            (kiln_cpu + sim_site_cpu) / wall.as_secs_f64(),
            kiln_cpu * 1000.0 / f64::from(nodes),
            sim_site_cpu * 1000.0 / f64::from(nodes),
        ));
        ctx.printer
            .data(&crate::commands::bench_requests::to_text(&flavours));
        for f in &failures {
            ctx.printer.info(&format!("not accepted: {f}"));
        }
        if keep {
            ctx.printer.info(&format!(
                "kept {} (site.yaml; state/journal.sqlite holds both runs)",
                dir.path().display()
            ));
        }
    }
    Ok(if accepted == nodes as usize {
        ExitStatus::Success
    } else {
        ExitStatus::NodeFailed
    })
}

/// User plus system CPU seconds of a running process, from
/// `/proc/PID/stat` (in clock ticks, which Linux fixes at 100 a second for
/// user space).
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after
    // the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// User plus system CPU seconds of this process or its waited-for children.
fn cpu_seconds(who: UsageWho) -> f64 {
    let Ok(usage) = getrusage(who) else {
        return 0.0;
    };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// A generated site on loopback (BMCs from 127.32.0.1), its password in a
/// file, power-on waves as the bench assumes, and the latency fault.
fn write_site(dir: &Path, nodes: u32, latency: Duration) -> anyhow::Result<std::path::PathBuf> {
    let per_rack = nodes.min(PER_RACK);
    let spec = SiteSpec {
        site: "bench-fleet".into(),
        racks: nodes.div_ceil(per_rack),
        nodes_per_rack: per_rack,
        base_bmc: std::net::Ipv4Addr::new(127, 32, 0, 1),
        base_ssh: std::net::Ipv4Addr::new(127, 42, 0, 1),
        ..SiteSpec::default()
    };
    let limits = format!(
        "  power_on:\n    per_rack: {WAVE}\n    interval: {}s\n",
        WAVE_INTERVAL.as_secs()
    );
    let site = bench_sim::write_site(dir, spec, &limits, |text| text)?;
    // Each response takes the latency give or take a twentieth, varying
    // per request and per BMC as real ones do.
    let jitter = latency / 10;
    std::fs::write(
        dir.join("faults.yaml"),
        format!(
            "faults:\n  - nodes: \"*\"\n    bmc_latency: {}ms\n    bmc_jitter: {}ms\n",
            (latency - jitter / 2).as_millis(),
            jitter.as_millis()
        ),
    )?;
    Ok(site)
}

/// Starts `kiln sim up` for the selected part of the site and reads its
/// endpoints.
fn start_sim(dir: &Path, site: &Path, select: &str) -> anyhow::Result<(SimChild, Vec<Value>)> {
    let faults = dir.join("faults.yaml");
    let faults = faults
        .to_str()
        .context("the scratch folder's name is not UTF-8")?;
    SimChild::start(
        site,
        &[
            "--flavour",
            "generic",
            "--faults",
            faults,
            "--time-scale",
            "1000",
            "--select",
            select,
        ],
        false,
    )
}
