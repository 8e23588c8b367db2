//! Judge for nccl-tests output (`all_reduce_perf`, `all_gather_perf`, ...).
//!
//! Handles both table layouts nccl-tests has printed: the current one (a
//! `root` column and an integer `#wrong` count per half, `N/A` when run with
//! `-c 0`) and the old one (no `root`, a float `error` column). Lines may carry
//! an `srun --label` (` 0: `) or `mpirun --tag-output` (`[1,0]<stdout>:`)
//! prefix, and may have lost their leading `#` when pasted (issue #37).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Judgement, ParseError, human_bytes, split_lines};

const KIND: &str = "nccl-tests";

/// Below this the largest message has usually not saturated the links, so a
/// floor check there measures latency more than bandwidth (nccl-tests
/// PERFORMANCE.md: busbw is meaningful for large messages).
const SATURATION_BYTES: u64 = 1 << 30;

/// How many per-size corruption reasons to list before summarising.
const MAX_ROW_REASONS: usize = 5;

/// The data-integrity column of one half of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    /// `#wrong`: the number of wrong elements (current format).
    Wrong(u64),
    /// `error`: the largest deviation seen (old format). Float reductions
    /// legitimately deviate a little, so this alone does not fail a run;
    /// the tool's "Out of bounds values" footer carries its tolerance check.
    Error(f64),
    /// `N/A`: validation was off (`-c 0`).
    NotChecked,
}

impl Check {
    fn parse(token: &str, is_error_column: bool) -> Option<Self> {
        if token == "N/A" {
            return Some(Self::NotChecked);
        }
        // `#wrong` is printed with `%6g`, so large counts appear as `1e+06`.
        let value: f64 = token.parse().ok()?;
        if is_error_column {
            Some(Self::Error(value))
        } else if value >= 0.0 && value.fract() == 0.0 {
            Some(Self::Wrong(value as u64))
        } else {
            None
        }
    }

    fn wrong(self) -> u64 {
        match self {
            Self::Wrong(n) => n,
            Self::Error(_) | Self::NotChecked => 0,
        }
    }

    /// The `(wrong, error)` pair a [`NcclRow`] keeps: one of them at most.
    fn split(self) -> (Option<u64>, Option<f64>) {
        match self {
            Self::Wrong(n) => (Some(n), None),
            Self::Error(e) => (None, Some(e)),
            Self::NotChecked => (None, None),
        }
    }
}

/// One data row: a message size with its out-of-place and in-place results.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    size: u64,
    busbw_out: f64,
    busbw_in: f64,
    check_out: Check,
    check_in: Check,
}

impl Row {
    /// The better of the two halves. Both halves run the same collective on
    /// the same links and differ by noise; published reference figures quote
    /// the better one (issue #290: the maintainer called 476 GB/s, the
    /// in-place value, "in the expected range for H100"), so floors derived
    /// from them compare against the better one too.
    fn busbw(&self) -> f64 {
        self.busbw_out.max(self.busbw_in)
    }
}

/// Token positions of a row's columns, from the column header line.
#[derive(Debug, Clone, Copy)]
struct Layout {
    tokens: usize,
    busbw: [usize; 2],
    check: [usize; 2],
    check_is_error: bool,
}

impl Layout {
    /// Reads the `size count type ... busbw #wrong ...` header. Positions
    /// from the header also cover columns newer versions may append.
    fn from_header(tokens: &[&str]) -> Option<Self> {
        let find = |pred: &dyn Fn(&str) -> bool| -> Vec<usize> {
            tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| pred(t))
                .map(|(i, _)| i)
                .collect()
        };
        let busbw = find(&|t| t == "busbw");
        let check = find(&|t| t == "#wrong" || t == "error" || t == "wrong");
        if tokens.first() != Some(&"size") || busbw.len() != 2 || check.len() != 2 {
            return None;
        }
        Some(Self {
            tokens: tokens.len(),
            busbw: [busbw[0], busbw[1]],
            check: [check[0], check[1]],
            check_is_error: tokens.contains(&"error"),
        })
    }

    /// The layout of a row seen without a usable header: `size count type
    /// [redop] [root]` then `time algbw busbw check` twice.
    fn guess(tokens: &[&str]) -> Option<Self> {
        let mut start = 3;
        if tokens.get(start).is_some_and(|t| starts_alpha(t)) {
            start += 1; // redop
        }
        match tokens.len().checked_sub(start)? {
            8 => {}
            9 => start += 1, // root
            _ => return None,
        }
        // Without a header, only a float that is not an integer marks the
        // old `error` column.
        let check_is_error = tokens[start + 3].contains(['.', 'e']);
        Some(Self {
            tokens: tokens.len(),
            busbw: [start + 2, start + 6],
            check: [start + 3, start + 7],
            check_is_error,
        })
    }

    fn parse(&self, tokens: &[&str]) -> Option<Row> {
        if tokens.len() != self.tokens {
            return None;
        }
        Some(Row {
            size: tokens[0].parse().ok()?,
            busbw_out: tokens[self.busbw[0]].parse().ok()?,
            busbw_in: tokens[self.busbw[1]].parse().ok()?,
            check_out: Check::parse(tokens[self.check[0]], self.check_is_error)?,
            check_in: Check::parse(tokens[self.check[1]], self.check_is_error)?,
        })
    }
}

fn starts_alpha(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
}

/// Whether `tokens` look like a data row: two integers then a type name.
fn looks_like_row(tokens: &[&str]) -> bool {
    tokens.len() >= 11
        && tokens[0].parse::<u64>().is_ok()
        && tokens[1].parse::<u64>().is_ok()
        && starts_alpha(tokens[2])
}

/// Removes an `srun --label` (`12: `) or `mpirun --tag-output`
/// (`[1,0]<stdout>:`) prefix and surrounding blanks.
fn strip_launcher_prefix(line: &str) -> &str {
    let line = line.trim();
    if let Some((head, rest)) = line.split_once(':') {
        if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) {
            return rest.trim();
        }
        if head.starts_with('[') && (head.ends_with("<stdout>") || head.ends_with("<stderr>")) {
            return rest.trim();
        }
    }
    line
}

/// Markers of a test that aborted. nccl-tests prints `Test CUDA failure`,
/// `Test NCCL failure` and ` .. host pid N: Test failure file:line` (issues
/// #264, #369); the rest come from the launcher or the kernel.
const CRASH_MARKERS: &[&str] = &[
    "Test CUDA failure",
    "Test NCCL failure",
    "Test failure",
    "NCCL failure",
    "CUDA failure",
    "Segmentation fault",
    "Bus error",
    "exited on signal",
    "returned a non-zero exit code",
    "srun: error:",
];

/// Known crash messages and what they usually mean on a new server.
const CRASH_HINTS: &[(&str, &str)] = &[
    (
        "system not yet initialized",
        "on NVSwitch systems this usually means nvidia-fabricmanager is not running (nccl-tests issue #264)",
    ),
    (
        "busy or unavailable",
        "another process holds the GPU or its compute mode is EXCLUSIVE_PROCESS (nccl-tests issue #369)",
    ),
];

/// One reason for all crash lines, led by the most telling one: the
/// `Test CUDA/NCCL failure` line names the cause, while the ` .. Test
/// failure` lines after it only say a process exited.
fn crash_reason(crashes: &[String]) -> String {
    let first = crashes
        .iter()
        .find(|l| l.contains("CUDA failure") || l.contains("NCCL failure"))
        .or_else(|| crashes.first())
        .map_or("", String::as_str);
    // Lead with the message; the host or rank printed before it goes last.
    let at = CRASH_MARKERS
        .iter()
        .filter_map(|m| first.find(m))
        .min()
        .unwrap_or(0);
    let (prefix, message) = first.split_at(at);
    let prefix = prefix.trim_matches(|c: char| c == '.' || c == ':' || c.is_whitespace());
    let mut reason = format!("test crashed: {message}");
    if !prefix.is_empty() && prefix != "test" {
        reason.push_str(&format!(" (on {prefix})"));
    }
    if let Some((_, hint)) = CRASH_HINTS.iter().find(|(m, _)| first.contains(m)) {
        reason.push_str(&format!("; {hint}"));
    }
    if crashes.len() > 1 {
        reason.push_str(&format!(" [{} failure lines in all]", crashes.len()));
    }
    reason
}

/// The metrics of [`judge_nccl`]; fields in alphabetical order, the order
/// the JSON has always had (journals and reports read these keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NcclMetrics {
    /// The `Avg bus bandwidth` footer, GB/s: reported, never judged.
    pub avg_busbw_reported: Option<f64>,
    /// Bus bandwidth at the largest size, GB/s: the better half of each row,
    /// the worst row when several tables reach that size.
    pub busbw_at_largest: Option<f64>,
    /// The floor judged against, GB/s, if any.
    pub busbw_floor: Option<f64>,
    /// Crash lines as printed, the first [`MAX_ROWS_KEPT`].
    pub crash_lines: Vec<String>,
    /// Crash lines beyond those kept.
    pub crash_lines_omitted: usize,
    /// GPU model -> how many ranks ran on it.
    pub gpu_models: BTreeMap<String, usize>,
    /// Ranks listed in the header.
    pub gpus: usize,
    /// Hosts of the ranks, in rank order, each once.
    pub hosts: Vec<String>,
    /// The largest message size tested, bytes.
    pub largest_size: Option<u64>,
    /// The `nccl-tests version` line's version.
    pub nccl_tests_version: Option<String>,
    /// The `NCCL version` line's version.
    pub nccl_version: Option<String>,
    /// The `Out of bounds values` footer.
    pub out_of_bounds: Option<NcclOutOfBounds>,
    /// Data rows, the first [`MAX_ROWS_KEPT`].
    pub rows: Vec<NcclRow>,
    /// Data rows beyond those kept.
    pub rows_omitted: usize,
    /// The collective, e.g. `all_reduce_perf`.
    pub test: Option<String>,
    /// Whether data validation was on (`-c`), when the header says.
    pub validation: Option<bool>,
    /// Things a technician should know that do not change the verdict.
    pub warnings: Vec<String>,
}

/// One message size in [`NcclMetrics`], alphabetical like the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NcclRow {
    /// In-place bus bandwidth, GB/s.
    pub busbw_in_place: f64,
    /// Out-of-place bus bandwidth, GB/s.
    pub busbw_out_of_place: f64,
    /// Old format: the in-place `error` column.
    pub error_in_place: Option<f64>,
    /// Old format: the out-of-place `error` column.
    pub error_out_of_place: Option<f64>,
    /// Message size, bytes.
    pub size: u64,
    /// Current format: in-place `#wrong`; `None` when not checked.
    pub wrong_in_place: Option<u64>,
    /// Current format: out-of-place `#wrong`; `None` when not checked.
    pub wrong_out_of_place: Option<u64>,
}

/// The `Out of bounds values : N OK|FAILED` footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NcclOutOfBounds {
    /// Values out of bounds.
    pub count: u64,
    /// The tool's own verdict: `OK`.
    pub ok: bool,
}

/// The most data rows (and failure lines) kept in a judgement's metrics.
const MAX_ROWS_KEPT: usize = 256;

/// Everything read from one output.
#[derive(Debug, Default)]
struct Parsed {
    test: Option<String>,
    tests_version: Option<String>,
    nccl_version: Option<String>,
    validation: Option<bool>,
    ranks: BTreeMap<u32, (String, String)>,
    rows: Vec<Row>,
    oob: Option<(u64, bool)>,
    avg_busbw: Option<f64>,
    crashes: Vec<String>,
    nccl_warns: usize,
}

fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut layout: Option<Layout> = None;
    for raw in split_lines(text) {
        let line = strip_launcher_prefix(raw);
        // Comment lines and their hash-stripped copies read the same.
        let body = line.trim_start_matches('#').trim();
        if body.is_empty() {
            continue;
        }
        if body.contains("NCCL INFO") {
            continue;
        }
        if body.contains("NCCL WARN") {
            // NCCL warns about recoverable conditions too; a real failure
            // is followed by a `Test NCCL failure` line, judged below.
            p.nccl_warns += 1;
            continue;
        }
        let tokens: Vec<&str> = body.split_whitespace().collect();
        if tokens[0] == "nThread" {
            p.validation = value_after(&tokens, "validation:").map(|v| v != "0");
        } else if let Some(name) = body.strip_prefix("Collective test starting:") {
            p.test = Some(name.trim().to_owned());
        } else if let Some(v) = body.strip_prefix("nccl-tests version") {
            p.tests_version = v.split_whitespace().next().map(str::to_owned);
        } else if let Some(v) = body.strip_prefix("NCCL version") {
            p.nccl_version = v.split_whitespace().next().map(str::to_owned);
        } else if tokens[0] == "Rank" && tokens.contains(&"device") {
            if let Some((rank, host, model)) = parse_rank(body, &tokens) {
                p.ranks.insert(rank, (host, model));
            }
        } else if tokens[0] == "size" && tokens.contains(&"busbw") {
            layout = Layout::from_header(&tokens);
        } else if body.starts_with("Out of bounds values") {
            p.oob = parse_oob(body);
        } else if body.starts_with("Avg bus bandwidth") {
            p.avg_busbw = body
                .split_once(':')
                .and_then(|(_, v)| v.trim().parse().ok());
        } else if looks_like_row(&tokens) {
            let row = layout
                .and_then(|l| l.parse(&tokens))
                .or_else(|| Layout::guess(&tokens).and_then(|l| l.parse(&tokens)));
            if let Some(row) = row {
                p.rows.push(row);
            }
        } else if CRASH_MARKERS.iter().any(|m| body.contains(m)) {
            p.crashes.push(line.to_owned());
        }
    }
    p
}

/// The token after `key` in a `key value key value` line.
fn value_after<'a>(tokens: &[&'a str], key: &str) -> Option<&'a str> {
    let i = tokens.iter().position(|t| *t == key)?;
    tokens.get(i + 1).copied()
}

/// `Rank  0 Group  0 Pid 295203 on node005 device  0 [0x18] NVIDIA H100 80GB HBM3`
/// (older versions have no `Group`).
fn parse_rank(body: &str, tokens: &[&str]) -> Option<(u32, String, String)> {
    let rank = value_after(tokens, "Rank")?.parse().ok()?;
    let host = value_after(tokens, "on").unwrap_or("?").to_owned();
    let model = body.split_once(']').map(|(_, m)| m.trim()).unwrap_or("");
    Some((rank, host, model.to_owned()))
}

/// `Out of bounds values : 4 FAILED` -> (4, false).
fn parse_oob(body: &str) -> Option<(u64, bool)> {
    let (_, rest) = body.split_once(':')?;
    let mut it = rest.split_whitespace();
    let count = it.next()?.parse().ok()?;
    let ok = it.next()? == "OK";
    Some((count, ok))
}

/// Judges nccl-tests output.
///
/// Fails on: any `#wrong` > 0 (data corruption), an "Out of bounds values"
/// footer saying FAILED, a crash line (`Test CUDA failure`, `Test NCCL
/// failure`, `Test failure`, ...), or, when `busbw_floor_gbps` is given, a bus
/// bandwidth below it at the LARGEST message size. The "Avg bus bandwidth"
/// footer is reported but never judged: it averages over tiny,
/// latency-bound sizes and so says little about the fabric (nccl-tests
/// PERFORMANCE.md explains busbw; issue #290 shows a healthy 476 GB/s node
/// averaging 439).
///
/// Returns `Unknown` when rows were read but the footer is missing (the run
/// was cut short), and a [`ParseError`] when there are neither data rows nor
/// a crash line.
///
/// Metrics: `test`, `nccl_tests_version`, `nccl_version`, `validation`,
/// `gpus`, `gpu_models` (model -> count), `hosts`, `rows` (per size:
/// `size`, `busbw_out_of_place`, `busbw_in_place`, `wrong_*` or old-format
/// `error_*`), `largest_size`, `busbw_at_largest` (the better of the two
/// halves), `busbw_floor`, `avg_busbw_reported`, `out_of_bounds`,
/// `crash_lines`, `warnings`.
pub fn judge_nccl(
    text: &str,
    busbw_floor_gbps: Option<f64>,
) -> Result<Judgement<NcclMetrics>, ParseError> {
    let p = parse(text);
    if p.rows.is_empty() && p.crashes.is_empty() {
        return Err(ParseError {
            expected: "nccl-tests output: data rows (size count type ... busbw #wrong) \
                       or a 'Test ... failure' line"
                .to_owned(),
        });
    }

    let op = p
        .test
        .as_deref()
        .map(|t| t.strip_suffix("_perf").unwrap_or(t).to_owned())
        .unwrap_or_else(|| "nccl-tests".to_owned());
    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    let mut warnings = Vec::new();

    // Integrity first: wrong data is a hardware or driver fault whatever
    // the bandwidth.
    let corrupt: Vec<&Row> = p
        .rows
        .iter()
        .filter(|r| r.check_out.wrong() + r.check_in.wrong() > 0)
        .collect();
    for r in corrupt.iter().take(MAX_ROW_REASONS) {
        failures.push(format!(
            "#wrong = {} at {} ({} bytes): data corruption ({} out-of-place, {} in-place)",
            r.check_out.wrong() + r.check_in.wrong(),
            human_bytes(r.size),
            r.size,
            r.check_out.wrong(),
            r.check_in.wrong(),
        ));
    }
    if corrupt.len() > MAX_ROW_REASONS {
        failures.push(format!(
            "#wrong > 0 at {} more sizes",
            corrupt.len() - MAX_ROW_REASONS
        ));
    }
    match p.oob {
        Some((count, false)) => failures.push(format!(
            "nccl-tests data check FAILED: 'Out of bounds values : {count} FAILED'"
        )),
        Some((_, true)) => {}
        None if !p.rows.is_empty() && p.crashes.is_empty() => inconclusive.push(
            "no 'Out of bounds values' footer: the output stops before the test finished"
                .to_owned(),
        ),
        None => {}
    }
    // nccl-tests exits through ` .. Test failure` after a failed data
    // check too (issue #369); that line adds nothing to the reasons above.
    let only_exit_lines = p.crashes.iter().all(|l| {
        let l = l.replace("Test failure", "");
        !CRASH_MARKERS.iter().any(|m| l.contains(m))
    });
    let exit_after_failed_check = only_exit_lines && !failures.is_empty();
    if !p.crashes.is_empty() && !exit_after_failed_check {
        failures.push(crash_reason(&p.crashes));
    }

    // Performance: only the largest size, where busbw approaches the link
    // speed.
    let largest = p.rows.iter().map(|r| r.size).max();
    // If several tables (e.g. several data types) reach the largest size,
    // the worst of them decides.
    let busbw_at_largest = largest.and_then(|size| {
        p.rows
            .iter()
            .filter(|r| r.size == size)
            .map(Row::busbw)
            .reduce(f64::min)
    });
    if let (Some(floor), Some(size), Some(bw)) = (busbw_floor_gbps, largest, busbw_at_largest) {
        if bw < floor {
            failures.push(format!(
                "{op} busbw {bw:.1} GB/s < {floor} floor at {} ({size} bytes)",
                human_bytes(size)
            ));
        }
        if size < SATURATION_BYTES {
            warnings.push(format!(
                "largest size tested is {}: busbw may not have saturated; test up to 8 GiB (-e 8G) for a bandwidth verdict",
                human_bytes(size)
            ));
        }
    }
    let unchecked = p
        .rows
        .iter()
        .any(|r| r.check_out == Check::NotChecked || r.check_in == Check::NotChecked);
    if p.validation == Some(false) || unchecked {
        warnings.push(
            "data validation was off (-c 0): #wrong is N/A, so corruption was not checked"
                .to_owned(),
        );
    }
    if p.nccl_warns > 0 {
        warnings.push(format!("{} 'NCCL WARN' lines in the output", p.nccl_warns));
    }

    let mut gpu_models: BTreeMap<String, usize> = BTreeMap::new();
    let mut hosts: Vec<String> = Vec::new();
    for (host, model) in p.ranks.values() {
        *gpu_models.entry(model.clone()).or_default() += 1;
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    // A real run has a few dozen rows per table; an output with thousands
    // is judged whole but only its first rows are kept in the metrics, so
    // the record stays small whatever the node prints.
    let rows = p
        .rows
        .iter()
        .take(MAX_ROWS_KEPT)
        .map(|r| {
            let (wrong_out_of_place, error_out_of_place) = r.check_out.split();
            let (wrong_in_place, error_in_place) = r.check_in.split();
            NcclRow {
                busbw_in_place: r.busbw_in,
                busbw_out_of_place: r.busbw_out,
                error_in_place,
                error_out_of_place,
                size: r.size,
                wrong_in_place,
                wrong_out_of_place,
            }
        })
        .collect();
    let metrics = NcclMetrics {
        avg_busbw_reported: p.avg_busbw,
        busbw_at_largest,
        busbw_floor: busbw_floor_gbps,
        crash_lines: p.crashes.iter().take(MAX_ROWS_KEPT).cloned().collect(),
        crash_lines_omitted: p.crashes.len().saturating_sub(MAX_ROWS_KEPT),
        gpu_models,
        gpus: p.ranks.len(),
        hosts,
        largest_size: largest,
        nccl_tests_version: p.tests_version,
        nccl_version: p.nccl_version,
        out_of_bounds: p.oob.map(|(count, ok)| NcclOutOfBounds { count, ok }),
        rows,
        rows_omitted: p.rows.len().saturating_sub(MAX_ROWS_KEPT),
        test: p.test,
        validation: p.validation,
        warnings,
    };
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;
    use crate::judge::json_keys;

    const NEW_HEADER: &str = "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong\n";

    #[test]
    fn launcher_prefixes_are_stripped() {
        assert_eq!(
            strip_launcher_prefix(" 0: # Out of bounds"),
            "# Out of bounds"
        );
        assert_eq!(strip_launcher_prefix("[1,0]<stdout>: 1024 2"), "1024 2");
        assert_eq!(strip_launcher_prefix("gpu-1-1: Test"), "gpu-1-1: Test");
    }

    #[test]
    fn row_without_header_is_guessed() {
        let text = "        1024   256  float  sum  -1  45.06  0.02  0.04  0  43.74  0.02  0.04  0\n\
                    # Out of bounds values : 0 OK\n";
        let j = judge_nccl(text, None).unwrap();
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.metrics.largest_size, Some(1024));
    }

    #[test]
    fn wrong_printed_in_exponent_form_counts() {
        let text = format!(
            "{NEW_HEADER} 1048576  262144  float  sum  -1  477.32  2.20  2.20  1e+06  492.81  2.13  2.13  0\n\
             # Out of bounds values : 1 FAILED\n"
        );
        let j = judge_nccl(&text, None).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reasons[0].contains("#wrong = 1000000 at 1 MiB"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn missing_footer_is_unknown() {
        let text = format!(
            "{NEW_HEADER} 1048576  262144  float  sum  -1  477.32  2.20  2.20  0  492.81  2.13  2.13  0\n"
        );
        let j = judge_nccl(&text, None).unwrap();
        assert_eq!(j.verdict, Verdict::Unknown);
        assert!(j.reasons[0].contains("footer"));
    }

    #[test]
    fn header_alone_is_a_parse_error() {
        let text = "# nThread 1 nGpus 8 minBytes 8 maxBytes 134217728\n#\n# Using devices\n";
        assert!(judge_nccl(text, None).is_err());
    }

    #[test]
    fn metrics_serialize_with_the_keys_they_always_had() {
        let text = include_str!(
            "../../tests/fixtures/judge/nccl-tests/all_gather_perf_1node_8xV100_oldformat_oob-2-FAILED_hash-stripped_issue37.txt"
        );
        let j = judge_nccl(text, Some(100.0)).unwrap();
        let json = serde_json::to_value(&j).unwrap();
        let keys = json_keys(&json["metrics"]);
        assert_eq!(
            keys,
            [
                "avg_busbw_reported",
                "busbw_at_largest",
                "busbw_floor",
                "crash_lines",
                "crash_lines_omitted",
                "gpu_models",
                "gpus",
                "hosts",
                "largest_size",
                "nccl_tests_version",
                "nccl_version",
                "out_of_bounds",
                "rows",
                "rows_omitted",
                "test",
                "validation",
                "warnings",
            ]
        );
        let row = &json["metrics"]["rows"][0];
        let row_keys = json_keys(row);
        assert_eq!(
            row_keys,
            [
                "busbw_in_place",
                "busbw_out_of_place",
                "error_in_place",
                "error_out_of_place",
                "size",
                "wrong_in_place",
                "wrong_out_of_place",
            ]
        );
        // The old format fills `error_*` and leaves `wrong_*` null.
        assert!(row["error_out_of_place"].is_number());
        assert!(row["wrong_out_of_place"].is_null());
        assert_eq!(json["metrics"]["busbw_floor"], 100.0);
        assert_eq!(
            json["metrics"]["out_of_bounds"],
            serde_json::json!({"count": 2, "ok": false})
        );
        assert_eq!(j.clone().into_json().metrics, json["metrics"]);
        // Stored metrics read back into the type unchanged.
        let back: NcclMetrics = serde_json::from_value(json["metrics"].clone()).unwrap();
        assert_eq!(back, j.metrics);
    }
}
