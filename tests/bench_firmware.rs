//! `kiln bench firmware` on a small rack: its JSON report has the check's
//! requests per node and the update wave's figures. Loopback net 178.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_firmware_reports_requests_per_node_and_the_wave_against_its_bound() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .args([
            "--json", "bench", "firmware", "--nodes", "16", "--net", "178",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["check"]["requests_per_node"].as_f64().unwrap() > 0.0);
    assert_eq!(report["wave"]["nodes"], 16);
    assert_eq!(report["wave"]["accepted"], 16);
    for key in ["wall_s", "critical_path_s", "bound_s", "ratio"] {
        assert!(
            report["wave"][key].as_f64().unwrap() > 0.0,
            "{key}: {report}"
        );
    }
}
