//! What a BMC offers, found once per BMC and then used by every operation:
//! which system is the host, which manager and chassis are its own, where
//! the virtual-media slots live and how they take an image, which boot
//! targets and reset types the system allows, and the GPUs the BMC sees.
//!
//! Everything is decided by links and types, in this order:
//!
//! - **Host system**: the one the inventory's `bmc.system` names (by `Id`
//!   or path); otherwise the first system that is not an HGX baseboard
//!   (`HGX_…`, NVIDIA's GPU board listed as a second system). Other
//!   non-baseboard systems are other hosts (a sled's other nodes, a
//!   blade enclosure's blades): kept in [`Layout::other_hosts`], never
//!   searched for GPUs, and preflight refuses to guess among them.
//! - **Baseboards**: `HGX_…` systems belong to the host only when the BMC
//!   serves a single host; with several hosts nothing links a baseboard to
//!   its host, so none is counted.
//! - **Manager**: the host system's `Links.ManagedBy` (when it lists
//!   several, the one whose `ManagerType` is `BMC`); without that link,
//!   the first manager of type `BMC` in the Managers collection, else the
//!   first that is not a baseboard's. Vendor, model and firmware are read
//!   from it, never from an auxiliary or enclosure controller listed first.
//! - **Chassis**: the host system's `Links.Chassis`; without it, the
//!   chassis whose `Links.ComputerSystems` names the host; failing that,
//!   the only chassis when there is one. Sensors then also climb
//!   `Links.ContainedBy` when the node's own chassis has no readings
//!   ([`crate::bmc::facts::sensors`]).
//! - **GPUs** ([`gpus`]): processors of `ProcessorType: GPU` under the host
//!   and its baseboards; failing that, PCIe devices of the host system
//!   (`PCIeDevices`) and of its chassis (unless that chassis also holds
//!   other hosts) that are GPUs by their functions' class
//!   (`DisplayController`, `ProcessingAccelerators`, or class code
//!   `0x03…`/`0x12…`) and vendor id (NVIDIA `0x10DE`, AMD `0x1002`), or
//!   that name themselves GPUs (`Id` `GPU…`, Supermicro's `GPUVendor`).
//! - **Collections** are read whole: `Members@odata.nextLink` is followed
//!   page by page, up to [`MAX_PAGES`] pages and [`MAX_MEMBERS`] members.

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
    /// The InsertMedia ActionInfo link, read for [`MediaSlot::insert_params`]
    /// only when the slot is used ([`insert_params`]).
    #[serde(skip)]
    pub insert_info: Option<String>,
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
    /// Every other system the BMC lists (baseboards and other hosts).
    pub extra_systems: Vec<String>,
    /// The host's own GPU baseboards (`HGX_…` systems), searched for GPUs.
    pub baseboards: Vec<String>,
    /// Other host systems the same BMC serves (a sled's other nodes):
    /// never searched for GPUs.
    pub other_hosts: Vec<String>,
    /// The host's manager (its `ManagedBy`, or the BMC-type manager).
    pub manager: String,
    /// The host's chassis, found by links (see the module docs).
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
    /// Whether [`Layout::media`] has been read ([`read_media`]): discovery
    /// alone leaves the slots unread, as only imaging needs them.
    #[serde(skip)]
    pub media_read: bool,
    /// The UpdateService the service root links, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_service: Option<String>,
    /// The query that reads a collection with its members in one request
    /// (`$expand=.($levels=1)`), when the service root advertises one and
    /// the vendor's is trusted; `None` reads member by member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expand: Option<String>,
    /// The host as the system document described it at discovery (its
    /// power state may have changed since).
    #[serde(skip)]
    pub host: crate::bmc::facts::Host,
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
    /// `Name`, when it says more than the model (HPE gives a part number
    /// as `Model` and the product as `Name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who made it: `Manufacturer`, or the PCI vendor its function names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
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

/// The most pages of one collection kiln reads (a BMC whose next links
/// loop or never end must not hold a node forever).
pub const MAX_PAGES: usize = 64;

/// The most members kiln reads from one collection.
pub const MAX_MEMBERS: usize = 10_000;

/// The path of a collection page's `Members@odata.nextLink`: absolute,
/// relative to the collection (`?$skip=50`), or a full URL on the BMC.
fn next_link(doc: &Value, collection: &str) -> Option<String> {
    let next = doc["Members@odata.nextLink"].as_str()?.trim();
    if next.is_empty() {
        return None;
    }
    if next.starts_with('/') {
        return Some(next.to_owned());
    }
    if next.starts_with('?') {
        let base = collection.split('?').next().unwrap_or(collection);
        return Some(format!("{base}{next}"));
    }
    let rest = next
        .strip_prefix("https://")
        .or_else(|| next.strip_prefix("http://"))?;
    rest.find('/').map(|i| rest[i..].to_owned())
}

/// The member paths of the collection at `path`, every page of it
/// (`Members@odata.nextLink` followed, bounded by [`MAX_PAGES`] and
/// [`MAX_MEMBERS`]), each once. `None` when the collection is not there
/// (404, 405, 501); a next page that is not there ends the listing.
pub async fn collection(client: &BmcClient, path: &str) -> Result<Option<Vec<String>>, BmcError> {
    let Some(first) = get_optional(client, path).await? else {
        return Ok(None);
    };
    let mut out = members(&first);
    let mut have: std::collections::HashSet<String> = out.iter().cloned().collect();
    let mut next = next_link(&first, path);
    drop(first);
    let mut seen = std::collections::HashSet::new();
    seen.insert(path.to_owned());
    let mut pages = 1;
    while let Some(page_path) = next.take() {
        if pages >= MAX_PAGES || out.len() >= MAX_MEMBERS || !seen.insert(page_path.clone()) {
            tracing::warn!(
                node = %client.node,
                collection = path,
                pages,
                members = out.len(),
                "stopped following Members@odata.nextLink"
            );
            break;
        }
        let Some(page) = get_optional(client, &page_path).await? else {
            break;
        };
        pages += 1;
        for m in members(&page) {
            if have.insert(m.clone()) {
                out.push(m);
            }
        }
        next = next_link(&page, path);
    }
    out.truncate(MAX_MEMBERS);
    Ok(Some(out))
}

/// Links from an array of link objects (`Links.Chassis`), or from a
/// single one.
fn links(v: &Value) -> Vec<String> {
    match v.as_array() {
        Some(a) => a.iter().filter_map(link).collect(),
        None => link(v).into_iter().collect(),
    }
}

/// The strings of a JSON array (empty when it is not one).
pub fn strings(v: &Value) -> Vec<String> {
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

/// Picks the host's manager: the system's `ManagedBy` (the one of type
/// `BMC` when it lists several), else the first manager of type `BMC` in
/// the Managers collection, else the first that is not a baseboard's.
/// Returns its path and document.
async fn choose_manager(
    client: &BmcClient,
    managed_by: &[String],
    managers_path: &str,
) -> Result<(String, Value), BmcError> {
    if let Some(found) = pick_manager(client, managed_by).await? {
        return Ok(found);
    }
    let listed = collection(client, managers_path).await?.unwrap_or_default();
    pick_manager(client, &listed)
        .await?
        .ok_or_else(|| protocol(client, managers_path, "the BMC lists no managers".into()))
}

/// The manager among `candidates`: the only one, else the first of type
/// `BMC`, else the first that answers; baseboards' managers last.
async fn pick_manager(
    client: &BmcClient,
    candidates: &[String],
) -> Result<Option<(String, Value)>, BmcError> {
    let mut ordered: Vec<&String> = candidates.iter().filter(|p| !is_baseboard(p)).collect();
    ordered.extend(candidates.iter().filter(|p| is_baseboard(p)));
    let mut fallback: Option<(String, Value)> = None;
    // A few are enough: BMCs list their own first or second.
    for path in ordered.into_iter().take(8) {
        let Some(doc) = get_optional(client, path).await? else {
            continue;
        };
        if candidates.len() == 1 || doc["ManagerType"] == "BMC" {
            return Ok(Some((path.clone(), doc)));
        }
        if fallback.is_none() {
            fallback = Some((path.clone(), doc));
        }
    }
    Ok(fallback)
}

/// Finds the host's chassis when its system links none: the chassis whose
/// `Links.ComputerSystems` names it, else the only chassis there is.
async fn chassis_of(
    client: &BmcClient,
    chassis_path: &str,
    system: &str,
) -> Result<Option<String>, BmcError> {
    let all = collection(client, chassis_path).await?.unwrap_or_default();
    for path in all.iter().take(64) {
        let Some(doc) = get_optional(client, path).await? else {
            continue;
        };
        if links(&doc["Links"]["ComputerSystems"])
            .iter()
            .any(|s| s == system)
        {
            return Ok(Some(path.clone()));
        }
    }
    Ok(match all.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    })
}

/// The query that expands a collection's members one level, from the
/// service root's `ProtocolFeaturesSupported.ExpandQuery`: `.` (members,
/// not links) with `($levels=1)` where levels are offered. `None` where
/// the BMC does not advertise `.`.
pub fn expand_query(root: &Value) -> Option<String> {
    let ex = &root["ProtocolFeaturesSupported"]["ExpandQuery"];
    if ex["NoLinks"] != true {
        return None;
    }
    if ex["Levels"] == true && ex["MaxLevels"].as_u64().unwrap_or(0) >= 1 {
        Some("$expand=.($levels=1)".to_owned())
    } else {
        Some("$expand=.".to_owned())
    }
}

/// Finds the BMC's layout with its virtual-media slots read: discovery
/// ([`discover_bmc`]) then [`read_media`].
pub async fn discover(client: &BmcClient, wanted_system: Option<&str>) -> Result<Layout, BmcError> {
    let mut layout = discover_bmc(client, wanted_system).await?;
    read_media(client, &mut layout).await?;
    Ok(layout)
}

/// Reads the layout's virtual-media slots, once (a layout whose slots
/// were read is left alone).
pub async fn read_media(client: &BmcClient, layout: &mut Layout) -> Result<(), BmcError> {
    if !layout.media_read {
        layout.media = read_slots(client, layout, &layout.media_collections.clone()).await?;
        layout.media_read = true;
    }
    Ok(())
}

/// Finds the BMC's layout, virtual-media slots left unread (see
/// [`read_media`]). `wanted_system` is the inventory's `bmc.system`.
///
/// Four requests on a plain BMC: the service root, Systems, the host
/// system and its manager. The system document's host summary is kept
/// ([`Layout::host`]) so preflight need not read it again.
///
/// Each document is reduced to what the layout needs before the next
/// request: a parsed document takes about ten times its text in memory,
/// and a site discovers thousands of BMCs at once.
pub async fn discover_bmc(
    client: &BmcClient,
    wanted_system: Option<&str>,
) -> Result<Layout, BmcError> {
    let (managers_path, systems_path, chassis_path, root_id, update_service, expand) = {
        let root = client.get("/redfish/v1").await?;
        (
            link(&root["Managers"]).unwrap_or("/redfish/v1/Managers".into()),
            link(&root["Systems"]).unwrap_or("/redfish/v1/Systems".into()),
            link(&root["Chassis"]).unwrap_or("/redfish/v1/Chassis".into()),
            identity_part(&root),
            link(&root["UpdateService"]),
            expand_query(&root),
        )
    };

    let systems = collection(client, &systems_path).await?.unwrap_or_default();
    let system = choose_system(client, &systems, wanted_system)?;
    let extra_systems: Vec<String> = systems.iter().filter(|p| **p != system).cloned().collect();
    let other_hosts: Vec<String> = extra_systems
        .iter()
        .filter(|p| !is_baseboard(p))
        .cloned()
        .collect();
    // Nothing links a baseboard to its host: only a BMC serving one host
    // lets kiln say whose it is.
    let baseboards: Vec<String> = if other_hosts.is_empty() {
        extra_systems
            .iter()
            .filter(|p| is_baseboard(p))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    drop(systems);
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
    let linked_chassis = links(&sys["Links"]["Chassis"]);
    let linked_chassis = linked_chassis
        .iter()
        .find(|c| !is_baseboard(c))
        .or_else(|| linked_chassis.first())
        .cloned();
    let managed_by = links(&sys["Links"]["ManagedBy"]);
    let system_media = link(&sys["VirtualMedia"]);
    let host = crate::bmc::facts::host_of(&sys);
    drop(sys);

    let (manager, identity, manager_media, media_enable) = {
        let (manager, manager_doc) = choose_manager(client, &managed_by, &managers_path).await?;
        let media_enable = manager_doc["Actions"]["Oem"]["#AMIVirtualMedia.EnableRMedia"]["target"]
            .as_str()
            .filter(|_| {
                manager_doc.pointer("/Oem/Ami/VirtualMedia/RMediaStatus")
                    != Some(&Value::from("Enabled"))
            })
            .map(str::to_owned);
        (
            manager,
            identify(&root_id, &identity_part(&manager_doc)),
            link(&manager_doc["VirtualMedia"]),
            media_enable,
        )
    };
    drop(root_id);

    let chassis = match linked_chassis {
        Some(c) => Some(c),
        None => chassis_of(client, &chassis_path, &system).await?,
    };
    // Under the system first: where both exist (newer iDRAC firmware), the
    // system's slots are the ones that boot the host.
    let mut media_collections = Vec::new();
    for collection in [system_media, manager_media].into_iter().flatten() {
        if !media_collections.contains(&collection) {
            media_collections.push(collection);
        }
    }
    let reset_types = allowed_values(client, &reset, "ResetType").await?;
    drop(reset);
    let expand = expand.filter(|_| !identity.quirks().expand_broken);

    Ok(Layout {
        identity,
        extra_systems,
        baseboards,
        other_hosts,
        manager,
        chassis,
        reset_target,
        reset_types,
        boot_targets,
        boot_enabled,
        boot_mode,
        http_boot_uri,
        media: Vec::new(),
        media_collections,
        media_enable,
        media_read: false,
        update_service,
        expand,
        host,
        system,
    })
}

/// Reads every slot of the given virtual-media collections (each in one
/// request where the layout's BMC expands collections).
pub async fn read_slots(
    client: &BmcClient,
    layout: &Layout,
    collections: &[String],
) -> Result<Vec<MediaSlot>, BmcError> {
    let mut docs: Vec<(String, Value)> = Vec::new();
    for collection in collections {
        // A collection that is not there (licence missing, feature off)
        // means no slots here, not a broken BMC.
        for_each_member(client, layout.expand.as_deref(), collection, |path, doc| {
            if !docs.iter().any(|(p, _)| p == path) {
                docs.push((path.to_owned(), doc.clone()));
            }
        })
        .await?;
    }
    // Insert parameters are read when a slot is used (`read_slot`).
    Ok(docs
        .iter()
        .map(|(path, doc)| slot_of(path, doc, None))
        .collect())
}

/// Reads one slot: its media types, how it takes an image (action, or
/// PATCH where no InsertMedia action is offered), the parameters its
/// ActionInfo declares, and its state.
pub async fn read_slot(client: &BmcClient, path: &str, doc: &Value) -> Result<MediaSlot, BmcError> {
    insert_params(client, slot_of(path, doc, None)).await
}

/// The slot with the InsertMedia parameters its ActionInfo declares
/// read, when it links one and they are not read yet.
pub async fn insert_params(client: &BmcClient, mut slot: MediaSlot) -> Result<MediaSlot, BmcError> {
    if slot.insert_params.is_some() {
        return Ok(slot);
    }
    slot.insert_params = match slot.insert_info.as_deref() {
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
    Ok(slot)
}

/// A slot as its document describes it, with the insert parameters read
/// from its ActionInfo (`None`: not read, or none published).
pub fn slot_of(path: &str, doc: &Value, insert_params: Option<Vec<String>>) -> MediaSlot {
    let actions = &doc["Actions"];
    let insert = match actions["#VirtualMedia.InsertMedia"]["target"].as_str() {
        Some(target) => InsertMethod::Action {
            target: target.to_owned(),
        },
        None => InsertMethod::Patch,
    };
    MediaSlot {
        path: path.to_owned(),
        id: opt_text(&doc["Id"]).unwrap_or_else(|| last_segment(path).to_owned()),
        media_types: strings(&doc["MediaTypes"]),
        insert,
        insert_params,
        eject_target: actions["#VirtualMedia.EjectMedia"]["target"]
            .as_str()
            .map(str::to_owned),
        insert_info: actions["#VirtualMedia.InsertMedia"]["@Redfish.ActionInfo"]
            .as_str()
            .map(str::to_owned),
        state: MediaState::of(doc),
    }
}

/// The GPUs the BMC sees (the rules are in the module docs): processors
/// of type GPU under the host and its own baseboards; failing that, GPUs
/// among the PCIe devices of the host system and of its chassis.
pub async fn gpus(client: &BmcClient, layout: &Layout) -> Result<Vec<Gpu>, BmcError> {
    let mut found = Vec::new();
    for system in std::iter::once(&layout.system).chain(&layout.baseboards) {
        let processors = format!("{system}/Processors");
        for_each_member(
            client,
            layout.expand.as_deref(),
            &processors,
            |path, doc| {
                if doc["ProcessorType"] == "GPU" {
                    found.push(gpu_of(path, doc, None));
                }
            },
        )
        .await?;
    }
    if found.is_empty() {
        for device in pcie_devices(client, layout).await? {
            if let Some(doc) = get_optional(client, &device).await? {
                found.extend(pcie_gpus(client, &device, &doc).await?);
            }
        }
    }
    Ok(found)
}

/// The PCIe devices that belong to the host: the system's `PCIeDevices`
/// (a collection, or an array of links on older BMCs), then its
/// chassis's, unless that chassis also holds other hosts (a sled's shared
/// chassis: nothing says whose a device is).
async fn pcie_devices(client: &BmcClient, layout: &Layout) -> Result<Vec<String>, BmcError> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |paths: Vec<String>| {
        for p in paths {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    };
    let mut owners = vec![layout.system.clone()];
    owners.extend(layout.chassis.clone());
    for owner in &owners {
        let Some(doc) = get_optional(client, owner).await? else {
            continue;
        };
        let shared = links(&doc["Links"]["ComputerSystems"])
            .iter()
            .any(|s| layout.other_hosts.contains(s));
        if shared {
            tracing::debug!(node = %client.node, chassis = owner, "PCIe devices of a chassis shared with other hosts are not counted");
            continue;
        }
        let listed = &doc["PCIeDevices"];
        if listed.is_array() {
            add(links(listed));
        } else if let Some(c) = link(listed) {
            add(collection(client, &c).await?.unwrap_or_default());
        }
    }
    Ok(out)
}

/// PCI vendor ids of GPU makers, and their names.
const GPU_VENDORS: [(u32, &str); 2] = [(0x10DE, "NVIDIA"), (0x1002, "AMD")];

/// The GPU maker a function's `VendorId` names, when its class is a GPU's
/// (`DisplayController`, `ProcessingAccelerators`, or class code 0x03…
/// or 0x12…) and it is a physical function.
fn gpu_function_vendor(f: &Value) -> Option<&'static str> {
    let class = f["DeviceClass"].as_str().unwrap_or_default();
    let code = f["ClassCode"]
        .as_str()
        .map(|c| c.trim_start_matches("0x").trim_start_matches("0X"))
        .unwrap_or_default();
    let gpu_class = matches!(class, "DisplayController" | "ProcessingAccelerators")
        || code.starts_with("03")
        || code.starts_with("12");
    if !gpu_class || f["FunctionType"] == "Virtual" {
        return None;
    }
    let id = f["VendorId"].as_str()?;
    let id = u32::from_str_radix(
        id.trim().trim_start_matches("0x").trim_start_matches("0X"),
        16,
    )
    .ok()?;
    GPU_VENDORS
        .iter()
        .find(|(v, _)| *v == id)
        .map(|(_, name)| *name)
}

/// The GPUs one PCIe device holds: itself when it names itself a GPU,
/// else one per GPU function (an HGX board can be one device with a
/// function per GPU).
async fn pcie_gpus(client: &BmcClient, path: &str, doc: &Value) -> Result<Vec<Gpu>, BmcError> {
    if is_gpu_device(doc) {
        return Ok(vec![gpu_of(path, doc, None)]);
    }
    let functions = match link(&doc["PCIeFunctions"]) {
        Some(c) => collection(client, &c).await?.unwrap_or_default(),
        None => links(&doc["Links"]["PCIeFunctions"]),
    };
    let mut out = Vec::new();
    // A GPU is a device's first functions; a device with dozens of
    // functions (a NIC's virtual functions) is not read through.
    for f in functions.iter().take(8) {
        let Some(fdoc) = get_optional(client, f).await? else {
            continue;
        };
        if let Some(vendor) = gpu_function_vendor(&fdoc) {
            out.push((f.clone(), opt_text(&fdoc["Id"]), vendor));
        }
    }
    let several = out.len() > 1;
    Ok(out
        .into_iter()
        .map(|(fpath, fid, vendor)| {
            let mut g = gpu_of(path, doc, Some(vendor));
            if several {
                g.path = fpath;
                g.id = format!("{}.{}", g.id, fid.unwrap_or_default());
            }
            g
        })
        .collect())
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

/// Reads each member of a collection that exists (every page of it) and
/// hands it to `each`. With `expand` (the layout's `$expand` query) the
/// collection comes with its members in one request; a member the BMC
/// left as a bare link, or a BMC that refuses the query, is read member
/// by member, so an expand that is ignored or broken costs requests, not
/// members.
pub async fn for_each_member(
    client: &BmcClient,
    expand: Option<&str>,
    collection: &str,
    mut each: impl FnMut(&str, &Value),
) -> Result<(), BmcError> {
    let mut bare: Vec<String> = Vec::new();
    match expanded(client, expand, collection).await? {
        Expanded::Members(pages) => {
            let mut seen = std::collections::HashSet::new();
            for page in &pages {
                for m in page["Members"].as_array().into_iter().flatten() {
                    let Some(path) = link(m) else { continue };
                    if !seen.insert(path.clone()) {
                        continue;
                    }
                    if m.as_object().is_some_and(|o| o.len() > 1) {
                        each(&path, m);
                    } else {
                        bare.push(path);
                    }
                }
            }
        }
        Expanded::Absent => return Ok(()),
        Expanded::Refused => match self::collection(client, collection).await? {
            Some(paths) => bare = paths,
            None => return Ok(()),
        },
    }
    for path in bare {
        if let Some(doc) = get_optional(client, &path).await? {
            each(&path, &doc);
        }
    }
    Ok(())
}

/// A collection read with `$expand`.
enum Expanded {
    /// Its pages, members inline where the BMC expanded them.
    Members(Vec<Value>),
    /// The collection is not there.
    Absent,
    /// No expand query, or the BMC refused it (400, 501): read it plainly.
    Refused,
}

/// Reads a collection with `expand`, every page of it (bounded like
/// [`collection`]).
async fn expanded(
    client: &BmcClient,
    expand: Option<&str>,
    collection: &str,
) -> Result<Expanded, BmcError> {
    let Some(query) = expand else {
        return Ok(Expanded::Refused);
    };
    let first = match client.get(&format!("{collection}?{query}")).await {
        Ok(doc) => doc,
        // 404 and 405 say the collection is missing; 501 and 400 may
        // mean only the query is not understood.
        Err(e) if matches!(e.status(), Some(400 | 501)) => {
            tracing::debug!(node = %client.node, collection, "expand refused ({e}); reading members one by one");
            return Ok(Expanded::Refused);
        }
        Err(e) if e.is_absent() => return Ok(Expanded::Absent),
        Err(e) => return Err(e),
    };
    let mut next = next_link(&first, collection);
    let mut pages = vec![first];
    let mut seen = std::collections::HashSet::new();
    while let Some(page_path) = next.take() {
        if pages.len() >= MAX_PAGES || !seen.insert(page_path.clone()) {
            tracing::warn!(node = %client.node, collection, pages = pages.len(), "stopped following Members@odata.nextLink");
            break;
        }
        let Some(page) = get_optional(client, &page_path).await? else {
            break;
        };
        next = next_link(&page, collection);
        pages.push(page);
    }
    Ok(Expanded::Members(pages))
}

/// Whether a PCIe device document names itself a GPU.
fn is_gpu_device(doc: &Value) -> bool {
    let id = doc["Id"].as_str().unwrap_or_default();
    doc["DeviceType"] == "GPU"
        || id.to_ascii_uppercase().starts_with("GPU")
        || doc
            .pointer("/Oem/Supermicro/GPUVendor")
            .is_some_and(|v| !v.is_null())
}

fn gpu_of(path: &str, doc: &Value, pci_vendor: Option<&str>) -> Gpu {
    let model = opt_text(&doc["Model"]);
    let name = opt_text(&doc["Name"]);
    Gpu {
        path: path.to_owned(),
        id: opt_text(&doc["Id"]).unwrap_or_else(|| last_segment(path).to_owned()),
        name: name
            .clone()
            .filter(|n| model.is_some() && Some(n) != model.as_ref()),
        model: model.or(name).unwrap_or_default(),
        vendor: opt_text(&doc["Manufacturer"])
            .or_else(|| doc.pointer("/Oem/Supermicro/GPUVendor").and_then(opt_text))
            .or_else(|| pci_vendor.map(str::to_owned)),
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
    fn next_links_of_every_spelling_lead_to_a_path() {
        let c = "/redfish/v1/Chassis/1/PCIeDevices";
        let next = |v: &str| next_link(&json!({ "Members@odata.nextLink": v }), c);
        assert_eq!(
            next("/redfish/v1/Chassis/1/PCIeDevices?$skip=50").as_deref(),
            Some("/redfish/v1/Chassis/1/PCIeDevices?$skip=50")
        );
        assert_eq!(
            next("?$skip=50").as_deref(),
            Some("/redfish/v1/Chassis/1/PCIeDevices?$skip=50")
        );
        assert_eq!(
            next("https://10.0.0.5/redfish/v1/X?$skip=2").as_deref(),
            Some("/redfish/v1/X?$skip=2")
        );
        assert_eq!(next(""), None);
        assert_eq!(next_link(&json!({}), c), None);
    }

    #[test]
    fn gpu_functions_are_told_by_class_and_vendor() {
        let f = |class: &str, vendor: &str| json!({"DeviceClass": class, "VendorId": vendor, "FunctionType": "Physical"});
        assert_eq!(
            gpu_function_vendor(&f("DisplayController", "0x10DE")),
            Some("NVIDIA")
        );
        assert_eq!(
            gpu_function_vendor(&f("ProcessingAccelerators", "0x1002")),
            Some("AMD")
        );
        // An NVSwitch is NVIDIA's but a bridge; a BMC's VGA is a display
        // controller by ASPEED; a NIC is neither.
        assert_eq!(gpu_function_vendor(&f("Bridge", "0x10de")), None);
        assert_eq!(gpu_function_vendor(&f("DisplayController", "0x1A03")), None);
        assert_eq!(gpu_function_vendor(&f("NetworkController", "0x15B3")), None);
        assert_eq!(
            gpu_function_vendor(&json!({"ClassCode": "0x030200", "VendorId": "0x10DE"})),
            Some("NVIDIA")
        );
        let mut virt = f("DisplayController", "0x10DE");
        virt["FunctionType"] = json!("Virtual");
        assert_eq!(gpu_function_vendor(&virt), None);
    }

    #[test]
    fn baseboards_are_not_hosts() {
        assert!(is_baseboard("/redfish/v1/Systems/HGX_Baseboard_0"));
        assert!(!is_baseboard("/redfish/v1/Systems/DGX"));
    }
}
