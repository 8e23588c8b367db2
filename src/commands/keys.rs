//! `kiln keys` (the site's signing key) and `kiln verify` (a signed
//! acceptance record, checked without trusting the machine it came from).

use serde_json::json;

use crate::bmc::trust::state_dir;
use crate::cli::{KeysCommand, VerifyArgs};
use crate::commands::Ctx;
use crate::exit::{BadInput, ExitStatus};
use crate::handoff::sign::{self, PUB_FILE, SignedRecord, SiteKey, Verified};
use crate::output::table;

fn state(ctx: &Ctx) -> anyhow::Result<std::path::PathBuf> {
    if let Some(dir) = crate::state::state_dir_from_env() {
        return Ok(dir);
    }
    Ok(state_dir(ctx.inventory_path()?))
}

/// Runs `kiln keys …`.
pub fn keys(ctx: &Ctx, cmd: KeysCommand) -> anyhow::Result<ExitStatus> {
    let dir = state(ctx)?;
    let key = match cmd {
        KeysCommand::Init { force } => {
            let key = SiteKey::init(&dir, force).map_err(|e| match e {
                sign::SignError::Exists(_) => anyhow::Error::from(BadInput(e.to_string())),
                other => other.into(),
            })?;
            ctx.printer.info(&format!(
                "site key {} written to {} (keep it private; give receivers {})",
                key.key_id(),
                dir.join(sign::KEY_FILE).display(),
                dir.join(PUB_FILE).display()
            ));
            key
        }
        KeysCommand::Show => SiteKey::load(&dir).map_err(|e| BadInput(e.to_string()))?,
    };
    if ctx.printer.json {
        ctx.printer.json_data(&json!({
            "algorithm": "ed25519", "key_id": key.key_id(), "public_key": key.public_b64(),
        }))?;
    } else {
        ctx.printer.data(&format!("{}\n", key.public_line()));
    }
    Ok(ExitStatus::Success)
}

/// Runs `kiln verify RECORD [--key PUB | --integrity-only]`: exit 0 when
/// the signature is valid for a trusted key, 1 when it is not valid, 2
/// when the file or key cannot be read, 4 when it is valid only for the
/// key inside the record and `--integrity-only` was not asked for.
pub fn verify(ctx: &Ctx, args: &VerifyArgs) -> anyhow::Result<ExitStatus> {
    let text = std::fs::read_to_string(&args.record)
        .map_err(|e| BadInput(format!("cannot read {}: {e}", args.record.display())))?;
    let signed: SignedRecord = serde_json::from_str(&text).map_err(|e| {
        BadInput(format!(
            "{} is not a signed kiln record: {e}",
            args.record.display()
        ))
    })?;
    let (trusted, source) = match &args.key {
        Some(k) => {
            let path = std::path::Path::new(k);
            let text = if path.is_file() {
                std::fs::read_to_string(path)
                    .map_err(|e| BadInput(format!("cannot read {k}: {e}")))?
            } else {
                k.clone()
            };
            let key = sign::parse_public(&text).map_err(|e| BadInput(e.to_string()))?;
            (
                Some(key),
                format!("the key given ({})", sign::key_id_of(&text)),
            )
        }
        None => {
            let local = ctx
                .global
                .inventory
                .as_ref()
                .map(|_| state(ctx))
                .transpose()?
                .map(|d| d.join(PUB_FILE))
                .filter(|p| p.is_file());
            match local {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .map_err(|e| BadInput(format!("cannot read {}: {e}", p.display())))?;
                    let key = sign::parse_public(&text).map_err(|e| BadInput(e.to_string()))?;
                    (Some(key), format!("the site key in {}", p.display()))
                }
                None => (None, "the key inside the record only".to_owned()),
            }
        }
    };
    let verdict = sign::verify(&signed, trusted.as_deref());
    let r = &signed.record;
    let checks: Vec<Vec<String>> = r["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                    vec![
                        format!("{}/{}", s("stage"), s("step")),
                        s("verdict"),
                        crate::diag::clip(&s("detail"), 100),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let (valid, why) = match &verdict {
        Verified::Valid { key_id } => (true, format!("valid signature by {key_id}")),
        Verified::Invalid(why) => (false, why.clone()),
    };
    let origin_verified = valid && trusted.is_some();
    if ctx.printer.json {
        ctx.printer.json_data(&json!({
            "valid": valid, "origin_verified": origin_verified,
            "detail": why, "checked_against": source,
            "node": r["node"], "verdict": r["verdict"], "reasons": r["reasons"],
            "checks": r["checks"].as_array().map(|a| a.iter().map(|c| json!({
                "stage": c["stage"], "step": c["step"], "verdict": c["verdict"]})).collect::<Vec<_>>()),
        }))?;
    } else {
        ctx.printer.data(&format!(
            "node {} (rack {}, run {}): {}\n",
            r["node"].as_str().unwrap_or("?"),
            r["rack"].as_str().unwrap_or("?"),
            r["run"].as_str().unwrap_or("?"),
            r["verdict"].as_str().unwrap_or("?"),
        ));
        if let Some(reasons) = r["reasons"].as_array() {
            for reason in reasons.iter().filter_map(|v| v.as_str()) {
                ctx.printer.data(&format!("  reason: {reason}\n"));
            }
        }
        ctx.printer
            .data(&table(&["CHECK", "VERDICT", "DETAIL"], &checks));
    }
    if origin_verified {
        ctx.printer.info(&format!(
            "{}: {why}, checked against {source}",
            args.record.display()
        ));
        Ok(ExitStatus::Success)
    } else if valid && args.integrity_only {
        ctx.printer.info(&format!(
            "{}: intact ({why}, the key inside the record); who signed it is not checked (--integrity-only)",
            args.record.display()
        ));
        Ok(ExitStatus::Success)
    } else if valid {
        // Anyone can make a self-consistent record with a key of their
        // own: without a trusted key this is not a pass.
        ctx.printer.info(&format!(
            "{}: NOT VERIFIED: intact, but signed by {}, a key nothing here vouches for; pass --key site-key.pub (or --integrity-only to check integrity alone)",
            args.record.display(),
            signed.signature.key_id
        ));
        Ok(ExitStatus::Unverified)
    } else {
        ctx.printer.info(&format!(
            "{}: INVALID: {why} (checked against {source})",
            args.record.display()
        ));
        Ok(ExitStatus::NodeFailed)
    }
}
