//! Judge for NVIDIA/nvbandwidth output: per test, `Running <test>.`, a
//! matrix of GB/s (`N/A` on the diagonal) and `SUM <test> <total>`.

use serde::{Deserialize, Serialize};

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "nvbandwidth";

/// Per-test floors in GB/s, by the test name's prefix; `None` = no floor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NvbandwidthFloors {
    /// `host_to_device_*`, per GPU.
    pub h2d_gbps: Option<f64>,
    /// `device_to_host_*`, per GPU.
    pub d2h_gbps: Option<f64>,
    /// `device_to_device_memcpy_read_*`, per pair.
    pub d2d_read_gbps: Option<f64>,
}

impl NvbandwidthFloors {
    /// The floor of `test`. The floors are one-way numbers: a
    /// bidirectional test's per-direction figure is lower by nature (a
    /// healthy H200 moves 51-55 GB/s one way, 42-51 GB/s each way at once).
    fn for_test(&self, test: &str) -> Option<f64> {
        if test.contains("bidirectional") {
            None
        } else if test.starts_with("host_to_device") {
            self.h2d_gbps
        } else if test.starts_with("device_to_host") {
            self.d2h_gbps
        } else if test.starts_with("device_to_device_memcpy_read") {
            self.d2d_read_gbps
        } else {
            None
        }
    }

    /// Each floor that is set, with the test-name prefix it applies to.
    fn required(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.h2d_gbps, "host_to_device_memcpy"),
            (self.d2h_gbps, "device_to_host_memcpy"),
            (self.d2d_read_gbps, "device_to_device_memcpy_read"),
        ]
        .into_iter()
        .filter_map(|(floor, prefix)| floor.map(|_| prefix))
    }
}

/// The metrics of [`judge_nvbandwidth`], keyed as the JSON has always been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvbandwidthMetrics {
    /// The `Device N: ...` lines, as printed.
    pub devices: Vec<String>,
    /// One entry per test run, in output order.
    pub tests: Vec<NvbandwidthTest>,
}

/// One test in [`NvbandwidthMetrics`], alphabetical like the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvbandwidthTest {
    /// Measured cells (`N/A` left out).
    pub cells: usize,
    /// The floor judged against, GB/s, if any.
    pub floor: Option<f64>,
    /// The fastest cell, GB/s (0 with no cells).
    pub max: f64,
    /// The slowest cell, GB/s; `None` with no cells.
    pub min: Option<f64>,
    /// The `SUM` line's total, GB/s.
    pub sum: Option<f64>,
    /// The test's name, e.g. `device_to_device_memcpy_read_ce`.
    pub test: String,
}

#[derive(Debug, Default)]
struct Test {
    name: String,
    /// (row, column, GB/s); `N/A` cells are left out.
    cells: Vec<(String, String, f64)>,
    sum: Option<f64>,
    /// What the rows and columns are: `GPU(row) -> GPU(column)` etc.
    axes: String,
    errors: Vec<String>,
}

/// What [`parse`] read: the tests run, the `Device N:` lines, and how many
/// tests nvbandwidth waived.
struct Parsed {
    tests: Vec<Test>,
    devices: Vec<String>,
    waived: usize,
}

fn parse(text: &str) -> Parsed {
    let mut tests: Vec<Test> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut devices = Vec::new();
    let mut waived = 0;
    for line in split_lines(text) {
        let t = line.trim();
        // A test this machine cannot run (one GPU, no peer access) prints
        // `Waived:` instead of `Running <test>.`, without its name: not the
        // previous test's error.
        if t.starts_with("Waived") {
            waived += 1;
            continue;
        }
        if let Some(name) = t.strip_prefix("Running ") {
            tests.push(Test {
                name: name.trim_end_matches('.').trim().to_owned(),
                ..Test::default()
            });
            columns.clear();
            continue;
        }
        if t.starts_with("Device ") && t.contains(':') {
            devices.push(t.to_owned());
            continue;
        }
        let Some(test) = tests.last_mut() else {
            continue;
        };
        if let Some(rest) = t.strip_prefix("SUM ") {
            test.sum = rest.split_whitespace().last().and_then(|v| v.parse().ok());
        } else if t.contains("bandwidth (GB/s)") {
            test.axes = t.to_owned();
        } else if t.contains("ERROR") || t.contains("error") {
            test.errors.push(t.to_owned());
        } else {
            let tokens: Vec<&str> = t.split_whitespace().collect();
            if !tokens.is_empty() && tokens.iter().all(|x| x.parse::<u32>().is_ok()) {
                columns = tokens.iter().map(|s| (*s).to_owned()).collect();
            } else if tokens.len() == columns.len() + 1 && tokens[0].parse::<u32>().is_ok() {
                for (col, cell) in columns.iter().zip(&tokens[1..]) {
                    if let Ok(v) = cell.parse::<f64>() {
                        test.cells.push((tokens[0].to_owned(), col.clone(), v));
                    }
                }
            }
        }
    }
    Parsed {
        tests,
        devices,
        waived,
    }
}

/// Judges nvbandwidth output.
///
/// Integrity: a test with error lines, or a test that printed no
/// matrix, or a 0 GB/s cell (a pair that moved no data), fails or is
/// `Unknown` as noted below. With floors (the nvbandwidth README defines
/// each test's direction; `host_to_device`, `device_to_host`,
/// `device_to_device_memcpy_read`), every measured cell below its test's
/// floor fails, naming the pair; bidirectional tests have no floor. A
/// floor whose test nvbandwidth waived (`Waived:`) fails as not measured.
///
/// Metrics: `devices`, `tests` (`test`, `sum`, `min`, `max`, `cells`).
pub fn judge_nvbandwidth(
    text: &str,
    floors: &NvbandwidthFloors,
) -> Result<Judgement<NvbandwidthMetrics>, ParseError> {
    let Parsed {
        tests,
        devices,
        waived,
    } = parse(text);
    if tests.is_empty() && waived == 0 {
        return Err(ParseError {
            expected: "nvbandwidth output: 'Running <test>.' followed by a bandwidth matrix"
                .to_owned(),
        });
    }
    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    let mut out = Vec::new();
    for t in &tests {
        for e in &t.errors {
            failures.push(format!("{}: {e}", t.name));
        }
        if t.cells.is_empty() && t.errors.is_empty() {
            inconclusive.push(format!(
                "{}: no bandwidth matrix: the output stops early",
                t.name
            ));
        }
        // `CPU(row) -> GPU(column)`, `CPU(row) <- GPU(column)` (data moves
        // from the column to the row) or `<->` (both ways).
        let arrow = ["<->", "<-", "->"]
            .into_iter()
            .find(|a| t.axes.contains(a))
            .unwrap_or("->");
        let (rows, cols) = t
            .axes
            .split_once(arrow)
            .map(|(r, c)| {
                (
                    r.split_whitespace()
                        .last()
                        .unwrap_or("")
                        .replace("(row)", ""),
                    c.split_whitespace()
                        .next()
                        .unwrap_or("")
                        .replace("(column)", ""),
                )
            })
            .unwrap_or_else(|| ("row".to_owned(), "column".to_owned()));
        let pair = |r: &str, c: &str| match arrow {
            "<-" => format!("{cols} {c} -> {rows} {r}"),
            _ => format!("{rows} {r} {arrow} {cols} {c}"),
        };
        for (r, c, v) in &t.cells {
            if *v <= 0.0 {
                failures.push(format!("{}: {} moved no data (0 GB/s)", t.name, pair(r, c)));
            }
        }
        if let Some(floor) = floors.for_test(&t.name) {
            let low: Vec<String> = t
                .cells
                .iter()
                .filter(|(_, _, v)| *v > 0.0 && *v < floor)
                .map(|(r, c, v)| format!("{} {v:.1}", pair(r, c)))
                .collect();
            if !low.is_empty() {
                failures.push(format!(
                    "{}: {} of {} below the {floor} GB/s floor: {}",
                    t.name,
                    low.len(),
                    t.cells.len(),
                    low.join(", ")
                ));
            }
        }
        let min = t.cells.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
        let max = t.cells.iter().map(|c| c.2).fold(0.0_f64, f64::max);
        out.push(NvbandwidthTest {
            cells: t.cells.len(),
            floor: floors.for_test(&t.name),
            max,
            min: min.is_finite().then_some(min),
            sum: t.sum,
            test: t.name.clone(),
        });
    }
    // A floor whose test nvbandwidth waived was not met: on a multi-GPU
    // node a waived device-to-device test means no peer access.
    if waived > 0 {
        for prefix in floors.required() {
            let measured = out
                .iter()
                .any(|t| t.test.starts_with(prefix) && t.floor.is_some() && t.cells > 0);
            if !measured {
                failures.push(format!(
                    "{prefix}_*: not measured: nvbandwidth waived {waived} test(s) it cannot run \
                     here (device-to-device needs two GPUs with peer access)"
                ));
            }
        }
    }
    let metrics = NvbandwidthMetrics {
        devices,
        tests: out,
    };
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::json_keys;

    #[test]
    fn metrics_serialize_with_the_keys_they_always_had() {
        let text = include_str!(
            "../../tests/fixtures/judge/nvbandwidth/nvbandwidth-v0.4_d2d-read-ce_8xH100_570.133.20_azure-ndv5.txt"
        );
        let j = judge_nvbandwidth(text, &NvbandwidthFloors::default()).unwrap();
        let json = serde_json::to_value(&j).unwrap();
        let keys = json_keys(&json["metrics"]);
        assert_eq!(keys, ["devices", "tests"]);
        let test = &json["metrics"]["tests"][0];
        let test_keys = json_keys(test);
        assert_eq!(test_keys, ["cells", "floor", "max", "min", "sum", "test"]);
        assert_eq!(test["sum"], 20785.58);
        assert_eq!(test["cells"], 56);
        assert!(test["floor"].is_null());
        assert_eq!(j.clone().into_json().metrics, json["metrics"]);
        let back: NvbandwidthMetrics = serde_json::from_value(json["metrics"].clone()).unwrap();
        assert_eq!(back, j.metrics);
    }
}
