//! The inventory file as written: every field optional where it may be
//! inherited, every value remembering its position. [`super::resolve`]
//! turns this into resolved nodes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::address::{BmcEndpoint, Cidr, JumpHost, Mac, SshEndpoint, is_hostname, is_username};
use super::tls::TlsPolicy;
use crate::secret::SecretRef;
use crate::yaml::decode::{Cx, FromNode, HumanDuration, MapReader, Spanned};
use crate::yaml::{Node, Pos, Value};

/// The whole file.
#[derive(Debug, Default)]
pub struct SiteFile {
    /// The site's name.
    pub site: Option<Spanned<String>>,
    /// Settings inherited by every rack and node.
    pub defaults: Settings,
    /// Networks that addresses must fall in, when given.
    pub networks: NetworksFile,
    /// Concurrency limits.
    pub limits: LimitsFile,
    /// The racks.
    pub racks: Vec<RackFile>,
}

/// Settings that a site (`defaults`), a rack or a node can set; the most
/// specific wins.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// Hardware profile name.
    pub hardware: Option<Spanned<String>>,
    /// Image profile name.
    pub image: Option<Spanned<String>>,
    /// BMC settings.
    pub bmc: BmcFile,
    /// SSH settings.
    pub ssh: SshFile,
    /// Labels (merged key by key).
    pub labels: BTreeMap<String, String>,
    /// Whether the node already carries customer work.
    pub in_service: Option<bool>,
    /// The package mirror the drivers stage installs from (air-gapped and
    /// sovereign sites), instead of NVIDIA's public repository.
    pub mirror: Option<Spanned<MirrorUrl>>,
    /// Which disk an image-based deploy writes to, replacing the image
    /// profile's hints (a node's disk serial, a rack's by-path).
    pub root_device: Option<Spanned<crate::profiles::image::RootDeviceHints>>,
    /// Handoff targets (site defaults and racks only).
    pub handoff: Option<super::handoff::HandoffFile>,
    /// Keys that were written but invalid (already reported), so resolving
    /// does not report them missing as well: `hardware`, `bmc.address`, …
    pub bad: Vec<&'static str>,
}

/// BMC settings as written.
#[derive(Debug, Default, Clone)]
pub struct BmcFile {
    /// The BMC's address.
    pub address: Option<Spanned<BmcEndpoint>>,
    /// The Redfish system id, for BMCs serving several systems.
    pub system: Option<String>,
    /// Login user.
    pub username: Option<Spanned<String>>,
    /// Where the password comes from.
    pub password: Option<Spanned<SecretRef>>,
    /// How the BMC's certificate is trusted.
    pub tls: Option<TlsPolicy>,
    /// Keys written but invalid.
    pub bad: Vec<&'static str>,
}

/// SSH settings as written.
#[derive(Debug, Default, Clone)]
pub struct SshFile {
    /// The node's SSH address.
    pub address: Option<Spanned<SshEndpoint>>,
    /// Login user.
    pub user: Option<Spanned<String>>,
    /// Private key file.
    pub key: Option<Spanned<PathBuf>>,
    /// An OpenSSH known_hosts file to verify host keys against.
    pub known_hosts: Option<Spanned<PathBuf>>,
    /// A bastion to connect through.
    pub jump: Option<JumpHost>,
    /// Keys written but invalid.
    pub bad: Vec<&'static str>,
}

/// The `networks` section.
#[derive(Debug, Default)]
pub struct NetworksFile {
    /// Networks BMC addresses must be in.
    pub bmc: Vec<Cidr>,
    /// Networks SSH addresses must be in.
    pub ssh: Vec<Cidr>,
}

/// The `limits` section.
#[derive(Debug, Default)]
pub struct LimitsFile {
    /// Nodes worked on at once across the site.
    pub concurrency: Option<usize>,
    /// Nodes worked on at once in one rack.
    pub per_rack: Option<usize>,
    /// Requests in flight at once to one BMC.
    pub per_bmc: Option<usize>,
    /// Nodes powering on at once in one rack.
    pub power_on_per_rack: Option<usize>,
    /// Interval between power-on waves in one rack.
    pub power_on_interval: Option<HumanDuration>,
    /// Nodes updating firmware at once in one rack.
    pub firmware_per_rack: Option<usize>,
}

/// One rack as written.
#[derive(Debug)]
pub struct RackFile {
    /// The rack's name.
    pub name: Spanned<String>,
    /// Settings for the rack's nodes.
    pub settings: Settings,
    /// The nodes.
    pub nodes: Vec<NodeFile>,
}

/// One node as written.
#[derive(Debug)]
pub struct NodeFile {
    /// The node's host name.
    pub name: Spanned<String>,
    /// The node's own settings.
    pub settings: Settings,
    /// The MAC of the NIC it installs over.
    pub mac: Option<Spanned<Mac>>,
}

/// A name that becomes a host name, a file name and a shell word.
#[derive(Debug, Clone)]
pub struct Hostname(pub String);

impl FromNode for Hostname {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let text = String::from_node(cx, node)?;
        if is_hostname(&text) {
            Some(Hostname(text))
        } else {
            let help = if is_hostname(&text.to_ascii_lowercase()) {
                format!("write it in lowercase: `{}`", text.to_ascii_lowercase())
            } else {
                "use lowercase letters, digits and `-` (names reach shells, files and DNS)".into()
            };
            cx.error_help(node.pos, format!("`{text}` is not a valid host name"), help);
            None
        }
    }
}

/// Runs `decode`; if it fails with a new error, records `key` in `bad`.
fn tracked<T>(
    cx: &mut Cx,
    bad: &mut Vec<&'static str>,
    key: &'static str,
    decode: impl FnOnce(&mut Cx) -> Option<T>,
) -> Option<T> {
    let before = cx.error_count();
    let value = decode(cx);
    if value.is_none() && cx.error_count() > before {
        bad.push(key);
    }
    value
}

/// Decodes a string and parses it with `FromStr`, reporting the parse error
/// at the value.
fn parsed<T: std::str::FromStr<Err = String>>(cx: &mut Cx, node: &Node) -> Option<Spanned<T>> {
    let text = String::from_node(cx, node)?;
    match text.parse() {
        Ok(value) => Some(Spanned {
            value,
            pos: node.pos,
        }),
        Err(e) => {
            cx.error(node.pos, e);
            None
        }
    }
}

macro_rules! from_str_node {
    ($($t:ty),*) => {$(
        impl FromNode for $t {
            fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
                parsed::<$t>(cx, node).map(|s| s.value)
            }
        }
    )*};
}
from_str_node!(BmcEndpoint, SshEndpoint, Cidr, Mac, JumpHost);

/// A list or a single value.
fn one_or_many<T: FromNode>(cx: &mut Cx, node: &Node) -> Option<Vec<T>> {
    match node.value {
        Value::Seq(_) => Vec::<T>::from_node(cx, node),
        _ => T::from_node(cx, node).map(|v| vec![v]),
    }
}

impl FromNode for SecretRef {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Map(_) => {
                let mut m = cx.map(node, "secret")?;
                let env: Option<String> = m.opt(cx, "env");
                let file: Option<String> = m.opt(cx, "file");
                m.finish(cx);
                match (env, file) {
                    (Some(env), None) => {
                        let valid = !env.is_empty()
                            && !env.starts_with(|c: char| c.is_ascii_digit())
                            && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                        if valid {
                            Some(SecretRef::Env(env))
                        } else {
                            cx.error(
                                node.pos,
                                format!("`{env}` is not an environment variable name"),
                            );
                            None
                        }
                    }
                    (None, Some(file)) => Some(SecretRef::File(PathBuf::from(file))),
                    (Some(_), Some(_)) => {
                        cx.error(node.pos, "a secret comes from `env` or `file`, not both");
                        None
                    }
                    (None, None) => {
                        cx.error(node.pos, "a secret needs `env: VARIABLE` or `file: PATH`");
                        None
                    }
                }
            }
            Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                cx.error_help(
                    node.pos,
                    "plaintext secrets are refused",
                    "use `{env: KILN_BMC_PASSWORD}` or `{file: path/to/secret}`",
                );
                None
            }
            other => {
                cx.error(
                    node.pos,
                    format!(
                        "expected a secret like {{env: NAME}}, found {}",
                        other.kind()
                    ),
                );
                None
            }
        }
    }
}

impl FromNode for BmcFile {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut bad = Vec::new();
        if !matches!(node.value, Value::Map(_)) {
            return Some(BmcFile {
                address: tracked(cx, &mut bad, "bmc.address", |cx| parsed(cx, node)),
                bad,
                ..BmcFile::default()
            });
        }
        let mut m = cx.map(node, "bmc settings")?;
        let address = m.get("address");
        let bmc = BmcFile {
            address: tracked(cx, &mut bad, "bmc.address", |cx| {
                address.and_then(|n| parsed(cx, n))
            }),
            system: m.opt(cx, "system"),
            username: tracked(cx, &mut bad, "bmc.username", |cx| {
                username(cx, &mut m, "username")
            }),
            password: tracked(cx, &mut bad, "bmc.password", |cx| m.opt(cx, "password")),
            tls: m.opt(cx, "tls"),
            bad,
        };
        if let Some(system) = &bmc.system
            && !system
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            let pos = m.pos();
            cx.error(
                pos,
                format!("system id `{system}` may hold only letters, digits, `-`, `_` and `.`"),
            );
        }
        m.finish(cx);
        Some(bmc)
    }
}

fn username(cx: &mut Cx, m: &mut MapReader<'_>, key: &'static str) -> Option<Spanned<String>> {
    let node = m.get(key)?;
    let name: Spanned<String> = Spanned::from_node(cx, node)?;
    if is_username(&name.value) {
        Some(name)
    } else {
        cx.error(
            node.pos,
            format!("`{}` is not a valid user name", name.value),
        );
        None
    }
}

fn path(cx: &mut Cx, m: &mut MapReader<'_>, key: &'static str) -> Option<Spanned<PathBuf>> {
    let s: Spanned<String> = m.opt(cx, key)?;
    Some(Spanned {
        value: PathBuf::from(s.value),
        pos: s.pos,
    })
}

impl FromNode for SshFile {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut bad = Vec::new();
        if !matches!(node.value, Value::Map(_)) {
            return Some(SshFile {
                address: tracked(cx, &mut bad, "ssh.address", |cx| parsed(cx, node)),
                bad,
                ..SshFile::default()
            });
        }
        let mut m = cx.map(node, "ssh settings")?;
        let address = m.get("address");
        let ssh = SshFile {
            address: tracked(cx, &mut bad, "ssh.address", |cx| {
                address.and_then(|n| parsed(cx, n))
            }),
            user: tracked(cx, &mut bad, "ssh.user", |cx| username(cx, &mut m, "user")),
            key: path(cx, &mut m, "key"),
            known_hosts: path(cx, &mut m, "known_hosts"),
            jump: m.opt(cx, "jump"),
            bad,
        };
        m.finish(cx);
        Some(ssh)
    }
}

/// Label keys and values follow Kubernetes' label syntax, because labels
/// travel to Kubernetes nodes at handoff.
fn valid_label_part(text: &str, allow_empty: bool) -> bool {
    if text.is_empty() {
        return allow_empty;
    }
    let bytes = text.as_bytes();
    text.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn labels(cx: &mut Cx, node: &Node) -> Option<BTreeMap<String, String>> {
    let Value::Map(entries) = &node.value else {
        cx.error(
            node.pos,
            format!("expected labels (a mapping), found {}", node.value.kind()),
        );
        return None;
    };
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let Some(k) = String::from_node(cx, key) else {
            continue;
        };
        let name = k.rsplit('/').next().unwrap_or_default();
        let prefix_ok = match k.rsplit_once('/') {
            Some((prefix, _)) => is_hostname(prefix),
            None => true,
        };
        if !prefix_ok || !valid_label_part(name, false) {
            cx.error(
                key.pos,
                format!(
                    "`{k}` is not a valid label key (letters, digits, `-`, `_`, `.`; at most 63)"
                ),
            );
            continue;
        }
        let v = match &value.value {
            Value::Bool(b) => b.to_string(),
            Value::Float(f) => f.to_string(),
            _ => match String::from_node(cx, value) {
                Some(v) => v,
                None => continue,
            },
        };
        if !valid_label_part(&v, true) {
            cx.error(
                value.pos,
                format!(
                    "`{v}` is not a valid label value (letters, digits, `-`, `_`, `.`; at most 63)"
                ),
            );
            continue;
        }
        out.insert(k, v);
    }
    Some(out)
}

/// Finishes a mapping that holds settings. A misspelt key (`shh:`) is
/// reported as a typo of the key it resembles, and that key is then not
/// also reported missing on every node that inherits it.
fn finish_settings(cx: &mut Cx, m: MapReader<'_>, settings: &mut Settings) {
    for key in m.finish(cx) {
        settings.bad.extend(match key {
            "bmc" => &["bmc.address", "bmc.username", "bmc.password"][..],
            "ssh" => &["ssh.address", "ssh.user"][..],
            "hardware" => &["hardware"][..],
            "image" => &["image"][..],
            _ => &[][..],
        });
    }
}

/// Reads the settings keys common to defaults, racks and nodes.
fn settings(cx: &mut Cx, m: &mut MapReader<'_>) -> Settings {
    let mut bad = Vec::new();
    let hardware = tracked(cx, &mut bad, "hardware", |cx| m.opt(cx, "hardware"));
    let image = tracked(cx, &mut bad, "image", |cx| m.opt(cx, "image"));
    let bmc: BmcFile = tracked(cx, &mut bad, "bmc", |cx| m.opt(cx, "bmc")).unwrap_or_default();
    let ssh: SshFile = tracked(cx, &mut bad, "ssh", |cx| m.opt(cx, "ssh")).unwrap_or_default();
    bad.extend(&bmc.bad);
    bad.extend(&ssh.bad);
    if bad.contains(&"bmc") {
        bad.extend(["bmc.address", "bmc.username", "bmc.password"]);
    }
    if bad.contains(&"ssh") {
        bad.extend(["ssh.address", "ssh.user"]);
    }
    Settings {
        hardware,
        image,
        bmc,
        ssh,
        labels: m
            .get("labels")
            .and_then(|n| labels(cx, n))
            .unwrap_or_default(),
        in_service: m.opt(cx, "in_service"),
        mirror: m.opt(cx, "mirror"),
        root_device: m.opt(cx, "root_device"),
        handoff: m.get("handoff").and_then(|n| super::handoff::decode(cx, n)),
        bad,
    }
}

/// A package mirror's base URL: `http://` or `https://`, a host, and no
/// whitespace, quotes or control characters (it ends up in apt and dnf
/// configuration files as well as in shell words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorUrl(pub String);

impl std::str::FromStr for MirrorUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<MirrorUrl, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .ok_or_else(|| format!("mirror `{s}` must start with http:// or https://"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("mirror `{s}` has no host"));
        }
        if let Some(c) = s.chars().find(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '\'' | '"' | '\\' | '`' | '$' | '#' | '?')
        }) {
            return Err(format!(
                "mirror `{}` contains {c:?}, which a repository URL cannot hold",
                s.escape_debug()
            ));
        }
        Ok(MirrorUrl(s.trim_end_matches('/').to_owned()))
    }
}

impl FromNode for MirrorUrl {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let text = String::from_node(cx, node)?;
        match text.parse() {
            Ok(m) => Some(m),
            Err(e) => {
                cx.error_help(
                    node.pos,
                    e,
                    "for example `mirror: http://mirror.example.net/nvidia`",
                );
                None
            }
        }
    }
}

fn node_file(cx: &mut Cx, node: &Node) -> Option<NodeFile> {
    let mut m = cx.map(node, "node")?;
    // An invalid name is reported, and the node still checked, so one pass
    // shows its other problems too.
    let name: Option<Spanned<String>> = m.get("name").and_then(|n| {
        let _ = Hostname::from_node(cx, n);
        Spanned::from_node(cx, n)
    });
    if m.get("name").is_none() {
        let pos = m.pos();
        cx.error(pos, "node is missing the required key `name`");
    }
    let settings = settings(cx, &mut m);
    let mac = m.get("mac").and_then(|n| parsed(cx, n));
    if let Some(pos) = settings.handoff.as_ref().and_then(|h| h.pos) {
        cx.error_help(
            pos,
            "handoff targets are set for the site (`defaults`) or a rack, not a node",
            "move `handoff` to the node's rack",
        );
    }
    let mut settings = settings;
    finish_settings(cx, m, &mut settings);
    Some(NodeFile {
        name: name?,
        settings,
        mac,
    })
}

fn rack_file(cx: &mut Cx, node: &Node) -> Option<RackFile> {
    let mut m = cx.map(node, "rack")?;
    let name: Option<Spanned<Hostname>> = m.req(cx, "name");
    let mut settings = settings(cx, &mut m);
    let nodes = match m.get("nodes") {
        Some(list) => match &list.value {
            Value::Seq(items) => items.iter().filter_map(|n| node_file(cx, n)).collect(),
            Value::Null => Vec::new(),
            other => {
                cx.error(
                    list.pos,
                    format!("`nodes` must be a list, found {}", other.kind()),
                );
                Vec::new()
            }
        },
        None => {
            let pos = m.pos();
            cx.error(pos, "rack is missing the required key `nodes`");
            Vec::new()
        }
    };
    finish_settings(cx, m, &mut settings);
    let name = name?;
    Some(RackFile {
        name: Spanned {
            value: name.value.0,
            pos: name.pos,
        },
        settings,
        nodes,
    })
}

fn networks(cx: &mut Cx, node: &Node) -> NetworksFile {
    let Some(mut m) = cx.map(node, "networks") else {
        return NetworksFile::default();
    };
    let bmc = m
        .get("bmc")
        .and_then(|n| one_or_many(cx, n))
        .unwrap_or_default();
    let ssh = m
        .get("ssh")
        .and_then(|n| one_or_many(cx, n))
        .unwrap_or_default();
    m.finish(cx);
    NetworksFile { bmc, ssh }
}

fn positive(cx: &mut Cx, m: &mut MapReader<'_>, key: &'static str) -> Option<usize> {
    let node = m.get(key)?;
    let n = usize::from_node(cx, node)?;
    if n == 0 {
        cx.error(node.pos, format!("`{key}` must be at least 1"));
        return None;
    }
    Some(n)
}

fn limits(cx: &mut Cx, node: &Node) -> LimitsFile {
    let Some(mut m) = cx.map(node, "limits") else {
        return LimitsFile::default();
    };
    let mut limits = LimitsFile {
        concurrency: positive(cx, &mut m, "concurrency"),
        per_rack: positive(cx, &mut m, "per_rack"),
        per_bmc: positive(cx, &mut m, "per_bmc"),
        ..LimitsFile::default()
    };
    if let Some(power) = m.get("power_on")
        && let Some(mut p) = cx.map(power, "power_on limits")
    {
        limits.power_on_per_rack = positive(cx, &mut p, "per_rack");
        limits.power_on_interval = p.opt(cx, "interval");
        p.finish(cx);
    }
    if let Some(firmware) = m.get("firmware")
        && let Some(mut f) = cx.map(firmware, "firmware limits")
    {
        limits.firmware_per_rack = positive(cx, &mut f, "per_rack");
        f.finish(cx);
    }
    m.finish(cx);
    limits
}

/// Decodes the whole file, reporting every problem into `cx`.
pub fn site_file(cx: &mut Cx, root: &Node) -> SiteFile {
    if root.value == Value::Null {
        cx.error(
            Pos {
                line: 1,
                col: 1,
                len: 0,
            },
            "the inventory is empty; it needs at least `site` and `racks`",
        );
        return SiteFile::default();
    }
    let Some(mut m) = cx.map(root, "inventory") else {
        return SiteFile::default();
    };
    let site: Option<Spanned<Hostname>> = m.req(cx, "site");
    let defaults = match m.get("defaults") {
        Some(node) => match cx.map(node, "defaults") {
            Some(mut d) => {
                let mut s = settings(cx, &mut d);
                finish_settings(cx, d, &mut s);
                s
            }
            None => Settings::default(),
        },
        None => Settings::default(),
    };
    let networks = m
        .get("networks")
        .map(|n| networks(cx, n))
        .unwrap_or_default();
    let limits = m.get("limits").map(|n| limits(cx, n)).unwrap_or_default();
    let racks = match m.get("racks") {
        Some(list) => match &list.value {
            Value::Seq(items) => items.iter().filter_map(|r| rack_file(cx, r)).collect(),
            other => {
                cx.error(
                    list.pos,
                    format!("`racks` must be a list, found {}", other.kind()),
                );
                Vec::new()
            }
        },
        None => {
            let pos = m.pos();
            cx.error(pos, "inventory is missing the required key `racks`");
            Vec::new()
        }
    };
    m.finish(cx);
    SiteFile {
        site: site.map(|s| Spanned {
            value: s.value.0,
            pos: s.pos,
        }),
        defaults,
        networks,
        limits,
        racks,
    }
}
