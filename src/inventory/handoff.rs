//! The `handoff:` targets of a site (`defaults`) or a rack: where accepted
//! nodes are handed over and failed ones given back. A rack's list replaces
//! the site's. Tokens are secrets (`{env: …}` or `{file: …}`), never text.
//!
//! ```yaml
//! handoff:
//!   - webhook: {url: https://intake.example/nodes, token: {env: KILN_WEBHOOK_TOKEN},
//!               attempts: 3, failed: true}
//!   - slurm: {restd: https://ctl:6820, user: slurm, token: {env: SLURM_JWT}}
//!   - slurm: {scontrol: ops@ctl:22}          # or `scontrol: local`
//!   - kubernetes: {api: https://k8s:6443, token: {env: KUBE_TOKEN}, ca: k8s-ca.pem,
//!                  labels: {pool: h100}, taints: ["kiln/new=true:NoSchedule"],
//!                  join: {endpoint: "10.0.0.1:6443", token: {env: KUBEADM_TOKEN},
//!                         ca_cert_hash: "sha256:…"}}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::address::JumpHost;
use crate::inventory::address::Url;
use crate::secret::SecretRef;
use crate::yaml::decode::{Cx, FromNode, HumanDuration, MapReader};
use crate::yaml::{Node, Pos, Value};

/// One handoff target.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffTarget {
    /// POST the signed record to a URL.
    Webhook(WebhookTarget),
    /// Resume accepted nodes, drain failed ones.
    Slurm(SlurmTarget),
    /// Join, label and uncordon accepted nodes; annotate failed ones.
    Kubernetes(KubernetesTarget),
}

impl HandoffTarget {
    /// The target's kind, which is also its step name.
    pub fn kind(&self) -> &'static str {
        match self {
            HandoffTarget::Webhook(_) => "webhook",
            HandoffTarget::Slurm(_) => "slurm",
            HandoffTarget::Kubernetes(_) => "kubernetes",
        }
    }

    /// Whether failed and unverified nodes are given back to it too.
    pub fn takes_failed(&self) -> bool {
        match self {
            HandoffTarget::Webhook(w) => w.failed,
            HandoffTarget::Slurm(_) | HandoffTarget::Kubernetes(_) => true,
        }
    }

    /// One line for plans and logs (never a secret's value).
    pub fn describe(&self) -> String {
        match self {
            HandoffTarget::Webhook(w) => format!("webhook {}", w.url),
            HandoffTarget::Slurm(s) => match &s.via {
                SlurmVia::Restd { url, .. } => format!("slurm via slurmrestd {url}"),
                SlurmVia::Scontrol { controller: None } => "slurm via local scontrol".into(),
                SlurmVia::Scontrol {
                    controller: Some(c),
                } => format!("slurm via scontrol on {c}"),
            },
            HandoffTarget::Kubernetes(k) => format!("kubernetes {}", k.api),
        }
    }

    fn rebase(&mut self, base: &Path) {
        let file = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let secret = |s: &mut SecretRef| *s = s.clone().rebase(base);
        match self {
            HandoffTarget::Webhook(w) => {
                w.token.as_mut().map(secret);
                w.ca.as_mut().map(file);
            }
            HandoffTarget::Slurm(s) => {
                if let SlurmVia::Restd { token, ca, .. } = &mut s.via {
                    secret(token);
                    ca.as_mut().map(file);
                }
            }
            HandoffTarget::Kubernetes(k) => {
                secret(&mut k.token);
                k.ca.as_mut().map(file);
                if let Some(j) = &mut k.join {
                    secret(&mut j.token);
                }
            }
        }
    }

    fn secrets(&self) -> Vec<&SecretRef> {
        match self {
            HandoffTarget::Webhook(w) => w.token.iter().collect(),
            HandoffTarget::Slurm(s) => match &s.via {
                SlurmVia::Restd { token, .. } => vec![token],
                SlurmVia::Scontrol { .. } => vec![],
            },
            HandoffTarget::Kubernetes(k) => {
                let mut v = vec![&k.token];
                v.extend(k.join.as_ref().map(|j| &j.token));
                v
            }
        }
    }
}

/// A webhook receiver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WebhookTarget {
    /// Where the record is POSTed.
    #[serde(serialize_with = "display")]
    pub url: Url,
    /// Sent as `Authorization: Bearer …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// CA bundle for an https:// URL (else the system's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Tries before giving up (default 3).
    pub attempts: u32,
    /// Also send records of failed and unverified nodes.
    pub failed: bool,
    /// Per-attempt timeout (default 30 s).
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
    /// Send the token over plain http:// anyway (refused otherwise).
    #[serde(skip_serializing_if = "is_false")]
    pub insecure_http: bool,
}

/// A Slurm controller.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlurmTarget {
    /// How kiln reaches it.
    pub via: SlurmVia,
}

/// How kiln talks to Slurm.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlurmVia {
    /// slurmrestd's REST API with a JWT.
    Restd {
        /// slurmrestd's URL.
        #[serde(serialize_with = "display")]
        url: Url,
        /// `X-SLURM-USER-NAME`.
        user: String,
        /// `X-SLURM-USER-TOKEN`.
        token: SecretRef,
        /// The API version in paths (default `v0.0.38`, Slurm 22.05).
        api: String,
        /// CA bundle for https.
        #[serde(skip_serializing_if = "Option::is_none")]
        ca: Option<PathBuf>,
        /// Send the token over plain http:// anyway (refused otherwise).
        #[serde(skip_serializing_if = "is_false")]
        insecure_http: bool,
    },
    /// `scontrol update` on the controller over SSH (or on this machine).
    Scontrol {
        /// `user@host:port` of the controller; `None` runs it locally.
        #[serde(skip_serializing_if = "Option::is_none")]
        controller: Option<JumpHost>,
    },
}

/// A Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KubernetesTarget {
    /// The API server.
    #[serde(serialize_with = "display")]
    pub api: Url,
    /// Bearer token of a service account allowed to get and patch nodes.
    pub token: SecretRef,
    /// CA bundle of the API server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Labels put on accepted nodes (besides the node's own labels).
    pub labels: BTreeMap<String, String>,
    /// Taints put on accepted nodes (`key=value:Effect`).
    pub taints: Vec<Taint>,
    /// How the node joins the cluster, if it is not yet a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinSpec>,
    /// Send the token over plain http:// anyway (refused otherwise).
    #[serde(skip_serializing_if = "is_false")]
    pub insecure_http: bool,
}

/// A Kubernetes taint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl std::str::FromStr for Taint {
    type Err = String;
    fn from_str(s: &str) -> Result<Taint, String> {
        let (kv, effect) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("taint `{s}` needs an effect: `key=value:NoSchedule`"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "taint effect `{effect}` is not NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let ok = |t: &str| {
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        };
        if key.is_empty() || !ok(key) || !ok(value) || key.len() > 253 || value.len() > 63 {
            return Err(format!("taint `{s}` has an invalid key or value"));
        }
        Ok(Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        })
    }
}

/// The values of the join template (`templates/kubernetes/join.sh.tera`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JoinSpec {
    /// The API endpoint nodes join (`host:port`).
    pub endpoint: String,
    /// The bootstrap token.
    pub token: SecretRef,
    /// `sha256:…` of the cluster CA's public key.
    pub ca_cert_hash: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A token bound for a plain http:// URL: an error unless the target says
/// `insecure_http: true`, and then a warning (`kiln inventory check` shows
/// it), so a bearer token never crosses a network in clear by accident.
fn plain_http(cx: &mut Cx, pos: Pos, what: &str, url: &Url, token: bool, insecure: bool) {
    if url.https || !token {
        return;
    }
    if insecure {
        cx.warn_unsafe(
            pos,
            format!("{what} token is sent in clear over {url} (`insecure_http: true`)"),
        );
    } else {
        cx.error_help(
            pos,
            format!("{what} token would be sent in clear over {url}"),
            "use https://, or add `insecure_http: true` to this target to send it anyway",
        );
    }
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The targets of every rack, resolved.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HandoffTargets {
    /// The site's (`defaults.handoff`).
    pub site: Vec<HandoffTarget>,
    /// Racks that set their own list.
    pub racks: BTreeMap<String, Vec<HandoffTarget>>,
}

impl HandoffTargets {
    /// The targets of `rack`: its own list, else the site's.
    pub fn for_rack(&self, rack: &str) -> &[HandoffTarget] {
        self.racks.get(rack).map_or(&self.site[..], Vec::as_slice)
    }

    /// Whether any target is configured anywhere.
    pub fn is_empty(&self) -> bool {
        self.site.is_empty() && self.racks.values().all(Vec::is_empty)
    }
}

/// A `handoff:` list as written, with the position of each target.
#[derive(Clone, Debug, Default)]
pub struct HandoffFile {
    /// The targets and where each is written.
    pub targets: Vec<(HandoffTarget, Pos)>,
    /// Where the list is.
    pub pos: Option<Pos>,
}

/// Decodes a `handoff:` list.
pub fn decode(cx: &mut Cx, node: &Node) -> Option<HandoffFile> {
    let items: &[Node] = match &node.value {
        Value::Seq(items) => items,
        Value::Null => &[],
        other => {
            cx.error_help(
                node.pos,
                format!(
                    "`handoff` must be a list of targets, found {}",
                    other.kind()
                ),
                "write `handoff: [{webhook: {url: …}}]`",
            );
            return None;
        }
    };
    let mut targets = Vec::new();
    for item in items {
        let Some(mut m) = cx.map(item, "handoff target") else {
            continue;
        };
        let mut found = Vec::new();
        if let Some(n) = m.get("webhook") {
            found.push(webhook(cx, n).map(HandoffTarget::Webhook));
        }
        if let Some(n) = m.get("slurm") {
            found.push(slurm(cx, n).map(HandoffTarget::Slurm));
        }
        if let Some(n) = m.get("kubernetes") {
            found.push(kubernetes(cx, n).map(HandoffTarget::Kubernetes));
        }
        m.finish(cx);
        match found.len() {
            0 => cx.error(
                item.pos,
                "a handoff target needs one of `webhook`, `slurm`, `kubernetes`",
            ),
            1 => {
                if let Some(Some(t)) = found.pop() {
                    targets.push((t, item.pos));
                }
            }
            _ => cx.error(
                item.pos,
                "one handoff target per list item: split it into separate `- …` items",
            ),
        }
    }
    Some(HandoffFile {
        targets,
        pos: Some(node.pos),
    })
}

fn url(cx: &mut Cx, m: &mut MapReader<'_>, key: &'static str) -> Option<Url> {
    let node = m.get(key)?;
    let text = String::from_node(cx, node)?;
    match Url::parse(&text) {
        Ok(u) => Some(u),
        Err(e) => {
            cx.error(node.pos, e);
            None
        }
    }
}

fn req_url(cx: &mut Cx, m: &mut MapReader<'_>, key: &'static str, what: &str) -> Option<Url> {
    let present = m.get(key).is_some();
    if !present {
        let pos = m.pos();
        cx.error(pos, format!("{what} is missing the required key `{key}`"));
        return None;
    }
    url(cx, m, key)
}

fn ca(cx: &mut Cx, m: &mut MapReader<'_>) -> Option<PathBuf> {
    m.opt::<String>(cx, "ca").map(PathBuf::from)
}

fn webhook(cx: &mut Cx, node: &Node) -> Option<WebhookTarget> {
    let mut m = cx.map(node, "webhook target")?;
    let url = req_url(cx, &mut m, "url", "webhook target");
    let token = m.opt(cx, "token");
    let ca = ca(cx, &mut m);
    let attempts = match m.get("attempts") {
        Some(n) => match u32::from_node(cx, n) {
            Some(0) => {
                cx.error(n.pos, "`attempts` must be at least 1");
                None
            }
            other => other,
        },
        None => None,
    };
    let failed = m.opt(cx, "failed").unwrap_or(false);
    let timeout: Option<HumanDuration> = m.opt(cx, "timeout");
    let insecure_http = m.opt(cx, "insecure_http").unwrap_or(false);
    let pos = m.pos();
    m.finish(cx);
    let url = url?;
    plain_http(cx, pos, "webhook", &url, token.is_some(), insecure_http);
    Some(WebhookTarget {
        url,
        token,
        ca,
        attempts: attempts.unwrap_or(3),
        failed,
        timeout: timeout.map_or(Duration::from_secs(30), |d| d.0),
        insecure_http,
    })
}

fn slurm(cx: &mut Cx, node: &Node) -> Option<SlurmTarget> {
    let mut m = cx.map(node, "slurm target")?;
    let restd = url(cx, &mut m, "restd");
    let scontrol = m.get("scontrol");
    let user: Option<String> = m.opt(cx, "user");
    let token: Option<SecretRef> = m.opt(cx, "token");
    let api: Option<String> = m.opt(cx, "api");
    let ca = ca(cx, &mut m);
    let insecure_http = m.opt(cx, "insecure_http").unwrap_or(false);
    let pos = m.pos();
    m.finish(cx);
    let via = match (restd, scontrol) {
        (Some(url), None) => {
            let api = api.unwrap_or_else(|| "v0.0.38".into());
            if !api.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
                cx.error(
                    pos,
                    format!("`api: {api}` is not an API version like v0.0.38"),
                );
                return None;
            }
            let Some(token) = token else {
                cx.error_help(
                    pos,
                    "slurmrestd needs `token`",
                    "a JWT from `scontrol token`: `token: {env: SLURM_JWT}`",
                );
                return None;
            };
            plain_http(cx, pos, "slurmrestd", &url, true, insecure_http);
            SlurmVia::Restd {
                url,
                user: user.unwrap_or_else(|| "root".into()),
                token,
                api,
                ca,
                insecure_http,
            }
        }
        (None, Some(n)) => {
            let text = String::from_node(cx, n)?;
            let controller = if text == "local" {
                None
            } else {
                match text.parse::<JumpHost>() {
                    Ok(j) => Some(j),
                    Err(e) => {
                        cx.error_help(n.pos, e, "write `user@host:port`, or `local`");
                        return None;
                    }
                }
            };
            SlurmVia::Scontrol { controller }
        }
        (Some(_), Some(_)) => {
            cx.error(pos, "a slurm target uses `restd` or `scontrol`, not both");
            return None;
        }
        (None, None) => {
            cx.error_help(
                pos,
                "a slurm target needs `restd: URL` or `scontrol: user@controller`",
                "`scontrol: local` runs scontrol on this machine",
            );
            return None;
        }
    };
    Some(SlurmTarget { via })
}

fn kubernetes(cx: &mut Cx, node: &Node) -> Option<KubernetesTarget> {
    let mut m = cx.map(node, "kubernetes target")?;
    let api = req_url(cx, &mut m, "api", "kubernetes target");
    let token: Option<SecretRef> = m.req(cx, "token");
    let ca = ca(cx, &mut m);
    let labels: BTreeMap<String, String> = m.opt(cx, "labels").unwrap_or_default();
    let mut taints = Vec::new();
    if let Some(list) = m.get("taints") {
        let texts: Vec<crate::yaml::decode::Spanned<String>> =
            Vec::from_node(cx, list).unwrap_or_default();
        for t in texts {
            match t.value.parse::<Taint>() {
                Ok(t) => taints.push(t),
                Err(e) => cx.error(t.pos, e),
            }
        }
    }
    let join = match m.get("join") {
        Some(n) => join(cx, n),
        None => None,
    };
    let insecure_http = m.opt(cx, "insecure_http").unwrap_or(false);
    let pos = m.pos();
    m.finish(cx);
    let api = api?;
    plain_http(cx, pos, "kubernetes", &api, true, insecure_http);
    Some(KubernetesTarget {
        api,
        token: token?,
        ca,
        labels,
        taints,
        join,
        insecure_http,
    })
}

fn join(cx: &mut Cx, node: &Node) -> Option<JoinSpec> {
    let mut m = cx.map(node, "kubernetes join")?;
    let endpoint: Option<String> = m.req(cx, "endpoint");
    let token: Option<SecretRef> = m.req(cx, "token");
    let hash: Option<crate::yaml::decode::Spanned<String>> = m.req(cx, "ca_cert_hash");
    m.finish(cx);
    let hash = hash?;
    let ok = hash
        .value
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        cx.error(
            hash.pos,
            "`ca_cert_hash` must be `sha256:` and 64 hex digits",
        );
        return None;
    }
    Some(JoinSpec {
        endpoint: endpoint?,
        token: token?,
        ca_cert_hash: hash.value,
    })
}

/// Resolves the site's and racks' lists: relative paths against the
/// inventory's folder, a warning for each secret not available now.
pub fn resolve(
    cx: &mut Cx,
    site: Option<&HandoffFile>,
    racks: &[(String, Option<&HandoffFile>)],
    base: &Path,
) -> HandoffTargets {
    let one = |cx: &mut Cx, file: &HandoffFile| -> Vec<HandoffTarget> {
        file.targets
            .iter()
            .map(|(t, pos)| {
                let mut t = t.clone();
                t.rebase(base);
                for s in t.secrets() {
                    if !s.is_available() {
                        cx.warn(
                            *pos,
                            format!(
                                "{} token {s} is not available now; it is needed at handoff",
                                t.kind()
                            ),
                        );
                    }
                }
                t
            })
            .collect()
    };
    let mut out = HandoffTargets {
        site: site.map(|f| one(cx, f)).unwrap_or_default(),
        racks: BTreeMap::new(),
    };
    for (rack, file) in racks {
        if let Some(f) = file {
            let list = one(cx, f);
            out.racks.insert(rack.clone(), list);
        }
    }
    out
}
