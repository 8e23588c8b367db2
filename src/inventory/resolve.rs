//! Applies defaults (site, then rack, then node) and runs the checks that
//! need the whole site: duplicates, networks, profile references, secrets.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::address::{BmcEndpoint, Host, Mac, SshEndpoint};
use super::schema::{NodeFile, Settings, SiteFile};
use super::{BmcConfig, Inventory, Limits, Node, Rack, SshConfig};
use crate::diag::did_you_mean;
use crate::profiles::Catalog;
use crate::yaml::Pos;
use crate::yaml::decode::{Cx, Spanned};

/// The first value set among node, rack and site.
fn pick<T: Clone>(layers: [&Option<T>; 3]) -> Option<T> {
    layers.into_iter().find_map(Clone::clone)
}

/// `~/x` becomes `$HOME/x`; a relative path is taken from the inventory's folder.
pub fn expand_path(path: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if path.is_relative() {
        base.join(path)
    } else {
        path.to_owned()
    }
}

/// Remembers which value claimed a unique key first.
struct Unique<K> {
    seen: HashMap<K, (String, Pos)>,
    what: &'static str,
}

impl<K: std::hash::Hash + Eq> Unique<K> {
    fn new(what: &'static str) -> Self {
        Unique {
            seen: HashMap::new(),
            what,
        }
    }

    fn claim(&mut self, cx: &mut Cx, key: K, shown: &str, owner: &str, pos: Pos) {
        match self.seen.get(&key) {
            Some((first, first_pos)) => cx.error(
                pos,
                format!(
                    "duplicate {} `{shown}`: already used by {first} (line {})",
                    self.what, first_pos.line
                ),
            ),
            None => {
                self.seen.insert(key, (owner.to_owned(), pos));
            }
        }
    }
}

/// Reports each problem once per source position, however many nodes
/// inherit the value (a bad default must not print 12,500 times).
struct Once(HashSet<(Pos, &'static str)>);

impl Once {
    fn first(&mut self, pos: Pos, kind: &'static str) -> bool {
        self.0.insert((pos, kind))
    }
}

fn check_network(cx: &mut Cx, nets: &[super::Cidr], host: &Host, pos: Pos, what: &str) {
    if nets.is_empty() {
        return;
    }
    if let Host::Ip(ip) = host
        && !nets.iter().any(|n| n.contains(*ip))
    {
        let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
        cx.error(
            pos,
            format!(
                "{what} address {ip} is outside the {what} network ({})",
                list.join(", ")
            ),
        );
    }
}

pub(super) fn resolve(
    cx: &mut Cx,
    file: SiteFile,
    base: &Path,
    catalog: Catalog,
) -> Option<Inventory> {
    let mut names = Unique::<String>::new("node name");
    let mut rack_names = Unique::<String>::new("rack name");
    let mut macs = Unique::<Mac>::new("MAC address");
    let mut checks = Checks {
        once: Once(HashSet::new()),
        bmcs: Unique::new("BMC"),
        sshs: Unique::new("SSH address"),
    };

    let mut racks = Vec::with_capacity(file.racks.len());
    let mut nodes = Vec::new();
    if file.racks.is_empty() && !cx.has_errors() {
        cx.error(
            Pos {
                line: 1,
                col: 1,
                len: 0,
            },
            "the inventory has no racks",
        );
    }
    for rack in &file.racks {
        rack_names.claim(
            cx,
            rack.name.value.clone(),
            &rack.name.value,
            &format!("rack {}", rack.name.value),
            rack.name.pos,
        );
        if rack.nodes.is_empty() {
            cx.warn(
                rack.name.pos,
                format!("rack {} has no nodes", rack.name.value),
            );
        }
        racks.push(Rack {
            name: rack.name.value.clone(),
            nodes: rack.nodes.len(),
        });
        for node in &rack.nodes {
            let owner = format!("node {}", node.name.value);
            names.claim(
                cx,
                node.name.value.clone(),
                &node.name.value,
                &owner,
                node.name.pos,
            );
            if let Some(mac) = &node.mac {
                macs.claim(cx, mac.value, &mac.value.to_string(), &owner, mac.pos);
            }
            let layers = [&node.settings, &rack.settings, &file.defaults];
            if let Some(resolved) = resolve_node(
                cx,
                &mut checks,
                &file,
                &catalog,
                base,
                &rack.name.value,
                node,
                layers,
            ) {
                nodes.push(resolved);
            }
        }
    }

    let defaults = Limits::default();
    let limits = Limits {
        concurrency: file.limits.concurrency.unwrap_or(defaults.concurrency),
        per_rack: file.limits.per_rack.unwrap_or(defaults.per_rack),
        per_bmc: file.limits.per_bmc.unwrap_or(defaults.per_bmc),
        power_on_per_rack: file
            .limits
            .power_on_per_rack
            .unwrap_or(defaults.power_on_per_rack),
        power_on_interval: file
            .limits
            .power_on_interval
            .map_or(defaults.power_on_interval, |d| d.0),
        firmware_per_rack: file
            .limits
            .firmware_per_rack
            .unwrap_or(defaults.firmware_per_rack),
    };
    let rack_handoff: Vec<(String, Option<&super::handoff::HandoffFile>)> = file
        .racks
        .iter()
        .map(|r| (r.name.value.clone(), r.settings.handoff.as_ref()))
        .collect();
    let handoff = super::handoff::resolve(cx, file.defaults.handoff.as_ref(), &rack_handoff, base);
    Some(Inventory {
        site: file.site?.value,
        racks,
        nodes,
        limits,
        handoff,
        catalog,
    })
}

/// Site-wide checks that each node adds to.
struct Checks {
    once: Once,
    bmcs: Unique<(BmcEndpoint, Option<String>)>,
    sshs: Unique<SshEndpoint>,
}

fn profile_ref(
    cx: &mut Cx,
    once: &mut Once,
    value: Option<Spanned<String>>,
    known: Vec<&str>,
    what: &'static str,
    node: &NodeFile,
    written_but_bad: bool,
) -> Option<String> {
    let Some(value) = value else {
        if written_but_bad {
            return None;
        }
        cx.error_help(
            node.name.pos,
            format!("node {} has no {what} profile", node.name.value),
            format!("set `{what}:` in `defaults`, on the rack or on the node"),
        );
        return None;
    };
    if known.contains(&value.value.as_str()) {
        return Some(value.value);
    }
    if once.first(value.pos, what) {
        let message = format!("unknown {what} profile `{}`", value.value);
        match did_you_mean(&value.value, known.iter().copied()) {
            Some(hint) => cx.error_help(value.pos, message, format!("did you mean `{hint}`?")),
            None => cx.error_help(
                value.pos,
                message,
                format!("known {what} profiles: {}", known.join(", ")),
            ),
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn resolve_node(
    cx: &mut Cx,
    checks: &mut Checks,
    file: &SiteFile,
    catalog: &Catalog,
    base: &Path,
    rack: &str,
    node: &NodeFile,
    layers: [&Settings; 3],
) -> Option<Node> {
    let [n, r, d] = layers;
    let name = &node.name.value;
    let owner = format!("node {name}");
    let once = &mut checks.once;
    let hardware = profile_ref(
        cx,
        once,
        pick([&n.hardware, &r.hardware, &d.hardware]),
        catalog.hardware.keys().map(String::as_str).collect(),
        "hardware",
        node,
        layers.iter().any(|l| l.bad.contains(&"hardware")),
    );
    let image = profile_ref(
        cx,
        once,
        pick([&n.image, &r.image, &d.image]),
        catalog.images.keys().map(String::as_str).collect(),
        "image",
        node,
        layers.iter().any(|l| l.bad.contains(&"image")),
    );

    let missing = |cx: &mut Cx, what: &str, key: &str, field: &str| {
        if layers.iter().any(|l| l.bad.contains(&field)) {
            return; // written but invalid: already reported where it is
        }
        cx.error_help(
            node.name.pos,
            format!("node {name} has no {what}"),
            format!("set `{key}` on the node (or in `defaults` / the rack)"),
        );
    };

    // BMC
    let bmc_address = pick([&n.bmc.address, &r.bmc.address, &d.bmc.address]);
    let username = pick([&n.bmc.username, &r.bmc.username, &d.bmc.username]);
    let password = pick([&n.bmc.password, &r.bmc.password, &d.bmc.password]);
    if bmc_address.is_none() {
        missing(cx, "BMC address", "bmc: HOST[:PORT]", "bmc.address");
    }
    if username.is_none() {
        missing(cx, "BMC username", "bmc.username", "bmc.username");
    }
    if password.is_none() {
        missing(
            cx,
            "BMC password",
            "bmc.password: {env: VAR}",
            "bmc.password",
        );
    }
    let system = pick([&n.bmc.system, &r.bmc.system, &d.bmc.system]);
    if let Some(a) = &bmc_address {
        check_network(cx, &file.networks.bmc, &a.value.host, a.pos, "BMC");
        let shown = match &system {
            Some(s) => format!("{} system {s}", a.value),
            None => a.value.to_string(),
        };
        checks
            .bmcs
            .claim(cx, (a.value.clone(), system.clone()), &shown, &owner, a.pos);
    }
    let password = password.map(|p| {
        let secret = p.value.rebase(base);
        if !secret.is_available() && once.first(p.pos, "secret") {
            cx.warn(
                p.pos,
                format!("BMC password {secret} is not available now; it is needed when kiln talks to the BMC"),
            );
        }
        secret
    });

    // SSH
    let ssh_address = pick([&n.ssh.address, &r.ssh.address, &d.ssh.address]);
    let user = pick([&n.ssh.user, &r.ssh.user, &d.ssh.user]);
    if ssh_address.is_none() {
        missing(cx, "SSH address", "ssh: HOST[:PORT]", "ssh.address");
    }
    if user.is_none() {
        missing(cx, "SSH user", "ssh.user", "ssh.user");
    }
    if let Some(a) = &ssh_address {
        check_network(cx, &file.networks.ssh, &a.value.host, a.pos, "SSH");
        checks
            .sshs
            .claim(cx, a.value.clone(), &a.value.to_string(), &owner, a.pos);
        if let (Host::Ip(ip), Some(b)) = (&a.value.host, &bmc_address)
            && Host::Ip(*ip) == b.value.host
            && a.value.port == b.value.port
        {
            cx.error(
                a.pos,
                format!("node {name}: SSH and BMC share the address {}", a.value),
            );
        }
    }
    let known_hosts = pick([&n.ssh.known_hosts, &r.ssh.known_hosts, &d.ssh.known_hosts])
        .map(|k| expand_path(&k.value, base));

    let mut labels = d.labels.clone();
    labels.extend(r.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.extend(n.labels.iter().map(|(k, v)| (k.clone(), v.clone())));

    let key = pick([&n.ssh.key, &r.ssh.key, &d.ssh.key]).map(|k| {
        let path = expand_path(&k.value, base);
        if !path.is_file() && once.first(k.pos, "key") {
            cx.warn(
                k.pos,
                format!("SSH key {} does not exist (yet)", path.display()),
            );
        }
        path
    });
    Some(Node {
        name: name.clone(),
        rack: rack.to_owned(),
        hardware: hardware?,
        image: image?,
        bmc: BmcConfig {
            endpoint: bmc_address?.value,
            system,
            username: username?.value,
            password: password?,
            tls: pick([&n.bmc.tls, &r.bmc.tls, &d.bmc.tls]).unwrap_or_default(),
        },
        ssh: SshConfig {
            endpoint: ssh_address?.value,
            user: user?.value,
            key,
            known_hosts,
            jump: pick([&n.ssh.jump, &r.ssh.jump, &d.ssh.jump]),
        },
        mac: node.mac.as_ref().map(|m| m.value),
        labels,
        in_service: pick([&n.in_service, &r.in_service, &d.in_service]).unwrap_or(false),
        mirror: pick([&n.mirror, &r.mirror, &d.mirror]).map(|m| m.value.0),
        root_device: pick([&n.root_device, &r.root_device, &d.root_device]).map(|h| h.value),
    })
}
