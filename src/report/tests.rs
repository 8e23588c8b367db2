//! Report tests on the hand-built record in `example.rs`: snapshots for the
//! text formats, structure for JSON and HTML, a strict XML reader for JUnit.

use serde_json::Value;

use super::*;
use crate::pipeline::record::{NodeRecord, StepStatus};

fn fixture() -> RunRecord {
    example_record()
}

#[test]
fn format_names_parse_both_ways() {
    for f in Format::ALL {
        assert_eq!(f.name().parse::<Format>(), Ok(f));
        assert_eq!(f.to_string(), f.name());
        let clap_value = <Format as clap::ValueEnum>::from_str(f.name(), false);
        assert_eq!(clap_value, Ok(f));
    }
    assert_eq!("Markdown".parse::<Format>(), Ok(Format::Md));
    assert_eq!("XML".parse::<Format>(), Ok(Format::Junit));
    let err = "pdf".parse::<Format>().unwrap_err();
    assert!(err.to_string().contains("json, junit, html or md"), "{err}");
}

#[test]
fn summary_counts_per_verdict_and_rack() {
    let s = Summary::of(&fixture());
    assert_eq!(
        s.counts,
        VerdictCounts {
            total: 5,
            accepted: 1,
            failed: 2,
            unverified: 1,
            pending: 1
        }
    );
    let racks: Vec<(&str, usize, usize)> = s
        .racks
        .iter()
        .map(|r| (r.rack.as_str(), r.counts.total, r.counts.failed))
        .collect();
    assert_eq!(racks, [("r01", 2, 1), ("r02", 3, 1)]);
    assert_eq!(s.failed_by_stage.get("burnin"), Some(&1));
    assert_eq!(s.failed_by_stage.get("nccl"), Some(&1));
}

#[test]
fn every_render_is_deterministic() {
    for f in Format::ALL {
        assert_eq!(render(&fixture(), f), render(&fixture(), f), "{f}");
        assert!(render(&fixture(), f).ends_with('\n'), "{f}");
    }
}

// ---- JSON

#[test]
fn json_is_the_record_plus_a_summary() {
    let text = render(&fixture(), Format::Json);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["nodes", "run", "summary"]);
    // The record part reads back as the record it came from.
    let back = RunRecord {
        run: serde_json::from_value(doc["run"].clone()).unwrap(),
        nodes: serde_json::from_value(doc["nodes"].clone()).unwrap(),
    };
    assert_eq!(back, fixture());
    let s = &doc["summary"];
    assert_eq!(s["total"], 5);
    assert_eq!(s["failed"], 2);
    assert_eq!(s["racks"][1]["rack"], "r02");
    assert_eq!(s["racks"][1]["pending"], 1);
    assert_eq!(s["failed_by_stage"]["nccl"], 1);
    // Fields in the order of the types, run first.
    assert!(text.find("\"run\"").unwrap() < text.find("\"summary\"").unwrap());
    assert!(text.find("\"summary\"").unwrap() < text.find("\"nodes\"").unwrap());
}

// ---- Markdown

#[test]
fn markdown_snapshot() {
    insta::assert_snapshot!("markdown", render(&fixture(), Format::Md));
}

#[test]
fn markdown_cells_cannot_break_the_table() {
    let md = render(&fixture(), Format::Md);
    // The nccl reason holds `|` and a line break: escaped, the row has the
    // table's five columns.
    let row = md.lines().find(|l| l.starts_with("| r02-n01 |")).unwrap();
    assert!(
        row.contains("all_reduce_perf \\| 8 GPUs)<br>last row"),
        "{row}"
    );
    let unescaped_pipes = row.replace("\\|", "").matches('|').count();
    assert_eq!(unescaped_pipes, 6, "{row}");
    let mut record = fixture();
    record.nodes[0].name = "<script>alert(1)</script>|x".into();
    let md = render(&record, Format::Md);
    assert!(!md.contains("<script>"));
    assert!(md.contains("&lt;script>alert(1)&lt;/script>\\|x"));
}

// ---- JUnit

#[test]
fn junit_snapshot() {
    insta::assert_snapshot!("junit", render(&fixture(), Format::Junit));
}

/// An element of the strict reader below.
#[derive(Debug)]
struct El {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<El>,
    text: String,
}

impl El {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn num(&self, key: &str) -> f64 {
        self.attr(key)
            .unwrap_or_else(|| panic!("<{}> lacks {key}", self.name))
            .parse()
            .unwrap_or_else(|_| panic!("<{}> {key} is not a number", self.name))
    }
    fn kids<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// A strict reader for the XML subset kiln writes: a declaration,
/// comments, elements, attributes in double quotes, the five entities and
/// numeric references. Anything else is an error, so a renderer bug that a
/// lenient CI parser might swallow fails here.
fn parse_xml(text: &str) -> Result<El, String> {
    struct P<'a> {
        s: &'a str,
        i: usize,
    }
    impl P<'_> {
        fn rest(&self) -> &str {
            &self.s[self.i..]
        }
        fn skip_ws(&mut self) {
            while self.rest().starts_with(|c: char| c.is_ascii_whitespace()) {
                self.i += 1;
            }
        }
        fn skip_misc(&mut self) -> Result<(), String> {
            loop {
                self.skip_ws();
                if self.rest().starts_with("<!--") {
                    let end = self.rest().find("-->").ok_or("unclosed comment")?;
                    if self.rest()[4..end].contains("--") {
                        return Err("`--` inside a comment".into());
                    }
                    self.i += end + 3;
                } else {
                    return Ok(());
                }
            }
        }
        fn name(&mut self) -> Result<String, String> {
            let n: String = self
                .rest()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
                .collect();
            if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                return Err(format!("bad name at {}", self.i));
            }
            self.i += n.len();
            Ok(n)
        }
        fn element(&mut self) -> Result<El, String> {
            if !self.rest().starts_with('<') {
                return Err(format!("expected < at {}", self.i));
            }
            self.i += 1;
            let name = self.name()?;
            let mut el = El {
                name,
                attrs: Vec::new(),
                children: Vec::new(),
                text: String::new(),
            };
            loop {
                self.skip_ws();
                if self.rest().starts_with("/>") {
                    self.i += 2;
                    return Ok(el);
                }
                if self.rest().starts_with('>') {
                    self.i += 1;
                    break;
                }
                let key = self.name()?;
                if !self.rest().starts_with("=\"") {
                    return Err(format!("attribute {key} not in double quotes"));
                }
                self.i += 2;
                let end = self.rest().find('"').ok_or("unclosed attribute")?;
                let raw = &self.rest()[..end];
                if raw.contains('<') {
                    return Err(format!("raw < in attribute {key}"));
                }
                let value = decode(raw)?;
                if el.attrs.iter().any(|(k, _)| *k == key) {
                    return Err(format!("duplicate attribute {key}"));
                }
                el.attrs.push((key, value));
                self.i += end + 1;
            }
            loop {
                let next = self.rest().find('<').ok_or("unclosed element")?;
                let raw = &self.rest()[..next];
                if raw.contains('>') {
                    return Err("raw > in text".into());
                }
                el.text.push_str(&decode(raw)?);
                self.i += next;
                if self.rest().starts_with("</") {
                    self.i += 2;
                    let close = self.name()?;
                    if close != el.name {
                        return Err(format!("</{close}> closes <{}>", el.name));
                    }
                    self.skip_ws();
                    if !self.rest().starts_with('>') {
                        return Err("bad end tag".into());
                    }
                    self.i += 1;
                    return Ok(el);
                }
                if self.rest().starts_with("<!--") {
                    self.skip_misc()?;
                    continue;
                }
                el.children.push(self.element()?);
            }
        }
    }
    fn decode(raw: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = raw;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let semi = rest[amp..].find(';').ok_or("unterminated entity")?;
            let entity = &rest[amp + 1..amp + semi];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let n = if let Some(hex) = entity.strip_prefix("#x") {
                        u32::from_str_radix(hex, 16)
                    } else if let Some(dec) = entity.strip_prefix('#') {
                        dec.parse()
                    } else {
                        return Err(format!("unknown entity &{entity};"));
                    };
                    n.ok()
                        .and_then(char::from_u32)
                        .ok_or(format!("bad reference &{entity};"))?
                }
            };
            out.push(c);
            rest = &rest[amp + semi + 1..];
        }
        out.push_str(rest);
        if out
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err("a character XML 1.0 does not allow".into());
        }
        Ok(out)
    }
    let prolog = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
    let body = text.strip_prefix(prolog).ok_or("no XML declaration")?;
    let mut p = P { s: body, i: 0 };
    p.skip_misc()?;
    let root = p.element()?;
    p.skip_misc()?;
    if !p.rest().is_empty() {
        return Err(format!("content after the root: {:?}", p.rest()));
    }
    Ok(root)
}

/// The conventions Jenkins' and GitLab's JUnit readers rely on, and the
/// counts, checked against each other and the record.
fn check_junit(xml: &str, record: &RunRecord) -> El {
    let root = parse_xml(xml).unwrap_or_else(|e| panic!("not well-formed: {e}\n{xml}"));
    assert_eq!(root.name, "testsuites");
    let (mut tests, mut failures, mut skipped) = (0.0, 0.0, 0.0);
    for suite in &root.children {
        assert_eq!(suite.name, "testsuite");
        for key in [
            "name",
            "tests",
            "failures",
            "errors",
            "skipped",
            "time",
            "timestamp",
        ] {
            assert!(suite.attr(key).is_some(), "testsuite lacks {key}");
        }
        let cases: Vec<&El> = suite.kids("testcase").collect();
        assert_eq!(
            cases.len(),
            suite.children.len(),
            "only testcases in a suite"
        );
        assert_eq!(suite.num("tests") as usize, cases.len());
        let fails = cases
            .iter()
            .filter(|c| c.kids("failure").count() > 0)
            .count();
        let skips = cases
            .iter()
            .filter(|c| c.kids("skipped").count() > 0)
            .count();
        assert_eq!(suite.num("failures") as usize, fails);
        assert_eq!(suite.num("skipped") as usize, skips);
        assert_eq!(suite.num("errors"), 0.0);
        for case in cases {
            assert!(case.attr("name").is_some_and(|n| !n.is_empty()));
            assert!(case.attr("classname").is_some_and(|n| !n.is_empty()));
            assert!(case.num("time") >= 0.0);
            let outcomes = case.kids("failure").count() + case.kids("skipped").count();
            assert!(outcomes <= 1, "one outcome per case");
            for child in &case.children {
                assert!(
                    ["failure", "skipped", "system-out"].contains(&child.name.as_str()),
                    "unexpected <{}>",
                    child.name
                );
            }
            for f in case.kids("failure") {
                assert!(f.attr("message").is_some_and(|m| !m.is_empty()));
            }
        }
        tests += suite.num("tests");
        failures += suite.num("failures");
        skipped += suite.num("skipped");
    }
    assert_eq!(root.num("tests"), tests);
    assert_eq!(root.num("failures"), failures);
    assert_eq!(root.num("skipped"), skipped);
    let expected_cases: usize = record.nodes.iter().map(|n| n.steps.len() + 1).sum();
    assert_eq!(tests as usize, expected_cases);
    root
}

#[test]
fn junit_follows_the_conventions_ci_reads() {
    let record = fixture();
    let root = check_junit(&render(&record, Format::Junit), &record);
    let suites: Vec<&str> = root
        .children
        .iter()
        .filter_map(|s| s.attr("name"))
        .collect();
    assert_eq!(suites, ["fra-2 rack r01", "fra-2 rack r02"]);
    let case = |class: &str, name: &str| -> &El {
        root.children
            .iter()
            .flat_map(|s| s.kids("testcase"))
            .find(|c| c.attr("classname") == Some(class) && c.attr("name") == Some(name))
            .unwrap_or_else(|| panic!("no case {class} {name}"))
    };
    let burn = case("fra-2.r01.r01-n02", "burnin/gpu-burn");
    let failure = burn.kids("failure").next().unwrap();
    assert!(failure.attr("message").unwrap().contains("GPU 3"));
    assert_eq!(burn.num("time"), 600.0);
    // The reason's line break survives in the body, not in the message.
    let nccl = case(
        "fra-2.r02.r01-n01".replace("r01-n01", "r02-n01").as_str(),
        "nccl/all-reduce-node",
    );
    let failure = nccl.kids("failure").next().unwrap();
    assert!(!failure.attr("message").unwrap().contains('\n'));
    assert!(failure.text.contains("GPUs)\nlast row"));
    let unverified = case("fra-2.r02.r02-n02", "verdict");
    let skip = unverified.kids("skipped").next().unwrap();
    assert!(
        skip.attr("message")
            .unwrap()
            .starts_with("unverified: dcgmi diag skipped")
    );
    assert!(
        case("fra-2.r02.r02-n03", "image/boot-once")
            .kids("skipped")
            .count()
            == 1
    );
    assert!(
        case("fra-2.r01.r01-n01", "verdict")
            .children
            .iter()
            .all(|c| c.name == "system-out")
    );
}

#[test]
fn junit_escapes_names_reasons_and_bytes_xml_cannot_hold() {
    let mut record = fixture();
    let hostile = "<script>alert(\"1\")</script> & 'x' ]]> --";
    record.run.id = format!("run {hostile}");
    record.run.site = hostile.into();
    record.nodes[1].name = hostile.into();
    record.nodes[1].rack = hostile.into();
    record.nodes[1].reasons = vec![format!("\u{1b}[31mred\u{1b}[0m\0 {hostile}\r\n2nd line")];
    record.nodes[1].steps[0].step = hostile.into();
    record.nodes[1].steps[0].detail = "tab\there\u{7}".into();
    let xml = render(&record, Format::Junit);
    assert!(!xml.contains("<script>"));
    let root = check_junit(&xml, &record);
    let names: Vec<&str> = root
        .children
        .iter()
        .filter_map(|s| s.attr("hostname"))
        .collect();
    assert!(names.contains(&hostile), "{names:?}");
    let verdict = root
        .children
        .iter()
        .flat_map(|s| s.kids("testcase"))
        .find(|c| {
            c.attr("classname").is_some_and(|n| n.ends_with(hostile))
                && c.attr("name") == Some("verdict")
        })
        .unwrap();
    let body = &verdict.kids("failure").next().unwrap().text;
    assert!(body.contains("\u{fffd}[31mred"), "{body:?}");
    assert!(body.contains(hostile) && body.contains("2nd line"));
}

// ---- HTML

#[test]
fn html_is_one_self_contained_page() {
    let html = render(&fixture(), Format::Html);
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(html.trim_end().ends_with("</html>"));
    // Offline: nothing fetched, nothing run.
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script",
        "<link",
        "<img",
        "<iframe",
        "src=",
        "@import",
        "url(",
        "javascript:",
    ] {
        assert!(!lower.contains(bad), "found {bad}");
    }
    let external = lower.matches("http://").count() + lower.matches("https://").count();
    let svg_ns = lower
        .matches("xmlns=\"http://www.w3.org/2000/svg\"")
        .count();
    assert_eq!(external, svg_ns, "the only URLs are SVG namespace names");
    // The run header, in UTC.
    assert!(html.contains("<time>2026-11-25T10:15:00Z</time>"));
    assert!(html.contains("<time>2026-11-25T13:40:00Z</time> (3h 25m)"));
    // Balanced structure.
    for tag in ["section", "article", "table", "svg", "ul", "dl", "a"] {
        let open =
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        assert_eq!(
            open,
            html.matches(&format!("</{tag}>")).count(),
            "<{tag}> balance"
        );
    }
}

#[test]
fn html_has_the_rack_map_tables_and_plots() {
    let record = fixture();
    let html = render(&record, Format::Html);
    // A rack map with both racks, each node with its verdict as a word.
    let map = &html[html.find("id=\"rack-map\"").unwrap()..html.find("id=\"nodes\"").unwrap()];
    assert!(map.contains("rack r01") && map.contains("rack r02"));
    for (node, tag) in [
        ("r01-n01", "OK"),
        ("r01-n02", "FAIL"),
        ("r02-n02", "UNVERIFIED"),
        ("r02-n03", "PENDING"),
    ] {
        assert!(map.contains(&format!(">{node}</text>")), "{node}");
        assert!(map.contains(&format!(">{tag}</text>")), "{tag}");
    }
    assert!(map.contains("class=\"legend\""));
    // A detail section per node, linked from the map and the table.
    for i in 0..record.nodes.len() {
        assert!(html.contains(&format!("id=\"node-{i}\"")));
        assert!(html.matches(&format!("href=\"#node-{i}\"")).count() >= 2);
    }
    // Temperature plots on the four nodes that burned in, one line per GPU.
    let temps = html.matches("GPU temperature during burn-in").count();
    assert_eq!(temps, 4 * 3, "title, <title> and aria-label per chart");
    assert!(html.contains(">GPU 7</text>") && html.contains("temperature (°C)"));
    // NCCL plots with the log2 size axis and the dashed floor.
    assert!(html.contains("NCCL bus bandwidth: all_reduce_perf"));
    for label in [
        ">1 KiB</text>",
        ">1 MiB</text>",
        ">1 GiB</text>",
        "floor 360 GB/s",
        "bus bandwidth (GB/s)",
    ] {
        assert!(html.contains(label), "{label}");
    }
    assert!(html.contains("stroke-dasharray=\"6 4\""));
    assert!(html.matches("class=\"timeline\"").count() == 5);
}

#[test]
fn html_injection_from_node_names_and_tool_output_is_impossible() {
    let mut record = fixture();
    let hostile = "<script>alert(1)</script>";
    record.run.site = hostile.into();
    record.run.id = format!("\"><img src=x onerror=alert(1)>{hostile}");
    for node in &mut record.nodes {
        node.name = format!("{hostile}{}", node.name);
        node.rack = format!("{hostile}'\"");
        node.hardware = hostile.into();
        node.reasons.push(format!("</li></ul>{hostile}"));
        for step in &mut node.steps {
            step.detail = format!("</td>{hostile}");
            step.stage = hostile.into();
            step.artifacts.push(format!("{hostile}.log"));
        }
    }
    if let Value::Object(m) = &mut record.nodes[2].steps[10].metrics {
        m.insert("test".into(), hostile.into());
    }
    let html = render(&record, Format::Html);
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script element got through");
    assert!(!lower.contains("<img"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // Element ids do not come from names.
    assert!(html.contains("id=\"node-0\""));
}

#[test]
fn html_without_metrics_or_steps_still_renders() {
    let record = RunRecord {
        nodes: vec![NodeRecord {
            name: "lonely".into(),
            rack: "r9".into(),
            ..NodeRecord::default()
        }],
        ..RunRecord::default()
    };
    let html = render(&record, Format::Html);
    assert!(html.contains("No steps recorded."));
    assert!(html.contains("<dt>Finished</dt><dd>not yet</dd>"));
    let mut record = fixture();
    record.nodes[0].steps[8].metrics =
        serde_json::json!({"telemetry": "garbage", "rows": [{"size": "x"}]});
    record.nodes[0].steps[10].metrics =
        serde_json::json!({"rows": [{"size": 0, "busbw_in_place": 1.0}]});
    record.nodes[0].steps[10].status = StepStatus::Running;
    record.nodes[0].steps[10].duration_ms = None;
    let html = render(&record, Format::Html);
    assert!(!html.contains("NaN") && !html.contains("inf\""));
}

#[test]
fn big_runs_detail_only_the_nodes_that_need_a_look() {
    let mut record = fixture();
    let template = record.nodes[0].clone();
    for i in 0..300 {
        let mut n = template.clone();
        n.name = format!("r03-n{i:03}");
        n.rack = format!("r{:02}", 3 + i / 20);
        record.nodes.push(n);
    }
    let html = render(&record, Format::Html);
    assert_eq!(html.matches("<article class=\"node\"").count(), 4);
    assert!(html.contains("details are shown for the nodes that are not accepted"));
    // 17 racks in rows of 7: three rack-map pictures.
    assert_eq!(html.matches("class=\"rackmap\"").count(), 3);
}

#[test]
fn the_burn_in_plots_carry_the_bmc_series() {
    let html = render(&example_record(), Format::Html);
    assert!(
        html.contains("inlet (BMC)"),
        "inlet line on the temperature plot"
    );
    assert!(html.contains("inlet ≤ 35 °C"), "with its limit");
    assert!(html.contains("Chassis power during burn-in, from the BMC"));
    assert!(html.contains("load ≥ 2800 W"));
}
