//! `kiln bench firmware`: the firmware stage on a virtual rack served by a
//! child `kiln sim up`.
//! Reports the BMC requests per node a baseline check costs when nothing
//! needs updating, and an update wave's wall time against its bound: one
//! node alone through the same stage, times the rack's waves
//! (`ceil(8 / per_rack)`), measured in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::commands::Ctx;
use crate::commands::bench_sim::{self, SimChild, pin};
use crate::commands::provision::{self, ImagingRequest, Request};
use crate::exit::{BadInput, ExitStatus};
use crate::inventory::generate::SiteSpec;
use crate::pipeline::progress::Mode;
use crate::pipeline::record::NodeVerdict;

/// Nodes per generated rack, as `kiln bench fleet`.
const PER_RACK: u32 = 8;

/// The version the sim's generic BMC reports; the baseline sits above it.
const TARGET: &str = "9.9.9";

/// Runs the benchmark: `nodes` below the baseline (racks of 8), at most
/// `per_rack` updating at once per rack, the simulated clock running
/// `time_scale` times faster; BMCs on 127.`net`.x.x.
pub fn run(
    ctx: &Ctx,
    nodes: u32,
    per_rack: usize,
    time_scale: f64,
    net: u8,
) -> anyhow::Result<ExitStatus> {
    if nodes == 0 || per_rack == 0 {
        return Err(BadInput("--nodes and --per-rack must be at least 1".into()).into());
    }
    if !(time_scale.is_finite() && time_scale >= 1.0) {
        return Err(BadInput(format!("--time-scale must be 1 or more, not {time_scale}")).into());
    }
    let dir = std::env::temp_dir().join(format!("kiln-bench-firmware-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("cannot create a scratch folder")?;
    let result = measure(ctx, &dir, nodes, per_rack, time_scale, net);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    if ctx.printer.json {
        ctx.printer.json_data(&report)?;
    } else {
        ctx.printer.data(&format!(
            "firmware check, baseline met: {:.1} BMC requests per node (preflight alone: {:.1})\nupdate wave: {} nodes, {} per rack at once: {:.2} s; one node alone {:.2} s; bound {:.2} s; wall/bound {:.2}; {} accepted\n",
            report["check"]["requests_per_node"].as_f64().unwrap_or(0.0),
            report["check"]["preflight_requests_per_node"]
                .as_f64()
                .unwrap_or(0.0),
            report["wave"]["nodes"],
            report["wave"]["per_rack"],
            report["wave"]["wall_s"].as_f64().unwrap_or(0.0),
            report["wave"]["critical_path_s"].as_f64().unwrap_or(0.0),
            report["wave"]["bound_s"].as_f64().unwrap_or(0.0),
            report["wave"]["ratio"].as_f64().unwrap_or(0.0),
            report["wave"]["accepted"],
        ));
    }
    Ok(ExitStatus::Success)
}

fn measure(
    ctx: &Ctx,
    dir: &Path,
    nodes: u32,
    per_rack: usize,
    time_scale: f64,
    net: u8,
) -> anyhow::Result<serde_json::Value> {
    let site = write_site(dir, nodes, per_rack, net)?;
    let inventory = ctx.load_generated(&site, "the benchmark's inventory")?;
    let state = crate::bmc::trust::state_dir(&site);
    // The simulator runs as a child process (as for `kiln bench fleet`):
    // a thousand simulated TLS BMCs in kiln's own process would compete
    // with kiln for its threads and the wave would measure both.
    let scale = time_scale.to_string();
    let (mut sim, endpoints) = SimChild::start(
        &site,
        &["--flavour", "generic", "--time-scale", &scale],
        true,
    )?;
    pin(&state, &inventory, &endpoints)?;
    let runtime = crate::commands::runtime()?;
    let mut requests =
        || -> anyhow::Result<u64> { Ok(sim.requests()?.values().filter_map(|v| v.as_u64()).sum()) };
    runtime.block_on(async {
        let bind = std::net::SocketAddr::from(([127, net, 255, 254], 0));
        let run = |select: Option<String>, stages: &str| {
            let request = Request {
                select,
                stages: Some(stages.into()),
                concurrency: Some(inventory.nodes.len()),
                bmc_timeout: Some(Duration::from_secs(120)),
                imaging: ImagingRequest {
                    bind: Some(bind),
                    ..ImagingRequest::default()
                },
                ..Request::default()
            };
            let inventory = &inventory;
            let site = &site;
            let state = &state;
            async move {
                let t = Instant::now();
                let finished =
                    provision::execute(ctx, inventory, site, state, &request, Mode::Quiet)
                        .await?
                        .finished()
                        .ok_or_else(|| anyhow::anyhow!("no run"))?;
                let accepted = finished
                    .record
                    .nodes
                    .iter()
                    .filter(|n| n.verdict == NodeVerdict::Accepted)
                    .count();
                Ok::<_, anyhow::Error>((t.elapsed(), accepted))
            }
        };
        // The critical path: the last node alone (its rack stays below
        // the baseline for the wave, bar this one node).
        let last = inventory.nodes.last().map(|n| n.name.clone());
        let (one, _) = run(last, "preflight,firmware").await?;
        let (wall, accepted) = run(None, "preflight,firmware").await?;
        // Every node now meets the baseline: the firmware stage only checks.
        let before = requests()?;
        run(None, "preflight").await?;
        let preflight = requests()? - before;
        let before = requests()?;
        run(None, "preflight,firmware").await?;
        let both = requests()? - before;
        let n = inventory.nodes.len() as f64;
        let waves = (PER_RACK as usize).div_ceil(per_rack);
        let bound = one.as_secs_f64() * waves as f64;
        Ok(json!({
            "check": {
                "nodes": inventory.nodes.len(),
                "flavour": "generic",
                "requests_per_node": both.saturating_sub(preflight) as f64 / n,
                "preflight_requests_per_node": preflight as f64 / n,
            },
            "wave": {
                "nodes": inventory.nodes.len(),
                "per_rack": per_rack,
                "time_scale": time_scale,
                "wall_s": wall.as_secs_f64(),
                "critical_path_s": one.as_secs_f64(),
                "waves": waves,
                "bound_s": bound,
                "ratio": wall.as_secs_f64() / bound.max(f64::EPSILON),
                "accepted": accepted,
            },
        }))
    })
}

/// The site (racks of 8), its BMC password, a profile holding the BMC to
/// [`TARGET`], and the package that brings it there.
fn write_site(
    dir: &Path,
    nodes: u32,
    per_rack: usize,
    net: u8,
) -> anyhow::Result<std::path::PathBuf> {
    let in_rack = nodes.min(PER_RACK);
    let spec = SiteSpec {
        site: "bench-firmware".into(),
        racks: nodes.div_ceil(in_rack),
        nodes_per_rack: in_rack,
        base_bmc: std::net::Ipv4Addr::new(127, net, 0, 1),
        base_ssh: std::net::Ipv4Addr::new(127, net, 128, 1),
        ..SiteSpec::default()
    };
    let hardware = format!("hardware: {}", spec.hardware);
    // A whole rack powers on in one wave: the bench measures the firmware
    // bound, and the single node it is compared with never waits for a
    // second power-on wave (`bench fleet` measures those).
    let limits =
        format!("  firmware:\n    per_rack: {per_rack}\n  power_on:\n    per_rack: {in_rack}\n");
    let site = bench_sim::write_site(dir, spec, &limits, |text| {
        text.replace(&hardware, "hardware: bench-fw")
    })?;
    let package = format!("kiln-sim-firmware component=BMC version={TARGET}\npayload\n");
    std::fs::write(dir.join("fw.bin"), &package)?;
    let sha256: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(package.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let builtin = include_str!("../../inventories/profiles/hgx-h100-80gb-8x.yaml");
    let profile = builtin.replace("name: hgx-h100-80gb-8x", "name: bench-fw")
        + &format!(
            "firmware:\n  - component: bmc\n    match: {{ id: BMC }}\n    minimum: \"{TARGET}\"\n    package: {{ path: fw.bin, sha256: {sha256} }}\n    apply: immediate\n"
        );
    std::fs::create_dir_all(dir.join("profiles"))?;
    std::fs::write(dir.join("profiles/bench-fw.yaml"), profile)?;
    Ok(site)
}
