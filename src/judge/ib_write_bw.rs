//! Judge for perftest's `ib_write_bw` (linux-rdma/perftest): the result
//! table `#bytes #iterations BW peak[...] BW average[...] MsgRate[Mpps]`,
//! in MB/sec or, with `--report_gbits`, Gb/sec.

use serde::{Deserialize, Serialize};

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "ib-write-bw";

/// The metrics of [`judge_ib_write_bw`], keyed (alphabetically) as the JSON
/// has always been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IbWriteBwMetrics {
    /// The HCA from the test header, e.g. `mlx5_0`.
    pub device: Option<String>,
    /// The per-port floor judged against, Gb/s, if any.
    pub floor_gbps: Option<f64>,
    /// The header's `Link type`: `IB` or `Ethernet`.
    pub link_type: Option<String>,
    /// The header's `Number of qps`.
    pub qps: Option<u32>,
    /// Every result row of every table (server and client), in output order.
    pub results: Vec<IbWriteBwRow>,
    /// The unit perftest printed: `MB/sec` or `Gb/sec` (rows are Gb/s either way).
    pub unit: String,
}

/// One result row of [`IbWriteBwMetrics`], in Gb/s whatever unit was printed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IbWriteBwRow {
    /// BW average, Gb/s.
    pub bw_avg_gbps: f64,
    /// BW peak, Gb/s.
    pub bw_peak_gbps: f64,
    /// Message size.
    pub bytes: u64,
    /// Iterations run at that size.
    pub iterations: u64,
}

/// perftest's MB/sec is 2^20 bytes per second (perftest_resources.c
/// `format_factor = 0x100000` for MB/s, 125000000 for Gb/s).
const MBPS_TO_GBPS: f64 = 1_048_576.0 * 8.0 / 1e9;

/// Lines perftest prints when a run breaks off (perftest sources: connection,
/// exchange and completion failures).
const FAILURE_MARKERS: &[&str] = &[
    "Couldn't",
    "Failed to",
    "Unable to",
    "Completion with error",
    "Problems with warm up",
    "error while",
    "Segmentation fault",
];

/// Judges ib_write_bw output against `min_gbps` (the per-port floor), if any.
///
/// Fails on a perftest failure line, and on a BW average below the floor at
/// the largest message size of each result table (one per side when server
/// and client were captured together). A test header with no result row is
/// `Unknown`: the run did not complete.
///
/// Metrics: [`IbWriteBwMetrics`].
pub fn judge_ib_write_bw(
    text: &str,
    min_gbps: Option<f64>,
) -> Result<Judgement<IbWriteBwMetrics>, ParseError> {
    let mut headers = 0;
    let mut unit_gbits = false;
    let mut tables: Vec<Vec<IbWriteBwRow>> = Vec::new();
    let mut device = None;
    let mut link_type = None;
    let mut qps = None;
    let mut broken = Vec::new();
    for line in split_lines(text) {
        let t = line.trim();
        if t.contains("RDMA_Write BW Test") {
            headers += 1;
        } else if t.starts_with("#bytes") && t.contains("BW average") {
            unit_gbits = t.contains("Gb/sec");
            tables.push(Vec::new());
        } else if FAILURE_MARKERS.iter().any(|m| t.contains(m)) {
            broken.push(t.to_owned());
        } else if t.starts_with("Dual-port")
            || t.starts_with("Number of qps")
            || t.starts_with("Link type")
        {
            for part in t.split('\t').filter(|p| p.contains(':')) {
                let (k, v) = part.split_once(':').unwrap_or(("", ""));
                match k.trim() {
                    "Device" => device = Some(v.trim().to_owned()),
                    "Number of qps" => qps = v.trim().parse::<u32>().ok(),
                    "Link type" => link_type = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        } else if let Some(table) = tables.last_mut() {
            let tok: Vec<&str> = t.split_whitespace().collect();
            if tok.len() >= 4
                && let (Ok(b), Ok(it), Ok(peak), Ok(avg)) = (
                    tok[0].parse::<u64>(),
                    tok[1].parse::<u64>(),
                    tok[2].parse::<f64>(),
                    tok[3].parse::<f64>(),
                )
            {
                let f = if unit_gbits { 1.0 } else { MBPS_TO_GBPS };
                table.push(IbWriteBwRow {
                    bw_avg_gbps: avg * f,
                    bw_peak_gbps: peak * f,
                    bytes: b,
                    iterations: it,
                });
            }
        }
    }
    if headers == 0 && tables.is_empty() {
        return Err(ParseError {
            expected: "ib_write_bw output: the 'RDMA_Write BW Test' header and its \
                       '#bytes #iterations BW peak BW average' table"
                .to_owned(),
        });
    }
    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    if let Some(first) = broken.first() {
        failures.push(format!("ib_write_bw failed: {first}"));
    }
    let results: Vec<IbWriteBwRow> = tables.iter().flatten().copied().collect();
    if results.is_empty() && failures.is_empty() {
        inconclusive.push("no result row: the run did not complete".to_owned());
    }
    let port = device.clone().unwrap_or_else(|| "the port".to_owned());
    if let Some(floor) = min_gbps {
        for table in &tables {
            if let Some(&IbWriteBwRow {
                bytes,
                bw_avg_gbps: avg,
                ..
            }) = table.iter().max_by_key(|r| r.bytes)
                && avg < floor
            {
                failures.push(format!(
                    "{port}: BW average {avg:.1} Gb/s < {floor} Gb/s floor at {bytes} bytes: \
                     check the link rate (ibstat), cabling and PCIe placement"
                ));
            }
        }
    }
    let metrics = IbWriteBwMetrics {
        device,
        floor_gbps: min_gbps,
        link_type,
        qps,
        results,
        unit: if unit_gbits { "Gb/sec" } else { "MB/sec" }.to_owned(),
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
            "../../tests/fixtures/judge/ib_write_bw/ib_write_bw_loopback_8MB_HDR_MBps.txt"
        );
        let j = judge_ib_write_bw(text, Some(100.0)).unwrap();
        let json = serde_json::to_value(&j).unwrap();
        let keys = json_keys(&json["metrics"]);
        assert_eq!(
            keys,
            [
                "device",
                "floor_gbps",
                "link_type",
                "qps",
                "results",
                "unit"
            ]
        );
        let row = &json["metrics"]["results"][0];
        let row_keys = json_keys(row);
        assert_eq!(
            row_keys,
            ["bw_avg_gbps", "bw_peak_gbps", "bytes", "iterations"]
        );
        assert_eq!(row["bytes"], 8_388_608);
        assert_eq!(json["metrics"]["unit"], "MB/sec");
        assert_eq!(json["metrics"]["floor_gbps"], 100.0);
        assert_eq!(j.clone().into_json().metrics, json["metrics"]);
        let back: IbWriteBwMetrics = serde_json::from_value(json["metrics"].clone()).unwrap();
        assert_eq!(back, j.metrics);
    }
}
