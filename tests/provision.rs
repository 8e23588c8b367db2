//! `kiln provision` end to end against the virtual rack (a `kiln sim up`
//! child process): verdicts and reasons, JSON events, the journal behind
//! `kiln runs`, and a run killed with SIGKILL that resumes without
//! repeating a finished step and ends with the verdicts of an
//! uninterrupted run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::simrack::{Rack, RackSpec};
use serde_json::Value;

fn kiln_cmd(rack: &Rack, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_STATE_DIR", state(rack))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .arg("-i")
        .arg(site(rack))
        .args(args);
    cmd
}

fn kiln(rack: &Rack, args: &[&str]) -> Output {
    kiln_cmd(rack, args).output().unwrap()
}

fn site(rack: &Rack) -> PathBuf {
    rack.dir.path().join("site.yaml")
}

fn state(rack: &Rack) -> PathBuf {
    rack.dir.path().join("state")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn trust(rack: &Rack) {
    let out = kiln(rack, &["bmc", "trust"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn verdicts(record: &Value) -> Vec<(String, String, String)> {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["verdict"].as_str().unwrap().to_owned(),
                n["reasons"].to_string(),
            )
        })
        .collect()
}

#[test]
fn preflight_fails_exactly_the_faulty_node_and_the_journal_keeps_the_run() {
    let rack = Rack::start(RackSpec {
        net: 220,
        nodes: 3,
        imaged: false,
        faults: Some("faults:\n  - nodes: t-n02\n    gpu_missing: 3\n"), // GPU4
        ..RackSpec::default()
    });

    // Before any trust is recorded nothing is touched: exit 2, one message.
    let out = kiln(&rack, &["provision"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("kiln bmc trust"), "{}", stderr(&out));
    trust(&rack);

    // The whole plan includes imaging, which needs to know where its boot
    // server is reached and a key to log in with afterwards: said up front.
    let out = kiln(&rack, &["provision", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--advertise"), "{}", stderr(&out));
    let out = kiln(
        &rack,
        &["provision", "--dry-run", "--bind", "127.220.0.1:0"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imaging needs ssh.key"),
        "{}",
        stderr(&out)
    );

    let out = kiln(
        &rack,
        &[
            "provision",
            "--dry-run",
            "--stages",
            "preflight,burnin,nccl",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("t-n03"));
    assert!(
        stderr(&out).contains("dry run: 3 node(s)"),
        "{}",
        stderr(&out)
    );

    let out = kiln(&rack, &["--json", "provision", "--stages", "preflight"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run_started");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["counts"]["accepted"], 2);
    assert_eq!(last["counts"]["failed"], 1);
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "node_finished" && e["verdict"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["node"], "t-n02");
    assert_eq!(failed[0]["failed_stage"], "preflight");
    let why = failed[0]["reasons"][0].as_str().unwrap();
    assert!(why.contains("7 of 8 GPUs") && why.contains("GPU4"), "{why}");
    // Every step that started also ended.
    let started = events
        .iter()
        .filter(|e| e["event"] == "step_started")
        .count();
    let ended = events.iter().filter(|e| e["event"] == "step_ended").count();
    assert_eq!(started, ended);

    let run = last["run"].as_str().unwrap().to_owned();
    let out = kiln(&rack, &["--json", "runs", "show", &run]);
    assert!(out.status.success(), "{}", stderr(&out));
    let record = json(&out);
    assert_eq!(record["run"]["state"], "finished");
    let n1 = &record["nodes"][0];
    assert_eq!(n1["verdict"], "accepted");
    let steps: Vec<&str> = n1["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["bmc", "host", "gpus", "firmware", "power-on"]);
    assert!(
        n1["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("BMC firmware")
    );

    let out = kiln(&rack, &["runs", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&run) && text.contains("2 accepted"), "{text}");

    let out = kiln(&rack, &["runs", "show", "no-such-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no run `no-such-run`"),
        "{}",
        stderr(&out)
    );

    let out = kiln(&rack, &["provision", "--stages", "preflight,burn"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown stage `burn`"),
        "{}",
        stderr(&out)
    );
}

/// The record `kiln runs show --json` prints for the newest run.
fn newest(rack: &Rack) -> Value {
    json(&kiln(rack, &["--json", "runs", "show"]))
}

fn ended_steps(record: &Value) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for n in record["nodes"].as_array().unwrap() {
        for s in n["steps"].as_array().unwrap() {
            if s["status"] != "running" {
                out.push((
                    n["name"].as_str().unwrap().to_owned(),
                    s["step"].as_str().unwrap().to_owned(),
                    s["started_ms"].as_u64().unwrap(),
                ));
            }
        }
    }
    out
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn journal_ready(dir: &Path) -> bool {
    dir.join("journal.sqlite").exists()
}

#[test]
fn a_run_killed_mid_way_resumes_without_repeating_finished_steps() {
    // Slow BMCs and two nodes at a time make the run last long enough to
    // be killed in the middle.
    let faults = "faults:\n  - nodes: \"t-n*\"\n    bmc_latency: 150ms\n  - nodes: t-n04\n    gpu_missing: 1\n";
    let rack = Rack::start(RackSpec {
        net: 221,
        nodes: 6,
        imaged: false,
        faults: Some(faults),
        ..RackSpec::default()
    });
    trust(&rack);

    let mut child = kiln_cmd(&rack, &["provision", "--stages", "preflight", "-c", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the journal", Duration::from_secs(30), || {
        journal_ready(&state(&rack))
    });
    // Kill once some steps ended and the run is not over.
    wait_for("a few finished steps", Duration::from_secs(60), || {
        let out = kiln(&rack, &["--json", "runs", "show"]);
        out.status.success() && ended_steps(&json(&out)).len() >= 6
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = newest(&rack);
    assert_eq!(before["run"]["state"], "running", "{before}");
    let done_before = ended_steps(&before);
    let total_steps = 6 * 5 - 2; // t-n04 stops at its gpus step
    assert!(
        done_before.len() < total_steps,
        "the run ended before it was killed"
    );

    let out = kiln(&rack, &["provision", "--resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming run"), "{}", stderr(&out));
    let after = newest(&rack);
    assert_eq!(after["run"]["id"], before["run"]["id"]);
    assert_eq!(after["run"]["state"], "finished");
    // Steps that had ended were not run again: same start times.
    let done_after = ended_steps(&after);
    for step in &done_before {
        assert!(done_after.contains(step), "{step:?} was run again");
    }
    assert_eq!(done_after.len(), total_steps);

    // The same verdicts as a run that was never interrupted.
    let out = kiln(&rack, &["provision", "--stages", "preflight", "-c", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let fresh = newest(&rack);
    assert_ne!(fresh["run"]["id"], after["run"]["id"]);
    assert_eq!(verdicts(&fresh), verdicts(&after));
    assert_eq!(
        verdicts(&after)
            .iter()
            .filter(|v| v.1 == "failed")
            .map(|v| v.0.as_str())
            .collect::<Vec<_>>(),
        ["t-n04"]
    );
}

#[test]
fn a_second_run_on_the_same_state_folder_is_refused() {
    // Slow BMCs keep the first run going while the others try.
    let faults = "faults:\n  - nodes: \"t-n*\"\n    bmc_latency: 300ms\n";
    let rack = Rack::start(RackSpec {
        net: 248,
        nodes: 1,
        imaged: false,
        faults: Some(faults),
        ..RackSpec::default()
    });
    trust(&rack);
    let mut first = kiln_cmd(&rack, &["provision", "--stages", "preflight"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = state(&rack).join("lock");
    // The holder notes its run id once the run is recorded.
    wait_for("the first run", Duration::from_secs(30), || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("run "))
    });
    let holder = std::fs::read_to_string(&lock).unwrap();
    for args in [
        &["provision", "--stages", "preflight"][..],
        &["provision", "--resume"][..],
    ] {
        let out = kiln(&rack, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("in use by another kiln run"), "{err}");
        assert!(err.contains(&state(&rack).display().to_string()), "{err}");
        assert!(err.contains(holder.trim()), "{err}");
    }
    assert!(first.try_wait().unwrap().is_none(), "the first run ended");
    first.kill().unwrap();
    first.wait().unwrap();
    // The kernel dropped the killed run's lock: the next run starts.
    let out = kiln(&rack, &["provision", "--resume"]);
    assert!(stderr(&out).contains("resuming run"), "{}", stderr(&out));
}

#[test]
fn a_damaged_journal_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    std::fs::write(&journal, vec![b'x'; 4096]).unwrap();
    std::fs::write(
        dir.path().join("site.yaml"),
        "site: s\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {env: KILN_TEST_BMC_PASSWORD}\n  ssh:\n    user: kiln\nracks:\n  - name: r01\n    nodes:\n      - {name: n1, bmc: \"127.248.9.1:8443\", ssh: \"127.248.9.2:22\"}\n",
    )
    .unwrap();
    for args in [&["runs", "list"][..], &["provision", "--resume"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_STATE_DIR", dir.path())
            .env("KILN_TEST_BMC_PASSWORD", "test")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .arg("-i")
            .arg(dir.path().join("site.yaml"))
            .args(args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&journal.display().to_string()), "{err}");
    }
}
