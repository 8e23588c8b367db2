//! The image stage inside `kiln provision`, on blank nodes of the virtual
//! rack (a `kiln sim up` child process): the run is killed with SIGKILL in
//! the middle of imaging and resumed. Steps that had ended are not run
//! again (a power step that ended is never sent twice), the installers
//! started by the killed run still find their seed and call-back on the
//! restarted boot server, every healthy node ends SSH-verified, and the
//! node with a broken seed fails with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::simrack::{Rack, RackSpec};
use serde_json::Value;

const NET: u8 = 77;

fn kiln_cmd(rack: &Rack, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_STATE_DIR", rack.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KILN_ISO_DIR")
        .arg("-i")
        .arg(rack.dir.path().join("site.yaml"))
        .args(args);
    cmd
}

fn kiln(rack: &Rack, args: &[&str]) -> Output {
    kiln_cmd(rack, args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn newest(rack: &Rack) -> Option<Value> {
    let out = kiln(rack, &["--json", "runs", "show"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// (node, stage/step, start time) of every step that ended.
fn ended(record: &Value) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for n in record["nodes"].as_array().unwrap() {
        for s in n["steps"].as_array().unwrap() {
            if s["status"] != "running" {
                out.push((
                    n["name"].as_str().unwrap().to_owned(),
                    format!(
                        "{}/{}",
                        s["stage"].as_str().unwrap(),
                        s["step"].as_str().unwrap()
                    ),
                    s["started_ms"].as_u64().unwrap(),
                ));
            }
        }
    }
    out
}

/// The node's image step called `name`.
fn step<'a>(record: &'a Value, node: &str, name: &str) -> Option<&'a Value> {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)?["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "image" && s["step"] == name)
}

#[test]
fn imaging_killed_mid_way_resumes_without_repeating_power_actions() {
    let faults = "faults:\n  - nodes: \"t-n*\"\n    bmc_latency: 100ms\n  - nodes: t-n03\n    broken_seed: true\n";
    let rack = Rack::start(RackSpec {
        net: NET,
        nodes: 4,
        imaged: false,
        faults: Some(faults),
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
    assert!(out.status.success(), "{}", stderr(&out));
    let iso: PathBuf = rack.dir.path().join("installer.iso");
    std::fs::write(&iso, kiln::imaging::iso::demo_installer(128 << 10)).unwrap();

    // A fixed boot-server port, as on a real site: installers started by
    // the killed run reach the restarted server at the same URLs.
    let bind = format!("127.{NET}.0.1:18077");
    let args = [
        "provision",
        "--stages",
        "preflight,image",
        "--iso",
        iso.to_str().unwrap(),
        "--bind",
        &bind,
        "--install-timeout",
        "8s",
        "-c",
        "2",
    ];
    let mut child = kiln_cmd(&rack, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some node has been powered on to install, before the end.
    let start = Instant::now();
    let before = loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no node reached power-on"
        );
        std::thread::sleep(Duration::from_millis(100));
        if let Some(r) = newest(&rack)
            && ended(&r).iter().any(|(_, s, _)| s == "image/power-on")
        {
            break r;
        }
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = newest(&rack).unwrap_or(before);
    assert_eq!(before["run"]["state"], "running", "{before}");
    let done_before = ended(&before);

    let mut resume = vec!["provision", "--resume"];
    resume.extend_from_slice(&args[3..]);
    let out = kiln(&rack, &resume);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let after = newest(&rack).unwrap();
    assert_eq!(after["run"]["id"], before["run"]["id"]);
    assert_eq!(after["run"]["state"], "finished", "{after}");
    let done_after = ended(&after);
    for s in &done_before {
        assert!(done_after.contains(s), "{s:?} was run again");
    }
    // The node whose install was under way at the kill had lost its boot
    // server: it was restarted once, not left to time out.
    let restarted: Vec<&str> = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            step(&after, n["name"].as_str().unwrap(), "wait-installed")
                .is_some_and(|s| s["detail"].as_str().unwrap().contains("restarted once"))
        })
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    eprintln!("restarted after resume: {restarted:?}");
    for n in after["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        if name == "t-n03" {
            assert_eq!(n["verdict"], "failed", "{n}");
            assert_eq!(n["failed_stage"], "image", "{n}");
        } else {
            assert_eq!(n["verdict"], "accepted", "{n}");
            let verify = step(&after, name, "verify-os").unwrap();
            assert_eq!(verify["status"], "done", "{verify}");
        }
    }
    // The node really runs its OS, with the host key kiln gave it: OpenSSH
    // checks it against kiln's store alone.
    let store = rack.dir.path().join("state").join("ssh_known_hosts");
    let (code, out, err) = rack.ssh_known(0, "hostnamectl", &store);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Ubuntu 24.04"), "{out}");
}
