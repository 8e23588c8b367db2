//! Renders one BMC's resources: the flavour's static tree with the node's
//! live state laid over it (power, boot, media, GPUs, telemetry, sessions,
//! tasks, firmware).

use serde_json::{Value, json};

use crate::sim::node::{NodeState, Power};
use crate::sim::redfish::flavour::Flavour;
use crate::sim::redfish::{BmcState, TaskState};

/// The resource at `path` (no trailing slash), or `None` for a 404.
pub fn resource(
    f: &Flavour,
    node: &str,
    st: &NodeState,
    bmc: &BmcState,
    path: &str,
) -> Option<Value> {
    if path == f.system {
        return Some(system(f, node, st));
    }
    if path == f.processors {
        return f.docs.get(path).map(|d| processors(f, st, d.clone()));
    }
    if let Some(n) = path
        .strip_prefix(&format!("{}/GPU", f.processors))
        .and_then(|rest| rest.parse::<usize>().ok())
    {
        return gpu(f, st, n);
    }
    if path == format!("{}/Power", f.chassis) {
        return Some(power(f, st));
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
fn member_ids(doc: &Value) -> Vec<String> {
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

fn processors(f: &Flavour, st: &NodeState, doc: Value) -> Value {
    // The mockup's own GPU entries may share the generated names (Lenovo
    // lists GPU1..GPU8): only the node's present GPUs are listed.
    let generated = format!("{}/GPU", f.processors);
    let mut members: Vec<String> = member_ids(&doc)
        .into_iter()
        .filter(|m| !m.starts_with(&generated))
        .collect();
    members.extend(
        st.hw
            .present_gpus()
            .map(|g| format!("{}/GPU{}", f.processors, g.index + 1)),
    );
    with_members(doc, members.into_iter())
}

fn gpu(f: &Flavour, st: &NodeState, n: usize) -> Option<Value> {
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
    doc["Manufacturer"] = json!("NVIDIA Corporation");
    doc["Model"] = json!(st.hw.profile.gpu.model);
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

fn power(f: &Flavour, st: &NodeState) -> Value {
    let path = format!("{}/Power", f.chassis);
    let on = st.power == Power::On;
    let gpu_watts: f64 = if on {
        readings(st).iter().map(|r| r.power_w).sum()
    } else {
        0.0
    };
    // CPUs, fans, NICs and memory of an idle 8-GPU server draw roughly 1.5 kW.
    let watts = if on { 1500.0 + gpu_watts } else { 18.0 };
    json!({
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
    })
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
        "PercentComplete": if t.state == TaskState::Running { 50 } else { 100 },
        "Messages": messages,
    })
}
