//! Reading a node's NoCloud seed the way cloud-init does: `meta-data` and
//! `user-data` (a `#cloud-config` document) under the seed URL. The
//! simulated installer keeps what an installed system would end up with:
//! host name, the authorized keys and the SSH host keys.

use crate::yaml::{Node, Value};

/// What an installed node keeps from its seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstalledOs {
    /// Host name from `meta-data` (`local-hostname`) or `user-data`.
    pub hostname: String,
    /// OpenSSH public-key lines allowed to log in.
    pub authorized_keys: Vec<String>,
    /// OpenSSH private host keys (PEM text).
    pub host_keys: Vec<String>,
    /// The seed URL it was installed from.
    pub seed_url: String,
    /// `instance-id` from `meta-data`.
    pub instance_id: String,
    /// Public host keys from `ssh_keys` (`ed25519` -> key line).
    pub host_public_keys: Vec<(String, String)>,
    /// cloud-init's `phone_home`: POSTed once the installed OS first boots.
    pub phone_home: Option<PhoneHome>,
    /// autoinstall's webhook reporter endpoint (`autoinstall.reporting.*`
    /// with `type: webhook`): the installer posts its progress there.
    pub report_url: Option<String>,
    /// A NoCloud seed on the installed system's kernel command line
    /// (kickstart's `bootloader --append`), read by cloud-init on first boot.
    pub cloud_init_seed: Option<String>,
}

/// cloud-init's `phone_home` module settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhoneHome {
    /// Where to POST (`$INSTANCE_ID` is replaced).
    pub url: String,
    /// Which fields to post (`all` or names like `pub_key_ed25519`).
    pub post: Vec<String>,
    /// Attempts.
    pub tries: u32,
}

impl InstalledOs {
    /// The form body cloud-init's phone_home posts.
    pub fn phone_home_body(&self, post: &[String]) -> String {
        let all = post.iter().any(|p| p == "all");
        let mut fields: Vec<(String, String)> = Vec::new();
        for (kind, key) in &self.host_public_keys {
            fields.push((format!("pub_key_{kind}"), key.clone()));
        }
        fields.push(("instance_id".into(), self.instance_id.clone()));
        fields.push(("hostname".into(), self.hostname.clone()));
        fields.push(("fqdn".into(), self.hostname.clone()));
        fields
            .into_iter()
            .filter(|(k, _)| all || post.iter().any(|p| p == k))
            .map(|(k, v)| format!("{}={}", form_escape(&k), form_escape(&v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn form_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Why a seed was refused; the installer stops there.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SeedError {
    /// `user-data` does not start with `#cloud-config`.
    #[error("user-data is not a #cloud-config document")]
    NotCloudConfig,
    /// The YAML does not parse.
    #[error("user-data does not parse: {0}")]
    Yaml(String),
    /// Nobody could log in afterwards.
    #[error("user-data has no ssh_authorized_keys")]
    NoKeys,
}

/// Parses `meta-data` and `user-data`.
pub fn parse(meta_data: &str, user_data: &str, seed_url: &str) -> Result<InstalledOs, SeedError> {
    if !user_data.trim_start().starts_with("#cloud-config") {
        return Err(SeedError::NotCloudConfig);
    }
    let root = crate::yaml::parse(user_data).map_err(|e| SeedError::Yaml(e.message))?;
    // Ubuntu's autoinstall nests the target system's cloud-config under
    // `autoinstall.user-data`; plain cloud-init has it at the top.
    let config = get(&root, "autoinstall")
        .and_then(|a| get(a, "user-data"))
        .unwrap_or(&root);
    let mut os = InstalledOs {
        seed_url: seed_url.to_owned(),
        ..InstalledOs::default()
    };
    os.hostname = meta_value(meta_data, "local-hostname")
        .or_else(|| get(config, "hostname").and_then(str_of))
        .unwrap_or_default();
    if let Some(keys) = get(config, "ssh_authorized_keys") {
        os.authorized_keys.extend(strings(keys));
    }
    if let Some(Value::Seq(users)) = get(config, "users").map(|n| &n.value) {
        for user in users {
            if let Some(keys) = get(user, "ssh_authorized_keys") {
                os.authorized_keys.extend(strings(keys));
            }
        }
    }
    os.instance_id = meta_value(meta_data, "instance-id").unwrap_or_default();
    if let Some(Value::Map(reporters)) = get(&root, "autoinstall")
        .and_then(|a| get(a, "reporting"))
        .map(|n| &n.value)
    {
        os.report_url = reporters.iter().find_map(|(_, r)| {
            (get(r, "type").and_then(str_of).as_deref() == Some("webhook"))
                .then(|| get(r, "endpoint").and_then(str_of))
                .flatten()
        });
    }
    if let Some(Value::Map(entries)) = get(config, "ssh_keys").map(|n| &n.value) {
        for (k, v) in entries {
            if let (Value::Str(k), Some(v)) = (&k.value, str_of(v)) {
                if k.ends_with("_private") {
                    os.host_keys.push(v);
                } else if let Some(kind) = k.strip_suffix("_public") {
                    os.host_public_keys.push((kind.to_owned(), v));
                }
            }
        }
    }
    if let Some(ph) = get(config, "phone_home") {
        let url = get(ph, "url").and_then(str_of).unwrap_or_default();
        let post = get(ph, "post")
            .map(strings)
            .unwrap_or_else(|| vec!["all".into()]);
        let tries = match get(ph, "tries").map(|n| &n.value) {
            Some(Value::Int(n)) => (*n).clamp(1, 100) as u32,
            _ => 10,
        };
        if !url.is_empty() {
            os.phone_home = Some(PhoneHome { url, post, tries });
        }
    }
    if os.authorized_keys.is_empty() {
        return Err(SeedError::NoKeys);
    }
    Ok(os)
}

/// Reads a kickstart as Anaconda would apply it, keeping what the
/// installed system ends up with: `network --hostname`, `sshkey` lines,
/// host keys written by here-documents in `%post` to
/// `/etc/ssh/ssh_host_*_key`, the `bootloader --append` NoCloud seed, and
/// the URL its `%post` reports success to.
pub fn parse_kickstart(ks: &str, url: &str) -> Result<InstalledOs, SeedError> {
    let mut os = InstalledOs {
        seed_url: url.to_owned(),
        ..InstalledOs::default()
    };
    let mut section = String::new();
    let mut heredoc: Option<(String, bool, String)> = None; // (marker, host key?, text)
    for line in ks.lines() {
        if let Some((marker, keep, text)) = &mut heredoc {
            if line.trim() == marker {
                if *keep {
                    os.host_keys.push(text.trim_end().to_owned());
                }
                heredoc = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        }
        let words = shell_words(line).map_err(|e| SeedError::Yaml(format!("kickstart: {e}")))?;
        let Some(first) = words.first() else {
            continue;
        };
        if first.starts_with('%') {
            section = if first == "%end" {
                String::new()
            } else {
                first.clone()
            };
            continue;
        }
        let option = |name: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(&format!("--{name}=")).map(str::to_owned))
        };
        match (section.as_str(), first.as_str()) {
            ("", "network") => {
                if let Some(h) = option("hostname") {
                    os.hostname = h;
                }
            }
            ("", "sshkey") => {
                if let Some(key) = words.iter().skip(1).find(|w| !w.starts_with("--")) {
                    os.authorized_keys.push(key.clone());
                }
            }
            ("", "bootloader") => {
                if let Some(append) = option("append") {
                    os.cloud_init_seed = append.split_whitespace().find_map(|a| {
                        let a = a.replace("\\;", ";");
                        let rest = a.strip_prefix("ds=nocloud;")?;
                        rest.split(';')
                            .find_map(|p| p.strip_prefix("s="))
                            .map(str::to_owned)
                    });
                }
            }
            ("%post", "cat") => {
                // `cat > FILE <<'MARK'`
                let target = words
                    .iter()
                    .position(|w| w == ">")
                    .and_then(|i| words.get(i + 1));
                let marker = words.iter().find_map(|w| w.strip_prefix("<<"));
                if let Some(marker) = marker {
                    let keep = target.is_some_and(|t| {
                        t.starts_with("/etc/ssh/ssh_host_") && t.ends_with("_key")
                    });
                    heredoc = Some((
                        marker.trim_matches(['\'', '"']).to_owned(),
                        keep,
                        String::new(),
                    ));
                }
            }
            ("%post", "curl") if line.contains("SUCCESS") => {
                let end = words.iter().position(|w| w == "||").unwrap_or(words.len());
                os.report_url = words[..end].last().cloned();
            }
            _ => {}
        }
    }
    if os.authorized_keys.is_empty() {
        return Err(SeedError::NoKeys);
    }
    Ok(os)
}

/// POSIX shell words of one line (quotes and backslashes; no expansion).
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.extend(chars.next()),
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn str_of(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn strings(node: &Node) -> Vec<String> {
    match &node.value {
        Value::Seq(items) => items.iter().filter_map(str_of).collect(),
        Value::Str(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `meta-data` is YAML too, but often written as flat `key: value` lines;
/// read the one key needed without failing on the rest.
fn meta_value(meta: &str, key: &str) -> Option<String> {
    meta.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_cloud_config() {
        let user = "#cloud-config\nhostname: n1\nssh_authorized_keys:\n  - ssh-ed25519 AAAA k\nssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    x\n    -----END OPENSSH PRIVATE KEY-----\n  ed25519_public: ssh-ed25519 BBBB\n";
        let os = parse("instance-id: i\nlocal-hostname: r1-n1\n", user, "http://s/").unwrap();
        assert_eq!(os.hostname, "r1-n1");
        assert_eq!(os.authorized_keys, ["ssh-ed25519 AAAA k"]);
        assert_eq!(os.host_keys.len(), 1);
    }

    #[test]
    fn autoinstall_nesting_and_users() {
        let user = "#cloud-config\nautoinstall:\n  version: 1\n  user-data:\n    users:\n      - name: kiln\n        ssh_authorized_keys: [ssh-ed25519 CCCC]\n";
        let os = parse("", user, "u").unwrap();
        assert_eq!(os.authorized_keys, ["ssh-ed25519 CCCC"]);
    }

    #[test]
    fn phone_home_is_read_and_posted_as_a_form() {
        let user = "#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAA]\nssh_keys:\n  ed25519_public: \"ssh-ed25519 BBBB n1\"\nphone_home:\n  url: \"http://s/done/t\"\n  post: [pub_key_ed25519, instance_id]\n  tries: 3\n";
        let os = parse("instance-id: i-1\nlocal-hostname: n1\n", user, "u").unwrap();
        let ph = os.phone_home.clone().unwrap();
        assert_eq!((ph.url.as_str(), ph.tries), ("http://s/done/t", 3));
        assert_eq!(
            os.phone_home_body(&ph.post),
            "pub_key_ed25519=ssh-ed25519+BBBB+n1&instance_id=i-1"
        );
    }

    #[test]
    fn kickstart_keys_host_key_and_seed() {
        let ks = "text\nnetwork --bootproto=dhcp --hostname='r1-n1'\nsshkey --username='ops' 'ssh-ed25519 AAAA o'\\''b'\nbootloader --append='console=tty0 ds=nocloud;s=http://s/seed/t/'\n%post --erroronfail\ncat > /etc/ssh/ssh_host_ed25519_key <<'KILN_HOST_KEY'\n-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\nKILN_HOST_KEY\ncurl -fsS -d '{\"result\": \"SUCCESS\"}' 'http://s/report/t' || true\n%end\n";
        let os = parse_kickstart(ks, "http://s/ks.cfg").unwrap();
        assert_eq!(os.hostname, "r1-n1");
        assert_eq!(os.authorized_keys, ["ssh-ed25519 AAAA o'b"]);
        assert_eq!(os.host_keys.len(), 1);
        assert!(os.host_keys[0].ends_with("-----END OPENSSH PRIVATE KEY-----"));
        assert_eq!(os.cloud_init_seed.as_deref(), Some("http://s/seed/t/"));
        assert_eq!(os.report_url.as_deref(), Some("http://s/report/t"));
        assert_eq!(parse_kickstart("text\n", "u"), Err(SeedError::NoKeys));
    }

    #[test]
    fn refuses_what_cloud_init_would_not_use() {
        assert_eq!(
            parse("", "hostname: x", "u"),
            Err(SeedError::NotCloudConfig)
        );
        assert_eq!(
            parse("", "#cloud-config\nhostname: x\n", "u"),
            Err(SeedError::NoKeys)
        );
    }
}
