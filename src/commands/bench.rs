//! `kiln bench …`: kiln's own speed and memory, reported against a peer
//! measured in the same run so a noisy machine cannot fake a result.

use std::path::Path;
use std::sync::Arc;
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
        BenchCommand::Fleet {
            nodes,
            latency,
            keep,
        } => super::bench_fleet::run(ctx, nodes, latency, keep),
        BenchCommand::Sim {
            nodes,
            ssh,
            concurrency,
        } => sim(ctx, nodes, ssh, concurrency),
        BenchCommand::Bmc {
            nodes,
            latency,
            concurrency,
        } => super::bench_bmc::run(ctx, nodes, latency, concurrency),
        BenchCommand::Bootserver {
            size,
            clients,
            runs,
        } => super::bench_bootserver::run(ctx, size, clients, runs),
        BenchCommand::Firmware {
            nodes,
            per_rack,
            time_scale,
            net,
        } => super::bench_firmware::run(ctx, nodes, per_rack, time_scale, net),
        BenchCommand::Deploy { vms, dir } => super::bench_deploy::run(ctx, vms, dir),
        BenchCommand::Ssh {
            hosts,
            fanout,
            runs,
            user,
        } => super::bench_ssh::run(ctx, hosts, fanout, runs, user),
    }
}

/// A generated site of `nodes` nodes in racks of 32, BMCs from
/// 127.`bmc_net`.0.1:8443 and SSH from 127.`ssh_net`.0.1:2222.
pub fn loopback_site(
    name: &str,
    nodes: u32,
    bmc_net: u8,
    ssh_net: u8,
) -> anyhow::Result<crate::inventory::Inventory> {
    let per_rack = nodes.min(32);
    let spec = SiteSpec {
        site: name.into(),
        racks: nodes.div_ceil(per_rack),
        nodes_per_rack: per_rack,
        base_bmc: std::net::Ipv4Addr::new(127, bmc_net, 0, 1),
        bmc_port: Some(8443),
        base_ssh: std::net::Ipv4Addr::new(127, ssh_net, 0, 1),
        ssh_port: Some(2222),
        ..SiteSpec::default()
    };
    let text = generate(&spec)?;
    let catalog =
        Catalog::builtin().map_err(|_| anyhow::anyhow!("built-in profiles are invalid"))?;
    let checked =
        crate::inventory::check_str(&format!("{name}.yaml"), text, Path::new("."), catalog);
    checked
        .inventory
        .ok_or_else(|| anyhow::anyhow!("generated inventory has errors"))
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

/// Resident memory of this process now (Linux), in bytes.
pub fn rss_now() -> Option<u64> {
    rss_bytes()
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn sim(ctx: &Ctx, nodes: u32, ssh: bool, concurrency: usize) -> anyhow::Result<ExitStatus> {
    if nodes == 0 || concurrency == 0 {
        return Err(BadInput("--nodes and --concurrency must be at least 1".into()).into());
    }
    let inventory = loopback_site("bench", nodes, 30, 40)?;
    let selected: Vec<&crate::inventory::Node> =
        inventory.nodes.iter().take(nodes as usize).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let rss_before = rss_bytes();
        let imaged = if ssh {
            let key = crate::sim::ssh::generate_host_key()?;
            Some(vec![crate::sim::ssh::public_line(&key)?])
        } else {
            None
        };
        let options = crate::sim::SimOptions {
            ssh,
            imaged,
            ..crate::sim::SimOptions::default()
        };
        let start = Instant::now();
        let rack = crate::sim::start(&inventory, &selected, options).await?;
        let startup = start.elapsed();
        let rss_serving = rss_bytes();
        let endpoints = Arc::new(rack.endpoints.clone());

        // One BMC, one fresh connection per request: the unit of work.
        let mut one = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            probe_bmc(&endpoints[0]).await?;
            one.push(t.elapsed());
        }
        let one = median(one);
        // Every BMC once, `concurrency` at a time.
        let start = Instant::now();
        let failures = reach_all(Arc::clone(&endpoints), concurrency, ssh).await;
        let all = start.elapsed();
        let mib = |b: Option<u64>| b.map(|b| b as f64 / (1024.0 * 1024.0));
        Ok::<_, anyhow::Error>(json!({
            "bench": "sim",
            "nodes": endpoints.len(),
            "ssh": ssh,
            "startup_s": startup.as_secs_f64(),
            "rss_mib": mib(rss_serving),
            "rss_before_mib": mib(rss_before),
            "kib_per_node": rss_serving.zip(rss_before).map(|(a, b)| (a.saturating_sub(b)) as f64 / 1024.0 / endpoints.len() as f64),
            "one_bmc_request_ms": one.as_secs_f64() * 1e3,
            "all_bmcs_once_s": all.as_secs_f64(),
            "concurrency": concurrency,
            "requests_per_s": endpoints.len() as f64 / all.as_secs_f64().max(1e-9),
            "failures": failures,
        }))
    })?;
    if ctx.printer.json {
        ctx.printer.json_data(&report)?;
    } else {
        ctx.printer.data(&format!(
            "virtual rack of {} nodes ({}):\n\
             \x20 start-up: {:.2} s, RSS serving: {:.0} MiB ({:.1} KiB per node)\n\
             \x20 one BMC, fresh TLS connection + GET: {:.2} ms (median of 21)\n\
             \x20 every BMC once, {} at a time: {:.2} s ({:.0} requests/s), failures: {}\n",
            report["nodes"],
            if ssh { "BMC + SSH" } else { "BMC only" },
            report["startup_s"].as_f64().unwrap_or(f64::NAN),
            report["rss_mib"].as_f64().unwrap_or(f64::NAN),
            report["kib_per_node"].as_f64().unwrap_or(f64::NAN),
            report["one_bmc_request_ms"].as_f64().unwrap_or(f64::NAN),
            concurrency,
            report["all_bmcs_once_s"].as_f64().unwrap_or(f64::NAN),
            report["requests_per_s"].as_f64().unwrap_or(f64::NAN),
            report["failures"],
        ));
    }
    Ok(ExitStatus::Success)
}

async fn reach_all(
    endpoints: Arc<Vec<crate::sim::Endpoint>>,
    concurrency: usize,
    ssh: bool,
) -> usize {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(endpoints.len()) {
        let endpoints = Arc::clone(&endpoints);
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(e) = endpoints.get(i) else { break };
                if probe_bmc(e).await.is_err() {
                    failures += 1;
                }
                if ssh && probe_ssh(e).await.is_err() {
                    failures += 1;
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for w in workers {
        failures += w.await.unwrap_or(1);
    }
    failures
}

/// TCP connect, TLS with the BMC's certificate pinned, GET of the systems
/// collection with basic auth; 200 expected.
async fn probe_bmc(e: &crate::sim::Endpoint) -> anyhow::Result<()> {
    use base64::Engine as _;
    use http_body_util::{BodyExt, Empty};
    let pin: crate::inventory::Fingerprint = e
        .bmc_fingerprint
        .replace(':', "")
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let addr = e.bmc_url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let connector = tokio_rustls::TlsConnector::from(crate::bmc::tls::pinned(pin)?);
    let ip: std::net::IpAddr = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&addr)
        .parse()?;
    let tls = connector
        .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp)
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", e.username, e.password));
    let req = hyper::Request::get("/redfish/v1/Systems")
        .header(hyper::header::HOST, addr.as_str())
        .header(hyper::header::AUTHORIZATION, format!("Basic {auth}"))
        .body(Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    anyhow::ensure!(resp.status() == 200, "{}: HTTP {}", e.name, resp.status());
    resp.into_body().collect().await?;
    Ok(())
}

/// The node's SSH server answers with its banner.
async fn probe_ssh(e: &crate::sim::Endpoint) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut tcp = tokio::net::TcpStream::connect(&e.ssh).await?;
    let mut banner = [0u8; 8];
    tcp.read_exact(&mut banner).await?;
    anyhow::ensure!(&banner == b"SSH-2.0-", "{}: no SSH banner", e.name);
    Ok(())
}
