//! A run interrupted right after power-on and resumed by a new kiln
//! process (a new boot server on the same address): the journal skips the
//! steps that finished, the node's installer, already running, still finds
//! its seed and call-back (the token is stable), and nothing is powered
//! off or on twice. In-process virtual rack on 127.72.1.6.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::bmc::client::BmcClient;
use kiln::bmc::ops::Waits;
use kiln::bmc::transport::{Transport, TransportOptions};
use kiln::imaging::deploy::{Deadlines, ImageCx, deploy};
use kiln::imaging::server::BootServer;
use kiln::pipeline::record::{StepRecord, UnixMs};
use kiln::pipeline::step::{Committed, StepSink, Steps, Stop};
use kiln::profiles::Catalog;
use kiln::secret::Secret;
use kiln::sim::SimOptions;
use kiln::ssh::auth::Credentials;

/// A journal in memory that stops the run once `power-on` has ended.
#[derive(Default)]
struct Journal {
    ended: Mutex<HashMap<String, StepRecord>>,
    started: Mutex<Vec<String>>,
    stopping: Arc<AtomicBool>,
}

impl StepSink for Journal {
    fn finished_before(&self, _: &str, _: &str, step: &str) -> Option<StepRecord> {
        self.ended.lock().unwrap().get(step).cloned()
    }
    fn started(&self, _: &str, _: &str, step: &str, _: UnixMs) {
        self.started.lock().unwrap().push(step.to_owned());
    }
    fn ended(&self, _: &str, record: &StepRecord) -> Committed {
        self.ended
            .lock()
            .unwrap()
            .insert(record.step.clone(), record.clone());
        if record.step == "power-on" {
            self.stopping.store(true, Ordering::SeqCst);
        }
        Committed::now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_picks_up_the_install_under_way() {
    resume("ubuntu-24.04", 6, "wait-installed", "Ubuntu 24.04 LTS").await;
}

/// The same for a disk image: the deploy environment kiln booted before
/// it stopped is found again (or started again) by the resumed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_picks_up_the_disk_write_under_way() {
    resume("debian-12", 7, "wait-written", "Debian GNU/Linux 12").await;
}

/// Runs the image stage for one node of `image` on 127.72.x.`octet`, stops
/// it once `power-on` has ended (at `interrupted`), resumes it with a new
/// boot server and checks nothing was powered twice.
async fn resume(image: &str, octet: u8, interrupted: &str, os: &str) {
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
    std::fs::write(
        dir.path().join("site.yaml"),
        format!(
            "site: resume\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: {image}\n  bmc:\n    username: admin\n    password: {{file: {}}}\n  ssh:\n    user: kiln\n    key: {}\nracks:\n  - name: r01\n    nodes:\n      - {{name: r-n01, bmc: \"127.72.1.{octet}:8443\", ssh: \"127.72.2.{octet}:2222\"}}\n",
            dir.path().join("bmc-password").display(),
            key.display()
        ),
    )
    .unwrap();
    let inventory = kiln::inventory::load_file(&dir.path().join("site.yaml"))
        .unwrap()
        .inventory
        .unwrap();
    let nodes: Vec<_> = inventory.nodes.iter().collect();
    // Slow enough that the installer is still in POST when kiln restarts.
    let rack = kiln::sim::start(
        &inventory,
        &nodes,
        SimOptions {
            time_scale: 120.0,
            ssh: true,
            tool_exe: Some(env!("CARGO_BIN_EXE_kiln").into()),
            root: Some(dir.path().join("sim")),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let e = &rack.endpoints[0];
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
            kiln::bmc::tls::pinned(e.bmc_fingerprint.replace(':', "").parse().unwrap()).unwrap(),
            TransportOptions::default(),
        ),
        &e.username,
        Secret::new(e.password.clone()),
    ));
    let installer = dir.path().join("installer.iso");
    std::fs::write(&installer, kiln::imaging::iso::demo_installer(64 << 10)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("deploy-env")).unwrap();
    std::fs::write(
        state.join("deploy-env/deploy.iso"),
        kiln::imaging::iso::demo_deploy_env(64 << 10),
    )
    .unwrap();
    std::fs::create_dir_all(state.join("images")).unwrap();
    std::fs::write(state.join("images/debian-12.raw.gz"), vec![7u8; 1 << 16]).unwrap();
    let digest =
        kiln::imaging::verify::sha256_file(&state.join("images/debian-12.raw.gz"), |_| {}).unwrap();
    std::fs::write(state.join("images/debian-12.raw.gz.sha256"), digest).unwrap();
    let profile = Catalog::builtin().unwrap().images[image].profile.clone();
    let media = kiln::imaging::locate(
        &profile,
        kiln::imaging::Places {
            iso: Some(&installer),
            image_dir: None,
            deploy_env: None,
            state: &state,
        },
    )
    .unwrap();
    let creds = Arc::new(Credentials::new());
    let node = inventory.nodes[0].clone();
    let keys = kiln::imaging::authorized_keys(&creds, &node).unwrap();
    let cx_with = |server: Arc<BootServer>| ImageCx {
        node: node.clone(),
        profile: profile.clone(),
        bmc: Arc::clone(&bmc),
        server,
        media: media.clone(),
        authorized_keys: keys.clone(),
        credentials: Arc::clone(&creds),
        state_dir: state.clone(),
        known_hosts: state.join("ssh_known_hosts"),
        deadlines: Deadlines {
            graceful: Duration::from_secs(3),
            install: Duration::from_secs(60),
            agent: Duration::from_secs(20),
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
    let journal = Arc::new(Journal::default());
    let stopping = Arc::clone(&journal.stopping);

    let first = Arc::new(
        BootServer::start(
            format!("127.72.0.{octet}:0").parse::<SocketAddr>().unwrap(),
            None,
        )
        .await
        .unwrap(),
    );
    let addr: SocketAddr = first.addr();
    let cx = cx_with(Arc::clone(&first));
    let mut steps = Steps::new("r-n01", "image", journal.clone(), Arc::clone(&stopping));
    match deploy(&cx, &mut steps).await {
        Err(Stop::Interrupted(step)) => assert_eq!(step, interrupted),
        other => panic!("expected an interruption, got {other:?}"),
    }
    // kiln "restarts": its boot server goes, a new one comes up.
    drop(cx);
    drop(first);
    // The old listener closes as its task is cancelled: a moment.
    let mut second = None;
    for _ in 0..100 {
        match BootServer::start(addr, None).await {
            Ok(s) => {
                second = Some(Arc::new(s));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let second = second.expect("the address is free again");
    stopping.store(false, Ordering::SeqCst);
    let cx = cx_with(second);
    let mut steps = Steps::new("r-n01", "image", journal.clone(), Arc::clone(&stopping));
    let done = deploy(&cx, &mut steps).await.unwrap();
    assert!(done.os.starts_with(os), "{done:?}");
    let started = journal.started.lock().unwrap().clone();
    for step in ["power-off", "insert-installer", "boot-once", "power-on"] {
        assert_eq!(
            started.iter().filter(|s| *s == step).count(),
            1,
            "{step} ran once: {started:?}"
        );
    }
    assert!(started.contains(&"verify-os".to_owned()), "{started:?}");
    rack.stop();
}
