//! The service documents a Redfish service must serve besides its
//! resources: `/redfish/v1/$metadata` (CSDL references to every schema
//! namespace the service uses) and `/redfish/v1/odata` (the OData service
//! document). Both are generated from the flavour's tree, because the
//! mockups it comes from did not keep them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::sim::redfish::flavour::Flavour;

/// Types the simulator generates besides the flavour's own.
const GENERATED: [&str; 10] = [
    "#Power.v1_5_0.Power",
    "#PCIeDevice.v1_9_0.PCIeDevice",
    "#PCIeDeviceCollection.PCIeDeviceCollection",
    "#PCIeFunction.v1_5_0.PCIeFunction",
    "#PCIeFunctionCollection.PCIeFunctionCollection",
    "#Thermal.v1_4_0.Thermal",
    "#Session.v1_0_0.Session",
    "#Task.v1_4_3.Task",
    "#SessionCollection.SessionCollection",
    "#TaskCollection.TaskCollection",
];

fn collect(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "Oem" {
                    // Vendor namespaces live in vendor schema files, not
                    // DMTF's; the service references only DMTF schemas.
                    continue;
                }
                if k == "@odata.type" {
                    if let Some(t) = v.as_str() {
                        out.insert(t.to_owned());
                    }
                } else {
                    collect(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        _ => {}
    }
}

/// The `$metadata` document for a flavour.
pub fn metadata(f: &Flavour) -> String {
    let mut types = BTreeSet::new();
    for doc in f.docs.values() {
        collect(doc, &mut types);
    }
    collect(&f.gpu_template, &mut types);
    types.extend(GENERATED.iter().map(|t| (*t).to_owned()));
    // Schema file → namespaces it defines that the service uses.
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in &types {
        let t = t.trim_start_matches('#');
        let mut parts: Vec<&str> = t.split('.').collect();
        if parts.len() < 2 {
            continue;
        }
        parts.pop(); // the type name
        let base = parts[0].to_owned();
        let entry = files.entry(base.clone()).or_default();
        entry.insert(base);
        if parts.len() > 1 {
            entry.insert(parts.join("."));
        }
    }
    let root_type = f
        .docs
        .get("/redfish/v1")
        .and_then(|d| d["@odata.type"].as_str())
        .unwrap_or("#ServiceRoot.v1_5_0.ServiceRoot")
        .trim_start_matches('#')
        .to_owned();
    let root_ns = root_type
        .rsplit_once('.')
        .map_or("ServiceRoot.v1_5_0", |(ns, _)| ns);
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    for (file, namespaces) in &files {
        out.push_str(&format!(
            "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/{file}_v1.xml\">\n"
        ));
        for ns in namespaces {
            out.push_str(&format!("    <edmx:Include Namespace=\"{ns}\"/>\n"));
        }
        out.push_str("  </edmx:Reference>\n");
    }
    out.push_str("  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/RedfishExtensions_v1.xml\">\n    <edmx:Include Namespace=\"RedfishExtensions.v1_0_0\" Alias=\"Redfish\"/>\n  </edmx:Reference>\n");
    out.push_str(&format!(
        "  <edmx:DataServices>\n    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n      <EntityContainer Name=\"Service\" Extends=\"{root_ns}.ServiceContainer\"/>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n"
    ));
    out
}

/// The OData service document: the service root's top-level links.
pub fn odata(f: &Flavour) -> Value {
    let mut values = vec![json!({"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"})];
    if let Some(Value::Object(root)) = f.docs.get("/redfish/v1") {
        for (name, v) in root {
            if let Some(url) = v.get("@odata.id").and_then(Value::as_str)
                && v.as_object().is_some_and(|o| o.len() == 1)
            {
                values.push(json!({"name": name, "kind": "Singleton", "url": url}));
            }
        }
    }
    json!({"@odata.context": "/redfish/v1/$metadata", "value": values})
}
