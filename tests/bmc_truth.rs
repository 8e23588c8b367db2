//! BMC truth on trees shaped unlike the flavours' mockups: a two-node sled,
//! GPUs only as PCIe functions, paged collections, a system that links no
//! chassis, a null power total, GPUs of the wrong model, and a BMC that
//! ends error replies by closing without TLS `close_notify`. Discovery,
//! facts and preflight's GPU verdict are run in-process against the
//! virtual rack (each node's tree reshaped by its faults), and once end to
//! end through `kiln provision --stages preflight`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use kiln::bmc::client::BmcClient;
use kiln::bmc::discover::{discover, gpus};
use kiln::bmc::facts;
use kiln::bmc::transport::{Transport, TransportOptions};
use kiln::pipeline::record::StepStatus;
use kiln::secret::Secret;
use kiln::sim::{SimOptions, SimRack};
use kiln::stages::preflight::judge_gpus;

/// One node per shape; n01 is plain, the baseline.
const SHAPES: &str = "faults:
  - nodes: c-n02
    bmc_sled: true
  - nodes: c-n03
    bmc_gpus_as_pcie: true
  - nodes: c-n04
    bmc_page_size: 3
  - nodes: c-n05
    bmc_unlinked_chassis: true
  - nodes: c-n06
    bmc_null_power: true
  - nodes: c-n07
    bmc_gpu_model: {model: \"AMD Instinct MI250X OAM\", vendor: \"Advanced Micro Devices, Inc.\"}
  - nodes: c-n08
    bmc_gpus_as_pcie: true
    bmc_page_size: 2
    bmc_unlinked_chassis: true
    bmc_null_power: true
  - nodes: c-n09
    bmc_close_delimited_errors: true
    bmc_page_size: 4
";

async fn rack(net: u8) -> (SimRack, kiln::inventory::Inventory) {
    let mut list = String::new();
    for n in 1..=9 {
        list.push_str(&format!(
            "      - {{name: c-n{n:02}, bmc: \"127.{net}.1.{n}:8443\", ssh: \"127.{net}.2.{n}:2222\"}}\n"
        ));
    }
    let text = format!(
        "site: truth\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {{env: KILN_TEST_BMC_PASSWORD}}\n  ssh:\n    user: kiln\nracks:\n  - name: r01\n    nodes:\n{list}"
    );
    let inventory = common::check(&text).inventory.expect("valid inventory");
    let options = SimOptions {
        faults: kiln::sim::faults::FaultPlan::parse("faults.yaml", SHAPES).unwrap(),
        ssh: false,
        time_scale: 600.0,
        ..SimOptions::default()
    };
    let nodes: Vec<_> = inventory.nodes.iter().collect();
    let rack = kiln::sim::start(&inventory, &nodes, options).await.unwrap();
    (rack, inventory)
}

fn client(rack: &SimRack, i: usize) -> BmcClient {
    let e = &rack.endpoints[i];
    let pin = e.bmc_fingerprint.replace(':', "").parse().unwrap();
    let tls = kiln::bmc::tls::pinned(pin).unwrap();
    let addr = e.bmc_url.trim_start_matches("https://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let options = TransportOptions {
        request_timeout: Duration::from_secs(5),
        ..TransportOptions::default()
    };
    let transport = Transport::new(host, port.parse().unwrap(), tls, options);
    BmcClient::new(
        &e.name,
        transport,
        &e.username,
        Secret::new(e.password.clone()),
    )
}

#[tokio::test]
async fn every_shape_gives_the_same_truth_as_the_plain_tree() {
    let (rack, inventory) = rack(225).await;
    let profile = &inventory.catalog.hardware["hgx-h100-80gb-8x"].profile;
    let plain_c = client(&rack, 0);
    let plain = discover(&plain_c, None).await.unwrap();
    let plain_gpus = gpus(&plain_c, &plain).await.unwrap();
    let plain_firmware = facts::firmware(&plain_c, &plain).await.unwrap();
    assert_eq!(plain_gpus.len(), 8);
    assert!(plain.other_hosts.is_empty());

    // 1, 6: a sled. The other node's system and GPUs are not the host's,
    // and identity comes from the host's BMC, not the enclosure manager
    // listed first.
    let c = client(&rack, 1);
    let sled = discover(&c, None).await.unwrap();
    assert_eq!(sled.system, plain.system);
    assert_eq!(sled.other_hosts, [format!("{}-Node1", plain.system)]);
    assert!(sled.baseboards.is_empty());
    assert_eq!(gpus(&c, &sled).await.unwrap().len(), 8, "not 16");
    assert_eq!(sled.manager, plain.manager);
    assert_eq!(sled.identity, plain.identity);
    assert!(!sled.identity.firmware.is_empty());
    let peer = discover(&c, Some(&format!("{}-Node1", plain.system)))
        .await
        .unwrap();
    assert_eq!(peer.other_hosts, std::slice::from_ref(&plain.system));
    assert_eq!(gpus(&c, &peer).await.unwrap().len(), 8);

    // 4: GPUs only as PCIe devices named after the board, recognised by
    // their function's class and vendor id.
    let c = client(&rack, 2);
    let layout = discover(&c, None).await.unwrap();
    let found = gpus(&c, &layout).await.unwrap();
    assert_eq!(found.len(), 8, "{found:?}");
    assert!(
        found.iter().all(|g| g.model == "HGX H100 8-GPU"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .all(|g| g.vendor.as_deref() == Some("NVIDIA Corporation"))
    );
    assert!(found.iter().all(|g| g.serial.is_some()));
    let verdict = judge_gpus(&found, profile, &layout.identity);
    assert_eq!(verdict.status, StepStatus::Done, "{}", verdict.detail);

    // 5: every collection read follows its next links.
    let c = client(&rack, 3);
    let paged = discover(&c, None).await.unwrap();
    let (raw_code, raw) = get_raw(&c, &format!("{}/Processors", paged.system)).await;
    assert_eq!(raw_code, 200);
    assert!(raw["Members@odata.nextLink"].is_string(), "{raw}");
    assert_eq!(gpus(&c, &paged).await.unwrap().len(), 8);
    assert_eq!(paged.media.len(), plain.media.len());
    assert_eq!(
        facts::firmware(&c, &paged).await.unwrap().len(),
        plain_firmware.len()
    );

    // 7: no chassis link; the chassis that names the system is found, and
    // its readings with it.
    let c = client(&rack, 4);
    let layout = discover(&c, None).await.unwrap();
    assert_eq!(layout.chassis, plain.chassis);
    let s = facts::sensors(&c, &layout).await.unwrap();
    assert!(!s.temperatures.is_empty(), "{s:?}");
    assert!(kiln::acceptance::chassis::inlet_of(&s).is_some());
    assert!(s.notes.is_empty(), "{s:?}");

    // 8: a null total: the average is used.
    let c = client(&rack, 5);
    let layout = discover(&c, None).await.unwrap();
    let s = facts::sensors(&c, &layout).await.unwrap();
    assert!(s.power_watts.is_some_and(|w| w > 0.0), "{s:?}");
    assert_eq!(s.power_source, Some("AverageConsumedWatts"));

    // 2: the wrong GPUs fitted fail, naming what was found.
    let c = client(&rack, 6);
    let layout = discover(&c, None).await.unwrap();
    let found = gpus(&c, &layout).await.unwrap();
    let verdict = judge_gpus(&found, profile, &layout.identity);
    assert_eq!(verdict.status, StepStatus::Failed);
    assert!(
        verdict.detail.contains("8 × AMD Instinct MI250X OAM") && verdict.detail.contains("AMD"),
        "{}",
        verdict.detail
    );

    // All at once.
    let c = client(&rack, 7);
    let layout = discover(&c, None).await.unwrap();
    assert_eq!(layout.chassis, plain.chassis);
    assert_eq!(gpus(&c, &layout).await.unwrap().len(), 8);
    let s = facts::sensors(&c, &layout).await.unwrap();
    assert!(
        s.power_watts.is_some() && !s.temperatures.is_empty(),
        "{s:?}"
    );

    // 10: error replies without a length, ended by a close without
    // close_notify, are answers like any other: a missing resource reads
    // as a 404 at once (not after retries), and discovery is unchanged.
    let raw = raw_error_reply(&rack, 8).await;
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert!(
        !raw.to_ascii_lowercase().contains("content-length"),
        "{raw}"
    );
    let c = client(&rack, 8);
    let started = std::time::Instant::now();
    assert_eq!(get_raw(&c, "/redfish/v1/Systems/NoSuchSystem").await.0, 404);
    assert!(started.elapsed() < Duration::from_secs(3), "retried");
    let layout = discover(&c, None).await.unwrap();
    assert_eq!(layout.chassis, plain.chassis);
    assert_eq!(layout.identity, plain.identity);
    assert_eq!(gpus(&c, &layout).await.unwrap().len(), 8);
    assert_eq!(
        facts::firmware(&c, &layout).await.unwrap().len(),
        plain_firmware.len()
    );
}

/// A GET of a missing resource from node `i`'s BMC, read to the close,
/// bytes as sent: the fault is on the wire, not only in kiln's reading.
async fn raw_error_reply(rack: &SimRack, i: usize) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let e = &rack.endpoints[i];
    let tls = kiln::bmc::tls::pinned(e.bmc_fingerprint.replace(':', "").parse().unwrap()).unwrap();
    let addr = e.bmc_url.trim_start_matches("https://");
    let (host, _) = addr.rsplit_once(':').unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /no-such-thing HTTP/1.1\r\nHost: bmc\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    // No close_notify: the read ends in UnexpectedEof, the bytes are kept.
    let end = tls.read_to_end(&mut bytes).await;
    assert!(end.is_err(), "the BMC sent close_notify");
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn get_raw(c: &BmcClient, path: &str) -> (u16, serde_json::Value) {
    match c.get(path).await {
        Ok(v) => (200, v),
        Err(e) => (e.status().unwrap_or(0), serde_json::Value::Null),
    }
}

/// `kiln provision --stages preflight` on reshaped BMCs: the wrong GPUs
/// fail with what was found, a sled node not named in `bmc.system` fails
/// rather than being guessed, and a node whose BMC lists its GPUs only as
/// PCIe functions, in pages, links no chassis and reports a null power
/// total is accepted, its record carrying what was found and expected.
#[test]
fn preflight_refuses_what_it_must_and_accepts_the_rest() {
    use common::simrack::{Rack, RackSpec};
    let rack = Rack::start(RackSpec {
        net: 226,
        nodes: 3,
        imaged: false,
        faults: Some(
            "faults:
  - nodes: t-n01
    bmc_gpu_model: {model: \"AMD Instinct MI250X OAM\", vendor: \"Advanced Micro Devices, Inc.\"}
  - nodes: t-n02
    bmc_sled: true
  - nodes: t-n03
    bmc_gpus_as_pcie: true
    bmc_page_size: 3
    bmc_unlinked_chassis: true
    bmc_null_power: true
",
        ),
        ..RackSpec::default()
    });
    let kiln = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_TEST_BMC_PASSWORD", "test")
            .env("KILN_STATE_DIR", rack.dir.path().join("state"))
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .arg("-i")
            .arg(rack.dir.path().join("site.yaml"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = kiln(&["bmc", "trust"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kiln(&["--json", "provision", "--stages", "preflight"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let run = events.last().unwrap()["run"].as_str().unwrap().to_owned();
    let out = kiln(&["--json", "runs", "show", &run]);
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = |name: &str| {
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };
    let step = |n: &serde_json::Value, name: &str| {
        n["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .unwrap()
            .clone()
    };

    let amd = node("t-n01");
    assert_eq!(amd["verdict"], "failed");
    let why = amd["reasons"][0].as_str().unwrap();
    assert!(
        why.contains("8 × AMD Instinct MI250X OAM") && why.contains("made by AMD, not NVIDIA"),
        "{why}"
    );

    let sled = node("t-n02");
    assert_eq!(sled["verdict"], "failed");
    let why = sled["reasons"][0].as_str().unwrap();
    assert!(
        why.contains("2 host systems") && why.contains("bmc.system"),
        "{why}"
    );

    let shaped = node("t-n03");
    assert_eq!(shaped["verdict"], "accepted", "{shaped}");
    let gpus = step(&shaped, "gpus");
    assert_eq!(gpus["metrics"]["gpus"].as_array().unwrap().len(), 8);
    assert_eq!(gpus["metrics"]["gpus"][0]["vendor"], "NVIDIA Corporation");
    assert_eq!(
        gpus["metrics"]["expected"]["model"],
        "NVIDIA H100 80GB HBM3"
    );
}
