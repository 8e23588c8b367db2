//! Judge for `nvidia-smi -q`, `nvidia-smi -q -x` (XML, DTD v12/v13) and
//! `nvidia-smi --query-gpu=... --format=csv` (with its header).
//!
//! All three are read into one shape: per GPU, a list of (path, value) with
//! path segments lower-cased and joined by `/` (`ecc_errors/volatile/
//! dram_uncorrectable`, `remapped_rows/pending`, `pcie/link/gen/max`), so the
//! rules below are written once. Field meanings are from the nvidia-smi man
//! page (`man nvidia-smi`, sections "ECC Errors", "Retired Pages",
//! "Remapped Rows", "Clocks Event Reasons", "PCI").

use serde::Serialize;

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
    /// The caller ran a load on the GPUs while it captured. Idle GPUs lower
    /// their PCIe generation to save power (man page: "the current link
    /// generation ... may be reduced when the GPU is not in use"), so a link
    /// below its maximum only fails a node under load; otherwise it is a
    /// warning. A capture whose own readings show load (see [`LoadState`])
    /// counts as under load even when this is `false`.
    pub under_load: bool,
    /// The profile's GPU power limit, watts: what a GPU's power draw is
    /// measured against when the capture does not show its own limit.
    pub power_limit_w: Option<u32>,
    /// GPU temperature that fails the node, °C (the profile's burn-in
    /// limit); only meaningful for a capture taken under load.
    pub max_temp_c: Option<u32>,
}

/// A GPU at or above this share of its power limit, or this GPU
/// utilization, is under load, percent. Why 50: a GPU idles at a few
/// percent of its limit and 0 % utilization (the RTX PRO 6000 capture:
/// 4 W of 300 W), while a burn-in holds it near 100 % of both (the H200
/// capture: 625 W of 700 W, 100 %); half-way sits far from both, so a
/// sample taken as a load ramps up or down still reads right.
pub const LOAD_THRESHOLD_PCT: f64 = 50.0;

/// Whether a capture shows its GPUs busy, read from their utilization and
/// power draw (see [`LOAD_THRESHOLD_PCT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadState {
    /// At least one GPU shows load.
    UnderLoad,
    /// The GPUs show readings, none of them load.
    Idle,
    /// No GPU shows a utilization or power reading (e.g. a trimmed CSV).
    Unknown,
}

/// The metrics of [`judge_nvidia_smi`]. Fields are in alphabetical order,
/// the order the JSON has always had.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NvidiaSmiMetrics {
    /// GPUs the capture says are attached.
    pub attached: Option<u32>,
    /// The driver version.
    pub driver: Option<String>,
    /// `q`, `xml`, `csv` or `table`.
    pub format: &'static str,
    /// GPUs the capture lists.
    pub gpus: usize,
    /// Whether the capture shows the GPUs under load.
    pub load: LoadState,
    /// One entry per GPU with readings.
    pub per_gpu: Vec<GpuReadings>,
    /// Findings that do not fail the node (a PCIe link trained down at idle).
    pub warnings: Vec<String>,
}

/// One GPU's readings in [`NvidiaSmiMetrics`], alphabetical like the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReadings {
    /// PCI bus id, e.g. `00000000:53:00.0`.
    pub bus_id: Option<String>,
    /// Lifetime uncorrectable ECC errors.
    pub ecc_uncorrectable_aggregate: u64,
    /// Uncorrectable ECC errors since the driver loaded.
    pub ecc_uncorrectable_volatile: u64,
    /// The GPU's index.
    pub gpu: usize,
    /// The model, as nvidia-smi names it.
    pub name: Option<String>,
    /// Current PCIe generation.
    pub pcie_gen: Option<u32>,
    /// Current PCIe width, lanes.
    pub pcie_width: Option<u32>,
    /// Power draw, watts.
    pub power_draw_w: Option<f64>,
    /// The power limit the draw is measured against, watts: the capture's
    /// enforced (current) limit, else the profile's.
    pub power_limit_w: Option<f64>,
    /// Serial number (absent when nvidia-smi shows none or all zeros).
    pub serial: Option<String>,
    /// GPU temperature, °C.
    pub temp_c: Option<f64>,
    /// GPU utilization, percent.
    pub utilization_pct: Option<f64>,
}

impl GpuReadings {
    /// Whether this GPU's readings show load; `None` when it has neither a
    /// utilization nor a power reading to tell.
    pub fn under_load(&self) -> Option<bool> {
        let util = self.utilization_pct.map(|u| u >= LOAD_THRESHOLD_PCT);
        let power = match (self.power_draw_w, self.power_limit_w) {
            (Some(draw), Some(limit)) if limit > 0.0 => {
                Some(draw / limit * 100.0 >= LOAD_THRESHOLD_PCT)
            }
            _ => None,
        };
        match (util, power) {
            (None, None) => None,
            (u, p) => Some(u.unwrap_or(false) || p.unwrap_or(false)),
        }
    }
}

/// The capture's load state: under load when any GPU shows load.
fn load_state(per_gpu: &[GpuReadings]) -> LoadState {
    let mut state = LoadState::Unknown;
    for gpu in per_gpu {
        match gpu.under_load() {
            Some(true) => return LoadState::UnderLoad,
            Some(false) => state = LoadState::Idle,
            None => {}
        }
    }
    state
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

/// The first number of a reading: `625.24 W`, `100 %`, `100` -> number;
/// `N/A` -> `None`.
fn reading(v: &str) -> Option<f64> {
    v.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
}

/// Sections that hold the GPU's own power readings in each format (`-q`,
/// `-q -x` since DTD v12, older XML, CSV `power.*`); module and memory
/// readings are other sections.
const POWER_SECTIONS: [&str; 3] = ["gpu_power_readings", "power_readings", "power"];

/// The first reading of `gpu` in a power section whose leaf is one of
/// `leaves`, in the order of `leaves`.
fn power_reading(gpu: &Gpu, leaves: &[&str]) -> Option<f64> {
    leaves.iter().find_map(|want| {
        gpu.fields
            .iter()
            .filter(|(p, _)| {
                let mut segs = p.split('/');
                let section = segs.next().unwrap_or_default();
                POWER_SECTIONS.contains(&section) && p.matches('/').count() == 1
            })
            .filter(|(p, _)| leaf(p) == *want)
            .find_map(|(_, v)| reading(v))
    })
}

/// GPU utilization, percent: `utilization/gpu_util` (XML) or
/// `utilization/gpu` (`-q`, CSV `utilization.gpu`).
fn utilization(gpu: &Gpu) -> Option<f64> {
    gpu.fields
        .iter()
        .filter(|(p, _)| p == "utilization/gpu_util" || p == "utilization/gpu")
        .find_map(|(_, v)| reading(v))
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
/// A link below its maximum fails a capture that is under load (its
/// [`LoadState`], or [`NvidiaSmiLimits::under_load`]) and is a warning in
/// an idle one.
///
/// Metrics: [`NvidiaSmiMetrics`].
pub fn judge_nvidia_smi(
    text: &str,
    limits: &NvidiaSmiLimits,
) -> Result<Judgement<NvidiaSmiMetrics>, ParseError> {
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
    // Links below their maximum, judged once the capture's load is known.
    let mut below_max: Vec<(String, String)> = Vec::new();

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

        per_gpu.push(GpuReadings {
            gpu: index,
            bus_id: gpu.bus_id.clone(),
            serial: gpu.serial().map(str::to_owned),
            name: name.map(str::to_owned),
            ecc_uncorrectable_volatile: volatile,
            ecc_uncorrectable_aggregate: aggregate,
            pcie_gen: gen_now,
            pcie_width: width_now,
            temp_c: temp,
            utilization_pct: utilization(gpu),
            power_draw_w: power_reading(
                gpu,
                &[
                    "instant_power_draw",
                    "instantaneous_power_draw",
                    "power_draw",
                    "draw",
                    "average_power_draw",
                ],
            ),
            power_limit_w: power_reading(
                gpu,
                &[
                    "current_power_limit",
                    "enforced_power_limit",
                    "power_limit",
                    "limit",
                ],
            )
            .or(limits.power_limit_w.map(f64::from)),
        });
        below_max.extend(below.map(|b| (who, b)));
    }

    // A link below its maximum: the GPUs train links down at idle, so only
    // a capture under load (by its own readings, or by the caller's word)
    // shows a bad link (riser, slot, seating).
    let load = load_state(&per_gpu);
    for (who, below) in below_max {
        if load == LoadState::UnderLoad || limits.under_load {
            failures.push(format!(
                "{who}: PCIe link at {below} under load: reseat or check the riser/slot"
            ));
        } else {
            warnings.push(format!(
                "{who}: PCIe link at {below} (normal when idle; judge under load)"
            ));
        }
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

    let metrics = NvidiaSmiMetrics {
        format: p.format,
        driver: p.driver,
        attached: p.attached,
        gpus: listed,
        load,
        per_gpu,
        warnings,
    };
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

    /// Idle, PCIe Gen 1 of 4 (links train down at idle).
    const RTX_IDLE: &str = include_str!(
        "../../tests/fixtures/judge/nvidia-smi/nvidia-smi-q-x_RTX-PRO-6000-Blackwell_dtd-v13.xml"
    );
    /// Under gpu-burn, Gen 5 of 5, x16 of 16.
    const H200_LOAD: &str = include_str!(
        "../../tests/fixtures/judge/nvidia-smi/nvidia-smi-q_1xH200_590.48.01_load.txt"
    );

    #[test]
    fn idle_capture_with_a_trained_down_link_passes_with_a_warning() {
        let j = judge_nvidia_smi(RTX_IDLE, &NvidiaSmiLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
        assert_eq!(j.metrics.load, LoadState::Idle);
        let gpu = &j.metrics.per_gpu[0];
        assert_eq!(gpu.utilization_pct, Some(0.0));
        assert_eq!(gpu.power_draw_w, Some(3.99));
        assert_eq!(gpu.power_limit_w, Some(300.0));
        assert_eq!(j.metrics.warnings.len(), 1);
        assert!(
            j.metrics.warnings[0].contains("PCIe link at Gen 1 x16, expected Gen 4 x16"),
            "{:?}",
            j.metrics.warnings
        );
    }

    #[test]
    fn the_same_capture_under_load_fails_on_the_link() {
        let busy = RTX_IDLE.replacen("<gpu_util>0 %</gpu_util>", "<gpu_util>97 %</gpu_util>", 1);
        assert_ne!(busy, RTX_IDLE);
        let j = judge_nvidia_smi(&busy, &NvidiaSmiLimits::default()).unwrap();
        assert_eq!(j.metrics.load, LoadState::UnderLoad);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].starts_with("GPU 0 ("), "{:?}", j.reasons);
        assert!(
            j.reasons[0].contains("PCIe link at Gen 1 x16, expected Gen 4 x16 under load"),
            "{:?}",
            j.reasons
        );

        // Power alone shows load too: 250 W of the 300 W limit.
        let hot = RTX_IDLE.replacen(
            "<instant_power_draw>3.99 W</instant_power_draw>",
            "<instant_power_draw>250.00 W</instant_power_draw>",
            1,
        );
        let j = judge_nvidia_smi(&hot, &NvidiaSmiLimits::default()).unwrap();
        assert_eq!(j.metrics.load, LoadState::UnderLoad);
        assert_eq!(j.verdict, Verdict::Fail);
    }

    #[test]
    fn loaded_capture_with_full_links_passes() {
        let j = judge_nvidia_smi(H200_LOAD, &NvidiaSmiLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
        assert_eq!(j.metrics.load, LoadState::UnderLoad);
        assert!(j.metrics.warnings.is_empty());
        let gpu = &j.metrics.per_gpu[0];
        assert_eq!(gpu.utilization_pct, Some(100.0));
        assert_eq!(gpu.power_limit_w, Some(700.0));
        assert_eq!((gpu.pcie_gen, gpu.pcie_width), (Some(5), Some(16)));
    }

    #[test]
    fn a_capture_without_readings_falls_back_on_the_profile_limit() {
        let gpu = GpuReadings {
            bus_id: None,
            ecc_uncorrectable_aggregate: 0,
            ecc_uncorrectable_volatile: 0,
            gpu: 0,
            name: None,
            pcie_gen: None,
            pcie_width: None,
            power_draw_w: Some(400.0),
            power_limit_w: None,
            serial: None,
            temp_c: None,
            utilization_pct: None,
        };
        assert_eq!(load_state(std::slice::from_ref(&gpu)), LoadState::Unknown);
        let with_limit = GpuReadings {
            power_limit_w: Some(700.0),
            ..gpu
        };
        assert_eq!(load_state(&[with_limit]), LoadState::UnderLoad);
    }

    #[test]
    fn metrics_serialize_with_the_keys_they_always_had() {
        let j = judge_nvidia_smi(H200_LOAD, &NvidiaSmiLimits::default()).unwrap();
        let json = serde_json::to_value(&j).unwrap();
        let keys: Vec<&str> = json["metrics"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "attached", "driver", "format", "gpus", "load", "per_gpu", "warnings"
            ]
        );
        assert_eq!(json["metrics"]["load"], "under_load");
        let gpu = &json["metrics"]["per_gpu"][0];
        for key in [
            "gpu",
            "bus_id",
            "serial",
            "name",
            "ecc_uncorrectable_volatile",
            "ecc_uncorrectable_aggregate",
            "pcie_gen",
            "pcie_width",
            "temp_c",
        ] {
            assert!(gpu.get(key).is_some(), "{key}");
        }
        assert_eq!(j.clone().into_json().metrics, json["metrics"]);
    }
}
