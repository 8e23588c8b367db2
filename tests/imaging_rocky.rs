//! Rocky Linux 9 through the library, on an in-process virtual rack whose
//! BMC takes an `HttpBootUri`: UEFI HTTP boot of the installer with its
//! grub.cfg (`/EFI/BOOT/grub.cfg`, `linuxefi`, `inst.stage2=…` kept)
//! pointing Anaconda at the node's kickstart; the installed system's
//! cloud-init reads the NoCloud seed from `bootloader --append` on its
//! first boot and calls back; the login is verified with kiln's host key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kiln::bmc::client::BmcClient;
use kiln::bmc::ops::Waits;
use kiln::bmc::transport::{Transport, TransportOptions};
use kiln::imaging::deploy::{Deadlines, ImageCx, deploy};
use kiln::imaging::server::BootServer;
use kiln::pipeline::step::Steps;
use kiln::profiles::Catalog;
use kiln::secret::Secret;
use kiln::sim::SimOptions;
use kiln::ssh::auth::Credentials;

const ROCKY_GRUB: &str = "set default=\"0\"\nset timeout=60\nmenuentry 'Install Rocky Linux 9.6' --class fedora --class gnu-linux --class gnu --class os {\n\tlinuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=Rocky-9-6-x86_64-dvd quiet\n\tinitrdefi /images/pxeboot/initrd.img\n}\nmenuentry 'Test this media & install Rocky Linux 9.6' --class fedora --class gnu-linux --class gnu --class os {\n\tlinuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=Rocky-9-6-x86_64-dvd rd.live.check quiet\n\tinitrdefi /images/pxeboot/initrd.img\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocky_installs_by_kickstart_over_uefi_http_boot() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    assert!(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(dir.path().join("bmc-password"), "test").unwrap();
    let text = format!(
        "site: rocky\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: rocky-9\n  bmc:\n    username: admin\n    password: {{file: {}}}\n  ssh:\n    user: kiln\n    key: {}\nracks:\n  - name: r01\n    nodes:\n      - {{name: k-n01, bmc: \"127.72.1.5:8443\", ssh: \"127.72.2.5:2222\"}}\n",
        dir.path().join("bmc-password").display(),
        key.display()
    );
    std::fs::write(dir.path().join("site.yaml"), &text).unwrap();
    let inventory = kiln::inventory::load_file(&dir.path().join("site.yaml"))
        .unwrap()
        .inventory
        .unwrap();
    let nodes: Vec<_> = inventory.nodes.iter().collect();
    let rack = kiln::sim::start(
        &inventory,
        &nodes,
        SimOptions {
            time_scale: 600.0,
            ssh: true,
            tool_exe: Some(env!("CARGO_BIN_EXE_kiln").into()),
            root: Some(dir.path().join("sim")),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let e = &rack.endpoints[0];
    let pin = e.bmc_fingerprint.replace(':', "").parse().unwrap();
    let (host, port) = e
        .bmc_url
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap();
    let bmc = Arc::new(BmcClient::new(
        &e.name,
        Transport::new(
            host,
            port.parse().unwrap(),
            kiln::bmc::tls::pinned(pin).unwrap(),
            TransportOptions::default(),
        ),
        &e.username,
        Secret::new(e.password.clone()),
    ));

    let profile = Catalog::builtin().unwrap().images["rocky-9"]
        .profile
        .clone();
    let installer = dir.path().join("rocky.iso");
    let kernel = vec![0x55u8; 64 << 10];
    std::fs::write(
        &installer,
        kiln::imaging::iso::write(&[
            ("/EFI/BOOT/grub.cfg", ROCKY_GRUB.as_bytes()),
            ("/images/pxeboot/vmlinuz", &kernel),
            ("/images/pxeboot/initrd.img", &kernel),
        ]),
    )
    .unwrap();
    let state = dir.path().join("state");
    let server = Arc::new(
        BootServer::start("127.72.0.5:0".parse().unwrap(), None)
            .await
            .unwrap(),
    );
    let creds = Arc::new(Credentials::new());
    let node = inventory.nodes[0].clone();
    let cx = ImageCx {
        authorized_keys: kiln::imaging::authorized_keys(&creds, &node).unwrap(),
        node,
        profile,
        bmc,
        server,
        media: kiln::imaging::Media::Installer(installer),
        credentials: creds,
        state_dir: state.clone(),
        known_hosts: state.join("ssh_known_hosts"),
        deadlines: Deadlines {
            graceful: Duration::from_secs(3),
            install: Duration::from_secs(40),
            ssh: Duration::from_secs(20),
            connect: Duration::from_secs(5),
            ..Deadlines::default()
        },
        waits: Waits {
            poll: Duration::from_millis(100),
            ..Waits::default()
        },
        reimage: false,
        gates: None,
        layout: None,
    };
    let done = deploy(&cx, &mut Steps::unjournaled("k-n01", "image"))
        .await
        .unwrap();
    assert_eq!(done.booted_via, Some("uefi-http"), "{done:?}");
    assert_eq!(done.os, "Rocky Linux 9");
    assert!(done.kernel.ends_with(".el9_5.x86_64"), "{done:?}");
    rack.stop();
}
