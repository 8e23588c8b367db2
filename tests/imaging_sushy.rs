//! `kiln image deploy` against OpenStack's sushy-tools emulator (a Redfish
//! service kiln did not write): the emulator downloads the per-node
//! installer image from kiln's boot server when it is inserted, and the
//! boot override and power-on succeed, checked with curl against the
//! emulator. There is no installer behind it, so the node then ends at
//! `wait-installed` with the reason that says how far it got.
//!
//! Needs Python and PyPI (sushy-tools is installed into a venv by
//! `tests/interop/setup-python.sh`). `KILN_SKIP_INTEROP=1` skips it on a
//! machine without them; CI never sets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const IP: &str = "127.72.0.10";
const PORT: &str = "8445";

struct Sushy {
    work: PathBuf,
    info: Value,
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = Command::new(common::root().join("tests/interop/sushy/stop.sh"))
            .arg(&self.work)
            .status();
    }
}

fn start(work: &Path) -> Sushy {
    let out = Command::new(common::root().join("tests/interop/sushy/start.sh"))
        .args([IP, PORT])
        .arg(work)
        .output()
        .expect("start.sh runs");
    assert!(
        out.status.success(),
        "sushy-emulator did not start (set KILN_SKIP_INTEROP=1 on machines without Python/PyPI):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let info: Value = serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
    Sushy {
        work: work.to_owned(),
        info,
    }
}

fn curl(s: &Sushy, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--cacert"])
        .arg(s.info["cert"].as_str().unwrap())
        .args(["-u", "admin:sushy-pass"])
        .arg(format!("https://{IP}:{PORT}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sushy_mounts_kilns_installer_boots_it_once_and_powers_on() {
    if common::skip_interop("sushy-tools", None) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sushy = start(&dir.path().join("sushy"));
    let fingerprint = sushy.info["fingerprint"].as_str().unwrap();
    let system = sushy.info["system"].as_str().unwrap().to_owned();
    let key = dir.path().join("id_ed25519");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        dir.path().join("site.yaml"),
        format!(
            "site: sushy\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {{env: KILN_SUSHY_PASSWORD}}\n    tls: {{pin: \"{fingerprint}\"}}\n  ssh:\n    user: kiln\n    key: {}\nracks:\n  - name: r01\n    nodes:\n      - {{name: sushy-1, bmc: \"{IP}:{PORT}\", ssh: \"127.72.0.11:22\"}}\n",
            key.display()
        ),
    )
    .unwrap();
    let iso = dir.path().join("installer.iso");
    std::fs::write(&iso, kiln::imaging::iso::demo_installer(1 << 20)).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_SUSHY_PASSWORD", "sushy-pass")
        .env("KILN_STATE_DIR", dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .arg("-i")
        .arg(dir.path().join("site.yaml"))
        .args(["--json", "image", "deploy", "--iso"])
        .arg(&iso)
        .args([
            "--bind",
            "127.72.0.12:0",
            "--install-timeout",
            "5s",
            "--graceful-timeout",
            "15s",
            "--poll",
            "500ms",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = doc["nodes"][0]["error"].as_str().unwrap();
    // Insert, boot override and power-on passed; sushy fetched the image.
    assert!(error.starts_with("wait-installed:"), "{text}");
    assert!(
        error.contains("the BMC did fetch the installer image"),
        "{text}"
    );

    let sys = curl(&sushy, &system);
    assert_eq!(sys["PowerState"], "On", "{sys}");
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Cd", "{sys}");
    let media = curl(
        &sushy,
        &format!("{}/VirtualMedia", sys["@odata.id"].as_str().unwrap()),
    );
    let mut inserted = Vec::new();
    for m in media["Members"].as_array().unwrap() {
        let slot = curl(&sushy, m["@odata.id"].as_str().unwrap());
        if slot["Inserted"] == true {
            inserted.push(slot["Image"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(inserted.len(), 1, "{inserted:?}");
    assert!(
        inserted[0].starts_with("http://127.72.0.12:") && inserted[0].ends_with("/installer.iso"),
        "{inserted:?}"
    );
}
