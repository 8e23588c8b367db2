//! `kiln image list|show|verify`, `kiln render` and a smoke run of `kiln
//! bench bootserver`, through the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

fn kiln(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KILN_INVENTORY")
        .env_remove("KILN_ISO_DIR")
        .current_dir(common::root())
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_and_show() {
    let o = kiln(&["image", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    for name in ["ubuntu-24.04", "ubuntu-22.04", "rocky-9"] {
        assert!(out(&o).contains(name), "{}", out(&o));
    }
    let o = kiln(&["--json", "image", "show", "rocky-9"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["boot"], "uefi-http");
    assert_eq!(v["seed"], "kickstart");
    assert_eq!(v["installer"]["grub_cfg"], "/EFI/BOOT/grub.cfg");
    let o = kiln(&["image", "show", "ubuntu-24.4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("did you mean `ubuntu-24.04`"),
        "{}",
        err(&o)
    );
}

#[test]
fn verify_checks_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("x.iso");
    std::fs::write(&iso, b"not the installer").unwrap();
    let o = kiln(&[
        "--json",
        "image",
        "verify",
        "ubuntu-24.04",
        "--iso",
        iso.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["sha256"], sha256_hex(b"not the installer"));
    let o = kiln(&["image", "verify", "ubuntu-24.04"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--iso"), "{}", err(&o));
    let o = kiln(&[
        "image",
        "verify",
        "ubuntu-24.04",
        "--iso-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("ubuntu-24.04.3-live-server-amd64.iso"),
        "{}",
        err(&o)
    );
}

fn sha256_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn render_previews_a_nodes_template() {
    let inv = "inventories/example-site.yaml";
    let o = kiln(&["-i", inv, "render", "--node", "r01-n02", "user-data"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert!(text.starts_with("#cloud-config\nautoinstall:"), "{text}");
    assert!(text.contains("hostname: \"r01-n02\""), "{text}");
    assert!(text.contains("macaddress: \"04:3f:72:01:00:02\""), "{text}");
    let o = kiln(&[
        "-i", inv, "render", "--node", "r01-n02", "--image", "rocky-9", "ks.cfg",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("--hostname=r01-n02"), "{}", out(&o));
    let o = kiln(&["-i", inv, "render", "--node", "r01-n02", "grub.cfg"]);
    assert!(
        out(&o).contains("autoinstall ds=nocloud\\;s="),
        "{}",
        out(&o)
    );
    let o = kiln(&["-i", inv, "render", "--node", "r01-n02", "user-dat"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("did you mean `user-data`"), "{}", err(&o));
    let o = kiln(&["-i", inv, "render", "--node", "nope", "user-data"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bench_bootserver_smoke() {
    let o = kiln(&[
        "--json",
        "bench",
        "bootserver",
        "--size",
        "1MiB",
        "--clients",
        "4",
        "--runs",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["kiln"]["gbit_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["clients"], 4);
}

#[test]
fn serve_gives_images_and_registered_nodes_their_urls() {
    use std::io::{BufRead as _, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let isos = dir.path().join("isos");
    std::fs::create_dir_all(&isos).unwrap();
    let image = kiln::imaging::iso::demo_installer(4096);
    std::fs::write(isos.join("demo.iso"), &image).unwrap();
    let key = dir.path().join("id_ed25519");
    assert!(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let site = dir.path().join("site.yaml");
    std::fs::write(
        &site,
        format!(
            "site: s\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {{env: KILN_NOT_NEEDED}}\n  ssh:\n    user: ops\n    key: {}\nracks:\n  - name: r01\n    nodes:\n      - {{name: n1, bmc: 10.0.0.1, ssh: 10.0.1.1}}\n",
            key.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("NO_COLOR", "1")
        .env("KILN_STATE_DIR", dir.path().join("state"))
        .env_remove("RUST_LOG")
        .arg("-i")
        .arg(&site)
        .args(["--json", "serve", "--bind", "127.72.0.20:0", "--dir"])
        .arg(&isos)
        .args(["--select", "n1", "--iso"])
        .arg(isos.join("demo.iso"))
        .args(["--duration", "20s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let doc: serde_json::Value = loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "serve ended: {text}"
        );
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str(&text) {
            break v;
        }
    };
    let url = |kind: &str| {
        doc["urls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["kind"] == kind)
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let get = |u: &str| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", u])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(get(&url("image")), image);
    let user_data = String::from_utf8(get(&format!("{}user-data", url("seed")))).unwrap();
    assert!(user_data.contains("hostname: \"n1\""), "{user_data}");
    let patched = get(&url("installer"));
    assert_eq!(patched.len(), image.len());
    assert!(patched != image, "grub.cfg is rewritten");
    // The host key kiln put in the seed is the one it recorded.
    let store = std::fs::read_to_string(dir.path().join("state/ssh_known_hosts")).unwrap();
    let recorded = store.split_whitespace().nth(2).unwrap();
    assert!(user_data.contains(recorded), "{store}");
    let _ = child.kill();
    let _ = child.wait();
}
