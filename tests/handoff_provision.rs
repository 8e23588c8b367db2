//! The handoff stage through `kiln provision --stages preflight,handoff` on
//! the virtual rack (127.85.x.x), with a webhook receiver that shares no
//! code with kiln (`tests/interop/webhook_receiver.py`, Python's
//! http.server): retries after a 503, a receiver that never takes a node,
//! failed nodes' records sent too, every received body verified with
//! `kiln verify` against the site key, a tampered one refused, and a resume
//! that sends nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::simrack::{Rack, RackSpec};
use serde_json::Value;

struct Receiver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(dir: &Path, addr: &str, extra: &[&str]) -> Receiver {
    let out = dir.join("received");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/webhook_receiver.py"
        ))
        .arg(format!("{addr}:0"))
        .arg(&out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
    Receiver {
        child,
        port,
        dir: out,
    }
}

fn kiln(rack: &Rack, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_TEST_WEBHOOK_TOKEN", "s3cret-token")
        .env("KILN_STATE_DIR", rack.dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .arg("-i")
        .arg(rack.dir.path().join("site.yaml"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn accepted_nodes_are_posted_signed_and_failures_are_reported() {
    let rack = Rack::start(RackSpec {
        net: 85,
        nodes: 3,
        imaged: false,
        faults: Some("faults:\n  - nodes: t-n02\n    gpu_missing: 3\n"),
        ..RackSpec::default()
    });
    // Each node's first POST gets a 503; t-n03's always does.
    let recv = receiver(
        rack.dir.path(),
        "127.85.9.1",
        &[
            "--token",
            "s3cret-token",
            "--fail-first",
            "1",
            "--always-fail",
            "t-n03",
        ],
    );
    let site = rack.dir.path().join("site.yaml");
    let yaml = std::fs::read_to_string(&site).unwrap().replace(
        "defaults:\n",
        &format!(
            "defaults:\n  handoff:\n    - webhook: {{url: \"http://127.85.9.1:{}/intake\", token: {{env: KILN_TEST_WEBHOOK_TOKEN}}, insecure_http: true, attempts: 3, failed: true}}\n",
            recv.port
        ),
    );
    std::fs::write(&site, yaml).unwrap();
    let out = kiln(&rack, &["bmc", "trust"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Without a site key nothing is sent: exit 2 naming `kiln keys init`.
    let out = kiln(&rack, &["provision", "--stages", "preflight,handoff"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kiln keys init"),
        "{}",
        text(&out.stderr)
    );
    let out = kiln(&rack, &["keys", "init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ed25519 "),
        "{}",
        text(&out.stdout)
    );
    let out = kiln(&rack, &["keys", "init"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a second init must not replace the key"
    );
    let public = rack.dir.path().join("state/site-key.pub");

    // The dry run says what would be sent, and sends nothing.
    let out = kiln(
        &rack,
        &["provision", "--stages", "preflight,handoff", "--dry-run"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains(&format!("webhook http://127.85.9.1:{}/intake", recv.port)),
        "{plan}"
    );
    assert!(plan.contains("POST the signed record"), "{plan}");
    assert_eq!(std::fs::read_dir(&recv.dir).unwrap().count(), 0);

    let out = kiln(
        &rack,
        &["--json", "provision", "--stages", "preflight,handoff"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("s3cret-token"));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let run = events.last().unwrap()["run"].as_str().unwrap().to_owned();
    let out = kiln(&rack, &["--json", "runs", "show", &run]);
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = |name: &str| {
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };
    // t-n01: accepted after one 503 and a retry.
    let n1 = node("t-n01");
    assert_eq!(n1["verdict"], "accepted", "{n1}");
    let webhook = n1["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "handoff" && s["step"] == "webhook")
        .unwrap();
    assert_eq!(webhook["metrics"]["attempts"], 2, "{webhook}");
    assert_eq!(webhook["metrics"]["status"], 200);
    assert!(
        webhook["metrics"]["answer"]
            .as_str()
            .unwrap()
            .contains("T-t-n01-2")
    );
    // t-n02: failed in preflight, keeps its reason; its record was sent too.
    let n2 = node("t-n02");
    assert_eq!(n2["verdict"], "failed");
    assert_eq!(n2["failed_stage"], "preflight");
    assert!(
        n2["reasons"][0].as_str().unwrap().contains("7 of 8 GPUs"),
        "{n2}"
    );
    // t-n03: passed its checks, but the receiver never took it.
    let n3 = node("t-n03");
    assert_eq!(n3["verdict"], "failed");
    assert_eq!(n3["failed_stage"], "handoff");
    let why = n3["reasons"][0].as_str().unwrap();
    assert!(
        why.starts_with("handoff/webhook: 3 attempt(s)") && why.contains("last answer 503"),
        "{why}"
    );

    // What the receiver got verifies against the site key.
    let got = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(recv.dir.join(name)).unwrap()).unwrap()
    };
    assert_eq!(got("t-n01.2.json")["record"]["verdict"], "accepted");
    assert_eq!(got("t-n02.2.json")["record"]["verdict"], "failed");
    assert!(recv.dir.join("t-n03.3.json").exists() && !recv.dir.join("t-n03.4.json").exists());
    let r1 = got("t-n01.2.json")["record"].clone();
    assert_eq!(r1["format"], "kiln.acceptance/1");
    assert_eq!(r1["run"], run.as_str());
    assert!(
        r1["inventory_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(r1["identity"]["gpus_bmc"].as_array().unwrap().len(), 8);
    assert_eq!(r1["software"]["driver"], "not recorded");
    assert!(
        r1["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["step"] == "gpus")
    );
    for body in ["t-n01.2.json", "t-n02.2.json"] {
        let out = kiln(
            &rack,
            &[
                "verify",
                recv.dir.join(body).to_str().unwrap(),
                "--key",
                public.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{body}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("preflight/gpus"),
            "{}",
            text(&out.stdout)
        );
    }
    // The run folder holds each node's record; a tampered copy fails.
    let kept = rack
        .dir
        .path()
        .join(format!("state/runs/{run}/t-n02/acceptance.json"));
    let tampered = rack.dir.path().join("tampered.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&kept).unwrap()).unwrap();
    doc["record"]["verdict"] = "accepted".into();
    doc["record"]["reasons"] = serde_json::json!([]);
    std::fs::write(&tampered, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let out = kiln(
        &rack,
        &[
            "verify",
            tampered.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("INVALID"),
        "{}",
        text(&out.stderr)
    );
    let out = kiln(
        &rack,
        &[
            "verify",
            rack.dir.path().join("nope.json").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));

    // Resuming the finished run sends nothing again.
    let before = std::fs::read_dir(&recv.dir).unwrap().count();
    let _ = kiln(&rack, &["provision", "--resume", &run]);
    assert_eq!(std::fs::read_dir(&recv.dir).unwrap().count(), before);
}

/// A copy of the built-in H100 profile named `name` whose burn-in lasts
/// `duration`: the slow rack's only difference is a longer policy.
fn h100_burning(name: &str, duration: &str) -> String {
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/inventories/profiles/hgx-h100-80gb-8x.yaml"
    ))
    .unwrap();
    let mut out = String::new();
    for line in base.lines() {
        if line.starts_with("name: ") {
            out.push_str(&format!("name: {name}\n"));
        } else if line.trim_start().starts_with("duration: ") && line.starts_with("  ") {
            out.push_str(&format!("  duration: {duration}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Time to capacity: a rack whose burn-in ends early hands its nodes to the
/// cloud while the other rack still burns. r01 burns 1 simulated minute,
/// r02 60 (0.1 s and 6 s at --time-scale 600); every r01 record must have
/// reached the receiver before any r02 node's burn-in ended. If handoff
/// waited for the whole run, r01's deliveries would come after r02's
/// burn-in and this test would fail.
#[test]
fn an_early_rack_is_handed_off_before_the_slow_rack_finishes_burning() {
    let fast = h100_burning("hgx-h100-fast", "1m");
    let slow = h100_burning("hgx-h100-slow", "60m");
    // Burn-in needs the GPU driver: an image that ships it, so the run
    // needs no drivers stage.
    let image = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/images/ubuntu-24.04.yaml"
    ))
    .unwrap()
    .replace("name: ubuntu-24.04\n", "name: ubuntu-24.04-cuda\n")
    .replace(
        "includes_driver_stack: false",
        "includes_driver_stack: true",
    );
    let rack = Rack::start(RackSpec {
        net: 89,
        nodes: 2,
        racks: 2,
        rack_hardware: &["hgx-h100-fast", "hgx-h100-slow"],
        profiles: &[
            ("hgx-h100-fast", &fast),
            ("hgx-h100-slow", &slow),
            ("images/ubuntu-24.04-cuda", &image),
        ],
        image: "ubuntu-24.04-cuda",
        ..RackSpec::default()
    });
    let recv = receiver(rack.dir.path(), "127.89.9.1", &["--token", "s3cret-token"]);
    let site = rack.dir.path().join("site.yaml");
    let yaml = std::fs::read_to_string(&site).unwrap().replace(
        "defaults:\n",
        &format!(
            "defaults:\n  handoff:\n    - webhook: {{url: \"http://127.89.9.1:{}/intake\", token: {{env: KILN_TEST_WEBHOOK_TOKEN}}, insecure_http: true}}\n",
            recv.port
        ),
    )
    // Log in with the test key, trusting the host keys the rack announced.
    .replace(
        "    user: kiln\n",
        "    user: kiln\n    key: id_ed25519\n    known_hosts: known_hosts\n",
    );
    std::fs::write(&site, yaml).unwrap();
    for args in [&["bmc", "trust"][..], &["keys", "init"]] {
        let out = kiln(&rack, args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    let out = kiln(
        &rack,
        &["--json", "provision", "--stages", "burnin,handoff"],
    );
    let shown = kiln(&rack, &["runs", "show"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        text(&shown.stdout)
    );
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let run = events.last().unwrap()["run"].as_str().unwrap().to_owned();
    let out = kiln(&rack, &["--json", "runs", "show", &run]);
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();

    // When each slow node's burn-in ended, in Unix milliseconds.
    let slow_end = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"].as_str().unwrap().starts_with("t-r02-"))
        .map(|n| {
            assert_eq!(n["verdict"], "accepted", "{n}");
            n["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["stage"] == "burnin")
                .map(|s| s["started_ms"].as_u64().unwrap() + s["duration_ms"].as_u64().unwrap())
                .max()
                .unwrap()
        })
        .min()
        .unwrap();
    for n in 1..=2 {
        let body = recv.dir.join(format!("t-r01-n{n:02}.1.json"));
        let got: Value = serde_json::from_str(&std::fs::read_to_string(&body).unwrap()).unwrap();
        assert_eq!(got["record"]["verdict"], "accepted");
        let at = std::fs::metadata(&body)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            at < slow_end,
            "{} delivered at {at}, slow rack's burn-in ended at {slow_end}",
            body.display()
        );
    }
    // The slow rack was handed off too, once its own burn-in ended.
    assert!(recv.dir.join("t-r02-n01.1.json").exists());
}
