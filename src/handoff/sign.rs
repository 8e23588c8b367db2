//! Signed acceptance records: canonical JSON (object keys sorted, no
//! insignificant whitespace) signed with the site's Ed25519 key (ring).
//!
//! A signed record is `{"record": {…}, "signature": {"algorithm":
//! "ed25519", "key_id": "kiln-site:…", "public_key": "…", "value": "…"}}`;
//! the signature covers the canonical form of `record`, so the file may be
//! re-indented without breaking it. A receiver checks it against the
//! site's public key it was given out of band (`kiln verify --key`), not
//! against the key inside the record, which only says which key signed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

/// The file of the site's private key in the state folder (PKCS#8, 0600).
pub const KEY_FILE: &str = "site-key.ed25519";
/// The file of its public half (`ed25519 BASE64 KEY_ID`).
pub const PUB_FILE: &str = "site-key.pub";

/// Something wrong with keys or signatures.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file is missing.
    #[error("no site key at {0}; create one with `kiln keys init`")]
    NoKey(PathBuf),
    /// A key file could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold an Ed25519 key.
    #[error("{0} is not an Ed25519 PKCS#8 key")]
    BadKey(PathBuf),
    /// A public key is not 32 bytes of base64.
    #[error("public key `{0}` is not an Ed25519 key (32 bytes, base64)")]
    BadPublic(String),
    /// A key already exists.
    #[error(
        "a site key already exists at {0}; records signed with it would no longer verify against a new one (pass --force to replace it)"
    )]
    Exists(PathBuf),
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no spaces,
/// numbers and strings as serde_json writes them.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// The signature block of a signed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// `kiln-site:` and the first 16 hex digits of the public key's SHA-256.
    pub key_id: String,
    /// The signing key's public half, base64.
    pub public_key: String,
    /// The signature over the canonical record, base64.
    pub value: String,
}

/// A record with its signature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// The acceptance record.
    pub record: Value,
    /// Who signed it, and the signature.
    pub signature: Signature,
}

/// The key id of a public key.
pub fn key_id(public: &[u8]) -> String {
    let digest = sha2::Sha256::digest(public);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("kiln-site:{hex}")
}

/// The site's signing key.
pub struct SiteKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteKey({})", self.key_id())
    }
}

impl SiteKey {
    /// A new random key, as PKCS#8 bytes and the key.
    pub fn generate() -> Result<(Vec<u8>, SiteKey), SignError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| SignError::BadKey(PathBuf::from("(generated)")))?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
            .map_err(|_| SignError::BadKey(PathBuf::from("(generated)")))?;
        Ok((doc.as_ref().to_vec(), SiteKey { pair }))
    }

    /// Loads the key in `state`.
    pub fn load(state: &Path) -> Result<SiteKey, SignError> {
        let path = state.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SignError::NoKey(path));
            }
            Err(source) => {
                return Err(SignError::Io {
                    what: "cannot read",
                    path,
                    source,
                });
            }
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| SignError::BadKey(path))?;
        Ok(SiteKey { pair })
    }

    /// Creates the key in `state` (0600) and its `.pub` beside it; refuses
    /// to replace one unless `force`.
    pub fn init(state: &Path, force: bool) -> Result<SiteKey, SignError> {
        let path = state.join(KEY_FILE);
        if path.exists() && !force {
            return Err(SignError::Exists(path));
        }
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| SignError::Io { what, path, source }
        };
        std::fs::create_dir_all(state).map_err(io("cannot create", state))?;
        let (pkcs8, key) = SiteKey::generate()?;
        let tmp = state.join(format!("{KEY_FILE}.tmp"));
        write_private(&tmp, &pkcs8).map_err(io("cannot write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("cannot write", &path))?;
        let public = state.join(PUB_FILE);
        std::fs::write(&public, format!("{}\n", key.public_line()))
            .map_err(io("cannot write", &public))?;
        Ok(key)
    }

    /// The public key, base64.
    pub fn public_b64(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// The key's id.
    pub fn key_id(&self) -> String {
        key_id(self.pair.public_key().as_ref())
    }

    /// `ed25519 BASE64 KEY_ID`, the `.pub` file's line.
    pub fn public_line(&self) -> String {
        format!("ed25519 {} {}", self.public_b64(), self.key_id())
    }

    /// Signs `record`.
    pub fn sign(&self, record: Value) -> SignedRecord {
        let sig = self.pair.sign(canonical(&record).as_bytes());
        SignedRecord {
            record,
            signature: Signature {
                algorithm: "ed25519".into(),
                key_id: self.key_id(),
                public_key: self.public_b64(),
                value: B64.encode(sig.as_ref()),
            },
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Reads a public key: a `.pub` line (`ed25519 BASE64 [ID]`) or bare base64.
pub fn parse_public(text: &str) -> Result<Vec<u8>, SignError> {
    let word = text
        .split_whitespace()
        .find(|w| *w != "ed25519")
        .unwrap_or_default();
    match B64.decode(word) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err(SignError::BadPublic(crate::diag::clip(text.trim(), 80))),
    }
}

/// The key id of a public key given as text, or `?` if it is not one.
pub fn key_id_of(text: &str) -> String {
    parse_public(text).map_or_else(|_| "?".into(), |k| key_id(&k))
}

/// What checking a signed record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// The signature is good for this key.
    Valid {
        /// The key's id.
        key_id: String,
    },
    /// The signature does not match the record and key.
    Invalid(String),
}

/// Checks `signed` against `trusted` (public key bytes), or, without one,
/// against the key the record names.
pub fn verify(signed: &SignedRecord, trusted: Option<&[u8]>) -> Verified {
    let sig = &signed.signature;
    if sig.algorithm != "ed25519" {
        return Verified::Invalid(format!("unknown algorithm `{}`", sig.algorithm));
    }
    let embedded = match B64.decode(&sig.public_key) {
        Ok(k) if k.len() == 32 => k,
        _ => return Verified::Invalid("the record's public key is not an Ed25519 key".into()),
    };
    if key_id(&embedded) != sig.key_id {
        return Verified::Invalid(format!(
            "key id {} does not belong to the record's public key",
            sig.key_id
        ));
    }
    let key = match trusted {
        Some(t) if t != embedded.as_slice() => {
            return Verified::Invalid(format!(
                "signed by {}, not by the trusted key {}",
                sig.key_id,
                key_id(t)
            ));
        }
        Some(t) => t.to_vec(),
        None => embedded,
    };
    let Ok(value) = B64.decode(&sig.value) else {
        return Verified::Invalid("the signature is not base64".into());
    };
    let message = canonical(&signed.record);
    match UnparsedPublicKey::new(&ED25519, &key).verify(message.as_bytes(), &value) {
        Ok(()) => Verified::Valid {
            key_id: key_id(&key),
        },
        Err(_) => Verified::Invalid(
            "the signature does not match the record (changed after signing?)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"z": [3, {"y": 1.5, "x": "é\n"}], "c": null}});
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":null,"z":[3,{"x":"é\n","y":1.5}]},"b":1}"#
        );
        // Re-indented and re-ordered text canonicalises the same.
        let text =
            "{ \"b\" : 1,\n \"a\": {\"c\": null, \"z\": [3, {\"x\": \"é\\n\", \"y\": 1.5}]}}";
        let b: Value = serde_json::from_str(text).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
    }

    #[test]
    fn signed_records_verify_and_tampering_is_caught() {
        let (_, key) = SiteKey::generate().unwrap();
        let signed = key.sign(json!({"node": "r01-n01", "verdict": "accepted", "busbw": 452.5}));
        let public = parse_public(&key.public_line()).unwrap();
        assert!(matches!(
            verify(&signed, Some(&public)),
            Verified::Valid { .. }
        ));
        assert!(matches!(verify(&signed, None), Verified::Valid { .. }));
        // Survives a round trip through pretty-printed text.
        let text = serde_json::to_string_pretty(&signed).unwrap();
        let back: SignedRecord = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            verify(&back, Some(&public)),
            Verified::Valid { .. }
        ));

        let mut tampered = signed.clone();
        tampered.record["verdict"] = json!("failed");
        assert!(matches!(
            verify(&tampered, Some(&public)),
            Verified::Invalid(_)
        ));
        let mut tampered = signed.clone();
        tampered.record["busbw"] = json!(452.6);
        assert!(matches!(verify(&tampered, None), Verified::Invalid(_)));

        // A record re-signed by another key fails against the site's key,
        // even though it is self-consistent.
        let (_, other) = SiteKey::generate().unwrap();
        let forged = other.sign(signed.record.clone());
        assert!(matches!(verify(&forged, None), Verified::Valid { .. }));
        match verify(&forged, Some(&public)) {
            Verified::Invalid(why) => assert!(why.contains("not by the trusted key"), "{why}"),
            v => panic!("{v:?}"),
        }
        // A swapped public key with the old key id is caught.
        let mut swapped = forged.clone();
        swapped.signature.key_id = signed.signature.key_id.clone();
        assert!(matches!(verify(&swapped, None), Verified::Invalid(_)));
    }

    #[test]
    fn records_with_any_float_verify_after_a_round_trip_through_text() {
        // Without exact float parsing some 17-digit values come back one
        // ULP off, and a genuine record fails its signature.
        let (_, key) = SiteKey::generate().unwrap();
        let public = parse_public(&key.public_line()).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut floats = Vec::new();
        while floats.len() < 20_000 {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let f = f64::from_bits(z);
            if f.is_finite() {
                floats.push(json!(f));
            }
            // Measurements as kiln records them, too.
            floats.push(json!((z % 1_000_000_000) as f64 / 997.0));
        }
        let signed = key.sign(json!({"node": "r01-n01", "metrics": floats}));
        let text = serde_json::to_string_pretty(&signed).unwrap();
        let back: SignedRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.record, signed.record, "floats changed on the way");
        assert!(matches!(
            verify(&back, Some(&public)),
            Verified::Valid { .. }
        ));
    }

    #[test]
    fn keys_are_written_private_and_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let key = SiteKey::init(dir.path(), false).unwrap();
        let again = SiteKey::load(dir.path()).unwrap();
        assert_eq!(key.key_id(), again.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            SiteKey::init(dir.path(), false),
            Err(SignError::Exists(_))
        ));
        let public = std::fs::read_to_string(dir.path().join(PUB_FILE)).unwrap();
        assert_eq!(parse_public(&public).unwrap().len(), 32);
    }
}
