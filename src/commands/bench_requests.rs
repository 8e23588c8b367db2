//! The Redfish requests `kiln bench fleet` reports per BMC flavour: a
//! small preflight run against each simulated flavour, read back from the
//! journal's per-step counts and checked against what the simulator
//! served.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::commands::bench_sim::{self, SimChild, pin};
use crate::commands::provision::notices;
use crate::inventory::generate::SiteSpec;
use crate::pipeline::progress::Mode;
use crate::pipeline::record::{NodeVerdict, RunRecord};
use crate::run::{Request, execute};
use crate::sim::redfish::flavour::Vendor;

/// Nodes per flavour: one rack, one power-on wave, a few seconds.
const NODES: u32 = 4;

/// One flavour's counts: per `stage/step` (and per stage) the mean and
/// most requests a node sent, and the totals kiln and the simulator saw.
#[derive(Debug)]
pub struct FlavourCounts {
    /// `stage/step` and `stage` → (mean, max) per node.
    pub per_node: BTreeMap<String, (f64, u64)>,
    /// The sum of every step's `bmc_requests`.
    pub steps_total: u64,
    /// What the simulator served.
    pub served_total: u64,
    /// Nodes accepted, of [`NODES`].
    pub accepted: usize,
    /// Per node, the simulator's count less the node's steps' sum: the
    /// fewest and most (requests sent outside any step).
    pub outside_steps: (i64, i64),
}

/// Runs preflight over [`NODES`] simulated nodes of every flavour in turn,
/// each in its own simulator and folder under `dir`.
pub fn per_flavour(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
) -> anyhow::Result<BTreeMap<&'static str, FlavourCounts>> {
    let mut out = BTreeMap::new();
    for (i, vendor) in Vendor::ALL.into_iter().enumerate() {
        let dir = dir.join(format!("requests-{}", vendor.name()));
        std::fs::create_dir_all(&dir)?;
        out.insert(vendor.name(), one(runtime, &dir, vendor.name(), i as u8)?);
    }
    Ok(out)
}

fn one(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    flavour: &str,
    net: u8,
) -> anyhow::Result<FlavourCounts> {
    let spec = SiteSpec {
        site: format!("bench-requests-{flavour}"),
        racks: 1,
        nodes_per_rack: NODES,
        base_bmc: std::net::Ipv4Addr::new(127, 33, net, 1),
        base_ssh: std::net::Ipv4Addr::new(127, 43, net, 1),
        ..SiteSpec::default()
    };
    let limits = "  power_on:\n    per_rack: 4\n    interval: 1s\n";
    let site = bench_sim::write_site(dir, spec, limits, |text| text)?;
    let inventory = crate::inventory::load_file(&site)?
        .inventory
        .ok_or_else(|| anyhow::anyhow!("the generated inventory has errors"))?;
    let (mut sim, endpoints) =
        SimChild::start(&site, &["--flavour", flavour, "--time-scale", "1000"], true)?;
    let state = dir.join("state");
    pin(&state, &inventory, &endpoints)?;
    let quiet = crate::output::Printer::new(false, true, crate::output::ColorChoice::Never);
    let request = Request {
        stages: Some("preflight".into()),
        concurrency: Some(NODES as usize),
        bmc_timeout: Some(Duration::from_secs(60)),
        ..Request::default()
    };
    let finished = runtime
        .block_on(execute(
            &inventory,
            &site,
            &state,
            &request,
            Mode::Quiet,
            notices(&quiet),
        ))?
        .finished()
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    let served = sim.requests()?;
    let mut counts = summarise(&finished.record);
    counts.served_total = served.values().filter_map(Value::as_u64).sum();
    let outside: Vec<i64> = finished
        .record
        .nodes
        .iter()
        .map(|n| {
            let steps: u64 = n.steps.iter().filter_map(|s| s.bmc_requests).sum();
            let served = served.get(&n.name).and_then(Value::as_u64).unwrap_or(0);
            served as i64 - steps as i64
        })
        .collect();
    counts.outside_steps = (
        outside.iter().copied().min().unwrap_or(0),
        outside.iter().copied().max().unwrap_or(0),
    );
    Ok(counts)
}

/// Per node, the requests of each step and each stage, as mean and most.
pub fn summarise(record: &RunRecord) -> FlavourCounts {
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut steps_total = 0;
    for node in &record.nodes {
        let mut stages: BTreeMap<String, u64> = BTreeMap::new();
        for s in &node.steps {
            let n = s.bmc_requests.unwrap_or(0);
            steps_total += n;
            *stages.entry(s.stage.clone()).or_default() += n;
            per.entry(format!("{}/{}", s.stage, s.step))
                .or_default()
                .push(n);
        }
        for (stage, n) in stages {
            per.entry(stage).or_default().push(n);
        }
    }
    let per_node = per
        .into_iter()
        // Steps that never touch the BMC are left out of the table.
        .filter(|(_, v)| v.iter().any(|&n| n > 0))
        .map(|(k, v)| {
            let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
            (k, (mean, v.iter().copied().max().unwrap_or(0)))
        })
        .collect();
    FlavourCounts {
        per_node,
        steps_total,
        served_total: 0,
        outside_steps: (0, 0),
        accepted: record
            .nodes
            .iter()
            .filter(|n| n.verdict == NodeVerdict::Accepted)
            .count(),
    }
}

/// `requests_per_node` and `requests_total` for the JSON report.
pub fn to_json(all: &BTreeMap<&'static str, FlavourCounts>) -> (Value, Value) {
    let per_node = all
        .iter()
        .map(|(f, c)| {
            let rows = c
                .per_node
                .iter()
                .map(|(k, (mean, max))| (k.clone(), json!({"mean": mean, "max": max})))
                .collect::<serde_json::Map<_, _>>();
            (f.to_string(), Value::Object(rows))
        })
        .collect::<serde_json::Map<_, _>>();
    let totals = all
        .iter()
        .map(|(f, c)| {
            (
                f.to_string(),
                json!({
                    "nodes": NODES,
                    "accepted": c.accepted,
                    "kiln_steps": c.steps_total,
                    "simulator_served": c.served_total,
                    // Per node, sent outside any step (the session's
                    // logout at the end): fewest and most.
                    "outside_steps_per_node": {"min": c.outside_steps.0, "max": c.outside_steps.1},
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>();
    (Value::Object(per_node), Value::Object(totals))
}

/// The text table: one row per `stage/step` (and stage total), one column
/// per flavour, `mean/max` requests per node; then the totals.
pub fn to_text(all: &BTreeMap<&'static str, FlavourCounts>) -> String {
    let mut keys: Vec<&String> = all.values().flat_map(|c| c.per_node.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut text = format!(
        "Redfish requests per node ({NODES} nodes per flavour, preflight), mean/max:\n{:<28}",
        "step"
    );
    for f in all.keys() {
        text.push_str(&format!("{f:>12}"));
    }
    text.push('\n');
    for k in keys {
        text.push_str(&format!("{k:<28}"));
        for c in all.values() {
            let cell = c
                .per_node
                .get(k)
                .map_or("-".to_owned(), |(mean, max)| format!("{mean:.1}/{max}"));
            text.push_str(&format!("{cell:>12}"));
        }
        text.push('\n');
    }
    text.push_str(&format!("{:<28}", "total: kiln steps/simulator"));
    for c in all.values() {
        text.push_str(&format!(
            "{:>12}",
            format!("{}/{}", c.steps_total, c.served_total)
        ));
    }
    text.push_str("\n(requests outside any step: the session's logout at the end)\n");
    text
}
