//! The Slurm target: resume accepted nodes, drain failed ones with kiln's
//! reason, through slurmrestd (JWT) or `scontrol` on the controller (over
//! SSH, or on this machine). Each change is read back.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::http::Client;
use crate::inventory::handoff::{SlurmTarget, SlurmVia};
use crate::pipeline::step::Outcome;
use crate::ssh::Remote;
use crate::ssh::exec::{Discard, ExecOptions, Input, RemoteCommand};

/// What to do with a node in Slurm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return it to service.
    Resume,
    /// Take it out of service with this reason.
    Drain(String),
}

/// A node's state as `scontrol show node -o` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// `State=` (`IDLE`, `DOWN+DRAIN`, `IDLE+DRAIN`, `DOWN*`, …).
    pub state: String,
    /// `Reason=` without the `[user@time]` suffix.
    pub reason: String,
}

impl NodeState {
    /// Parses one `scontrol show node -o` line.
    pub fn parse(line: &str) -> Option<NodeState> {
        let state = field(line, "State")?;
        let reason = field(line, "Reason").unwrap_or_default();
        let reason = match reason.rfind(" [") {
            Some(i) if reason.ends_with(']') => reason[..i].to_owned(),
            _ => reason,
        };
        Some(NodeState { state, reason })
    }

    /// Drained, draining, down or failed: not taking jobs.
    pub fn out_of_service(&self) -> bool {
        ["DRAIN", "DOWN", "FAIL"]
            .iter()
            .any(|w| self.state.contains(w))
    }
}

/// The value of `Key=` in a one-line `scontrol show`; `Reason=` runs to the
/// end of the line or to the next ` Key=` (reasons hold spaces).
fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!("{key}=");
    let start = line
        .match_indices(&needle)
        .find(|(i, _)| *i == 0 || line.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| i + needle.len())?;
    let rest = &line[start..];
    if key == "Reason" {
        // Slurm prints Reason last but one or last; stop at a known key.
        let end = [" Comment=", " Extra=", " GresDrain", " \n"]
            .iter()
            .filter_map(|k| rest.find(k))
            .min()
            .unwrap_or(rest.len());
        return Some(rest[..end].trim().to_owned());
    }
    Some(
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Applies `action` to `node`.
pub async fn deliver(
    target: &SlurmTarget,
    node: &str,
    action: &Action,
    controller: Option<Remote>,
) -> anyhow::Result<Outcome> {
    match &target.via {
        SlurmVia::Scontrol { .. } => {
            let remote = controller.context("no way to reach the Slurm controller")?;
            scontrol(&remote, node, action).await
        }
        SlurmVia::Restd {
            url,
            user,
            token,
            api,
            ca,
            insecure_http,
        } => {
            let token = token
                .resolve()
                .map_err(|e| anyhow::anyhow!("slurmrestd {url}: token: {e}"))?;
            let client =
                Client::new(ca.as_deref(), Duration::from_secs(30))?.insecure_http(*insecure_http);
            let path = format!("/slurm/{api}/node/{node}");
            let body = match action {
                Action::Resume => json!({"state": ["RESUME"]}),
                Action::Drain(reason) => json!({"state": ["DRAIN"], "reason": reason}),
            };
            let headers = [
                ("x-slurm-user-name", user.as_str()),
                ("x-slurm-user-token", token.expose()),
            ];
            let reply = client
                .send(
                    "POST",
                    &url.with_path(&path),
                    &headers,
                    None,
                    Some(("application/json", serde_json::to_vec(&body)?)),
                )
                .await?;
            if !reply.ok() {
                return Ok(Outcome::failed(format!(
                    "slurmrestd {url} answered {} to {path}: {}",
                    reply.status,
                    reply.text(300)
                )));
            }
            let check = client
                .send("GET", &url.with_path(&path), &headers, None, None)
                .await?;
            let seen: serde_json::Value = serde_json::from_slice(&check.body).unwrap_or_default();
            let state = seen["nodes"][0]["state"].to_string();
            Ok(Outcome::done(format!(
                "{} in Slurm via slurmrestd; now {state}",
                words(action)
            ))
            .with_metrics(json!({"via": "slurmrestd", "action": words(action), "state": seen["nodes"][0]["state"]})))
        }
    }
}

fn words(action: &Action) -> &'static str {
    match action {
        Action::Resume => "resumed",
        Action::Drain(_) => "drained",
    }
}

async fn run(remote: &Remote, args: &[&str]) -> anyhow::Result<String> {
    let cmd = RemoteCommand::argv(args).timeout(Some(Duration::from_secs(60)));
    let out = remote
        .run(&cmd, Input::None, &mut Discard, &ExecOptions::default())
        .await
        .with_context(|| format!("running scontrol on {}", remote.addr()))?;
    let out = out.check(remote.node(), &cmd)?;
    Ok(out.stdout.text())
}

async fn show(remote: &Remote, node: &str) -> anyhow::Result<NodeState> {
    let text = run(remote, &["scontrol", "show", "node", "-o", node]).await?;
    NodeState::parse(text.trim()).with_context(|| {
        format!(
            "scontrol on {} printed no state for {node}: {}",
            remote.addr(),
            crate::diag::clip(text.trim(), 200)
        )
    })
}

async fn scontrol(remote: &Remote, node: &str, action: &Action) -> anyhow::Result<Outcome> {
    let before = show(remote, node).await?;
    let metrics = |after: &NodeState| {
        json!({"via": "scontrol", "controller": remote.addr(), "before": before.state,
               "state": after.state, "reason": after.reason, "action": words(action)})
    };
    match action {
        Action::Resume => {
            if !before.out_of_service() {
                return Ok(Outcome::skipped(format!(
                    "already in service in Slurm ({})",
                    before.state
                ))
                .with_metrics(metrics(&before)));
            }
            run(
                remote,
                &[
                    "scontrol",
                    "update",
                    &format!("NodeName={node}"),
                    "State=RESUME",
                ],
            )
            .await?;
        }
        Action::Drain(reason) => {
            if before.state.contains("DRAIN") && before.reason == *reason {
                return Ok(
                    Outcome::skipped(format!("already drained in Slurm: {reason}"))
                        .with_metrics(metrics(&before)),
                );
            }
            run(
                remote,
                &[
                    "scontrol",
                    "update",
                    &format!("NodeName={node}"),
                    "State=DRAIN",
                    &format!("Reason={reason}"),
                ],
            )
            .await?;
        }
    }
    let after = show(remote, node).await?;
    let ok = match action {
        Action::Resume => !after.state.contains("DRAIN"),
        Action::Drain(_) => after.state.contains("DRAIN"),
    };
    if !ok {
        return Ok(Outcome::failed(format!(
            "Slurm shows {node} as {} after it was {}",
            after.state,
            words(action)
        ))
        .with_metrics(metrics(&after)));
    }
    Ok(Outcome::done(format!(
        "{} in Slurm ({} → {})",
        words(action),
        before.state,
        after.state
    ))
    .with_metrics(metrics(&after)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_scontrol_lines() {
        let line = "NodeName=r01-n02 CoresPerSocket=1 CPUAlloc=0 State=IDLE+DRAIN ThreadsPerCore=1 \
                    Partitions=gpu BootTime=None LastBusyTime=2024-01-01T00:00:00 \
                    Reason=kiln: nccl busbw 310 < 440 GB/s [root@2024-01-01T00:00:00]";
        let s = NodeState::parse(line).unwrap();
        assert_eq!(s.state, "IDLE+DRAIN");
        assert_eq!(s.reason, "kiln: nccl busbw 310 < 440 GB/s");
        assert!(s.out_of_service());
        let s = NodeState::parse("NodeName=a State=IDLE Partitions=x").unwrap();
        assert!(!s.out_of_service() && s.reason.is_empty());
    }
}
