//! `kiln firmware check` and `update` on the virtual rack: check names the
//! component below the baseline and exits 1; after update it exits 0.
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

/// A profile whose baseline wants the BMC at 9.9.9 from `fw.bin`.
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
            "firmware:\n  - component: bmc\n    match: {{ id: BMC }}\n    minimum: \"9.9.9\"\n    package: {{ path: fw.bin, sha256: {sha256} }}\n    apply: immediate\n"
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

#[test]
fn check_names_the_shortfall_and_passes_after_update() {
    let rack = Rack::start(RackSpec {
        net: 175,
        nodes: 1,
        imaged: false,
        ..RackSpec::default()
    });
    write_profile(rack.dir.path());
    let out = kiln(&rack, &["bmc", "trust"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = kiln(&rack, &["firmware", "check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("bmc: BMC at"), "{text}");
    assert!(text.contains("9.9.9"), "{text}");
    let out = kiln(&rack, &["--json", "firmware", "check"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["nodes"][0]["result"]["meets"], false, "{doc}");

    let out = kiln(&rack, &["firmware", "update", "--bind", "127.175.9.1:0"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = kiln(&rack, &["firmware", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
