//! The firmware stage end to end on the virtual rack: `kiln provision
//! --stages preflight,firmware` brings a node to its profile's firmware
//! and BIOS baseline, each update fault ends only its node with a reason
//! naming the component and the BMC's message, and a second run updates
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::simrack::{Rack, RackSpec};
use serde_json::Value;

fn kiln(rack: &Rack, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_STATE_DIR", rack.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .arg("-i")
        .arg(rack.dir.path().join("site.yaml"))
        .args(args)
        .output()
        .unwrap()
}

/// A profile like the built-in H100 one, with a baseline: the BMC at
/// 9.9.9 or later from `fw.bin`, hyper-threading off.
fn write_profile(dir: &Path) {
    let builtin = include_str!("../inventories/profiles/hgx-h100-80gb-8x.yaml");
    let package = "kiln-sim-firmware component=BMC version=9.9.9\npayload\n";
    std::fs::write(dir.join("fw.bin"), package).unwrap();
    let sha256 = {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(package.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let text = builtin.replace("name: hgx-h100-80gb-8x", "name: hgx-fw")
        + &format!(
            "firmware:\n  - component: bmc\n    match: {{ id: BMC }}\n    minimum: \"9.9.9\"\n    package: {{ path: fw.bin, sha256: {sha256} }}\n    apply: immediate\nbios:\n  attributes:\n    - setting: smt\n      attribute: ProcHyperthreading\n      value: Disabled\n"
        );
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(dir.join("profiles/hgx-fw.yaml"), text).unwrap();
    let site = dir.join("site.yaml");
    let inventory = std::fs::read_to_string(&site).unwrap();
    std::fs::write(
        &site,
        inventory.replace("hardware: hgx-h100-80gb-8x", "hardware: hgx-fw"),
    )
    .unwrap();
}

/// Each node's verdict and reasons in the newest run.
fn verdicts(rack: &Rack) -> Vec<(String, String)> {
    let out = kiln(rack, &["--json", "runs", "show"]);
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["verdict"].as_str().unwrap().to_owned(),
                n["reasons"].to_string(),
            )
        })
        .collect()
}

/// The status of node `i`'s firmware step `step` in the newest run.
fn step_status(rack: &Rack, i: usize, step: &str) -> String {
    let out = kiln(rack, &["--json", "runs", "show"]);
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    record["nodes"][i]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "firmware" && s["step"] == step)
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn the_firmware_stage_brings_nodes_to_the_baseline_and_faults_end_only_their_node() {
    let faults = "faults:\n  - nodes: t-n01\n    bmc_update_fault: reboot\n  - nodes: t-n02\n    bmc_update_fault: rejected\n  - nodes: t-n03\n    bmc_update_fault: exception\n  - nodes: t-n04\n    bmc_update_fault: unchanged\n  - nodes: t-n05\n    bmc_bios_ignore: ProcHyperthreading\n";
    let rack = Rack::start(RackSpec {
        net: 170,
        nodes: 5,
        imaged: false,
        faults: Some(faults),
        ..RackSpec::default()
    });
    write_profile(rack.dir.path());
    let out = kiln(&rack, &["bmc", "trust"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = [
        "provision",
        "--stages",
        "preflight,firmware",
        "--bind",
        "127.170.9.1:0",
        "--boot-timeout",
        "2s",
    ];
    let out = kiln(&rack, &run);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let v = verdicts(&rack);
    assert_eq!(
        v[0].0, "accepted",
        "a BMC rebooting mid-update is waited out: {v:?}"
    );
    for (i, wanted) in [
        (1, "bmc: the BMC refused the update"),
        (2, "bmc: the BMC's update task failed: flashing"),
        (3, "unchanged after the BMC's update"),
        (4, "ProcHyperthreading"),
    ] {
        assert_eq!(v[i].0, "failed", "{v:?}");
        assert!(
            v[i].1.contains(wanted),
            "node {i}: {wanted} not in {}",
            v[i].1
        );
    }
    assert!(v[1].1.contains("not a firmware package") || v[1].1.contains("refused"));
    assert!(
        v[4].1.contains("does not show it after the reset"),
        "{}",
        v[4].1
    );
    assert_eq!(step_status(&rack, 0, "update"), "done");

    // A second run finds node 1 at the baseline and changes nothing.
    let out = kiln(&rack, &run);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verdicts(&rack)[0].0, "accepted");
    for step in ["update", "reset"] {
        assert_eq!(step_status(&rack, 0, step), "skipped", "{step}");
    }
}

/// The first running FirmwareInventory member of node 0 with a one-word
/// version, and that version.
fn running_member(rack: &Rack) -> (String, String) {
    let inv = rack.get(0, "/redfish/v1/UpdateService/FirmwareInventory");
    inv["Members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["@odata.id"].as_str())
        .map(|path| rack.get(0, path))
        .filter(|doc| !doc["Id"].as_str().unwrap().starts_with("Previous-"))
        .find_map(|doc| {
            // The virtual rack's package header is space-separated.
            let version = doc["Version"]
                .as_str()
                .filter(|v| !v.is_empty() && !v.contains(' '))?;
            Some((doc["Id"].as_str()?.to_owned(), version.to_owned()))
        })
        .unwrap()
}

#[test]
fn every_vendor_flavour_is_brought_to_the_baseline() {
    // Dell and Lenovo BMCs here offer no SimpleUpdate: kiln uploads the
    // package to their MultipartHttpPushUri instead.
    let push_only = "faults:\n  - nodes: \"*\"\n    bmc_push_only: true\n";
    for (k, (flavour, method)) in [
        ("dell", "MultipartHttpPushUri"),
        ("hpe", "SimpleUpdate"),
        ("supermicro", "SimpleUpdate"),
        ("lenovo", "MultipartHttpPushUri"),
    ]
    .into_iter()
    .enumerate()
    {
        let net = 171 + k as u8;
        let rack = Rack::start(RackSpec {
            net,
            imaged: false,
            flavour,
            faults: (method != "SimpleUpdate").then_some(push_only),
            ..RackSpec::default()
        });
        let dir = rack.dir.path();
        let (id, version) = running_member(&rack);
        let wanted = format!("{version}.1");
        let package = format!("kiln-sim-firmware component={id} version={wanted}\n");
        std::fs::write(dir.join("fw.bin"), &package).unwrap();
        let sha256 = {
            use sha2::Digest as _;
            let d = sha2::Sha256::digest(package.as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let builtin = include_str!("../inventories/profiles/hgx-h100-80gb-8x.yaml");
        let text = builtin.replace("name: hgx-h100-80gb-8x", "name: hgx-fw")
            + &format!(
                "firmware:\n  - component: part\n    match: {{ id: \"{id}\" }}\n    minimum: \"{wanted}\"\n    package: {{ path: fw.bin, sha256: {sha256} }}\n    apply: on_reset\n"
            );
        std::fs::create_dir_all(dir.join("profiles")).unwrap();
        std::fs::write(dir.join("profiles/hgx-fw.yaml"), text).unwrap();
        let site = dir.join("site.yaml");
        let inventory = std::fs::read_to_string(&site).unwrap();
        std::fs::write(
            &site,
            inventory.replace("hardware: hgx-h100-80gb-8x", "hardware: hgx-fw"),
        )
        .unwrap();
        assert!(kiln(&rack, &["bmc", "trust"]).status.success());
        let bind = format!("127.{net}.9.1:0");
        let out = kiln(
            &rack,
            &[
                "provision",
                "--stages",
                "preflight,firmware",
                "--bind",
                &bind,
                "--boot-timeout",
                "5s",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{flavour} ({id} {version} → {wanted}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(step_status(&rack, 0, "reset"), "done", "{flavour}");
        assert_eq!(update_method(&rack), method, "{flavour}");
    }
}

/// How node 0's firmware `update` step in the newest run sent its package.
fn update_method(rack: &Rack) -> String {
    let out = kiln(rack, &["--json", "runs", "show"]);
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    record["nodes"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "firmware" && s["step"] == "update")
        .and_then(|s| s["metrics"]["updates"][0]["method"].as_str())
        .unwrap_or_default()
        .to_owned()
}
