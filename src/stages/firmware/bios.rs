//! Where a node's BIOS stands against its profile's baseline: each
//! setting's attribute resolved against the BIOS's own names (per vendor),
//! the value read, and the values to write.

use serde_json::{Map, Value, json};

use crate::bmc::update::Bios;
use crate::profiles::firmware::{BiosBaseline, BootMode};
use crate::stages::firmware::metrics::BiosCheck;

/// kiln's name for the secure-boot check in reasons and records.
pub const SECURE_BOOT: &str = "secure-boot";

/// kiln's name for the boot-mode check.
pub const BOOT_MODE: &str = "boot-mode";

/// The BIOS attribute most BMCs name the boot mode by (Dell, Lenovo, AMI).
const BOOT_MODE_ATTRIBUTE: &str = "BootMode";

/// Checks `bios` (as read; `None`: the system links no BIOS resource) and
/// the secure-boot state (`None`: not reported) against `baseline` for a
/// BMC of `vendor` (lower case, as [`crate::profiles::firmware::VENDORS`]).
pub fn check(
    baseline: &BiosBaseline,
    bios: Option<&Bios>,
    secure_boot: Option<bool>,
    vendor: &str,
) -> Vec<BiosCheck> {
    let names = || {
        bios.into_iter()
            .flat_map(|b| b.attributes.keys().map(String::as_str))
    };
    let value_of = |name: &str| bios.and_then(|b| b.attributes.get(name)).cloned();
    let mut out: Vec<BiosCheck> = baseline
        .attributes
        .iter()
        .map(|s| {
            let wanted = s.for_vendor(vendor);
            let attribute = wanted.resolve(names()).map(str::to_owned);
            let value = attribute.as_deref().and_then(value_of);
            BiosCheck {
                setting: s.setting.clone(),
                attribute,
                wanted: wanted.value.to_json(),
                meets: value.as_ref().is_some_and(|v| wanted.value.is(v)),
                value,
            }
        })
        .collect();
    if let Some(mode) = baseline.boot_mode {
        let value = value_of(BOOT_MODE_ATTRIBUTE);
        let meets = value.as_ref().and_then(Value::as_str).is_some_and(|v| {
            v.eq_ignore_ascii_case(mode.redfish())
                || (mode == BootMode::Legacy && v.eq_ignore_ascii_case("Bios"))
        });
        out.push(BiosCheck {
            setting: BOOT_MODE.into(),
            attribute: value.is_some().then(|| BOOT_MODE_ATTRIBUTE.to_owned()),
            wanted: json!(mode.redfish()),
            value,
            meets,
        });
    }
    if let Some(wanted) = baseline.secure_boot {
        out.push(BiosCheck {
            setting: SECURE_BOOT.into(),
            attribute: Some("SecureBootEnable".into()),
            wanted: json!(wanted),
            value: secure_boot.map(Value::from),
            meets: secure_boot == Some(wanted),
        });
    }
    out
}

/// The attribute values to write for the checks that do not meet the
/// baseline and name an attribute (secure boot is written apart, to its own
/// resource).
pub fn changes(checks: &[BiosCheck]) -> Map<String, Value> {
    checks
        .iter()
        .filter(|c| !c.meets && c.setting != SECURE_BOOT)
        .filter_map(|c| Some((c.attribute.clone()?, c.wanted.clone())))
        .collect()
}

/// Why a check does not meet the baseline, in a technician's words.
pub fn shortfall(c: &BiosCheck) -> Option<String> {
    if c.meets {
        return None;
    }
    Some(match (&c.attribute, &c.value) {
        (None, _) if c.setting == BOOT_MODE => format!(
            "{}: the BIOS has no {BOOT_MODE_ATTRIBUTE} attribute (set the vendor's own attribute under bios.attributes)",
            c.setting
        ),
        (None, _) => format!(
            "{}: the BIOS has no such attribute (or several match)",
            c.setting
        ),
        (Some(a), None) => format!("{}: {a} is not reported (wanted {})", c.setting, c.wanted),
        (Some(a), Some(v)) => format!("{}: {a} is {v} (wanted {})", c.setting, c.wanted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::firmware::{AttributeValue, BiosAttribute, BiosSetting};

    fn setting(name: &str, attribute: &str, value: &str) -> BiosSetting {
        BiosSetting {
            setting: name.into(),
            default: BiosAttribute {
                attribute: attribute.into(),
                value: AttributeValue::Text(value.into()),
            },
            vendors: [(
                "supermicro".to_owned(),
                BiosAttribute {
                    attribute: format!("{attribute}#*"),
                    value: AttributeValue::Text(value.into()),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn settings_resolve_per_vendor_and_only_differences_are_written() {
        let mut attributes = Map::new();
        attributes.insert("SriovGlobalEnable".into(), json!("Disabled"));
        attributes.insert("ProcVirtualization#00A1".into(), json!("Enabled"));
        attributes.insert("BootMode".into(), json!("Uefi"));
        let bios = Bios {
            attributes,
            ..Bios::default()
        };
        let baseline = BiosBaseline {
            boot_mode: Some(BootMode::Uefi),
            secure_boot: Some(true),
            attributes: vec![
                setting("sr-iov", "SriovGlobalEnable", "Enabled"),
                setting("vt", "ProcVirtualization", "Enabled"),
            ],
        };
        let dell = check(&baseline, Some(&bios), Some(false), "dell");
        assert_eq!(
            dell.iter().map(|c| c.meets).collect::<Vec<_>>(),
            [false, false, true, false]
        );
        assert_eq!(
            shortfall(&dell[0]).as_deref(),
            Some("sr-iov: SriovGlobalEnable is \"Disabled\" (wanted \"Enabled\")")
        );
        assert!(shortfall(&dell[1]).is_some_and(|w| w.contains("no such attribute")));
        let smc = check(&baseline, Some(&bios), Some(true), "supermicro");
        assert_eq!(smc[1].attribute.as_deref(), Some("ProcVirtualization#00A1"));
        assert!(smc[1].meets && smc[3].meets);
        let write = changes(&dell);
        assert_eq!(write.len(), 1, "{write:?}");
        assert_eq!(write["SriovGlobalEnable"], "Enabled");
        let none = check(&baseline, None, None, "dell");
        assert!(none.iter().all(|c| !c.meets));
    }
}
