//! BMC flavours: each is a real vendor's Redfish tree (an embedded mockup
//! from `redfish-mockups/`) plus what the simulator reads from it once —
//! where the system, manager, chassis and virtual media live, how media is
//! inserted, which reset types and boot targets exist — so that every
//! simulated BMC differs from the others exactly where the real ones do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use crate::bmc::discover::strings;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/mockups.rs"));
}

/// The vendors the simulator imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// DMTF's reference mockup (public-rackmount1).
    Generic,
    /// Dell iDRAC9.
    Dell,
    /// HPE iLO 6.
    Hpe,
    /// Supermicro X13.
    Supermicro,
    /// Lenovo XClarity Controller.
    Lenovo,
}

impl Vendor {
    /// Every flavour, generic first.
    pub const ALL: [Vendor; 5] = [
        Vendor::Generic,
        Vendor::Dell,
        Vendor::Hpe,
        Vendor::Supermicro,
        Vendor::Lenovo,
    ];

    /// The name used on the command line and in labels.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Generic => "generic",
            Vendor::Dell => "dell",
            Vendor::Hpe => "hpe",
            Vendor::Supermicro => "supermicro",
            Vendor::Lenovo => "lenovo",
        }
    }

    /// Parses a flavour name.
    pub fn parse(name: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.name() == name)
    }

    fn mockup(self) -> &'static str {
        match self {
            Vendor::Generic => "dmtf-public-rackmount1",
            Vendor::Dell => "dell-idrac9-poweredge-r750",
            Vendor::Hpe => "hpe-ilo6-proliant-dl380a-gen11",
            Vendor::Supermicro => "supermicro-x13-sys-821ge-tnhr",
            Vendor::Lenovo => "lenovo-xcc-thinksystem-sr670v2",
        }
    }
}

/// How a virtual-media slot takes an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertBy {
    /// `POST …/Actions/VirtualMedia.InsertMedia`.
    Action,
    /// `PATCH` of `Image` and `Inserted` on the slot (Lenovo XCC).
    Patch,
}

/// One virtual-media slot.
#[derive(Clone, Debug)]
pub struct MediaSlot {
    /// Its resource path.
    pub path: String,
    /// Whether it takes CD/DVD images.
    pub cd: bool,
    /// How images are inserted.
    pub insert: InsertBy,
    /// Whether an EjectMedia action is declared.
    pub eject_action: bool,
}

/// A flavour, read once per process and shared by all its BMCs.
#[derive(Clone, Debug)]
pub struct Flavour {
    /// Which vendor.
    pub vendor: Vendor,
    /// The static resources, by path (no trailing slash), cleaned of links
    /// to resources the simulator does not serve.
    pub docs: BTreeMap<String, Value>,
    /// The host system.
    pub system: String,
    /// The BMC's manager.
    pub manager: String,
    /// The system's chassis.
    pub chassis: String,
    /// Virtual-media slots.
    pub media: Vec<MediaSlot>,
    /// Reset types the Reset action accepts.
    pub reset_types: Vec<String>,
    /// Allowed `BootSourceOverrideTarget` values.
    pub boot_targets: Vec<String>,
    /// Allowed `BootSourceOverrideEnabled` values.
    pub boot_enabled: Vec<String>,
    /// Whether `Boot.HttpBootUri` exists.
    pub http_boot_uri: bool,
    /// The processors collection GPUs are listed in.
    pub processors: String,
    /// A GPU processor resource to shape generated GPUs on (vendor Oem and all).
    pub gpu_template: Value,
    /// A firmware-inventory entry to shape generated GPU firmware entries on.
    pub firmware_template: Value,
    /// Whether InsertMedia answers 202 with a task monitor.
    pub insert_is_task: bool,
    /// Whether PATCH needs `If-Match` (428 without it).
    pub needs_if_match: bool,
    /// InsertMedia parameters this BMC refuses.
    pub refused_insert_params: &'static [&'static str],
    /// `@odata.type` of sessions and tasks.
    pub session_type: String,
    /// `@odata.type` of tasks.
    pub task_type: String,
    /// The `UpdateService.SimpleUpdate` action target, where the vendor's
    /// own tree declares one.
    pub simple_update: Option<String>,
    /// `MultipartHttpPushUri`, where the vendor's own tree declares one.
    pub multipart_push: Option<String>,
    /// `MaxImageSizeBytes`, where the vendor's own tree states it.
    pub max_image_size: Option<u64>,
}

impl Flavour {
    /// This flavour without `SimpleUpdate` (the `bmc_push_only` fault): the
    /// action leaves UpdateService and its target answers no POST.
    pub fn push_only(&self) -> Flavour {
        let mut f = self.clone();
        f.simple_update = None;
        if let Some(actions) = f
            .docs
            .get_mut("/redfish/v1/UpdateService")
            .and_then(|d| d.get_mut("Actions"))
            .and_then(Value::as_object_mut)
        {
            actions.remove("#UpdateService.SimpleUpdate");
        }
        f
    }
}

/// The flavour for `vendor`, built on first use.
pub fn flavour(vendor: Vendor) -> Arc<Flavour> {
    static CACHE: OnceLock<Vec<Arc<Flavour>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        Vendor::ALL
            .into_iter()
            .map(|v| Arc::new(build(v)))
            .collect()
    });
    let index = Vendor::ALL.iter().position(|v| *v == vendor).unwrap_or(0);
    Arc::clone(&all[index])
}

fn first_member(docs: &BTreeMap<String, Value>, collection: &str) -> String {
    docs.get(collection)
        .and_then(|c| c["Members"].get(0))
        .and_then(|m| m["@odata.id"].as_str())
        .map(|s| s.trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

fn build(vendor: Vendor) -> Flavour {
    let mut docs = BTreeMap::new();
    for (dir, files) in embedded::MOCKUPS {
        if *dir != vendor.mockup() {
            continue;
        }
        for (path, text) in *files {
            if let Ok(doc) = serde_json::from_str::<Value>(text) {
                docs.insert(path.trim_end_matches('/').to_owned(), doc);
            }
        }
    }
    // `excerpt` needs the schemas' Excerpt annotations, which the simulator
    // does not carry: it must not advertise a query it does not implement.
    if let Some(features) = docs
        .get_mut("/redfish/v1")
        .and_then(|r| r.get_mut("ProtocolFeaturesSupported"))
        .and_then(Value::as_object_mut)
        && features.contains_key("ExcerptQuery")
    {
        features.insert("ExcerptQuery".to_owned(), Value::Bool(false));
    }
    let system = first_member(&docs, "/redfish/v1/Systems");
    let manager = first_member(&docs, "/redfish/v1/Managers");
    let chassis = docs
        .get(&system)
        .and_then(|s| s["Links"]["Chassis"].get(0))
        .and_then(|c| c["@odata.id"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| first_member(&docs, "/redfish/v1/Chassis"));
    let processors = format!("{system}/Processors");

    // GPUs are generated per node from its hardware model: take the first
    // real GPU resource as the shape, then drop the mockup's own GPUs.
    let is_gpu = |d: &Value| d["ProcessorType"] == "GPU";
    let gpu_paths: Vec<String> = docs
        .iter()
        .filter(|(p, d)| p.starts_with(&format!("{processors}/")) && is_gpu(d))
        .map(|(p, _)| p.clone())
        .collect();
    let cpu_type = docs
        .iter()
        .find(|(p, d)| p.starts_with(&format!("{processors}/")) && !is_gpu(d))
        .and_then(|(_, d)| d["@odata.type"].as_str())
        .unwrap_or("#Processor.v1_10_0.Processor")
        .to_owned();
    let gpu_template = gpu_paths
        .first()
        .and_then(|p| docs.get(p).cloned())
        .unwrap_or_else(|| {
            json!({
                "@odata.type": cpu_type,
                "ProcessorType": "GPU",
                "ProcessorArchitecture": "OEM",
                "Manufacturer": "NVIDIA Corporation",
                "Status": {"State": "Enabled", "Health": "OK"},
            })
        });
    for p in &gpu_paths {
        docs.remove(p);
    }
    // Sessions and tasks start empty and are kept per BMC.
    docs.retain(|p, _| {
        !p.starts_with("/redfish/v1/SessionService/Sessions/")
            && !p.starts_with("/redfish/v1/TaskService/Tasks/")
    });
    let firmware_template = docs
        .get(&first_member(
            &docs,
            "/redfish/v1/UpdateService/FirmwareInventory",
        ))
        .cloned()
        .unwrap_or_else(|| json!({"@odata.type": "#SoftwareInventory.v1_2_0.SoftwareInventory"}));

    // Reset types: on the action, or in its ActionInfo.
    let reset = docs
        .get(&system)
        .map(|s| s["Actions"]["#ComputerSystem.Reset"].clone())
        .unwrap_or(Value::Null);
    let mut reset_types = strings(&reset["ResetType@Redfish.AllowableValues"]);
    if reset_types.is_empty()
        && let Some(info) = reset["@Redfish.ActionInfo"]
            .as_str()
            .and_then(|p| docs.get(p))
        && let Some(params) = info["Parameters"].as_array()
    {
        for p in params {
            if p["Name"] == "ResetType" {
                reset_types = strings(&p["AllowableValues"]);
            }
        }
    }

    let boot = docs
        .get(&system)
        .map(|s| s["Boot"].clone())
        .unwrap_or(Value::Null);
    let mut boot_targets = strings(&boot["BootSourceOverrideTarget@Redfish.AllowableValues"]);
    let mut boot_enabled = strings(&boot["BootSourceOverrideEnabled@Redfish.AllowableValues"]);
    if boot_enabled.is_empty() {
        boot_enabled = vec!["Disabled".into(), "Once".into(), "Continuous".into()];
    }
    let system_version = docs
        .get(&system)
        .and_then(|s| s["@odata.type"].as_str())
        .and_then(schema_version)
        .unwrap_or((1, 0));
    // HttpBootUri exists from ComputerSystem v1.9.
    let mut http_boot_uri = boot.get("HttpBootUri").is_some();
    if vendor == Vendor::Generic {
        // The reference tree predates UEFI HTTP boot in its allow list; a
        // current generic BMC offers it.
        if !boot_targets.iter().any(|t| t == "UefiHttp") {
            boot_targets.push("UefiHttp".into());
        }
        http_boot_uri = system_version >= (1, 9);
    }

    // Virtual media: under the manager, the system, or both.
    let mut media = Vec::new();
    for owner in [&manager, &system] {
        let collection = format!("{owner}/VirtualMedia");
        let members: Vec<String> = docs
            .get(&collection)
            .map(|c| {
                c["Members"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| {
                                m["@odata.id"]
                                    .as_str()
                                    .map(|s| s.trim_end_matches('/').to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        for path in members {
            let Some(doc) = docs.get(&path) else { continue };
            if media.iter().any(|m: &MediaSlot| m.path == path) {
                continue;
            }
            let types = strings(&doc["MediaTypes"]);
            let actions = &doc["Actions"];
            let insert = if actions.get("#VirtualMedia.InsertMedia").is_some()
                || vendor == Vendor::Generic
            {
                InsertBy::Action
            } else {
                InsertBy::Patch
            };
            media.push(MediaSlot {
                cd: types.iter().any(|t| t == "CD" || t == "DVD"),
                eject_action: actions.get("#VirtualMedia.EjectMedia").is_some()
                    || vendor == Vendor::Generic,
                insert,
                path,
            });
        }
    }
    if vendor == Vendor::Generic {
        // The reference tree lists no actions on its slots; a generic BMC
        // has them, so the simulator declares them.
        for slot in &media {
            if let Some(doc) = docs.get_mut(&slot.path) {
                doc["Actions"] = json!({
                    "#VirtualMedia.InsertMedia": {"target": format!("{}/Actions/VirtualMedia.InsertMedia", slot.path)},
                    "#VirtualMedia.EjectMedia": {"target": format!("{}/Actions/VirtualMedia.EjectMedia", slot.path)},
                });
            }
        }
    }

    let (insert_is_task, needs_if_match, refused_insert_params): (
        bool,
        bool,
        &'static [&'static str],
    ) = match vendor {
        Vendor::Generic => (true, false, &[]),
        // iDRAC refuses the optional InsertMedia parameters.
        Vendor::Dell => (false, false, &["Inserted", "WriteProtected"]),
        Vendor::Hpe => (false, false, &["TransferProtocolType", "TransferMethod"]),
        Vendor::Supermicro => (true, true, &[]),
        Vendor::Lenovo => (false, false, &[]),
    };

    // Update methods follow the real tree: SimpleUpdate only where declared.
    let simple_update = docs
        .get("/redfish/v1/UpdateService")
        .and_then(|d| d["Actions"]["#UpdateService.SimpleUpdate"]["target"].as_str())
        .map(|t| t.trim_end_matches('/').to_owned());
    let service = docs.get("/redfish/v1/UpdateService");
    let multipart_push = service
        .and_then(|d| d["MultipartHttpPushUri"].as_str())
        .map(|t| t.trim_end_matches('/').to_owned());
    let max_image_size = service.and_then(|d| d["MaxImageSizeBytes"].as_u64());
    let mut flavour = Flavour {
        vendor,
        docs,
        system,
        manager,
        chassis,
        media,
        reset_types,
        boot_targets,
        boot_enabled,
        http_boot_uri,
        processors,
        gpu_template,
        firmware_template,
        insert_is_task,
        needs_if_match,
        refused_insert_params,
        session_type: "#Session.v1_0_0.Session".into(),
        task_type: "#Task.v1_4_3.Task".into(),
        simple_update,
        multipart_push,
        max_image_size,
    };
    prune_dangling(&mut flavour);
    flavour
}

/// `(major, minor)` of a `#Name.v1_2_3.Name` type.
pub fn schema_version(odata_type: &str) -> Option<(u32, u32)> {
    let v = odata_type.split('.').nth(1)?.strip_prefix('v')?;
    let mut parts = v.split('_');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Paths the simulator generates per node, beyond the static tree.
pub fn generated_paths(f: &Flavour) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(format!("{}/Power", f.chassis));
    out.insert(format!("{}/Thermal", f.chassis));
    out.insert("/redfish/v1/$metadata".into());
    out.insert("/redfish/v1/odata".into());
    // A settings object the mockup links but did not crawl (bios.rs serves it).
    out.extend(super::bios::settings_path(f));
    out
}

/// Removes navigation links to resources the simulator does not serve (the
/// mockups are trimmed crawls), so a client or validator following links
/// never meets a 404 the real BMC would not give. Collections keep only the
/// members that exist.
fn prune_dangling(f: &mut Flavour) {
    let mut served: BTreeSet<String> = f.docs.keys().cloned().collect();
    served.extend(generated_paths(f));
    // Dynamic members: GPU processors, sessions, tasks, GPU firmware.
    let gpus = format!("{}/GPU", f.processors);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // The upload endpoint takes POSTs only; it is served all the same.
    let push = f.multipart_push.clone();
    let keep = |target: &str| {
        let path = target
            .split('#')
            .next()
            .unwrap_or(target)
            .trim_end_matches('/');
        served.contains(path)
            || push.as_deref() == Some(path)
            || path.strip_prefix(gpus.as_str()).is_some_and(digits)
            || path
                .strip_prefix("/redfish/v1/UpdateService/FirmwareInventory/GPU")
                .and_then(|r| r.strip_suffix("_VBIOS"))
                .is_some_and(digits)
            || path.starts_with("/redfish/v1/SessionService/Sessions/")
            || path.starts_with("/redfish/v1/TaskService/Tasks/")
    };
    for doc in f.docs.values_mut() {
        prune_value(doc, &keep);
    }
}

fn is_link(v: &Value) -> Option<&str> {
    let obj = v.as_object()?;
    if obj.len() == 1 {
        obj.get("@odata.id")?.as_str()
    } else {
        None
    }
}

fn prune_value(v: &mut Value, keep: &dyn Fn(&str) -> bool) {
    match v {
        Value::Object(map) => {
            // Mockup-only annotations, links to resources not served, and
            // URI-valued properties (`DataSourceUri`, `@Redfish.ActionInfo`)
            // pointing at them.
            let dead: Vec<String> = map
                .iter()
                .filter(|(k, v)| {
                    k.as_str() == "@Redfish.Copyright"
                        || (k.as_str() != "@odata.id" && is_link(v).is_some_and(|t| !keep(t)))
                        || ((k.ends_with("Uri") || k.as_str() == "@Redfish.ActionInfo")
                            && v.as_str()
                                .is_some_and(|t| t.starts_with("/redfish/v1") && !keep(t)))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in dead {
                map.remove(&k);
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let mut count = None;
                if let Some(Value::Array(items)) = map.get_mut(&k) {
                    let before = items.len();
                    items.retain(|item| is_link(item).is_none_or(keep));
                    if items.len() != before {
                        count = Some(items.len());
                    }
                }
                if let Some(n) = count {
                    let count_key = format!("{k}@odata.count");
                    if map.contains_key(&count_key) {
                        map.insert(count_key, json!(n));
                    }
                }
                if let Some(child) = map.get_mut(&k) {
                    prune_value(child, keep);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                prune_value(item, keep);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flavour_finds_its_system_manager_media_and_resets() {
        for v in Vendor::ALL {
            let f = flavour(v);
            assert!(f.docs.contains_key("/redfish/v1"), "{v:?}");
            assert!(f.docs.contains_key(&f.system), "{v:?} {}", f.system);
            assert!(f.docs.contains_key(&f.manager), "{v:?} {}", f.manager);
            assert!(f.media.iter().any(|m| m.cd), "{v:?} has no CD slot");
            assert!(f.reset_types.iter().any(|r| r == "ForceOff"), "{v:?}");
            assert!(f.boot_targets.iter().any(|t| t == "Cd"), "{v:?}");
        }
    }

    #[test]
    fn vendors_differ_where_real_ones_do() {
        assert!(
            flavour(Vendor::Lenovo)
                .media
                .iter()
                .all(|m| m.insert == InsertBy::Patch)
        );
        assert!(
            flavour(Vendor::Dell)
                .media
                .iter()
                .all(|m| m.insert == InsertBy::Action)
        );
        assert!(
            !flavour(Vendor::Lenovo)
                .boot_targets
                .iter()
                .any(|t| t == "UefiHttp")
        );
        assert!(
            flavour(Vendor::Supermicro)
                .reset_types
                .iter()
                .any(|t| t == "ForceOn")
        );
        assert_eq!(flavour(Vendor::Lenovo).boot_enabled, ["Once", "Disabled"]);
    }
}
