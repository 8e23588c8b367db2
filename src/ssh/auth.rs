//! Client authentication: key files (Ed25519, ECDSA, RSA; encrypted ones
//! with a passphrase from `KILN_SSH_PASSPHRASE` or a prompt on the
//! terminal) and the SSH agent (`SSH_AUTH_SOCK`). Keys are read and
//! decrypted once per run, not once per node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client::{AuthResult, Handle};
use russh::keys::PrivateKey;
use russh::keys::agent::client::AgentClient;
use russh::keys::key::PrivateKeyWithHashAlg;

use crate::secret::Secret;

/// The environment variable an encrypted key's passphrase is read from.
pub const PASSPHRASE_ENV: &str = "KILN_SSH_PASSPHRASE";

/// A key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or parsed.
    #[error("cannot read SSH key {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: russh::keys::Error,
    },
    /// Encrypted, and no passphrase in the environment or from a terminal.
    #[error(
        "SSH key {path} is encrypted: set {PASSPHRASE_ENV} or run kiln on a terminal to be asked"
    )]
    NeedsPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// The passphrase does not decrypt it.
    #[error("wrong passphrase for SSH key {path}")]
    WrongPassphrase {
        /// The file.
        path: PathBuf,
    },
}

/// Keys and the agent, shared by every connection of a run.
pub struct Credentials {
    keys: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
    passphrase: Mutex<Option<Secret>>,
    /// Whether kiln may ask on the terminal.
    pub prompt: bool,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials::new()
    }
}

impl Credentials {
    /// Reads the passphrase from the environment, if set; prompts only
    /// when stdin is a terminal.
    pub fn new() -> Credentials {
        let passphrase = std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty());
        Credentials {
            keys: Mutex::new(HashMap::new()),
            passphrase: Mutex::new(passphrase.map(Secret::new)),
            prompt: std::io::IsTerminal::is_terminal(&std::io::stdin()),
        }
    }

    /// Loads (once) and returns the private key at `path`.
    pub fn key(&self, path: &Path) -> Result<Arc<PrivateKey>, KeyError> {
        // Held while decrypting, so concurrent connections wait for one
        // decryption (and one prompt) instead of each doing their own.
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = keys.get(path) {
            return Ok(Arc::clone(k));
        }
        let read = |pass: Option<&str>| russh::keys::load_secret_key(path, pass);
        let key = match read(None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                let mut pass = self.passphrase.lock().unwrap_or_else(|p| p.into_inner());
                if pass.is_none() && self.prompt {
                    *pass = ask(&format!("passphrase for {}: ", path.display()));
                }
                let Some(p) = pass.as_ref() else {
                    return Err(KeyError::NeedsPassphrase {
                        path: path.to_owned(),
                    });
                };
                read(Some(p.expose())).map_err(|e| match e {
                    // A wrong passphrase decrypts to garbage that fails
                    // the key's own check.
                    russh::keys::Error::KeyIsEncrypted
                    | russh::keys::Error::CouldNotReadKey
                    | russh::keys::Error::SshKey(russh::keys::ssh_key::Error::Crypto) => {
                        KeyError::WrongPassphrase {
                            path: path.to_owned(),
                        }
                    }
                    source => KeyError::Read {
                        path: path.to_owned(),
                        source,
                    },
                })?
            }
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let key = Arc::new(key);
        keys.insert(path.to_owned(), Arc::clone(&key));
        Ok(key)
    }
}

/// Asks on the terminal without echo (`stty -echo` on /dev/tty).
fn ask(prompt: &str) -> Option<Secret> {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let stty = |arg: &str| {
        let _ = Command::new("stty")
            .arg(arg)
            .stdin(tty.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
            .status();
    };
    let mut out = tty.try_clone().ok()?;
    let _ = out.write_all(prompt.as_bytes());
    stty("-echo");
    let mut line = String::new();
    let read = std::io::BufReader::new(tty.try_clone().ok()?).read_line(&mut line);
    stty("echo");
    let _ = out.write_all(b"\n");
    read.ok()?;
    let line = line.trim_end_matches(['\r', '\n']);
    (!line.is_empty()).then(|| Secret::new(line))
}

/// Why authentication failed: what was tried.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The server refused every key tried.
    #[error("the server refused {0}")]
    Refused(String),
    /// The connection failed while authenticating.
    #[error("connection failed while authenticating")]
    Protocol(#[source] russh::Error),
}

/// The key files OpenSSH tries by default, that exist.
fn default_keys() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let ssh = PathBuf::from(home).join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| ssh.join(n))
        .filter(|p| p.is_file())
        .collect()
}

/// Authenticates `user` on `handle`: with `key` when given; otherwise with
/// the agent's identities, then the default key files.
pub async fn authenticate<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    key: Option<&Path>,
    creds: &Credentials,
) -> Result<(), AuthError> {
    let mut tried = Vec::new();
    if let Some(path) = key {
        let key = creds.key(path)?;
        if try_key(handle, user, key).await? {
            return Ok(());
        }
        return Err(AuthError::Refused(format!("key {}", path.display())));
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let public = id.public_key().into_owned();
                    let hash = rsa_hash(handle, public.algorithm().is_rsa()).await?;
                    match handle
                        .authenticate_publickey_with(user, public, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(_) => {}
                        Err(e) => tracing::debug!("agent signing failed: {e}"),
                    }
                }
                tried.push("the agent's keys".to_owned());
            }
            Err(e) => tracing::debug!("SSH_AUTH_SOCK is set but the agent is unreachable: {e}"),
        }
    }
    for path in default_keys() {
        let key = match creds.key(&path) {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!("skipping {}: {e}", path.display());
                continue;
            }
        };
        if try_key(handle, user, key).await? {
            return Ok(());
        }
        tried.push(path.display().to_string());
    }
    if tried.is_empty() {
        return Err(AuthError::Refused(
            "nothing: no key in the inventory, no agent (SSH_AUTH_SOCK) and no ~/.ssh/id_* key"
                .into(),
        ));
    }
    Err(AuthError::Refused(tried.join(", ")))
}

/// The signature hash to use with an RSA key (the best the server
/// offers); `None` for other key types.
async fn rsa_hash<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    is_rsa: bool,
) -> Result<Option<russh::keys::HashAlg>, AuthError> {
    if !is_rsa {
        return Ok(None);
    }
    Ok(handle
        .best_supported_rsa_hash()
        .await
        .map_err(AuthError::Protocol)?
        .flatten())
}

async fn try_key<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    key: Arc<PrivateKey>,
) -> Result<bool, AuthError> {
    let hash = rsa_hash(handle, key.algorithm().is_rsa()).await?;
    let result = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await
        .map_err(AuthError::Protocol)?;
    Ok(matches!(result, AuthResult::Success))
}
