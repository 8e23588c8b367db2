//! Host-key trust: which keys a node may present. Keys are checked against
//! the node's own known_hosts file (inventory `ssh.known_hosts`), the
//! user's `~/.ssh/known_hosts`, and kiln's store: an OpenSSH-format file at
//! `<inventory dir>/.kiln/ssh_known_hosts` where kiln records the host keys
//! it injects when imaging a node (and, only on explicit opt-in, keys
//! trusted on first use). Being OpenSSH's format, the store also works with
//! `ssh -o UserKnownHostsFile=…`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use russh::keys::ssh_key::PublicKey;

use super::known_hosts::{KnownHosts, fingerprint, host_name};

/// Where kiln's own host-key records live: `$KILN_STATE_DIR` when set
/// (as for the BMC trust records), else `.kiln/` next to the inventory.
pub fn store_path(inventory_dir: &Path) -> PathBuf {
    crate::state::state_dir_in(inventory_dir).join("ssh_known_hosts")
}

/// A host key kiln refuses.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// Nothing is recorded for this host.
    #[error(
        "{node} ({addr}): unknown host key {offered}; check it, then record it with `kiln ssh trust --select {node}` (trust on first use) or add it to a known_hosts file"
    )]
    Unknown {
        /// Node name.
        node: String,
        /// `host:port`.
        addr: String,
        /// Fingerprint of the key the server offered.
        offered: String,
    },
    /// Other keys are recorded: a reimage kiln did not record, or an attack.
    #[error(
        "{node} ({addr}): HOST KEY CHANGED: the server offers {offered} but {recorded} is recorded at {location}; if the node was reimaged outside kiln, remove that line and trust the new key"
    )]
    Changed {
        /// Node name.
        node: String,
        /// `host:port`.
        addr: String,
        /// Fingerprint of the key the server offered.
        offered: String,
        /// Fingerprint(s) of the recorded key(s).
        recorded: String,
        /// `file:line` of the first recorded key.
        location: String,
    },
    /// The key is marked `@revoked`.
    #[error("{node} ({addr}): host key {offered} is revoked at {location}")]
    Revoked {
        /// Node name.
        node: String,
        /// `host:port`.
        addr: String,
        /// Fingerprint of the key the server offered.
        offered: String,
        /// `file:line` of the `@revoked` line.
        location: String,
    },
    /// The server offered a certificate (not supported yet).
    #[error(
        "{node} ({addr}): the server offers a host certificate; kiln verifies plain host keys only"
    )]
    Certificate {
        /// Node name.
        node: String,
        /// `host:port`.
        addr: String,
    },
    /// A known_hosts file could not be read or the store written.
    #[error("host key file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Which host to check: node name (for messages), address, and its own
/// known_hosts file if the inventory names one.
#[derive(Clone, Debug)]
pub struct HostId {
    /// Node name (or `jump host …`).
    pub node: String,
    /// Host (IP or name, no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The node's own known_hosts file.
    pub known_hosts: Option<PathBuf>,
}

impl HostId {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How a key came to be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Found in a file (`file:line`).
    Known(String),
    /// Unknown, and recorded now because trust-on-first-use was asked for.
    FirstUse,
}

/// A file's size and modification time (`None` when it does not exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(Option<(u64, std::time::SystemTime)>);

impl Stamp {
    fn of(path: &Path) -> Stamp {
        Stamp(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?))),
        )
    }
}

/// Decides whether host keys are trusted. Files are read once and shared
/// by every connection.
pub struct Verifier {
    files: Vec<PathBuf>,
    store: Option<PathBuf>,
    accept_new: bool,
    /// Parsed files with the size and modification time they had, so a
    /// file changed during a run (imaging records a node's new key) is
    /// read again.
    cache: RwLock<HashMap<PathBuf, (Stamp, Arc<KnownHosts>)>>,
    /// Keys recorded in this run (trust on first use), by host name.
    recorded: Mutex<HashMap<String, PublicKey>>,
}

impl Verifier {
    /// A verifier reading `files` (every node) and kiln's `store`; with
    /// `accept_new`, an unknown key is recorded in the store and trusted
    /// (a changed key never is).
    pub fn new(files: Vec<PathBuf>, store: Option<PathBuf>, accept_new: bool) -> Verifier {
        Verifier {
            files,
            store,
            accept_new,
            cache: RwLock::new(HashMap::new()),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    /// The default files: `~/.ssh/known_hosts` when there is a home.
    pub fn default_files() -> Vec<PathBuf> {
        std::env::var_os("HOME")
            .map(|h| vec![PathBuf::from(h).join(".ssh").join("known_hosts")])
            .unwrap_or_default()
    }

    fn file(&self, path: &Path) -> Result<Arc<KnownHosts>, HostKeyError> {
        let stamp = Stamp::of(path);
        if let Some((_, kh)) = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(path).cloned())
            .filter(|(s, _)| *s == stamp)
        {
            return Ok(kh);
        }
        let kh = Arc::new(KnownHosts::load(path).map_err(|source| HostKeyError::Io {
            path: path.to_owned(),
            source,
        })?);
        for (line, why) in &kh.skipped {
            tracing::debug!("{}:{line}: skipped: {why}", path.display());
        }
        if let Ok(mut c) = self.cache.write() {
            c.insert(path.to_owned(), (stamp, Arc::clone(&kh)));
        }
        Ok(kh)
    }

    fn files_for(&self, id: &HostId) -> Result<Vec<Arc<KnownHosts>>, HostKeyError> {
        let mut paths: Vec<&Path> = Vec::new();
        if let Some(p) = &id.known_hosts {
            paths.push(p);
        }
        if let Some(p) = &self.store {
            paths.push(p);
        }
        paths.extend(self.files.iter().map(PathBuf::as_path));
        paths.into_iter().map(|p| self.file(p)).collect()
    }

    /// Key algorithms recorded for the host, best first (empty: unknown).
    pub fn algorithms(&self, id: &HostId) -> Vec<russh::keys::Algorithm> {
        let name = host_name(&id.host, id.port);
        let mut out = Vec::new();
        for kh in self.files_for(id).unwrap_or_default() {
            for a in kh.algorithms(&name) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// Checks the key `id` offered.
    pub fn check(&self, id: &HostId, key: &PublicKey) -> Result<Trust, HostKeyError> {
        let name = host_name(&id.host, id.port);
        let offered = fingerprint(key);
        let mut others = Vec::new();
        let mut trusted = None;
        for kh in self.files_for(id)? {
            let found = kh.lookup(&name, key);
            if let Some(location) = found.revoked {
                return Err(HostKeyError::Revoked {
                    node: id.node.clone(),
                    addr: id.addr(),
                    offered,
                    location,
                });
            }
            if trusted.is_none() {
                trusted = found.trusted;
            }
            others.extend(found.others);
        }
        if let Some(location) = trusted {
            return Ok(Trust::Known(location));
        }
        if let Ok(recorded) = self.recorded.lock()
            && let Some(k) = recorded.get(&name)
        {
            if k.key_data() == key.key_data() {
                return Ok(Trust::FirstUse);
            }
            others.push(super::known_hosts::Recorded {
                key: k.clone(),
                location: "recorded earlier in this run".into(),
            });
        }
        if let Some(first) = others.first() {
            let recorded: Vec<String> = others.iter().map(|r| fingerprint(&r.key)).collect();
            return Err(HostKeyError::Changed {
                node: id.node.clone(),
                addr: id.addr(),
                offered,
                recorded: recorded.join(", "),
                location: first.location.clone(),
            });
        }
        match (&self.store, self.accept_new) {
            (Some(store), true) => {
                self.record(store, &name, &id.node, key)?;
                tracing::warn!(node = %id.node, addr = %id.addr(), "trusting unknown host key {offered} on first use (recorded in {})", store.display());
                Ok(Trust::FirstUse)
            }
            _ => Err(HostKeyError::Unknown {
                node: id.node.clone(),
                addr: id.addr(),
                offered,
            }),
        }
    }

    fn record(
        &self,
        store: &Path,
        name: &str,
        node: &str,
        key: &PublicKey,
    ) -> Result<(), HostKeyError> {
        let mut recorded = match self.recorded.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        append(store, name, node, key)?;
        recorded.insert(name.to_owned(), key.clone());
        Ok(())
    }
}

/// Appends one `name key node` line to an OpenSSH-format file, creating it
/// (and its folder) if needed. Under the store's lock, so a [`replace`] in
/// another process cannot rename an older copy over the new line.
pub fn append(path: &Path, name: &str, node: &str, key: &PublicKey) -> Result<(), HostKeyError> {
    let io = |source| HostKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let _lock = crate::state::lock_beside(path).map_err(io)?;
    let mut key = key.clone();
    key.set_comment(node);
    let line = key.to_openssh().map_err(|e| io(std::io::Error::other(e)))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("{name} {line}\n").as_bytes())
        .map_err(io)
}

/// Records `keys` as the only keys of host `name` in kiln's store: the
/// imaging stage calls this with the host keys it injects, so the first
/// login after a reimage is verified and the old keys stop being trusted.
/// The file is rewritten atomically under the store's lock, so writers in
/// other processes (a `kiln ssh` trusting on first use) keep their lines.
pub fn replace(
    path: &Path,
    name: &str,
    node: &str,
    keys: &[PublicKey],
) -> Result<(), HostKeyError> {
    let io = |source| HostKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let _lock = crate::state::lock_beside(path).map_err(io)?;
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let mut text: String = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(name))
        .map(|l| format!("{l}\n"))
        .collect();
    for key in keys {
        let mut key = key.clone();
        key.set_comment(node);
        let line = key.to_openssh().map_err(|e| io(std::io::Error::other(e)))?;
        text.push_str(&format!("{name} {line}\n"));
    }
    crate::state::write_atomic(path, text.as_bytes(), false).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        russh::keys::PrivateKey::from(pair).public_key().clone()
    }

    fn id() -> HostId {
        HostId {
            node: "r01-n01".into(),
            host: "127.60.0.1".into(),
            port: 2222,
            known_hosts: None,
        }
    }

    #[test]
    fn unknown_changed_and_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_path(dir.path());
        let strict = Verifier::new(vec![], Some(store.clone()), false);
        let err = strict.check(&id(), &key(1)).unwrap_err().to_string();
        assert!(
            err.contains("r01-n01 (127.60.0.1:2222): unknown host key SHA256:"),
            "{err}"
        );

        let tofu = Verifier::new(vec![], Some(store.clone()), true);
        assert_eq!(tofu.check(&id(), &key(1)).unwrap(), Trust::FirstUse);
        // Same run, another key: refused even with TOFU.
        assert!(matches!(
            tofu.check(&id(), &key(2)),
            Err(HostKeyError::Changed { .. })
        ));

        // A new run reads the store.
        let strict = Verifier::new(vec![], Some(store.clone()), true);
        assert!(matches!(strict.check(&id(), &key(1)), Ok(Trust::Known(_))));
        let err = strict.check(&id(), &key(2)).unwrap_err().to_string();
        assert!(err.contains("HOST KEY CHANGED"), "{err}");
        assert!(
            err.contains(&fingerprint(&key(1))) && err.contains(&fingerprint(&key(2))),
            "{err}"
        );
        let text = std::fs::read_to_string(&store).unwrap();
        assert!(
            text.starts_with("[127.60.0.1]:2222 ssh-ed25519 ")
                && text.trim_end().ends_with(" r01-n01"),
            "{text}"
        );
    }

    #[test]
    fn a_reimage_replaces_the_recorded_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_path(dir.path());
        append(&store, "[127.60.0.9]:22", "other", &key(9)).unwrap();
        append(&store, "[127.60.0.1]:2222", "r01-n01", &key(1)).unwrap();
        replace(&store, "[127.60.0.1]:2222", "r01-n01", &[key(2)]).unwrap();
        let v = Verifier::new(vec![], Some(store.clone()), false);
        assert!(matches!(v.check(&id(), &key(2)), Ok(Trust::Known(_))));
        assert!(matches!(
            v.check(&id(), &key(1)),
            Err(HostKeyError::Changed { .. })
        ));
        assert!(std::fs::read_to_string(&store).unwrap().contains("other"));
    }
}
