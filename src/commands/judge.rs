//! `kiln judge KIND FILE [--profile NAME]`: one captured output, judged by
//! the same code the pipeline uses.

use std::io::Read;

use anyhow::Context as _;

use super::Ctx;
use crate::acceptance::limits;
use crate::cli::{JudgeArgs, JudgeKind};
use crate::diag::did_you_mean;
use crate::exit::{BadInput, ExitStatus};
use crate::judge::{
    DEFAULT_FATAL_XIDS, DEFAULT_MAX_SPREAD_PCT, Judgement, NcclMetrics, Verdict, judge_aznhc,
    judge_dcgm, judge_dmesg, judge_gpu_burn, judge_gpu_fryer, judge_ib_write_bw, judge_nccl,
    judge_nvbandwidth, judge_nvidia_smi, judge_nvlink, judge_topo,
};
use crate::profiles::HardwareProfile;

/// Captured outputs larger than this are not tool outputs kiln judges.
const MAX_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;

/// Runs `kiln judge`.
pub fn run(ctx: &Ctx, args: &JudgeArgs) -> anyhow::Result<ExitStatus> {
    let profile = match &args.profile {
        Some(name) => Some(find_profile(ctx, name)?),
        None => None,
    };
    let text = read_output(args)?;
    let judged = match args.kind {
        JudgeKind::Nccl => judge_nccl_with(&text, profile.as_ref()),
        JudgeKind::GpuBurn => judge_gpu_burn(&text).map(Judgement::into_json),
        // The profile's DCGM level decides which tests run, not how a
        // result reads: a Fail is a Fail at any level.
        JudgeKind::Dcgm => judge_dcgm(&text).map(Judgement::into_json),
        JudgeKind::NvidiaSmi => judge_nvidia_smi(
            &text,
            // The caller does not vouch for load: a slow PCIe link fails
            // only when the capture's own readings show load, and
            // temperature is left to the burn-in.
            &limits::nvidia_smi(profile.as_ref(), false),
        )
        .map(Judgement::into_json),
        JudgeKind::Dmesg => match &profile {
            Some(p) => judge_dmesg(&text, &p.xid.fail),
            None => judge_dmesg(&text, DEFAULT_FATAL_XIDS),
        },
        JudgeKind::GpuFryer => judge_gpu_fryer(
            &text,
            profile
                .as_ref()
                .map_or(DEFAULT_MAX_SPREAD_PCT, |p| p.burnin.max_spread_pct),
        ),
        JudgeKind::Nvbandwidth => judge_nvbandwidth(&text, &limits::nvbandwidth(profile.as_ref()))
            .map(Judgement::into_json),
        JudgeKind::IbWriteBw => {
            judge_ib_write_bw(&text, profile.as_ref().map(|p| p.ib_write_bw.min_gbps))
                .map(Judgement::into_json)
        }
        JudgeKind::Nvlink => judge_nvlink(&text, &limits::nvlink(profile.as_ref())),
        JudgeKind::Topo => judge_topo(&text, &limits::topo(profile.as_ref())),
        JudgeKind::Aznhc => judge_aznhc(&text),
    };
    let judgement = match judged {
        Ok(j) => j,
        Err(e) => return Err(BadInput(format!("{}: {e}", args.file.display())).into()),
    };
    if ctx.printer.json {
        ctx.printer.json_data(&judgement)?;
    } else {
        ctx.printer.data(&render(&judgement));
    }
    Ok(match judgement.verdict {
        Verdict::Pass => ExitStatus::Success,
        Verdict::Fail | Verdict::Unknown => ExitStatus::NodeFailed,
    })
}

pub(crate) fn find_profile(ctx: &Ctx, name: &str) -> anyhow::Result<HardwareProfile> {
    let catalog = super::profile::catalog(ctx)?;
    match catalog.hardware.get(name) {
        Some(entry) => Ok(entry.profile.clone()),
        None => {
            let hint = did_you_mean(name, catalog.hardware.keys().map(String::as_str))
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            Err(BadInput(format!("no hardware profile `{name}`{hint}")).into())
        }
    }
}

fn read_output(args: &JudgeArgs) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_OUTPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", args.file.display())))?;
        file.take(MAX_OUTPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", args.file.display())))?;
    }
    if bytes.len() as u64 > MAX_OUTPUT_BYTES {
        return Err(BadInput(format!(
            "{} is larger than {MAX_OUTPUT_BYTES} bytes",
            args.file.display()
        ))
        .into());
    }
    // Tool logs sometimes carry stray bytes (progress bars, terminals);
    // they must not stop a verdict.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// nccl-tests with a profile: the in-node floor when the run used at most
/// one node's GPUs, the cross-node floor when it spanned more.
fn judge_nccl_with(
    text: &str,
    profile: Option<&HardwareProfile>,
) -> Result<Judgement, crate::judge::ParseError> {
    let Some(profile) = profile else {
        return judge_nccl(text, None).map(Judgement::into_json);
    };
    let gpus = judge_nccl(text, None)?.metrics.gpus as u64;
    judge_nccl(text, Some(limits::nccl_floor(profile, gpus))).map(Judgement::into_json)
}

/// An nccl-tests judgement's metrics read back into their type.
fn nccl_metrics(j: &Judgement) -> Option<NcclMetrics> {
    (j.kind == "nccl-tests")
        .then(|| serde_json::from_value(j.metrics.clone()).ok())
        .flatten()
}

fn render(j: &Judgement) -> String {
    let verdict = match j.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Unknown => "UNKNOWN",
    };
    let mut out = format!("{}: {verdict}\n", j.kind);
    for reason in &j.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    if let Some(m) = nccl_metrics(j)
        && let Some(busbw) = m.busbw_at_largest
    {
        let floor = m
            .busbw_floor
            .map(|f| format!(" (floor {f} GB/s)"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  busbw at the largest size: {busbw:.1} GB/s{floor}\n"
        ));
    }
    out
}
