//! Addresses that appear in an inventory: hosts, BMC endpoints, SSH
//! endpoints, CIDR blocks and MAC addresses, each parsed strictly, because
//! every one of them ends up in a URL, a shell command or a template.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A host: an IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name (lowercase, validated as RFC 1123).
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Whether `name` is a valid RFC 1123 host name: dot-separated labels of
/// lowercase letters, digits and inner hyphens, each at most 63 characters.
/// Uppercase is refused so names compare equal exactly when they are equal.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Why a host could not be parsed.
fn host_error(text: &str) -> String {
    if text.chars().any(|c| c.is_ascii_uppercase()) && is_hostname(&text.to_ascii_lowercase()) {
        return format!("host name `{text}` must be lowercase");
    }
    let looks_numeric = text
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if looks_numeric {
        return format!("`{text}` is not a valid IPv4 address");
    }
    format!("`{text}` is not a valid IP address or host name")
}

impl FromStr for Host {
    type Err = String;

    fn from_str(text: &str) -> Result<Host, String> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| format!("`{inner}` is not a valid IPv6 address"));
        }
        if let Ok(ip) = text.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        if let Ok(ip) = text.parse::<Ipv6Addr>() {
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        // A name made only of digits and dots is a mistyped IPv4 address
        // (`10.10.1.300`), never a host name.
        let numeric = text
            .split('.')
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if is_hostname(text) && !numeric {
            Ok(Host::Name(text.to_owned()))
        } else {
            Err(host_error(text))
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into host and optional port.
fn split_host_port(text: &str) -> Result<(Host, Option<u16>), String> {
    let (host, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => {
                let rest = &text[end + 1..];
                let port = match rest.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if rest.is_empty() => None,
                    None => return Err(format!("unexpected `{rest}` after `{}`", &text[..=end])),
                };
                (&text[..=end], port)
            }
            None => return Err(format!("`{text}` has `[` without `]`")),
        }
    } else if text.matches(':').count() > 1 {
        // A bare IPv6 address; a port needs brackets.
        (text, None)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let host: Host = host.parse()?;
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => None,
    };
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{text}` is not a valid port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// A BMC's Redfish endpoint: always HTTPS.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BmcEndpoint {
    /// The BMC's host.
    pub host: Host,
    /// The HTTPS port (443 unless given).
    pub port: u16,
}

impl BmcEndpoint {
    /// The base URL, `https://host:port`.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for BmcEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

impl FromStr for BmcEndpoint {
    type Err = String;

    /// Accepts `host`, `host:port` or `https://host[:port][/]`.
    fn from_str(text: &str) -> Result<BmcEndpoint, String> {
        let text = text.trim();
        let rest = if let Some(rest) = text.strip_prefix("https://") {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains('/') {
                return Err(format!(
                    "`{text}`: give the BMC's base URL without a path (kiln finds /redfish/v1 itself)"
                ));
            }
            rest
        } else if text.starts_with("http://") {
            return Err(format!("`{text}`: Redfish is only spoken over https"));
        } else if text.contains("://") {
            return Err(format!(
                "`{text}`: only https:// URLs are accepted for a BMC"
            ));
        } else {
            text
        };
        if rest.contains('@') {
            return Err(format!(
                "`{text}`: credentials do not belong in the address; use `username` and `password`"
            ));
        }
        let (host, port) = split_host_port(rest)?;
        Ok(BmcEndpoint {
            host,
            port: port.unwrap_or(443),
        })
    }
}

impl Serialize for BmcEndpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.url())
    }
}

/// An SSH endpoint, `host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SshEndpoint {
    /// The host.
    pub host: Host,
    /// The port (22 unless given).
    pub port: u16,
}

impl fmt::Display for SshEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for SshEndpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<SshEndpoint, String> {
        let text = text.trim();
        if text.contains("://") {
            return Err(format!(
                "`{text}`: give an SSH address as host[:port], not a URL"
            ));
        }
        if text.contains('@') {
            return Err(format!(
                "`{text}`: the user goes in `ssh.user`, not in the address"
            ));
        }
        let (host, port) = split_host_port(text)?;
        Ok(SshEndpoint {
            host,
            port: port.unwrap_or(22),
        })
    }
}

impl Serialize for SshEndpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A jump host (bastion), `[user@]host[:port]`, as OpenSSH's ProxyJump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpHost {
    /// The user on the jump host, when not the node's SSH user.
    pub user: Option<String>,
    /// The jump host's address.
    pub endpoint: SshEndpoint,
}

impl fmt::Display for JumpHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(f, "{user}@{}", self.endpoint),
            None => write!(f, "{}", self.endpoint),
        }
    }
}

impl FromStr for JumpHost {
    type Err = String;

    fn from_str(text: &str) -> Result<JumpHost, String> {
        let (user, rest) = match text.split_once('@') {
            Some((u, r)) => {
                if !is_username(u) {
                    return Err(format!("`{u}` is not a valid user name"));
                }
                (Some(u.to_owned()), r)
            }
            None => (None, text),
        };
        Ok(JumpHost {
            user,
            endpoint: rest.parse()?,
        })
    }
}

impl Serialize for JumpHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether `name` is a safe POSIX user name (it reaches shells and sudo).
pub fn is_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// An IP network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a CIDR block like 10.10.0.0/16"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` in `{text}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("`/{prefix}` in `{text}` is not a prefix length (0-{max})")
            })?;
        let cidr = Cidr { addr, prefix };
        let network_only = match addr {
            IpAddr::V4(_) => {
                cidr.contains(addr) && {
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    matches!(addr, IpAddr::V4(a) if u32::from(a) & !mask == 0)
                }
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(a) & !mask == 0
            }
        };
        if !network_only {
            return Err(format!(
                "`{text}` has host bits set; did you mean the network address?"
            ));
        }
        Ok(cidr)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A MAC address, stored as six bytes, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = String;

    /// Accepts `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(text: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = text.split([':', '-']).collect();
        let err = || format!("`{text}` is not a MAC address like 04:3f:72:aa:bb:cc");
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (byte, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An `http://` or `https://` URL, split into what a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// TLS or not.
    pub https: bool,
    /// Host (IP or DNS name, no brackets).
    pub host: String,
    /// Port (80/443 unless given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http[s]://host[:port][/path]`. Userinfo is refused: tokens
    /// come from secrets, never from URLs that end up in logs.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{text}` is not an http:// or https:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{text}` carries credentials; give them as a secret (`token: {{env: NAME}}`)"
            ));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: unclosed `[` in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("`{text}`: bad port `{p}`"))?,
                None => default_port,
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| format!("`{text}`: bad port `{p}`"))?,
                ),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err(format!("`{text}` has no valid host"));
        }
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("`{text}` has spaces or control characters"));
        }
        Ok(Url {
            https,
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// This URL with `path` (absolute) instead of its own.
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_owned(),
            ..self.clone()
        }
    }

    /// `host:port`, bracketed for IPv6, for the Host header and messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmc_endpoints() {
        let e: BmcEndpoint = "10.10.1.11".parse().unwrap();
        assert_eq!(e.url(), "https://10.10.1.11:443");
        let e: BmcEndpoint = "https://10.10.1.12:8443/".parse().unwrap();
        assert_eq!(e.url(), "https://10.10.1.12:8443");
        let e: BmcEndpoint = "[fd00::1]:8443".parse().unwrap();
        assert_eq!(e.url(), "https://[fd00::1]:8443");
        let e: BmcEndpoint = "bmc-r01-n01.mgmt".parse().unwrap();
        assert_eq!(e.port, 443);
        assert!(
            "10.10.1.300"
                .parse::<BmcEndpoint>()
                .unwrap_err()
                .contains("IPv4")
        );
        assert!("http://10.0.0.1".parse::<BmcEndpoint>().is_err());
        assert!(
            "https://10.0.0.1/redfish/v1"
                .parse::<BmcEndpoint>()
                .is_err()
        );
        assert!("10.0.0.1:0".parse::<BmcEndpoint>().is_err());
        assert!("10.0.0.1:99999".parse::<BmcEndpoint>().is_err());
        assert!("host;rm -rf /".parse::<BmcEndpoint>().is_err());
        assert!(
            "Host.Example"
                .parse::<BmcEndpoint>()
                .unwrap_err()
                .contains("lowercase")
        );
    }

    #[test]
    fn ssh_endpoints_and_jump_hosts() {
        let e: SshEndpoint = "10.20.1.12:2222".parse().unwrap();
        assert_eq!(e.to_string(), "10.20.1.12:2222");
        assert!("ubuntu@10.0.0.1".parse::<SshEndpoint>().is_err());
        let j: JumpHost = "ops@bastion.par1:2200".parse().unwrap();
        assert_eq!(j.to_string(), "ops@bastion.par1:2200");
        assert!("$(id)@bastion".parse::<JumpHost>().is_err());
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.10.0.0/16".parse().unwrap();
        assert!(c.contains("10.10.200.1".parse().unwrap()));
        assert!(!c.contains("10.11.0.1".parse().unwrap()));
        assert!("10.10.0.1/16".parse::<Cidr>().is_err());
        assert!("10.10.0.0/33".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
    }

    #[test]
    fn macs() {
        let m: Mac = "04:3F:72:AA:BB:0c".parse().unwrap();
        assert_eq!(m.to_string(), "04:3f:72:aa:bb:0c");
        assert_eq!("04-3f-72-aa-bb-0c".parse::<Mac>().unwrap(), m);
        assert!("04:3f:72:aa:bb".parse::<Mac>().is_err());
        assert!("04:3f:72:aa:bb:zz".parse::<Mac>().is_err());
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("r01-n01"));
        assert!(is_hostname("gpu-01.par1.example"));
        assert!(!is_hostname("-r01"));
        assert!(!is_hostname("r01_n01"));
        assert!(!is_hostname("R01"));
        assert!(!is_hostname("a;b"));
        assert!(!is_hostname(&"a".repeat(64)));
    }

    #[test]
    fn urls_parse_strictly() {
        let u = Url::parse("https://cloud.example:8443/intake?x=1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port),
            (true, "cloud.example", 8443)
        );
        assert_eq!(u.path, "/intake?x=1");
        assert_eq!(Url::parse("http://127.0.0.1").unwrap().port, 80);
        assert_eq!(Url::parse("http://[::1]:81/a").unwrap().host, "::1");
        assert!(Url::parse("ftp://x").is_err());
        assert!(
            Url::parse("https://user:pw@x/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(Url::parse("http://x:99999/").is_err());
        assert!(Url::parse("http://a b/").is_err());
    }
}
