//! OpenSSH `known_hosts` files: plain host patterns (with `*`, `?` and
//! `!` negation), hashed entries (`|1|salt|hash`, HMAC-SHA1 of the host
//! name as OpenSSH's `HashKnownHosts` writes them), `[host]:port` names and
//! `@revoked` keys. `@cert-authority` lines are skipped: kiln does not trust
//! host certificates yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use russh::keys::ssh_key::{HashAlg, PublicKey};

/// The name a host is recorded under: `host` on port 22, else `[host]:port`.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// A key's fingerprint as OpenSSH prints it (`SHA256:…`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[derive(Clone, Debug)]
enum Hosts {
    /// Comma-separated patterns; `!` negates.
    Patterns(Vec<String>),
    /// `|1|salt|hash`.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Clone, Debug)]
struct Entry {
    line: usize,
    hosts: Hosts,
    key: PublicKey,
    revoked: bool,
}

/// A key recorded for a host, and where.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The key.
    pub key: PublicKey,
    /// `file:line`.
    pub location: String,
}

/// What a known_hosts file says about a host's key.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    /// The offered key is recorded for this host.
    pub trusted: Option<String>,
    /// The offered key is marked `@revoked` (location).
    pub revoked: Option<String>,
    /// Other keys recorded for this host.
    pub others: Vec<Recorded>,
}

/// One parsed known_hosts file. Exact plain names are indexed, so looking
/// up thousands of nodes in a file of thousands of lines stays cheap;
/// wildcard and hashed entries are checked one by one, as OpenSSH does.
#[derive(Clone, Debug, Default)]
pub struct KnownHosts {
    path: PathBuf,
    exact: HashMap<String, Vec<usize>>,
    scan: Vec<usize>,
    entries: Vec<Entry>,
    /// Lines that were skipped (line number, why).
    pub skipped: Vec<(usize, String)>,
}

impl KnownHosts {
    /// Reads a file; a missing file is an empty one.
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(KnownHosts::parse(path, &text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts {
                path: path.to_owned(),
                ..KnownHosts::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Parses known_hosts text; `path` is only used in locations.
    pub fn parse(path: &Path, text: &str) -> KnownHosts {
        let mut out = KnownHosts {
            path: path.to_owned(),
            ..KnownHosts::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(line, trimmed) {
                Ok(Some(entry)) => out.push(entry),
                Ok(None) => {}
                Err(why) => out.skipped.push((line, why)),
            }
        }
        out
    }

    fn push(&mut self, entry: Entry) {
        let index = self.entries.len();
        match &entry.hosts {
            Hosts::Patterns(p) if p.iter().all(|p| !p.contains(['*', '?', '!'])) => {
                for name in p {
                    self.exact
                        .entry(name.to_lowercase())
                        .or_default()
                        .push(index);
                }
            }
            _ => self.scan.push(index),
        }
        self.entries.push(entry);
    }

    /// Whether the file has no usable entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key recorded for `name` (as [`host_name`] writes it), with
    /// revoked ones flagged.
    fn matching(&self, name: &str) -> impl Iterator<Item = &Entry> {
        let lower = name.to_lowercase();
        let exact = self.exact.get(&lower).map(Vec::as_slice).unwrap_or(&[]);
        exact
            .iter()
            .chain(
                self.scan
                    .iter()
                    .filter(move |i| self.entries[**i].hosts.matches(&lower)),
            )
            .map(|i| &self.entries[*i])
    }

    /// What this file says about `key` offered by `name`.
    pub fn lookup(&self, name: &str, key: &PublicKey) -> Lookup {
        let mut out = Lookup::default();
        for e in self.matching(name) {
            let location = format!("{}:{}", self.path.display(), e.line);
            if e.key.key_data() == key.key_data() {
                if e.revoked {
                    out.revoked = Some(location);
                } else if out.trusted.is_none() {
                    out.trusted = Some(location);
                }
            } else if !e.revoked {
                out.others.push(Recorded {
                    key: e.key.clone(),
                    location,
                });
            }
        }
        out
    }

    /// The key algorithms recorded for `name`, so the client can ask the
    /// server for a key it can verify (as OpenSSH orders HostKeyAlgorithms).
    pub fn algorithms(&self, name: &str) -> Vec<russh::keys::Algorithm> {
        self.matching(name)
            .filter(|e| !e.revoked)
            .map(|e| e.key.algorithm())
            .collect()
    }
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                ring::hmac::verify(&key, name.as_bytes(), hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                // OpenSSH: any negated match refuses the line outright.
                let mut hit = false;
                for p in patterns {
                    let p = p.to_lowercase();
                    if let Some(neg) = p.strip_prefix('!') {
                        if wildcard(neg.as_bytes(), name.as_bytes()) {
                            return false;
                        }
                    } else if wildcard(p.as_bytes(), name.as_bytes()) {
                        hit = true;
                    }
                }
                hit
            }
        }
    }
}

/// `*` and `?` glob matching, as OpenSSH's `match_pattern`.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

fn parse_line(line: usize, text: &str) -> Result<Option<Entry>, String> {
    let mut fields = text.split_whitespace();
    let mut first = fields.next().unwrap_or_default();
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            "cert-authority" => return Ok(None),
            other => return Err(format!("unknown marker @{other}")),
        }
        first = fields.next().ok_or("no host after the marker")?;
    }
    let algorithm = fields.next().ok_or("no key type")?;
    let data = fields.next().ok_or("no key")?;
    let key = PublicKey::from_openssh(&format!("{algorithm} {data}"))
        .map_err(|e| format!("unreadable key: {e}"))?;
    let hosts = if let Some(hashed) = first.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|').ok_or("malformed hashed host")?;
        Hosts::Hashed {
            salt: B64.decode(salt).map_err(|_| "malformed hashed host salt")?,
            hash: B64.decode(hash).map_err(|_| "malformed hashed host hash")?,
        }
    } else {
        Hosts::Patterns(first.split(',').map(str::to_owned).collect())
    };
    Ok(Some(Entry {
        line,
        hosts,
        key,
        revoked,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDuWBbD8Xmy3P5cpd5Jzz0aRpzDm3sjmRJmN3mnYjXxr";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn plain_ports_wildcards_and_negation() {
        let text = format!(
            "# comment\n[127.60.0.1]:2222 {ED}\nweb*,!web9 {ED}\n10.0.0.1 {ED2}\nbroken line\n"
        );
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert_eq!(kh.skipped.len(), 1);
        assert!(kh.lookup("[127.60.0.1]:2222", &key(ED)).trusted.is_some());
        assert!(kh.lookup("127.60.0.1", &key(ED)).trusted.is_none());
        assert!(kh.lookup("web1", &key(ED)).trusted.is_some());
        assert!(kh.lookup("WEB1", &key(ED)).trusted.is_some());
        assert!(kh.lookup("web9", &key(ED)).trusted.is_none());
        let changed = kh.lookup("10.0.0.1", &key(ED));
        assert!(changed.trusted.is_none());
        assert_eq!(changed.others[0].location, "kh:4");
    }

    #[test]
    fn hashed_entries_as_ssh_keygen_writes_them() {
        // `ssh-keygen -H` output for [127.60.0.1]:2222 with a fixed salt,
        // computed independently with Python's hmac module.
        let salt = [7u8; 20];
        let key_ = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
        let tag = ring::hmac::sign(&key_, b"[127.60.0.1]:2222");
        let line = format!(
            "|1|{}|{} {ED}\n",
            B64.encode(salt),
            B64.encode(tag.as_ref())
        );
        let kh = KnownHosts::parse(Path::new("kh"), &line);
        assert!(kh.lookup("[127.60.0.1]:2222", &key(ED)).trusted.is_some());
        assert!(kh.lookup("[127.60.0.1]:2223", &key(ED)).trusted.is_none());
        assert_eq!(kh.lookup("[127.60.0.1]:2222", &key(ED2)).others.len(), 1);
    }

    #[test]
    fn revoked_and_cert_authority() {
        let text = format!("@revoked * {ED}\n@cert-authority *.example {ED2}\n");
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert!(kh.lookup("any", &key(ED)).revoked.is_some());
        assert!(kh.lookup("a.example", &key(ED2)).trusted.is_none());
        assert!(kh.skipped.is_empty());
    }

    #[test]
    fn names_and_fingerprints() {
        assert_eq!(host_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(host_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
        assert!(fingerprint(&key(ED)).starts_with("SHA256:"));
    }
}
