//! Deciding how to trust each BMC, and the store of fingerprints recorded
//! by `kiln bmc trust`.
//!
//! The store is a JSON file in kiln's state folder (`.kiln/` beside the
//! inventory, or `KILN_STATE_DIR`), keyed by node and tied to the BMC
//! address it was recorded for: moving a node's BMC to a new address
//! forgets its pin rather than trusting a stranger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::bmc::transport::{Transport, TransportError, TransportOptions};
use crate::inventory::{Fingerprint, Node, TlsPolicy};

pub use crate::state::state_dir;

/// One recorded pin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The BMC address (`host:port`) it was recorded from.
    pub address: String,
    /// SHA-256 of the certificate, `AA:BB:…`.
    pub fingerprint: String,
    /// When, in seconds since the Unix epoch.
    pub recorded_at: u64,
}

/// What `kiln bmc trust` (and the demo, which trusts on first contact)
/// needs to know of a node to fetch and record its BMC's certificate.
#[derive(Clone, Debug)]
pub struct TrustTarget {
    /// The node's name (the store's key).
    pub node: String,
    /// The BMC address (`host:port`) the pin is tied to.
    pub address: String,
    /// The host to connect to.
    pub host: String,
    /// The port to connect to.
    pub port: u16,
    /// The inventory's trust policy for this BMC.
    pub tls: TlsPolicy,
}

impl TrustTarget {
    /// The target for one inventory node.
    pub fn of(node: &Node) -> TrustTarget {
        TrustTarget {
            node: node.name.clone(),
            address: node.bmc.endpoint.to_string(),
            host: node.bmc.endpoint.host.to_string(),
            port: node.bmc.endpoint.port,
            tls: node.bmc.tls.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    bmcs: BTreeMap<String, Recorded>,
}

/// The recorded BMC fingerprints.
#[derive(Debug)]
pub struct TrustStore {
    path: PathBuf,
    file: StoreFile,
    /// Nodes set since loading: only these are written over what another
    /// process may have saved meanwhile.
    changed: std::collections::BTreeSet<String>,
}

impl TrustStore {
    /// The store's file in a state folder.
    pub fn path_in(state: &Path) -> PathBuf {
        state.join("bmc-trust.json")
    }

    /// Loads the store (empty when the file does not exist yet).
    pub fn load(path: &Path) -> anyhow::Result<TrustStore> {
        Ok(TrustStore {
            path: path.to_owned(),
            file: read_file(path)?,
            changed: Default::default(),
        })
    }

    /// The pin recorded for `node` at `address`, if any.
    pub fn get(&self, node: &str, address: &str) -> Option<Fingerprint> {
        self.file
            .bmcs
            .get(node)
            .filter(|r| r.address == address)
            .and_then(|r| r.fingerprint.parse().ok())
    }

    /// The record for `node`, whatever its address.
    pub fn record(&self, node: &str) -> Option<&Recorded> {
        self.file.bmcs.get(node)
    }

    /// Records a pin (kept in memory until [`TrustStore::save`]).
    pub fn set(&mut self, node: &str, address: &str, fingerprint: &Fingerprint) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.changed.insert(node.to_owned());
        self.file.bmcs.insert(
            node.to_owned(),
            Recorded {
                address: address.to_owned(),
                fingerprint: fingerprint.to_string(),
                recorded_at: now,
            },
        );
    }

    /// Writes the pins set since loading into the file as it is now
    /// (another process, say `kiln bmc trust` beside a run, may have saved
    /// others meanwhile), under the store's lock, atomically.
    pub fn save(&self) -> anyhow::Result<()> {
        let _lock = crate::state::lock_beside(&self.path)
            .with_context(|| format!("cannot lock {}", self.path.display()))?;
        let mut file = read_file(&self.path)?;
        for node in &self.changed {
            if let Some(r) = self.file.bmcs.get(node) {
                file.bmcs.insert(node.clone(), r.clone());
            }
        }
        let text = serde_json::to_string_pretty(&file)? + "\n";
        crate::state::write_atomic(&self.path, text.as_bytes(), false)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// The store's file as it is on disk (empty when it does not exist yet). A
/// damaged file is the user's to fix (exit 2), named with where it broke.
fn read_file(path: &Path) -> anyhow::Result<StoreFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            crate::exit::BadInput(format!("{}: not a kiln trust store: {e}", path.display())).into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoreFile {
            version: 1,
            ..StoreFile::default()
        }),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Why kiln cannot decide how to trust a node's BMC.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// `tls: recorded` (the default) and nothing recorded.
    #[error(
        "{node}: no certificate fingerprint recorded for its BMC at {address}; run `kiln bmc trust --select {node}` (or set bmc.tls.pin)"
    )]
    NotRecorded {
        /// Node.
        node: String,
        /// BMC address.
        address: String,
    },
    /// The CA bundle could not be used.
    #[error("{node}: {reason}")]
    Bundle {
        /// Node.
        node: String,
        /// What was wrong.
        reason: String,
    },
}

/// The TLS client config for a node's BMC under its policy.
pub fn client_config(
    node: &Node,
    store: &TrustStore,
) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let address = node.bmc.endpoint.to_string();
    let bundle_err = |e: anyhow::Error| TrustError::Bundle {
        node: node.name.clone(),
        reason: format!("{e:#}"),
    };
    match &node.bmc.tls {
        TlsPolicy::Pin(fp) => crate::bmc::tls::pinned(*fp).map_err(bundle_err),
        TlsPolicy::Recorded => match store.get(&node.name, &address) {
            Some(fp) => crate::bmc::tls::pinned(fp).map_err(bundle_err),
            None => Err(TrustError::NotRecorded {
                node: node.name.clone(),
                address,
            }),
        },
        TlsPolicy::Ca(bundle) => crate::bmc::tls::ca_bundle(bundle).map_err(bundle_err),
        TlsPolicy::Insecure => crate::bmc::tls::insecure(&node.name).map_err(bundle_err),
    }
}

/// Connects to a BMC, accepting whatever certificate it shows, and returns
/// that certificate's fingerprint. Only the handshake is needed; the
/// service root is fetched because it needs no credentials.
pub async fn fetch_fingerprint(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Fingerprint, TransportError> {
    let seen = Arc::new(Mutex::new(None));
    let tls =
        crate::bmc::tls::recording(Arc::clone(&seen)).map_err(|e| TransportError::Connect {
            bmc: format!("{host}:{port}"),
            reason: format!("{e:#}"),
        })?;
    let options = TransportOptions {
        connect_timeout: timeout,
        request_timeout: timeout,
        attempts: 2,
        ..TransportOptions::default()
    };
    let transport = Transport::new(host, port, tls, options);
    let result = transport
        .request(hyper::Method::GET, "/redfish/v1", &[], None)
        .await;
    let fingerprint = *seen.lock().unwrap_or_else(|e| e.into_inner());
    match (fingerprint, result) {
        (Some(fp), _) => Ok(fp),
        (None, Err(e)) => Err(e),
        (None, Ok(_)) => Err(TransportError::Connect {
            bmc: format!("{host}:{port}"),
            reason: "the BMC showed no certificate".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_pin_is_tied_to_its_address_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = TrustStore::path_in(dir.path());
        let mut store = TrustStore::load(&path).unwrap();
        let fp: Fingerprint = "ab".repeat(32).parse().unwrap();
        store.set("n1", "10.0.0.1:443", &fp);
        store.save().unwrap();
        let store = TrustStore::load(&path).unwrap();
        assert_eq!(store.get("n1", "10.0.0.1:443"), Some(fp));
        assert_eq!(store.get("n1", "10.0.0.2:443"), None);
        assert_eq!(store.get("n2", "10.0.0.1:443"), None);
    }

    #[test]
    fn a_damaged_store_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = TrustStore::path_in(dir.path());
        std::fs::write(&path, "{not json").unwrap();
        let err = TrustStore::load(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert_eq!(
            crate::exit::status_for(&err),
            crate::exit::ExitStatus::BadInput
        );
    }

    #[test]
    fn two_writers_keep_each_others_pins() {
        // Two processes load the store, record different BMCs, and save.
        let dir = tempfile::tempdir().unwrap();
        let path = TrustStore::path_in(dir.path());
        let fp: Fingerprint = "ab".repeat(32).parse().unwrap();
        let mut a = TrustStore::load(&path).unwrap();
        let mut b = TrustStore::load(&path).unwrap();
        a.set("n1", "10.0.0.1:443", &fp);
        b.set("n2", "10.0.0.2:443", &fp);
        a.save().unwrap();
        b.save().unwrap();
        let store = TrustStore::load(&path).unwrap();
        assert_eq!(store.get("n1", "10.0.0.1:443"), Some(fp));
        assert_eq!(store.get("n2", "10.0.0.2:443"), Some(fp));
    }
}
