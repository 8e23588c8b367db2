//! The imaging stage through the library (as the pipeline calls it), on a
//! virtual rack whose BMCs take a UEFI `HttpBootUri`: a profile that asks
//! for UEFI HTTP boot gets it (no virtual media involved), and a second
//! run finds the node already imaged and does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::simrack::{Rack, RackSpec};
use kiln::bmc::connect;
use kiln::bmc::ops::Waits;
use kiln::bmc::transport::TransportOptions;
use kiln::bmc::trust::TrustStore;
use kiln::imaging::deploy::{Deadlines, ImageCx, deploy};
use kiln::imaging::server::BootServer;
use kiln::pipeline::step::Steps;
use kiln::profiles::Catalog;
use kiln::profiles::image::BootMethod;
use kiln::ssh::auth::Credentials;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_http_boot_where_the_bmc_takes_a_uri() {
    let rack = Rack::start(RackSpec {
        net: 73,
        nodes: 1,
        flavour: "generic",
        imaged: false,
        time_scale: 600,
        ..RackSpec::default()
    });
    let dir = rack.dir.path();
    let state = dir.join("state");
    // The password from a file: tests cannot set environment variables.
    std::fs::write(dir.join("bmc-password"), "test").unwrap();
    let site = dir.join("site.yaml");
    let text = std::fs::read_to_string(&site)
        .unwrap()
        .replace(
            "password: {env: KILN_TEST_BMC_PASSWORD}",
            &format!("password: {{file: {}}}", dir.join("bmc-password").display()),
        )
        .replace(
            "    user: kiln\n",
            &format!("    user: kiln\n    key: {}\n", rack.key().display()),
        );
    std::fs::write(&site, text).unwrap();
    let trust = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_STATE_DIR", &state)
        .arg("-i")
        .arg(&site)
        .args(["bmc", "trust"])
        .output()
        .unwrap();
    assert!(
        trust.status.success(),
        "{}",
        String::from_utf8_lossy(&trust.stderr)
    );

    let inventory = kiln::inventory::load_file(&site)
        .unwrap()
        .inventory
        .unwrap();
    let node = inventory.node("t-n01").unwrap().clone();
    let store = TrustStore::load(&TrustStore::path_in(&state)).unwrap();
    let bmc = connect::clients(&[&node], &store, &TransportOptions::default())
        .unwrap()
        .remove(0);
    let mut profile = Catalog::builtin().unwrap().images["ubuntu-24.04"]
        .profile
        .clone();
    profile.boot = BootMethod::UefiHttp;
    let installer = dir.join("installer.iso");
    std::fs::write(&installer, kiln::imaging::iso::demo_installer(64 << 10)).unwrap();
    let public = std::fs::read_to_string(rack.key().with_extension("pub")).unwrap();
    let server = Arc::new(
        BootServer::start("127.73.0.3:0".parse().unwrap(), None)
            .await
            .unwrap(),
    );
    let cx = ImageCx {
        node,
        profile,
        bmc,
        server,
        media: kiln::imaging::Media::Installer(installer),
        authorized_keys: vec![public.trim().to_owned()],
        credentials: Arc::new(Credentials::new()),
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
    let mut steps = Steps::unjournaled("t-n01", "image");
    let done = deploy(&cx, &mut steps).await.unwrap();
    assert_eq!(done.booted_via, Some("uefi-http"), "{done:?}");
    assert!(!done.already);
    assert_eq!(done.os, "Ubuntu 24.04 LTS");

    // Back to disk once installed.
    let systems = rack.get(0, "/redfish/v1/Systems");
    let system = systems["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sys = rack.get(0, &system);
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Hdd", "{sys}");

    // Run again: the node already runs the OS with kiln's key.
    let again = deploy(&cx, &mut Steps::unjournaled("t-n01", "image"))
        .await
        .unwrap();
    assert!(again.already, "{again:?}");
}
