//! kiln images real machines: UEFI virtual machines (QEMU with OVMF, blank
//! virtio disks) behind BMCs kiln did not write (sushy-tools' libvirt
//! driver over HTTPS), started by `scripts/vmrack/up.sh` (`kiln::vmlab`).
//!
//! `kiln provision --stages preflight,image` takes every machine from
//! powered off to a verified SSH login into the Debian 12 that kiln's
//! deploy environment wrote: the BMC mounts the deploy environment, the
//! firmware boots it, its agent streams the image (checking its digest),
//! grows the root partition and writes the NoCloud seed, kiln boots the
//! disk, cloud-init applies the seed (the host key kiln made, so the first
//! login is verified) and calls back. `kiln exec` then reads the real
//! answers from each guest, and a second run finds the work done.
//!
//! Faults, each ending only its node with a clear reason: a root-device
//! hint that matches no disk, an image whose digest does not match (fetched
//! from a mirror, not kiln), a machine with no network (its deploy
//! environment never calls back), a BMC that refuses the virtual media.
//!
//! Boots for real, so it takes minutes (software emulation here: KVM cannot
//! run ordinary guests on these machines). Skipped, with the reason, where
//! QEMU, OVMF or libvirt are not installed, unless `KILN_REQUIRE_VM` is
//! set, as CI does. The images are built once into `target/vm-cache/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::vmlab::{VmRack, VmSpec};
use serde_json::Value;

const NET: u8 = 201;
const BOOT_PORT: u16 = 18201;
const MIRROR_PORT: u16 = 18202;

fn kiln(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_VM_BMC_PASSWORD", "vmrack-pass")
        .env("KILN_STATE_DIR", dir.join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KILN_ISO_DIR")
        .env_remove("KILN_DEPLOY_ENV")
        .arg("-i")
        .arg(dir.join("site.yaml"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Serves `dir` on 127.0.0.1:MIRROR_PORT (a mirror the guests reach as
/// 10.0.2.2), stopped on drop.
struct Mirror(std::process::Child);

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mirror(dir: &Path) -> Mirror {
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(MIRROR_PORT.to_string())
        .arg("--directory")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", MIRROR_PORT)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mirror did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Mirror(child)
}

/// The tail of each VM's serial console, for a failure message.
fn consoles(rack: &VmRack) -> String {
    let mut out = String::new();
    for n in &rack.info.nodes {
        let log = std::fs::read_to_string(&n.serial_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        out.push_str(&format!("--- {} serial console (last lines)\n", n.name));
        for l in tail.iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn node<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the record"))
}

fn step<'a>(record: &'a Value, name: &str, step: &str) -> Option<&'a Value> {
    node(record, name)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "image" && s["step"] == step)
}

/// kiln reads the BIOS of `name` through sushy-tools' libvirt driver
/// (attributes kept in the domain's XML metadata), writes one attribute to
/// the settings object, and the firmware stage's own check judges the value
/// read back. The emulator applies a PATCH at once (no reset needed).
fn bios_round_trip(rack: &VmRack, name: &str) {
    use kiln::profiles::firmware::{
        AttributeValue, BiosAttribute, BiosBaseline, BiosSetting, BootMode,
    };
    use kiln::stages::firmware::bios;

    let n = rack.info.nodes.iter().find(|n| n.name == name).unwrap();
    let (host, port) = n
        .bmc_url
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap();
    let tls = kiln::bmc::tls::pinned(n.fingerprint.parse().unwrap()).unwrap();
    let options = kiln::bmc::transport::TransportOptions {
        request_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let transport = kiln::bmc::transport::Transport::new(host, port.parse().unwrap(), tls, options);
    let client = kiln::bmc::client::BmcClient::new(
        name,
        transport,
        &n.username,
        kiln::secret::Secret::new(n.password.clone()),
    );
    let baseline = BiosBaseline {
        boot_mode: Some(BootMode::Uefi),
        secure_boot: None,
        attributes: vec![BiosSetting {
            setting: "turbo".into(),
            default: BiosAttribute {
                attribute: "ProcTurboMode".into(),
                value: AttributeValue::Text("Disabled".into()),
            },
            vendors: Default::default(),
        }],
    };
    let read = || async {
        let system = client.get(&n.system).await.unwrap();
        kiln::bmc::update::bios(&client, &system)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: the system links no BIOS: {system}"))
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let before = read().await;
        assert!(before.settings.is_some(), "{before:?}");
        assert_eq!(before.attributes["BootMode"], "Uefi", "{before:?}");
        let checks = bios::check(&baseline, Some(&before), None, "sushy");
        assert_eq!(checks[0].value, Some(Value::from("Enabled")), "{checks:?}");
        assert!(!checks[0].meets && checks[1].meets, "{checks:?}");

        kiln::bmc::update::write_bios(&client, &before, bios::changes(&checks))
            .await
            .unwrap();
        let after = read().await;
        assert_eq!(after.attributes["ProcTurboMode"], "Disabled", "{after:?}");
        let checks = bios::check(&baseline, Some(&after), None, "sushy");
        assert!(checks.iter().all(|c| c.meets), "{checks:?}");
    });
}

#[test]
fn vm_rack_images_real_uefi_machines_end_to_end() {
    let missing = kiln::vmlab::missing();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("KILN_REQUIRE_VM").is_none(),
            "KILN_REQUIRE_VM is set but this machine lacks: {}",
            missing.join(", ")
        );
        eprintln!(
            "vm_rack: skipped, this machine lacks {} (scripts/vmrack/deps.sh installs them)",
            missing.join(", ")
        );
        return;
    }
    let started = Instant::now();
    let cache = common::root().join("target/vm-cache");
    let (deploy_env, images) = kiln::vmlab::build_images(&cache).unwrap();
    eprintln!("vm_rack: images ready after {:?}", started.elapsed());

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("id_ed25519");
    kiln::vmlab::login_key(&key).unwrap();

    // Two image profiles of the site's own, for the faults: a hint that
    // matches no disk, and the image from a mirror with a wrong digest.
    let profiles = dir.join("profiles/images");
    std::fs::create_dir_all(&profiles).unwrap();
    let image = images.join("debian-12.raw.gz");
    std::fs::write(
        profiles.join("debian-12-nodisk.yaml"),
        format!(
            "name: debian-12-nodisk\ndescription: Debian 12 on a disk this machine does not have\n\
             family: debian\nversion: \"12\"\ndisk_image:\n  path: {}\n\
             root_device: {{serial: no-such-disk, size: \">= 4\"}}\nseed: nocloud\n",
            image.display()
        ),
    )
    .unwrap();
    std::fs::write(
        profiles.join("debian-12-mirror.yaml"),
        format!(
            "name: debian-12-mirror\ndescription: Debian 12 from a mirror, with the wrong digest\n\
             family: debian\nversion: \"12\"\ndisk_image:\n  url: http://10.0.2.2:{MIRROR_PORT}/debian-12-mirror.raw.gz\n\
             \x20 sha256: {}\nseed: nocloud\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    // vm-n2's image as qcow2 (what many image pipelines publish): kiln
    // converts it back to raw once and the VM must still boot it.
    let raw = dir.join("debian-12.raw");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(r#"gzip -dc "$1" > "$2" && qemu-img convert -q -f raw -O qcow2 "$2" "$3" && rm "$2""#)
        .args(["sh", image.to_str().unwrap(), raw.to_str().unwrap()])
        .arg(dir.join("debian-12.qcow2"))
        .status()
        .unwrap();
    assert!(ok.success(), "could not make the qcow2 image");
    let qcow_digest =
        kiln::imaging::verify::sha256_file(&dir.join("debian-12.qcow2"), |_| {}).unwrap();
    std::fs::write(
        profiles.join("debian-12-qcow2.yaml"),
        format!(
            "name: debian-12-qcow2\ndescription: Debian 12 as qcow2\n\
             family: debian\nversion: \"12\"\ndisk_image:\n  path: {}\n  format: qcow2\n\
             \x20 sha256: {qcow_digest}\nseed: nocloud\n",
            dir.join("debian-12.qcow2").display()
        ),
    )
    .unwrap();
    // The mirror's copy has its own name: a local file of the URL's name
    // would be served by kiln instead (and its digest checked before).
    let mirrored = dir.join("mirror");
    std::fs::create_dir_all(&mirrored).unwrap();
    std::os::unix::fs::symlink(&image, mirrored.join("debian-12-mirror.raw.gz")).unwrap();
    let _mirror = mirror(&mirrored);

    let mut vms: Vec<VmSpec> = (0..6)
        .map(|i| VmSpec::new(&format!("vm-n{}", i + 1), NET, i))
        .collect();
    vms[4] = vms[4].clone().without_nic(); // never reaches the boot server
    vms[5].media = "refuse".into(); // its BMC refuses virtual media
    for vm in &mut vms[2..] {
        // The fault nodes never run an OS: less memory, fewer vCPUs.
        vm.memory_mib = 768;
        vm.vcpus = 1;
    }
    let rack = VmRack::up(&dir.join("rack"), "kiln-t201", &vms).unwrap();
    eprintln!(
        "vm_rack: {} VMs up ({}) after {:?}",
        rack.info.nodes.len(),
        rack.info.accel,
        started.elapsed()
    );
    std::fs::write(
        dir.join("site.yaml"),
        rack.inventory(
            &key,
            &[
                ("vm-n2", "debian-12-qcow2"),
                ("vm-n3", "debian-12-nodisk"),
                ("vm-n4", "debian-12-mirror"),
            ],
        ),
    )
    .unwrap();

    let bind = format!("127.0.0.1:{BOOT_PORT}");
    let advertise = format!("http://10.0.2.2:{BOOT_PORT}");
    let provision = |select: &str| {
        kiln(
            dir,
            &[
                "provision",
                "--select",
                select,
                "--stages",
                "preflight,image",
                "--bind",
                &bind,
                "--advertise",
                &advertise,
                "--advertise-bmc",
                &format!("http://{bind}"),
                "--deploy-env",
                deploy_env.to_str().unwrap(),
                "--image-dir",
                images.to_str().unwrap(),
                "--boot-timeout",
                "6m",
                "--install-timeout",
                "15m",
            ],
        )
    };
    let out = provision("vm-n*");
    let record: Value = serde_json::from_slice(&kiln(dir, &["--json", "runs", "show"]).stdout)
        .unwrap_or_else(|e| panic!("no run record ({e}):\n{}", text(&out)));
    let why = || format!("{}\n{}\n{}", text(&out), record, consoles(&rack));
    eprintln!("vm_rack: first run ended after {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{}", why());

    for good in ["vm-n1", "vm-n2"] {
        assert_eq!(node(&record, good)["verdict"], "accepted", "{}", why());
        let written = step(&record, good, "wait-written").expect("wait-written");
        assert_eq!(written["metrics"]["device"], "/dev/vda", "{}", why());
        let os = step(&record, good, "verify-os").expect("verify-os");
        assert!(
            os["detail"]
                .as_str()
                .unwrap()
                .contains("Debian GNU/Linux 12"),
            "{}",
            why()
        );
    }
    // vm-n2 was written from the qcow2's conversion, not the raw.gz.
    let digest = |n: &str| step(&record, n, "wait-written").unwrap()["metrics"]["sha256"].clone();
    assert_ne!(digest("vm-n1"), digest("vm-n2"), "{}", why());
    let reason = |n: &str| node(&record, n)["reasons"].to_string();
    assert_eq!(node(&record, "vm-n3")["verdict"], "failed", "{}", why());
    assert!(
        reason("vm-n3").contains("no disk matches the root-device hints")
            && reason("vm-n3").contains("serial=kiln-vm-n3"),
        "{}",
        why()
    );
    assert!(
        reason("vm-n4").contains("digest") && reason("vm-n4").contains("does not match"),
        "{}",
        why()
    );
    assert!(
        reason("vm-n5").contains("never called the boot server"),
        "{}",
        why()
    );
    assert_eq!(node(&record, "vm-n6")["failed_stage"], "image", "{}", why());
    assert!(
        step(&record, "vm-n6", "insert-installer").is_some_and(|s| s["status"] == "failed"),
        "{}",
        why()
    );

    bios_round_trip(&rack, "vm-n3");
    eprintln!(
        "vm_rack: vm-n3's BIOS written and read back after {:?}",
        started.elapsed()
    );

    // The real answers, over SSH verified against the key kiln injected.
    let out = kiln(
        dir,
        &[
            "--json",
            "exec",
            "--select",
            "vm-n[1-2]",
            "--",
            "cloud-init status --long; uname -r; findmnt -n -o SOURCE,FSTYPE /; findmnt -n -b -o SIZE /",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    for n in doc["nodes"].as_array().unwrap() {
        let stdout = n["stdout"].as_str().unwrap();
        assert!(stdout.contains("status: done"), "{stdout}");
        assert!(stdout.contains("-cloud-amd64"), "{stdout}");
        assert!(stdout.contains("/dev/vda2 ext4"), "{stdout}");
        // The 5 GiB disk, not the image's smaller root: the partition was
        // grown and cloud-init grew the filesystem.
        let size: u64 = stdout.lines().last().unwrap().trim().parse().unwrap();
        assert!(
            size > 4_000_000_000,
            "root filesystem of {size} bytes: {stdout}"
        );
    }

    // A second run: the imaged machines are only checked.
    let out = provision("vm-n[1-2]");
    let record: Value =
        serde_json::from_slice(&kiln(dir, &["--json", "runs", "show"]).stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{record}", text(&out));
    for good in ["vm-n1", "vm-n2"] {
        let check = step(&record, good, "check-installed").unwrap();
        assert_eq!(check["status"], "skipped", "{record}");
        assert!(step(&record, good, "power-off").is_none(), "{record}");
    }
    eprintln!("vm_rack: done after {:?}", started.elapsed());
}
