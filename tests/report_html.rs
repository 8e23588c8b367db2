//! The HTML report in a real browser, and `kiln report` end to end.
//!
//! The browser test renders the example run, opens it in headless Chromium
//! (Debian's `chromium`, or `chromium-headless-shell`) and takes a
//! screenshot; it also has Chromium parse a page full of hostile names and
//! checks the DOM it built holds no script. Skipped when Chromium is
//! missing, unless `KILN_REQUIRE_INTEROP` is set (as CI does). Set
//! `KILN_REPORT_SCREENSHOT=PATH` to keep the screenshot for a look.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kiln, run};
use kiln::report::{Format, example_record, render};

fn chromium() -> Option<PathBuf> {
    let names = ["chromium", "chromium-headless-shell", "chromium-browser"];
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Chromium, or None (skip) where it is missing and not required.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    let missing = found.is_none().then_some("apt-get install chromium");
    if common::skip_interop("Chromium", missing) {
        return None;
    }
    found
}

/// Runs headless Chromium on `page` with `args`, killing it after two
/// minutes; returns its stdout.
fn headless(browser: &Path, dir: &Path, args: &[&str], page: &Path) -> String {
    let out_path = dir.join(format!("chromium-{}.out", args.len()));
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(out_path).unwrap()
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, render(&example_record(), Format::Html)).unwrap();
    let png = dir.path().join("report.png");
    headless(
        &browser,
        dir.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,2000",
        ],
        &page,
    );
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // IHDR: width and height, big-endian, right after the signature.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 2000));
    // A blank or error page compresses to a few kilobytes; the report's
    // text, tables and plots do not.
    assert!(
        bytes.len() > 60_000,
        "screenshot only {} bytes",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("KILN_REPORT_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}

#[test]
fn chromium_builds_no_script_from_hostile_names() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let mut record = example_record();
    let hostile = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";
    record.run.site = hostile.into();
    for node in &mut record.nodes {
        node.name = format!("{hostile}{}", node.name);
        node.reasons.push(hostile.into());
        for step in &mut node.steps {
            step.detail = format!("</td></tr></table>{hostile}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("hostile.html");
    std::fs::write(&page, render(&record, Format::Html)).unwrap();
    let dom = headless(&browser, dir.path(), &["--dump-dom"], &page);
    assert!(
        dom.contains("<svg"),
        "chromium did not render the page: {dom:.300}"
    );
    let lower = dom.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script element was built");
    assert!(!lower.contains("<img"), "an img element was built");
    assert!(!dom.contains("<title>pwned</title>"), "a script ran");
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"));
}

#[test]
fn report_command_renders_a_record_file() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.json");
    std::fs::write(&record, serde_json::to_string(&example_record()).unwrap()).unwrap();
    let record_arg = record.to_str().unwrap();

    let (code, out, err) = run(kiln().args(["report", "--record", record_arg, "-f", "junit"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("<?xml") && out.contains("<testsuites"),
        "{out:.200}"
    );

    let (code, out, _) = run(kiln().args(["report", "--record", record_arg]));
    assert_eq!(code, 0);
    assert!(
        out.starts_with("# kiln run 20261125-101500-3f9a"),
        "markdown by default"
    );

    // A JSON report reads back as a record and renders the same JSON.
    let (code, json, _) = run(kiln().args(["--json", "report", "--record", record_arg]));
    assert_eq!(code, 0);
    assert_eq!(json, render(&example_record(), Format::Json));
    let report = dir.path().join("report.json");
    std::fs::write(&report, &json).unwrap();
    let (_, again, _) =
        run(kiln().args(["report", "--record", report.to_str().unwrap(), "-f", "json"]));
    assert_eq!(again, json);

    let html = dir.path().join("out").join("..").join("report.html");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let html_arg = html.to_str().unwrap();
    for _ in 0..2 {
        // The second run replaces the first file.
        let (code, out, err) = run(kiln().args([
            "report", "--record", record_arg, "--format", "html", "--out", html_arg,
        ]));
        assert_eq!(code, 0, "{err}");
        assert!(out.is_empty(), "the report goes to the file only");
        assert!(
            err.contains("wrote the html report of run 20261125-101500-3f9a (5 nodes)"),
            "{err}"
        );
    }
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(text, render(&example_record(), Format::Html));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("kiln-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn report_command_rejects_what_is_not_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"run\": {\"id\": 7}\n}\n").unwrap();
    let (code, out, err) = run(kiln().args(["report", "--record", bad.to_str().unwrap()]));
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("bad.json:2:") && err.contains("not a run record"),
        "{err}"
    );

    let (code, _, err) = run(kiln().args(["report", "--record", "/nonexistent/record.json"]));
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/record.json"), "{err}");

    let (code, _, err) =
        run(kiln().args(["report", "--record", bad.to_str().unwrap(), "-f", "pdf"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("json") && err.contains("junit") && err.contains("html") && err.contains("md"),
        "{err}"
    );
}

#[test]
fn report_help() {
    let (code, out, _) = run(kiln().args(["report", "--help"]));
    assert_eq!(code, 0);
    insta::assert_snapshot!("report_help", out);
}

/// The example run with the firmware stage's `verify` step on its first
/// rack's nodes, the last of them one BMC version behind.
#[test]
fn the_firmware_table_marks_the_node_behind() {
    use kiln::pipeline::record::{StepMetrics as _, StepRecord};
    use kiln::stages::firmware::compliance::{ComponentCheck, Member};
    use kiln::stages::firmware::metrics::VerifyMetrics;
    let mut record = example_record();
    let plain = render(&record, Format::Html);
    assert!(!plain.contains("Firmware compliance"));
    let rack = record.nodes[0].rack.clone();
    let on_rack: Vec<usize> = (0..record.nodes.len())
        .filter(|&i| record.nodes[i].rack == rack)
        .collect();
    assert!(
        on_rack.len() > 1,
        "the example's first rack has nodes to compare"
    );
    let behind = *on_rack.last().unwrap();
    for &i in &on_rack {
        let (version, meets) = if i == behind {
            ("7.00", false)
        } else {
            ("7.10", true)
        };
        let m = VerifyMetrics {
            components: vec![ComponentCheck {
                component: "bmc".into(),
                wanted: "7.10 or later".into(),
                members: vec![Member {
                    id: "BMC".into(),
                    version: version.into(),
                    meets,
                }],
            }],
            bios: vec![],
        };
        record.nodes[i].steps.push(StepRecord {
            stage: VerifyMetrics::STAGE.into(),
            step: VerifyMetrics::STEP.into(),
            metrics: m.to_metrics(),
            ..StepRecord::default()
        });
    }
    let html = render(&record, Format::Html);
    assert!(
        html.contains("<section id=\"firmware\">"),
        "no firmware section"
    );
    let cell = format!(
        "<td class=\"num v-failed\" title=\"{}/BMC\">1</td>",
        record.nodes[behind].name
    );
    assert!(
        html.contains(&cell),
        "the node behind is not marked: {cell}"
    );
}
