//! What a BMC offers, found once per BMC and then used by every operation:
//! which system is the host (HGX machines list their GPU baseboard as a
//! second system), which manager, where the virtual-media slots live and
//! how they take an image, which boot targets and reset types the system
//! allows, and the GPUs the BMC sees.

use serde::Serialize;
use serde_json::Value;

use crate::bmc::client::{BmcClient, BmcError};
use crate::bmc::vendor::{Identity, Quirks, identify};

/// How a virtual-media slot takes an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum InsertMethod {
    /// POST `#VirtualMedia.InsertMedia` to this target.
    Action {
        /// The action's target path.
        target: String,
    },
    /// PATCH `Image` and `Inserted` on the slot itself.
    Patch,
}

/// One virtual-media slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MediaSlot {
    /// Its path.
    pub path: String,
    /// `Id`.
    pub id: String,
    /// `MediaTypes` (CD, DVD, USBStick, …).
    pub media_types: Vec<String>,
    /// How an image is inserted.
    pub insert: InsertMethod,
    /// InsertMedia parameters the BMC declares in its ActionInfo, when it
    /// publishes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insert_params: Option<Vec<String>>,
    /// The EjectMedia action's target; `None` means eject by PATCH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eject_target: Option<String>,
    /// What the slot reports now.
    pub state: MediaState,
}

impl MediaSlot {
    /// Whether the slot takes a CD/DVD image (an ISO).
    pub fn takes_cd(&self) -> bool {
        self.media_types.iter().any(|t| t == "CD" || t == "DVD")
    }
}

/// A slot's reported state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MediaState {
    /// `Inserted`.
    pub inserted: bool,
    /// `Image`, when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `ConnectedVia` (`URI`, `Applet`, `NotConnected`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_via: Option<String>,
}

impl MediaState {
    /// Reads the state from a slot's document. A slot counts as holding
    /// media when it says `Inserted`, or — for BMCs that never set that
    /// flag — when it names an image and is connected.
    pub fn of(doc: &Value) -> MediaState {
        let image = doc["Image"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let connected_via = doc["ConnectedVia"].as_str().map(str::to_owned);
        let inserted = match doc["Inserted"].as_bool() {
            Some(flag) => flag,
            None => image.is_some() && connected_via.as_deref() != Some("NotConnected"),
        };
        MediaState {
            inserted,
            image,
            connected_via,
        }
    }
}

/// What a BMC offers, found once.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    /// Which BMC family, model and firmware.
    pub identity: Identity,
    /// The host system's path.
    pub system: String,
    /// Other systems the BMC lists (HGX baseboards).
    pub extra_systems: Vec<String>,
    /// The BMC's own manager.
    pub manager: String,
    /// The host's chassis, when linked.
    pub chassis: Option<String>,
    /// The ComputerSystem.Reset action's target.
    pub reset_target: String,
    /// Allowed `ResetType` values (empty when the BMC does not say).
    pub reset_types: Vec<String>,
    /// Allowed `BootSourceOverrideTarget` values (empty when not said).
    pub boot_targets: Vec<String>,
    /// Allowed `BootSourceOverrideEnabled` values (empty when not said).
    pub boot_enabled: Vec<String>,
    /// The system has `Boot.BootSourceOverrideMode` (UEFI/Legacy).
    pub boot_mode: bool,
    /// The system has `Boot.HttpBootUri` (UEFI HTTP boot from a URI).
    pub http_boot_uri: bool,
    /// Virtual-media slots, those under the system first.
    pub media: Vec<MediaSlot>,
    /// The virtual-media collections the slots come from.
    pub media_collections: Vec<String>,
    /// An OEM action that must enable virtual media before slots appear
    /// (AMI MegaRAC: `#AMIVirtualMedia.EnableRMedia`), when media is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_enable: Option<String>,
}

impl Layout {
    /// The quirks of this BMC.
    pub fn quirks(&self) -> Quirks {
        self.identity.quirks()
    }

    /// The slot an ISO goes into: the first CD/DVD slot, preferring one
    /// already holding media (so a re-insert replaces it).
    pub fn cd_slot(&self) -> Option<&MediaSlot> {
        let cds = || self.media.iter().filter(|s| s.takes_cd());
        cds().find(|s| s.state.inserted).or_else(|| cds().next())
    }
}

/// A GPU as the BMC sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Where the BMC lists it.
    pub path: String,
    /// `Id`.
    pub id: String,
    /// `Model` (or `Name` when the model is not given).
    pub model: String,
    /// `SerialNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// `PartNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
    /// `FirmwareVersion` (VBIOS), where listed with the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// `Status.Health`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// The `@odata.id` of a link object, without a trailing slash.
pub fn link(v: &Value) -> Option<String> {
    v["@odata.id"]
        .as_str()
        .map(|s| s.trim_end_matches('/').to_owned())
        .filter(|s| !s.is_empty())
}

/// The member paths of a collection document, each once (some BMCs list
/// a member twice).
pub fn members(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in doc["Members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(link)
    {
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn opt_text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a system or manager belongs to an HGX baseboard rather than the
/// host (NVIDIA names them `HGX_…`).
fn is_baseboard(path: &str) -> bool {
    last_segment(path).starts_with("HGX_")
}

fn protocol(client: &BmcClient, path: &str, reason: String) -> BmcError {
    BmcError::Protocol {
        node: client.node.clone(),
        path: path.to_owned(),
        reason,
    }
}

/// Picks the host system: the one the inventory names (by `Id` or path),
/// otherwise the first that is not an HGX baseboard.
fn choose_system(
    client: &BmcClient,
    systems: &[String],
    wanted: Option<&str>,
) -> Result<String, BmcError> {
    if let Some(want) = wanted {
        let want = want.trim_end_matches('/');
        return systems
            .iter()
            .find(|p| *p == want || last_segment(p) == want)
            .cloned()
            .ok_or_else(|| {
                protocol(
                    client,
                    "/redfish/v1/Systems",
                    format!(
                        "the inventory names system `{want}`, but the BMC lists only {}",
                        systems.join(", ")
                    ),
                )
            });
    }
    systems
        .iter()
        .find(|p| !is_baseboard(p))
        .or_else(|| systems.first())
        .cloned()
        .ok_or_else(|| {
            protocol(
                client,
                "/redfish/v1/Systems",
                "the BMC lists no systems".into(),
            )
        })
}

/// Reads an action's allowed values for `param`: on the action itself
/// (`PARAM@Redfish.AllowableValues`) or in its ActionInfo.
async fn allowed_values(
    client: &BmcClient,
    action: &Value,
    param: &str,
) -> Result<Vec<String>, BmcError> {
    let inline = strings(&action[format!("{param}@Redfish.AllowableValues")]);
    if !inline.is_empty() {
        return Ok(inline);
    }
    if let Some(info) = action["@Redfish.ActionInfo"].as_str() {
        let info = match client.get(info).await {
            Ok(info) => info,
            // A dangling ActionInfo link says nothing about the values.
            Err(e) if e.is_absent() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if let Some(p) = info["Parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["Name"] == param))
        {
            return Ok(strings(&p["AllowableValues"]));
        }
    }
    Ok(Vec::new())
}

/// What identifies a vendor in a service root or manager: its vendor,
/// product, model and firmware fields and the names of its `Oem` sections
/// (kept without their contents).
fn identity_part(doc: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["Vendor", "Product", "Model", "FirmwareVersion"] {
        if let Some(v) = doc.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(oem) = doc.get("Oem").and_then(Value::as_object) {
        let names = oem.keys().map(|k| (k.clone(), Value::Null)).collect();
        out.insert("Oem".to_owned(), Value::Object(names));
    }
    Value::Object(out)
}

/// Finds the BMC's layout. `wanted_system` is the inventory's `bmc.system`.
///
/// Each document is reduced to what the layout needs before the next
/// request: a parsed document takes about ten times its text in memory,
/// and a site discovers thousands of BMCs at once.
pub async fn discover(client: &BmcClient, wanted_system: Option<&str>) -> Result<Layout, BmcError> {
    let (managers_path, systems_path, root_id) = {
        let root = client.get("/redfish/v1").await?;
        (
            link(&root["Managers"]).unwrap_or("/redfish/v1/Managers".into()),
            link(&root["Systems"]).unwrap_or("/redfish/v1/Systems".into()),
            identity_part(&root),
        )
    };

    let managers = members(&client.get(&managers_path).await?);
    let manager = managers
        .iter()
        .find(|p| !is_baseboard(p))
        .or_else(|| managers.first())
        .cloned()
        .ok_or_else(|| protocol(client, &managers_path, "the BMC lists no managers".into()))?;
    let (identity, manager_media, media_enable) = {
        let manager_doc = client.get(&manager).await?;
        let media_enable = manager_doc["Actions"]["Oem"]["#AMIVirtualMedia.EnableRMedia"]["target"]
            .as_str()
            .filter(|_| {
                manager_doc.pointer("/Oem/Ami/VirtualMedia/RMediaStatus")
                    != Some(&Value::from("Enabled"))
            })
            .map(str::to_owned);
        (
            identify(&root_id, &identity_part(&manager_doc)),
            link(&manager_doc["VirtualMedia"]),
            media_enable,
        )
    };
    drop(root_id);

    let systems = members(&client.get(&systems_path).await?);
    let system = choose_system(client, &systems, wanted_system)?;
    let extra_systems = systems.iter().filter(|p| **p != system).cloned().collect();
    let sys = client.get(&system).await?;

    let reset = sys["Actions"]["#ComputerSystem.Reset"].clone();
    let reset_target = reset["target"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{system}/Actions/ComputerSystem.Reset"));
    let boot = &sys["Boot"];
    let boot_targets = strings(&boot["BootSourceOverrideTarget@Redfish.AllowableValues"]);
    let boot_enabled = strings(&boot["BootSourceOverrideEnabled@Redfish.AllowableValues"]);
    let boot_mode = boot.get("BootSourceOverrideMode").is_some();
    let http_boot_uri = boot.get("HttpBootUri").is_some();
    let chassis = sys["Links"]["Chassis"]
        .as_array()
        .and_then(|a| a.iter().find_map(link));
    // Under the system first: where both exist (newer iDRAC firmware), the
    // system's slots are the ones that boot the host.
    let mut media_collections = Vec::new();
    for collection in [link(&sys["VirtualMedia"]), manager_media]
        .into_iter()
        .flatten()
    {
        if !media_collections.contains(&collection) {
            media_collections.push(collection);
        }
    }
    drop(sys);
    let reset_types = allowed_values(client, &reset, "ResetType").await?;
    drop(reset);
    let media = read_slots(client, &media_collections).await?;

    Ok(Layout {
        identity,
        extra_systems,
        manager,
        chassis,
        reset_target,
        reset_types,
        boot_targets,
        boot_enabled,
        boot_mode,
        http_boot_uri,
        media,
        media_collections,
        media_enable,
        system,
    })
}

/// Reads every slot of the given virtual-media collections.
pub async fn read_slots(
    client: &BmcClient,
    collections: &[String],
) -> Result<Vec<MediaSlot>, BmcError> {
    let mut media: Vec<MediaSlot> = Vec::new();
    for collection in collections {
        // A collection that is not there (licence missing, feature off)
        // means no slots here, not a broken BMC.
        let paths = match get_optional(client, collection).await? {
            Some(list) => members(&list),
            None => continue,
        };
        for path in paths {
            if media.iter().any(|m| m.path == path) {
                continue;
            }
            if let Some(doc) = get_optional(client, &path).await? {
                media.push(read_slot(client, &path, &doc).await?);
            }
        }
    }
    Ok(media)
}

/// Reads one slot: its media types, how it takes an image (action, or
/// PATCH where no InsertMedia action is offered), the parameters its
/// ActionInfo declares, and its state.
pub async fn read_slot(client: &BmcClient, path: &str, doc: &Value) -> Result<MediaSlot, BmcError> {
    let actions = &doc["Actions"];
    let insert_action = &actions["#VirtualMedia.InsertMedia"];
    let insert = match insert_action["target"].as_str() {
        Some(target) => InsertMethod::Action {
            target: target.to_owned(),
        },
        None => InsertMethod::Patch,
    };
    let insert_params = match insert_action["@Redfish.ActionInfo"].as_str() {
        Some(info) => match client.get(info).await {
            Ok(info) => Some(
                info["Parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["Name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Err(e) if e.is_absent() => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    Ok(MediaSlot {
        path: path.to_owned(),
        id: opt_text(&doc["Id"]).unwrap_or_else(|| last_segment(path).to_owned()),
        media_types: strings(&doc["MediaTypes"]),
        insert,
        insert_params,
        eject_target: actions["#VirtualMedia.EjectMedia"]["target"]
            .as_str()
            .map(str::to_owned),
        state: MediaState::of(doc),
    })
}

/// The GPUs the BMC sees: processors of type GPU under the host and any
/// baseboard system; failing that, PCIe devices of the host's chassis that
/// are GPUs (Supermicro lists them only there).
pub async fn gpus(client: &BmcClient, layout: &Layout) -> Result<Vec<Gpu>, BmcError> {
    let mut found = Vec::new();
    for system in std::iter::once(&layout.system).chain(&layout.extra_systems) {
        for_each_member(client, &format!("{system}/Processors"), |path, doc| {
            if doc["ProcessorType"] == "GPU" {
                found.push(gpu_of(path, doc));
            }
        })
        .await?;
    }
    if found.is_empty()
        && let Some(chassis) = &layout.chassis
    {
        for_each_member(client, &format!("{chassis}/PCIeDevices"), |path, doc| {
            if is_gpu_device(doc) {
                found.push(gpu_of(path, doc));
            }
        })
        .await?;
    }
    Ok(found)
}

/// GETs a resource that a BMC may lack: `None` when it answers 404, 405
/// or 501.
async fn get_optional(client: &BmcClient, path: &str) -> Result<Option<Value>, BmcError> {
    match client.get(path).await {
        Ok(doc) => Ok(Some(doc)),
        Err(e) if e.is_absent() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads each member of a collection that exists and hands it to `each`;
/// only one member's document is held at a time.
async fn for_each_member(
    client: &BmcClient,
    collection: &str,
    mut each: impl FnMut(&str, &Value),
) -> Result<(), BmcError> {
    let paths = match get_optional(client, collection).await? {
        Some(list) => members(&list),
        None => return Ok(()),
    };
    for path in paths {
        if let Some(doc) = get_optional(client, &path).await? {
            each(&path, &doc);
        }
    }
    Ok(())
}

/// Whether a PCIe device document describes a GPU.
fn is_gpu_device(doc: &Value) -> bool {
    let id = doc["Id"].as_str().unwrap_or_default();
    doc["DeviceType"] == "GPU"
        || id.to_ascii_uppercase().starts_with("GPU")
        || doc
            .pointer("/Oem/Supermicro/GPUVendor")
            .is_some_and(|v| !v.is_null())
}

fn gpu_of(path: &str, doc: &Value) -> Gpu {
    Gpu {
        path: path.to_owned(),
        id: opt_text(&doc["Id"]).unwrap_or_else(|| last_segment(path).to_owned()),
        model: opt_text(&doc["Model"])
            .or_else(|| opt_text(&doc["Name"]))
            .unwrap_or_default(),
        serial: opt_text(&doc["SerialNumber"]),
        part_number: opt_text(&doc["PartNumber"]),
        firmware: opt_text(&doc["FirmwareVersion"]),
        health: opt_text(&doc["Status"]["Health"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_state_reads_bmcs_that_omit_inserted() {
        let s = MediaState::of(&json!({"Image": "http://x/a.iso", "ConnectedVia": "URI"}));
        assert!(s.inserted);
        let s = MediaState::of(&json!({"Image": "", "ConnectedVia": "NotConnected"}));
        assert!(!s.inserted);
        let s = MediaState::of(&json!({"Image": "http://x/a.iso", "Inserted": false}));
        assert!(!s.inserted);
    }

    #[test]
    fn baseboards_are_not_hosts() {
        assert!(is_baseboard("/redfish/v1/Systems/HGX_Baseboard_0"));
        assert!(!is_baseboard("/redfish/v1/Systems/DGX"));
    }
}
