//! How kiln trusts a BMC's certificate. BMCs ship self-signed certificates,
//! so the default is a pinned SHA-256 fingerprint, recorded on first contact
//! by `kiln bmc trust` or written in the inventory.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::yaml::decode::{Cx, FromNode};
use crate::yaml::{Node, Value};

/// A certificate's SHA-256 fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// Accepts `sha256:AB:CD:…` (32 colon-separated bytes) or 64 hex digits,
    /// with or without the `sha256:` prefix, any case.
    fn from_str(text: &str) -> Result<Fingerprint, String> {
        let hex: String = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("SHA256:"))
            .unwrap_or(text)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let err =
            || format!("`{text}` is not a SHA-256 fingerprint (sha256: followed by 32 hex bytes)");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Fingerprint(out))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a BMC's TLS certificate is trusted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// The fingerprint kiln recorded for this BMC (`kiln bmc trust`);
    /// connecting to a BMC with none recorded is an error.
    #[default]
    Recorded,
    /// This fingerprint exactly.
    Pin(Fingerprint),
    /// A certificate chain ending in one of these CA certificates (PEM).
    Ca(PathBuf),
    /// No verification at all: an explicit opt-in, logged on every use.
    Insecure,
}

impl FromNode for TlsPolicy {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Str(s) if s == "insecure" => {
                cx.warn_unsafe(
                    node.pos,
                    "`tls: insecure`: BMC certificates are not checked, so anyone on the \
                     management network can pose as these BMCs and read their passwords",
                );
                Some(TlsPolicy::Insecure)
            }
            Value::Str(s) if s == "recorded" => Some(TlsPolicy::Recorded),
            Value::Map(_) => {
                let mut m = cx.map(node, "tls settings")?;
                let pin: Option<String> = m.opt(cx, "pin");
                let ca: Option<String> = m.opt(cx, "ca");
                let pin_pos = m.get("pin").map(|n| n.pos);
                m.finish(cx);
                match (pin, ca) {
                    (Some(pin), None) => match pin.parse() {
                        Ok(fp) => Some(TlsPolicy::Pin(fp)),
                        Err(e) => {
                            cx.error(pin_pos.unwrap_or(node.pos), e);
                            None
                        }
                    },
                    (None, Some(ca)) => Some(TlsPolicy::Ca(PathBuf::from(ca))),
                    _ => {
                        cx.error(node.pos, "tls takes exactly one of `pin` or `ca`");
                        None
                    }
                }
            }
            _ => {
                cx.error_help(
                    node.pos,
                    "unknown tls setting",
                    "use {pin: \"sha256:…\"}, {ca: path/to/ca.pem}, `recorded` or `insecure`",
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip() {
        let text = format!("sha256:{}", ["AB"; 32].join(":"));
        let fp: Fingerprint = text.parse().unwrap();
        assert_eq!(fp.to_string(), text);
        let plain: Fingerprint = "ab".repeat(32).parse().unwrap();
        assert_eq!(plain, fp);
        assert!("sha256:AB:CD".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }
}
