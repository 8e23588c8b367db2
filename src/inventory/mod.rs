//! The site inventory: racks, nodes, their BMCs and SSH addresses, and the
//! profiles they must meet. [`load_file`] reads and checks a file and gives
//! back every problem at once; [`Inventory`] is the resolved result every
//! other part of kiln works from.

pub mod address;
pub mod generate;
pub mod handoff;
mod resolve;
pub mod schema;
pub mod select;
pub mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use address::{BmcEndpoint, Cidr, Host, JumpHost, Mac, SshEndpoint};
pub use select::Selection;
pub use tls::{Fingerprint, TlsPolicy};

use crate::diag::{Diagnostic, Severity, Source};
use crate::profiles::Catalog;
use crate::secret::SecretRef;
use crate::yaml::decode::Cx;

/// A resolved site: every node with its defaults applied.
#[derive(Clone, Debug, Serialize)]
pub struct Inventory {
    /// The site's name.
    pub site: String,
    /// Racks in file order.
    pub racks: Vec<Rack>,
    /// Nodes in file order.
    pub nodes: Vec<Node>,
    /// Concurrency limits.
    pub limits: Limits,
    /// Where nodes go at the end of a run, per rack.
    #[serde(skip_serializing_if = "handoff::HandoffTargets::is_empty")]
    pub handoff: handoff::HandoffTargets,
    /// The profiles the nodes refer to (and any others known).
    #[serde(skip)]
    pub catalog: Catalog,
}

/// A rack.
#[derive(Clone, Debug, Serialize)]
pub struct Rack {
    /// The rack's name.
    pub name: String,
    /// How many nodes it holds.
    pub nodes: usize,
}

/// One server, fully resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    /// Host name; unique in the site.
    pub name: String,
    /// The rack it sits in.
    pub rack: String,
    /// Hardware profile name.
    pub hardware: String,
    /// Image profile name.
    pub image: String,
    /// Its BMC.
    pub bmc: BmcConfig,
    /// How kiln logs in to it.
    pub ssh: SshConfig,
    /// The MAC of the NIC it installs over, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// Labels, merged from site, rack and node.
    pub labels: BTreeMap<String, String>,
    /// Whether it already runs customer work: destructive actions need an
    /// explicit opt-in.
    pub in_service: bool,
    /// The package mirror the drivers stage installs from (base URL, no
    /// trailing `/`), instead of NVIDIA's public repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Root-device hints that replace the image profile's for this node.
    pub root_device: Option<crate::profiles::image::RootDeviceHints>,
}

/// A node's BMC.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BmcConfig {
    /// Redfish endpoint.
    #[serde(rename = "address")]
    pub endpoint: BmcEndpoint,
    /// The system id on a BMC serving several systems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Login user.
    pub username: String,
    /// Where the password comes from (never the password).
    pub password: SecretRef,
    /// Certificate trust.
    pub tls: TlsPolicy,
}

/// How kiln reaches a node over SSH.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SshConfig {
    /// Address.
    #[serde(rename = "address")]
    pub endpoint: SshEndpoint,
    /// Login user.
    pub user: String,
    /// Private key file (else the SSH agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// OpenSSH known_hosts file to verify against, besides kiln's own records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// Bastion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jump: Option<JumpHost>,
}

/// Concurrency limits for a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limits {
    /// Nodes worked on at once across the site.
    pub concurrency: usize,
    /// Nodes worked on at once in one rack.
    pub per_rack: usize,
    /// Requests in flight at once to one BMC (BMCs fall over under load).
    pub per_bmc: usize,
    /// Nodes powering on at once in one rack (inrush current).
    pub power_on_per_rack: usize,
    /// Pause between power-on waves in a rack.
    #[serde(serialize_with = "serialize_secs")]
    pub power_on_interval: Duration,
    /// Nodes whose firmware is being updated at once in one rack: a BMC
    /// flashing pulls the management network and the host's power with it.
    pub firmware_per_rack: usize,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            concurrency: 256,
            per_rack: 32,
            per_bmc: 1,
            power_on_per_rack: 4,
            power_on_interval: Duration::from_secs(10),
            firmware_per_rack: 4,
        }
    }
}

/// The outcome of checking an inventory: the resolved inventory when there
/// were no errors, and every diagnostic (errors and warnings) either way.
#[derive(Debug)]
pub struct Checked {
    /// The inventory, when it has no errors.
    pub inventory: Option<Inventory>,
    /// Problems found, errors first, each in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// How many errors were found.
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// How many warnings were found.
    pub fn warnings(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }
}

/// An inventory file that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("cannot read inventory {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any inventory should be.
    #[error("inventory {path} is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The built-in profiles are broken (a bug in kiln).
    #[error("built-in profiles are invalid: {0}")]
    Builtin(String),
}

/// Reads and checks an inventory file. Hardware profiles in a `profiles/`
/// folder beside it are added to the built-in ones.
pub fn load_file(path: &Path) -> Result<Checked, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let limit = crate::yaml::MAX_FILE_BYTES;
    if size > limit {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // `take` guards against files that grow (or lie about their size).
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit,
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut catalog = Catalog::builtin().map_err(|d| LoadError::Builtin(render_all(&d)))?;
    let mut profile_diags = Vec::new();
    catalog.add_hardware_dir(&base.join("profiles"), &mut profile_diags);
    let name = path.display().to_string();
    let mut checked = match String::from_utf8(bytes) {
        Ok(text) => check_str(&name, text, base, catalog),
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let col = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            let source = Source::new(name, String::from_utf8_lossy(e.as_bytes()).into_owned());
            let mut cx = Cx::new(source);
            cx.error_help(
                crate::yaml::Pos {
                    line: u32::try_from(line).unwrap_or(u32::MAX),
                    col: u32::try_from(col).unwrap_or(u32::MAX),
                    len: 1,
                },
                "the file is not UTF-8 text",
                "is this a binary or a file in another encoding? save it as UTF-8",
            );
            Checked {
                inventory: None,
                diagnostics: cx.diags,
            }
        }
    };
    if !profile_diags.is_empty() {
        profile_diags.append(&mut checked.diagnostics);
        checked.diagnostics = profile_diags;
        if checked.errors() > 0 {
            checked.inventory = None;
        }
    }
    Ok(checked)
}

/// Checks inventory text. `name` is shown in messages; `base` is the folder
/// relative paths (secret files, keys) are resolved against.
pub fn check_str(name: &str, text: impl Into<String>, base: &Path, catalog: Catalog) -> Checked {
    let source = Source::new(name, text);
    let mut cx = Cx::new(source.clone());
    match crate::yaml::parse(&source.text) {
        Ok(root) => {
            let file = schema::site_file(&mut cx, &root);
            let inventory = resolve::resolve(&mut cx, file, base, catalog);
            let mut diagnostics = cx.diags;
            // Errors first, then warnings; each group in file order.
            diagnostics.sort_by_key(|d| (d.severity, d.pos));
            let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
            Checked {
                inventory: if has_errors { None } else { inventory },
                diagnostics,
            }
        }
        Err(e) => {
            cx.push(Severity::Error, e.pos, e.message, None);
            Checked {
                inventory: None,
                diagnostics: cx.diags,
            }
        }
    }
}

fn render_all(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| d.render(false)).collect()
}

impl Inventory {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The nodes `selection` picks, in file order. A selection that picks
    /// nothing is an error (a typo must not silently do nothing).
    pub fn select(&self, selection: &Selection) -> Result<Vec<&Node>, select::SelectError> {
        selection.apply(&self.nodes)
    }
}
