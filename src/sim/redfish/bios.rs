//! BIOS settings on a simulated BMC: a PATCH of `{"Attributes": {...}}` to
//! the Bios resource's `@Redfish.Settings.SettingsObject` makes values
//! pending; the next system reset moves them into the Bios resource, as a
//! real host does when it runs BIOS setup on the way up. The
//! `bmc_bios_ignore` fault names an attribute that is accepted but never
//! applied.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::flavour::Flavour;
use super::{Bmc, Reply, empty, error, etag};

/// One BMC's BIOS values: applied by a reset, and pending for the next.
#[derive(Clone, Debug, Default)]
pub struct BiosState {
    /// Values applied at a reset, over the mockup's `Attributes`.
    pub applied: BTreeMap<String, Value>,
    /// Values accepted by PATCH, waiting for the next system reset.
    pub pending: BTreeMap<String, Value>,
}

impl BiosState {
    /// Applies pending values, except `ignored` (dropped silently).
    pub fn apply_pending(&mut self, ignored: Option<&str>) {
        for (name, value) in std::mem::take(&mut self.pending) {
            if Some(name.as_str()) != ignored {
                self.applied.insert(name, value);
            }
        }
    }
}

/// The system's Bios resource path, when the flavour's tree has one.
pub fn bios_path(f: &Flavour) -> Option<String> {
    let path = format!("{}/Bios", f.system);
    f.docs.contains_key(&path).then_some(path)
}

/// The Bios resource's settings object path (`@Redfish.Settings`).
pub fn settings_path(f: &Flavour) -> Option<String> {
    let bios = f.docs.get(&bios_path(f)?)?;
    bios.pointer("/@Redfish.Settings/SettingsObject/@odata.id")
        .and_then(Value::as_str)
        .map(|p| p.trim_end_matches('/').to_owned())
}

/// The Bios resource or its settings object as this BMC shows them.
pub fn render(f: &Flavour, st: &BiosState, path: &str) -> Option<Value> {
    let bios = bios_path(f)?;
    if path == bios {
        let mut doc = f.docs.get(&bios)?.clone();
        if let Some(attrs) = doc["Attributes"].as_object_mut() {
            for (k, v) in &st.applied {
                attrs.insert(k.clone(), v.clone());
            }
        }
        return Some(doc);
    }
    if Some(path) == settings_path(f).as_deref() {
        let mut doc = f.docs.get(path).cloned().unwrap_or_else(|| {
            json!({
                "@odata.id": path,
                "@odata.type": "#Bios.v1_1_0.Bios",
                "Id": path.rsplit('/').next().unwrap_or("Settings"),
                "Name": "BIOS pending settings",
            })
        });
        if let Some(obj) = doc.as_object_mut() {
            // The mockup's own tag would not change with the pending set.
            obj.remove("@odata.etag");
        }
        doc["Attributes"] = json!(st.pending);
        return Some(doc);
    }
    None
}

impl Bmc {
    /// Whether `path` is this BMC's BIOS settings object.
    pub(super) fn is_bios_settings(&self, path: &str) -> bool {
        settings_path(&self.flavour).as_deref() == Some(path)
    }

    /// `PATCH` of the BIOS settings object: names checked against the
    /// Bios resource's attributes, values made pending.
    pub(super) fn patch_bios(
        &self,
        current: &Value,
        body: &Value,
        if_match: Option<&str>,
    ) -> Reply {
        if let Some(tag) = if_match
            && tag != "*"
            && tag != etag(current)
        {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "ETag does not match",
            );
        }
        let Some(changes) = body["Attributes"].as_object() else {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyMissing",
                "Attributes is required",
            );
        };
        let known = bios_path(&self.flavour)
            .and_then(|p| self.flavour.docs.get(&p))
            .and_then(|d| d["Attributes"].as_object().cloned())
            .unwrap_or_default();
        if let Some(name) = changes.keys().find(|k| !known.contains_key(*k)) {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyUnknown",
                &format!("the BIOS has no attribute {name}"),
            );
        }
        let mut bmc = self.bmc_state();
        for (k, v) in changes {
            bmc.bios.pending.insert(k.clone(), v.clone());
        }
        empty(StatusCode::NO_CONTENT)
    }
}

#[cfg(test)]
mod tests {
    use super::super::flavour::{Vendor, flavour};
    use super::*;

    #[test]
    fn pending_values_apply_at_reset_except_the_ignored_one() {
        let mut st = BiosState::default();
        st.pending.insert("BootMode".into(), json!("Uefi"));
        st.pending.insert("ProcTurboMode".into(), json!("Disabled"));
        st.apply_pending(Some("ProcTurboMode"));
        assert_eq!(st.applied["BootMode"], "Uefi");
        assert!(!st.applied.contains_key("ProcTurboMode"));
        assert!(st.pending.is_empty());
    }

    #[test]
    fn settings_objects_keep_the_flavour_paths() {
        let dell = flavour(Vendor::Dell);
        let dell_settings = settings_path(&dell).unwrap();
        assert!(dell_settings.ends_with("/Bios/Settings"), "{dell_settings}");
        for v in Vendor::ALL {
            let f = flavour(v);
            if let Some(s) = settings_path(&f) {
                let mut st = BiosState::default();
                st.pending.insert("X".into(), json!(1));
                let doc = render(&f, &st, &s).unwrap();
                assert_eq!(doc["Attributes"]["X"], 1, "{v:?}");
            }
        }
    }

    #[test]
    fn settings_objects_the_mockup_did_not_crawl_stay_linked() {
        // Supermicro's `Bios/SD` and Lenovo's `Bios/Pending` are served here,
        // so pruning dangling links must keep them.
        for v in [
            Vendor::Generic,
            Vendor::Dell,
            Vendor::Supermicro,
            Vendor::Lenovo,
        ] {
            assert!(settings_path(&flavour(v)).is_some(), "{v:?}");
        }
        // HPE's mockup has no Bios resource at all.
        assert!(bios_path(&flavour(Vendor::Hpe)).is_none());
    }

    #[test]
    fn the_bios_resource_shows_applied_values() {
        let f = flavour(Vendor::Dell);
        let bios = bios_path(&f).unwrap();
        let name = f.docs[&bios]["Attributes"]
            .as_object()
            .and_then(|a| a.keys().next().cloned())
            .unwrap();
        let mut st = BiosState::default();
        st.applied.insert(name.clone(), json!("changed"));
        assert_eq!(
            render(&f, &st, &bios).unwrap()["Attributes"][&name],
            "changed"
        );
    }
}
