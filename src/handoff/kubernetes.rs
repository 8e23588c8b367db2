//! The Kubernetes target: a small typed client over the handoff HTTP
//! client for the four calls kiln needs (get a node, JSON-merge-patch its
//! labels, annotations, taints and `unschedulable`), and the templated
//! join run on the node over SSH. Accepted nodes join if they are not yet
//! members, get the target's labels and taints and are uncordoned; failed
//! ones stay cordoned with an annotation giving the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::Client;
use crate::inventory::handoff::{KubernetesTarget, Taint};
use crate::pipeline::step::Outcome;
use crate::secret::Secret;
use crate::ssh::Remote;
use crate::ssh::exec::{Discard, ExecOptions, Input, RemoteCommand};

/// The annotation holding kiln's verdict.
pub const VERDICT: &str = "kiln.dev/verdict";
/// The annotation holding the reason a node was given back.
pub const REASON: &str = "kiln.dev/reason";
/// The annotation holding the run that decided.
pub const RUN: &str = "kiln.dev/run";

/// The parts of a Node object kiln reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Node {
    /// metadata.
    #[serde(default)]
    pub metadata: Meta,
    /// spec.
    #[serde(default)]
    pub spec: Spec,
}

/// Node metadata.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Meta {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Node spec.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Spec {
    /// Cordoned.
    #[serde(default)]
    pub unschedulable: bool,
    /// Taints.
    #[serde(default)]
    pub taints: Vec<TaintObj>,
}

/// A taint as the API writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaintObj {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Effect.
    pub effect: String,
    /// When it was added (kept as the API gave it).
    #[serde(rename = "timeAdded", default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<String>,
}

impl From<&Taint> for TaintObj {
    fn from(t: &Taint) -> TaintObj {
        TaintObj {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            time_added: None,
        }
    }
}

/// A client for one API server.
pub struct Api {
    client: Client,
    base: super::http::Url,
    token: Secret,
}

impl Api {
    /// A client for `target`, reading its token.
    pub fn new(target: &KubernetesTarget) -> anyhow::Result<Api> {
        let token = target
            .token
            .resolve()
            .map_err(|e| anyhow::anyhow!("kubernetes {}: token: {e}", target.api))?;
        Ok(Api {
            client: Client::new(target.ca.as_deref(), Duration::from_secs(30))?
                .insecure_http(target.insecure_http),
            base: target.api.clone(),
            token,
        })
    }

    fn url(&self, name: &str) -> super::http::Url {
        let prefix = self.base.path.trim_end_matches('/');
        self.base
            .with_path(&format!("{prefix}/api/v1/nodes/{name}"))
    }

    /// The node, or `None` if the cluster does not know it.
    pub async fn get(&self, name: &str) -> anyhow::Result<Option<Node>> {
        let url = self.url(name);
        let r = self
            .client
            .send("GET", &url, &[], Some(&self.token), None)
            .await?;
        match r.status {
            404 => Ok(None),
            200 => Ok(Some(
                serde_json::from_slice(&r.body)
                    .with_context(|| format!("{url}: the answer is not a Node"))?,
            )),
            s => anyhow::bail!("GET {url} answered {s}: {}", r.text(300)),
        }
    }

    /// Applies a JSON merge patch (RFC 7386) and returns the node after it.
    pub async fn patch(&self, name: &str, patch: &Value) -> anyhow::Result<Node> {
        let url = self.url(name);
        let r = self
            .client
            .send(
                "PATCH",
                &url,
                &[],
                Some(&self.token),
                Some(("application/merge-patch+json", serde_json::to_vec(patch)?)),
            )
            .await?;
        if r.status != 200 {
            anyhow::bail!("PATCH {url} answered {}: {}", r.status, r.text(300));
        }
        serde_json::from_slice(&r.body).with_context(|| format!("{url}: the answer is not a Node"))
    }
}

/// The patch that hands an accepted node over: labels, taints (the
/// target's replace earlier ones with the same key and effect), kiln's
/// annotations, uncordoned.
pub fn accept_patch(
    node: &Node,
    labels: &BTreeMap<String, String>,
    taints: &[Taint],
    run: &str,
) -> Value {
    let mut all: Vec<TaintObj> = node
        .spec
        .taints
        .iter()
        .filter(|t| {
            !taints
                .iter()
                .any(|n| n.key == t.key && n.effect == t.effect)
        })
        .cloned()
        .collect();
    all.extend(taints.iter().map(TaintObj::from));
    json!({
        "metadata": {
            "labels": labels,
            "annotations": {VERDICT: "accepted", REASON: null, RUN: run},
        },
        "spec": {"unschedulable": false, "taints": all},
    })
}

/// The patch that gives a failed node back: cordoned, with the reason.
pub fn reject_patch(verdict: &str, reason: &str, run: &str) -> Value {
    json!({
        "metadata": {"annotations": {VERDICT: verdict, REASON: reason, RUN: run}},
        "spec": {"unschedulable": true},
    })
}

/// The join command for `node`, every value shell-quoted. It reads the
/// bootstrap token from its stdin: the token is never part of the script,
/// so no error, log line or report that names the command can hold it.
pub fn render_join(node: &str, endpoint: &str, ca_cert_hash: &str) -> anyhow::Result<String> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_template(
        "kubernetes/join.sh",
        include_str!("../../templates/kubernetes/join.sh.tera"),
    )?;
    tera.register_filter(
        "sh",
        |v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>| {
            let text = match v {
                tera::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(tera::Value::String(crate::ssh::quote::quote(&text)))
        },
    );
    let mut cx = tera::Context::new();
    cx.insert("node", node);
    cx.insert("endpoint", endpoint);
    cx.insert("ca_cert_hash", ca_cert_hash);
    Ok(tera.render("kubernetes/join.sh", &cx)?)
}

/// What to do with the node.
pub enum Action<'a> {
    /// Join if needed, label, taint, uncordon.
    Accept {
        /// Labels to put.
        labels: &'a BTreeMap<String, String>,
        /// The node itself, to run the join on.
        remote: Option<&'a Remote>,
    },
    /// Cordon with the reason.
    Reject {
        /// `failed` or `unverified`.
        verdict: &'a str,
        /// Why.
        reason: &'a str,
    },
}

/// Hands `node` over (or gives it back).
pub async fn deliver(
    target: &KubernetesTarget,
    node: &str,
    run: &str,
    action: Action<'_>,
    join_wait: Duration,
) -> anyhow::Result<Outcome> {
    let api = Api::new(target)?;
    let existing = api.get(node).await?;
    match action {
        Action::Reject { verdict, reason } => {
            if existing.is_none() {
                return Ok(Outcome::skipped(format!(
                    "{node} is not a member of {}; nothing to cordon",
                    target.api
                )));
            }
            let after = api.patch(node, &reject_patch(verdict, reason, run)).await?;
            if !after.spec.unschedulable {
                return Ok(Outcome::failed(format!(
                    "{} still shows {node} schedulable after cordoning",
                    target.api
                )));
            }
            Ok(Outcome::done(format!("cordoned in Kubernetes: {reason}"))
                .with_metrics(json!({"api": target.api.to_string(), "unschedulable": true})))
        }
        Action::Accept { labels, remote } => {
            let mut joined = false;
            let current = match existing {
                Some(n) => n,
                None => {
                    let join = target.join.as_ref().with_context(|| {
                        format!(
                            "{node} is not a member of {} and the target has no `join`",
                            target.api
                        )
                    })?;
                    let remote = remote.context("no SSH connection to the node for the join")?;
                    run_join(remote, node, join).await?;
                    joined = true;
                    wait_registered(&api, node, join_wait).await?
                }
            };
            let patch = accept_patch(&current, labels, &target.taints, run);
            let after = api.patch(node, &patch).await?;
            let missing: Vec<&String> = labels
                .iter()
                .filter(|(k, v)| after.metadata.labels.get(*k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            if after.spec.unschedulable || !missing.is_empty() {
                return Ok(Outcome::failed(format!(
                    "{} shows {node} {} after the handoff",
                    target.api,
                    if after.spec.unschedulable {
                        "still cordoned".to_owned()
                    } else {
                        format!("without labels {missing:?}")
                    }
                )));
            }
            Ok(Outcome::done(format!(
                "{}labelled ({}), {} taint(s), uncordoned in Kubernetes",
                if joined { "joined, " } else { "" },
                labels.len(),
                after.spec.taints.len()
            ))
            .with_metrics(json!({"api": target.api.to_string(), "joined": joined,
                "labels": labels, "taints": after.spec.taints})))
        }
    }
}

async fn run_join(
    remote: &Remote,
    node: &str,
    join: &crate::inventory::handoff::JoinSpec,
) -> anyhow::Result<()> {
    let token = join
        .token
        .resolve()
        .map_err(|e| anyhow::anyhow!("kubernetes join token: {e}"))?;
    let script = render_join(node, &join.endpoint, &join.ca_cert_hash)?;
    let cmd = RemoteCommand::shell(script)
        .sudo(true)
        .timeout(Some(Duration::from_secs(600)))
        .sensitive("kubeadm join");
    let stdin = Input::Bytes(format!("{}\n", token.expose()).into_bytes().into());
    let out = remote
        .run(&cmd, stdin, &mut Discard, &ExecOptions::default())
        .await
        .with_context(|| format!("running the kubernetes join on {node}"))?;
    if !out.success() {
        // kubeadm may echo its arguments.
        let tail = out.stderr.tail_text().replace(token.expose(), "[redacted]");
        anyhow::bail!(
            "the kubernetes join on {node} {}: {}",
            out.outcome(),
            crate::diag::clip(tail.trim(), 300)
        );
    }
    Ok(())
}

async fn wait_registered(api: &Api, node: &str, within: Duration) -> anyhow::Result<Node> {
    let start = std::time::Instant::now();
    loop {
        if let Some(n) = api.get(node).await? {
            return Ok(n);
        }
        if start.elapsed() >= within {
            anyhow::bail!(
                "{node} joined but did not register within {} s",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(2).min(within)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn join_quotes_every_value() {
        let s = render_join("r01-n01", "10.0.0.1:6443'; rm -rf / #", "sha256:00").unwrap();
        assert!(s.contains("join '10.0.0.1:6443'\\''; rm -rf / #'"), "{s}");
        // The token is read from stdin, never written into the script.
        assert!(s.contains("--token \"$token\""), "{s}");
        let s = render_join("r01-n01", "10.0.0.1:6443", "sha256:00").unwrap();
        assert!(
            s.contains("kubeadm join 10.0.0.1:6443") || s.contains("kubeadm join '10.0.0.1:6443'"),
            "{s}"
        );
    }

    #[test]
    fn accept_patch_replaces_only_same_key_and_effect() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {
            "unschedulable": true,
            "taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "kiln/new", "value": "x", "effect": "NoSchedule"}]}})).unwrap();
        let t: Taint = "kiln/new=true:NoSchedule".parse().unwrap();
        let p = accept_patch(&node, &BTreeMap::new(), &[t], "run1");
        assert_eq!(
            p["spec"]["taints"],
            json!([{"key": "a", "effect": "NoSchedule"}, {"key": "kiln/new", "value": "true", "effect": "NoSchedule"}])
        );
        assert_eq!(p["spec"]["unschedulable"], false);
        assert_eq!(p["metadata"]["annotations"][REASON], Value::Null);
    }
}
