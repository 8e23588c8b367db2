//! DMTF's Redfish Protocol Validator, run against simulated BMCs of every
//! flavour: an independent judge of the simulator's HTTP behaviour. No
//! query-parameter assertion (`REQ_QUERY*`) may fail; every other failure
//! must be listed, with why it is left, in
//! `tests/interop/protocol-baseline/FLAVOUR.txt`.
//!
//! Needs Python 3, openssl and PyPI (the validator is installed into a venv
//! by `tests/interop/setup-python.sh`). Set `KILN_SKIP_INTEROP=1` to skip on
//! a machine without them; CI never sets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::simrack::{Rack, RackSpec};

/// Runs the validator against node 0 of a fresh rack of `flavour` on
/// loopback net `net`; returns the problems found (empty: passed) and notes.
fn judge(flavour: &str, net: u8, out: &Path) -> (Vec<String>, Vec<String>) {
    let rack = Rack::start(RackSpec {
        net,
        flavour,
        ..RackSpec::default()
    });
    let root = common::root();
    let status = Command::new(root.join("tests/interop/run_protocol_validator.sh"))
        .arg(rack.bmc(0))
        .args(["admin", "test"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run_protocol_validator.sh");
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "{flavour}: the protocol validator could not run (see {}); set KILN_SKIP_INTEROP=1 on machines without Python/PyPI",
        out.join("validator.log").display()
    );
    let failures = std::fs::read_to_string(out.join("failures.txt")).unwrap();
    let baseline_path = root.join(format!("tests/interop/protocol-baseline/{flavour}.txt"));
    let baseline_text = std::fs::read_to_string(&baseline_path).unwrap_or_default();
    let baseline: BTreeSet<&str> = baseline_text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    // Trailing tabs (an empty URI) are not significant: editors drop them.
    for line in failures.lines().map(str::trim_end) {
        seen.insert(line);
        if line.starts_with("REQ_QUERY") {
            problems.push(format!("{flavour}: query assertion fails: {line}"));
        } else if !baseline.contains(line) {
            problems.push(format!("{flavour}: not in the baseline: {line}"));
        }
    }
    let notes = baseline
        .difference(&seen)
        .map(|l| format!("{flavour}: baseline line no longer fails: {l}"))
        .collect();
    (problems, notes)
}

#[test]
fn every_flavour_passes_the_protocol_validators_query_checks() {
    if common::skip_interop("the Redfish protocol validator", None) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    // Loopback nets no other test uses.
    let cases = [
        ("generic", 236),
        ("dell", 237),
        ("hpe", 238),
        ("supermicro", 239),
        ("lenovo", 249),
    ];
    let threads: Vec<_> = cases
        .into_iter()
        .map(|(flavour, net)| {
            let dir = out.path().join(flavour);
            std::thread::spawn(move || judge(flavour, net, &dir))
        })
        .collect();
    let mut problems = Vec::new();
    for t in threads {
        let (p, notes) = t.join().expect("a flavour's run panicked");
        for n in notes {
            eprintln!("note: {n}");
        }
        problems.extend(p);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
