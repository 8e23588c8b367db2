//! The drivers stage on the virtual rack over real SSH, installing from a
//! site mirror served on loopback (127.80.x.x): healthy nodes are
//! installed and verified, an apt failure and a missing GPU fail exactly
//! their nodes with clear reasons, a second run changes nothing, and a node
//! running an older driver is rebooted once. The mirror's `cuda-keyring` is
//! a real Debian package holding a real OpenPGP key made here (the nodes
//! run the host's `dpkg-deb`, `gpg`, `sha256sum` and `tar`); a wrong key, a
//! tampered tool tarball and an unpinned tool each fail their node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::simrack::{Rack, RackSpec};
use kiln::drivers::{Deadlines, DriversCx, Mode, Report, stage};
use kiln::inventory::Node;
use kiln::pipeline::step::{Steps, Stop};
use kiln::profiles::Catalog;
use kiln::ssh::auth::Credentials;
use kiln::ssh::hostkeys::Verifier;
use kiln::ssh::{Client, ClientOptions, Pool, Remote, Target};

/// A static file server for the mirror (HTTP/1.0, GET only), on `ip`.
fn serve_mirror(ip: &str, root: PathBuf) -> String {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap_or(0);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let file = root.join(path.trim_start_matches('/'));
                let _ = match (path.contains(".."), std::fs::read(&file)) {
                    (false, Ok(body)) => stream
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&body)),
                    _ => stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                };
            });
        }
    });
    format!("http://{addr}/nvidia")
}

/// An OpenPGP signing key made with gpg for a test.
struct TestKey {
    /// Its fingerprint (40 hex digits, upper case).
    fpr: String,
    /// The binary keyring holding it (what `cuda-keyring` ships).
    keyring: Vec<u8>,
}

/// A fresh ed25519 signing key for `uid`.
fn gpg_key(uid: &str) -> TestKey {
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    gpg(&[
        "--passphrase",
        "",
        "--quick-gen-key",
        uid,
        "ed25519",
        "sign",
        "never",
    ]);
    let list = String::from_utf8(gpg(&["--with-colons", "--list-keys"])).unwrap();
    let fpr = list
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_owned();
    let keyring = gpg(&["--export", &fpr]);
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home.path())
        .args(["--kill", "gpg-agent"])
        .status();
    TestKey { fpr, keyring }
}

/// The key the tests' profiles pin, standing in for NVIDIA's.
fn pinned() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| gpg_key("kiln test repository <repo@example.net>"))
}

/// A `cuda-keyring` Debian package whose keyring holds `keyring`, built
/// with `dpkg-deb`.
fn keyring_deb(keyring: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/keyrings")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: cuda-keyring\nVersion: 1.1-1\nArchitecture: all\nMaintainer: kiln tests <tests@example.net>\nDescription: test repository keyring\n",
    )
    .unwrap();
    std::fs::write(
        root.join("usr/share/keyrings/cuda-archive-keyring.gpg"),
        keyring,
    )
    .unwrap();
    let deb = dir.path().join("cuda-keyring.deb");
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(deb).unwrap()
}

/// A mirror folder laid out as NVIDIA's repository: the keyring package,
/// holding the pinned key.
fn mirror_dir() -> tempfile::TempDir {
    mirror_dir_with(&pinned().keyring)
}

/// A mirror folder whose keyring package holds `keyring`.
fn mirror_dir_with(keyring: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("nvidia/ubuntu2404/x86_64");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("cuda-keyring_1.1-1_all.deb"),
        keyring_deb(keyring),
    )
    .unwrap();
    dir
}

/// The rack's nodes as the inventory resolves them, installing from
/// `mirror`.
fn inventory_nodes(rack: &Rack, mirror: &str) -> Vec<Node> {
    let checked = kiln::inventory::load_file(&rack.dir.path().join("site.yaml")).unwrap();
    let inv = checked.inventory.expect("the rack's inventory is valid");
    inv.nodes
        .into_iter()
        .map(|mut n| {
            n.mirror = Some(mirror.to_owned());
            n
        })
        .collect()
}

fn contexts(rack: &Rack, nodes: &[Node], run_dir: &Path) -> Vec<DriversCx> {
    let verifier = Verifier::new(Vec::new(), None, false);
    let pool = Arc::new(Pool::new(Client::new(
        Arc::new(verifier),
        Arc::new(Credentials::new()),
        ClientOptions::default(),
    )));
    let catalog = Catalog::builtin().unwrap();
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let addr = rack.nodes[i]["ssh"].as_str().unwrap();
            let (host, port) = addr.rsplit_once(':').unwrap();
            let target = Target {
                node: node.name.clone(),
                host: host.to_owned(),
                port: port.parse().unwrap(),
                user: "kiln".into(),
                key: Some(rack.key()),
                known_hosts: Some(rack.dir.path().join("known_hosts")),
                jump: None,
            };
            let mut hardware = catalog.hardware[&node.hardware].profile.clone();
            hardware.drivers.repo_key = Some(pinned().fpr.clone());
            DriversCx {
                node: node.clone(),
                hardware: Arc::new(hardware),
                image: Arc::new(catalog.images[&node.image].profile.clone()),
                remote: Remote::Ssh {
                    pool: Arc::clone(&pool),
                    target,
                },
                run_dir: run_dir.to_owned(),
                mode: Mode::Install,
                deadlines: Deadlines {
                    probe: Duration::from_secs(60),
                    install: Duration::from_secs(120),
                    reboot: Duration::from_secs(60),
                    poll: Duration::from_millis(200),
                },
            }
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the stage on every node at once: (node, result) in node order.
fn run_all(cxs: &[DriversCx]) -> Vec<(String, Result<Report, Stop>)> {
    runtime().block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, cx) in cxs.iter().cloned().enumerate() {
            set.spawn(async move {
                let mut steps = Steps::unjournaled(cx.node.name.clone(), "drivers");
                (i, cx.node.name.clone(), stage(&cx, &mut steps).await)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, n, r)| (n, r)).collect()
    })
}

fn failure(r: &Result<Report, Stop>) -> (String, Vec<String>) {
    match r {
        Err(Stop::Failed { step, outcome }) => ((*step).to_owned(), outcome.reasons.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn installs_verifies_fails_faulty_nodes_and_second_run_changes_nothing() {
    let faults = "faults:\n\
        \x20 - nodes: \"t-n05\"\n    package_install_failures: 1\n\
        \x20 - nodes: \"t-n06\"\n    gpu_missing: 3\n";
    let rack = Rack::start(RackSpec {
        net: 80,
        nodes: 6,
        faults: Some(faults),
        ..RackSpec::default()
    });
    let mirror_files = mirror_dir();
    let mirror = serve_mirror("127.80.0.1", mirror_files.path().to_owned());
    let nodes = inventory_nodes(&rack, &mirror);
    let run_dir = tempfile::tempdir().unwrap();
    let cxs = contexts(&rack, &nodes, run_dir.path());

    let clock = Instant::now();
    let first = run_all(&cxs);
    let first_s = clock.elapsed().as_secs_f64();
    for (name, r) in &first[..4] {
        let report = r.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.installed, "{name} installed");
        assert!(!report.rebooted, "{name}: a fresh install loads in place");
        let m = &report.metrics;
        assert_eq!(m["driver"], "570.133.20", "{name}: {m}");
        assert_eq!(m["fabricmanager"], "570.133.20");
        assert_eq!(m["cuda"], "12.8");
        assert_eq!(m["dcgm"], "4.2.3");
        assert_eq!(m["nccl"], "2.26.5");
        assert_eq!(m["os"], "Ubuntu 24.04 LTS");
        assert!(m["kernel"].as_str().unwrap().ends_with("-generic"));
        let gpus = m["gpus"].as_array().unwrap();
        assert_eq!(gpus.len(), 8);
        for (k, g) in gpus.iter().enumerate() {
            assert_eq!(g["index"], k as u64);
            assert_eq!(g["model"], "NVIDIA H100 80GB HBM3");
            assert!(g["uuid"].as_str().unwrap().starts_with("GPU-"));
            assert!(!g["serial"].as_str().unwrap().is_empty());
            assert_eq!(
                (g["pcie_gen"].as_u64(), g["pcie_width"].as_u64()),
                (Some(5), Some(16))
            );
        }
        // The log streamed into the run folder; the nouveau blacklist is
        // on the node.
        let log =
            std::fs::read_to_string(run_dir.path().join(format!("{name}/drivers/install.log")))
                .unwrap();
        assert!(
            log.contains("kiln-drivers: done: driver 570.133.20"),
            "{log}"
        );
        assert!(
            log.contains(&format!("repository: {mirror}/ubuntu2404/x86_64")),
            "{log}"
        );
    }
    let i = 0;
    let (code, out, _) = rack.ssh(i, "cat \"$KILN_NODE_ROOT/etc/modprobe.d/blacklist-nouveau.conf\" \"$KILN_NODE_ROOT/etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list\"; lsmod | grep -c '^nvidia_peermem'");
    assert_eq!(code, 0);
    assert!(out.contains("blacklist nouveau"), "{out}");
    assert!(out.contains(&format!("deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {mirror}/ubuntu2404/x86_64/ /")), "{out}");
    assert!(out.ends_with("1\n"), "{out}");

    let (step, reasons) = failure(&first[4].1);
    assert_eq!(step, "install", "{reasons:?}");
    assert!(reasons[0].contains("apt-get install failed"), "{reasons:?}");
    assert!(reasons[0].contains("E: Failed to fetch"), "{reasons:?}");
    assert!(
        reasons[0].contains("log: t-n05/drivers/install.log"),
        "{reasons:?}"
    );
    let (step, reasons) = failure(&first[5].1);
    assert_eq!(step, "verify", "{reasons:?}");
    assert!(
        reasons.contains(&"GPU count: expected 8, observed 7".to_owned()),
        "{reasons:?}"
    );

    // Second run: the installed nodes are verified, not reinstalled.
    let clock = Instant::now();
    let second = run_all(&cxs[..4]);
    let second_s = clock.elapsed().as_secs_f64();
    for (name, r) in &second {
        let report = r.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!report.installed && !report.rebooted, "{name} untouched");
        assert_eq!(report.metrics["driver"], "570.133.20");
    }
    eprintln!("drivers stage on 4 nodes: first run {first_s:.1} s, second run {second_s:.1} s");
    assert!(
        second_s < first_s,
        "the second run is faster ({second_s:.1} s vs {first_s:.1} s)"
    );

    // The failed install goes through on a retry (the mirror is back).
    let retry = run_all(&cxs[4..5]);
    assert!(
        retry[0].1.as_ref().is_ok_and(|r| r.installed),
        "{:?}",
        retry[0].1.as_ref().err()
    );
}

#[test]
fn an_older_driver_is_replaced_with_one_reboot_and_verify_only_changes_nothing() {
    let rack = Rack::start(RackSpec {
        net: 81,
        nodes: 2,
        ..RackSpec::default()
    });
    let mirror_files = mirror_dir();
    let mirror = serve_mirror("127.81.0.1", mirror_files.path().to_owned());
    let nodes = inventory_nodes(&rack, &mirror);
    let run_dir = tempfile::tempdir().unwrap();
    let mut cxs = contexts(&rack, &nodes, run_dir.path());
    // t-n01 runs the 550 driver, loaded.
    let (code, _, err) = rack.ssh(
        0,
        "sudo apt-get install -y nvidia-driver-550-server-open >/dev/null && sudo modprobe nvidia && nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1",
    );
    assert_eq!(code, 0, "{err}");
    // t-n02 is only verified: bare, it fails, and nothing gets installed.
    cxs[1].mode = Mode::Verify;
    let results = run_all(&cxs);
    let report = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.installed && report.rebooted, "{report:?}");
    assert_eq!(report.metrics["driver"], "570.133.20");
    let log = std::fs::read_to_string(run_dir.path().join("t-n01/drivers/install.log")).unwrap();
    assert!(
        log.contains("Driver/library version mismatch; installed: 570.133.20"),
        "{log}"
    );
    assert!(log.contains("KILN_REBOOT_REQUIRED"), "{log}");
    let settle = std::fs::read_to_string(run_dir.path().join("t-n01/drivers/settle.log")).unwrap();
    assert!(
        settle.contains("packages already at the pinned versions"),
        "{settle}"
    );
    let (step, reasons) = failure(&results[1].1);
    assert_eq!(step, "verify");
    assert!(
        reasons.iter().any(|r| r == "driver package nvidia-driver-570-server-open: expected 570.133.20, observed not installed"),
        "{reasons:?}"
    );
    let (_, out, _) = rack.ssh(1, "dpkg-query -W 'nvidia*' 2>&1");
    assert!(
        out.contains("no packages found"),
        "verify installed nothing: {out}"
    );
}

#[test]
fn kiln_drivers_cli_installs_from_the_inventory_mirror() {
    let rack = Rack::start(RackSpec {
        net: 82,
        nodes: 2,
        ..RackSpec::default()
    });
    let mirror_files = mirror_dir();
    let mirror = serve_mirror("127.82.0.1", mirror_files.path().to_owned());
    let site = rack.dir.path().join("site.yaml");
    let text = std::fs::read_to_string(&site).unwrap().replace(
        "  ssh:\n    user: kiln\n",
        &format!("  ssh:\n    user: kiln\n    key: id_ed25519\n    known_hosts: known_hosts\n  mirror: {mirror}\n"),
    );
    std::fs::write(&site, text).unwrap();
    // The site's copy of the built-in profile pins the test key.
    let profiles = rack.dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let builtin = include_str!("../inventories/profiles/hgx-h100-80gb-8x.yaml");
    let nvidia = "EB69 3B30 35CD 5710 E231  E123 A4B4 6996 3BF8 63CC";
    assert!(builtin.contains(nvidia));
    std::fs::write(
        profiles.join("hgx-h100-80gb-8x.yaml"),
        builtin.replace(nvidia, &pinned().fpr),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let kiln = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_TEST_BMC_PASSWORD", "test")
            .env("KILN_STATE_DIR", state.path())
            .env("NO_COLOR", "1")
            .env_remove("SSH_AUTH_SOCK")
            .arg("-i")
            .arg(&site)
            .args(args)
            .output()
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Bare nodes fail verification, naming what is missing.
    let (code, json, err) = kiln(&["drivers", "verify", "--json"]);
    assert_eq!(code, Some(1), "{err}");
    let n = &json["nodes"][0];
    assert_eq!(n["failed_step"], "verify", "{json}");
    assert!(err.contains("t-n01: verify: driver package nvidia-driver-570-server-open: expected 570.133.20, observed not installed"), "{err}");
    // Install on one node, from the inventory's mirror.
    let (code, json, err) = kiln(&["drivers", "install", "--select", "t-n01", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let n = &json["nodes"][0];
    assert_eq!(
        (n["node"].as_str(), n["installed"].as_bool()),
        (Some("t-n01"), Some(true)),
        "{json}"
    );
    assert_eq!(n["verify"]["driver"], "570.133.20");
    let log = Path::new(json["run_dir"].as_str().unwrap()).join("t-n01/drivers/install.log");
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains(&format!("repository: {mirror}/ubuntu2404/x86_64"))
    );
    let (code, json, err) = kiln(&["drivers", "verify", "--select", "t-n01"]);
    assert_eq!(code, Some(0), "{err} {json}");
}

/// A gpu-burn source tarball (`gpu-burn/` at the top, as GitHub's are)
/// whose Makefile "builds" a script standing in for the binary.
fn gpu_burn_tarball(marker: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("gpu-burn");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("fake.sh"), format!("#!/bin/sh\necho {marker}\n")).unwrap();
    std::fs::write(
        src.join("Makefile"),
        "all:\n\tcp fake.sh gpu_burn\n\ttouch compare.fatbin\n",
    )
    .unwrap();
    let tarball = dir.path().join("gpu-burn.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .arg("gpu-burn")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(tarball).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_wrong_repository_key_a_tampered_tarball_and_an_unpinned_tool_fail_their_nodes() {
    let rack = Rack::start(RackSpec {
        net: 83,
        nodes: 5,
        ..RackSpec::default()
    });
    // gpu_burn is missing on these nodes: the stage builds it from source.
    let (code, out, err) = rack.ssh(
        0,
        "bin=${PATH%%:*}; rm \"$bin/gpu_burn\" && ! command -v gpu_burn",
    );
    assert_eq!(code, 0, "{out} {err}");

    let other = gpg_key("someone else <other@example.net>");
    let good = gpu_burn_tarball("built from the pinned source");
    let tampered = gpu_burn_tarball("tampered");
    let mirrors: Vec<(tempfile::TempDir, &[u8])> = vec![
        // t-n01: cuda-keyring holds another key.
        (mirror_dir_with(&other.keyring), &good),
        // t-n02: the pinned key and another.
        (
            mirror_dir_with(&[pinned().keyring.clone(), other.keyring.clone()].concat()),
            &good,
        ),
        // t-n03: a tarball that is not the one pinned.
        (mirror_dir(), &tampered),
        // t-n04: the profile pins no digest.
        (mirror_dir(), &good),
        // t-n05: the tarball pinned.
        (mirror_dir(), &good),
    ];
    let mut nodes = inventory_nodes(&rack, "unused");
    let mut servers = Vec::new();
    for (node, (dir, tarball)) in nodes.iter_mut().zip(&mirrors) {
        let tools = dir.path().join("nvidia/tools");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(tools.join("gpu-burn.tar.gz"), tarball).unwrap();
        let url = serve_mirror("127.83.0.1", dir.path().to_owned());
        node.mirror = Some(url.clone());
        servers.push(url);
    }
    let run_dir = tempfile::tempdir().unwrap();
    let mut cxs = contexts(&rack, &nodes, run_dir.path());
    let digest = sha256_hex(&good);
    for (i, cx) in cxs.iter_mut().enumerate() {
        let mut hw = (*cx.hardware).clone();
        if i != 3 {
            hw.drivers.tools.gpu_burn.sha256 = Some(digest.clone());
        }
        cx.hardware = Arc::new(hw);
    }
    let results = run_all(&cxs);

    let pin = &pinned().fpr;
    let (step, reasons) = failure(&results[0].1);
    assert_eq!(step, "install", "{reasons:?}");
    let want = format!(
        "repository key {} from {}/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb does not match the pinned {pin} (drivers.repo_key)",
        other.fpr, servers[0]
    );
    assert!(reasons[0].contains(&want), "{reasons:?}\nwant: {want}");
    let (step, reasons) = failure(&results[1].1);
    assert_eq!(step, "install", "{reasons:?}");
    assert!(
        reasons[0].contains(&format!("repository key {pin} {} from", other.fpr)),
        "a keyring with another key besides the pinned one is refused: {reasons:?}"
    );
    // Neither installed the key nor pointed apt at the repository.
    for i in 0..2 {
        let (_, out, _) = rack.ssh(i, "ls \"$KILN_NODE_ROOT/usr/share/keyrings\" \"$KILN_NODE_ROOT/etc/apt/sources.list.d\" 2>&1");
        assert!(!out.contains("cuda"), "t-n0{}: {out}", i + 1);
    }

    let (step, reasons) = failure(&results[2].1);
    assert_eq!(step, "install", "{reasons:?}");
    let want = format!(
        "gpu-burn source SHA-256 {} does not match the pinned {digest} ({}/tools/gpu-burn.tar.gz)",
        sha256_hex(&tampered),
        servers[2]
    );
    assert!(reasons[0].contains(&want), "{reasons:?}\nwant: {want}");
    let (step, reasons) = failure(&results[3].1);
    assert_eq!(step, "install", "{reasons:?}");
    assert!(
        reasons[0].contains("the profile pins no SHA-256 for gpu-burn; add drivers.tools.gpu_burn.sha256 or preinstall it in the image"),
        "{reasons:?}"
    );
    let log = std::fs::read_to_string(run_dir.path().join("t-n04/drivers/install.log")).unwrap();
    assert!(
        !log.contains("building gpu-burn"),
        "nothing downloaded: {log}"
    );

    let report = results[4].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.installed, "{report:?}");
    let (_, out, _) = rack.ssh(4, "cat \"$KILN_NODE_ROOT/usr/local/bin/gpu_burn\" && \"$KILN_NODE_ROOT/opt/gpu-burn/gpu_burn\" && ls \"$KILN_NODE_ROOT/opt/gpu-burn\"");
    assert!(out.contains("cd /opt/gpu-burn"), "{out}");
    assert!(out.contains("built from the pinned source\n"), "{out}");
    // The kernel today's upstream builds, installed beside the binary.
    assert!(out.ends_with("compare.fatbin\ngpu_burn\n"), "{out}");
}
