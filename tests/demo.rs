//! `kiln demo` end to end: the virtual rack comes up in-process, the
//! injected faults fail exactly their nodes with the right reasons, the
//! exit code says some nodes failed, and the HTML report is written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_fails_exactly_the_faulty_nodes_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        // A relative --dir, as people type it: the simulated nodes' shells
        // run elsewhere and must still find the simulated tools.
        .current_dir(dir.path())
        .args(["demo", "--time-scale", "600", "--dir", "demo"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(" r0")).collect();
    assert_eq!(rows.len(), 16, "{stdout}");
    for row in &rows {
        let failed = row.contains("failed");
        match &row[..7] {
            "r01-n03" => assert!(failed && row.contains("missing: GPU6"), "{row}"),
            "r02-n05" => assert!(failed && row.contains("no answer"), "{row}"),
            "r01-n02" => assert!(
                failed
                    && row.contains("firmware")
                    && row.contains("bmc: the BMC's update task failed"),
                "{row}"
            ),
            "r01-n06" => assert!(
                failed && row.contains("burnin") && row.contains("GPU 2:"),
                "{row}"
            ),
            "r02-n03" => assert!(
                failed && row.contains("drivers") && row.contains("apt-get install failed"),
                "{row}"
            ),
            "r02-n07" => assert!(
                failed && row.contains("nccl") && row.contains("mlx5_3"),
                "{row}"
            ),
            _ => assert!(row.contains("accepted"), "{row}"),
        }
    }
    // Every accepted node was imaged from bare metal (its OS verified over
    // SSH after the install), given its driver stack and handed off, per
    // the journal.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("-i")
        .arg(demo.join("site.yaml"))
        .args(["runs", "show", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = record["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 16);
    for node in nodes {
        if node["verdict"] != "accepted" {
            continue;
        }
        let steps = node["steps"].as_array().unwrap();
        let verified = steps
            .iter()
            .find(|s| s["stage"] == "image" && s["step"] == "verify-os")
            .unwrap_or_else(|| panic!("{node}"));
        assert_eq!(verified["status"], "done", "{verified}");
        // r01 runs an installer; r02 is written from a disk image by the
        // deploy environment.
        let name = node["name"].as_str().unwrap();
        let (os, method_step) = if name.starts_with("r02") {
            ("Debian GNU/Linux 12", "wait-written")
        } else {
            ("Ubuntu 24.04", "wait-installed")
        };
        assert!(
            verified["detail"].as_str().unwrap().contains(os),
            "{verified}"
        );
        assert!(steps.iter().any(|s| s["step"] == method_step), "{node}");
    }
    // r01's nodes were brought to the firmware baseline first, and the
    // signed record says from which version to which.
    let r01 = nodes.iter().find(|n| n["name"] == "r01-n01").unwrap();
    let update = r01["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "firmware" && s["step"] == "update")
        .unwrap_or_else(|| panic!("{r01}"));
    assert_eq!(update["status"], "done", "{update}");
    // The stand-in cloud received a signed record per node (failed ones
    // too, marked so), and a receiver verifies it with the site's key.
    let received = demo.join("cloud").join("r01-n01.json");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("verify")
        .arg(&received)
        .arg("--key")
        .arg(demo.join(".kiln").join("site-key.pub"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted"));
    let accepted = std::fs::read_to_string(&received).unwrap();
    assert!(
        accepted.contains("firmware_baseline") && accepted.contains("1.45.455b66-rev4"),
        "{accepted}"
    );
    let failed = std::fs::read_to_string(demo.join("cloud").join("r01-n03.json")).unwrap();
    assert!(failed.contains("\"failed\""), "{failed}");
    let report = std::fs::read_to_string(demo.join("report.html")).unwrap();
    assert!(report.contains("r01-n03") && report.contains("<svg"));
    // The password is in a private file, never in the inventory or output.
    let password = std::fs::read_to_string(demo.join("bmc-password")).unwrap();
    let site = std::fs::read_to_string(demo.join("site.yaml")).unwrap();
    assert!(!site.contains(password.trim()));
    assert!(!stdout.contains(password.trim()) && !stderr.contains(password.trim()));

    // A folder kiln did not make is refused, not cleared.
    let other = dir.path().join("mine");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["demo", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(other.join("keep.txt").exists());
}
