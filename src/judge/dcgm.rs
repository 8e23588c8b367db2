//! Judge for `dcgmi diag` output: the boxed table every DCGM version prints
//! and the `-j` JSON of DCGM 2/3 (`"DCGM GPU Diagnostic"`, `gpu_ids`) and
//! DCGM 4 (`"DCGM Diagnostic"`, `entity_id`, `entity_groups`).
//!
//! Rules follow the DCGM diagnostics user guide
//! (docs.nvidia.com/datacenter/dcgm/latest/user-guide/dcgm-diagnostics.html):
//! a test result is Pass, Fail, Skip (not run on this system or at this
//! level) or Warn (passed, with a note). A Fail is a node failure; a Skip
//! means that part of the node was not verified.

use serde::Serialize;
use serde_json::Value;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "dcgm";

/// How many characters of DCGM's message to quote in a reason.
const MAX_MESSAGE: usize = 300;

/// One test's result on some GPUs.
/// The metrics of [`judge_dcgm`]; fields in alphabetical order, the order
/// the JSON has always had.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DcgmMetrics {
    /// The DCGM version, when the output names it.
    pub dcgm_version: Option<String>,
    /// The driver version, when the output names it.
    pub driver: Option<String>,
    /// Tests that failed.
    pub failed: Vec<String>,
    /// Tests that were skipped.
    pub skipped: Vec<String>,
    /// Every test's result.
    pub tests: Vec<DcgmTest>,
}

/// One test in [`DcgmMetrics`], alphabetical like the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DcgmTest {
    /// GPU ids the result is for; `None` for all GPUs.
    pub gpus: Option<Vec<String>>,
    /// The test's messages.
    pub messages: Vec<String>,
    /// `pass`, `fail`, `skip`, ... as DCGM reports it.
    pub status: &'static str,
    /// The test's name.
    pub test: String,
}

#[derive(Debug, Clone, PartialEq)]
struct TestResult {
    test: String,
    status: Status,
    /// `None` for "All" (the table's `Fail - All`).
    gpus: Option<Vec<String>>,
    messages: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Skip,
    Warn,
}

impl Status {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pass" => Some(Self::Pass),
            "fail" => Some(Self::Fail),
            "skip" => Some(Self::Skip),
            "warn" | "warning" => Some(Self::Warn),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::Warn => "warn",
        }
    }
}

/// What was read from one output.
#[derive(Debug, Default)]
struct Parsed {
    results: Vec<TestResult>,
    version: Option<String>,
    driver: Option<String>,
    /// Serial number per GPU index (DCGM 4 JSON `entity_groups`).
    serials: Vec<(String, String)>,
    /// `Error: ...` lines from dcgmi itself (it could not run the diag).
    errors: Vec<String>,
}

/// Reads the boxed table. Rows are `| Name | Result |`; a row with an empty
/// name continues the previous cell, and `Info` and `Warning` rows belong to
/// the test above them. DCGM cuts long messages into chunks of one fixed
/// width, mid-word, and pads each into its cell: the spaces a chunk ended
/// with are lost in the padding, so chunks are padded back to the widest
/// one before they are joined.
fn parse_table(text: &str) -> Option<Parsed> {
    let mut p = Parsed::default();
    let mut seen_table = false;
    let mut cells: Vec<(String, Vec<String>)> = Vec::new();
    for line in split_lines(text) {
        let trimmed = line.trim();
        if let Some(msg) = trimmed.strip_prefix("Error:") {
            p.errors.push(msg.trim().to_owned());
            continue;
        }
        if !trimmed.starts_with('|') || trimmed.starts_with("|---") || !trimmed.ends_with('|') {
            continue;
        }
        let inner = trimmed.get(1..trimmed.len() - 1).unwrap_or("");
        let Some((name, value)) = inner.split_once('|') else {
            continue;
        };
        let name = name.trim();
        // One blank pads the cell; a second one is a space the cut fell on.
        let chunk = value.strip_prefix(' ').unwrap_or(value).trim_end();
        if name == "Diagnostic" && chunk == "Result" && !seen_table {
            seen_table = true;
            continue;
        }
        if name.is_empty() {
            if let Some((_, chunks)) = cells.last_mut() {
                chunks.push(chunk.to_owned());
            }
        } else {
            cells.push((name.to_owned(), vec![chunk.to_owned()]));
        }
    }
    let width = cells
        .iter()
        .flat_map(|(_, chunks)| chunks.iter().rev().skip(1))
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    let rows = cells.into_iter().map(|(name, chunks)| {
        let last = chunks.len().saturating_sub(1);
        let mut value = String::new();
        for (i, chunk) in chunks.iter().enumerate() {
            value.push_str(chunk);
            if i < last {
                let pad = width.saturating_sub(chunk.chars().count());
                value.extend(std::iter::repeat_n(' ', pad));
            }
        }
        (name, value.split_whitespace().collect::<Vec<_>>().join(" "))
    });
    if !seen_table {
        return (!p.errors.is_empty()).then_some(p);
    }
    for (name, value) in rows {
        let value = value.trim().to_owned();
        match name.as_str() {
            "DCGM Version" => p.version = Some(value),
            "Driver Version Detected" => p.driver = Some(value),
            "Info" | "Warning" => {
                if let Some(last) = p.results.last_mut() {
                    last.messages.push(value);
                }
            }
            _ => {
                // `Pass - All`, `Fail - GPU: 0, 3`, `Pass` (deployment checks).
                let (status, scope) = value.split_once(" - ").unwrap_or((&value, "All"));
                let Some(status) = Status::parse(status) else {
                    continue; // metadata such as `GPU Device IDs Detected`
                };
                let scope = scope.trim();
                let gpus = if scope.eq_ignore_ascii_case("all") {
                    None
                } else {
                    let ids = scope.trim_start_matches("GPU:").trim_start_matches("GPU");
                    Some(
                        ids.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                };
                p.results.push(TestResult {
                    test: name,
                    status,
                    gpus,
                    messages: Vec::new(),
                });
            }
        }
    }
    Some(p)
}

/// Reads `dcgmi diag -j`. dcgmi may print warnings before the JSON, so the
/// object is taken from the first `{` to the last `}`.
fn parse_json(text: &str) -> Option<Parsed> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let root: Value = serde_json::from_str(text.get(start..=end)?).ok()?;
    let diag = root
        .get("DCGM Diagnostic")
        .or_else(|| root.get("DCGM GPU Diagnostic"))?;
    let mut p = Parsed::default();
    let categories = diag.get("test_categories")?.as_array()?;
    for category in categories {
        let tests = category.get("tests").and_then(Value::as_array);
        // `null` entries appear between tests in real DCGM 3 output.
        for test in tests.into_iter().flatten().filter(|t| t.is_object()) {
            let name = test.get("name").and_then(Value::as_str).unwrap_or("?");
            let results = test.get("results").and_then(Value::as_array);
            for r in results.into_iter().flatten().filter(|r| r.is_object()) {
                let Some(status) = r.get("status").and_then(Value::as_str) else {
                    continue;
                };
                let Some(status) = Status::parse(status) else {
                    continue;
                };
                let gpus = ["entity_id", "gpu_ids", "gpu_id"]
                    .iter()
                    .find_map(|k| r.get(*k))
                    .map(|v| match v {
                        Value::String(s) => s
                            .split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                        other => vec![other.to_string()],
                    });
                p.results.push(TestResult {
                    test: name.to_owned(),
                    status,
                    gpus,
                    messages: messages(r),
                });
            }
        }
    }
    let version = diag
        .get("version")
        .or_else(|| root.pointer("/metadata/version"));
    p.version = version.and_then(Value::as_str).map(str::to_owned);
    p.driver = root
        .pointer("/metadata/Driver Version Detected")
        .and_then(Value::as_str)
        .map(str::to_owned);
    for group in root
        .get("entity_groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for e in group
            .get("entities")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(id), Some(serial)) = (
                e.get("entity_id"),
                e.get("serial_num").and_then(Value::as_str),
            ) else {
                continue;
            };
            if !serial.contains("NOT_SUPPORTED") && !serial.is_empty() {
                p.serials.push((id.to_string(), serial.to_owned()));
            }
        }
    }
    Some(p)
}

/// A result's `warnings`: objects with a `warning` field (DCGM 3/4) or
/// plain strings (DCGM 2).
fn messages(r: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for w in r
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = w.get("warning").and_then(Value::as_str).or(w.as_str());
        if let Some(text) = text {
            let id = w.get("error_id").and_then(Value::as_u64);
            out.push(match id {
                Some(id) => format!("{text} (DCGM error {id})"),
                None => text.to_owned(),
            });
        }
    }
    if let Some(text) = r.get("warnings").and_then(Value::as_str) {
        out.push(text.to_owned());
    }
    out
}

fn shorten(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() <= MAX_MESSAGE {
        return s;
    }
    let cut: String = s.chars().take(MAX_MESSAGE).collect();
    format!("{cut}…")
}

/// `GPU 0, 1` / `all GPUs`, with serial numbers where the output has them.
fn gpu_names(gpus: Option<&[String]>, serials: &[(String, String)]) -> String {
    match gpus {
        None => "all GPUs".to_owned(),
        Some(ids) => {
            let named: Vec<String> = ids
                .iter()
                .map(|id| match serials.iter().find(|(i, _)| i == id) {
                    Some((_, s)) => format!("{id} (serial {s})"),
                    None => id.clone(),
                })
                .collect();
            format!("GPU {}", named.join(", "))
        }
    }
}

/// Judges `dcgmi diag` output (table or `-j` JSON).
///
/// Fails on any test result `Fail`, naming the test, the GPUs and DCGM's
/// first message (the guide's remedy text is part of it), and on `Error:`
/// lines from dcgmi itself (the diagnostic could not run). `Skip` results
/// make a run without failures `Unknown` ("not verified"), as does `Warn`.
///
/// A lone test object or result (a fragment pasted from a longer JSON) is a
/// [`ParseError`]: one test cannot clear a node.
///
/// Metrics: `dcgm_version`, `driver`, `tests` (`test`, `status`, `gpus`
/// (null for all), `messages`), `failed`, `skipped`.
pub fn judge_dcgm(text: &str) -> Result<Judgement<DcgmMetrics>, ParseError> {
    let p = parse_json(text)
        .or_else(|| parse_table(text))
        .filter(|p| !p.results.is_empty() || !p.errors.is_empty())
        .ok_or_else(|| ParseError {
            expected: "dcgmi diag output: the '| Diagnostic | Result |' table or the whole \
                       -j JSON object with \"DCGM Diagnostic\" (or \"DCGM GPU Diagnostic\") \
                       and its test_categories"
                .to_owned(),
        })?;

    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    for e in &p.errors {
        failures.push(format!("dcgmi diag could not run: {}", shorten(e)));
    }
    for r in &p.results {
        let who = gpu_names(r.gpus.as_deref(), &p.serials);
        match r.status {
            Status::Fail => {
                let mut reason = format!("DCGM test '{}' failed on {who}", r.test);
                if let Some(first) = r.messages.first() {
                    reason.push_str(&format!(": {}", shorten(first)));
                }
                if r.messages.len() > 1 {
                    reason.push_str(&format!(" [{} messages in all]", r.messages.len()));
                }
                failures.push(reason);
            }
            Status::Skip => inconclusive.push(format!(
                "DCGM test '{}' was skipped on {who}: not verified",
                r.test
            )),
            Status::Warn => {
                let mut reason = format!("DCGM test '{}' warned on {who}", r.test);
                if let Some(first) = r.messages.first() {
                    reason.push_str(&format!(": {}", shorten(first)));
                }
                inconclusive.push(reason);
            }
            Status::Pass => {}
        }
    }
    // Skips are still worth saying next to a failure.
    let skipped: Vec<&str> = p
        .results
        .iter()
        .filter(|r| r.status == Status::Skip)
        .map(|r| r.test.as_str())
        .collect();
    let failed: Vec<&str> = p
        .results
        .iter()
        .filter(|r| r.status == Status::Fail)
        .map(|r| r.test.as_str())
        .collect();
    let metrics = DcgmMetrics {
        dcgm_version: p.version.clone(),
        driver: p.driver.clone(),
        failed: failed.into_iter().map(str::to_owned).collect(),
        skipped: skipped.into_iter().map(str::to_owned).collect(),
        tests: p
            .results
            .iter()
            .map(|r| DcgmTest {
                test: r.test.clone(),
                status: r.status.as_str(),
                gpus: r.gpus.clone(),
                messages: r.messages.clone(),
            })
            .collect(),
    };
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    #[test]
    fn wrapped_cells_join_mid_word_and_at_spaces() {
        let text = "+---+\n| Diagnostic | Result |\n| GPU Memory | Fail - GPU: 3 |\n\
                    | Warning    | GPU 3 Enabl  |\n|            | e it now     |\n\
                    |            |  please     |\n";
        let p = parse_table(text).unwrap();
        assert_eq!(p.results[0].gpus, Some(vec!["3".to_owned()]));
        assert_eq!(p.results[0].messages, ["GPU 3 Enable it now please"]);
    }

    #[test]
    fn dcgmi_error_fails() {
        let j = judge_dcgm(
            "Error: Unable to complete diagnostic for group 2147483647. Return: (-21) Host engine connection invalid/disconnected.\n",
        )
        .unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].starts_with("dcgmi diag could not run"));
    }

    #[test]
    fn dcgm2_string_warnings() {
        let text = r#"{"DCGM GPU Diagnostic": {"test_categories": [{"category": "Hardware",
            "tests": [{"name": "Diagnostic", "results": [{"gpu_ids": "2", "status": "FAIL",
            "warnings": ["GPU 2 had 5 DBE"]}]}]}], "version": "2.4.7"}}"#;
        let j = judge_dcgm(text).unwrap();
        assert_eq!(
            j.reasons,
            ["DCGM test 'Diagnostic' failed on GPU 2: GPU 2 had 5 DBE"]
        );
    }
}
