//! The Slurm target against a real controller: Debian's slurmctld (22.05)
//! and munged, started by `tests/interop/slurm-up.sh` on 127.85.7.100 with
//! a test configuration whose nodes are the virtual rack's (127.86.x.x).
//! `kiln provision --stages preflight,handoff` resumes the accepted nodes
//! and drains the failed one with kiln's reason; `scontrol show node`
//! reads them back. Skipped without slurmctld unless KILN_REQUIRE_INTEROP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};

use common::simrack::{Rack, RackSpec};

struct Slurm {
    dir: tempfile::TempDir,
}

impl Slurm {
    fn conf(&self) -> std::path::PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn show(&self, node: &str) -> String {
        let out = Command::new("scontrol")
            .env("SLURM_CONF", self.conf())
            .args(["show", "node", "-o", node])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn scontrol(&self, args: &[&str]) {
        let out = Command::new("scontrol")
            .env("SLURM_CONF", self.conf())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        for pid in ["slurmctld.pid", "munged.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(pid)) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

fn slurm(nodes: &[&str]) -> Option<Slurm> {
    let missing = !std::path::Path::new("/usr/sbin/slurmctld").exists();
    if common::skip_interop(
        "slurmctld",
        missing.then_some("apt-get install slurmctld slurm-client munge"),
    ) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/slurm-up.sh"
    ))
    .arg(dir.path())
    .args(["127.85.7.100", "16817"])
    .args(nodes)
    .output()
    .unwrap();
    let s = Slurm { dir };
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ready"),
        "slurm-up.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(s)
}

fn kiln(rack: &Rack, slurm: &Slurm, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_STATE_DIR", rack.dir.path().join("state"))
        .env("SLURM_CONF", slurm.conf())
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
fn accepted_nodes_are_resumed_and_failed_ones_drained_with_the_reason() {
    let Some(slurm) = slurm(&["t-n01", "t-n02", "t-n03"]) else {
        return;
    };
    // A new rack: Slurm knows the nodes, but they are down.
    for n in ["t-n01", "t-n02", "t-n03"] {
        slurm.scontrol(&[
            "update",
            &format!("NodeName={n}"),
            "State=DOWN",
            "Reason=new rack",
        ]);
    }
    assert!(slurm.show("t-n01").contains("State=DOWN"));

    let rack = Rack::start(RackSpec {
        net: 86,
        nodes: 3,
        imaged: false,
        faults: Some("faults:\n  - nodes: t-n02\n    gpu_missing: 3\n"),
        ..RackSpec::default()
    });
    let site = rack.dir.path().join("site.yaml");
    // The rack's own list (scontrol on this machine, which is the
    // controller here) replaces the site's.
    let yaml = std::fs::read_to_string(&site).unwrap().replace(
        "  - name: r01\n",
        "  - name: r01\n    handoff:\n      - slurm: {scontrol: local}\n",
    );
    std::fs::write(&site, yaml).unwrap();
    assert!(kiln(&rack, &slurm, &["bmc", "trust"]).status.success());
    assert!(kiln(&rack, &slurm, &["keys", "init"]).status.success());

    let out = kiln(
        &rack,
        &slurm,
        &["provision", "--stages", "preflight,handoff", "--dry-run"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("State=DRAIN Reason='kiln: REASON'"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        slurm.show("t-n01").contains("State=DOWN"),
        "a dry run changes nothing"
    );

    let out = kiln(
        &rack,
        &slurm,
        &["provision", "--stages", "preflight,handoff"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let table = text(&out.stdout);
    assert!(
        table.contains("t-n01") && table.contains("accepted"),
        "{table}"
    );

    for n in ["t-n01", "t-n03"] {
        let line = slurm.show(n);
        assert!(
            !line.contains("DRAIN") && !line.contains("State=DOWN "),
            "{n}: {line}"
        );
        assert!(line.contains("State=IDLE"), "{n}: {line}");
    }
    let line = slurm.show("t-n02");
    assert!(line.contains("DRAIN"), "{line}");
    assert!(
        line.contains("Reason=kiln: the BMC sees 7 of 8 GPUs"),
        "the drain reason is kiln's: {line}"
    );

    // Run again: the accepted nodes are already in service (skipped), the
    // failed one already drained with the same reason.
    let out = kiln(
        &rack,
        &slurm,
        &["--json", "provision", "--stages", "preflight,handoff"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let run = text(&out.stdout)
        .lines()
        .last()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["run"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    let out = kiln(&rack, &slurm, &["--json", "runs", "show", &run]);
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for n in record["nodes"].as_array().unwrap() {
        let step = n["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "handoff" && s["step"] == "slurm")
            .unwrap_or_else(|| panic!("{n}"));
        assert_eq!(step["status"], "skipped", "{step}");
    }
}
