//! The acceptance stages against the virtual rack over real SSH and
//! Redfish: every GPU, fabric and facility fault fails exactly its node
//! with the right reason, healthy nodes pass, and bisection finds the one
//! bad node among 16.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::simrack::{Rack, RackSpec};
use kiln::acceptance::{
    BmcSensors, BurninOptions, NcclOptions, NodeCtx, burnin, nccl_node, nccl_pairs, nccl_rack,
    stragglers,
};
use kiln::bmc::client::BmcClient;
use kiln::bmc::transport::{Transport, TransportOptions};
use kiln::pipeline::step::{Steps, Stop};
use kiln::profiles::{Catalog, HardwareProfile};
use kiln::secret::Secret;
use kiln::ssh::auth::Credentials;
use kiln::ssh::exec::Discard;
use kiln::ssh::hostkeys::Verifier;
use kiln::ssh::{Client, ClientOptions, ExecOptions, Input, Pool, Remote, RemoteCommand, Target};

/// What the drivers stage leaves on a node: driver loaded, fabric manager
/// and DCGM running, NCCL, perftest and Open MPI.
const STACK: &str = "apt-get install -y nvidia-driver-570-server-open nvidia-fabricmanager-570 \
    datacenter-gpu-manager-4-cuda12 libnccl2 perftest openmpi-bin >/dev/null \
    && modprobe nvidia && systemctl enable --now nvidia-fabricmanager nvidia-dcgm";

fn h100() -> HardwareProfile {
    let catalog = Catalog::builtin().unwrap();
    catalog.hardware["hgx-h100-80gb-8x"].profile.clone()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Node `n`'s BMC, its certificate pinned to the one the rack announced.
fn bmc(n: &serde_json::Value) -> BmcSensors {
    let pin = n["bmc_fingerprint"]
        .as_str()
        .unwrap()
        .replace(':', "")
        .parse()
        .unwrap();
    let tls = kiln::bmc::tls::pinned(pin).unwrap();
    let addr = n["bmc_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let transport = Transport::new(
        host,
        port.parse().unwrap(),
        tls,
        TransportOptions::default(),
    );
    let client = BmcClient::new(
        n["name"].as_str().unwrap(),
        transport,
        n["username"].as_str().unwrap(),
        Secret::new(n["password"].as_str().unwrap().to_owned()),
    );
    BmcSensors::new(Arc::new(client), None)
}

/// Every node of the rack as a stage context over kiln's SSH client and
/// Redfish client, reachable and with the NVIDIA stack installed.
async fn nodes(rack: &Rack, run_dir: &std::path::Path) -> Vec<NodeCtx> {
    let verifier = Verifier::new(Vec::new(), None, false);
    let pool = Arc::new(Pool::new(Client::new(
        Arc::new(verifier),
        Arc::new(Credentials::new()),
        ClientOptions::default(),
    )));
    let mut out = Vec::new();
    for (i, n) in rack.nodes.iter().enumerate() {
        let addr = n["ssh"].as_str().unwrap();
        let (host, port) = addr.rsplit_once(':').unwrap();
        let target = Target {
            node: n["name"].as_str().unwrap().to_owned(),
            host: host.to_owned(),
            port: port.parse().unwrap(),
            user: "kiln".into(),
            key: Some(rack.key()),
            known_hosts: Some(rack.dir.path().join("known_hosts")),
            jump: None,
        };
        pool.wait_for_ssh(&target, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
        out.push(
            NodeCtx::new(
                Remote::Ssh {
                    pool: Arc::clone(&pool),
                    target,
                },
                run_dir,
            )
            .with_bmc(bmc(n)),
        );
    }
    let installs = out.iter().map(|n| async move {
        let cmd = RemoteCommand::shell(STACK).timeout(Some(Duration::from_secs(120)));
        let o = n
            .remote
            .run(&cmd, Input::None, &mut Discard, &ExecOptions::default())
            .await
            .unwrap();
        assert!(o.success(), "{}: {}", n.node(), o.stderr.text());
    });
    futures_join_all(installs).await;
    out
}

/// Awaits every future together (`join_all` without the futures crate).
async fn futures_join_all<F: std::future::Future>(
    fs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    join_vec(fs.into_iter().map(Box::pin).collect()).await
}

async fn join_vec<F: std::future::Future>(fs: Vec<std::pin::Pin<Box<F>>>) -> Vec<F::Output> {
    let mut slots: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    let mut fs: Vec<Option<std::pin::Pin<Box<F>>>> = fs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in fs.iter_mut().enumerate() {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        slots[i] = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().map(Option::unwrap).collect()
}

/// The reasons a burn-in gave, or none when it passed.
fn reasons(r: &Result<kiln::acceptance::BurninReport, Stop>) -> Vec<String> {
    match r {
        Ok(_) => Vec::new(),
        Err(Stop::Failed { step, outcome }) => {
            let mut v = vec![format!("step {step}")];
            v.extend(outcome.reasons.iter().cloned());
            v
        }
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn every_gpu_fault_fails_exactly_its_node() {
    // t-n08: every GPU at 80%: nothing to see within the node, a
    // straggler against the rack.
    let uniformly_slow: String = (0..8)
        .map(|g| format!("  - nodes: \"t-n08\"\n    slow_gpu: {{gpu: {g}, factor: 0.8}}\n"))
        .collect();
    let faults = "faults:\n\
        \x20 - nodes: \"t-n02\"\n    gpu_missing: 3\n\
        \x20 - nodes: \"t-n03\"\n    slow_gpu: {gpu: 2, factor: 0.6}\n\
        \x20 - nodes: \"t-n04\"\n    hot_gpu: {gpu: 5, temp_c: 94}\n\
        \x20 - nodes: \"t-n05\"\n    ecc_uncorrectable: 1\n\
        \x20 - nodes: \"t-n06\"\n    nvlink_down: {gpu: 0, link: 3}\n\
        \x20 - nodes: \"t-n07\"\n    xid: {gpu: 4, code: 94}\n\
        \x20 - nodes: \"t-n10\"\n    inlet_hot: {temp_c: 41}\n"
        .to_owned()
        + &uniformly_slow;
    let rack = Rack::start(RackSpec {
        net: 90,
        nodes: 10,
        faults: Some(&faults),
        time_scale: 30,
        ..RackSpec::default()
    });
    let run_dir = tempfile::tempdir().unwrap();
    let profile = h100();
    // 60 simulated seconds of burn are 2 s here: sample five times a
    // second (the BMC twice), snapshot a second in.
    let opts = BurninOptions {
        duration_s: 60,
        sample_every: Duration::from_millis(200),
        bmc_sample_every: Duration::from_millis(500),
        snapshot_after: Duration::from_millis(1000),
        burn_slack: Duration::from_secs(30),
        ..BurninOptions::for_profile(&profile)
    };
    let results = runtime().block_on(async {
        let nodes = nodes(&rack, run_dir.path()).await;
        let runs = nodes.iter().map(|n| {
            let profile = &profile;
            let opts = &opts;
            async move {
                let mut steps = Steps::unjournaled(n.node(), "burnin");
                (
                    n.node().to_owned(),
                    burnin(n, &mut steps, profile, opts).await,
                )
            }
        });
        futures_join_all(runs).await
    });
    let expect: &[(&str, &str, &[&str])] = &[
        ("t-n01", "", &[]),
        ("t-n02", "health", &["nvidia-smi shows 7 GPUs, expected 8"]),
        (
            "t-n03",
            "burn",
            &["GPU 2:", "below the best GPU of this node"],
        ),
        (
            "t-n04",
            "burn",
            &["GPU 5: reached 94 C under load, above the 85 C limit"],
        ),
        ("t-n05", "health", &["GPU 1 (", "uncorrectable ECC errors"]),
        (
            "t-n06",
            "nvlink",
            &["GPU 0 (NVIDIA H100 80GB HBM3): NVLink 3 is down"],
        ),
        ("t-n07", "xid", &["Xid 94"]),
        ("t-n08", "", &[]),
        ("t-n09", "", &[]),
        // The GPUs are fine; the air they got was not.
        (
            "t-n10",
            "burn",
            &["BMC inlet temperature 41 C", "above the 35 C limit"],
        ),
    ];
    for (node, step, wants) in expect {
        let (_, r) = results.iter().find(|(n, _)| n == node).unwrap();
        let got = reasons(r);
        if step.is_empty() {
            if !got.is_empty() {
                let dir = run_dir.path().join(node).join("burnin");
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    eprintln!(
                        "== {}\n{}",
                        p.display(),
                        std::fs::read_to_string(&p)
                            .unwrap_or_default()
                            .chars()
                            .take(2000)
                            .collect::<String>()
                    );
                }
            }
            assert!(got.is_empty(), "{node} should pass: {got:?}");
            let report = r.as_ref().unwrap();
            assert_eq!(report.gflops.len(), 8, "{node}");
            // Telemetry under load was sampled and kept.
            let burn = &report.outcomes[2];
            assert!(
                burn.metrics["telemetry"].as_array().unwrap().len() >= 8,
                "{node}: {}",
                burn.metrics
            );
            for a in &burn.artifacts {
                assert!(run_dir.path().join(a).is_file(), "{a}");
            }
            // The BMC was read during the burn: inlet in spec, and power
            // that rose with the load (1.5 kW idle, ~7 kW burning).
            let chassis = &burn.metrics["bmc"];
            assert!(
                chassis["samples"].as_array().unwrap().len() >= 2,
                "{node}: {chassis}"
            );
            assert_eq!(chassis["max_inlet_c"], 24.0, "{node}: {chassis}");
            assert!(
                chassis["peak_power_w"].as_f64().unwrap() > 5000.0,
                "{node}: {chassis}"
            );
            assert!(chassis["warnings"].as_array().unwrap().is_empty());
            assert!(
                burn.artifacts.iter().any(|a| a.ends_with("burnin/bmc.csv")),
                "{:?}",
                burn.artifacts
            );
            continue;
        }
        assert_eq!(
            got.first().map(String::as_str),
            Some(&*format!("step {step}")),
            "{node}: {got:?}"
        );
        for want in *wants {
            assert!(
                got[1].contains(want) || got.iter().any(|g| g.contains(want)),
                "{node}: {got:?} lacks {want:?}"
            );
        }
        // The first reason names the fault itself.
        assert!(got[1].contains(wants[0]), "{node}: {got:?}");
    }
    // Of the nodes that passed, the rack median finds the uniformly slow one.
    let rack_gflops: Vec<(String, Vec<(u32, f64)>)> = results
        .iter()
        .filter_map(|(n, r)| Some((n.clone(), r.as_ref().ok()?.gflops.clone())))
        .collect();
    assert_eq!(rack_gflops.len(), 3, "{rack_gflops:?}");
    let slow = stragglers(&rack_gflops, profile.burnin.max_spread_pct);
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0].0, "t-n08");
    assert_eq!(slow[0].1.len(), 8);
    assert!(slow[0].1[0].contains("below the rack median"), "{slow:?}");
}

#[test]
fn bisection_finds_the_one_bad_node_among_16() {
    let rack = Rack::start(RackSpec {
        net: 91,
        nodes: 16,
        faults: Some("faults:\n  - nodes: \"t-n11\"\n    ib_degraded: {port: 2, rate_gbps: 200}\n"),
        time_scale: 300,
        ..RackSpec::default()
    });
    let run_dir = tempfile::tempdir().unwrap();
    let profile = h100();
    let opts = NcclOptions {
        min_bytes: 1 << 20,
        deadline: Duration::from_secs(60),
        ib_server_wait: Duration::from_millis(200),
        ..NcclOptions::for_profile(&profile)
    };
    runtime().block_on(async {
        let nodes = nodes(&rack, run_dir.path()).await;
        // Its own HCA loopback blames t-n11 in the node stage already…
        let mut steps = Steps::unjournaled("t-n11", "nccl");
        match nccl_node(&nodes[10], &mut steps, &profile, &opts).await {
            Err(Stop::Failed { step, outcome }) => {
                assert_eq!(step, "ib_write_bw");
                assert!(
                    outcome.reasons[0].starts_with("mlx5_2 (GPU 2) loopback: BW average"),
                    "{:?}",
                    outcome.reasons
                );
            }
            other => panic!("{other:?}"),
        }
        // …while its NVLink collectives are as good as any: the fault is
        // on the fabric, which the cross-node runs must find on their own
        // (a loopback may not leave the HCA).
        let collectives_only = NcclOptions {
            nvbandwidth: String::new(),
            ib_write_bw: String::new(),
            ..opts.clone()
        };
        let mut steps = Steps::unjournaled("t-n11", "nccl");
        let o = nccl_node(&nodes[10], &mut steps, &profile, &collectives_only)
            .await
            .unwrap();
        assert!(o[0].metrics["busbw_at_largest"].as_f64().unwrap() > 450.0);

        let mut steps = Steps::unjournaled("r01", "nccl");
        let r = nccl_rack(&nodes, &mut steps, &profile, &opts)
            .await
            .unwrap();
        assert!(!r.outcome.passed());
        assert_eq!(r.bad.len(), 1, "{:?}", r.outcome.reasons);
        assert_eq!(r.bad[0].0, "t-n11");
        assert!(r.bad[0].1.contains("< 350 floor"), "{:?}", r.bad);
        assert!(r.between.is_empty() && r.unresolved.is_empty(), "{r:?}");
        assert_eq!(r.outcome.metrics["probes"], 8);
        // The rack run and every probe are kept.
        assert_eq!(r.outcome.artifacts.len(), 9);
        for a in &r.outcome.artifacts {
            let text = std::fs::read_to_string(run_dir.path().join(a)).unwrap();
            assert!(text.contains("# Out of bounds values"), "{a}: {text}");
        }

        // Pairs find it too, with a good node from a passing pair.
        let mut steps = Steps::unjournaled("r01", "nccl");
        let r = nccl_pairs(&nodes, &mut steps, &profile, &opts)
            .await
            .unwrap();
        assert_eq!(
            r.bad.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["t-n11"],
            "{:?}",
            r.outcome.reasons
        );

        // Without the bad node the rack passes.
        let healthy: Vec<NodeCtx> = nodes
            .iter()
            .filter(|n| n.node() != "t-n11")
            .cloned()
            .collect();
        let mut steps = Steps::unjournaled("r01", "nccl");
        let r = nccl_rack(&healthy, &mut steps, &profile, &opts)
            .await
            .unwrap();
        assert!(r.outcome.passed(), "{:?}", r.outcome.reasons);
    });
}

#[test]
fn copy_engine_and_hca_faults_fail_exactly_their_node() {
    let rack = Rack::start(RackSpec {
        net: 92,
        nodes: 5,
        faults: Some(
            "faults:\n\
             \x20 - nodes: \"t-n02\"\n    ib_degraded: {port: 5, rate_gbps: 200}\n\
             \x20 - nodes: \"t-n03\"\n    pcie_slow: {gpu: 6, factor: 0.5}\n\
             \x20 - nodes: \"t-n04\"\n    nvlink_down: {gpu: 1, link: 4}\n\
             \x20 - nodes: \"t-n05\"\n    ib_port_down: 3\n",
        ),
        time_scale: 300,
        ..RackSpec::default()
    });
    let run_dir = tempfile::tempdir().unwrap();
    let profile = h100();
    let opts = NcclOptions {
        min_bytes: 1 << 20,
        deadline: Duration::from_secs(60),
        ib_server_wait: Duration::from_millis(200),
        ..NcclOptions::for_profile(&profile)
    };
    let results = runtime().block_on(async {
        let nodes = nodes(&rack, run_dir.path()).await;
        let runs = nodes.iter().map(|n| {
            let profile = &profile;
            let opts = &opts;
            async move {
                let mut steps = Steps::unjournaled(n.node(), "nccl");
                (
                    n.node().to_owned(),
                    nccl_node(n, &mut steps, profile, opts).await,
                )
            }
        });
        futures_join_all(runs).await
    });
    let expect: &[(&str, &str, &str)] = &[
        ("t-n01", "", ""),
        (
            "t-n02",
            "ib_write_bw",
            "mlx5_5 (GPU 5) loopback: BW average 19",
        ),
        (
            "t-n03",
            "nvbandwidth",
            "host_to_device_memcpy_ce: 1 of 8 below the 48 GB/s floor: CPU 0 -> GPU 6 2",
        ),
        (
            "t-n04",
            "nvbandwidth",
            "device_to_device_memcpy_read_ce: 14 of 56 below the 335 GB/s floor: GPU 0 -> GPU 1",
        ),
        (
            "t-n05",
            "ib_write_bw",
            "mlx5_3 (GPU 3) loopback: ib_write_bw exited with status 1: Port number 1 state is Down",
        ),
    ];
    for (node, step, want) in expect {
        let (_, r) = results.iter().find(|(n, _)| n == node).unwrap();
        match r {
            Ok(outcomes) => {
                assert!(step.is_empty(), "{node} passed, expected {step}: {want}");
                // nvbandwidth, ib_write_bw, all_reduce; raw outputs kept.
                assert_eq!(outcomes.len(), 3, "{node}");
                assert!(
                    outcomes[0]
                        .detail
                        .starts_with("nvbandwidth: host_to_device min")
                );
                assert_eq!(outcomes[1].metrics["hcas"].as_array().unwrap().len(), 8);
                assert!(outcomes[1].metrics["lowest_gbps"].as_f64().unwrap() > 375.0);
                for o in outcomes {
                    for a in &o.artifacts {
                        assert!(run_dir.path().join(a).is_file(), "{a}");
                    }
                }
            }
            Err(Stop::Failed { step: got, outcome }) => {
                assert_eq!(got, step, "{node}: {:?}", outcome.reasons);
                assert!(
                    outcome.reasons[0].starts_with(want),
                    "{node}: {:?} lacks {want:?}",
                    outcome.reasons
                );
                // Only the faulty part is named (a slow host link, both
                // ways).
                let parts = if *node == "t-n03" { 2 } else { 1 };
                assert_eq!(
                    outcome.reasons.len(),
                    parts,
                    "{node}: {:?}",
                    outcome.reasons
                );
                if parts == 2 {
                    assert!(
                        outcome.reasons[1].starts_with(
                            "device_to_host_memcpy_ce: 1 of 8 below the 48 GB/s floor: GPU 6 -> CPU 0 2"
                        ),
                        "{:?}",
                        outcome.reasons
                    );
                }
            }
            Err(e) => panic!("{node}: {e}"),
        }
    }
}
