//! The firmware and BIOS baseline of a hardware profile: which firmware
//! components a node must run (matched in the BMC's `FirmwareInventory`),
//! the package that brings a component there, and the BIOS settings, boot
//! mode and secure-boot state wanted. The firmware stage reads it; so does
//! `kiln profile show`.
//!
//! ```yaml
//! firmware:
//!   - component: bmc
//!     match: { id: "BMC*" }          # or { name: "*iDRAC*" }; `*` and `?`
//!     minimum: "7.10.30.00"          # or `version:` for an exact one
//!     package: { url: "https://…/bmc.bin", sha256: "…" }   # or `path:`
//!     apply: on_reset                # or immediate (the default)
//! bios:
//!   boot_mode: uefi
//!   secure_boot: false
//!   attributes:
//!     - setting: sr-iov              # kiln's name, for reports
//!       attribute: SriovGlobalEnable # the Redfish attribute
//!       value: Enabled
//!       vendors:                     # where a vendor names it otherwise
//!         supermicro: { attribute: "SR-IOVSupport*", value: Enable }
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::yaml::Node;
use crate::yaml::decode::{Cx, FromNode, Spanned};

/// One firmware component the baseline holds a node to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FirmwareComponent {
    /// kiln's name for it (`bmc`, `bios`, `gpu`, `nvswitch`, `cx7`), used
    /// in reports and reasons.
    pub component: String,
    /// How to find it in the BMC's firmware inventory.
    #[serde(rename = "match")]
    pub matches: ComponentMatch,
    /// The version it must run.
    pub version: VersionRule,
    /// The package that brings it there. `None`: kiln checks the version
    /// and fails a node below it, but cannot update it.
    pub package: Option<FirmwarePackage>,
    /// When the BMC applies the update.
    pub apply: ApplyTime,
}

/// How a component is found in `FirmwareInventory`: a glob (`*`, `?`)
/// over the member's `Id` or its `Name`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentMatch {
    /// Matches the member's `Id`.
    Id(String),
    /// Matches the member's `Name`.
    Name(String),
}

impl ComponentMatch {
    /// Whether an inventory member with this `Id` and `Name` is the
    /// component.
    pub fn matches(&self, id: &str, name: &str) -> bool {
        match self {
            ComponentMatch::Id(p) => glob(p, id),
            ComponentMatch::Name(p) => glob(p, name),
        }
    }
}

/// The version a component must run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionRule {
    /// Exactly this version (a downgrade is an update too).
    Exact(String),
    /// This version or a later one.
    Minimum(String),
}

impl VersionRule {
    /// Whether a component reporting `found` meets the rule.
    pub fn accepts(&self, found: &str) -> bool {
        match self {
            VersionRule::Exact(v) => compare_versions(found, v) == Ordering::Equal,
            VersionRule::Minimum(v) => compare_versions(found, v) != Ordering::Less,
        }
    }

    /// The version named by the rule.
    pub fn version(&self) -> &str {
        match self {
            VersionRule::Exact(v) | VersionRule::Minimum(v) => v,
        }
    }
}

impl std::fmt::Display for VersionRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionRule::Exact(v) => write!(f, "{v}"),
            VersionRule::Minimum(v) => write!(f, "{v} or later"),
        }
    }
}

/// A firmware update package: served to the BMC by kiln's boot server
/// (`SimpleUpdate`) or uploaded to it (`MultipartHttpPushUri`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FirmwarePackage {
    /// Where kiln fetches it.
    pub url: Option<String>,
    /// A local file, relative to the inventory.
    pub path: Option<String>,
    /// Its SHA-256 (64 hex digits, lower case): kiln refuses a package
    /// that does not match before any BMC sees it.
    pub sha256: String,
}

/// When the BMC applies an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyTime {
    /// As soon as the image is in (Redfish `Immediate`).
    Immediate,
    /// At the next reset of the system (Redfish `OnReset`): kiln resets it.
    OnReset,
}

impl ApplyTime {
    /// The Redfish `@Redfish.OperationApplyTime` value.
    pub fn redfish(self) -> &'static str {
        match self {
            ApplyTime::Immediate => "Immediate",
            ApplyTime::OnReset => "OnReset",
        }
    }
}

crate::keywords!(ApplyTime, "apply time", [
    "immediate" => ApplyTime::Immediate,
    "on_reset" => ApplyTime::OnReset,
]);

/// The BIOS a node must run with.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BiosBaseline {
    /// The boot mode wanted (`None`: not checked).
    pub boot_mode: Option<BootMode>,
    /// Whether secure boot must be on (`None`: not checked).
    pub secure_boot: Option<bool>,
    /// Attribute values.
    pub attributes: Vec<BiosSetting>,
}

/// Boot modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    /// UEFI.
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

impl BootMode {
    /// The Redfish `BootSourceOverrideMode` word.
    pub fn redfish(self) -> &'static str {
        match self {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        }
    }
}

crate::keywords!(BootMode, "boot mode", ["uefi" => BootMode::Uefi, "legacy" => BootMode::Legacy]);

/// One BIOS setting.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BiosSetting {
    /// kiln's name for it (`sr-iov`, `acs`, `iommu`), used in reasons.
    pub setting: String,
    /// The attribute as most BMCs name it, and the value wanted.
    #[serde(flatten)]
    pub default: BiosAttribute,
    /// Where a vendor names the attribute (or its value) otherwise.
    pub vendors: BTreeMap<String, BiosAttribute>,
}

impl BiosSetting {
    /// The attribute and value for a BMC of `vendor` (the name
    /// [`crate::bmc::vendor::Vendor`] displays as, lower case).
    pub fn for_vendor(&self, vendor: &str) -> &BiosAttribute {
        self.vendors.get(vendor).unwrap_or(&self.default)
    }
}

/// A BIOS attribute's name and the value wanted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BiosAttribute {
    /// The Redfish attribute name; may end in `*` where a vendor suffixes
    /// names per board (Supermicro's `…#0036`).
    pub attribute: String,
    /// The value, as the BMC reports it.
    pub value: AttributeValue,
}

impl BiosAttribute {
    /// The name, among the BIOS's own attribute names, this one stands
    /// for: itself, or the one name its `*` pattern matches. `None`:
    /// none or several match.
    pub fn resolve<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        let mut hits = names.into_iter().filter(|n| glob(&self.attribute, n));
        let first = hits.next()?;
        hits.next().is_none().then_some(first)
    }
}

/// A BIOS attribute value: Redfish attributes are strings, integers or
/// booleans.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AttributeValue {
    /// An enumeration or string attribute.
    Text(String),
    /// An integer attribute.
    Integer(i64),
    /// A boolean attribute.
    Boolean(bool),
}

impl AttributeValue {
    /// Whether the BMC's JSON value is this one.
    pub fn is(&self, json: &serde_json::Value) -> bool {
        match self {
            AttributeValue::Text(t) => json.as_str() == Some(t),
            AttributeValue::Integer(i) => json.as_i64() == Some(*i),
            AttributeValue::Boolean(b) => json.as_bool() == Some(*b),
        }
    }

    /// As JSON, for a `PATCH`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            AttributeValue::Text(t) => serde_json::Value::from(t.as_str()),
            AttributeValue::Integer(i) => serde_json::Value::from(*i),
            AttributeValue::Boolean(b) => serde_json::Value::from(*b),
        }
    }
}

impl std::fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeValue::Text(t) => write!(f, "{t}"),
            AttributeValue::Integer(i) => write!(f, "{i}"),
            AttributeValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// What the firmware stage will hold a node to, in words, as `kiln
/// profile show` prints it (YAML comments, so the output stays a profile).
pub fn explain(firmware: &[FirmwareComponent], bios: &BiosBaseline) -> String {
    let mut out = String::from("# Baseline the firmware stage brings nodes to:\n");
    if firmware.is_empty() {
        out.push_str("#   firmware: none (versions are only listed)\n");
    }
    for c in firmware {
        let (key, pattern) = match &c.matches {
            ComponentMatch::Id(p) => ("Id", p),
            ComponentMatch::Name(p) => ("Name", p),
        };
        out.push_str(&format!(
            "#   {}: the inventory member whose {key} matches `{pattern}` runs {}\n",
            c.component, c.version
        ));
        match &c.package {
            Some(p) => out.push_str(&format!(
                "#     else update from {} (sha256 {}), applied {}\n",
                p.url.as_deref().or(p.path.as_deref()).unwrap_or("?"),
                p.sha256,
                match c.apply {
                    ApplyTime::Immediate => "at once",
                    ApplyTime::OnReset => "at the next reset (kiln resets the node)",
                }
            )),
            None => out.push_str("#     else the node fails: no package to update it\n"),
        }
    }
    if let Some(mode) = bios.boot_mode {
        out.push_str(&format!("#   boot mode: {}\n", mode.redfish()));
    }
    if let Some(on) = bios.secure_boot {
        out.push_str(&format!(
            "#   secure boot: {}\n",
            if on { "enabled" } else { "disabled" }
        ));
    }
    for a in &bios.attributes {
        out.push_str(&format!(
            "#   BIOS {}: {} = {}\n",
            a.setting, a.default.attribute, a.default.value
        ));
        for (vendor, v) in &a.vendors {
            out.push_str(&format!(
                "#     on {vendor} BMCs: {} = {}\n",
                v.attribute, v.value
            ));
        }
    }
    out
}

/// Orders firmware versions the way vendors number them: runs of digits
/// compare as numbers, other runs as text (`7.10.30.00` > `7.9.99`,
/// `1.2a` < `1.2b`); a version that is a prefix of another is older.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (runs(a.trim()), runs(b.trim()));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u128>(), y.parse::<u128>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// The runs of digits and of letters in a version; separators (`.`, `-`,
/// `_`, spaces) only split.
fn runs(v: &str) -> impl Iterator<Item = &str> {
    let mut rest = v;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric() || c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

/// `*` and `?` glob matching in time linear in the text for each star
/// (no exponential backtracking on hostile patterns).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl FromNode for FirmwareComponent {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let before = cx.error_count();
        let mut m = cx.map(node, "firmware component")?;
        let component: Option<String> = m.req(cx, "component");
        let matches: Option<ComponentMatch> = m.req(cx, "match");
        let exact: Option<String> = m.opt(cx, "version");
        let minimum: Option<String> = m.opt(cx, "minimum");
        let package: Option<FirmwarePackage> = m.opt(cx, "package");
        let apply: Option<ApplyTime> = m.opt(cx, "apply");
        m.finish(cx);
        let version = match (exact, minimum) {
            (Some(v), None) => Some(VersionRule::Exact(v)),
            (None, Some(v)) => Some(VersionRule::Minimum(v)),
            (Some(_), Some(_)) => {
                cx.error(
                    node.pos,
                    "a firmware component takes `version` (exact) or `minimum`, not both",
                );
                None
            }
            (None, None) => {
                cx.error(
                    node.pos,
                    "a firmware component needs `version` (exact) or `minimum`",
                );
                None
            }
        };
        if let Some(rule) = &version
            && rule.version().trim().is_empty()
        {
            cx.error(node.pos, "the firmware version is empty");
        }
        (cx.error_count() == before).then_some(FirmwareComponent {
            component: component?,
            matches: matches?,
            version: version?,
            package,
            apply: apply.unwrap_or(ApplyTime::Immediate),
        })
    }
}

impl FromNode for ComponentMatch {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "firmware match")?;
        let id: Option<String> = m.opt(cx, "id");
        let name: Option<String> = m.opt(cx, "name");
        m.finish(cx);
        match (id, name) {
            (Some(p), None) => Some(ComponentMatch::Id(p)),
            (None, Some(p)) => Some(ComponentMatch::Name(p)),
            _ => {
                cx.error(
                    node.pos,
                    "a firmware match takes one of `id` or `name` (a `*`/`?` pattern)",
                );
                None
            }
        }
    }
}

impl FromNode for FirmwarePackage {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let before = cx.error_count();
        let mut m = cx.map(node, "firmware package")?;
        let url: Option<String> = m.opt(cx, "url");
        let path: Option<String> = m.opt(cx, "path");
        let sha256: Option<String> = m.req(cx, "sha256");
        m.finish(cx);
        crate::profiles::image::check_source(
            cx,
            node,
            "firmware package",
            url.as_deref(),
            path.is_some(),
        );
        if let Some(digest) = &sha256 {
            crate::profiles::image::check_sha256(cx, node, "firmware package", digest);
        }
        (cx.error_count() == before).then(|| FirmwarePackage {
            url,
            path,
            sha256: sha256.unwrap_or_default().to_ascii_lowercase(),
        })
    }
}

impl FromNode for BiosBaseline {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let before = cx.error_count();
        let mut m = cx.map(node, "bios")?;
        let boot_mode: Option<BootMode> = m.opt(cx, "boot_mode");
        let secure_boot: Option<bool> = m.opt(cx, "secure_boot");
        let attributes: Option<Vec<BiosSetting>> = m.opt(cx, "attributes");
        m.finish(cx);
        (cx.error_count() == before).then(|| BiosBaseline {
            boot_mode,
            secure_boot,
            attributes: attributes.unwrap_or_default(),
        })
    }
}

impl FromNode for BiosSetting {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let before = cx.error_count();
        let mut m = cx.map(node, "bios attribute")?;
        let setting: Option<String> = m.req(cx, "setting");
        let attribute: Option<String> = m.req(cx, "attribute");
        let value: Option<AttributeValue> = m.req(cx, "value");
        let vendors: Option<BTreeMap<String, Spanned<VendorOverride>>> = m.opt(cx, "vendors");
        m.finish(cx);
        let (attribute, value) = (attribute?, value?);
        let mut per_vendor = BTreeMap::new();
        for (vendor, o) in vendors.unwrap_or_default() {
            if !VENDORS.contains(&vendor.as_str()) {
                let known = VENDORS.join(", ");
                cx.error(o.pos, format!("unknown vendor `{vendor}` ({known})"));
                continue;
            }
            let o = o.value;
            let attribute = o.attribute.unwrap_or_else(|| attribute.clone());
            let value = o.value.unwrap_or_else(|| value.clone());
            per_vendor.insert(vendor, BiosAttribute { attribute, value });
        }
        (cx.error_count() == before).then(|| BiosSetting {
            setting: setting.unwrap_or_default(),
            default: BiosAttribute { attribute, value },
            vendors: per_vendor,
        })
    }
}

/// The vendor names a BIOS setting may be given for (as BMC discovery
/// names them).
pub const VENDORS: &[&str] = &["dell", "hpe", "supermicro", "lenovo", "ami", "openbmc"];

impl FromNode for AttributeValue {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        use crate::yaml::Value;
        match &node.value {
            Value::Bool(b) => Some(AttributeValue::Boolean(*b)),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => Some(AttributeValue::Integer(i)),
                Err(_) => {
                    cx.error(node.pos, format!("BIOS value {i} is out of range"));
                    None
                }
            },
            _ => String::from_node(cx, node).map(AttributeValue::Text),
        }
    }
}

/// A vendor's own name or value for a BIOS attribute.
struct VendorOverride {
    attribute: Option<String>,
    value: Option<AttributeValue>,
}

impl FromNode for VendorOverride {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "vendor attribute")?;
        let attribute = m.opt(cx, "attribute");
        let value = m.opt(cx, "value");
        m.finish(cx);
        Some(VendorOverride { attribute, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number_then_text() {
        use Ordering::*;
        for (a, b, want) in [
            ("7.10.30.00", "7.9.99", Greater),
            ("7.10.30.00", "7.10.30.00", Equal),
            ("1.2", "1.2.1", Less),
            ("1.2a", "1.2b", Less),
            ("96.00.9A.00.01", "96.00.89.00.01", Less),
            ("U54 v2.10 (06/27/2024)", "U54 v2.10 (06/27/2024)", Equal),
            ("2.9", "2.10", Less),
            ("", "1", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
        assert!(VersionRule::Minimum("7.10".into()).accepts("7.10.1"));
        assert!(!VersionRule::Minimum("7.10".into()).accepts("7.9"));
        assert!(!VersionRule::Exact("7.10".into()).accepts("7.10.1"));
    }

    #[test]
    fn globs_match_ids_and_names_without_blowing_up() {
        assert!(glob("BMC*", "BMC_Firmware"));
        assert!(glob(
            "*iDRAC*",
            "Integrated Dell Remote Access Controller iDRAC"
        ));
        assert!(glob("HGX_FW_GPU_SXM_?", "HGX_FW_GPU_SXM_3"));
        assert!(!glob("HGX_FW_GPU_SXM_?", "HGX_FW_GPU_SXM_10"));
        assert!(!glob("BMC", "BMC2"));
        let long = "a".repeat(2000);
        assert!(!glob(&format!("{}b", "*a".repeat(50)), &long));
        let m = ComponentMatch::Name("*Backplane*".into());
        assert!(m.matches("x", "PCIe Backplane CPLD") && !m.matches("Backplane", "y"));
        let attr = BiosAttribute {
            attribute: "SR-IOVSupport*".into(),
            value: AttributeValue::Text("Enable".into()),
        };
        assert_eq!(
            attr.resolve(["SR-IOVSupport#0036", "ACSControl#1234"]),
            Some("SR-IOVSupport#0036")
        );
        assert_eq!(attr.resolve(["SR-IOVSupport#1", "SR-IOVSupport#2"]), None);
    }
}
