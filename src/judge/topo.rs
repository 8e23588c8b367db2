//! Judge for `nvidia-smi topo -m`: the GPU/NIC connection matrix (`X`,
//! `NV#`, `PIX`, `PXB`, `PHB`, `NODE`, `SYS`) with CPU and NUMA affinity
//! columns, tab- or space-separated, old (no NUMA columns) or new, with or
//! without the ANSI underline some drivers put on the header row.

use serde_json::json;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "topo";

/// What the caller expects of the node. The default reads the matrix and
/// judges only that it is whole.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TopoLimits {
    /// GPUs the matrix must show.
    pub gpu_count: Option<u32>,
    /// NVLinks every GPU pair must be joined by (`NV18` on an NVSwitch
    /// board, where every pair sees the GPU's full set of links).
    pub nvlinks_per_pair: Option<u32>,
    /// Compute NICs the node has; when there is at least one per GPU, each
    /// GPU must have a NIC behind its own PCIe switch (`PIX` or `PXB`).
    pub compute_nics: Option<u32>,
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The matrix: column names, then per row its name and cells.
struct Matrix {
    columns: Vec<String>,
    rows: Vec<(String, Vec<String>)>,
}

fn is_device(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    name.strip_prefix("GPU").is_some_and(digits) || name.strip_prefix("NIC").is_some_and(digits)
}

fn parse(text: &str) -> Option<Matrix> {
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for raw in split_lines(text) {
        let line = strip_ansi(raw);
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = tokens.first() else {
            if columns.is_some() && !rows.is_empty() {
                break; // the legend follows the matrix after a blank line
            }
            continue;
        };
        match &columns {
            None if *first == "GPU0" && !line.starts_with("GPU0") => {
                // The header: device names, then the affinity titles.
                columns = Some(
                    tokens
                        .iter()
                        .take_while(|t| is_device(t))
                        .map(|t| (*t).to_owned())
                        .collect(),
                );
            }
            Some(cols) if is_device(first) => {
                // Cells: one per device column (`X` may carry spaces).
                let cells: Vec<String> = tokens
                    .iter()
                    .skip(1)
                    .take(cols.len())
                    .map(|t| (*t).to_owned())
                    .collect();
                rows.push(((*first).to_owned(), cells));
            }
            _ => {}
        }
    }
    let columns = columns?;
    (!rows.is_empty()).then_some(Matrix { columns, rows })
}

/// Judges `nvidia-smi topo -m` output.
///
/// Integrity: every GPU row has a cell for every device column and `X` on
/// its own column, else `Unknown` (a cut or mangled capture). With `limits`:
/// the GPU count; on NVSwitch boards every GPU pair joined by the expected
/// `NV#` (the legend: "a bonded set of # NVLinks"; fewer means links are
/// down, `SYS`/`NODE` means the pair talks over PCIe); and, when the node
/// has a compute NIC per GPU, each GPU with a NIC at `PIX` or `PXB`. NVIDIA's
/// GPUDirect RDMA manual ("System Requirements and Recommendations") asks
/// for the HCA and the GPU on the same PCIe switch for best performance; a
/// GPU whose nearest NIC is across the CPU (`PHB`, `NODE`, `SYS`) halves
/// its share of cross-node bandwidth. Text with no matrix is a
/// [`ParseError`].
///
/// Metrics: `gpus`, `nics`, `per_gpu` (`gpu`, `nvlinks` (min over peers),
/// `nearest_nic`, `nic_link`), `warnings`.
pub fn judge_topo(text: &str, limits: &TopoLimits) -> Result<Judgement, ParseError> {
    let m = parse(text).ok_or_else(|| ParseError {
        expected: "'nvidia-smi topo -m' output: a header row starting with GPU0 and one row \
                   per GPU/NIC"
            .to_owned(),
    })?;
    let gpu_cols: Vec<usize> = (0..m.columns.len())
        .filter(|i| m.columns[*i].starts_with("GPU"))
        .collect();
    let nic_cols: Vec<usize> = (0..m.columns.len())
        .filter(|i| m.columns[*i].starts_with("NIC"))
        .collect();
    let gpu_rows: Vec<&(String, Vec<String>)> = m
        .rows
        .iter()
        .filter(|(n, _)| n.starts_with("GPU"))
        .collect();

    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    let mut warnings = Vec::new();
    let mut per_gpu = Vec::new();
    for (name, cells) in &gpu_rows {
        if cells.len() < m.columns.len()
            || m.columns
                .iter()
                .zip(cells)
                .all(|(c, v)| c != name || v != "X")
        {
            inconclusive.push(format!(
                "{name}: its row does not have a cell per device and X on its own column: a cut capture?"
            ));
            continue;
        }
        let nv: Vec<Option<u32>> = gpu_cols
            .iter()
            .filter(|i| &m.columns[**i] != name)
            .map(|i| cells[*i].strip_prefix("NV").and_then(|n| n.parse().ok()))
            .collect();
        let min_nv = nv.iter().map(|n| n.unwrap_or(0)).min();
        if let Some(want) = limits.nvlinks_per_pair {
            let weak: Vec<String> = gpu_cols
                .iter()
                .filter(|i| &m.columns[**i] != name)
                .filter(|i| {
                    cells[**i]
                        .strip_prefix("NV")
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_none_or(|n| n < want)
                })
                .map(|i| format!("{} {}", m.columns[*i], cells[*i]))
                .collect();
            if !weak.is_empty() {
                failures.push(format!(
                    "{name}: expected NV{want} to every GPU, found {}: NVLinks down or the \
                     fabric manager not running",
                    weak.join(", ")
                ));
            }
        }
        // The nearest NIC: PIX < PXB < PHB < NODE < SYS.
        let rank = |c: &str| match c {
            "PIX" => 0,
            "PXB" => 1,
            "PHB" => 2,
            "NODE" => 3,
            _ => 4,
        };
        let nearest = nic_cols
            .iter()
            .min_by_key(|i| rank(&cells[**i]))
            .map(|i| (m.columns[*i].clone(), cells[*i].clone()));
        if let (Some(nics), Some(want)) = (limits.compute_nics, limits.gpu_count)
            && nics >= want
            && want > 0
        {
            match &nearest {
                Some((_, link)) if rank(link) <= 1 => {}
                Some((nic, link)) => failures.push(format!(
                    "{name}: nearest NIC is {nic} at {link}, expected one behind the same PCIe \
                     switch (PIX/PXB) for GPUDirect RDMA"
                )),
                None => failures.push(format!(
                    "{name}: no NIC in the matrix, expected {nics} compute NICs"
                )),
            }
        }
        per_gpu.push(json!({
            "gpu": name,
            "nvlinks": min_nv,
            "nearest_nic": nearest.as_ref().map(|n| &n.0),
            "nic_link": nearest.as_ref().map(|n| &n.1),
        }));
    }
    let gpus = gpu_rows.len();
    if let Some(want) = limits.gpu_count
        && gpus != want as usize
    {
        failures.insert(
            0,
            format!("topo -m shows {gpus} GPUs, expected {want}: a GPU is missing from the bus"),
        );
    }
    if let Some(want) = limits.compute_nics
        && nic_cols.len() < want as usize
    {
        warnings.push(format!(
            "topo -m shows {} NICs, expected at least {want}",
            nic_cols.len()
        ));
    }
    let metrics = json!({
        "gpus": gpus,
        "nics": nic_cols.len(),
        "per_gpu": per_gpu,
        "warnings": warnings,
    });
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    const TWO: &str = "\tGPU0\tGPU1\tNIC0\tCPU Affinity\nGPU0\t X \tNV4\tSYS\t0-7\n\
                       GPU1\tNV4\t X \tPIX\t0-7\nNIC0\tSYS\tPIX\t X \n\nLegend:\n";

    #[test]
    fn limits_catch_links_and_nics() {
        let j = judge_topo(TWO, &TopoLimits::default()).unwrap();
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
        let limits = TopoLimits {
            gpu_count: Some(2),
            nvlinks_per_pair: Some(18),
            compute_nics: Some(1),
        };
        let j = judge_topo(TWO, &limits).unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].contains("expected NV18 to every GPU, found GPU1 NV4"));
        let limits = TopoLimits {
            gpu_count: Some(1),
            compute_nics: Some(1),
            ..TopoLimits::default()
        };
        let j = judge_topo(TWO, &limits).unwrap();
        assert!(j.reasons[0].starts_with("topo -m shows 2 GPUs, expected 1"));
    }

    #[test]
    fn other_text_is_refused() {
        assert!(judge_topo("GPU0 X\n", &TopoLimits::default()).is_err());
        assert!(judge_topo("", &TopoLimits::default()).is_err());
    }
}
