//! `kiln bmc` against OpenStack's sushy-tools emulator (fake driver, HTTP
//! basic auth, TLS 1.2): a Redfish service kiln did not write. Power with
//! its real 1–11 s delays, boot override, and virtual-media insert/eject of
//! an ISO kiln's test serves — each checked with curl against the emulator.
//! Its fake driver has no BIOS: kiln must see none, and a forced write is
//! refused (501).
//!
//! Needs Python and PyPI (sushy-tools is installed into a venv by
//! `tests/interop/setup-python.sh`). `KILN_SKIP_INTEROP=1` skips it on a
//! machine without them; CI never sets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::simrack::FileServer;
use serde_json::Value;

const IP: &str = "127.219.0.1";
const PORT: &str = "8444";
/// The BIOS test's emulator.
const BIOS_IP: &str = "127.219.0.4";

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

/// Starts an emulator on `ip` (each test its own: nextest runs them at
/// once).
fn start(work: &Path, ip: &str) -> Sushy {
    let out = Command::new(common::root().join("tests/interop/sushy/start.sh"))
        .args([ip, PORT])
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

fn kiln(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_SUSHY_PASSWORD", "sushy-pass")
        .env("KILN_STATE_DIR", dir.join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .arg("-i")
        .arg(dir.join("site.yaml"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["nodes"][0]["result"].clone()
}

/// GET with curl, verifying the emulator's certificate.
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
fn kiln_drives_sushy_tools() {
    if common::skip_interop("sushy-tools", None) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sushy = start(&dir.path().join("sushy"), IP);
    let fingerprint = sushy.info["fingerprint"].as_str().unwrap();
    let system = sushy.info["system"].as_str().unwrap().to_owned();
    std::fs::write(
        dir.path().join("site.yaml"),
        format!(
            "site: sushy\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {{env: KILN_SUSHY_PASSWORD}}\n    tls: {{pin: \"{fingerprint}\"}}\n  ssh:\n    user: kiln\nracks:\n  - name: r01\n    nodes:\n      - {{name: sushy-1, bmc: \"{IP}:{PORT}\", ssh: \"127.219.0.3:22\"}}\n"
        ),
    )
    .unwrap();

    // Trust agrees with the inventory's pin.
    let t = ok(&kiln(dir.path(), &["--json", "bmc", "trust"]));
    assert_eq!(t["result"], "matches the inventory pin");

    let s = ok(&kiln(dir.path(), &["--json", "bmc", "status"]));
    assert_eq!(s["identity"]["vendor"], "generic");
    assert_eq!(s["host"]["power"], "Off");

    // Power changes appear 0–11 s after the emulator's 204: kiln waits and
    // reads back.
    let p = ok(&kiln(dir.path(), &["--json", "bmc", "power", "on"]));
    assert_eq!(p["after"], "On");
    assert_eq!(curl(&sushy, &system)["PowerState"], "On");

    let b = ok(&kiln(
        dir.path(),
        &["--json", "bmc", "boot", "cd", "--once"],
    ));
    assert_eq!(b["target"], "Cd");
    // sushy stores Once but reports Continuous; kiln notes it, not fails.
    assert!(b["notes"][0].as_str().unwrap().contains("Continuous"));
    assert_eq!(
        curl(&sushy, &system)["Boot"]["BootSourceOverrideTarget"],
        "Cd"
    );
    let b = ok(&kiln(
        dir.path(),
        &["--json", "bmc", "boot", "pxe", "--persistent"],
    ));
    assert_eq!(b["target"], "Pxe");

    let www = tempfile::tempdir().unwrap();
    let iso: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.path().join("kiln-installer.iso"), &iso).unwrap();
    let files = FileServer::start(www.path(), "127.219.0.2");
    let image = format!("{}/kiln-installer.iso", files.url);
    let m = ok(&kiln(
        dir.path(),
        &["--json", "bmc", "media", "insert", &image],
    ));
    assert_eq!(m["via"], "insert-action");
    let slot = m["slot"].as_str().unwrap().to_owned();
    let media = curl(&sushy, &slot);
    assert_eq!(media["Inserted"], true);
    assert_eq!(media["Image"], image.as_str());
    assert_eq!(media["ImageName"], "kiln-installer.iso");

    let e = ok(&kiln(dir.path(), &["--json", "bmc", "media", "eject"]));
    assert_eq!(e[0]["slot"], slot.as_str());
    assert_eq!(curl(&sushy, &slot)["Inserted"], false);

    // A cycle waits for Off before asking for On: the emulator drops an
    // On sent while its Off is still pending.
    let c = ok(&kiln(dir.path(), &["--json", "bmc", "power", "cycle"]));
    assert_eq!(c["sent"], serde_json::json!(["ForceOff", "On"]));
    assert_eq!(c["after"], "On");
    let o = ok(&kiln(dir.path(), &["--json", "bmc", "power", "off"]));
    assert_eq!(o["after"], "Off");
    assert_eq!(curl(&sushy, &system)["PowerState"], "Off");
}

/// sushy-tools' fake driver has no BIOS (its `get_bios`/`set_bios` raise
/// `NotSupportedError`), so the system links none and `BIOS` answers 501.
/// kiln's BIOS step must see "no BIOS" rather than fail, and a write forced
/// at the usual paths must come back as a refused request, not a hang.
#[tokio::test]
async fn kiln_sees_no_bios_on_sushy_fake_driver() {
    if common::skip_interop("sushy-tools", None) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sushy = start(&dir.path().join("sushy"), BIOS_IP);
    let system_path = sushy.info["system"].as_str().unwrap().to_owned();
    let pin = sushy.info["fingerprint"].as_str().unwrap();
    let tls = kiln::bmc::tls::pinned(pin.parse().unwrap()).unwrap();
    let options = kiln::bmc::transport::TransportOptions {
        request_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    let transport =
        kiln::bmc::transport::Transport::new(BIOS_IP, PORT.parse().unwrap(), tls, options);
    let client = kiln::bmc::client::BmcClient::new(
        "sushy-1",
        transport,
        "admin",
        kiln::secret::Secret::new("sushy-pass".to_owned()),
    );

    let system = client.get(&system_path).await.unwrap();
    assert!(system.get("Bios").is_none(), "{system}");
    assert_eq!(
        kiln::bmc::update::bios(&client, &system).await.unwrap(),
        None
    );

    let path = format!("{system_path}/BIOS");
    let forced = kiln::bmc::update::Bios {
        settings: Some(format!("{path}/Settings")),
        path,
        ..Default::default()
    };
    let mut changes = serde_json::Map::new();
    changes.insert("BootMode".into(), Value::from("Uefi"));
    let err = kiln::bmc::update::write_bios(&client, &forced, changes)
        .await
        .unwrap_err();
    assert!(err.is_absent(), "{err}");
}
