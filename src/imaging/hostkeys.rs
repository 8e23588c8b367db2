//! The SSH host keys kiln gives a node. They are generated once per node
//! and kept in the state folder (`host-keys/NODE`, mode 0600), so a run
//! that is resumed after a crash serves the same keys the node may already
//! have installed; delete the file to rotate them on the next reimage.
//! The public half is recorded in kiln's known-hosts store before the node
//! boots its installer, so the first login afterwards is verified.

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};

use crate::secret::Secret;

/// One node's host key pair.
#[derive(Clone, Debug)]
pub struct HostKey {
    /// The private key, OpenSSH PEM (redacted in `Debug`).
    pub private_pem: Secret,
    /// The public key, one OpenSSH line (`ssh-ed25519 AAAA… NODE`).
    pub public_line: String,
    /// The public key.
    pub public: PublicKey,
}

/// Why a host key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The system random generator failed.
    #[error("no randomness for a host key")]
    Random,
    /// The boot-server secret is too short to keep tokens unguessable.
    #[error(
        "{path}: the boot-server secret is empty or too short ({len} characters, at least \
         {MIN_SECRET} needed); remove the file to have kiln make a new one (nodes being \
         installed then get new URLs)"
    )]
    WeakSecret {
        /// The file.
        path: PathBuf,
        /// Its length, trimmed.
        len: usize,
    },
    /// The stored file is not an OpenSSH private key.
    #[error("{path}: not an OpenSSH private key ({why})")]
    Bad {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },
}

/// A fresh Ed25519 key pair with `comment` (the node name).
pub fn generate(comment: &str) -> Result<HostKey, HostKeyError> {
    use ring::rand::SecureRandom as _;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| HostKeyError::Random)?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    of(key, Path::new("(new key)"))
}

fn of(key: PrivateKey, path: &Path) -> Result<HostKey, HostKeyError> {
    let bad = |why: String| HostKeyError::Bad {
        path: path.to_owned(),
        why,
    };
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| bad(e.to_string()))?;
    let public = key.public_key().clone();
    let public_line = public.to_openssh().map_err(|e| bad(e.to_string()))?;
    Ok(HostKey {
        private_pem: Secret::new(pem.as_str()),
        public_line,
        public,
    })
}

/// Records `keys` as host `name`'s only keys in kiln's store
/// ([`crate::ssh::hostkeys::replace`], which takes the store's lock, so
/// nodes recorded at once, in this process or another, keep every update).
pub fn record(
    store: &Path,
    name: &str,
    node: &str,
    keys: &[PublicKey],
) -> Result<(), crate::ssh::hostkeys::HostKeyError> {
    crate::ssh::hostkeys::replace(store, name, node, keys)
}

/// The shortest boot-server secret accepted, in characters: 128 bits as
/// hex (kiln makes 64).
pub const MIN_SECRET: usize = 32;

/// The node's boot-server token: an HMAC of its name and host key under a
/// secret kept in the state folder (`bootserver.secret`, 0600). Stable, so
/// a kiln restarted mid-install serves the same URLs the node's installer
/// is already using (its seed, its call-back); a new host key (rotation)
/// gives a new token, and nobody without the secret can derive one. A
/// secret shorter than [`MIN_SECRET`] is refused.
pub fn node_token(state_dir: &Path, node: &str, key: &HostKey) -> Result<String, HostKeyError> {
    use ring::rand::SecureRandom as _;
    let file = state_dir.join("bootserver.secret");
    let io = |source| HostKeyError::Io {
        path: file.clone(),
        source,
    };
    // One creator at a time, in this process or another (`kiln serve`
    // beside a run), so every node uses the same secret.
    let _one = crate::state::lock_beside(&file).map_err(io)?;
    let secret = match std::fs::read_to_string(&file) {
        Ok(t) => t.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| HostKeyError::Random)?;
            let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            crate::state::write_atomic(&file, text.as_bytes(), true).map_err(io)?;
            text
        }
        Err(e) => return Err(io(e)),
    };
    // Tokens are only as strong as the secret: one a person shortened or
    // emptied would let anyone derive every node's URLs.
    if secret.len() < MIN_SECRET {
        return Err(HostKeyError::WeakSecret {
            path: file,
            len: secret.len(),
        });
    }
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&mac, format!("{node}\n{}", key.public_line).as_bytes());
    Ok(tag.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Where node `node`'s key is kept under the state folder.
pub fn path(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join("host-keys").join(format!("{node}.ed25519"))
}

/// The node's kept key, if kiln made one.
pub fn load(state_dir: &Path, node: &str) -> Result<Option<HostKey>, HostKeyError> {
    let file = path(state_dir, node);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let key = PrivateKey::from_openssh(text.trim()).map_err(|e| HostKeyError::Bad {
                path: file.clone(),
                why: e.to_string(),
            })?;
            of(key, &file).map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostKeyError::Io { path: file, source }),
    }
}

/// The node's kept key, or a new one written there (0600).
pub fn load_or_create(state_dir: &Path, node: &str) -> Result<HostKey, HostKeyError> {
    let file = path(state_dir, node);
    let io = |source| HostKeyError::Io {
        path: file.clone(),
        source,
    };
    if let Some(key) = load(state_dir, node)? {
        return Ok(key);
    }
    // Made once even if two processes get here: the second finds the
    // first's key once it holds the lock.
    let _one = crate::state::lock_beside(&file).map_err(io)?;
    if let Some(key) = load(state_dir, node)? {
        return Ok(key);
    }
    let key = generate(node)?;
    crate::state::write_atomic(&file, key.private_pem.expose().as_bytes(), true).map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_and_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), "n1").unwrap();
        let b = load_or_create(dir.path(), "n1").unwrap();
        assert_eq!(a.public_line, b.public_line);
        assert!(a.public_line.starts_with("ssh-ed25519 "));
        assert!(format!("{a:?}").contains("redacted"));
        let c = load_or_create(dir.path(), "n2").unwrap();
        assert_ne!(a.public_line, c.public_line);
        PrivateKey::from_openssh(a.private_pem.expose()).unwrap();
        let t1 = node_token(dir.path(), "n1", &a).unwrap();
        assert_eq!(t1, node_token(dir.path(), "n1", &b).unwrap());
        assert_ne!(t1, node_token(dir.path(), "n2", &c).unwrap());
        assert_eq!(t1.len(), 32);
    }
}
