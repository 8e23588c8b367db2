//! Judge for kernel logs (`dmesg`, `journalctl -k`): NVIDIA driver Xid
//! lines and NVSwitch SXid lines.
//!
//! `NVRM: Xid (PCI:0000:9b:00): 119, pid=..., name=..., <text>` (older
//! drivers omit `PCI:`), `nvidia-nvswitch3: SXid (PCI:0000:86:00.0): 12028,
//! Non-fatal, <text>`.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "dmesg";

/// Xids that fail a node when the caller passes no list of its own. From
/// NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors, "Xid Errors"
/// table and its "immediate action" column): 48 double-bit ECC error,
/// 61/62 internal micro-controller breakpoint/halt, 63/64 row-remapping
/// event/failure, 74 NVLink error, 79 GPU has fallen off the bus, 92 high
/// single-bit ECC rate, 94/95 contained/uncontained ECC error, 119/120 GSP
/// RPC timeout/error, 121 C2C link error, 140 unrecovered ECC error.
/// Application faults (13, 31, 43, 45) are left out: they are usually the
/// program's bug, not the hardware's.
pub const DEFAULT_FATAL_XIDS: &[u32] =
    &[48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 121, 140];

/// One PCI address and code, with how often it was logged.
#[derive(Debug, Default)]
struct Seen {
    count: usize,
    first_text: String,
}

/// `Xid (PCI:0000:9b:00): 119, rest` -> ("0000:9b:00", 119, rest).
fn parse_xid<'a>(line: &'a str, marker: &str) -> Option<(String, u32, &'a str)> {
    let at = line.find(marker)?;
    let rest = line.get(at + marker.len()..)?.trim_start();
    let rest = rest.strip_prefix('(')?;
    let (addr, rest) = rest.split_once("):")?;
    let addr = addr.trim().trim_start_matches("PCI:").to_owned();
    let (code, text) = rest.split_once(',').unwrap_or((rest, ""));
    Some((addr, code.trim().parse().ok()?, text.trim()))
}

/// The message of an Xid line without its `pid=..., name=...,` fields.
fn message(text: &str) -> &str {
    let mut text = text;
    for field in ["pid=", "name="] {
        if let Some(rest) = text.trim_start().strip_prefix(field) {
            text = rest.split_once(',').map_or("", |(_, r)| r);
        }
    }
    text.trim()
}

/// Whether a line looks like a kernel log line: a `[  12.345678]`
/// timestamp, a `dmesg -T` one (`[Sun Feb 23 16:24:18 2025]`), or
/// `kernel:` (journalctl, syslog) or `NVRM:` (the NVIDIA driver) as a word.
/// Brackets alone are not enough: any text may hold `[…]`.
fn is_kernel_line(line: &str) -> bool {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('[')
        && let Some((stamp, _)) = rest.split_once(']')
    {
        let stamp = stamp.trim();
        let monotonic = stamp.split_once('.').is_some_and(|(s, f)| {
            !s.is_empty()
                && !f.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && f.bytes().all(|b| b.is_ascii_digit())
        });
        const DAYS: [&str; 7] = ["Mon ", "Tue ", "Wed ", "Thu ", "Fri ", "Sat ", "Sun "];
        let wall = DAYS.iter().any(|d| stamp.starts_with(d))
            && stamp
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b':');
        if monotonic || wall {
            return true;
        }
    }
    t.contains(" kernel: ") || t.contains("NVRM: ")
}

/// Whether `text` holds bytes no log has: NUL, other control characters
/// than tab, CR and ESC, or the replacement character that lossy decoding
/// leaves for bytes that were not UTF-8.
fn is_binary(text: &str) -> bool {
    text.chars()
        .any(|c| c == '\u{fffd}' || (c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{1b}')))
}

/// Judges a kernel log for Xid and SXid errors.
///
/// Fails on any Xid whose code is in `fatal` (the profile's list, or
/// [`DEFAULT_FATAL_XIDS`]), naming the PCI address, the GPU's serial or
/// UUID when the log has them, the code, how often, and the first message.
/// Fails on an SXid marked `Fatal` (NVIDIA Fabric Manager user guide,
/// "NVSwitch SXid errors": fatal SXids need the NVSwitch and its GPUs
/// reset). Other Xids and non-fatal SXids are listed under `warnings`.
/// A clean log passes; text with no kernel log lines is a [`ParseError`].
///
/// Metrics: `xids` (`pci`, `code`, `count`, `text`, `fatal`), `sxids`
/// (same), `warnings`.
pub fn judge_dmesg(text: &str, fatal: &[u32]) -> Result<Judgement, ParseError> {
    let mut xids: BTreeMap<(String, u32), Seen> = BTreeMap::new();
    let mut sxids: BTreeMap<(String, u32), Seen> = BTreeMap::new();
    // `NVRM: GPU at PCI:0000:9b:00: GPU-<uuid>` and the serial line after it.
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut last_gpu: Option<String> = None;
    let mut kernel_lines = 0;
    if is_binary(text) {
        return Err(ParseError {
            expected: "a kernel log as text (this input holds binary data: NUL, control \
                       characters or bytes that are not UTF-8)"
                .to_owned(),
        });
    }
    for line in split_lines(text) {
        if !is_kernel_line(line) {
            continue;
        }
        kernel_lines += 1;
        if let Some((addr, code, rest)) = parse_xid(line, "SXid") {
            let seen = sxids.entry((addr, code)).or_default();
            seen.count += 1;
            if seen.count == 1 {
                seen.first_text = rest.to_owned();
            }
        } else if let Some((addr, code, rest)) = parse_xid(line, "Xid") {
            let seen = xids.entry((addr, code)).or_default();
            seen.count += 1;
            if seen.count == 1 {
                seen.first_text = message(rest).to_owned();
            }
        } else if let Some((_, rest)) = line.split_once("NVRM: GPU at PCI:") {
            if let Some((addr, uuid)) = rest.split_once(": ") {
                ids.insert(addr.trim().to_owned(), uuid.trim().to_owned());
                last_gpu = Some(addr.trim().to_owned());
            }
        } else if let Some((_, serial)) = line.split_once("NVRM: GPU Board Serial Number:")
            && let Some(addr) = &last_gpu
        {
            ids.insert(addr.clone(), format!("serial {}", serial.trim()));
        }
    }
    if kernel_lines == 0 {
        return Err(ParseError {
            expected: "a kernel log (dmesg or journalctl -k lines such as '[  12.345678] ...' \
                       or 'NVRM: Xid (PCI:0000:9b:00): 79, ...')"
                .to_owned(),
        });
    }

    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let gpu = |addr: &str| match ids.get(addr) {
        Some(id) => format!("GPU at PCI {addr} ({id})"),
        None => format!("GPU at PCI {addr}"),
    };
    let times = |n: usize| {
        if n == 1 {
            String::new()
        } else {
            format!(" ({n} times)")
        }
    };
    // A fatal one fails the node with its advice; the rest only warn.
    let mut sort = |addr: &str, code: u32, seen: &Seen, reason: String, advice: Option<&str>| {
        let is_fatal = advice.is_some();
        match advice {
            Some(advice) => failures.push(format!("{reason} ({advice})")),
            None => warnings.push(reason),
        }
        json!({
            "pci": addr, "code": code, "count": seen.count,
            "text": seen.first_text, "fatal": is_fatal,
        })
    };
    let mut xid_json = Vec::new();
    for ((addr, code), seen) in &xids {
        let reason = format!(
            "{}: Xid {code}{}: {}",
            gpu(addr),
            times(seen.count),
            seen.first_text
        );
        let advice = fatal
            .contains(code)
            .then_some("see NVIDIA's Xid catalog for the action; usually reset or replace the GPU");
        xid_json.push(sort(addr, *code, seen, reason, advice));
    }
    let mut sxid_json = Vec::new();
    for ((addr, code), seen) in &sxids {
        let reason = format!(
            "NVSwitch at PCI {addr}: SXid {code}{}: {}",
            times(seen.count),
            seen.first_text
        );
        let advice = (seen.first_text.trim_start().starts_with("Fatal"))
            .then_some("fatal SXid: reset the NVSwitch tray and its GPUs");
        sxid_json.push(sort(addr, *code, seen, reason, advice));
    }
    let metrics = json!({
        "xids": xid_json,
        "sxids": sxid_json,
        "warnings": warnings,
        "kernel_lines": kernel_lines,
    });
    Ok(Judgement::decide(KIND, failures, Vec::new(), metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    #[test]
    fn old_format_and_sxid() {
        let log = "[ 5.1] NVRM: Xid (0000:3b:00): 79, GPU has fallen off the bus.\n\
                   [ 6.0] nvidia-nvswitch3: SXid (PCI:0000:86:00.0): 12028, Non-fatal, Link 32 egress error\n\
                   [ 7.0] nvidia-nvswitch1: SXid (PCI:0000:87:00.0): 20034, Fatal, Link 30 LTSSM Fault Up\n\
                   [ 8.0] NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=python, Graphics Exception\n";
        let j = judge_dmesg(log, DEFAULT_FATAL_XIDS).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(
            j.reasons[0],
            "GPU at PCI 0000:3b:00: Xid 79: GPU has fallen off the bus. (see NVIDIA's Xid catalog for the action; usually reset or replace the GPU)"
        );
        assert!(j.reasons[1].contains("SXid 20034"));
        let warnings = j.metrics["warnings"].to_string();
        assert!(
            warnings.contains("Xid 13: Graphics Exception"),
            "{warnings}"
        );
        assert!(warnings.contains("SXid 12028"), "{warnings}");
    }

    #[test]
    fn clean_log_passes_and_prose_is_refused() {
        let j = judge_dmesg("[    0.000000] Linux version 6.8.0\n", DEFAULT_FATAL_XIDS).unwrap();
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(judge_dmesg("hello\nworld\n", DEFAULT_FATAL_XIDS).is_err());
        assert!(judge_dmesg("NVRM: Xid (PCI:", &[]).is_ok());
    }

    #[test]
    fn brackets_or_binary_data_are_not_a_log() {
        // Brackets alone: an application log, a config file.
        assert!(
            judge_dmesg(
                "[INFO] started
[main]
key = 1
",
                &[]
            )
            .is_err()
        );
        // Random bytes (decoded lossily, as the CLI reads a file) with a
        // timestamped line planted among them.
        let mut noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        noise.extend_from_slice(b"\n[    1.000000] Linux version 6.8.0\n");
        let text = String::from_utf8_lossy(&noise);
        let err = judge_dmesg(&text, &[]).unwrap_err();
        assert!(err.expected.contains("binary data"), "{}", err.expected);
        // Each timestamp form a real log uses is still read.
        for line in [
            "[   12.345678] nvidia: loading out-of-tree module",
            "[Sun Feb 23 16:24:18 2025] NVRM: loading NVIDIA UNIX Open Kernel Module",
            "Feb 23 16:24:18 gpu01 kernel: pci 0000:9b:00.0: [10de:2330]",
        ] {
            assert!(judge_dmesg(line, &[]).is_ok(), "{line}");
        }
    }
}
