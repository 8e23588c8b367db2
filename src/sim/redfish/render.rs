//! Renders one BMC's resources: the flavour's static tree with the node's
//! live state laid over it (power, boot, media, GPUs, telemetry, sessions,
//! tasks, firmware), reshaped where the node's faults give its tree
//! another shape ([`TreeShape`]: a sled's second system, GPUs as PCIe
//! devices, no chassis link, a null power total).

use serde_json::{Value, json};

use crate::sim::faults::TreeShape;
use crate::sim::node::{NodeState, Power};
use crate::sim::redfish::flavour::Flavour;
use crate::sim::redfish::{BmcState, TaskState};

/// The resource at `path` (no trailing slash), or `None` for a 404.
pub fn resource(
    f: &Flavour,
    node: &str,
    st: &NodeState,
    bmc: &BmcState,
    tree: &TreeShape,
    path: &str,
) -> Option<Value> {
    if tree.sled
        && let Some(doc) = sled(f, node, st, bmc, tree, path)
    {
        return doc;
    }
    if path == f.system {
        let mut doc = system(f, node, st);
        if tree.unlinked_chassis
            && let Some(links) = doc["Links"].as_object_mut()
        {
            links.remove("Chassis");
            links.remove("Chassis@odata.count");
        }
        return Some(doc);
    }
    if path == f.chassis {
        return f.docs.get(path).map(|d| chassis(f, tree, d.clone()));
    }
    if path == f.processors {
        return f.docs.get(path).map(|d| processors(f, st, tree, d.clone()));
    }
    if let Some(n) = path
        .strip_prefix(&format!("{}/GPU", f.processors))
        .and_then(|rest| rest.parse::<usize>().ok())
    {
        if tree.gpus_as_pcie {
            return None;
        }
        return gpu(f, st, tree, n);
    }
    if tree.gpus_as_pcie
        && let Some(rest) = path.strip_prefix(&format!("{}/PCIeDevices", f.chassis))
    {
        return pcie(f, st, tree, path, rest);
    }
    if path == format!("{}/Power", f.chassis) {
        return Some(power(f, st, tree));
    }
    if path == format!("{}/Thermal", f.chassis) {
        return Some(thermal(f, st));
    }
    if let Some(i) = f.media.iter().position(|m| m.path == path) {
        return f.docs.get(path).map(|d| media(d.clone(), &st.media[i]));
    }
    if path == "/redfish/v1/SessionService/Sessions" {
        let doc = f.docs.get(path).cloned().unwrap_or_else(|| {
            collection_shell(
                path,
                "#SessionCollection.SessionCollection",
                "Session Collection",
            )
        });
        return Some(with_members(
            doc,
            bmc.sessions.iter().map(|s| format!("{path}/{}", s.id)),
        ));
    }
    if let Some(id) = path.strip_prefix("/redfish/v1/SessionService/Sessions/") {
        let s = bmc.sessions.iter().find(|s| s.id == id)?;
        return Some(json!({
            "@odata.id": path,
            "@odata.type": f.session_type,
            "Id": s.id,
            "Name": "User Session",
            "UserName": s.user,
        }));
    }
    if path == "/redfish/v1/TaskService/Tasks" {
        let doc = f.docs.get(path).cloned().unwrap_or_else(|| {
            collection_shell(path, "#TaskCollection.TaskCollection", "Task Collection")
        });
        return Some(with_members(
            doc,
            bmc.tasks.iter().map(|t| format!("{path}/{}", t.id)),
        ));
    }
    if let Some(id) = path.strip_prefix("/redfish/v1/TaskService/Tasks/") {
        let t = bmc.tasks.iter().find(|t| t.id == id)?;
        return Some(task_doc(f, path, t));
    }
    if path == "/redfish/v1/UpdateService/FirmwareInventory" {
        let doc = f.docs.get(path).cloned()?;
        let gpus = st
            .hw
            .present_gpus()
            .map(|g| format!("{path}/GPU{}_VBIOS", g.index + 1))
            .collect::<Vec<_>>();
        let mut members = member_ids(&doc);
        members.extend(gpus);
        return Some(with_members(doc, members.into_iter()));
    }
    if let Some(n) = path
        .strip_prefix("/redfish/v1/UpdateService/FirmwareInventory/GPU")
        .and_then(|rest| rest.strip_suffix("_VBIOS"))
        .and_then(|n| n.parse::<u32>().ok())
    {
        st.hw.present_gpus().find(|g| g.index + 1 == n)?;
        let mut doc = f.firmware_template.clone();
        keep_only(&mut doc, &["@odata.type", "Updateable", "Status"]);
        doc["@odata.id"] = json!(path);
        doc["Id"] = json!(format!("GPU{n}_VBIOS"));
        doc["Name"] = json!(format!("GPU {n} VBIOS"));
        doc["Version"] = json!(st.hw.vbios_version());
        doc["Updateable"] = json!(false);
        doc["Status"] = json!({"State": "Enabled", "Health": "OK"});
        return Some(doc);
    }
    if let Some(version) = bmc.firmware.versions.get(path) {
        let mut doc = f.docs.get(path).cloned()?;
        doc["Version"] = json!(version);
        return Some(doc);
    }
    if path == "/redfish/v1" {
        let mut doc = f.docs.get(path).cloned()?;
        doc["UUID"] = json!(uuid_for(node, "service"));
        return Some(doc);
    }
    f.docs.get(path).cloned()
}

/// The board part number the BMC reports for every GPU module.
const PART_NUMBER: &str = "692-2G520-0200-000";

fn collection_shell(path: &str, ty: &str, name: &str) -> Value {
    json!({"@odata.id": path, "@odata.type": ty, "Name": name, "Members": []})
}

fn with_members(mut doc: Value, members: impl Iterator<Item = String>) -> Value {
    let members: Vec<Value> = members.map(|m| json!({"@odata.id": m})).collect();
    doc["Members@odata.count"] = json!(members.len());
    doc["Members"] = Value::Array(members);
    doc
}

/// The `@odata.id`s of a collection's members.
pub(super) fn member_ids(doc: &Value) -> Vec<String> {
    doc["Members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["@odata.id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn keep_only(doc: &mut Value, keys: &[&str]) {
    if let Some(map) = doc.as_object_mut() {
        map.retain(|k, _| keys.contains(&k.as_str()));
    }
}

/// A stable RFC 4122-shaped UUID derived from the node name.
pub fn uuid_for(node: &str, what: &str) -> String {
    let h = fnv(&format!("{node}/{what}"));
    let h2 = fnv(&format!("{what}/{node}"));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (h2 >> 52) as u16 & 0xfff,
        h2 & 0xffff_ffff_ffff
    )
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn system(f: &Flavour, node: &str, st: &NodeState) -> Value {
    let mut doc = f.docs.get(&f.system).cloned().unwrap_or(Value::Null);
    doc["PowerState"] = json!(if st.power == Power::On { "On" } else { "Off" });
    doc["HostName"] = json!(node);
    doc["SerialNumber"] = json!(format!("KS{:010}", fnv(node) % 10_000_000_000));
    doc["UUID"] = json!(uuid_for(node, "system"));
    let boot = &mut doc["Boot"];
    boot["BootSourceOverrideTarget"] = json!(st.boot.target);
    boot["BootSourceOverrideEnabled"] = json!(st.boot.enabled);
    if boot
        .get("BootSourceOverrideMode")
        .is_some_and(|m| !m.is_null())
        || f.vendor == crate::sim::redfish::flavour::Vendor::Generic
    {
        boot["BootSourceOverrideMode"] = json!(st.boot.mode);
    }
    boot["BootSourceOverrideTarget@Redfish.AllowableValues"] = json!(f.boot_targets);
    if f.http_boot_uri {
        boot["HttpBootUri"] = json!(st.boot.http_uri);
    }
    let gpus = st.hw.present_gpus().count();
    let healthy = gpus == st.hw.gpus.len();
    if doc.get("Status").is_some() {
        doc["Status"]["Health"] = json!(if healthy { "OK" } else { "Critical" });
        doc["Status"]["State"] = json!("Enabled");
    }
    doc
}

/// The other node of a sled (`tree.sled`): its system mirrors this one's
/// under another path; an enclosure manager is listed before the BMC.
/// `None` when `path` is not reshaped by the sled.
fn sled(
    f: &Flavour,
    node: &str,
    st: &NodeState,
    bmc: &BmcState,
    tree: &TreeShape,
    path: &str,
) -> Option<Option<Value>> {
    let peer = peer_system(f);
    if path == "/redfish/v1/Systems" {
        let doc = f.docs.get(path).cloned()?;
        let mut members = member_ids(&doc);
        members.push(peer);
        return Some(Some(with_members(doc, members.into_iter())));
    }
    if path == "/redfish/v1/Managers" {
        let doc = f.docs.get(path).cloned()?;
        let mut members = vec![ENCLOSURE_MANAGER.to_owned()];
        members.extend(member_ids(&doc));
        return Some(Some(with_members(doc, members.into_iter())));
    }
    if path == ENCLOSURE_MANAGER {
        let ty = f
            .docs
            .get(&f.manager)
            .and_then(|m| m["@odata.type"].as_str())
            .unwrap_or("#Manager.v1_10_0.Manager");
        return Some(Some(json!({
            "@odata.id": ENCLOSURE_MANAGER,
            "@odata.type": ty,
            "Id": "Enclosure",
            "Name": "Sled enclosure controller",
            "ManagerType": "EnclosureManager",
            "Status": {"State": "Enabled", "Health": "OK"},
        })));
    }
    let rest = path.strip_prefix(peer.as_str())?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mirrored = format!("{}{rest}", f.system);
    let plain = TreeShape {
        sled: false,
        ..tree.clone()
    };
    let Some(mut doc) = resource(f, node, st, bmc, &plain, &mirrored) else {
        return Some(None);
    };
    if rest.is_empty() {
        doc["SerialNumber"] = json!(format!(
            "KS{:010}",
            fnv(&format!("{node}/peer")) % 10_000_000_000
        ));
        doc["UUID"] = json!(uuid_for(node, "peer-system"));
        doc["HostName"] = json!(format!("{node}-peer"));
    }
    let text = doc.to_string();
    let own_id = f.system.rsplit('/').next().unwrap_or_default();
    let peer_id = peer.rsplit('/').next().unwrap_or_default();
    let mut text = text;
    for end in ['"', '/', '#'] {
        text = text.replace(&format!("\"{}{end}", f.system), &format!("\"{peer}{end}"));
    }
    text = text.replace(
        &format!("\"Id\":\"{own_id}\""),
        &format!("\"Id\":\"{peer_id}\""),
    );
    Some(serde_json::from_str(&text).ok())
}

/// The path of a sled's other system.
pub fn peer_system(f: &Flavour) -> String {
    format!("{}-Node1", f.system)
}

/// The enclosure manager a sled lists before its BMC.
pub const ENCLOSURE_MANAGER: &str = "/redfish/v1/Managers/Enclosure";

/// The chassis: linked to the system's GPUs as PCIe devices, and naming
/// the systems it holds (both of a sled's).
fn chassis(f: &Flavour, tree: &TreeShape, mut doc: Value) -> Value {
    if tree.gpus_as_pcie {
        doc["PCIeDevices"] = json!({"@odata.id": format!("{}/PCIeDevices", f.chassis)});
    }
    if tree.unlinked_chassis || tree.sled {
        let mut systems = doc["Links"]["ComputerSystems"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut want = vec![f.system.clone()];
        if tree.sled {
            want.push(peer_system(f));
        }
        for s in want {
            if !systems.iter().any(|v| v["@odata.id"] == s.as_str()) {
                systems.push(json!({"@odata.id": s}));
            }
        }
        if !doc["Links"].is_object() {
            doc["Links"] = json!({});
        }
        doc["Links"]["ComputerSystems"] = Value::Array(systems);
    }
    doc
}

/// The GPUs' model and maker as the BMC lists them.
fn gpu_identity(st: &NodeState, tree: &TreeShape) -> (String, String) {
    match &tree.gpu_model {
        Some((model, vendor)) => (model.clone(), vendor.clone()),
        None => (st.hw.profile.gpu.model.clone(), "NVIDIA Corporation".into()),
    }
}

/// The chassis's PCIe devices when GPUs are listed only there: one device
/// per GPU named after the board (`HGX H100 8-GPU`), each with one
/// function whose class and vendor id say what it is.
fn pcie(f: &Flavour, st: &NodeState, tree: &TreeShape, path: &str, rest: &str) -> Option<Value> {
    let base = format!("{}/PCIeDevices", f.chassis);
    let bus = |g: &crate::sim::hw::Gpu| format!("{:02X}_00", g.pci_bus);
    let gpus: Vec<&crate::sim::hw::Gpu> = st.hw.present_gpus().collect();
    if rest.is_empty() {
        let mut doc = f.docs.get(path).cloned().unwrap_or_else(|| {
            collection_shell(
                path,
                "#PCIeDeviceCollection.PCIeDeviceCollection",
                "PCIe Device Collection",
            )
        });
        let mut members = member_ids(&doc);
        members.extend(gpus.iter().map(|g| format!("{base}/{}", bus(g))));
        doc = with_members(doc, members.into_iter());
        return Some(doc);
    }
    let mut parts = rest.trim_start_matches('/').splitn(3, '/');
    let id = parts.next()?;
    let g = gpus.iter().find(|g| bus(g) == id)?;
    let device = format!("{base}/{id}");
    let (model, vendor) = gpu_identity(st, tree);
    let amd = vendor.to_ascii_uppercase().contains("AMD");
    let vendor_id = if amd { "0x1002" } else { "0x10DE" };
    match (parts.next(), parts.next()) {
        (None, _) => {
            let product = model
                .split_whitespace()
                .find(|w| w.chars().any(|c| c.is_ascii_digit()))
                .unwrap_or("GPU");
            let board = if tree.gpu_model.is_some() {
                model.clone()
            } else {
                format!("HGX {product} {}-GPU", st.hw.gpus.len())
            };
            let mut doc = json!({
                "@odata.id": device,
                "@odata.type": "#PCIeDevice.v1_9_0.PCIeDevice",
                "Id": id,
                "Name": format!("PCIe Device {}", id.replace('_', ":")),
                "Manufacturer": vendor,
                "Model": board,
                "SerialNumber": g.serial_string(),
                "PartNumber": PART_NUMBER,
                "FirmwareVersion": st.hw.vbios_version(),
                "DeviceType": "SingleFunction",
                "Status": {"State": "Enabled", "Health": "OK"},
                "PCIeFunctions": {"@odata.id": format!("{device}/PCIeFunctions")},
            });
            if amd {
                doc["PartNumber"] = json!("102-D65209-00");
            }
            Some(doc)
        }
        (Some("PCIeFunctions"), None) => Some(with_members(
            collection_shell(
                path,
                "#PCIeFunctionCollection.PCIeFunctionCollection",
                "PCIe Function Collection",
            ),
            std::iter::once(format!("{device}/PCIeFunctions/0")),
        )),
        (Some("PCIeFunctions"), Some("0")) => Some(json!({
            "@odata.id": path,
            "@odata.type": "#PCIeFunction.v1_5_0.PCIeFunction",
            "Id": "0",
            "Name": "PCIe Function 0",
            "FunctionId": 0,
            "FunctionType": "Physical",
            "DeviceClass": "DisplayController",
            "ClassCode": "0x030200",
            "VendorId": vendor_id,
            "DeviceId": if amd { "0x740C" } else { "0x2330" },
            "SubsystemVendorId": vendor_id,
            "SubsystemId": if amd { "0x0C34" } else { "0x16C1" },
            "Status": {"State": "Enabled", "Health": "OK"},
            "Links": {"PCIeDevice": {"@odata.id": device}},
        })),
        _ => None,
    }
}

fn processors(f: &Flavour, st: &NodeState, tree: &TreeShape, doc: Value) -> Value {
    // The mockup's own GPU entries may share the generated names (Lenovo
    // lists GPU1..GPU8): only the node's present GPUs are listed.
    let generated = format!("{}/GPU", f.processors);
    let mut members: Vec<String> = member_ids(&doc)
        .into_iter()
        .filter(|m| !m.starts_with(&generated))
        .collect();
    if !tree.gpus_as_pcie {
        members.extend(
            st.hw
                .present_gpus()
                .map(|g| format!("{}/GPU{}", f.processors, g.index + 1)),
        );
    }
    with_members(doc, members.into_iter())
}

fn gpu(f: &Flavour, st: &NodeState, tree: &TreeShape, n: usize) -> Option<Value> {
    let g = st.hw.present_gpus().find(|g| g.index as usize + 1 == n)?;
    let path = format!("{}/GPU{n}", f.processors);
    let mut doc = f.gpu_template.clone();
    // Links and Oem data of the template describe another slot; drop them.
    if let Some(map) = doc.as_object_mut() {
        map.remove("Links");
        map.remove("Oem");
        map.remove("@odata.etag");
        map.remove("Metrics");
        map.remove("Assembly");
        map.remove("EnvironmentMetrics");
        map.remove("Location");
        map.remove("Certificates");
        map.remove("MemorySummary");
    }
    doc["@odata.id"] = json!(path);
    doc["Id"] = json!(format!("GPU{n}"));
    doc["Name"] = json!(format!("GPU {n}"));
    doc["ProcessorType"] = json!("GPU");
    let (model, vendor) = gpu_identity(st, tree);
    doc["Manufacturer"] = json!(vendor);
    doc["Model"] = json!(model);
    doc["SerialNumber"] = json!(g.serial_string());
    doc["PartNumber"] = json!(PART_NUMBER);
    if doc.get("FirmwareVersion").is_some() {
        doc["FirmwareVersion"] = json!(st.hw.vbios_version());
    }
    if doc.get("UUID").is_some() {
        doc["UUID"] = json!(g.uuid_string().trim_start_matches("GPU-"));
    }
    doc["Status"] = json!({"State": "Enabled", "Health": "OK"});
    Some(doc)
}

fn media(mut doc: Value, m: &crate::sim::node::Media) -> Value {
    doc["Image"] = json!(m.image);
    doc["ImageName"] = json!(
        m.image
            .as_deref()
            .map(|i| i.rsplit('/').next().unwrap_or(i))
    );
    doc["Inserted"] = json!(m.inserted);
    doc["WriteProtected"] = json!(m.write_protected);
    if doc.get("ConnectedVia").is_some() || m.inserted {
        doc["ConnectedVia"] = json!(if m.inserted { "URI" } else { "NotConnected" });
    }
    if let Some(hpe) = doc.pointer_mut("/Oem/Hpe") {
        hpe["BootOnNextServerReset"] = json!(m.boot_on_next_reset);
    }
    doc
}

fn readings(st: &NodeState) -> Vec<crate::sim::hw::GpuReading> {
    let load = if st.load_users > 0 { 1.0 } else { 0.0 };
    st.hw.readings(load)
}

fn power(f: &Flavour, st: &NodeState, tree: &TreeShape) -> Value {
    let path = format!("{}/Power", f.chassis);
    let on = st.power == Power::On;
    let gpu_watts: f64 = if on {
        readings(st).iter().map(|r| r.power_w).sum()
    } else {
        0.0
    };
    // CPUs, fans, NICs and memory of an idle 8-GPU server draw roughly 1.5 kW.
    let watts = if on { 1500.0 + gpu_watts } else { 18.0 };
    let mut doc = json!({
        "@odata.id": path,
        "@odata.type": "#Power.v1_5_0.Power",
        "Id": "Power",
        "Name": "Power",
        "PowerControl": [{
            "@odata.id": format!("{path}#/PowerControl/0"),
            "MemberId": "0",
            "Name": "System Power Control",
            "PowerConsumedWatts": watts.round(),
            "PowerCapacityWatts": 10200,
            "Status": {"State": "Enabled", "Health": "OK"},
        }],
    });
    if tree.null_power {
        // Some BMCs leave the total null and report the average and each
        // supply's input instead.
        let control = &mut doc["PowerControl"][0];
        control["PowerConsumedWatts"] = Value::Null;
        control["PowerMetrics"] = json!({
            "IntervalInMin": 1,
            "MinConsumedWatts": (watts * 0.97).round(),
            "MaxConsumedWatts": (watts * 1.03).round(),
            "AverageConsumedWatts": watts.round(),
        });
        doc["PowerSupplies"] = json!(
            (0..2)
                .map(|i| json!({
                    "@odata.id": format!("{path}#/PowerSupplies/{i}"),
                    "MemberId": i.to_string(),
                    "Name": format!("PSU {}", i + 1),
                    "PowerSupplyType": "AC",
                    "LineInputVoltage": 230,
                    "PowerCapacityWatts": 5100,
                    "PowerInputWatts": (watts / 2.0).round(),
                    "Status": {"State": "Enabled", "Health": "OK"},
                }))
                .collect::<Vec<_>>()
        );
    }
    doc
}

fn thermal(f: &Flavour, st: &NodeState) -> Value {
    let path = format!("{}/Thermal", f.chassis);
    let on = st.power == Power::On;
    let mut temps = vec![json!({
        "@odata.id": format!("{path}#/Temperatures/0"),
        "MemberId": "0",
        "Name": "Inlet Temp",
        "ReadingCelsius": st.hw.inlet_c,
        "PhysicalContext": "Intake",
        "UpperThresholdCritical": 42,
        "Status": {"State": "Enabled", "Health": "OK"},
    })];
    if on {
        for (g, r) in st.hw.present_gpus().zip(readings(st)) {
            let i = temps.len();
            let hot = r.temp_c >= 87;
            temps.push(json!({
                "@odata.id": format!("{path}#/Temperatures/{i}"),
                "MemberId": i.to_string(),
                "Name": format!("GPU {} Temp", g.index + 1),
                "ReadingCelsius": r.temp_c,
                "PhysicalContext": "GPU",
                "UpperThresholdCritical": 87,
                "Status": {"State": "Enabled", "Health": if hot { "Critical" } else { "OK" }},
            }));
        }
    }
    json!({
        "@odata.id": path,
        "@odata.type": "#Thermal.v1_4_0.Thermal",
        "Id": "Thermal",
        "Name": "Thermal",
        "Temperatures": temps,
    })
}

fn task_doc(f: &Flavour, path: &str, t: &crate::sim::redfish::Task) -> Value {
    let (state, status) = match &t.state {
        TaskState::Running => ("Running", "OK"),
        TaskState::Completed => ("Completed", "OK"),
        TaskState::Failed(_) => ("Exception", "Critical"),
    };
    let mut messages = Vec::new();
    if let TaskState::Failed(why) = &t.state {
        messages.push(json!({"MessageId": "Base.1.8.GeneralError", "Message": why}));
    }
    json!({
        "@odata.id": path,
        "@odata.type": f.task_type,
        "Id": t.id,
        "Name": t.name,
        "TaskState": state,
        "TaskStatus": status,
        "TaskMonitor": format!("{path}/Monitor"),
        "PercentComplete": t.percent,
        "Messages": messages,
    })
}
