//! kiln's SSH client against the virtual rack's SSH hosts (an independent
//! russh server running a real shell per node): fan-out with grouping,
//! sudo, a connection dropped mid-command and the reconnect after it, and
//! waiting for SSH after a reboot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::simrack::{Rack, RackSpec};
use common::{kiln, run};
use kiln::ssh::auth::Credentials;
use kiln::ssh::exec::Discard;
use kiln::ssh::hostkeys::Verifier;
use kiln::ssh::{
    Client, ClientOptions, ExecError, ExecOptions, Input, Pool, RemoteCommand, Target,
};
use serde_json::Value;

/// An inventory for the rack's nodes with the test key and the host keys
/// the rack announced.
fn inventory(rack: &Rack) -> PathBuf {
    let site = std::fs::read_to_string(rack.dir.path().join("site.yaml")).unwrap();
    let ssh = format!(
        "ssh:\n    user: kiln\n    key: {}\n    known_hosts: {}",
        rack.key().display(),
        rack.dir.path().join("known_hosts").display()
    );
    let path = rack.dir.path().join("kiln.yaml");
    std::fs::write(&path, site.replace("ssh:\n    user: kiln", &ssh)).unwrap();
    path
}

fn target(rack: &Rack, i: usize) -> Target {
    let addr = rack.nodes[i]["ssh"].as_str().unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    Target {
        node: rack.nodes[i]["name"].as_str().unwrap().to_owned(),
        host: host.to_owned(),
        port: port.parse().unwrap(),
        user: "kiln".into(),
        key: Some(rack.key()),
        known_hosts: Some(rack.dir.path().join("known_hosts")),
        jump: None,
    }
}

fn pool() -> Pool {
    let verifier = Verifier::new(Vec::new(), None, false);
    Pool::new(Client::new(
        Arc::new(verifier),
        Arc::new(Credentials::new()),
        ClientOptions::default(),
    ))
}

#[test]
fn exec_fans_out_groups_and_sudo_works() {
    let rack = Rack::start(RackSpec {
        net: 61,
        nodes: 4,
        ..RackSpec::default()
    });
    let inv = inventory(&rack);
    // The rack prints its endpoints before every listener is up.
    let (code, _, err) = run(kiln()
        .arg("-i")
        .arg(&inv)
        .args(["ssh", "wait", "--within", "20s"]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(kiln().arg("-i").arg(&inv).args([
        "exec",
        "--fanout",
        "2",
        "--",
        "uname -s; echo $HOSTNAME >&2",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("t-n03: Linux\n"), "{out}");
    assert!(err.contains("t-n04: t-n04\n"), "{err}");
    assert!(out.contains("t-n[01-04] (4)\n"), "{out}");

    let (code, out, err) = run(kiln()
        .arg("-i")
        .arg(&inv)
        .args(["exec", "--json", "--sudo", "-s", "t-n01", "--", "id -un"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(doc["nodes"][0]["exit_status"], 0, "{doc}");
}

#[test]
fn a_dropped_connection_is_reported_then_replaced() {
    let rack = Rack::start(RackSpec {
        net: 62,
        nodes: 1,
        time_scale: 1,
        faults: Some("faults:\n  - nodes: \"t-n01\"\n    ssh_drop_after: 1s\n"),
        ..RackSpec::default()
    });
    let t = target(&rack, 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = pool();
        // The rack prints its endpoints before every listener is up.
        pool.wait_for_ssh(&t, Duration::from_secs(20))
            .await
            .unwrap();
        let opts = ExecOptions::default();
        let start = Instant::now();
        let long = RemoteCommand::shell("echo before; sleep 30");
        let err = pool
            .run(&t, &long, Input::None, &mut Discard, &opts)
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Dropped { .. }), "{err}");
        assert!(
            err.to_string().contains(
                "t-n01 (127.62.2.1:2222): connection lost while running `echo before; sleep 30`"
            ),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        // The next command gets a new connection.
        let out = pool
            .run(
                &t,
                &RemoteCommand::shell("echo back"),
                Input::None,
                &mut Discard,
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(out.stdout.text(), "back\n");
    });
    // The CLI reports it as that node's failure.
    let inv = inventory(&rack);
    let (code, _, err) = run(kiln().arg("-i").arg(&inv).args(["exec", "--", "sleep 30"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("connection lost while running `sleep 30`"),
        "{err}"
    );
}

#[test]
fn wait_for_ssh_rides_out_a_reboot() {
    let rack = Rack::start(RackSpec {
        net: 63,
        nodes: 2,
        ..RackSpec::default()
    });
    let inv = inventory(&rack);
    let target = format!("{}/Actions/ComputerSystem.Reset", rack.system(0));
    let (code, body) = rack.curl(0, "POST", &target, Some(r#"{"ResetType":"ForceRestart"}"#));
    assert!(code < 300, "{code} {body}");
    let (code, out, err) = run(kiln()
        .arg("-i")
        .arg(&inv)
        .args(["ssh", "wait", "--within", "60s", "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["ok"], true);
    let (code, out, err) = run(kiln().arg("-i").arg(&inv).args([
        "exec",
        "-s",
        "t-n01",
        "--",
        "uptime >/dev/null && echo up",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("t-n01: up"), "{out}");
}

#[test]
fn the_local_transport_runs_here() {
    let (code, out, err) = run(kiln().args(["exec", "--local", "--", "echo here; exit 4"]));
    assert_eq!(code, 1, "{out}\n{err}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(out.contains(&format!("{}: here\n", host.trim())), "{out}");
    assert!(err.contains("(exit status 4)"), "{err}");
}

#[test]
fn an_unreachable_node_fails_alone_with_its_address() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on 127.69.0.1; 127.69.0.2 is not routed anywhere
    // either: both fail fast, each named with its address.
    let inv = common::sshd::inventory(
        dir.path(),
        &[("r01-n01", "127.69.0.1"), ("r01-n02", "127.69.0.2")],
        2222,
        "",
    );
    let (code, out, err) =
        run(kiln()
            .arg("-i")
            .arg(&inv)
            .args(["exec", "--connect-timeout", "3s", "--", "true"]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("failed on 2 of 2 node(s): r01-n[01-02]"),
        "{err}"
    );
    assert!(
        err.contains("r01-n01 (127.69.0.1:2222): cannot connect"),
        "{err}"
    );
}

/// Collects stdout.
struct Collect(Arc<std::sync::Mutex<String>>);

impl kiln::ssh::Sink for Collect {
    fn output(&mut self, stream: kiln::ssh::Stream, data: &[u8]) {
        if stream == kiln::ssh::Stream::Stdout {
            self.0
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(data));
        }
    }
}

#[test]
fn an_interrupt_stops_the_command_on_the_node() {
    let rack = Rack::start(RackSpec {
        net: 64,
        nodes: 1,
        ..RackSpec::default()
    });
    let t = target(&rack, 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = pool();
        pool.wait_for_ssh(&t, Duration::from_secs(20))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let opts = ExecOptions {
            cancel: Some(rx),
            ..ExecOptions::default()
        };
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let watch = Arc::clone(&seen);
        tokio::spawn(async move {
            // Interrupt once the command has printed its child's pid.
            while !watch.lock().unwrap().ends_with('\n') {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = tx.send(true);
        });
        let cmd = RemoteCommand::shell("sleep 300 & echo $!; wait");
        let start = Instant::now();
        let out = pool
            .run(
                &t,
                &cmd,
                Input::None,
                &mut Collect(Arc::clone(&seen)),
                &opts,
            )
            .await
            .unwrap();
        assert!(out.interrupted, "{out:?}");
        // The TERM ended it: no need for the KILL 2 s later.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let pid = seen.lock().unwrap().trim().to_owned();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        assert!(
            !stat.is_ok_and(|s| !s.contains(") Z ")),
            "the node's command survived"
        );
    });
}
