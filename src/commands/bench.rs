//! `kiln bench …`: kiln's own speed and memory, reported against a peer
//! measured in the same run so a noisy machine cannot fake a result.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Ctx;
use crate::cli::BenchCommand;
use crate::exit::{BadInput, ExitStatus};
use crate::inventory::generate::{SiteSpec, generate};
use crate::profiles::Catalog;

/// Runs `kiln bench …`.
pub fn run(ctx: &Ctx, cmd: BenchCommand) -> anyhow::Result<ExitStatus> {
    match cmd {
        BenchCommand::Inventory { nodes, runs } => inventory(ctx, nodes, runs),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Peak resident memory of this process so far (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn inventory(ctx: &Ctx, nodes: u32, runs: u32) -> anyhow::Result<ExitStatus> {
    if nodes == 0 || runs == 0 {
        return Err(BadInput("--nodes and --runs must be at least 1".into()).into());
    }
    let per_rack = nodes.min(20);
    let spec = SiteSpec {
        site: "bench".into(),
        racks: nodes.div_ceil(per_rack),
        nodes_per_rack: per_rack,
        ..SiteSpec::default()
    };
    let text = generate(&spec)?;
    let catalog =
        Catalog::builtin().map_err(|_| anyhow::anyhow!("built-in profiles are invalid"))?;
    let rss_before = peak_rss_bytes();

    // The peer: parsing the same YAML, with the same limits, into a generic
    // tree and nothing else.
    let mut parse = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let value: serde_json::Value =
            serde_saphyr::from_str_with_options(&text, crate::yaml::options())?;
        parse.push(start.elapsed());
        drop(value);
    }
    // kiln: parse, validate every rule, resolve every node.
    let mut check = Vec::new();
    let mut resolved = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let checked = crate::inventory::check_str(
            "bench.yaml",
            text.clone(),
            Path::new("."),
            catalog.clone(),
        );
        check.push(start.elapsed());
        anyhow::ensure!(checked.errors() == 0, "generated inventory has errors");
        resolved = checked.inventory.map_or(0, |i| i.nodes.len());
    }
    let (parse, check) = (median(parse), median(check));
    let ratio = check.as_secs_f64() / parse.as_secs_f64().max(1e-9);
    let peak = peak_rss_bytes();
    let mib = |b: Option<u64>| b.map(|b| b as f64 / (1024.0 * 1024.0));
    let report = json!({
        "bench": "inventory",
        "nodes": resolved,
        "gpus": resolved * 8,
        "yaml_bytes": text.len(),
        "runs": runs,
        "yaml_parse_s": parse.as_secs_f64(),
        "kiln_check_s": check.as_secs_f64(),
        "ratio_to_yaml_parse": ratio,
        "nodes_per_s": resolved as f64 / check.as_secs_f64().max(1e-9),
        "peak_rss_mib": mib(peak),
        "rss_before_mib": mib(rss_before),
    });
    if ctx.printer.json {
        ctx.printer.json_data(&report)?;
    } else {
        ctx.printer.data(&format!(
            "inventory check, {resolved} nodes ({} GPUs), {:.1} MiB of YAML, median of {runs}:\n\
             \x20 YAML parse alone (serde-saphyr -> generic tree): {:>8.1} ms\n\
             \x20 kiln check (parse + validate + resolve):          {:>8.1} ms  ({ratio:.2}x the parse)\n\
             \x20 peak RSS: {:.0} MiB (before the runs: {:.0} MiB)\n",
            resolved * 8,
            text.len() as f64 / (1024.0 * 1024.0),
            parse.as_secs_f64() * 1e3,
            check.as_secs_f64() * 1e3,
            mib(peak).unwrap_or(f64::NAN),
            mib(rss_before).unwrap_or(f64::NAN),
        ));
    }
    Ok(ExitStatus::Success)
}
