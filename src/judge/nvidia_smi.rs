//! Judge for `nvidia-smi -q`, `nvidia-smi -q -x` (XML, DTD v12/v13) and
//! `nvidia-smi --query-gpu=... --format=csv` (with its header).
//!
//! All three are read into one shape: per GPU, a list of (path, value) with
//! path segments lower-cased and joined by `/` (`ecc_errors/volatile/
//! dram_uncorrectable`, `remapped_rows/pending`, `pcie/link/gen/max`), so the
//! rules below are written once. Field meanings are from the nvidia-smi man
//! page (`man nvidia-smi`, sections "ECC Errors", "Retired Pages",
//! "Remapped Rows", "Clocks Event Reasons", "PCI").

use serde_json::json;

use super::xml::{self, Event};
use super::{Judgement, ParseError, split_lines};

const KIND: &str = "nvidia-smi";

/// What the caller expects of the node. The default judges integrity only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NvidiaSmiLimits {
    /// GPUs the node must show.
    pub gpu_count: Option<u32>,
    /// The model every GPU must report, exactly as `nvidia-smi` names it.
    pub model: Option<String>,
    /// Expected PCIe generation (else each GPU's reported maximum).
    pub pcie_gen: Option<u32>,
    /// Expected PCIe width, lanes (else each GPU's reported maximum).
    pub pcie_width: Option<u32>,
    /// The output was captured while the GPUs were busy. Idle GPUs lower
    /// their PCIe generation to save power (man page: "the current link
    /// generation ... may be reduced when the GPU is not in use"), so a link
    /// below its maximum only fails a node under load; otherwise it is a
    /// warning. The caller knows when it captured; the output does not say.
    pub under_load: bool,
    /// GPU temperature that fails the node, °C (the profile's burn-in
    /// limit); only meaningful for a capture taken under load.
    pub max_temp_c: Option<u32>,
}

/// One GPU's fields.
#[derive(Debug, Default)]
struct Gpu {
    bus_id: Option<String>,
    fields: Vec<(String, String)>,
}

impl Gpu {
    fn get(&self, pred: impl Fn(&str) -> bool) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| pred(p))
            .map(|(_, v)| v.as_str())
    }

    fn name(&self) -> Option<&str> {
        self.get(|p| p == "product_name" || p == "name")
    }

    fn serial(&self) -> Option<&str> {
        self.get(|p| p == "serial_number" || p == "serial")
            .filter(|s| !is_na(s) && s.chars().any(|c| c != '0'))
    }
}

#[derive(Debug, Default)]
struct Parsed {
    format: &'static str,
    attached: Option<u32>,
    driver: Option<String>,
    gpus: Vec<Gpu>,
}

/// `00000000:53:00.0`: hex groups joined by `:` and `.`.
fn is_bus_id(s: &str) -> bool {
    s.contains(':')
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
}

fn is_na(v: &str) -> bool {
    v.is_empty() || v.contains("N/A") || v.contains("Not Supported")
}

/// `Remapping Failure Occurred` -> `remapping_failure_occurred`.
fn segment(s: &str) -> String {
    let s: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    s.split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// `nvidia-smi -q`: `GPU 00000000:53:00.0` then indented `Key : Value`
/// lines and value-less section headings.
fn parse_text(text: &str) -> Option<Parsed> {
    let mut p = Parsed {
        format: "q",
        ..Parsed::default()
    };
    let mut seen = false;
    let mut stack: Vec<(usize, String)> = Vec::new();
    for line in split_lines(text) {
        if line.contains("NVSMI LOG") {
            seen = true;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let (key, value) = match line.split_once(" : ").or_else(|| {
            // `Key :` with an empty value.
            line.trim_end().strip_suffix(" :").map(|k| (k, ""))
        }) {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line.trim(), None),
        };
        if indent == 0 {
            stack.clear();
            let bus = key
                .strip_prefix("GPU ")
                .filter(|b| value.is_none() && is_bus_id(b));
            if let Some(bus) = bus {
                p.gpus.push(Gpu {
                    bus_id: Some(bus.trim().to_owned()),
                    fields: Vec::new(),
                });
                continue;
            }
            match (key, value) {
                ("Attached GPUs", Some(v)) => p.attached = v.parse().ok(),
                ("Driver Version", Some(v)) => p.driver = Some(v.to_owned()),
                _ => {}
            }
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let Some(gpu) = p.gpus.last_mut() else {
            continue;
        };
        match value {
            Some(v) => {
                let mut path: Vec<&str> = stack.iter().map(|(_, s)| s.as_str()).collect();
                let leaf = segment(key);
                path.push(&leaf);
                gpu.fields.push((path.join("/"), v.to_owned()));
            }
            None => stack.push((indent, segment(key))),
        }
    }
    (seen || p.attached.is_some() || !p.gpus.is_empty()).then_some(p)
}

/// `nvidia-smi -q -x`: one `<gpu id="...">` per GPU under `<nvidia_smi_log>`.
fn parse_xml(text: &str) -> Option<Parsed> {
    if !text.contains("<nvidia_smi_log") {
        return None;
    }
    let mut p = Parsed {
        format: "xml",
        ..Parsed::default()
    };
    for event in xml::events(text) {
        match event {
            Event::Open { name, attrs, depth } if name == "gpu" && depth == 1 => {
                p.gpus.push(Gpu {
                    bus_id: xml::attr(&attrs, "id").map(str::to_owned),
                    fields: Vec::new(),
                });
            }
            Event::Open { .. } => {}
            Event::Leaf(leaf) => match leaf.segment(1) {
                Some("attached_gpus") => p.attached = leaf.text.parse().ok(),
                Some("driver_version") => p.driver = Some(leaf.text),
                Some("gpu") => {
                    if let Some(gpu) = p.gpus.last_mut() {
                        let path = leaf.path_from(2).to_owned();
                        gpu.fields.push((path, leaf.text));
                    }
                }
                _ => {}
            },
        }
    }
    Some(p)
}

/// The default `nvidia-smi` table: per GPU a row `| IDX NAME PERSIST | BUS
/// DISP | ECC |` and a row `| FAN TEMP PERF PWR/CAP | MEM | UTIL MODE |`.
/// Only what the table shows is read: name, bus id, volatile uncorrectable
/// ECC, temperature, power, and `ERR!` cells.
fn parse_table(text: &str) -> Option<Parsed> {
    if !text.contains("NVIDIA-SMI") || !text.contains("Driver Version") {
        return None;
    }
    let mut p = Parsed {
        format: "table",
        ..Parsed::default()
    };
    let mut in_gpus = false;
    let mut second_row = false;
    for line in split_lines(text) {
        let t = line.trim();
        if let Some((_, rest)) = t.split_once("Driver Version:") {
            p.driver = rest.split_whitespace().next().map(str::to_owned);
            continue;
        }
        if t.starts_with("|=") {
            // The first `|===` line opens the GPU rows; the Processes
            // table has its own.
            in_gpus = p.gpus.is_empty() && !in_gpus;
            continue;
        }
        if t.starts_with("+-") && t.ends_with('+') && !p.gpus.is_empty() {
            second_row = false;
            continue;
        }
        if t.is_empty() || t.starts_with("| Processes") {
            if !p.gpus.is_empty() {
                in_gpus = false;
            }
            continue;
        }
        if !in_gpus || !t.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let first: Vec<&str> = cells[0].split_whitespace().collect();
        let index = first.first().and_then(|i| i.parse::<u32>().ok());
        let bus = cells[1].split_whitespace().next().filter(|b| is_bus_id(b));
        match (index, bus) {
            (Some(index), Some(bus)) if first.len() >= 2 => {
                let name = first[1..first.len() - 1].join(" ");
                let mut fields = vec![
                    ("index".to_owned(), index.to_string()),
                    ("name".to_owned(), name),
                    (
                        "persistence_mode".to_owned(),
                        first[first.len() - 1].to_owned(),
                    ),
                    (
                        "ecc_errors/volatile/uncorrectable".to_owned(),
                        cells[2].to_owned(),
                    ),
                ];
                if cells.iter().any(|c| c.contains("ERR!")) {
                    fields.push(("table_error".to_owned(), "ERR!".to_owned()));
                }
                p.gpus.push(Gpu {
                    bus_id: Some(bus.to_owned()),
                    fields,
                });
                second_row = true;
            }
            _ if second_row => {
                let Some(gpu) = p.gpus.last_mut() else {
                    continue;
                };
                let words: Vec<&str> = cells[0].split_whitespace().collect();
                if let Some(temp) = words
                    .iter()
                    .find(|w| w.ends_with('C') && w[..w.len() - 1].parse::<u32>().is_ok())
                {
                    gpu.fields.push((
                        "temperature/gpu_current_temp".to_owned(),
                        format!("{} C", &temp[..temp.len() - 1]),
                    ));
                }
                if let Some(power) = words.iter().find(|w| w.ends_with('W')) {
                    gpu.fields
                        .push(("power_readings/power_draw".to_owned(), (*power).to_owned()));
                }
                if cells.iter().any(|c| c.contains("ERR!")) {
                    gpu.fields
                        .push(("table_error".to_owned(), "ERR!".to_owned()));
                }
                second_row = false;
            }
            _ => {}
        }
    }
    Some(p)
}

/// `--query-gpu=... --format=csv`: a header of field names (with ` [unit]`
/// suffixes) and one row per GPU.
fn parse_csv(text: &str) -> Option<Parsed> {
    let mut lines = split_lines(text).filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()?
        .split(',')
        .map(|h| {
            let h = h.trim();
            let h = h.split(" [").next().unwrap_or(h);
            h.split('.').map(segment).collect::<Vec<_>>().join("/")
        })
        .collect();
    if header.len() < 2
        || !header
            .iter()
            .any(|h| h == "name" || h == "index" || h == "pci/bus_id" || h == "uuid")
    {
        return None;
    }
    let mut p = Parsed {
        format: "csv",
        ..Parsed::default()
    };
    for line in lines {
        let values: Vec<&str> = line.split(',').map(str::trim).collect();
        if values.len() != header.len() {
            continue;
        }
        let fields: Vec<(String, String)> = header
            .iter()
            .cloned()
            .zip(values.iter().map(|v| (*v).to_owned()))
            .collect();
        let bus_id = fields
            .iter()
            .find(|(h, _)| h == "pci/bus_id")
            .map(|(_, v)| v.clone());
        if p.driver.is_none() {
            p.driver = fields
                .iter()
                .find(|(h, _)| h == "driver_version")
                .map(|(_, v)| v.clone());
        }
        if let Some((_, count)) = fields.iter().find(|(h, _)| h == "count") {
            p.attached = count.parse().ok();
        }
        p.gpus.push(Gpu { bus_id, fields });
    }
    (!p.gpus.is_empty()).then_some(p)
}

fn leaf(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_yes(v: &str) -> bool {
    v.eq_ignore_ascii_case("yes")
}

/// The largest uncorrectable ECC count of one kind (`volatile`:
/// since the driver loaded; `aggregate`: lifetime), over every counter
/// nvidia-smi prints (DRAM, SRAM, totals; `Double Bit` before Ampere).
fn uncorrectable(gpu: &Gpu, kind: &str) -> u64 {
    gpu.fields
        .iter()
        .filter(|(p, _)| {
            p.contains("ecc")
                && (p.contains("uncorrect") || p.contains("double_bit"))
                && p.split('/').any(|s| s.starts_with(kind))
        })
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// `5`, `16x` -> number.
fn number(v: &str) -> Option<u32> {
    v.trim().trim_end_matches('x').parse().ok()
}

/// Judges nvidia-smi output (`-q`, `-q -x`, `--query-gpu` CSV or the
/// default table).
///
/// Integrity (man page, nvidia-smi(1)): uncorrectable ECC errors, volatile
/// or aggregate, above 0; a row remapping pending (needs a GPU reset) or a
/// remapping failure (the GPU should be replaced, per NVIDIA's "GPU Memory
/// Error Management" guide); retired pages pending; a pending channel/TPC
/// repair; a reset required; HW slowdown, HW thermal, HW power-brake or SW
/// thermal slowdown active. A file that lists fewer GPUs than it says are
/// attached is `Unknown` (a trimmed capture).
///
/// With `limits`: the GPU count and model, and each GPU's PCIe generation
/// and width (see [`NvidiaSmiLimits::under_load`]).
///
/// Metrics: `format` (`q`, `xml`, `csv`, `table`), `driver`, `attached`, `gpus`,
/// `per_gpu` (`gpu`, `bus_id`, `serial`, `name`, `ecc_uncorrectable_volatile`,
/// `ecc_uncorrectable_aggregate`, `pcie_gen`, `pcie_width`), `warnings`.
pub fn judge_nvidia_smi(text: &str, limits: &NvidiaSmiLimits) -> Result<Judgement, ParseError> {
    let p = parse_xml(text)
        .or_else(|| parse_table(text))
        .or_else(|| parse_text(text))
        .or_else(|| parse_csv(text))
        .filter(|p| !p.gpus.is_empty() || p.attached.is_some())
        .ok_or_else(|| ParseError {
            expected: "nvidia-smi output: 'nvidia-smi -q' (the NVSMI LOG with 'GPU <bus id>' \
                       sections), 'nvidia-smi -q -x' (<nvidia_smi_log>) or '--query-gpu=... \
                       --format=csv' with its header line"
                .to_owned(),
        })?;

    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    let mut warnings = Vec::new();
    let mut per_gpu = Vec::new();

    for (i, gpu) in p.gpus.iter().enumerate() {
        let index = gpu
            .get(|p| p == "index")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(i);
        let mut who = format!("GPU {index}");
        let ids: Vec<String> = gpu
            .bus_id
            .iter()
            .cloned()
            .chain(gpu.serial().map(|s| format!("serial {s}")))
            .collect();
        if !ids.is_empty() {
            who.push_str(&format!(" ({})", ids.join(", ")));
        }
        // An element with nothing in it (or only nesting, as a hostile
        // capture may send) proves nothing about the GPU: not a pass.
        if gpu.fields.is_empty() {
            inconclusive.push(format!("{who}: the capture has no readings for it"));
            continue;
        }

        // ECC: an uncorrectable error means data was lost (man page,
        // "ECC Errors"); on a new node any is a failure.
        let volatile = uncorrectable(gpu, "volatile");
        let aggregate = uncorrectable(gpu, "aggregate");
        if volatile > 0 {
            failures.push(format!(
                "{who}: {volatile} uncorrectable ECC errors (volatile)"
            ));
        } else if aggregate > 0 {
            failures.push(format!(
                "{who}: {aggregate} uncorrectable ECC errors (aggregate, lifetime)"
            ));
        }
        // Row remapping: "Pending: Yes" needs a GPU reset; a failure means
        // the GPU has run out of spare rows (NVIDIA "GPU Memory Error
        // Management", row remapping; man page "Remapped Rows").
        if gpu
            .fields
            .iter()
            .any(|(p, v)| p.contains("remap") && leaf(p).contains("pending") && is_yes(v))
        {
            failures.push(format!(
                "{who}: row remapping pending: reset the GPU, then check again"
            ));
        }
        if gpu
            .fields
            .iter()
            .any(|(p, v)| p.contains("remap") && leaf(p).contains("fail") && is_yes(v))
        {
            failures.push(format!(
                "{who}: row remapping failed: the GPU needs replacing (RMA)"
            ));
        }
        // Page retirement (pre-Ampere): pending retirements take effect on
        // the next driver reload (man page, "Retired Pages").
        if gpu
            .fields
            .iter()
            .any(|(p, v)| p.contains("retire") && leaf(p).contains("pending") && is_yes(v))
        {
            failures.push(format!(
                "{who}: retired pages pending: reload the driver or reboot, then check again"
            ));
        }
        if let Some((p, _)) = gpu
            .fields
            .iter()
            .find(|(p, v)| leaf(p).ends_with("repair_pending") && is_yes(v))
        {
            failures.push(format!(
                "{who}: {} is Yes: reset the GPU, then check again",
                leaf(p)
            ));
        }
        // The table prints ERR! where NVML could not read a value (nvidia-smi
        // man page: a field it cannot query is shown as an error, not 0);
        // on a new node that is a GPU in trouble (NVIDIA "GPU Debug
        // Guidelines": check dmesg for an Xid and run nvidia-bug-report).
        if gpu.fields.iter().any(|(p, _)| p == "table_error") {
            failures.push(format!(
                "{who}: nvidia-smi shows ERR!: check dmesg for Xid errors"
            ));
        }
        if gpu
            .fields
            .iter()
            .any(|(p, v)| leaf(p) == "reset_required" && is_yes(v))
        {
            failures.push(format!("{who}: nvidia-smi says a GPU reset is required"));
        }
        // Clocks event (throttle) reasons: HW slowdown is driven by the
        // board (power brake, overheating); thermal slowdowns mean cooling is
        // not keeping up (man page, "Clocks Event Reasons").
        let slow: Vec<&str> = gpu
            .fields
            .iter()
            .filter(|(p, v)| {
                (p.contains("event_reason") || p.contains("throttle_reason"))
                    && !p.contains("counter")
                    && v == "Active"
                    && [
                        "hw_slowdown",
                        "hw_thermal_slowdown",
                        "hw_power_brake_slowdown",
                        "sw_thermal_slowdown",
                    ]
                    .iter()
                    .any(|r| leaf(p).ends_with(r))
            })
            .map(|(p, _)| leaf(p))
            .collect();
        if !slow.is_empty() {
            failures.push(format!(
                "{who}: clocks slowed down ({}): check cooling and power",
                slow.join(", ")
            ));
        }

        let temp = gpu
            .fields
            .iter()
            .find(|(p, _)| {
                p.starts_with("temperature/")
                    && ["gpu_current_temp", "gpu_temp", "gpu"].contains(&leaf(p))
            })
            .and_then(|(_, v)| v.split_whitespace().next()?.parse::<f64>().ok());
        // Above the profile's limit the GPU is at or near its slowdown
        // temperature (nvidia-smi -q "GPU Max Operating Temp"): cooling or
        // airflow is not keeping up.
        if let (Some(max), Some(t)) = (limits.max_temp_c, temp)
            && t > f64::from(max)
        {
            failures.push(format!(
                "{who}: {t} C, above the {max} C limit: check cooling and airflow"
            ));
        }
        let name = gpu.name();
        if let (Some(want), Some(got)) = (&limits.model, name)
            && want != got
        {
            failures.push(format!("{who}: model '{got}', expected '{want}'"));
        }

        // PCIe: current generation and width against the expected ones.
        let pcie = |link: &str, which: &[&str]| -> Option<u32> {
            gpu.fields
                .iter()
                .find(|(p, _)| {
                    let pl = p.replace("link_widths", "link_width");
                    pl.contains(link) && which.contains(&leaf(p))
                })
                .and_then(|(_, v)| number(v))
        };
        let gen_now = pcie("gen", &["current", "current_link_gen"]);
        let gen_max = pcie("gen", &["max", "max_link_gen"]);
        let width_now = pcie("width", &["current", "current_link_width"]);
        let width_max = pcie("width", &["max", "max_link_width"]);
        let gen_want = limits.pcie_gen.or(gen_max);
        let width_want = limits.pcie_width.or(width_max);
        let below = match (gen_now, gen_want, width_now, width_want) {
            (Some(g), Some(gw), Some(w), Some(ww)) if g < gw || w < ww => {
                Some(format!("Gen {g} x{w}, expected Gen {gw} x{ww}"))
            }
            (Some(g), Some(gw), _, _) if g < gw => Some(format!("Gen {g}, expected Gen {gw}")),
            (_, _, Some(w), Some(ww)) if w < ww => Some(format!("x{w}, expected x{ww}")),
            _ => None,
        };
        if let Some(below) = below {
            if limits.under_load {
                failures.push(format!(
                    "{who}: PCIe link at {below} under load: reseat or check the riser/slot"
                ));
            } else {
                warnings.push(format!(
                    "{who}: PCIe link at {below} (normal when idle; judge under load)"
                ));
            }
        }

        per_gpu.push(json!({
            "gpu": index,
            "bus_id": gpu.bus_id,
            "serial": gpu.serial(),
            "name": name,
            "ecc_uncorrectable_volatile": volatile,
            "ecc_uncorrectable_aggregate": aggregate,
            "pcie_gen": gen_now,
            "pcie_width": width_now,
            "temp_c": temp,
        }));
    }

    let listed = p.gpus.len();
    if let Some(want) = limits.gpu_count
        && listed != want as usize
    {
        failures.push(format!(
            "nvidia-smi shows {listed} GPUs, expected {want}: check seating, power and \
             'lspci -d 10de:' for a GPU the driver did not bind"
        ));
    }
    if let Some(attached) = p.attached
        && attached as usize != listed
    {
        inconclusive.push(format!(
            "nvidia-smi says {attached} GPUs are attached but the output lists {listed}: a trimmed capture?"
        ));
    }

    let metrics = json!({
        "format": p.format,
        "driver": p.driver,
        "attached": p.attached,
        "gpus": listed,
        "per_gpu": per_gpu,
        "warnings": warnings,
    });
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    const Q: &str = "==============NVSMI LOG==============\n\nAttached GPUs : 1\n\
        GPU 00000000:9A:00.0\n    Product Name : NVIDIA H100 80GB HBM3\n    Serial Number : 1650\n\
        \x20   ECC Errors\n        Volatile\n            DRAM Uncorrectable : 12\n\
        \x20       Aggregate\n            DRAM Uncorrectable : 12\n    Remapped Rows\n\
        \x20       Pending : Yes\n    Clocks Event Reasons\n        HW Slowdown : Active\n\
        \x20           HW Thermal Slowdown : Not Active\n";

    #[test]
    fn text_failures_name_the_gpu() {
        let j = judge_nvidia_smi(Q, &NvidiaSmiLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(
            j.reasons[0],
            "GPU 0 (00000000:9A:00.0, serial 1650): 12 uncorrectable ECC errors (volatile)"
        );
        assert!(j.reasons[1].contains("row remapping pending"));
        assert!(j.reasons[2].contains("clocks slowed down (hw_slowdown)"));
    }

    #[test]
    fn csv_without_header_is_refused() {
        let err = judge_nvidia_smi(
            "NVIDIA H100 80GB HBM3, 00000000:9A:00.0, 0\n",
            &NvidiaSmiLimits::default(),
        )
        .unwrap_err();
        assert!(err.expected.contains("header"));
    }

    #[test]
    fn a_gpu_without_readings_is_not_a_pass() {
        let xml = format!(
            "<?xml version=\"1.0\" ?>\n<nvidia_smi_log>\n<attached_gpus>1</attached_gpus>{}{}</nvidia_smi_log>\n",
            "<gpu>".repeat(50),
            "</gpu>".repeat(50)
        );
        let j = judge_nvidia_smi(&xml, &NvidiaSmiLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Unknown, "{:?}", j.reasons);
        assert!(j.reasons[0].contains("no readings"), "{:?}", j.reasons);
    }
}
