//! `kiln bmc …` end to end against the virtual rack (a `kiln sim up` child
//! process): trust on first contact and a changed certificate, status, power
//! with read-back, boot override, virtual media with an image served over
//! HTTP, the in-service guard, and per-node errors under injected faults.
//! The rack's state is checked with curl, not with kiln's client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::simrack::{FileServer, Rack, RackSpec};
use serde_json::Value;

fn kiln(rack: &Rack, inventory: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_STATE_DIR", rack.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .arg("-i")
        .arg(inventory)
        .args(args)
        .output()
        .unwrap()
}

fn site(rack: &Rack) -> PathBuf {
    rack.dir.path().join("site.yaml")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The system resource of node `i`, read with curl.
fn system(rack: &Rack, i: usize) -> Value {
    let path = rack.system(i);
    rack.get(i, &path)
}

fn result(doc: &Value, i: usize) -> &Value {
    &doc["nodes"][i]["result"]
}

#[test]
fn trust_pins_each_bmc_and_a_changed_certificate_is_refused() {
    let rack = Rack::start(RackSpec {
        net: 216,
        nodes: 3,
        flavour: "hpe",
        imaged: false,
        ..RackSpec::default()
    });
    let inv = site(&rack);

    // Nothing recorded yet: one clear error, exit 2, no request sent.
    let out = kiln(&rack, &inv, &["bmc", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("kiln bmc trust"), "{}", stderr(&out));

    let out = kiln(&rack, &inv, &["--json", "bmc", "trust"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    for i in 0..3 {
        let seen = result(&doc, i)["fingerprint"].as_str().unwrap();
        let announced = rack.nodes[i]["bmc_fingerprint"].as_str().unwrap();
        assert!(seen.ends_with(announced), "{seen} vs {announced}");
        assert_eq!(result(&doc, i)["result"], "recorded");
    }

    let out = kiln(&rack, &inv, &["--json", "bmc", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    for i in 0..3 {
        let s = result(&doc, i);
        assert_eq!(s["identity"]["vendor"], "hpe");
        assert_eq!(s["identity"]["generation"], 6);
        assert_eq!(s["host"]["power"], "Off");
        assert_eq!(s["gpus"].as_array().unwrap().len(), 8);
    }
    // The password never reaches stdout or stderr.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"test\""));

    // Someone else's certificate at t-n02's address: the recorded pin no
    // longer matches, status fails for that node only, and trust refuses
    // to overwrite the pin without --replace.
    let store = rack.dir.path().join("state/bmc-trust.json");
    let mut recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(&store).unwrap()).unwrap();
    recorded["bmcs"]["t-n02"]["fingerprint"] =
        Value::from(format!("sha256:{}", ["AB"; 32].join(":")));
    std::fs::write(&store, recorded.to_string()).unwrap();
    let out = kiln(&rack, &inv, &["--json", "bmc", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc = json(&out);
    assert!(
        doc["nodes"][1]["error"]
            .as_str()
            .unwrap()
            .contains("not trusted")
    );
    assert!(doc["nodes"][0]["result"].is_object());
    assert!(stderr(&out).contains("t-n02"));

    let out = kiln(&rack, &inv, &["bmc", "trust", "-s", "t-n02"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--replace"), "{}", stderr(&out));
    let out = kiln(&rack, &inv, &["bmc", "trust", "-s", "t-n02", "--replace"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = kiln(&rack, &inv, &["bmc", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A node in service is not powered off without --allow-in-service.
    let text = std::fs::read_to_string(&inv).unwrap();
    let serving = rack.dir.path().join("serving.yaml");
    std::fs::write(
        &serving,
        text.replace("defaults:\n", "defaults:\n  in_service: true\n"),
    )
    .unwrap();
    let out = kiln(&rack, &serving, &["bmc", "power", "off"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("in service"), "{}", stderr(&out));
}

#[test]
fn power_boot_and_media_are_verified_on_a_lenovo_rack() {
    let rack = Rack::start(RackSpec {
        net: 217,
        nodes: 2,
        flavour: "lenovo",
        imaged: false,
        ..RackSpec::default()
    });
    let inv = site(&rack);
    let www = tempfile::tempdir().unwrap();
    // A path like the boot server's, with a node's token in it.
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::create_dir(www.path().join(token)).unwrap();
    std::fs::write(
        www.path().join(token).join("installer.iso"),
        vec![0u8; 1 << 20],
    )
    .unwrap();
    let files = FileServer::start(www.path(), "127.217.3.1");
    let image = format!("{}/{token}/installer.iso", files.url);

    assert!(kiln(&rack, &inv, &["bmc", "trust"]).status.success());

    let out = kiln(&rack, &inv, &["--json", "bmc", "media", "insert", &image]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    // XCC mounts by PATCHing the slot, not by the InsertMedia action.
    assert_eq!(result(&doc, 0)["via"], "patch");
    let slot = result(&doc, 0)["slot"].as_str().unwrap().to_owned();
    let media = rack.get(0, &slot);
    assert_eq!(media["Inserted"], true);
    assert_eq!(media["Image"], image.as_str());

    // Inserting the same image again changes nothing.
    let out = kiln(&rack, &inv, &["--json", "bmc", "media", "insert", &image]);
    assert_eq!(result(&json(&out), 0)["unchanged"], true);
    // kiln shows the image, never its token.
    for args in [
        &["--json", "bmc", "media", "insert", &image][..],
        &["bmc", "media", "status"],
    ] {
        let out = kiln(&rack, &inv, args);
        let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(shown.contains("[token]/installer.iso"), "{shown}");
        assert!(!shown.contains(token), "{shown}");
    }

    // Boot once is set while the nodes are off: a node that is posting
    // would consume the override before it could be read back.
    assert_eq!(system(&rack, 0)["PowerState"], "Off");
    let out = kiln(&rack, &inv, &["--json", "bmc", "boot", "cd", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let boot = &system(&rack, 0)["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Cd");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Once");

    let out = kiln(&rack, &inv, &["--json", "bmc", "power", "on"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(result(&doc, 0)["after"], "On");
    for i in 0..2 {
        let sys = system(&rack, i);
        assert_eq!(sys["PowerState"], "On");
    }

    // A target the BMC does not offer is refused before anything is sent.
    let out = kiln(&rack, &inv, &["bmc", "boot", "http"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not offered"), "{}", stderr(&out));

    // ForceRestart hangs on some XCC firmware: reset is off, wait, on.
    let out = kiln(
        &rack,
        &inv,
        &["--json", "bmc", "power", "reset", "-s", "t-n01"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(
        result(&doc, 0)["sent"],
        serde_json::json!(["ForceOff", "On"])
    );
    assert_eq!(system(&rack, 0)["PowerState"], "On");

    let out = kiln(&rack, &inv, &["--json", "bmc", "media", "eject"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(rack.get(0, &slot)["Inserted"], false);

    let out = kiln(&rack, &inv, &["--json", "bmc", "power", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(system(&rack, 1)["PowerState"], "Off");

    let out = kiln(&rack, &inv, &["--json", "bmc", "sensors"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(result(&json(&out), 0)["power_watts"].as_f64().unwrap() > 0.0);

    let out = kiln(&rack, &inv, &["--json", "bmc", "inventory"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    let gpus = result(&doc, 0)["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8);
    assert!(gpus.iter().all(|g| g["serial"].is_string()));
    assert!(!result(&doc, 0)["firmware"].as_array().unwrap().is_empty());
}

#[test]
fn faults_give_clear_per_node_errors() {
    let faults = "faults:\n  - nodes: t-n01\n    bmc_503_rate: 0.5\n    bmc_retry_after: 0s\n  - nodes: t-n02\n    bmc_hang: true\n  - nodes: t-n03\n    media_insert_failures: 10\n";
    let rack = Rack::start(RackSpec {
        net: 218,
        nodes: 3,
        flavour: "generic",
        imaged: false,
        faults: Some(faults),
        ..RackSpec::default()
    });
    let inv = site(&rack);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("a.iso"), vec![0u8; 4096]).unwrap();
    let files = FileServer::start(www.path(), "127.218.3.1");
    assert!(
        kiln(&rack, &inv, &["bmc", "trust"]).status.code().is_some(),
        "trust ran"
    );

    let out = kiln(&rack, &inv, &["--json", "bmc", "status", "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc = json(&out);
    // 503s are retried through; the hung BMC is named with a timeout.
    assert!(doc["nodes"][0]["result"].is_object(), "{doc}");
    let hung = doc["nodes"][1]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        hung.contains("t-n02") && (hung.contains("no answer") || hung.contains("not answering")),
        "{doc}"
    );
    assert!(doc["nodes"][2]["result"].is_object(), "{doc}");
    assert!(!stderr(&out).contains("panicked"));

    let image = format!("{}/a.iso", files.url);
    let out = kiln(
        &rack,
        &inv,
        &["--json", "bmc", "media", "insert", &image, "-s", "t-n03"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = json(&out)["nodes"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        err.starts_with("t-n03: ") && err.contains("did not answer"),
        "{err}"
    );
}

/// Runs a bench with `--json`; asserts exit 0 and returns its document.
fn bench_json(args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("NO_COLOR", "1")
        .args(["--json", "bench"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_fleet_benchmark_runs_and_keeps_the_per_bmc_limit() {
    let doc = bench_json(&["bmc", "--nodes", "12", "--latency", "20ms"]);
    assert_eq!(doc["failures"], 0);
    assert_eq!(doc["peak_in_flight_per_bmc"], 1);
    assert!(doc["ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_site_benchmark_rounds_to_whole_racks_and_reports_both_sides_cpu() {
    let doc = bench_json(&["fleet", "--nodes", "12", "--latency", "20ms"]);
    assert_eq!(doc["nodes_asked"], 12);
    assert_eq!(doc["nodes"], 16);
    assert_eq!(doc["accepted"], 16);
    assert_eq!(doc["simulators"], 1);
    assert!(doc["kiln_cpu_s"].as_f64().unwrap() > 0.0);
    assert!(doc["simulator_cpu_s"].as_f64().unwrap() > 0.0);
    // The simulators' time during the site run is part of their whole.
    let site = doc["simulator_site_cpu_s"].as_f64().unwrap();
    assert!(site >= 0.0 && site <= doc["simulator_cpu_s"].as_f64().unwrap());
    assert!(doc["cpu_floor_ratio"].as_f64().unwrap() > 0.0);
    assert!(doc["ratio"].as_f64().unwrap() > 0.0);
    assert!(doc["kept"].is_null());
    // A few nodes of every flavour: each step's requests are in the
    // journal, and per node they add up to what the simulator served,
    // bar the session's logout after the last step.
    for flavour in ["generic", "dell", "hpe", "supermicro", "lenovo"] {
        let steps = &doc["requests_per_node"][flavour];
        assert!(
            steps["preflight/bmc"]["mean"].as_f64().unwrap() > 0.0,
            "{doc}"
        );
        assert!(steps["preflight"]["max"].as_u64().unwrap() > 0, "{doc}");
        let total = &doc["requests_total"][flavour];
        assert_eq!(total["accepted"], total["nodes"], "{doc}");
        assert_eq!(total["outside_steps_per_node"]["min"], 1, "{doc}");
        assert_eq!(total["outside_steps_per_node"]["max"], 1, "{doc}");
    }
}
