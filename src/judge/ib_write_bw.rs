//! Judge for perftest's `ib_write_bw` (linux-rdma/perftest): the result
//! table `#bytes #iterations BW peak[...] BW average[...] MsgRate[Mpps]`,
//! in MB/sec or, with `--report_gbits`, Gb/sec.

use serde_json::json;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "ib-write-bw";

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
/// Metrics: `device`, `link_type`, `qps`, `results` (`bytes`, `iterations`,
/// `bw_peak_gbps`, `bw_avg_gbps`, `unit`), `floor_gbps`.
pub fn judge_ib_write_bw(text: &str, min_gbps: Option<f64>) -> Result<Judgement, ParseError> {
    let mut headers = 0;
    let mut unit_gbits = false;
    let mut tables: Vec<Vec<(u64, u64, f64, f64)>> = Vec::new();
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
                table.push((b, it, peak * f, avg * f));
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
    let rows: Vec<&(u64, u64, f64, f64)> = tables.iter().flatten().collect();
    if rows.is_empty() && failures.is_empty() {
        inconclusive.push("no result row: the run did not complete".to_owned());
    }
    let port = device.clone().unwrap_or_else(|| "the port".to_owned());
    if let Some(floor) = min_gbps {
        for table in &tables {
            if let Some((bytes, _, _, avg)) = table.iter().max_by_key(|r| r.0)
                && *avg < floor
            {
                failures.push(format!(
                    "{port}: BW average {avg:.1} Gb/s < {floor} Gb/s floor at {bytes} bytes: \
                     check the link rate (ibstat), cabling and PCIe placement"
                ));
            }
        }
    }
    let results: Vec<_> = rows
        .iter()
        .map(|(b, it, p, a)| json!({"bytes": b, "iterations": it, "bw_peak_gbps": p, "bw_avg_gbps": a}))
        .collect();
    let metrics = json!({
        "device": device,
        "link_type": link_type,
        "qps": qps,
        "results": results,
        "unit": if unit_gbits { "Gb/sec" } else { "MB/sec" },
        "floor_gbps": min_gbps,
    });
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}
