//! `dmesg [-T] [-l LEVELS]`: a kernel log since the last boot with the NVIDIA
//! driver's lines and NVRM Xid lines in the real format.

use super::{Tm, ToolCtx, ToolRun};
use crate::sim::hw::{NodeHardware, XidEvent};

/// Kernel log levels.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Err = 3,
    Warn = 4,
    Info = 6,
}

/// The message an Xid line carries after `pid=..., name=...,`.
fn xid_message(hw: &NodeHardware, x: &XidEvent, visible: Option<usize>) -> String {
    let g = &hw.gpus[x.gpu as usize];
    let n = visible.unwrap_or(x.gpu as usize);
    match x.code {
        79 => "GPU has fallen off the bus.".to_owned(),
        48 => "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.".to_owned(),
        63 => format!(
            "Row Remapper: New row (0x{:016x}) marked for remapping, reset gpu to activate.",
            0x1e5b8 + u64::from(x.gpu) * 0x1000
        ),
        64 => "Row Remapper: Failed to remap row (0x000000000001e5b8), no spare rows left.".to_owned(),
        74 => {
            let link = (0..32).find(|l| g.nvlinks_down & (1 << l) != 0).unwrap_or(0);
            format!("NVLink: fatal error detected on link {link}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)")
        }
        13 => "Graphics Exception: ESR 0x50df30=0x107000e 0x50df34=0x0 0x50df28=0x0 0x50df2c=0x0".to_owned(),
        31 => "Ch 00000008, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f2e_a4000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ".to_owned(),
        43 => "Ch 00000010".to_owned(),
        45 => "Ch 00000010".to_owned(),
        62 => "0000e8c4(0000e6b4) 00000000 00000000".to_owned(),
        92 => "High single-bit ECC error rate".to_owned(),
        94 => "Contained: SM (0x1). RST: No, D-RST: No".to_owned(),
        95 => "Uncontained: FBHUB. RST: Yes, D-RST: No".to_owned(),
        119 => format!(
            "Timeout after 6s of waiting for RPC response from GPU{n} GSP! Expected function 76 (GSP_RM_CONTROL) (0x20801813 0x4c)."
        ),
        120 => format!("GSP task exception: GPU{n} GSP error at 0x0000000000123abc"),
        140 => "Unrecovered ECC Error".to_owned(),
        143 => "GPU Initialization Failure".to_owned(),
        154 => "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)".to_owned(),
        code => format!("Xid {code} reported"),
    }
}

/// `PCI:0000:9b:00` as NVRM names a GPU.
fn pci(bus: u8) -> String {
    format!("0000:{bus:02x}:00")
}

/// (seconds since boot, level, text) of every line in the log.
fn lines(ctx: &ToolCtx) -> Vec<(f64, Level, String)> {
    let hw = ctx.hw;
    let uptime = ctx.now_unix.saturating_sub(ctx.sw.booted_at_unix) as f64;
    let mut out: Vec<(f64, Level, String)> = vec![
        (0.0, Level::Info, "Linux version 6.8.0-60-generic (buildd@lcy02-amd64-054) (x86_64-linux-gnu-gcc-13 (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0, GNU ld (GNU Binutils for Ubuntu) 2.42) #63-Ubuntu SMP PREEMPT_DYNAMIC Tue Apr 15 19:04:15 UTC 2025 (Ubuntu 6.8.0-60.63-generic 6.8.12)".to_owned()),
        (0.0, Level::Info, "Command line: BOOT_IMAGE=/vmlinuz-6.8.0-60-generic root=/dev/mapper/vg0-root ro quiet".to_owned()),
        (0.0, Level::Info, "DMI: Dell Inc. PowerEdge XE9680/0KK0RG, BIOS 2.3.5 09/10/2024".to_owned()),
        (1.204_211, Level::Info, "pci 0000:00:00.0: [8086:09a2] type 00 class 0x088000 PCIe Root Complex Integrated Endpoint".to_owned()),
    ];
    for p in &hw.ib_ports {
        let bus = hw
            .gpus
            .get(p.index as usize)
            .map_or(0x10 + p.index as u8, |g| g.pci_bus.wrapping_sub(1));
        let t = 4.1 + f64::from(p.index) * 0.21;
        out.push((
            t,
            Level::Info,
            format!("mlx5_core 0000:{bus:02x}:00.0: firmware version: 28.43.1014"),
        ));
        out.push((t + 0.9, Level::Info, format!("mlx5_core 0000:{bus:02x}:00.0: Rate limit: 127 rates are supported, range: 0Mbps to 195312Mbps")));
        if !p.up {
            out.push((
                t + 6.3,
                Level::Warn,
                format!(
                    "mlx5_core 0000:{bus:02x}:00.0: Port module event: module {}, Cable unplugged",
                    p.index
                ),
            ));
        }
    }
    if let Some(v) = &ctx.sw.loaded_driver {
        out.push((
            14.512_033,
            Level::Warn,
            "nvidia: loading out-of-tree module taints kernel.".to_owned(),
        ));
        out.push((
            14.602_117,
            Level::Info,
            "nvidia-nvlink: Nvlink Core is being initialized, major device number 508".to_owned(),
        ));
        for g in hw.gpus.iter().filter(|g| g.present) {
            out.push((
                14.61,
                Level::Info,
                format!(
                    "nvidia {}.0: enabling device (0000 -> 0002)",
                    pci(g.pci_bus)
                ),
            ));
        }
        out.push((14.710_422, Level::Info, format!("NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  {v}  Release Build  (dvs-builder@U22-I3-AE18-09-4)  Fri Mar 14 23:56:16 UTC 2025")));
        out.push((15.108_760, Level::Info, format!("nvidia-modeset: Loading NVIDIA UNIX Open Kernel Mode Setting Driver for x86_64  {v}  Release Build  (dvs-builder@U22-I3-AE18-09-4)  Fri Mar 14 23:39:52 UTC 2025")));
        let visible: Vec<u32> = hw.present_gpus().map(|g| g.index).collect();
        for (k, x) in hw.all_xids().iter().enumerate() {
            let Some(g) = hw.gpus.get(x.gpu as usize) else {
                continue;
            };
            let t = (38.0 + 2.5 * k as f64).min(uptime.max(16.0));
            let vis = visible.iter().position(|i| *i == x.gpu);
            if x.code == 79 {
                out.push((
                    t,
                    Level::Err,
                    format!("NVRM: GPU at PCI:{}: {}", pci(g.pci_bus), g.uuid_string()),
                ));
                out.push((
                    t,
                    Level::Err,
                    format!("NVRM: GPU Board Serial Number: {}", g.serial),
                ));
            }
            out.push((
                t,
                Level::Warn,
                format!(
                    "NVRM: Xid (PCI:{}): {}, pid='<unknown>', name=<unknown>, {}",
                    pci(g.pci_bus),
                    x.code,
                    xid_message(hw, x, vis)
                ),
            ));
            if x.code == 79 {
                out.push((
                    t,
                    Level::Err,
                    format!(
                        "NVRM: GPU {}.0: GPU has fallen off the bus.",
                        pci(g.pci_bus)
                    ),
                ));
            }
        }
    }
    out.retain(|(t, _, _)| *t <= uptime.max(0.0) || uptime <= 0.0);
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

pub(super) fn run(ctx: &mut ToolCtx, args: &[&str]) -> ToolRun {
    let mut human = false;
    let mut max_level: Option<Level> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        match a {
            "-T" | "--ctime" | "-H" | "--human" => human = true,
            "-l" | "--level" => {
                i += 1;
                let levels = args.get(i).copied().unwrap_or("");
                max_level = levels
                    .split(',')
                    .map(|l| match l {
                        "emerg" | "alert" | "crit" | "err" => Level::Err,
                        "warn" | "notice" => Level::Warn,
                        _ => Level::Info,
                    })
                    .max();
            }
            "-k" | "--kernel" | "-x" | "--decode" | "-c" | "--read-clear" | "-L" | "--color"
            | "--nopager" | "-P" | "-w" | "--follow" | "-t" | "--notime" => {}
            a if a.starts_with("--level=") => {
                max_level = Some(if a.contains("info") || a.contains("debug") {
                    Level::Info
                } else if a.contains("warn") || a.contains("notice") {
                    Level::Warn
                } else {
                    Level::Err
                });
            }
            _ => {
                return ToolRun::err(
                    1,
                    format!(
                        "dmesg: unrecognized option '{a}'\nTry 'dmesg --help' for more information.\n"
                    ),
                );
            }
        }
        i += 1;
    }
    let notime = args.iter().any(|a| *a == "-t" || *a == "--notime");
    let mut out = String::new();
    for (t, level, text) in lines(ctx) {
        // `-l` keeps exactly the named levels; warn/err both matter for Xids.
        if let Some(max) = max_level
            && level > max
        {
            continue;
        }
        if notime {
            out.push_str(&format!("{text}\n"));
        } else if human {
            let at = Tm::utc(ctx.sw.booted_at_unix + t as u64).asctime();
            out.push_str(&format!("[{at}] {text}\n"));
        } else {
            let secs = t.trunc() as u64;
            let micros = ((t - t.trunc()) * 1e6).round() as u64;
            out.push_str(&format!("[{secs:>5}.{micros:06}] {text}\n"));
        }
    }
    ToolRun::ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Bench;
    use crate::sim::hw::HwFault;

    #[test]
    fn xid_lines_follow_faults() {
        let mut b = Bench::ready("node001");
        let clean = b.run("dmesg").stdout();
        assert!(!clean.contains("Xid"));
        assert!(
            clean.contains("NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  570.133.20")
        );
        b.hw.apply(&HwFault::GpuMissing { gpu: 4 }).unwrap();
        b.hw.apply(&HwFault::EccUncorrectable { gpu: 0 }).unwrap();
        b.hw.apply(&HwFault::Xid { gpu: 7, code: 119 }).unwrap();
        let out = b.run("dmesg -T").stdout();
        assert!(out.contains("NVRM: Xid (PCI:0000:9a:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."), "{out}");
        assert!(out.contains("NVRM: Xid (PCI:0000:18:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error"));
        assert!(out.contains("NVRM: Xid (PCI:0000:db:00): 119, pid='<unknown>', name=<unknown>, Timeout after 6s of waiting for RPC response from GPU6 GSP!"));
        assert!(out.lines().all(|l| l.starts_with("[Fri Nov  8 0")), "{out}");
        let plain = b.run("dmesg").stdout();
        assert!(
            plain
                .lines()
                .any(|l| l.starts_with("[   38.000000] NVRM: Xid")),
            "{plain}"
        );
        let err = b.run("dmesg -l err,warn").stdout();
        assert!(err.contains("Xid") && !err.contains("Linux version"));
    }

    #[test]
    fn no_nvrm_lines_before_the_driver_loads() {
        let mut b = Bench::bare("n", &crate::sim::hw::tests::h100());
        b.hw.apply(&HwFault::Xid { gpu: 0, code: 79 }).unwrap();
        assert!(!b.run("dmesg").stdout().contains("NVRM"));
    }
}
