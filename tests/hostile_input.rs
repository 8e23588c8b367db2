//! Truncated, binary and hostile inventories: exit 2 with a clear message,
//! never a panic, never a hang, never unbounded memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{kiln, run};

/// Checks `bytes` as an inventory file; returns (exit code, stderr).
fn check_bytes(bytes: &[u8]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.yaml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    let start = Instant::now();
    let (code, _, err) = run(kiln()
        .timeout(Duration::from_secs(30))
        .arg("inventory")
        .arg("check")
        .arg("-i")
        .arg(&path));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(!err.contains("panicked"), "kiln panicked:\n{err}");
    (code, err)
}

fn assert_rejected(bytes: &[u8], expected: &str) {
    let (code, err) = check_bytes(bytes);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
}

#[test]
fn billion_laughs() {
    let mut doc = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        doc.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 9].join(",")));
    }
    doc.push_str("site: x\nracks: []\n");
    let (code, err) = check_bytes(doc.as_bytes());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn deep_nesting() {
    let deep = format!("site: x\nracks: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    let (code, _) = check_bytes(deep.as_bytes());
    assert_eq!(code, 2);
    let mut block = String::from("site: x\nracks:\n");
    for i in 0..200 {
        block.push_str(&format!("{}- \n", "  ".repeat(i + 1)));
    }
    let (code, _) = check_bytes(block.as_bytes());
    assert_eq!(code, 2);
}

#[test]
fn binary_and_non_utf8() {
    assert_rejected(b"site: x\n\x00\x01\x02\x03racks: []\n", "NUL bytes");
    assert_rejected(b"site: par1\nracks: \xff\xfe\n", "not UTF-8 text");
    let (code, err) = check_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn truncated_files() {
    let text = std::fs::read(common::root().join("inventories/example-site.yaml")).unwrap();
    for cut in [1, 17, text.len() / 3, text.len() / 2, text.len() - 5] {
        let (code, err) = check_bytes(&text[..cut]);
        assert_eq!(code, 2, "cut at {cut}:\n{err}");
        assert!(
            err.contains("hostile.yaml:"),
            "cut at {cut}: no position:\n{err}"
        );
    }
}

#[test]
fn unterminated_quotes_and_flow_collections() {
    assert_rejected(b"site: \"par1\nracks: []\n", "hostile.yaml:");
    assert_rejected(
        b"site: par1\nracks: [{name: r01, nodes: [\n",
        "hostile.yaml:",
    );
}

#[test]
fn tags_do_not_construct_anything() {
    let (code, err) =
        check_bytes(b"site: !!python/object/apply:os.system [\"reboot\"]\nracks: []\n");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn multiple_documents() {
    let (code, err) = check_bytes(b"site: a\nracks: []\n---\nsite: b\nracks: []\n");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn oversized_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    // Sparse: costs no disk, but reports 100 MiB.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let (code, _, err) = run(kiln().arg("inventory").arg("check").arg("-i").arg(&path));
    assert_eq!(code, 2);
    assert!(err.contains("the limit is 67108864 bytes"), "{err}");
}

#[test]
fn very_long_lines_and_values() {
    let long = format!("site: {}\nracks: []\n", "a".repeat(1 << 20));
    let (code, err) = check_bytes(long.as_bytes());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.len() < 10_000,
        "the snippet is bounded, got {} bytes",
        err.len()
    );
}

#[test]
fn hostile_values_never_reach_a_node() {
    for value in [
        "\"r01;reboot\"",
        "\"$(curl x|sh)\"",
        "\"`id`\"",
        "\"a\\nb\"",
        "\"../../etc\"",
    ] {
        let doc = format!(
            "site: x\ndefaults: {{hardware: hgx-h100-80gb-8x, image: ubuntu-24.04, \
             bmc: {{username: a, password: {{env: X}}}}, ssh: {{user: u}}}}\n\
             racks:\n  - name: r01\n    nodes:\n      - {{name: {value}, bmc: 10.0.0.1, ssh: 10.0.1.1}}\n"
        );
        let (code, err) = check_bytes(doc.as_bytes());
        assert_eq!(code, 2, "{value}: {err}");
        assert!(err.contains("is not a valid host name"), "{value}: {err}");
    }
}
