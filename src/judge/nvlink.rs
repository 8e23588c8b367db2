//! Judge for NVLink link state: `nvidia-smi nvlink -s` (per GPU, one
//! `Link N: <speed> GB/s` or `Link N: <inactive>` line per link) and
//! `dcgmi nvlink -s` (per `gpuId N:` a row of `U`/`D`/`X`/`_`, with the key
//! `Up=U, Down=D, Disabled=X, Not Supported=_`).
//!
//! Rules follow NVIDIA's health-validation NVLink checks
//! (<https://docs.nvidia.com/health-validation/reference/checks/nvlink>):
//! `nvlink_active` fails a GPU with any inactive link, and
//! `nvlink_bandwidth_count_speed` fails a GPU whose active link count or
//! per-link speed differs from what the model should have (18 links at
//! 26.562 GB/s on H100).

use serde_json::json;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "nvlink";

/// What the caller expects of each GPU's NVLinks. The default judges the
/// links' state only.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NvlinkLimits {
    /// Links per GPU that must be up.
    pub links_per_gpu: Option<u32>,
    /// Per-link speed, GB/s, as `nvidia-smi nvlink -s` prints it.
    pub link_gbps: Option<f64>,
}

/// One link as read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    /// Up; the speed when the tool prints one (`nvidia-smi`).
    Up(Option<f64>),
    /// Inactive (`nvidia-smi`) or `D` (`dcgmi`).
    Down,
    /// `X` in `dcgmi`: disabled.
    Disabled,
    /// `_` in `dcgmi`: the GPU has no such link.
    NotSupported,
}

struct Gpu {
    index: u32,
    name: Option<String>,
    links: Vec<(u32, Link)>,
}

/// `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)`.
fn smi_gpu_header(line: &str) -> Option<(u32, Option<String>)> {
    let rest = line.trim().strip_prefix("GPU ")?;
    let (idx, rest) = rest.split_once(':')?;
    let index = idx.trim().parse().ok()?;
    let name = rest
        .split(" (UUID")
        .next()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    Some((index, name))
}

/// `Link 3: 26.562 GB/s` or `Link 3: <inactive>`.
fn smi_link(line: &str) -> Option<(u32, Link)> {
    let rest = line.trim().strip_prefix("Link ")?;
    let (n, value) = rest.split_once(':')?;
    let n = n.trim().parse().ok()?;
    let value = value.trim();
    if value.contains("inactive") {
        return Some((n, Link::Down));
    }
    let speed = value.strip_suffix("GB/s")?.trim().parse().ok()?;
    Some((n, Link::Up(Some(speed))))
}

fn parse_smi(text: &str) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = Vec::new();
    for line in split_lines(text) {
        if let Some((index, name)) = smi_gpu_header(line) {
            gpus.push(Gpu {
                index,
                name,
                links: Vec::new(),
            });
        } else if let Some(link) = smi_link(line)
            && let Some(gpu) = gpus.last_mut()
        {
            gpu.links.push(link);
        }
    }
    gpus
}

fn parse_dcgmi(text: &str) -> Option<Vec<Gpu>> {
    if !text.contains("NvLink Link Status") {
        return None;
    }
    let mut gpus: Vec<Gpu> = Vec::new();
    let mut in_gpus = false;
    let mut current: Option<u32> = None;
    for line in split_lines(text) {
        let t = line.trim();
        if t == "GPUs:" {
            in_gpus = true;
            continue;
        }
        if t.starts_with("NvSwitches:") || t.starts_with("Key:") {
            in_gpus = false;
            continue;
        }
        if !in_gpus {
            continue;
        }
        if let Some(id) = t
            .strip_prefix("gpuId ")
            .and_then(|r| r.strip_suffix(':'))
            .and_then(|r| r.trim().parse().ok())
        {
            current = Some(id);
            gpus.push(Gpu {
                index: id,
                name: None,
                links: Vec::new(),
            });
            continue;
        }
        let states: Option<Vec<Link>> = t
            .split_whitespace()
            .map(|s| match s {
                "U" => Some(Link::Up(None)),
                "D" => Some(Link::Down),
                "X" => Some(Link::Disabled),
                "_" => Some(Link::NotSupported),
                _ => None,
            })
            .collect();
        if let (Some(states), Some(_), Some(gpu)) = (states, current, gpus.last_mut())
            && !states.is_empty()
        {
            let start = gpu.links.len() as u32;
            gpu.links.extend(
                states
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| (start + i as u32, s)),
            );
        }
    }
    Some(gpus)
}

/// Judges `nvidia-smi nvlink -s` or `dcgmi nvlink -s` output.
///
/// Fails on a link reported inactive (`<inactive>`) or down (`D`), naming
/// GPU and link; with `limits`, on a GPU with fewer active links than
/// expected, or an active link slower than expected (a link trained at a
/// lower speed). A link `dcgmi` calls disabled (`X`) is a warning without
/// limits (a board may leave links unused) and counts as not up with them.
/// Text with neither format, or with no link at all, is a [`ParseError`].
///
/// Metrics: `format` (`nvidia-smi`, `dcgmi`), `gpus`, `per_gpu` (`gpu`,
/// `name`, `links`, `up`, `down`, `disabled`, `min_gbps`), `warnings`.
pub fn judge_nvlink(text: &str, limits: &NvlinkLimits) -> Result<Judgement, ParseError> {
    if text.trim().is_empty() {
        return Ok(no_nvlink(limits));
    }
    let (format, gpus) = match parse_dcgmi(text) {
        Some(g) => ("dcgmi", g),
        None => ("nvidia-smi", parse_smi(text)),
    };
    if gpus.is_empty() || gpus.iter().all(|g| g.links.is_empty()) {
        return Err(ParseError {
            expected: "NVLink status: 'nvidia-smi nvlink -s' ('GPU N: …' then 'Link L: … GB/s' \
                       lines) or 'dcgmi nvlink -s' (the 'NvLink Link Status' table)"
                .to_owned(),
        });
    }
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let mut per_gpu = Vec::new();
    for gpu in &gpus {
        let who = match &gpu.name {
            Some(n) => format!("GPU {} ({n})", gpu.index),
            None => format!("GPU {}", gpu.index),
        };
        let down: Vec<u32> = gpu
            .links
            .iter()
            .filter(|(_, l)| *l == Link::Down)
            .map(|(n, _)| *n)
            .collect();
        let disabled: Vec<u32> = gpu
            .links
            .iter()
            .filter(|(_, l)| *l == Link::Disabled)
            .map(|(n, _)| *n)
            .collect();
        let up = gpu
            .links
            .iter()
            .filter(|(_, l)| matches!(l, Link::Up(_)))
            .count() as u32;
        // nvlink_active: no inactive link is tolerated (max_inactive_nvlinks 0).
        for n in &down {
            failures.push(format!(
                "{who}: NVLink {n} is down: reseat the GPU or check the baseboard/NVSwitch tray"
            ));
        }
        if !disabled.is_empty() && limits.links_per_gpu.is_none() {
            warnings.push(format!(
                "{who}: NVLink {} disabled",
                disabled
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // nvlink_bandwidth_count_speed: the count of active links…
        if let Some(want) = limits.links_per_gpu
            && up < want
            && down.is_empty()
        {
            failures.push(format!("{who}: {up} NVLinks up, expected {want}"));
        }
        // …and each link's speed (1% slack for rounding in the print).
        let speeds: Vec<(u32, f64)> = gpu
            .links
            .iter()
            .filter_map(|(n, l)| match l {
                Link::Up(Some(s)) => Some((*n, *s)),
                _ => None,
            })
            .collect();
        if let Some(want) = limits.link_gbps {
            let slow: Vec<String> = speeds
                .iter()
                .filter(|(_, s)| *s < want * 0.99)
                .map(|(n, s)| format!("link {n} at {s} GB/s"))
                .collect();
            if !slow.is_empty() {
                failures.push(format!(
                    "{who}: {}, expected {want} GB/s per link",
                    slow.join(", ")
                ));
            }
        }
        let min = speeds.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
        per_gpu.push(json!({
            "gpu": gpu.index,
            "name": gpu.name,
            "links": gpu.links.len(),
            "up": up,
            "down": down,
            "disabled": disabled,
            "min_gbps": min.is_finite().then_some(min),
        }));
    }
    let metrics = json!({
        "format": format,
        "gpus": gpus.len(),
        "per_gpu": per_gpu,
        "warnings": warnings,
    });
    Ok(Judgement::decide(KIND, failures, Vec::new(), metrics))
}

/// An empty `nvidia-smi nvlink -s` (exit 0) is what the driver prints when
/// no GPU has an NVLink to list: seen on a lone H200 SXM passed through to
/// a VM (driver 580.159.04). A verdict, not an unreadable output: it fails
/// a profile that expects links.
fn no_nvlink(limits: &NvlinkLimits) -> Judgement {
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    match limits.links_per_gpu {
        Some(want) if want > 0 => failures.push(format!(
            "no GPU lists any NVLink (empty 'nvidia-smi nvlink -s'), expected {want} per GPU: \
             a PCIe card, or a GPU passed through to a VM without its NVLink peers"
        )),
        _ => warnings.push("no GPU lists any NVLink".to_owned()),
    }
    let metrics = json!({
        "format": "nvidia-smi",
        "gpus": 0,
        "per_gpu": [],
        "warnings": warnings,
    });
    Judgement::decide(KIND, failures, Vec::new(), metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    #[test]
    fn empty_output_is_no_nvlink_not_unreadable() {
        // The real capture: a lone H200 in a VM prints nothing.
        let text = include_str!(
            "../../tests/fixtures/judge/nvlink/nvlink-s_1xH200_vm-passthrough_empty.txt"
        );
        let j = judge_nvlink(text, &NvlinkLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Pass);
        let hgx = NvlinkLimits {
            links_per_gpu: Some(18),
            link_gbps: Some(26.562),
        };
        let j = judge_nvlink(text, &hgx).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reasons[0].contains("expected 18 per GPU"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn inactive_link_fails_naming_gpu_and_link() {
        let text = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\n\t Link 0: 26.562 GB/s\n\
                    \t Link 1: <inactive>\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n\
                    \t Link 0: 26.562 GB/s\n\t Link 1: 26.562 GB/s\n";
        let j = judge_nvlink(text, &NvlinkLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(
            j.reasons,
            [
                "GPU 0 (NVIDIA H100 80GB HBM3): NVLink 1 is down: reseat the GPU or check the baseboard/NVSwitch tray"
            ]
        );
        let limits = NvlinkLimits {
            links_per_gpu: Some(2),
            link_gbps: Some(50.0),
        };
        let j = judge_nvlink(text, &limits).unwrap();
        assert_eq!(j.reasons.len(), 3, "{:?}", j.reasons);
    }

    #[test]
    fn dcgmi_down_and_disabled() {
        let text = "+----------------------+\n|  NvLink Link Status  |\n+----------------------+\n\
                    GPUs:\n    gpuId 0:\n        U D X _\nNvSwitches:\n    No NvSwitches found.\n";
        let j = judge_nvlink(text, &NvlinkLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].starts_with("GPU 0: NVLink 1 is down"));
        assert!(j.metrics["warnings"][0].to_string().contains("NVLink 2"));
    }

    #[test]
    fn other_text_is_refused() {
        assert!(judge_nvlink("GPU 0: NVIDIA H100\n", &NvlinkLimits::default()).is_err());
        assert!(judge_nvlink("Failed to initialize NVML\n", &NvlinkLimits::default()).is_err());
    }
}
