//! `kiln bench bmc`: `kiln bmc status` over many simulated BMCs that each
//! answer slowly, against the same status of one BMC, in one run. With
//! enough concurrency the fleet should take about as long as one BMC; the
//! simulator itself counts how many requests each BMC had in flight at
//! once, so the per-BMC limit is checked by the server, not the client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Ctx;
use crate::bmc::client::BmcClient;
use crate::bmc::connect;
use crate::bmc::transport::TransportOptions;
use crate::bmc::trust::TrustStore;
use crate::exit::{BadInput, ExitStatus};

/// One `kiln bmc status` unit of work: discover, read, log out.
async fn status_once(client: Arc<BmcClient>) -> Result<usize, String> {
    let result = async {
        let layout = crate::bmc::discover::discover(&client, None).await?;
        crate::bmc::facts::status(&client, &layout).await
    }
    .await;
    client.logout().await;
    result.map(|s| s.gpus.len()).map_err(|e| e.to_string())
}

/// Runs the benchmark.
pub fn run(
    ctx: &Ctx,
    nodes: u32,
    latency: Duration,
    concurrency: Option<usize>,
) -> anyhow::Result<ExitStatus> {
    if nodes == 0 {
        return Err(BadInput("--nodes must be at least 1".into()).into());
    }
    let concurrency = concurrency.unwrap_or(nodes as usize).max(1);
    let inventory = super::bench::loopback_site("bench-bmc", nodes, 31, 41)?;
    let selected: Vec<&crate::inventory::Node> =
        inventory.nodes.iter().take(nodes as usize).collect();
    let faults = crate::sim::faults::FaultPlan::parse(
        "bench-faults.yaml",
        &format!(
            "faults:\n  - nodes: \"*\"\n    bmc_latency: {}ms\n",
            latency.as_millis()
        ),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let options = crate::sim::SimOptions {
            ssh: false,
            faults,
            ..crate::sim::SimOptions::default()
        };
        let rack = crate::sim::start(&inventory, &selected, options).await?;
        // Pin each simulated BMC as `kiln bmc trust` would have.
        let dir = std::env::temp_dir().join(format!("kiln-bench-bmc-{}", std::process::id()));
        let mut store = TrustStore::load(&TrustStore::path_in(&dir))?;
        for (node, endpoint) in selected.iter().zip(&rack.endpoints) {
            let fp = endpoint
                .bmc_fingerprint
                .replace(':', "")
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?;
            store.set(&node.name, &node.bmc.endpoint.to_string(), &fp);
        }
        let transport = TransportOptions {
            max_in_flight: inventory.limits.per_bmc.max(1),
            ..TransportOptions::default()
        };
        // The generated inventory's password variable is unset, so the
        // simulator made one up per node: log in with those.
        let mut clients = Vec::with_capacity(selected.len());
        for (node, endpoint) in selected.iter().zip(&rack.endpoints) {
            let tls = crate::bmc::trust::client_config(node, &store)?;
            let host = node.bmc.endpoint.host.to_string();
            let t = crate::bmc::transport::Transport::new(
                &host,
                node.bmc.endpoint.port,
                tls,
                transport.clone(),
            );
            clients.push(Arc::new(BmcClient::new(
                &node.name,
                t,
                &endpoint.username,
                crate::secret::Secret::new(endpoint.password.clone()),
            )));
        }

        // One BMC, three times; the median is the bound.
        let mut one = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            status_once(Arc::clone(&clients[0]))
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            one.push(t.elapsed());
        }
        one.sort();
        let one = one[1];
        let before: u64 = rack.bmcs.iter().map(|b| b.requests()).sum();

        let rss_before = super::bench::rss_now();
        let start = Instant::now();
        let results = connect::each(clients, concurrency, status_once, |_, _| {}).await;
        let all = start.elapsed();
        let requests: u64 = rack.bmcs.iter().map(|b| b.requests()).sum::<u64>() - before;
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        let peak = rack
            .bmcs
            .iter()
            .map(|b| b.peak_in_flight())
            .max()
            .unwrap_or(0);
        Ok::<_, anyhow::Error>(json!({
            "bench": "bmc",
            "nodes": selected.len(),
            "latency_ms": latency.as_millis() as u64,
            "concurrency": concurrency,
            "one_bmc_s": one.as_secs_f64(),
            "all_bmcs_s": all.as_secs_f64(),
            "ratio": all.as_secs_f64() / one.as_secs_f64().max(1e-9),
            "requests_per_status": requests as f64 / selected.len() as f64,
            "per_bmc_limit": transport.max_in_flight,
            "peak_in_flight_per_bmc": peak,
            "rss_mib": super::bench::rss_now().map(|b| b as f64 / 1048576.0),
            "rss_before_mib": rss_before.map(|b| b as f64 / 1048576.0),
            "failures": failures.len(),
            "first_failure": failures.first(),
        }))
    })?;
    let peak = report["peak_in_flight_per_bmc"].as_u64().unwrap_or(0);
    let limit = report["per_bmc_limit"].as_u64().unwrap_or(1);
    if ctx.printer.json {
        ctx.printer.json_data(&report)?;
    } else {
        ctx.printer.data(&format!(
            "kiln bmc status over {} simulated BMCs, {} ms per request, {} at a time:\n\
             \x20 one BMC: {:.2} s ({:.0} requests)\n\
             \x20 all BMCs: {:.2} s, ratio {:.3} (goal <= 1.2)\n\
             \x20 most requests in flight at one BMC: {peak} (limit {limit})\n\
             \x20 RSS: {:.0} MiB, failures: {}\n",
            report["nodes"],
            report["latency_ms"],
            report["concurrency"],
            report["one_bmc_s"].as_f64().unwrap_or(f64::NAN),
            report["requests_per_status"].as_f64().unwrap_or(f64::NAN),
            report["all_bmcs_s"].as_f64().unwrap_or(f64::NAN),
            report["ratio"].as_f64().unwrap_or(f64::NAN),
            report["rss_mib"].as_f64().unwrap_or(f64::NAN),
            report["failures"],
        ));
    }
    if peak > limit || report["failures"].as_u64() != Some(0) {
        return Ok(ExitStatus::NodeFailed);
    }
    Ok(ExitStatus::Success)
}
