//! `kiln burnin` on this machine, with `nvidia-smi`, `gpu_burn` and `dmesg`
//! replaying what the real tools printed on an H200 (tests/fixtures/judge,
//! SOURCES.md): the same steps and judges as the pipeline's burn-in stage,
//! through the local transport.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A folder of stand-in tools. `nvidia-smi` answers the idle snapshot
/// until `gpu_burn` has started, then the one taken under load;
/// `dmesg` prints `kernel_log` (nothing when `None`).
fn tools(dir: &Path, kernel_log: Option<&str>) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = format!("{FIXTURES}/judge/nvidia-smi");
    let loaded = dir.join("loaded");
    script(
        &bin,
        "nvidia-smi",
        &format!(
            "case \"$*\" in\n\
             *--query-gpu=*) echo '0, 60, 692.32, 1575' ;;\n\
             *nvlink*) cat '{FIXTURES}/judge/nvlink/nvlink-s_1xH200_vm-passthrough_empty.txt' ;;\n\
             *--xml-format*) if [ -e '{l}' ]; then cat '{smi}/nvidia-smi-q-x_1xH200_580.159.04_vm_load-gpuburn.xml'; \
             else cat '{smi}/nvidia-smi-q-x_1xH200_580.159.04_vm_idle.xml'; fi ;;\n\
             *) exit 2 ;;\n\
             esac\n",
            l = loaded.display()
        ),
    );
    // Long enough for the snapshot half-way through a 10 s burn.
    script(
        &bin,
        "gpu_burn",
        &format!(
            "touch '{}'\nsleep 6\ncat '{FIXTURES}/judge/gpu-burn/gpu_burn_1xH200_tc_90s_all-ok_580.159.04.txt'\n",
            loaded.display()
        ),
    );
    let log = kernel_log.map_or(String::new(), |f| {
        format!("cat '{FIXTURES}/judge/dmesg/{f}'\n")
    });
    script(&bin, "dmesg", &log);
    bin
}

fn burnin(dir: &Path, bin: &Path, profile: &str) -> (Output, serde_json::Value) {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("PATH", path)
        .args(["--json", "-i"])
        .arg(format!("{FIXTURES}/station/inventory.yaml"))
        .args(["burnin", "-p", profile, "-d", "10s", "--sample-every", "1s"])
        .arg("--gpu-burn")
        .arg(bin.join("gpu_burn"))
        .arg("-o")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn step<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {json}"))
}

#[test]
fn an_h200_station_passes_its_burn_in() {
    let dir = tempfile::tempdir().unwrap();
    let bin = tools(dir.path(), None);
    let (out, json) = burnin(dir.path(), &bin, "h200-1x-station");
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!(json["passed"], true);
    let names: Vec<_> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    // No NVLink step: the profile expects none.
    assert_eq!(names, ["health", "burn", "xid"]);
    let burn = step(&json, "burn");
    assert_eq!(burn["metrics"]["gflops_by_gpu"][0]["gflops"], 348_692.0);
    // The snapshot was the one under load, and judged as such.
    assert_eq!(
        burn["metrics"]["under_load"]["metrics"]["load"],
        "under_load"
    );
    // The captured outputs are where the summary says.
    let node = json["node"].as_str().unwrap();
    let log = dir
        .path()
        .join("out")
        .join(node)
        .join("burnin/gpu_burn.log");
    assert!(std::fs::read_to_string(log).unwrap().contains("GPU 0: OK"));
}

#[test]
fn a_fatal_xid_or_the_wrong_machine_fails_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bin = tools(dir.path(), Some("dmesg_xid-119_gsp-timeout_H100.txt"));
    let (out, json) = burnin(dir.path(), &bin, "h200-1x-station");
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json["passed"], false);
    let xid = step(&json, "xid");
    assert_eq!(xid["status"], "failed");
    assert!(xid["detail"].as_str().unwrap().contains("Xid 119"), "{xid}");

    // The 8-GPU HGX profile on this one GPU stops at health, before any burn.
    let (out, json) = burnin(dir.path(), &bin, "hgx-h200-141gb-8x");
    assert_eq!(out.status.code(), Some(1), "{json}");
    let health = step(&json, "health");
    assert_eq!(health["status"], "failed");
    assert!(
        health["detail"]
            .as_str()
            .unwrap()
            .contains("nvidia-smi shows 1 GPUs, expected 8"),
        "{health}"
    );
    assert_eq!(json["steps"].as_array().unwrap().len(), 1);
}
