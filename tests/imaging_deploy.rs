//! `kiln image deploy` end to end on the virtual rack (a `kiln sim up` child
//! process): blank, powered-off nodes are imaged from an installer kiln
//! wrote itself (ISO 9660, grub.cfg rewritten per node as it streams), the
//! seed is read behind each node's token, the installed system calls back,
//! and the first login is verified with the host key kiln gave the node,
//! checked here by OpenSSH against kiln's store. Imaging faults end only
//! their node, each with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::simrack::{Rack, RackSpec};

fn kiln(rack: &Rack, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_STATE_DIR", rack.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KILN_ISO_DIR")
        .arg("-i")
        .arg(rack.dir.path().join("site.yaml"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A rack of blank nodes, its BMCs trusted, the inventory given the test
/// key (imaging puts its public half into the seed), and an installer.
fn rack(net: u8, nodes: usize, faults: Option<&str>) -> (Rack, PathBuf) {
    let rack = Rack::start(RackSpec {
        net,
        nodes,
        imaged: false,
        faults,
        time_scale: 600,
        ..RackSpec::default()
    });
    let site = rack.dir.path().join("site.yaml");
    let inv = std::fs::read_to_string(&site).unwrap().replace(
        "    user: kiln\n",
        &format!("    user: kiln\n    key: {}\n", rack.key().display()),
    );
    std::fs::write(&site, inv).unwrap();
    let out = kiln(&rack, &["bmc", "trust"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let iso = rack.dir.path().join("installer.iso");
    std::fs::write(&iso, kiln::imaging::iso::demo_installer(256 << 10)).unwrap();
    (rack, iso)
}

fn deploy(rack: &Rack, iso: &Path, net: u8, install: &str, extra: &[&str]) -> Output {
    let bind = format!("127.{net}.0.1:0");
    let mut args = vec![
        "image",
        "deploy",
        "--iso",
        iso.to_str().unwrap(),
        "--bind",
        &bind,
        "--poll",
        "100ms",
        "--graceful-timeout",
        "3s",
        "--install-timeout",
        install,
        "--ssh-timeout",
        "20s",
    ];
    args.extend_from_slice(extra);
    kiln(rack, &args)
}

/// The node's ComputerSystem, as curl sees it.
fn system(rack: &Rack, i: usize) -> serde_json::Value {
    let systems = rack.get(i, "/redfish/v1/Systems");
    let path = systems["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_owned();
    rack.get(i, &path)
}

/// OpenSSH, checking the host key against kiln's store only.
fn ssh_verified(rack: &Rack, i: usize, command: &str) -> (i32, String, String) {
    let store = rack.dir.path().join("state").join("ssh_known_hosts");
    rack.ssh_known(i, command, &store)
}

#[test]
fn deploy_images_blank_nodes_and_the_first_login_is_verified() {
    let (rack, iso) = rack(70, 2, None);
    let out = deploy(&rack, &iso, 70, "40s", &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for n in doc["nodes"].as_array().unwrap() {
        assert_eq!(n["result"]["already"], false, "{n}");
        assert_eq!(n["result"]["os"], "Ubuntu 24.04 LTS", "{n}");
        assert_eq!(n["result"]["booted_via"], "virtual-media", "{n}");
    }
    // Tokens never reach the logs.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("/seed/") || err.contains("/seed/<"), "{err}");

    // OpenSSH trusts kiln's store: the key kiln recorded is the node's.
    for i in 0..2 {
        let (code, stdout, stderr) = ssh_verified(&rack, i, "hostnamectl");
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("Ubuntu 24.04"), "{stdout}");
    }
    // Boot override back to disk, media ejected.
    let sys = system(&rack, 0);
    assert_eq!(sys["PowerState"], "On");
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Hdd", "{sys}");

    // A second run finds the work done and powers nothing off; except on
    // t-n02, whose kiln host key was deleted (to rotate it): a node
    // answering with a trusted key that is not kiln's is imaged again,
    // with a new key, and the old one stops being trusted.
    let store = rack.dir.path().join("state/ssh_known_hosts");
    let old_store = std::fs::read_to_string(&store).unwrap();
    std::fs::remove_file(rack.dir.path().join("state/host-keys/t-n02.ed25519")).unwrap();
    let out = deploy(&rack, &iso, 70, "40s", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("t-n01  already imaged"), "{}", text(&out));
    assert!(stdout.contains("t-n02  imaged"), "{}", text(&out));
    assert_ne!(old_store, std::fs::read_to_string(&store).unwrap());
    let (code, stdout, stderr) = ssh_verified(&rack, 1, "true");
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn each_imaging_fault_ends_only_its_node_with_a_reason() {
    let faults = "faults:\n  - nodes: t-n01\n    media_insert_failures: 100\n  - nodes: t-n02\n    boot_hang: true\n  - nodes: t-n03\n    broken_seed: true\n";
    let (rack, iso) = rack(71, 4, Some(faults));
    let out = deploy(&rack, &iso, 71, "8s", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    let line = |node: &str| {
        all.lines()
            .find(|l| l.trim_start().starts_with(&format!("{node}: ")))
            .unwrap_or_else(|| panic!("no failure line for {node}: {all}"))
            .to_owned()
    };
    let n1 = line("t-n01");
    assert!(
        n1.contains("insert-installer") && n1.contains("BMC"),
        "{n1}"
    );
    assert!(
        n1.contains("/node/[token]/installer.iso"),
        "tokens are cut: {n1}"
    );
    let n2 = line("t-n02");
    assert!(
        n2.contains("wait-installed") && n2.contains("did not complete its first boot"),
        "{n2}"
    );
    let n3 = line("t-n03");
    assert!(
        n3.contains("wait-installed")
            && n3.contains(
                "the installer failed (subiquity/Install: autoinstall config did not validate"
            ),
        "{n3}"
    );
    // The healthy node is imaged and answers with kiln's key.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("t-n04  imaged"),
        "{all}"
    );
    let (code, stdout, stderr) = ssh_verified(&rack, 3, "hostnamectl");
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn deploy_refuses_bad_input_before_touching_a_bmc() {
    let (rack, iso) = rack(72, 1, None);
    // No installer anywhere: exit 2 naming what to download.
    let out = kiln(&rack, &["image", "deploy", "--bind", "127.72.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("releases.ubuntu.com"), "{}", text(&out));
    // Listening everywhere without saying where nodes reach it.
    let out = kiln(
        &rack,
        &[
            "image",
            "deploy",
            "--iso",
            iso.to_str().unwrap(),
            "--bind",
            "0.0.0.0:0",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--advertise"), "{}", text(&out));
    // Nothing was powered on.
    assert_eq!(system(&rack, 0)["PowerState"], "Off");
}

#[test]
fn every_vendor_flavour_is_imaged() {
    // Each vendor's quirks on the way: Dell's refused insert parameters,
    // HPE's BootOnNextServerReset, Supermicro's If-Match and tasks,
    // Lenovo's PATCH mount and its ForceRestart that hangs. This Supermicro
    // also refuses an InsertMedia parameter no quirk knows of (its
    // ActionInfo leaves it out): kiln must read the ActionInfo and send the
    // narrowed body, or the node fails.
    let refusing = "faults:\n  - nodes: t-n01\n    bmc_refused_insert_param: WriteProtected\n";
    for flavour in ["dell", "hpe", "supermicro", "lenovo"] {
        let rack = Rack::start(RackSpec {
            net: 74,
            nodes: 1,
            flavour,
            imaged: false,
            time_scale: 600,
            faults: (flavour == "supermicro").then_some(refusing),
            ..RackSpec::default()
        });
        if flavour == "supermicro" {
            let info = rack.get(
                0,
                "/redfish/v1/Managers/1/VirtualMedia/VirtualMedia1/InsertMediaActionInfo",
            );
            let names: Vec<&str> = info["Parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["Name"].as_str())
                .collect();
            assert!(
                names.contains(&"Image") && !names.contains(&"WriteProtected"),
                "{names:?}"
            );
        }
        let site = rack.dir.path().join("site.yaml");
        let inv = std::fs::read_to_string(&site).unwrap().replace(
            "    user: kiln\n",
            &format!("    user: kiln\n    key: {}\n", rack.key().display()),
        );
        std::fs::write(&site, inv).unwrap();
        let out = kiln(&rack, &["bmc", "trust"]);
        assert_eq!(out.status.code(), Some(0), "{flavour}: {}", text(&out));
        let iso = rack.dir.path().join("installer.iso");
        std::fs::write(&iso, kiln::imaging::iso::demo_installer(64 << 10)).unwrap();
        let out = deploy(&rack, &iso, 74, "40s", &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{flavour}: {}", text(&out));
        let (code, stdout, stderr) = ssh_verified(&rack, 0, "hostnamectl");
        assert_eq!(code, 0, "{flavour}: {stdout}{stderr}");
    }
}

/// A mirror that answers every GET with `body` (the nodes fetch a disk
/// image from it directly, not through kiln).
fn mirror(addr: &str, body: Vec<u8>) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind(addr).unwrap();
    // A name with no local copy: a local copy would be served instead.
    let url = format!(
        "http://{}/mirror-copy.raw.gz",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    url
}

/// The disk-image path on the virtual rack: kiln boots its deploy
/// environment on each node, the node's agent says which disks it has and
/// gets its plan, downloads the image and checks its digest, reads its
/// seed, and the first boot from disk phones home; the login is verified
/// with kiln's host key; t-n04's firmware fetches the deploy environment
/// by UEFI HTTP boot instead of virtual media. A mirror serving the wrong
/// bytes and a root-device hint no disk matches each end only their node.
#[test]
fn a_disk_image_is_written_by_the_deploy_agent() {
    let rack = Rack::start(RackSpec {
        net: 73,
        nodes: 4,
        imaged: false,
        image: "debian-12",
        ..RackSpec::default()
    });
    let dir = rack.dir.path();
    let state = dir.join("state");
    std::fs::create_dir_all(state.join("deploy-env")).unwrap();
    std::fs::write(
        state.join("deploy-env/deploy.iso"),
        kiln::imaging::iso::demo_deploy_env(64 << 10),
    )
    .unwrap();
    std::fs::create_dir_all(state.join("images")).unwrap();
    let image: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(state.join("images/debian-12.raw.gz"), &image).unwrap();
    let digest =
        kiln::imaging::verify::sha256_file(&state.join("images/debian-12.raw.gz"), |_| {}).unwrap();
    std::fs::write(
        state.join("images/debian-12.raw.gz.sha256"),
        format!("{digest}  debian-12.raw.gz\n"),
    )
    .unwrap();
    // t-n02 fetches from a mirror whose copy is not the image named.
    let url = mirror("127.73.0.9:0", b"not the image".to_vec());
    std::fs::create_dir_all(dir.join("profiles/images")).unwrap();
    std::fs::write(
        dir.join("profiles/images/debian-12-mirror.yaml"),
        format!(
            "name: debian-12-mirror\ndescription: Debian 12 from a mirror\nfamily: debian\nversion: \"12\"\n\
             disk_image:\n  url: {url}\n  sha256: {digest}\nseed: nocloud\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("profiles/images/debian-12-http.yaml"),
        format!(
            "name: debian-12-http\ndescription: Debian 12, deploy environment by UEFI HTTP boot\n\
             family: debian\nversion: \"12\"\ndisk_image:\n  path: {}\nboot: uefi-http\nseed: nocloud\n",
            state.join("images/debian-12.raw.gz").display()
        ),
    )
    .unwrap();
    let site = dir.join("site.yaml");
    let inv = std::fs::read_to_string(&site)
        .unwrap()
        .replace(
            "    user: kiln\n",
            &format!("    user: kiln\n    key: {}\n", rack.key().display()),
        )
        .replace("{name: t-n02,", "{name: t-n02, image: debian-12-mirror,")
        .replace("{name: t-n04,", "{name: t-n04, image: debian-12-http,")
        .replace(
            "{name: t-n03,",
            "{name: t-n03, root_device: {serial: S-NO-SUCH-DISK},",
        );
    std::fs::write(&site, inv).unwrap();
    let out = kiln(&rack, &["bmc", "trust"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let iso = dir.join("unused.iso");
    let out = deploy(&rack, &iso, 73, "40s", &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = |name: &str| {
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == name)
            .unwrap_or_else(|| panic!("no {name} in {doc}"))
            .clone()
    };
    let n1 = node("t-n01");
    assert!(
        n1["result"]["os"]
            .as_str()
            .unwrap()
            .starts_with("Debian GNU/Linux 12"),
        "{n1}"
    );
    assert_eq!(n1["result"]["booted_via"], "virtual-media", "{n1}");
    let n4 = node("t-n04");
    assert_eq!(n4["result"]["booted_via"], "uefi-http", "{n4}");
    assert!(
        n4["result"]["os"]
            .as_str()
            .unwrap()
            .starts_with("Debian GNU/Linux 12"),
        "{n4}"
    );
    let n2 = node("t-n02").to_string();
    assert!(
        n2.contains("wait-written") && n2.contains("does not match"),
        "{n2}"
    );
    let n3 = node("t-n03").to_string();
    assert!(
        n3.contains("no disk matches the root-device hints") && n3.contains("S-NO-SUCH-DISK"),
        "{n3}"
    );
    let (code, stdout, stderr) = ssh_verified(&rack, 0, "hostnamectl");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Debian GNU/Linux 12"), "{stdout}");

    // A second run leaves the imaged node alone.
    let out = deploy(&rack, &iso, 73, "40s", &["--select", "t-n01"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("t-n01  already imaged"),
        "{}",
        text(&out)
    );
}
