//! Judge for Azure HPC node health checks (Azure/azurehpc-health-checks,
//! "AzNHC", an extension of LBNL NHC): its log of `SUCCESS:  nhc:  Health
//! check passed:  CHECK: message` and `ERROR:  nhc:  Health check failed:
//! CHECK: message. FaultCode: CODE` lines, ending in `Health checks
//! completed with exit code: N.`.

use serde_json::json;

use super::{Judgement, ParseError, split_lines};

const KIND: &str = "aznhc";

/// `CHECK: message` -> (`CHECK`, `message`).
fn check_and_message(rest: &str) -> (String, String) {
    let rest = rest.trim();
    match rest.split_once(':') {
        Some((c, m)) if !c.contains(' ') => (c.trim().to_owned(), m.trim().to_owned()),
        _ => (String::new(), rest.to_owned()),
    }
}

/// The first number after `marker` in `text` (`480.318 GB/s`, `BW=392.82`).
fn number_after(text: &str, marker: &str) -> Option<f64> {
    let (_, rest) = text.split_once(marker)?;
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

/// Judges an AzNHC log.
///
/// NHC's contract (LBNL NHC README, "Health check failed" lines; AzNHC's
/// `run-health-checks.sh`, which prints the exit code): any `Health check
/// failed` line fails the node, with its check, message and Azure fault
/// code; `Health checks completed with exit code` other than 0 fails it
/// too. A log with passed checks but neither a failure nor the completion
/// line is `Unknown` (cut before the end). Text with no NHC line is a
/// [`ParseError`].
///
/// Metrics: `passed` (check names), `failed` (`check`, `message`,
/// `fault_code`), `exit_code`, `nccl_allreduce_gbps`, `ib_write_bw_gbps`
/// (per device).
pub fn judge_aznhc(text: &str) -> Result<Judgement, ParseError> {
    let mut passed: Vec<String> = Vec::new();
    let mut failed = Vec::new();
    let mut failures = Vec::new();
    let mut exit_code: Option<i64> = None;
    let mut nccl = None;
    let mut ib = serde_json::Map::new();
    for line in split_lines(text) {
        let t = line.trim();
        if let Some((_, rest)) = t.split_once("Health check passed:") {
            let (check, message) = check_and_message(rest);
            if check.is_empty() {
                continue; // NHC prints empty passes for checks with no output
            }
            if check == "check_nccl_allreduce" {
                nccl = number_after(&message, "passed,");
            }
            if check.starts_with("check_ib_bw")
                && let (Some(dev), Some(bw)) = (
                    message
                        .split_once("IB=")
                        .and_then(|(_, r)| r.split([',', ' ']).next()),
                    number_after(&message, "BW="),
                )
            {
                ib.insert(dev.to_owned(), json!(bw));
            }
            if !passed.contains(&check) {
                passed.push(check);
            }
        } else if let Some((_, rest)) = t.split_once("Health check failed:") {
            let (check, message) = check_and_message(rest);
            let (message, code) = match message.rsplit_once("FaultCode:") {
                Some((m, c)) => (
                    m.trim().trim_end_matches('.').to_owned(),
                    Some(c.trim().to_owned()),
                ),
                None => (message, None),
            };
            let code_text = code
                .as_ref()
                .map(|c| format!(" (FaultCode {c})"))
                .unwrap_or_default();
            failures.push(if check.is_empty() {
                format!("NHC: {message}{code_text}")
            } else {
                format!("NHC {check}: {message}{code_text}")
            });
            failed.push(json!({"check": check, "message": message, "fault_code": code}));
        } else if let Some(rest) = t.strip_prefix("Health checks completed with exit code:") {
            exit_code = rest.trim().trim_end_matches('.').parse().ok();
        }
    }
    if passed.is_empty() && failed.is_empty() && exit_code.is_none() {
        return Err(ParseError {
            expected: "an Azure NHC log: 'Health check passed:' / 'Health check failed:' lines \
                       or 'Health checks completed with exit code'"
                .to_owned(),
        });
    }
    let mut inconclusive = Vec::new();
    match exit_code {
        Some(0) | None if !failures.is_empty() => {}
        Some(0) => {}
        Some(code) => {
            if failures.is_empty() {
                failures.push(format!(
                    "NHC completed with exit code {code} without naming a failed check"
                ));
            }
        }
        None => inconclusive.push(
            "the NHC log ends before 'Health checks completed': the run was cut short".to_owned(),
        ),
    }
    let metrics = json!({
        "passed": passed,
        "failed": failed,
        "exit_code": exit_code,
        "nccl_allreduce_gbps": nccl,
        "ib_write_bw_gbps": ib,
    });
    Ok(Judgement::decide(KIND, failures, inconclusive, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;

    #[test]
    fn cut_log_is_unknown_and_exit_code_alone_fails() {
        let pass =
            "SUCCESS:  nhc:  Health check passed:  check_gpu_count: Expected 8 and found 8\n";
        assert_eq!(judge_aznhc(pass).unwrap().verdict, Verdict::Unknown);
        let j = judge_aznhc(&format!(
            "{pass}Health checks completed with exit code: 1.\n"
        ))
        .unwrap();
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].contains("exit code 1"));
        assert!(judge_aznhc("hello\n").is_err());
    }
}
