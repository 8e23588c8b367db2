//! The command line as a user meets it: help, errors, exit codes, output.
//! Snapshots live in tests/snapshots; review changes to them like code.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use common::{kiln, run};

fn snapshot_of(code: i32, stdout: &str, stderr: &str) -> String {
    format!("exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}")
}

macro_rules! cli_snapshot {
    ($name:literal, $args:expr) => {{
        let (code, out, err) = run(kiln().args($args));
        insta::assert_snapshot!($name, snapshot_of(code, &out, &err));
        code
    }};
}

#[test]
fn help_texts() {
    cli_snapshot!("help", ["--help"]);
    cli_snapshot!("help_inventory", ["inventory", "--help"]);
    cli_snapshot!("help_inventory_show", ["inventory", "show", "--help"]);
    cli_snapshot!(
        "help_inventory_generate",
        ["inventory", "generate", "--help"]
    );
    cli_snapshot!("help_profile", ["profile", "--help"]);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        cli_snapshot!("usage_unknown_subcommand", ["inventory", "frobnicate"]),
        2
    );
    assert_eq!(
        cli_snapshot!(
            "usage_bad_flag_value",
            ["--color", "purple", "profile", "list"]
        ),
        2
    );
    assert_eq!(
        cli_snapshot!("usage_no_inventory", ["inventory", "check"]),
        2
    );
}

#[test]
fn check_the_example_site() {
    let (code, out, err) =
        run(kiln().args(["inventory", "check", "-i", "inventories/example-site.yaml"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.is_empty(),
        "check writes nothing to stdout without --json: {out}"
    );
    assert!(err.contains("ok, 32 nodes in 2 racks"), "{err}");
}

#[test]
fn check_reports_every_mistake_with_positions() {
    let code = cli_snapshot!(
        "check_three_mistakes",
        [
            "inventory",
            "check",
            "-i",
            "tests/fixtures/inventories/three-mistakes.yaml"
        ]
    );
    assert_eq!(code, 2);
    let code = cli_snapshot!(
        "check_many_mistakes",
        [
            "inventory",
            "check",
            "-i",
            "tests/fixtures/inventories/many-mistakes.yaml"
        ]
    );
    assert_eq!(code, 2);
}

#[test]
fn check_json() {
    let code = cli_snapshot!(
        "check_three_mistakes_json",
        [
            "--json",
            "inventory",
            "check",
            "-i",
            "tests/fixtures/inventories/three-mistakes.yaml"
        ]
    );
    assert_eq!(code, 2);
}

#[test]
fn inventory_from_the_environment() {
    let (code, _, err) = run(kiln()
        .env("KILN_INVENTORY", "inventories/demo.yaml")
        .args(["inventory", "check"]));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn show_selected_nodes() {
    cli_snapshot!(
        "show_selection_table",
        [
            "inventory",
            "show",
            "-i",
            "inventories/example-site.yaml",
            "--select",
            "r01-n[01-03],rack:r02&!r02-n[02-16]"
        ]
    );
    let (code, out, err) = run(kiln().args([
        "--json",
        "inventory",
        "show",
        "-i",
        "inventories/example-site.yaml",
        "--select",
        "position=02",
    ]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 16);
    assert_eq!(nodes[0]["hardware"], "hgx-h200-141gb-8x");
    assert_eq!(nodes[0]["bmc"]["password"]["env"], "KILN_BMC_PASSWORD");
    // The password itself is never output, even when it is available.
    assert!(!out.contains("\"test\""));
}

#[test]
fn a_selection_that_matches_nothing_is_an_error() {
    for (expr, expected) in [
        ("r09-*", "selection `r09-*` matches no node"),
        ("r01-n[01-", "invalid selection"),
    ] {
        let example = "inventories/example-site.yaml";
        let (code, _, err) = run(kiln().args(["inventory", "show", "-i", example, "-s", expr]));
        assert_eq!(code, 2);
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn an_invalid_inventory_stops_other_commands() {
    let (code, out, err) = run(kiln().args([
        "inventory",
        "show",
        "-i",
        "tests/fixtures/inventories/three-mistakes.yaml",
    ]));
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("has 3 error(s)"), "{err}");
}

#[test]
fn generate_then_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.yaml");
    let (code, _, err) = run(kiln()
        .args([
            "inventory",
            "generate",
            "--racks",
            "3",
            "--nodes-per-rack",
            "4",
            "--base-bmc",
            "127.10.0.1",
            "--bmc-port",
            "8443",
            "-o",
        ])
        .arg(&file));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(kiln().arg("inventory").arg("check").arg("-i").arg(&file));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("12 nodes in 3 racks"), "{err}");
    // Never overwrites.
    let (code, _, err) = run(kiln()
        .args([
            "inventory",
            "generate",
            "--racks",
            "1",
            "--nodes-per-rack",
            "1",
            "-o",
        ])
        .arg(&file));
    assert_eq!(code, 2);
    assert!(err.contains("exists"), "{err}");
    // Addresses that run off the end of IPv4.
    let (code, _, err) = run(kiln().args([
        "inventory",
        "generate",
        "--racks",
        "2",
        "--nodes-per-rack",
        "200",
        "--base-ssh",
        "255.255.255.0",
    ]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn profiles() {
    cli_snapshot!("profile_list", ["profile", "list"]);
    let (code, out, _) = run(kiln().args(["profile", "show", "hgx-h100-80gb-8x"]));
    assert_eq!(code, 0);
    assert!(out.contains("name: hgx-h100-80gb-8x"));
    assert!(
        out.contains("https://"),
        "profile numbers carry their public sources"
    );
    assert!(
        out.contains(
            "repository key (apt, cuda-keyring): EB693B3035CD5710E231E123A4B469963BF863CC"
        ),
        "the pins are shown: {out}"
    );
    assert!(out.contains("gpu-burn: sha256 none pinned"), "{out}");
    let (code, out, _) = run(kiln().args(["--json", "profile", "show", "hgx-b200-180gb-8x"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gpu"]["count"], 8);
    assert_eq!(
        cli_snapshot!("profile_show_unknown", ["profile", "show", "hgx-h100"]),
        2
    );
}

#[test]
fn missing_and_unreadable_files() {
    let (code, _, err) = run(kiln().args(["inventory", "check", "-i", "no/such/file.yaml"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read inventory no/such/file.yaml"),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");
    let (code, _, err) = run(kiln().args(["inventory", "check", "-i", "inventories"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn colour_follows_the_flag_and_no_color() {
    let args = [
        "inventory",
        "check",
        "-i",
        "tests/fixtures/inventories/three-mistakes.yaml",
    ];
    let (_, _, plain) = run(kiln().args(args));
    assert!(!plain.contains('\x1b'));
    let (_, _, coloured) = run(kiln().args(["--color", "always"]).args(args));
    assert!(coloured.contains("\x1b[1;31merror"), "{coloured}");
    let (_, _, never) = run(kiln().args(["--color", "never"]).args(args));
    assert!(!never.contains('\x1b'));
}

#[test]
fn quiet_hides_warnings_and_summaries() {
    let (code, out, err) = run(kiln().env_remove("KILN_BMC_PASSWORD").args([
        "-q",
        "inventory",
        "check",
        "-i",
        "inventories/example-site.yaml",
    ]));
    assert_eq!(code, 0);
    assert!(out.is_empty() && err.is_empty(), "{out}{err}");
}

/// Warnings that a setting is unsafe stay on screen with `-q`.
#[test]
fn quiet_keeps_unsafe_setting_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.yaml");
    std::fs::write(
        &site,
        "site: par1\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  \
         bmc: {username: admin, password: {env: KILN_TEST_PW}, tls: insecure}\n  ssh: {user: ubuntu}\n\
         racks:\n  - name: r01\n    nodes:\n      - {name: r01-n01, bmc: 10.10.1.11, ssh: 10.20.1.11}\n",
    )
    .unwrap();
    let (code, _, err) = run(kiln()
        .env("KILN_TEST_PW", "x")
        .args(["-q", "inventory", "check", "-i"])
        .arg(&site));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("site.yaml:5:") && err.contains("`tls: insecure`"),
        "{err}"
    );
}

#[test]
fn bench_inventory_reports_ratios() {
    let (code, out, err) = run(kiln().args([
        "--json",
        "bench",
        "inventory",
        "--nodes",
        "500",
        "--runs",
        "1",
    ]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nodes"], 500);
    assert!(v["ratio_to_yaml_parse"].as_f64().unwrap() > 0.0);
}

#[test]
fn judge_captured_outputs() {
    let dir = "tests/fixtures/judge";
    let (code, out, _) = run(kiln().args([
        "judge",
        "nccl",
        &format!("{dir}/nccl-tests/all_reduce_perf_1node_8xH100_nvls_476GBps_issue290.txt"),
        "--profile",
        "hgx-h100-80gb-8x",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("floor 450 GB/s"),
        "in-node floor for an 8-GPU run: {out}"
    );
    // 16 GPUs on two nodes: judged against the cross-node floor.
    let degraded = format!(
        "{dir}/nccl-tests/all_reduce_perf_2node_16xH100_ndr_degraded-155GBps_srun-label_validation0_issue290.txt"
    );
    let code = cli_snapshot!(
        "judge_nccl_degraded",
        ["judge", "nccl", &degraded, "--profile", "hgx-h100-80gb-8x"]
    );
    assert_eq!(code, 1);
    // Integrity only: the same run has no errors.
    let (code, _, _) = run(kiln().args(["judge", "nccl", &degraded]));
    assert_eq!(code, 0);
    let (code, out, _) = run(kiln().args([
        "--json",
        "judge",
        "gpu-burn",
        &format!("{dir}/gpu-burn/gpu_burn_6gpu_init-failed-but-all-OK_issue7.txt"),
    ]));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "fail");
    // Output that cannot be judged: exit 2, saying what was expected.
    let (code, _, err) = run(kiln().args(["judge", "gpu-burn", "Cargo.toml"]));
    assert_eq!(code, 2);
    assert!(err.contains("cannot judge this output"), "{err}");
    let (code, _, err) = run(kiln().args(["judge", "nccl", "no-such-file"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn verify_without_a_trusted_key_is_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = kiln::handoff::sign::SiteKey::generate().unwrap();
    let signed = key.sign(serde_json::json!({"node": "r01-n01", "verdict": "accepted"}));
    let record = dir.path().join("acceptance.json");
    std::fs::write(&record, serde_json::to_string_pretty(&signed).unwrap()).unwrap();
    let public = dir.path().join("site-key.pub");
    std::fs::write(&public, key.public_line()).unwrap();

    let (code, _, err) = run(kiln().arg("verify").arg(&record));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("NOT VERIFIED") && err.contains("--key"),
        "{err}"
    );
    let (code, out, err) = run(kiln().args(["verify", "--json"]).arg(&record));
    assert_eq!(code, 4, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (doc["valid"].as_bool(), doc["origin_verified"].as_bool()),
        (Some(true), Some(false))
    );

    let (code, _, err) = run(kiln().arg("verify").arg(&record).arg("--integrity-only"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("not checked"), "{err}");
    let (code, _, err) = run(kiln().arg("verify").arg(&record).arg("--key").arg(&public));
    assert_eq!(code, 0, "{err}");
}
