//! `nvidia-smi`: the default table, `-L`, `-q` (text, `-d` sections), `-q -x`
//! (XML, DTD v12 before the 580 driver branch, v13 from it), `--query-gpu`
//! CSV, `-pm`, `topo -m`, `nvlink -s`, `--version`.

use super::{Tm, ToolCtx, ToolRun};
use crate::sim::hw::{
    CudaProblem, Gpu, GpuReading, ModelSpec, NodeHardware, branch_of, cuda_version_of,
};

/// What nvidia-smi prints when it cannot reach the driver (exit 9).
pub(crate) const NO_DRIVER: &str = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n\n";

const INVALID_ARGS: &str =
    "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n";

/// One GPU as nvidia-smi shows it.
pub(crate) struct View<'a> {
    /// The index nvidia-smi prints (missing GPUs shift it).
    pub idx: usize,
    pub gpu: &'a Gpu,
    pub r: GpuReading,
}

/// The GPUs nvidia-smi enumerates, at the context's load.
pub(crate) fn views(hw: &NodeHardware, load: f64) -> Vec<View<'_>> {
    hw.present_gpus()
        .enumerate()
        .map(|(idx, gpu)| View {
            idx,
            gpu,
            r: hw.reading(gpu, load),
        })
        .collect()
}

/// The error nvidia-smi prints when NVML is not usable, if it is not.
pub(crate) fn nvml_error(ctx: &ToolCtx) -> Option<ToolRun> {
    match ctx.sw.nvml_problem()? {
        CudaProblem::Mismatch { installed, .. } => {
            let nvml: Vec<&str> = installed.split('.').take(2).collect();
            Some(ToolRun::done(
                18,
                format!(
                    "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: {}\n",
                    nvml.join(".")
                ),
                "",
            ))
        }
        _ => Some(ToolRun::done(9, NO_DRIVER, "")),
    }
}

/// Memory in use, MiB.
fn mem_used(ctx: &ToolCtx, r: &GpuReading) -> u64 {
    let total = ctx.hw.profile.gpu.memory_mib;
    let reserved = ctx.hw.spec().reserved_mib;
    (total.saturating_sub(reserved) as f64 * 0.89 * f64::from(r.util_pct) / 100.0) as u64
}

/// Runs nvidia-smi.
pub(super) fn run(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    if args.first() == Some(&"--version") {
        if let Some(e) = nvml_error(ctx) {
            return e;
        }
        let v = ctx.sw.loaded_driver.clone().unwrap_or_default();
        let nvml: Vec<&str> = v.split('.').take(2).collect();
        return ToolRun::ok(format!(
            "NVIDIA-SMI version  : {v}\nNVML version        : {}\nDRIVER version      : {v}\nCUDA Version        : {}\n",
            nvml.join("."),
            cuda_version_of(&v)
        ));
    }
    if let Some(e) = nvml_error(ctx) {
        return e;
    }
    match args.first() {
        Some(&"topo") => return topo(ctx, &args[1..]),
        Some(&"nvlink") => return nvlink(ctx, &args[1..]),
        _ => {}
    }
    let mut query = false;
    let mut xml = false;
    let mut list = false;
    let mut display: Option<String> = None;
    let mut ids: Option<Vec<usize>> = None;
    let mut query_gpu: Option<String> = None;
    let mut format: Option<String> = None;
    let mut pm: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        let value = |i: &mut usize| -> Option<String> {
            if let Some((_, v)) = a.split_once('=') {
                return Some(v.to_owned());
            }
            *i += 1;
            args.get(*i).map(|s| (*s).to_owned())
        };
        match a.split('=').next().unwrap_or(a) {
            "-q" | "--query" => query = true,
            "-x" | "--xml-format" => xml = true,
            "-L" | "--list-gpus" => list = true,
            "-qx" | "-xq" => {
                query = true;
                xml = true;
            }
            "-d" | "--display" => display = value(&mut i),
            "-i" | "--id" => {
                let Some(v) = value(&mut i) else {
                    return ToolRun::done(2, INVALID_ARGS, "");
                };
                let parsed: Option<Vec<usize>> =
                    v.split(',').map(|s| s.trim().parse().ok()).collect();
                match parsed {
                    Some(p) => ids = Some(p),
                    None => {
                        return ToolRun::done(6, "No devices were found\n", "");
                    }
                }
            }
            "--query-gpu" => query_gpu = value(&mut i),
            "--format" => format = value(&mut i),
            "-pm" | "--persistence-mode" => pm = value(&mut i),
            "-h" | "--help" => {
                return ToolRun::ok(
                    "NVIDIA System Management Interface -- v570.133.20\n\nnvidia-smi [OPTION1 [ARG1]] [OPTION2 [ARG2]] ...\n",
                );
            }
            "-l" | "--loop" | "-lms" => {
                // Looping never ends; one sample is what a caller can use.
                let _ = value(&mut i);
            }
            _ => return ToolRun::done(2, INVALID_ARGS, ""),
        }
        i += 1;
    }

    let hw = ctx.hw;
    let all = views(hw, ctx.load);
    if let Some(ids) = &ids
        && ids.iter().any(|id| *id >= all.len())
    {
        return ToolRun::done(6, "No devices were found\n", "");
    }
    let selected: Vec<&View> = all
        .iter()
        .filter(|v| ids.as_ref().is_none_or(|ids| ids.contains(&v.idx)))
        .collect();

    if let Some(mode) = pm {
        let on = match mode.as_str() {
            "1" | "ENABLED" | "enabled" => true,
            "0" | "DISABLED" | "disabled" => false,
            _ => return ToolRun::done(2, INVALID_ARGS, ""),
        };
        ctx.sw.persistence_mode = on;
        let mut out = String::new();
        for v in &selected {
            out.push_str(&format!(
                "{} persistence mode for GPU {}.\n",
                if on { "Enabled" } else { "Disabled" },
                v.gpu.pci_bus_id()
            ));
        }
        out.push_str("All done.\n");
        return ToolRun::ok(out);
    }
    if let Some(fields) = query_gpu {
        return csv(ctx, &selected, &fields, format.as_deref());
    }
    if list {
        let mut out = String::new();
        for v in &selected {
            out.push_str(&format!(
                "GPU {}: {} (UUID: {})\n",
                v.idx,
                ctx.hw.profile.gpu.model,
                v.gpu.uuid_string()
            ));
        }
        return ToolRun::ok(out);
    }
    if query && xml {
        return ToolRun::ok(xml_log(ctx, &all, &selected));
    }
    if query {
        let groups: Option<Vec<String>> = display.map(|d| {
            d.split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .collect()
        });
        return ToolRun::ok(query_text(ctx, &all, &selected, groups.as_deref()));
    }
    if xml {
        return ToolRun::done(2, INVALID_ARGS, "");
    }
    ToolRun::ok(table(ctx, &selected))
}

fn driver(ctx: &ToolCtx) -> String {
    ctx.sw.loaded_driver.clone().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Default table
// ---------------------------------------------------------------------------

fn table(ctx: &ToolCtx, views: &[&View]) -> String {
    let d = driver(ctx);
    let mut o = String::new();
    let bar = format!("+{}+\n", "-".repeat(89));
    o.push_str(&Tm::utc(ctx.now_unix).asctime());
    o.push('\n');
    o.push_str(&bar);
    o.push_str(&format!(
        "| NVIDIA-SMI {:<22} Driver Version: {:<14} CUDA Version: {:<8} |\n",
        d,
        d,
        cuda_version_of(&d)
    ));
    let sep = format!(
        "|{}+{}+{}+\n",
        "-".repeat(41),
        "-".repeat(24),
        "-".repeat(22)
    );
    let rule = format!(
        "+{}+{}+{}+\n",
        "-".repeat(41),
        "-".repeat(24),
        "-".repeat(22)
    );
    o.push_str(&sep);
    o.push_str("| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n");
    o.push_str("| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n");
    o.push_str("|                                         |                        |               MIG M. |\n");
    o.push_str(&format!(
        "|{}+{}+{}|\n",
        "=".repeat(41),
        "=".repeat(24),
        "=".repeat(22)
    ));
    let name = &ctx.hw.profile.gpu.model;
    let limit = ctx.hw.profile.gpu.power_limit_w;
    let total = ctx.hw.profile.gpu.memory_mib;
    for v in views {
        let pm = if ctx.sw.persistence_mode { "On" } else { "Off" };
        let name_w = 34usize.saturating_sub(pm.len());
        o.push_str(&format!(
            "| {:>3}  {:<name_w$}{} | {:>18} {:>3} | {:>20} |\n",
            v.idx,
            name,
            pm,
            v.gpu.pci_bus_id(),
            "Off",
            v.gpu.ecc_uncorrectable
        ));
        let used = mem_used(ctx, &v.r).max(1);
        o.push_str(&format!(
            "| {:<3}   {:>3}    {:<2}{:>16} / {:>5} |{:>11} / {:>9} |{:>8}{:>13} |\n",
            "N/A",
            format!("{}C", v.r.temp_c),
            "P0",
            format!("{}W", v.r.power_w.round() as u64),
            format!("{limit}W"),
            format!("{used}MiB"),
            format!("{total}MiB"),
            format!("{}%", v.r.util_pct),
            "Default"
        ));
        o.push_str(&format!("|{:41}|{:24}|{:>21} |\n", "", "", "Disabled"));
        o.push_str(&rule);
    }
    o.push('\n');
    o.push_str(&bar);
    o.push_str(&format!("| {:<87} |\n", "Processes:"));
    o.push_str("|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |\n");
    o.push_str("|        ID   ID                                                               Usage      |\n");
    o.push_str(&format!("|{}|\n", "=".repeat(89)));
    let busy: Vec<&&View> = views.iter().filter(|v| v.r.util_pct > 0).collect();
    if busy.is_empty() {
        o.push_str(&format!("| {:<87} |\n", " No running processes found"));
    } else {
        for v in busy {
            let pid = super::fake_pid(ctx.hw, 0x51 + v.idx as u64, 0);
            o.push_str(&format!(
                "| {:>4}   N/A  N/A  {:>9}      C   {:<41} {:>9} |\n",
                v.idx,
                pid,
                "./gpu_burn",
                format!("{}MiB", mem_used(ctx, &v.r))
            ));
        }
    }
    o.push_str(&bar);
    o
}

// ---------------------------------------------------------------------------
// -q (text)
// ---------------------------------------------------------------------------

/// Writes `label : value` lines at nvidia-smi's column, skipping sections
/// `-d` did not ask for.
struct Q<'a> {
    out: String,
    groups: Option<&'a [String]>,
    on: bool,
}

impl Q<'_> {
    /// Starts a top-level section belonging to display group `g`.
    fn group(&mut self, g: &str) {
        self.on = self.groups.is_none_or(|gs| {
            gs.iter()
                .any(|x| x == g || (x == "TEMP" && g == "TEMPERATURE"))
        });
    }
    fn kv(&mut self, depth: usize, label: &str, value: impl std::fmt::Display) {
        if self.on {
            let l = format!("{}{label}", "    ".repeat(depth));
            self.out.push_str(&format!("{l:<42}: {value}\n"));
        }
    }
    fn sec(&mut self, depth: usize, label: &str) {
        if self.on {
            self.out
                .push_str(&format!("{}{label}\n", "    ".repeat(depth)));
        }
    }
}

fn active(b: bool) -> &'static str {
    if b { "Active" } else { "Not Active" }
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

fn enabled(b: bool) -> &'static str {
    if b { "Enabled" } else { "Disabled" }
}

fn query_text(ctx: &ToolCtx, all: &[View], views: &[&View], groups: Option<&[String]>) -> String {
    let d = driver(ctx);
    let spec = ctx.hw.spec();
    let p = &ctx.hw.profile;
    let mut q = Q {
        out: String::new(),
        groups,
        on: true,
    };
    q.out
        .push_str("\n==============NVSMI LOG==============\n\n");
    q.kv(0, "Timestamp", Tm::utc(ctx.now_unix).asctime());
    q.kv(0, "Driver Version", &d);
    q.kv(0, "CUDA Version", cuda_version_of(&d));
    q.out.push('\n');
    q.kv(0, "Attached GPUs", all.len());
    for v in views {
        let g = v.gpu;
        let r = &v.r;
        q.on = true;
        q.out.push_str(&format!("GPU {}\n", g.pci_bus_id()));
        q.group("NONE");
        q.kv(1, "Product Name", &p.gpu.model);
        q.kv(1, "Product Brand", "NVIDIA");
        q.kv(1, "Product Architecture", spec.arch);
        q.kv(1, "Display Mode", "Disabled");
        q.kv(1, "Display Active", "Disabled");
        q.kv(1, "Persistence Mode", enabled(ctx.sw.persistence_mode));
        q.kv(1, "Addressing Mode", "None");
        q.sec(1, "MIG Mode");
        q.kv(2, "Current", "Disabled");
        q.kv(2, "Pending", "Disabled");
        q.group("ACCOUNTING");
        q.kv(1, "Accounting Mode", "Disabled");
        q.kv(1, "Accounting Mode Buffer Size", 4000);
        q.group("NONE");
        q.sec(1, "Driver Model");
        q.kv(2, "Current", "N/A");
        q.kv(2, "Pending", "N/A");
        q.kv(1, "Serial Number", g.serial);
        q.kv(1, "GPU UUID", g.uuid_string());
        q.kv(1, "Minor Number", g.index);
        q.kv(1, "VBIOS Version", ctx.hw.vbios_version());
        q.kv(1, "MultiGPU Board", "No");
        q.kv(1, "Board ID", format!("0x{:x}00", g.pci_bus));
        q.kv(1, "Board Part Number", spec.board_part);
        q.kv(1, "GPU Part Number", spec.gpu_part);
        q.kv(1, "FRU Part Number", "N/A");
        q.kv(1, "Module ID", g.module_id);
        q.sec(1, "Inforom Version");
        q.kv(2, "Image Version", spec.inforom_img);
        q.kv(2, "OEM Object", "2.1");
        q.kv(2, "ECC Object", "7.16");
        q.kv(2, "Power Management Object", "N/A");
        q.sec(1, "GPU Operation Mode");
        q.kv(2, "Current", "N/A");
        q.kv(2, "Pending", "N/A");
        q.group("GSP_FIRMWARE_VERSION");
        q.kv(1, "GSP Firmware Version", &d);
        q.group("NONE");
        q.sec(1, "GPU Virtualization Mode");
        q.kv(2, "Virtualization Mode", "None");
        q.kv(2, "Host VGPU Mode", "N/A");
        q.group("RESET_STATUS");
        q.sec(1, "GPU Reset Status");
        q.kv(2, "Reset Required", yes_no(g.remap_pending));
        q.kv(2, "Drain and Reset Recommended", yes_no(g.remap_pending));
        q.group("NONE");
        q.sec(1, "IBMNPU");
        q.kv(2, "Relaxed Ordering Mode", "N/A");
        q.sec(1, "PCI");
        q.kv(2, "Bus", format!("0x{:02X}", g.pci_bus));
        q.kv(2, "Device", "0x00");
        q.kv(2, "Domain", "0x0000");
        q.kv(2, "Device Id", format!("0x{:04X}10DE", spec.device_id));
        q.kv(2, "Bus Id", g.pci_bus_id());
        q.kv(2, "Sub System Id", format!("0x{:08X}", spec.subsys_id));
        q.sec(2, "GPU Link Info");
        q.sec(3, "PCIe Generation");
        q.kv(4, "Max", p.gpu.pcie.generation);
        q.kv(4, "Current", p.gpu.pcie.generation);
        q.kv(4, "Device Current", p.gpu.pcie.generation);
        q.kv(4, "Device Max", p.gpu.pcie.generation);
        q.kv(4, "Host Max", "N/A");
        q.sec(3, "Link Width");
        q.kv(4, "Max", format!("{}x", p.gpu.pcie.width));
        q.kv(4, "Current", format!("{}x", p.gpu.pcie.width));
        q.sec(2, "Bridge Chip");
        q.kv(3, "Type", "N/A");
        q.kv(3, "Firmware", "N/A");
        q.kv(2, "Replays Since Reset", 0);
        q.kv(2, "Replay Number Rollovers", 0);
        q.kv(
            2,
            "Tx Throughput",
            format!("{} KB/s", 600 + r.util_pct * 40),
        );
        q.kv(
            2,
            "Rx Throughput",
            format!("{} KB/s", 500 + r.util_pct * 35),
        );
        q.kv(2, "Atomic Caps Inbound", "N/A");
        q.kv(2, "Atomic Caps Outbound", "N/A");
        q.kv(1, "Fan Speed", "N/A");
        q.group("PERFORMANCE");
        q.kv(1, "Performance State", "P0");
        q.sec(1, "Clocks Event Reasons");
        q.kv(2, "Idle", active(r.util_pct == 0));
        q.kv(2, "Applications Clocks Setting", "Not Active");
        q.kv(2, "SW Power Cap", "Not Active");
        q.kv(2, "HW Slowdown", active(r.thermal_slowdown));
        q.kv(3, "HW Thermal Slowdown", active(r.thermal_slowdown));
        q.kv(3, "HW Power Brake Slowdown", "Not Active");
        q.kv(2, "Sync Boost", "Not Active");
        q.kv(2, "SW Thermal Slowdown", active(r.thermal_slowdown));
        q.kv(2, "Display Clock Setting", "Not Active");
        q.group("NONE");
        q.kv(1, "Sparse Operation Mode", "Disabled");
        q.group("MEMORY");
        let total = p.gpu.memory_mib;
        let used = mem_used(ctx, r);
        q.sec(1, "FB Memory Usage");
        q.kv(2, "Total", format!("{total} MiB"));
        q.kv(2, "Reserved", format!("{} MiB", spec.reserved_mib));
        q.kv(2, "Used", format!("{used} MiB"));
        q.kv(
            2,
            "Free",
            format!("{} MiB", total.saturating_sub(spec.reserved_mib + used)),
        );
        q.sec(1, "BAR1 Memory Usage");
        q.kv(2, "Total", "131072 MiB");
        q.kv(2, "Used", "1 MiB");
        q.kv(2, "Free", "131071 MiB");
        q.sec(1, "Conf Compute Protected Memory Usage");
        q.kv(2, "Total", "0 MiB");
        q.kv(2, "Used", "0 MiB");
        q.kv(2, "Free", "0 MiB");
        q.group("COMPUTE");
        q.kv(1, "Compute Mode", "Default");
        q.group("UTILIZATION");
        q.sec(1, "Utilization");
        q.kv(2, "Gpu", format!("{} %", r.util_pct));
        q.kv(2, "Memory", format!("{} %", r.util_pct * 11 / 100));
        q.kv(2, "Encoder", "0 %");
        q.kv(2, "Decoder", "0 %");
        q.kv(2, "JPEG", "0 %");
        q.kv(2, "OFA", "0 %");
        q.group("ENCODER_STATS");
        q.sec(1, "Encoder Stats");
        q.kv(2, "Active Sessions", 0);
        q.kv(2, "Average FPS", 0);
        q.kv(2, "Average Latency", 0);
        q.group("FBC_STATS");
        q.sec(1, "FBC Stats");
        q.kv(2, "Active Sessions", 0);
        q.kv(2, "Average FPS", 0);
        q.kv(2, "Average Latency", 0);
        q.group("ECC");
        let ecc = g.ecc_uncorrectable;
        q.sec(1, "ECC Mode");
        q.kv(2, "Current", "Enabled");
        q.kv(2, "Pending", "Enabled");
        q.sec(1, "ECC Errors");
        for (label, agg) in [("Volatile", false), ("Aggregate", true)] {
            q.sec(2, label);
            q.kv(3, "SRAM Correctable", 0);
            q.kv(3, "SRAM Uncorrectable Parity", 0);
            q.kv(3, "SRAM Uncorrectable SEC-DED", 0);
            q.kv(3, "DRAM Correctable", 0);
            q.kv(3, "DRAM Uncorrectable", ecc);
            if agg {
                q.kv(3, "SRAM Threshold Exceeded", "No");
            }
        }
        q.sec(2, "Aggregate Uncorrectable SRAM Sources");
        for s in [
            "SRAM L2",
            "SRAM SM",
            "SRAM Microcontroller",
            "SRAM PCIE",
            "SRAM Other",
        ] {
            q.kv(3, s, 0);
        }
        q.group("PAGE_RETIREMENT");
        q.sec(1, "Retired Pages");
        q.kv(2, "Single Bit ECC", "N/A");
        q.kv(2, "Double Bit ECC", "N/A");
        q.kv(2, "Pending Page Blacklist", "N/A");
        q.group("ROW_REMAPPER");
        let (unc_rows, hist_max, hist_high) = remap_counts(g);
        q.sec(1, "Remapped Rows");
        q.kv(2, "Correctable Error", 0);
        q.kv(2, "Uncorrectable Error", unc_rows);
        q.kv(2, "Pending", yes_no(g.remap_pending));
        q.kv(2, "Remapping Failure Occurred", "No");
        q.sec(2, "Bank Remap Availability Histogram");
        q.kv(3, "Max", format!("{hist_max} bank(s)"));
        q.kv(3, "High", format!("{hist_high} bank(s)"));
        q.kv(3, "Partial", "0 bank(s)");
        q.kv(3, "Low", "0 bank(s)");
        q.kv(3, "None", "0 bank(s)");
        q.group("TEMPERATURE");
        q.sec(1, "Temperature");
        q.kv(2, "GPU Current Temp", format!("{} C", r.temp_c));
        q.kv(
            2,
            "GPU T.Limit Temp",
            format!(
                "{} C",
                i64::from(spec.max_operating_c) - i64::from(r.temp_c)
            ),
        );
        q.kv(2, "GPU Shutdown T.Limit Temp", "-8 C");
        q.kv(2, "GPU Slowdown T.Limit Temp", "-2 C");
        q.kv(2, "GPU Max Operating T.Limit Temp", "0 C");
        q.kv(2, "GPU Target Temperature", "N/A");
        q.kv(2, "Memory Current Temp", format!("{} C", r.memory_temp_c));
        q.kv(2, "Memory Max Operating T.Limit Temp", "0 C");
        q.group("POWER");
        let limit = f64::from(p.gpu.power_limit_w);
        q.sec(1, "GPU Power Readings");
        q.kv(2, "Power Draw", format!("{:.2} W", r.power_w));
        q.kv(2, "Current Power Limit", format!("{limit:.2} W"));
        q.kv(2, "Requested Power Limit", format!("{limit:.2} W"));
        q.kv(2, "Default Power Limit", format!("{limit:.2} W"));
        q.kv(
            2,
            "Min Power Limit",
            format!("{:.2} W", (limit * 2.0 / 7.0).round()),
        );
        q.kv(2, "Max Power Limit", format!("{limit:.2} W"));
        q.sec(1, "Module Power Readings");
        for l in [
            "Power Draw",
            "Current Power Limit",
            "Requested Power Limit",
            "Default Power Limit",
            "Min Power Limit",
            "Max Power Limit",
        ] {
            q.kv(2, l, "N/A");
        }
        q.group("CLOCK");
        q.sec(1, "Clocks");
        q.kv(2, "Graphics", format!("{} MHz", r.sm_clock_mhz));
        q.kv(2, "SM", format!("{} MHz", r.sm_clock_mhz));
        q.kv(2, "Memory", format!("{} MHz", spec.mem_mhz));
        q.kv(
            2,
            "Video",
            format!(
                "{} MHz",
                if r.util_pct > 0 {
                    spec.video_max_mhz
                } else {
                    765
                }
            ),
        );
        q.sec(1, "Applications Clocks");
        q.kv(2, "Graphics", format!("{} MHz", spec.max_sm_mhz));
        q.kv(2, "Memory", format!("{} MHz", spec.mem_mhz));
        q.sec(1, "Default Applications Clocks");
        q.kv(2, "Graphics", format!("{} MHz", spec.max_sm_mhz));
        q.kv(2, "Memory", format!("{} MHz", spec.mem_mhz));
        q.sec(1, "Deferred Clocks");
        q.kv(2, "Memory", "N/A");
        q.sec(1, "Max Clocks");
        q.kv(2, "Graphics", format!("{} MHz", spec.max_sm_mhz));
        q.kv(2, "SM", format!("{} MHz", spec.max_sm_mhz));
        q.kv(2, "Memory", format!("{} MHz", spec.mem_mhz));
        q.kv(2, "Video", format!("{} MHz", spec.video_max_mhz));
        q.sec(1, "Max Customer Boost Clocks");
        q.kv(2, "Graphics", format!("{} MHz", spec.max_sm_mhz));
        q.sec(1, "Clock Policy");
        q.kv(2, "Auto Boost", "N/A");
        q.kv(2, "Auto Boost Default", "N/A");
        q.group("VOLTAGE");
        q.sec(1, "Voltage");
        q.kv(
            2,
            "Graphics",
            format!("{:.3} mV", if r.util_pct > 0 { 880.0 } else { 665.0 }),
        );
        q.group("NONE");
        q.sec(1, "Fabric");
        let fm = !ctx.hw.profile.nvswitch || ctx.sw.is_active("nvidia-fabricmanager");
        q.kv(2, "State", if fm { "Completed" } else { "Not Started" });
        q.kv(2, "Status", if fm { "Success" } else { "N/A" });
        q.group("PIDS");
        if r.util_pct > 0 {
            q.sec(1, "Processes");
            q.kv(2, "GPU instance ID", "N/A");
            q.kv(2, "Compute instance ID", "N/A");
            q.kv(
                2,
                "Process ID",
                super::fake_pid(ctx.hw, 0x51 + v.idx as u64, 0),
            );
            q.kv(2, "Type", "C");
            q.kv(2, "Name", "./gpu_burn");
            q.kv(2, "Used GPU Memory", format!("{used} MiB"));
        } else {
            q.kv(1, "Processes", "None");
        }
        q.on = true;
        q.out.push('\n');
    }
    q.out
}

/// Uncorrectable remapped rows and the bank histogram (max, high).
fn remap_counts(g: &Gpu) -> (u32, u32, u32) {
    let unc = u32::from(g.ecc_uncorrectable > 0 || g.remap_pending);
    (unc, 2560 - unc, unc)
}

// ---------------------------------------------------------------------------
// -q -x (XML)
// ---------------------------------------------------------------------------

struct X {
    out: String,
    ind: &'static str,
    depth: usize,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl X {
    fn open(&mut self, tag: &str) {
        self.out
            .push_str(&format!("{}<{tag}>\n", self.ind.repeat(self.depth)));
        self.depth += 1;
    }
    fn open_attr(&mut self, tag: &str, attr: &str) {
        self.out
            .push_str(&format!("{}<{tag} {attr}>\n", self.ind.repeat(self.depth)));
        self.depth += 1;
    }
    fn close(&mut self, tag: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.out
            .push_str(&format!("{}</{tag}>\n", self.ind.repeat(self.depth)));
    }
    fn leaf(&mut self, tag: &str, value: impl std::fmt::Display) {
        self.out.push_str(&format!(
            "{}<{tag}>{}</{tag}>\n",
            self.ind.repeat(self.depth),
            xml_escape(&value.to_string())
        ));
    }
    fn leaves(&mut self, tag: &str, items: &[(&str, String)]) {
        self.open(tag);
        for (t, v) in items {
            self.leaf(t, v);
        }
        self.close(tag);
    }
}

fn s(v: impl std::fmt::Display) -> String {
    v.to_string()
}

fn xml_log(ctx: &ToolCtx, all: &[View], views: &[&View]) -> String {
    let d = driver(ctx);
    let v13 = branch_of(&d).is_some_and(|b| b >= 580);
    let spec: ModelSpec = ctx.hw.spec();
    let p = &ctx.hw.profile;
    let mut x = X {
        out: String::new(),
        ind: if v13 { "\t" } else { "    " },
        depth: 0,
    };
    if v13 {
        x.out.push_str("<?xml version=\"1.0\" ?>\n");
        x.out
            .push_str("<!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v13.dtd\">\n");
    } else {
        x.out
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.out
            .push_str("<!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v12.dtd\">\n");
    }
    x.open("nvidia_smi_log");
    x.leaf("timestamp", Tm::utc(ctx.now_unix).asctime());
    x.leaf("driver_version", &d);
    x.leaf("cuda_version", cuda_version_of(&d));
    x.leaf("attached_gpus", all.len());
    for v in views {
        let g = v.gpu;
        let r = &v.r;
        x.open_attr("gpu", &format!("id=\"{}\"", g.pci_bus_id()));
        x.leaf("product_name", &p.gpu.model);
        x.leaf("product_brand", "NVIDIA");
        x.leaf("product_architecture", spec.arch);
        x.leaf("display_mode", "Disabled");
        if v13 {
            x.leaf("display_attached", "No");
        }
        x.leaf("display_active", "Disabled");
        x.leaf("persistence_mode", enabled(ctx.sw.persistence_mode));
        x.leaf("addressing_mode", "None");
        x.leaves(
            "mig_mode",
            &[
                ("current_mig", s("Disabled")),
                ("pending_mig", s("Disabled")),
            ],
        );
        x.open("mig_devices");
        x.out.push_str(&format!("{}None\n", x.ind.repeat(x.depth)));
        x.close("mig_devices");
        x.leaf("accounting_mode", "Disabled");
        x.leaf("accounting_mode_buffer_size", 4000);
        x.leaves(
            "driver_model",
            &[("current_dm", s("N/A")), ("pending_dm", s("N/A"))],
        );
        x.leaf("serial", g.serial);
        x.leaf("uuid", g.uuid_string());
        if v13 {
            x.leaf(
                "pdi",
                format!(
                    "0x{:016x}",
                    crate::sim::hw::mix(ctx.hw.seed, u64::from(g.index))
                ),
            );
        }
        x.leaf("minor_number", g.index);
        x.leaf("vbios_version", ctx.hw.vbios_version());
        x.leaf("multigpu_board", "No");
        x.leaf("board_id", format!("0x{:x}00", g.pci_bus));
        x.leaf("board_part_number", spec.board_part);
        x.leaf("gpu_part_number", spec.gpu_part);
        x.leaf("gpu_fru_part_number", "N/A");
        if v13 {
            x.leaves(
                "platformInfo",
                &[
                    ("chassis_serial_number", s("")),
                    ("slot_number", s(g.module_id)),
                    ("tray_index", s(0)),
                    ("host_id", s(1)),
                    ("peer_type", s("Switch Connected")),
                    ("module_id", s(g.module_id)),
                    (
                        "gpu_fabric_guid",
                        format!("0x{:016x}", ctx.hw.seed ^ u64::from(g.index)),
                    ),
                ],
            );
        } else {
            x.leaf("gpu_module_id", g.module_id);
        }
        x.leaves(
            "inforom_version",
            &[
                ("img_version", s(spec.inforom_img)),
                ("oem_object", s("2.1")),
                ("ecc_object", s("7.16")),
                ("pwr_object", s("N/A")),
            ],
        );
        x.leaves(
            "gpu_operation_mode",
            &[("current_gom", s("N/A")), ("pending_gom", s("N/A"))],
        );
        if v13 {
            x.leaf("c2c_mode", "Disabled");
            x.leaves(
                "gpu_virtualization_mode",
                &[
                    ("virtualization_mode", s("None")),
                    ("host_vgpu_mode", s("N/A")),
                    ("vgpu_heterogeneous_mode", s("N/A")),
                ],
            );
            x.leaf(
                "gpu_recovery_action",
                if g.remap_pending { "Reset" } else { "None" },
            );
            x.leaf("gsp_firmware_version", &d);
        } else {
            x.leaf("gsp_firmware_version", &d);
            x.leaves(
                "gpu_virtualization_mode",
                &[
                    ("virtualization_mode", s("None")),
                    ("host_vgpu_mode", s("N/A")),
                ],
            );
            x.leaves(
                "gpu_reset_status",
                &[
                    ("reset_required", s(yes_no(g.remap_pending))),
                    ("drain_and_reset_recommended", s(yes_no(g.remap_pending))),
                ],
            );
        }
        x.leaves("ibmnpu", &[("relaxed_ordering_mode", s("N/A"))]);
        x.open("pci");
        x.leaf("pci_bus", format!("{:02X}", g.pci_bus));
        x.leaf("pci_device", "00");
        x.leaf("pci_domain", "0000");
        if v13 {
            x.leaf("pci_base_class", 3);
            x.leaf("pci_sub_class", 2);
        }
        x.leaf("pci_device_id", format!("{:04X}10DE", spec.device_id));
        x.leaf("pci_bus_id", g.pci_bus_id());
        x.leaf("pci_sub_system_id", format!("{:08X}", spec.subsys_id));
        x.open("pci_gpu_link_info");
        let gen_ = p.gpu.pcie.generation;
        x.leaves(
            "pcie_gen",
            &[
                ("max_link_gen", s(gen_)),
                ("current_link_gen", s(gen_)),
                ("device_current_link_gen", s(gen_)),
                ("max_device_link_gen", s(gen_)),
                ("max_host_link_gen", s(gen_)),
            ],
        );
        x.leaves(
            "link_widths",
            &[
                ("max_link_width", format!("{}x", p.gpu.pcie.width)),
                ("current_link_width", format!("{}x", p.gpu.pcie.width)),
            ],
        );
        x.close("pci_gpu_link_info");
        x.leaves(
            "pci_bridge_chip",
            &[("bridge_chip_type", s("N/A")), ("bridge_chip_fw", s("N/A"))],
        );
        x.leaf("replay_counter", 0);
        x.leaf("replay_rollover_counter", 0);
        x.leaf("tx_util", format!("{} KB/s", 600 + r.util_pct * 40));
        x.leaf("rx_util", format!("{} KB/s", 500 + r.util_pct * 35));
        x.leaf("atomic_caps_inbound", "N/A");
        x.leaf("atomic_caps_outbound", "N/A");
        x.close("pci");
        x.leaf("fan_speed", "N/A");
        x.leaf("performance_state", "P0");
        let th = active(r.thermal_slowdown);
        x.leaves(
            "clocks_event_reasons",
            &[
                ("clocks_event_reason_gpu_idle", s(active(r.util_pct == 0))),
                (
                    "clocks_event_reason_applications_clocks_setting",
                    s("Not Active"),
                ),
                ("clocks_event_reason_sw_power_cap", s("Not Active")),
                ("clocks_event_reason_hw_slowdown", s(th)),
                ("clocks_event_reason_hw_thermal_slowdown", s(th)),
                (
                    "clocks_event_reason_hw_power_brake_slowdown",
                    s("Not Active"),
                ),
                ("clocks_event_reason_sync_boost", s("Not Active")),
                ("clocks_event_reason_sw_thermal_slowdown", s(th)),
                (
                    "clocks_event_reason_display_clocks_setting",
                    s("Not Active"),
                ),
            ],
        );
        if v13 {
            let therm = if g.hot_temp_c.is_some() {
                "41500000 us"
            } else {
                "0 us"
            };
            x.leaves(
                "clocks_event_reasons_counters",
                &[
                    ("clocks_event_reasons_counters_sw_power_cap", s("0 us")),
                    ("clocks_event_reasons_counters_sync_boost", s("0 us")),
                    ("clocks_event_reasons_counters_sw_therm_slowdown", s(therm)),
                    ("clocks_event_reasons_counters_hw_therm_slowdown", s(therm)),
                    ("clocks_event_reasons_counters_hw_power_brake", s("0 us")),
                ],
            );
        }
        x.leaf("sparse_operation_mode", "Disabled");
        let total = p.gpu.memory_mib;
        let used = mem_used(ctx, r);
        x.leaves(
            "fb_memory_usage",
            &[
                ("total", format!("{total} MiB")),
                ("reserved", format!("{} MiB", spec.reserved_mib)),
                ("used", format!("{used} MiB")),
                (
                    "free",
                    format!("{} MiB", total.saturating_sub(spec.reserved_mib + used)),
                ),
            ],
        );
        x.leaves(
            "bar1_memory_usage",
            &[
                ("total", s("131072 MiB")),
                ("used", s("1 MiB")),
                ("free", s("131071 MiB")),
            ],
        );
        x.leaves(
            "cc_protected_memory_usage",
            &[
                ("total", s("0 MiB")),
                ("used", s("0 MiB")),
                ("free", s("0 MiB")),
            ],
        );
        x.leaf("compute_mode", "Default");
        x.leaves(
            "utilization",
            &[
                ("gpu_util", format!("{} %", r.util_pct)),
                ("memory_util", format!("{} %", r.util_pct * 11 / 100)),
                ("encoder_util", s("0 %")),
                ("decoder_util", s("0 %")),
                ("jpeg_util", s("0 %")),
                ("ofa_util", s("0 %")),
            ],
        );
        for tag in ["encoder_stats", "fbc_stats"] {
            x.leaves(
                tag,
                &[
                    ("session_count", s(0)),
                    ("average_fps", s(0)),
                    ("average_latency", s(0)),
                ],
            );
        }
        if v13 {
            x.leaves(
                "dram_encryption_mode",
                &[
                    ("current_dram_encryption", s("Disabled")),
                    ("pending_dram_encryption", s("Disabled")),
                ],
            );
        }
        x.leaves(
            "ecc_mode",
            &[("current_ecc", s("Enabled")), ("pending_ecc", s("Enabled"))],
        );
        let ecc = g.ecc_uncorrectable;
        x.open("ecc_errors");
        for tag in ["volatile", "aggregate"] {
            x.open(tag);
            x.leaf("sram_correctable", 0);
            if v13 {
                x.leaf("sram_uncorrectable_parity", 0);
                x.leaf("sram_uncorrectable_secded", 0);
            } else {
                x.leaf("sram_uncorrectable", 0);
            }
            x.leaf("dram_correctable", 0);
            x.leaf("dram_uncorrectable", ecc);
            if v13 && tag == "aggregate" {
                x.leaf("sram_threshold_exceeded", "No");
            }
            x.close(tag);
        }
        if v13 {
            x.leaves(
                "aggregate_uncorrectable_sram_sources",
                &[
                    ("sram_l2", s(0)),
                    ("sram_sm", s(0)),
                    ("sram_microcontroller", s(0)),
                    ("sram_pcie", s(0)),
                    ("sram_other", s(0)),
                ],
            );
            x.leaf("channel_repair_pending", "No");
            x.leaf("tpc_repair_pending", "No");
            x.leaf("unrepairable_memory", "No");
        }
        x.close("ecc_errors");
        x.open("retired_pages");
        for tag in ["multiple_single_bit_retirement", "double_bit_retirement"] {
            x.leaves(
                tag,
                &[("retired_count", s("N/A")), ("retired_pagelist", s("N/A"))],
            );
        }
        x.leaf("pending_blacklist", "N/A");
        x.leaf("pending_retirement", "N/A");
        x.close("retired_pages");
        let (unc_rows, hist_max, hist_high) = remap_counts(g);
        x.open("remapped_rows");
        x.leaf("remapped_row_corr", 0);
        x.leaf("remapped_row_unc", unc_rows);
        x.leaf("remapped_row_pending", yes_no(g.remap_pending));
        x.leaf("remapped_row_failure", "No");
        x.leaves(
            "row_remapper_histogram",
            &[
                ("row_remapper_histogram_max", format!("{hist_max} bank(s)")),
                (
                    "row_remapper_histogram_high",
                    format!("{hist_high} bank(s)"),
                ),
                ("row_remapper_histogram_partial", s("0 bank(s)")),
                ("row_remapper_histogram_low", s("0 bank(s)")),
                ("row_remapper_histogram_none", s("0 bank(s)")),
            ],
        );
        x.close("remapped_rows");
        let tl = format!(
            "{} C",
            i64::from(spec.max_operating_c) - i64::from(r.temp_c)
        );
        if v13 {
            x.leaves(
                "temperature",
                &[
                    ("gpu_temp", format!("{} C", r.temp_c)),
                    ("gpu_temp_tlimit", tl),
                    ("gpu_temp_max_tlimit_threshold", s("-8 C")),
                    ("gpu_temp_slow_tlimit_threshold", s("-2 C")),
                    ("gpu_temp_max_gpu_tlimit_threshold", s("0 C")),
                    ("gpu_target_temperature", s("N/A")),
                    ("memory_temp", format!("{} C", r.memory_temp_c)),
                    ("gpu_temp_max_mem_tlimit_threshold", s("0 C")),
                ],
            );
        } else {
            x.leaves(
                "temperature",
                &[
                    ("gpu_temp", format!("{} C", r.temp_c)),
                    ("gpu_temp_tlimit", tl),
                    (
                        "gpu_temp_max_threshold",
                        format!("{} C", spec.max_operating_c + 5),
                    ),
                    (
                        "gpu_temp_slow_threshold",
                        format!("{} C", spec.max_operating_c + 2),
                    ),
                    (
                        "gpu_temp_max_gpu_threshold",
                        format!("{} C", spec.max_operating_c),
                    ),
                    ("gpu_target_temperature", s("N/A")),
                    ("memory_temp", format!("{} C", r.memory_temp_c)),
                    ("gpu_temp_max_mem_threshold", s("95 C")),
                ],
            );
        }
        x.leaves(
            "supported_gpu_target_temp",
            &[
                ("gpu_target_temp_min", s("N/A")),
                ("gpu_target_temp_max", s("N/A")),
            ],
        );
        let limit = f64::from(p.gpu.power_limit_w);
        let lim = format!("{limit:.2} W");
        let min = format!("{:.2} W", (limit * 2.0 / 7.0).round());
        let draw = format!("{:.2} W", r.power_w);
        if v13 {
            x.leaves(
                "gpu_power_readings",
                &[
                    ("power_state", s("P0")),
                    ("average_power_draw", draw.clone()),
                    ("instant_power_draw", draw),
                    ("current_power_limit", lim.clone()),
                    ("requested_power_limit", lim.clone()),
                    ("default_power_limit", lim.clone()),
                    ("min_power_limit", min),
                    ("max_power_limit", lim),
                ],
            );
            x.leaves(
                "gpu_memory_power_readings",
                &[
                    ("average_power_draw", s("N/A")),
                    ("instant_power_draw", s("N/A")),
                ],
            );
        } else {
            x.leaves(
                "gpu_power_readings",
                &[
                    ("power_state", s("P0")),
                    ("power_draw", draw),
                    ("current_power_limit", lim.clone()),
                    ("requested_power_limit", lim.clone()),
                    ("default_power_limit", lim.clone()),
                    ("min_power_limit", min),
                    ("max_power_limit", lim),
                ],
            );
        }
        let mut module = vec![("power_state", s("P0"))];
        let module_fields: &[&str] = if v13 {
            &[
                "average_power_draw",
                "instant_power_draw",
                "current_power_limit",
                "requested_power_limit",
                "default_power_limit",
                "min_power_limit",
                "max_power_limit",
            ]
        } else {
            &[
                "power_draw",
                "current_power_limit",
                "requested_power_limit",
                "default_power_limit",
                "min_power_limit",
                "max_power_limit",
            ]
        };
        module.extend(module_fields.iter().map(|f| (*f, s("N/A"))));
        x.leaves("module_power_readings", &module);
        let mhz = |v: u32| format!("{v} MHz");
        x.leaves(
            "clocks",
            &[
                ("graphics_clock", mhz(r.sm_clock_mhz)),
                ("sm_clock", mhz(r.sm_clock_mhz)),
                ("mem_clock", mhz(spec.mem_mhz)),
                (
                    "video_clock",
                    mhz(if r.util_pct > 0 {
                        spec.video_max_mhz
                    } else {
                        765
                    }),
                ),
            ],
        );
        for tag in ["applications_clocks", "default_applications_clocks"] {
            x.leaves(
                tag,
                &[
                    ("graphics_clock", mhz(spec.max_sm_mhz)),
                    ("mem_clock", mhz(spec.mem_mhz)),
                ],
            );
        }
        x.leaves("deferred_clocks", &[("mem_clock", s("N/A"))]);
        x.leaves(
            "max_clocks",
            &[
                ("graphics_clock", mhz(spec.max_sm_mhz)),
                ("sm_clock", mhz(spec.max_sm_mhz)),
                ("mem_clock", mhz(spec.mem_mhz)),
                ("video_clock", mhz(spec.video_max_mhz)),
            ],
        );
        x.leaves(
            "max_customer_boost_clocks",
            &[("graphics_clock", mhz(spec.max_sm_mhz))],
        );
        x.leaves(
            "clock_policy",
            &[("auto_boost", s("N/A")), ("auto_boost_default", s("N/A"))],
        );
        if !v13 {
            x.leaves(
                "voltage",
                &[(
                    "graphics_volt",
                    format!("{:.3} mV", if r.util_pct > 0 { 880.0 } else { 665.0 }),
                )],
            );
        }
        let fm = !p.nvswitch || ctx.sw.is_active("nvidia-fabricmanager");
        x.open("fabric");
        x.leaf("state", if fm { "Completed" } else { "Not Started" });
        x.leaf("status", if fm { "Success" } else { "N/A" });
        if v13 {
            x.leaf("cliqueId", 0);
            x.leaf("clusterUuid", "00000000-0000-0000-0000-000000000000");
            x.leaves(
                "health",
                &[
                    ("summary", s("Healthy")),
                    (
                        "bandwidth",
                        s(if g.nvlinks_down != 0 {
                            "Degraded"
                        } else {
                            "Full"
                        }),
                    ),
                    ("route_recovery_in_progress", s("False")),
                    ("route_unhealthy", s("False")),
                    ("access_timeout_recovery", s("False")),
                    ("incorrect_configuration", s("None")),
                ],
            );
        }
        x.close("fabric");
        x.open("supported_clocks");
        x.open("supported_mem_clock");
        x.leaf("value", mhz(spec.mem_mhz));
        let mut c = spec.max_sm_mhz;
        while c >= 345 {
            x.leaf("supported_graphics_clock", mhz(c));
            c -= 15;
        }
        x.close("supported_mem_clock");
        x.close("supported_clocks");
        if r.util_pct > 0 {
            x.open("processes");
            x.leaves(
                "process_info",
                &[
                    ("gpu_instance_id", s("N/A")),
                    ("compute_instance_id", s("N/A")),
                    ("pid", s(super::fake_pid(ctx.hw, 0x51 + v.idx as u64, 0))),
                    ("type", s("C")),
                    ("process_name", s("./gpu_burn")),
                    ("used_memory", format!("{used} MiB")),
                ],
            );
            x.close("processes");
        } else if v13 {
            x.open("processes");
            x.close("processes");
        } else {
            x.out
                .push_str(&format!("{}<processes />\n", x.ind.repeat(x.depth)));
        }
        if v13 {
            x.open("accounted_processes");
            x.close("accounted_processes");
            x.leaves("capabilities", &[("egm", s("disabled"))]);
        } else {
            x.out.push_str(&format!(
                "{}<accounted_processes />\n",
                x.ind.repeat(x.depth)
            ));
        }
        x.close("gpu");
    }
    if v13 {
        x.out.push('\n');
    }
    x.close("nvidia_smi_log");
    x.out
}

// ---------------------------------------------------------------------------
// --query-gpu CSV
// ---------------------------------------------------------------------------

/// The canonical name of a query field (aliases resolved) and its unit.
fn field(name: &str) -> Option<(&'static str, Option<&'static str>)> {
    const FIELDS: &[(&[&str], &str, Option<&str>)] = &[
        (&["timestamp"], "timestamp", None),
        (&["driver_version"], "driver_version", None),
        (&["count"], "count", None),
        (&["name", "gpu_name"], "name", None),
        (&["serial", "gpu_serial"], "serial", None),
        (&["uuid", "gpu_uuid"], "uuid", None),
        (&["pci.bus_id", "gpu_bus_id"], "pci.bus_id", None),
        (&["pci.domain"], "pci.domain", None),
        (&["pci.bus"], "pci.bus", None),
        (&["pci.device"], "pci.device", None),
        (&["pci.device_id"], "pci.device_id", None),
        (&["pci.sub_device_id"], "pci.sub_device_id", None),
        (&["index"], "index", None),
        (&["vbios_version"], "vbios_version", None),
        (&["inforom.img", "inforom.image"], "inforom.img", None),
        (&["persistence_mode"], "persistence_mode", None),
        (&["pstate"], "pstate", None),
        (&["compute_mode"], "compute_mode", None),
        (&["compute_cap"], "compute_cap", None),
        (&["display_mode"], "display_mode", None),
        (&["display_active"], "display_active", None),
        (&["mig.mode.current"], "mig.mode.current", None),
        (&["fan.speed"], "fan.speed", Some("%")),
        (&["temperature.gpu"], "temperature.gpu", None),
        (&["temperature.memory"], "temperature.memory", None),
        (&["power.draw"], "power.draw", Some("W")),
        (&["power.draw.average"], "power.draw.average", Some("W")),
        (&["power.draw.instant"], "power.draw.instant", Some("W")),
        (&["power.limit"], "power.limit", Some("W")),
        (&["enforced.power.limit"], "enforced.power.limit", Some("W")),
        (&["power.default_limit"], "power.default_limit", Some("W")),
        (&["power.min_limit"], "power.min_limit", Some("W")),
        (&["power.max_limit"], "power.max_limit", Some("W")),
        (&["memory.total"], "memory.total", Some("MiB")),
        (&["memory.reserved"], "memory.reserved", Some("MiB")),
        (&["memory.used"], "memory.used", Some("MiB")),
        (&["memory.free"], "memory.free", Some("MiB")),
        (&["utilization.gpu"], "utilization.gpu", Some("%")),
        (&["utilization.memory"], "utilization.memory", Some("%")),
        (
            &["clocks.sm", "clocks.current.sm"],
            "clocks.current.sm",
            Some("MHz"),
        ),
        (
            &["clocks.gr", "clocks.current.graphics"],
            "clocks.current.graphics",
            Some("MHz"),
        ),
        (
            &["clocks.mem", "clocks.current.memory"],
            "clocks.current.memory",
            Some("MHz"),
        ),
        (
            &["clocks.video", "clocks.current.video"],
            "clocks.current.video",
            Some("MHz"),
        ),
        (
            &["clocks.max.sm", "clock.max.sm"],
            "clocks.max.sm",
            Some("MHz"),
        ),
        (
            &["clocks.max.gr", "clocks.max.graphics"],
            "clocks.max.graphics",
            Some("MHz"),
        ),
        (
            &["clocks.max.mem", "clocks.max.memory"],
            "clocks.max.memory",
            Some("MHz"),
        ),
        (&["ecc.mode.current"], "ecc.mode.current", None),
        (&["ecc.mode.pending"], "ecc.mode.pending", None),
        (
            &["ecc.errors.corrected.volatile.total"],
            "ecc.errors.corrected.volatile.total",
            None,
        ),
        (
            &["ecc.errors.corrected.aggregate.total"],
            "ecc.errors.corrected.aggregate.total",
            None,
        ),
        (
            &["ecc.errors.uncorrected.volatile.total"],
            "ecc.errors.uncorrected.volatile.total",
            None,
        ),
        (
            &["ecc.errors.uncorrected.aggregate.total"],
            "ecc.errors.uncorrected.aggregate.total",
            None,
        ),
        (
            &[
                "ecc.errors.uncorrected.volatile.dram",
                "ecc.errors.uncorrected.volatile.device_memory",
            ],
            "ecc.errors.uncorrected.volatile.dram",
            None,
        ),
        (
            &[
                "ecc.errors.uncorrected.aggregate.dram",
                "ecc.errors.uncorrected.aggregate.device_memory",
            ],
            "ecc.errors.uncorrected.aggregate.dram",
            None,
        ),
        (
            &["remapped_rows.correctable"],
            "remapped_rows.correctable",
            None,
        ),
        (
            &["remapped_rows.uncorrectable"],
            "remapped_rows.uncorrectable",
            None,
        ),
        (&["remapped_rows.pending"], "remapped_rows.pending", None),
        (&["remapped_rows.failure"], "remapped_rows.failure", None),
        (&["pcie.link.gen.current"], "pcie.link.gen.current", None),
        (
            &["pcie.link.gen.gpucurrent"],
            "pcie.link.gen.gpucurrent",
            None,
        ),
        (&["pcie.link.gen.max"], "pcie.link.gen.max", None),
        (&["pcie.link.gen.gpumax"], "pcie.link.gen.gpumax", None),
        (
            &["pcie.link.width.current"],
            "pcie.link.width.current",
            None,
        ),
        (&["pcie.link.width.max"], "pcie.link.width.max", None),
        (
            &[
                "clocks_event_reasons.active",
                "clocks_throttle_reasons.active",
            ],
            "clocks_event_reasons.active",
            None,
        ),
        (
            &[
                "clocks_event_reasons.gpu_idle",
                "clocks_throttle_reasons.gpu_idle",
            ],
            "clocks_event_reasons.gpu_idle",
            None,
        ),
        (
            &[
                "clocks_event_reasons.hw_slowdown",
                "clocks_throttle_reasons.hw_slowdown",
            ],
            "clocks_event_reasons.hw_slowdown",
            None,
        ),
        (
            &[
                "clocks_event_reasons.hw_thermal_slowdown",
                "clocks_throttle_reasons.hw_thermal_slowdown",
            ],
            "clocks_event_reasons.hw_thermal_slowdown",
            None,
        ),
        (
            &[
                "clocks_event_reasons.sw_thermal_slowdown",
                "clocks_throttle_reasons.sw_thermal_slowdown",
            ],
            "clocks_event_reasons.sw_thermal_slowdown",
            None,
        ),
        (
            &[
                "clocks_event_reasons.sw_power_cap",
                "clocks_throttle_reasons.sw_power_cap",
            ],
            "clocks_event_reasons.sw_power_cap",
            None,
        ),
    ];
    FIELDS
        .iter()
        .find(|(names, _, _)| names.contains(&name))
        .map(|(_, canon, unit)| (*canon, *unit))
}

/// The value of canonical field `f` for one GPU, without its unit.
fn value(ctx: &ToolCtx, all: usize, v: &View, f: &str) -> String {
    let g = v.gpu;
    let r = &v.r;
    let spec = ctx.hw.spec();
    let p = &ctx.hw.profile;
    let limit = f64::from(p.gpu.power_limit_w);
    let used = mem_used(ctx, r);
    let reasons = if r.thermal_slowdown {
        0x68u64
    } else if r.util_pct == 0 {
        0x1
    } else {
        0
    };
    match f {
        "timestamp" => format!(
            "{}.{:03}",
            Tm::utc(ctx.now_unix).slashed(),
            ctx.now_unix % 1000
        ),
        "driver_version" => driver(ctx),
        "count" => all.to_string(),
        "name" => p.gpu.model.clone(),
        "serial" => g.serial.to_string(),
        "uuid" => g.uuid_string(),
        "pci.bus_id" => g.pci_bus_id(),
        "pci.domain" => "0x0000".into(),
        "pci.bus" => format!("0x{:02X}", g.pci_bus),
        "pci.device" => "0x00".into(),
        "pci.device_id" => format!("0x{:04X}10DE", spec.device_id),
        "pci.sub_device_id" => format!("0x{:08X}", spec.subsys_id),
        "index" => v.idx.to_string(),
        "vbios_version" => ctx.hw.vbios_version(),
        "inforom.img" => spec.inforom_img.into(),
        "persistence_mode" => enabled(ctx.sw.persistence_mode).into(),
        "pstate" => "P0".into(),
        "compute_mode" => "Default".into(),
        "compute_cap" => spec.compute_cap.into(),
        "display_mode" | "display_active" | "mig.mode.current" => "Disabled".into(),
        "fan.speed" => "[N/A]".into(),
        "temperature.gpu" => r.temp_c.to_string(),
        "temperature.memory" => r.memory_temp_c.to_string(),
        "power.draw" | "power.draw.average" | "power.draw.instant" => {
            format!("{:.2}", r.power_w)
        }
        "power.limit" | "enforced.power.limit" | "power.default_limit" | "power.max_limit" => {
            format!("{limit:.2}")
        }
        "power.min_limit" => format!("{:.2}", (limit * 2.0 / 7.0).round()),
        "memory.total" => p.gpu.memory_mib.to_string(),
        "memory.reserved" => spec.reserved_mib.to_string(),
        "memory.used" => used.to_string(),
        "memory.free" => p
            .gpu
            .memory_mib
            .saturating_sub(spec.reserved_mib + used)
            .to_string(),
        "utilization.gpu" => r.util_pct.to_string(),
        "utilization.memory" => (r.util_pct * 11 / 100).to_string(),
        "clocks.current.sm" | "clocks.current.graphics" => r.sm_clock_mhz.to_string(),
        "clocks.current.memory" => spec.mem_mhz.to_string(),
        "clocks.current.video" => (if r.util_pct > 0 {
            spec.video_max_mhz
        } else {
            765
        })
        .to_string(),
        "clocks.max.sm" | "clocks.max.graphics" => spec.max_sm_mhz.to_string(),
        "clocks.max.memory" => spec.mem_mhz.to_string(),
        "ecc.mode.current" | "ecc.mode.pending" => "Enabled".into(),
        "ecc.errors.corrected.volatile.total" | "ecc.errors.corrected.aggregate.total" => {
            "0".into()
        }
        "ecc.errors.uncorrected.volatile.total"
        | "ecc.errors.uncorrected.aggregate.total"
        | "ecc.errors.uncorrected.volatile.dram"
        | "ecc.errors.uncorrected.aggregate.dram" => g.ecc_uncorrectable.to_string(),
        "remapped_rows.correctable" => "0".into(),
        "remapped_rows.uncorrectable" => remap_counts(g).0.to_string(),
        "remapped_rows.pending" => yes_no(g.remap_pending).into(),
        "remapped_rows.failure" => "No".into(),
        "pcie.link.gen.current"
        | "pcie.link.gen.gpucurrent"
        | "pcie.link.gen.max"
        | "pcie.link.gen.gpumax" => p.gpu.pcie.generation.to_string(),
        "pcie.link.width.current" | "pcie.link.width.max" => p.gpu.pcie.width.to_string(),
        "clocks_event_reasons.active" => format!("0x{reasons:016X}"),
        "clocks_event_reasons.gpu_idle" => active(r.util_pct == 0).into(),
        "clocks_event_reasons.hw_slowdown"
        | "clocks_event_reasons.hw_thermal_slowdown"
        | "clocks_event_reasons.sw_thermal_slowdown" => active(r.thermal_slowdown).into(),
        "clocks_event_reasons.sw_power_cap" => "Not Active".into(),
        _ => "[N/A]".into(),
    }
}

fn csv(ctx: &ToolCtx, views: &[&View], fields: &str, format: Option<&str>) -> ToolRun {
    let Some(format) = format else {
        return ToolRun::done(
            2,
            "Option \"--format\" is missing or has invalid format. Please run 'nvidia-smi -h' for help.\n\n",
            "",
        );
    };
    let opts: Vec<&str> = format.split(',').map(str::trim).collect();
    if !opts.contains(&"csv")
        || opts
            .iter()
            .any(|o| !["csv", "noheader", "nounits"].contains(o))
    {
        return ToolRun::done(
            2,
            format!(
                "\"{format}\" is not a valid format specifier. Please run 'nvidia-smi -h' for help.\n\n"
            ),
            "",
        );
    }
    let header = !opts.contains(&"noheader");
    let units = !opts.contains(&"nounits");
    let mut cols = Vec::new();
    for name in fields.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match field(name) {
            Some(f) => cols.push(f),
            None => {
                return ToolRun::done(
                    2,
                    format!("Field \"{name}\" is not a valid field to query.\n\n"),
                    "",
                );
            }
        }
    }
    if cols.is_empty() {
        return ToolRun::done(2, INVALID_ARGS, "");
    }
    let total = ctx.hw.present_gpus().count();
    let mut out = String::new();
    if header {
        let names: Vec<String> = cols
            .iter()
            .map(|(n, u)| match u {
                Some(u) => format!("{n} [{u}]"),
                None => (*n).to_owned(),
            })
            .collect();
        out.push_str(&names.join(", "));
        out.push('\n');
    }
    for v in views {
        let vals: Vec<String> = cols
            .iter()
            .map(|(n, u)| {
                let val = value(ctx, total, v, n);
                match u {
                    Some(u) if units && !val.starts_with('[') => format!("{val} {u}"),
                    _ => val,
                }
            })
            .collect();
        out.push_str(&vals.join(", "));
        out.push('\n');
    }
    ToolRun::ok(out)
}

// ---------------------------------------------------------------------------
// topo -m, nvlink -s
// ---------------------------------------------------------------------------

const TOPO_LEGEND: &str = "\nLegend:\n\n  X    = Self\n  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)\n  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node\n  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)\n  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)\n  PIX  = Connection traversing at most a single PCIe bridge\n  NV#  = Connection traversing a bonded set of # NVLinks\n";

fn topo(ctx: &ToolCtx, args: &[&str]) -> ToolRun {
    if !args.iter().any(|a| *a == "-m" || *a == "--matrix") {
        return ToolRun::done(2, INVALID_ARGS, "");
    }
    let gpus: Vec<&Gpu> = ctx.hw.present_gpus().collect();
    let nics = ctx.hw.ib_ports.len();
    let count = ctx.hw.gpus.len().max(1);
    let half = count.div_ceil(2);
    // Socket of a physical GPU / NIC slot: the first half on socket 0.
    let socket = |slot: usize| usize::from(slot >= half);
    let links = ctx.hw.profile.gpu.nvlink.links_per_gpu;
    let nic_rel = |gpu_slot: usize, nic: usize| -> &'static str {
        if gpu_slot == nic {
            "PIX"
        } else if gpu_slot / 2 == nic / 2 {
            "PXB"
        } else if socket(gpu_slot) == socket(nic) {
            "NODE"
        } else {
            "SYS"
        }
    };
    let mut o = String::from("\t\x1b[4m");
    let mut head: Vec<String> = (0..gpus.len()).map(|i| format!("GPU{i}")).collect();
    head.extend((0..nics).map(|i| format!("NIC{i}")));
    head.extend(["CPU Affinity", "NUMA Affinity", "GPU NUMA ID"].map(String::from));
    o.push_str(&head.join("\t"));
    o.push_str("\x1b[0m\n");
    let affinity = ["0-55,112-167", "56-111,168-223"];
    for (i, g) in gpus.iter().enumerate() {
        let mut cells = vec![format!("GPU{i}")];
        for (j, _) in gpus.iter().enumerate() {
            cells.push(if i == j {
                " X ".to_owned()
            } else {
                format!("NV{links}")
            });
        }
        for n in 0..nics {
            cells.push(nic_rel(g.index as usize, n).to_owned());
        }
        let sock = socket(g.index as usize);
        cells.push(affinity[sock].to_owned());
        cells.push(sock.to_string());
        cells.push(String::new());
        cells.push("N/A".to_owned());
        o.push_str(&cells.join("\t"));
        o.push('\n');
    }
    for n in 0..nics {
        let mut cells = vec![format!("NIC{n}")];
        for g in &gpus {
            cells.push(nic_rel(g.index as usize, n).to_owned());
        }
        for m in 0..nics {
            cells.push(if m == n {
                " X ".to_owned()
            } else {
                nic_rel(m, n).to_owned()
            });
        }
        o.push_str(&cells.join("\t"));
        o.push('\n');
    }
    o.push_str(TOPO_LEGEND);
    if nics > 0 {
        o.push_str("\nNIC Legend:\n\n");
        for p in &ctx.hw.ib_ports {
            o.push_str(&format!("  NIC{}: {}\n", p.index, p.name()));
        }
    }
    o.push('\n');
    ToolRun::ok(o)
}

fn nvlink(ctx: &ToolCtx, args: &[&str]) -> ToolRun {
    let mut ids: Option<Vec<usize>> = None;
    let mut status = false;
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            "-s" | "--status" => status = true,
            "-i" | "--id" => {
                i += 1;
                ids = args
                    .get(i)
                    .and_then(|v| v.split(',').map(|s| s.parse().ok()).collect());
            }
            _ => return ToolRun::done(2, INVALID_ARGS, ""),
        }
        i += 1;
    }
    if !status {
        return ToolRun::done(2, INVALID_ARGS, "");
    }
    let links = ctx.hw.profile.gpu.nvlink.links_per_gpu;
    let speed = ctx.hw.profile.gpu.nvlink.link_gbps;
    let mut o = String::new();
    for (idx, g) in ctx.hw.present_gpus().enumerate() {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&idx)) {
            continue;
        }
        o.push_str(&format!(
            "GPU {idx}: {} (UUID: {})\n",
            ctx.hw.profile.gpu.model,
            g.uuid_string()
        ));
        for l in 0..links {
            if l < 32 && g.nvlinks_down & (1 << l) != 0 {
                o.push_str(&format!("\t Link {l}: <inactive>\n"));
            } else {
                o.push_str(&format!("\t Link {l}: {speed:.3} GB/s\n"));
            }
        }
    }
    ToolRun::ok(o)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::sim::hw::HwFault;
    use crate::sim::hw::tests::{h100, profile};

    /// Tags open and close in order (a small well-formedness check).
    pub(crate) fn balanced_xml(text: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').ok_or("unclosed <")? + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> without opening"))?;
                if open != name {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else {
                let name = tag.split_whitespace().next().unwrap_or_default();
                stack.push(name.to_owned());
            }
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed: {stack:?}"))
        }
    }

    #[test]
    fn fails_without_driver_then_works_after_install_and_reboot() {
        let mut b = Bench::bare("node001", &h100());
        let r = b.run("nvidia-smi");
        assert_eq!(r.code, 9);
        assert_eq!(r.stdout(), super::NO_DRIVER);
        let r = b.run("apt-get install -y nvidia-driver-570-server-open");
        assert_eq!(r.code, 0, "{}", r.stderr);
        // Installed, not loaded yet.
        assert_eq!(b.run("nvidia-smi -L").code, 9);
        let r = b.run("reboot");
        assert_eq!(r.effect, Some(super::super::Effect::Reboot));
        b.sw.boot(b.now);
        let r = b.run("nvidia-smi");
        assert_eq!(r.code, 0);
        let out = r.stdout();
        assert!(out.contains("Driver Version: 570.133.20"), "{out}");
        assert!(out.contains("CUDA Version: 12.8"), "{out}");
        for line in out.lines().skip(1) {
            assert!(
                line.is_empty() || line.chars().count() == 91,
                "{line:?} {}",
                line.len()
            );
        }
        assert_eq!(out.matches("NVIDIA H100 80GB HBM3").count(), 8);
    }

    #[test]
    fn modprobe_loads_without_reboot() {
        let mut b = Bench::bare("n", &h100());
        assert_eq!(b.run("modprobe nvidia").code, 1);
        b.run("apt-get install -y nvidia-driver-570-server-open");
        assert_eq!(b.run("modprobe nvidia").code, 0);
        assert_eq!(b.run("nvidia-smi -L").code, 0);
    }

    #[test]
    fn table_matches_the_real_layout() {
        let mut b = Bench::ready("node005");
        let out = b.run("nvidia-smi").stdout();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "Fri Nov  8 02:11:26 2024");
        assert_eq!(
            lines[3],
            "|-----------------------------------------+------------------------+----------------------+"
        );
        assert!(lines[8].starts_with("|   0  NVIDIA H100 80GB HBM3           On |   00000000:18:00.0 Off |                    0 |"), "{}", lines[8]);
        assert!(lines[9].starts_with("| N/A   3"), "{}", lines[9]);
        assert!(
            lines[9].ends_with("W /  700W |       1MiB /  81559MiB |      0%      Default |"),
            "{}",
            lines[9]
        );
        assert!(out.contains("|  No running processes found                                                             |"));
        b.load = 1.0;
        let busy = b.run("nvidia-smi").stdout();
        for line in busy.lines().skip(1) {
            assert!(line.is_empty() || line.chars().count() == 91, "{line:?}");
        }
        assert!(busy.contains("./gpu_burn"));
    }

    #[test]
    fn csv_has_the_requested_columns_in_order() {
        let mut b = Bench::ready("node001");
        let r = b.run("nvidia-smi --query-gpu=index,name,memory.total,power.draw,clocks.sm,remapped_rows.pending --format=csv");
        assert_eq!(r.code, 0);
        let out = r.stdout();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "index, name, memory.total [MiB], power.draw [W], clocks.current.sm [MHz], remapped_rows.pending"
        );
        assert_eq!(lines.len(), 9);
        let row: Vec<&str> = lines[3].split(", ").collect();
        assert_eq!(row[0], "2");
        assert_eq!(row[1], "NVIDIA H100 80GB HBM3");
        assert_eq!(row[2], "81559 MiB");
        assert!(row[3].ends_with(" W"));
        assert_eq!(row[4], "345 MHz");
        assert_eq!(row[5], "No");

        let out = b
            .run("nvidia-smi --query-gpu=uuid,temperature.gpu,ecc.errors.uncorrected.volatile.total,pcie.link.gen.current,pcie.link.width.current,vbios_version,driver_version,serial,pci.bus_id,power.limit,memory.used,utilization.gpu,remapped_rows.failure --format=csv,noheader,nounits")
            .stdout();
        let first: Vec<&str> = out.lines().next().unwrap().split(", ").collect();
        assert_eq!(first.len(), 13);
        assert!(first[0].starts_with("GPU-"));
        assert_eq!(&first[2..5], ["0", "5", "16"]);
        assert_eq!(first[6], "570.133.20");
        assert_eq!(first[8], "00000000:18:00.0");
        assert_eq!(first[9], "700.00");
        assert_eq!(first[12], "No");
    }

    #[test]
    fn unknown_csv_field_is_refused_like_nvidia_smi() {
        let mut b = Bench::ready("n");
        let r = b.run("nvidia-smi --query-gpu=index,device_minor --format=csv");
        assert_eq!(r.code, 2);
        assert_eq!(
            r.stdout(),
            "Field \"device_minor\" is not a valid field to query.\n\n"
        );
        assert_eq!(r.stderr, "");
    }

    #[test]
    fn faults_show_in_queries() {
        let mut b = Bench::ready("n");
        b.hw.apply(&HwFault::GpuMissing { gpu: 1 }).unwrap();
        b.hw.apply(&HwFault::EccUncorrectable { gpu: 3 }).unwrap();
        b.hw.apply(&HwFault::RowRemapPending { gpu: 4 }).unwrap();
        b.hw.apply(&HwFault::HotGpu { gpu: 6, temp_c: 94 }).unwrap();
        b.hw.apply(&HwFault::NvlinkDown { gpu: 7, link: 3 })
            .unwrap();
        let out = b.run("nvidia-smi -L").stdout();
        assert_eq!(out.lines().count(), 7);
        let out = b
            .run("nvidia-smi --query-gpu=index,pci.bus_id,ecc.errors.uncorrected.volatile.total,remapped_rows.pending --format=csv,noheader")
            .stdout();
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[1], "1, 00000000:3A:00.0, 0, No");
        assert_eq!(rows[2], "2, 00000000:5D:00.0, 2, No");
        assert_eq!(rows[3], "3, 00000000:9A:00.0, 0, Yes");
        b.load = 1.0;
        let q = b.run("nvidia-smi -q -d TEMPERATURE,PERFORMANCE").stdout();
        assert!(
            q.contains("GPU Current Temp                  : 94 C"),
            "{q}"
        );
        assert!(q.contains("HW Thermal Slowdown           : Active"), "{q}");
        assert!(!q.contains("Product Name"));
        let full = b.run("nvidia-smi -q").stdout();
        assert!(full.contains("            DRAM Uncorrectable            : 2\n"));
        assert!(full.contains("        Pending                           : Yes"));
        let nv = b.run("nvidia-smi nvlink -s").stdout();
        assert_eq!(nv.matches("<inactive>").count(), 1);
        assert!(nv.contains("GPU 6: NVIDIA H100 80GB HBM3"));
        assert!(nv.contains("\t Link 3: <inactive>\n"));
        assert!(nv.contains("\t Link 17: 26.562 GB/s\n"));
        let topo = b.run("nvidia-smi topo -m").stdout();
        assert!(topo.starts_with("\t\x1b[4mGPU0\tGPU1\tGPU2\tGPU3\tGPU4\tGPU5\tGPU6\tNIC0"));
        assert!(topo.contains("GPU0\t X \tNV18\tNV18"));
        assert!(topo.contains("  NIC7: mlx5_7\n"));
    }

    #[test]
    fn xml_is_well_formed_in_both_layouts() {
        let mut b = Bench::ready("n");
        let x = b.run("nvidia-smi -q -x").stdout();
        assert!(x.contains("nvsmi_device_v12.dtd"));
        balanced_xml(&x).unwrap();
        assert_eq!(x.matches("<gpu id=").count(), 8);
        assert!(x.contains("<product_name>NVIDIA H100 80GB HBM3</product_name>"));
        assert!(x.contains("    <attached_gpus>8</attached_gpus>"));
        // The 590 driver writes DTD v13.
        let mut b = Bench::bare("n", &profile("hgx-b200-180gb-8x"));
        b.run("apt-get install -y nvidia-driver-590-server-open");
        b.sw.boot(b.now);
        b.hw.apply(&HwFault::EccUncorrectable { gpu: 0 }).unwrap();
        let x = b.run("nvidia-smi -x -q").stdout();
        assert!(x.contains("nvsmi_device_v13.dtd"));
        assert!(x.contains("\t\t<product_name>NVIDIA B200</product_name>"));
        assert!(x.contains("<dram_uncorrectable>2</dram_uncorrectable>"));
        balanced_xml(&x).unwrap();
    }

    #[test]
    fn the_judge_reads_the_simulated_load() {
        use crate::judge::{LoadState, NvidiaSmiLimits, judge_nvidia_smi};
        for cmd in ["nvidia-smi -q -x", "nvidia-smi -q"] {
            let mut b = Bench::ready("n");
            let idle = judge_nvidia_smi(&b.run(cmd).stdout(), &NvidiaSmiLimits::default()).unwrap();
            assert_eq!(idle.metrics.load, LoadState::Idle, "{cmd}");
            b.load = 1.0;
            let busy = judge_nvidia_smi(&b.run(cmd).stdout(), &NvidiaSmiLimits::default()).unwrap();
            assert_eq!(busy.metrics.load, LoadState::UnderLoad, "{cmd}");
            // The simulated links never train down, idle or busy.
            assert!(busy.metrics.warnings.is_empty(), "{cmd}");
            assert!(idle.metrics.warnings.is_empty(), "{cmd}");
        }
    }

    #[test]
    fn output_is_deterministic_per_node() {
        let a = Bench::ready("node042").run("nvidia-smi -q").stdout();
        let b = Bench::ready("node042").run("nvidia-smi -q").stdout();
        let c = Bench::ready("node043").run("nvidia-smi -q").stdout();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn persistence_mode_and_version_mismatch() {
        let mut b = Bench::ready("n");
        let out = b.run("nvidia-smi -pm 0").stdout();
        assert!(out.starts_with("Disabled persistence mode for GPU 00000000:18:00.0.\n"));
        assert!(out.ends_with("All done.\n"));
        assert!(!b.sw.persistence_mode);
        b.run("apt-get install -y nvidia-driver-580-server-open");
        let r = b.run("nvidia-smi");
        assert_eq!(r.code, 18);
        assert!(r.stdout().contains("Driver/library version mismatch"));
    }
}
