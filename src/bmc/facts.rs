//! What `kiln bmc status`, `inventory` and `sensors` read from a BMC: the
//! host's summary, firmware versions, and power and temperature readings.

use serde::Serialize;
use serde_json::Value;

use crate::bmc::client::{BmcClient, BmcError};
use crate::bmc::discover::{Gpu, Layout, for_each_member, link};

/// The host as the BMC describes it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Host {
    /// `Manufacturer`.
    pub manufacturer: String,
    /// `Model`.
    pub model: String,
    /// `SerialNumber`.
    pub serial: String,
    /// `PowerState`.
    pub power: String,
    /// `Status.HealthRollup`, else `Status.Health`.
    pub health: String,
    /// `BiosVersion`.
    pub bios: String,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().trim().to_owned()
}

/// Reads the host's summary.
pub async fn host(client: &BmcClient, layout: &Layout) -> Result<Host, BmcError> {
    Ok(host_of(&client.get(&layout.system).await?))
}

/// The host's summary in a system document.
pub fn host_of(sys: &Value) -> Host {
    let health = match text(&sys["Status"]["HealthRollup"]) {
        h if h.is_empty() => text(&sys["Status"]["Health"]),
        h => h,
    };
    Host {
        manufacturer: text(&sys["Manufacturer"]),
        model: text(&sys["Model"]),
        serial: text(&sys["SerialNumber"]),
        power: text(&sys["PowerState"]),
        health,
        bios: text(&sys["BiosVersion"]),
    }
}

/// One firmware component.
#[derive(Clone, Debug, Serialize)]
pub struct Firmware {
    /// `Id`.
    pub id: String,
    /// `Name`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Updateable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updateable: Option<bool>,
}

/// Firmware inventory from the UpdateService the service root links
/// (empty when the BMC has none).
pub async fn firmware(client: &BmcClient, layout: &Layout) -> Result<Vec<Firmware>, BmcError> {
    let Some(update) = &layout.update_service else {
        return Ok(Vec::new());
    };
    let inventory = match client.get(update).await {
        Ok(service) => link(&service["FirmwareInventory"]),
        Err(e) if e.is_absent() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    match inventory {
        Some(inventory) => firmware_members(client, layout.expand.as_deref(), &inventory).await,
        None => Ok(Vec::new()),
    }
}

/// The members of the firmware inventory at `inventory`, in one request
/// where `expand` (the layout's `$expand` query) is given.
pub async fn firmware_members(
    client: &BmcClient,
    expand: Option<&str>,
    inventory: &str,
) -> Result<Vec<Firmware>, BmcError> {
    // A linked inventory that is not there (sushy-tools' libvirt driver
    // links one and answers 404) is no inventory, not a failed node.
    let mut out = Vec::new();
    for_each_member(client, expand, inventory, |_, doc| {
        out.push(Firmware {
            id: text(&doc["Id"]),
            name: text(&doc["Name"]),
            version: text(&doc["Version"]),
            updateable: doc["Updateable"].as_bool(),
        });
    })
    .await?;
    Ok(out)
}

/// A temperature reading.
#[derive(Clone, Debug, Serialize)]
pub struct Temperature {
    /// Sensor name.
    pub name: String,
    /// Degrees Celsius.
    pub celsius: f64,
    /// `PhysicalContext` (Intake, CPU, GPU, …).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub context: String,
}

/// Power and temperatures of the host's chassis.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sensors {
    /// Where they were read (the node's chassis, or the enclosure that
    /// contains it).
    pub chassis: String,
    /// Total power draw in watts.
    pub power_watts: Option<f64>,
    /// Where the power figure came from (`PowerConsumedWatts`,
    /// `AverageConsumedWatts`, `PowerInputWatts`, `PowerWatts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_source: Option<&'static str>,
    /// Temperatures (absent readings left out).
    pub temperatures: Vec<Temperature>,
    /// What could not be read, said rather than left empty: no chassis
    /// found, no power or temperature reading anywhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Sensors {
    /// The hottest reading whose context or name mentions `what`.
    pub fn hottest(&self, what: &str) -> Option<f64> {
        let what = what.to_ascii_lowercase();
        self.temperatures
            .iter()
            .filter(|t| {
                t.context.to_ascii_lowercase().contains(&what)
                    || t.name.to_ascii_lowercase().contains(&what)
            })
            .map(|t| t.celsius)
            .reduce(f64::max)
    }
}

/// GETs a linked resource; a link that leads nowhere (404, 405, 501)
/// reads as no resource.
async fn linked(client: &BmcClient, path: Option<String>) -> Result<Option<Value>, BmcError> {
    let Some(path) = path else { return Ok(None) };
    match client.get(&path).await {
        Ok(doc) => Ok(Some(doc)),
        Err(e) if e.is_absent() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The power figure of a classic `Power` resource: the first
/// `PowerControl` member's `PowerConsumedWatts`, else its
/// `PowerMetrics.AverageConsumedWatts`, else the sum of the power
/// supplies' `PowerInputWatts` (BMCs that leave the total null).
pub fn power_of(p: &Value) -> Option<(f64, &'static str)> {
    let controls = p["PowerControl"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(w) = controls
        .iter()
        .find_map(|c| c["PowerConsumedWatts"].as_f64())
    {
        return Some((w, "PowerConsumedWatts"));
    }
    if let Some(w) = controls
        .iter()
        .find_map(|c| c["PowerMetrics"]["AverageConsumedWatts"].as_f64())
    {
        return Some((w, "AverageConsumedWatts"));
    }
    let inputs: Vec<f64> = p["PowerSupplies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["PowerInputWatts"].as_f64())
        .collect();
    (!inputs.is_empty()).then(|| (inputs.iter().sum(), "PowerInputWatts"))
}

/// Reads power and temperatures: the classic `Power`/`Thermal` resources,
/// or `EnvironmentMetrics` and `ThermalSubsystem` on newer BMCs. Where the
/// node's chassis has no reading, the chassis that contains it
/// (`Links.ContainedBy`, up to three levels) is read instead. A link that
/// leads nowhere reads as absent; what is missing is said in
/// [`Sensors::notes`].
pub async fn sensors(client: &BmcClient, layout: &Layout) -> Result<Sensors, BmcError> {
    let Some(first) = &layout.chassis else {
        return Ok(Sensors {
            notes: vec![format!(
                "no chassis found for {}: it links none, and no chassis lists it",
                layout.system
            )],
            ..Sensors::default()
        });
    };
    let mut out = Sensors::default();
    let mut next = Some(first.clone());
    let mut visited: Vec<String> = Vec::new();
    while let Some(chassis) = next.take() {
        if visited.len() > 3 || visited.contains(&chassis) {
            break;
        }
        visited.push(chassis.clone());
        let Some(doc) = linked(client, Some(chassis.clone())).await? else {
            break;
        };
        let read = read_chassis(client, &doc).await?;
        if read.power_watts.is_some() || !read.temperatures.is_empty() {
            out = Sensors { chassis, ..read };
            break;
        }
        next = link(&doc["Links"]["ContainedBy"]);
    }
    if out.chassis.is_empty() {
        out.chassis = first.clone();
    }
    if out.power_watts.is_none() {
        out.notes
            .push(format!("no power reading under {}", visited.join(" or ")));
    }
    if out.temperatures.is_empty() {
        out.notes.push(format!(
            "no temperature reading under {}",
            visited.join(" or ")
        ));
    }
    Ok(out)
}

/// Power and temperatures of one chassis document.
async fn read_chassis(client: &BmcClient, doc: &Value) -> Result<Sensors, BmcError> {
    let mut out = Sensors::default();
    if let Some(p) = linked(client, link(&doc["Power"])).await?
        && let Some((w, source)) = power_of(&p)
    {
        out.power_watts = Some(w);
        out.power_source = Some(source);
    }
    if out.power_watts.is_none()
        && let Some(e) = linked(client, link(&doc["EnvironmentMetrics"])).await?
        && let Some(w) = e["PowerWatts"]["Reading"].as_f64()
    {
        out.power_watts = Some(w);
        out.power_source = Some("PowerWatts");
    }
    if let Some(t) = linked(client, link(&doc["Thermal"])).await? {
        for s in t["Temperatures"].as_array().into_iter().flatten() {
            if let Some(c) = s["ReadingCelsius"].as_f64() {
                out.temperatures.push(Temperature {
                    name: text(&s["Name"]),
                    celsius: c,
                    context: text(&s["PhysicalContext"]),
                });
            }
        }
    }
    if out.temperatures.is_empty()
        && let Some(sub) = linked(client, link(&doc["ThermalSubsystem"])).await?
        && let Some(m) = linked(client, link(&sub["ThermalMetrics"])).await?
    {
        for s in m["TemperatureReadingsCelsius"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(c) = s["Reading"].as_f64() {
                out.temperatures.push(Temperature {
                    name: text(&s["DeviceName"]),
                    celsius: c,
                    context: text(&s["PhysicalContext"]),
                });
            }
        }
    }
    Ok(out)
}

/// Everything `kiln bmc status` shows for one node.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Vendor, model and BMC firmware.
    pub identity: crate::bmc::vendor::Identity,
    /// The host.
    pub host: Host,
    /// GPUs the BMC sees.
    pub gpus: Vec<Gpu>,
    /// The image in a CD/DVD slot, when one is inserted (other slot types
    /// are left out).
    pub media: Option<String>,
}

/// Reads a node's status.
pub async fn status(client: &BmcClient, layout: &Layout) -> Result<Status, BmcError> {
    let host = host(client, layout).await?;
    let gpus = crate::bmc::discover::gpus(client, layout).await?;
    let media = cd_media(&layout.media);
    Ok(Status {
        identity: layout.identity.clone(),
        host,
        gpus,
        media,
    })
}

/// The image in the first CD/DVD slot that holds one. Only a CD/DVD slot
/// boots an installer: a floppy or USB image in another slot is not "the
/// CD".
pub fn cd_media(slots: &[crate::bmc::discover::MediaSlot]) -> Option<String> {
    slots
        .iter()
        .find(|s| s.takes_cd() && s.state.inserted)
        .map(|s| s.state.image.clone().unwrap_or_else(|| "(inserted)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::discover::{InsertMethod, MediaSlot, MediaState};
    use serde_json::json;

    fn slot(id: &str, types: &[&str], image: Option<&str>) -> MediaSlot {
        MediaSlot {
            path: format!("/redfish/v1/Managers/1/VirtualMedia/{id}"),
            id: id.into(),
            media_types: types.iter().map(|t| (*t).to_owned()).collect(),
            insert: InsertMethod::Patch,
            insert_params: None,
            insert_info: None,
            eject_target: None,
            state: MediaState {
                inserted: image.is_some(),
                image: image.map(str::to_owned),
                connected_via: None,
            },
        }
    }

    #[test]
    fn a_floppy_image_is_not_the_cd() {
        let floppy = slot("1", &["Floppy", "USBStick"], Some("http://x/fw.img"));
        let empty_cd = slot("2", &["CD", "DVD"], None);
        assert_eq!(cd_media(&[floppy.clone(), empty_cd]), None);
        let cd = slot("2", &["CD", "DVD"], Some("http://x/os.iso"));
        assert_eq!(cd_media(&[floppy, cd]).as_deref(), Some("http://x/os.iso"));
    }

    #[test]
    fn power_falls_back_to_the_average_then_the_supplies() {
        let total = json!({"PowerControl": [{"PowerConsumedWatts": 900.0}]});
        assert_eq!(power_of(&total), Some((900.0, "PowerConsumedWatts")));
        let average = json!({"PowerControl": [{"PowerConsumedWatts": null,
            "PowerMetrics": {"AverageConsumedWatts": 850.0}}]});
        assert_eq!(power_of(&average), Some((850.0, "AverageConsumedWatts")));
        let supplies = json!({"PowerControl": [{"PowerConsumedWatts": null}],
            "PowerSupplies": [{"PowerInputWatts": 400.0}, {"PowerInputWatts": 410.0}, {"PowerInputWatts": null}]});
        assert_eq!(power_of(&supplies), Some((810.0, "PowerInputWatts")));
        assert_eq!(power_of(&json!({"PowerControl": []})), None);
    }
}
