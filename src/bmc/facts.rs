//! What `kiln bmc status`, `inventory` and `sensors` read from a BMC: the
//! host's summary, firmware versions, and power and temperature readings.

use serde::Serialize;
use serde_json::Value;

use crate::bmc::client::{BmcClient, BmcError};
use crate::bmc::discover::{Gpu, Layout, link, members};

/// The host as the BMC describes it.
#[derive(Clone, Debug, Serialize)]
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
    let sys = client.get(&layout.system).await?;
    let health = match text(&sys["Status"]["HealthRollup"]) {
        h if h.is_empty() => text(&sys["Status"]["Health"]),
        h => h,
    };
    Ok(Host {
        manufacturer: text(&sys["Manufacturer"]),
        model: text(&sys["Model"]),
        serial: text(&sys["SerialNumber"]),
        power: text(&sys["PowerState"]),
        health,
        bios: text(&sys["BiosVersion"]),
    })
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

/// Firmware inventory from the UpdateService (empty when the BMC has none).
pub async fn firmware(client: &BmcClient) -> Result<Vec<Firmware>, BmcError> {
    let Some(update) = link(&client.get("/redfish/v1").await?["UpdateService"]) else {
        return Ok(Vec::new());
    };
    let inventory = match client.get(&update).await {
        Ok(service) => link(&service["FirmwareInventory"]),
        Err(e) if e.is_absent() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let Some(inventory) = inventory else {
        return Ok(Vec::new());
    };
    // A linked inventory that is not there (sushy-tools' libvirt driver
    // links one and answers 404) is no inventory, not a failed node.
    let listing = match client.get(&inventory).await {
        Ok(doc) => doc,
        Err(e) if e.is_absent() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for path in members(&listing) {
        let doc = match client.get(&path).await {
            Ok(doc) => doc,
            Err(e) if e.is_absent() => continue,
            Err(e) => return Err(e),
        };
        out.push(Firmware {
            id: text(&doc["Id"]),
            name: text(&doc["Name"]),
            version: text(&doc["Version"]),
            updateable: doc["Updateable"].as_bool(),
        });
    }
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
    /// Where they were read.
    pub chassis: String,
    /// Total power draw in watts.
    pub power_watts: Option<f64>,
    /// Temperatures (absent readings left out).
    pub temperatures: Vec<Temperature>,
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

/// Reads power and temperatures: the classic `Power`/`Thermal` resources,
/// or `EnvironmentMetrics` and `ThermalSubsystem` on newer BMCs.
pub async fn sensors(client: &BmcClient, layout: &Layout) -> Result<Sensors, BmcError> {
    let Some(chassis) = &layout.chassis else {
        return Ok(Sensors::default());
    };
    let doc = client.get(chassis).await?;
    let mut out = Sensors {
        chassis: chassis.clone(),
        ..Sensors::default()
    };
    if let Some(power) = link(&doc["Power"]) {
        let p = client.get(&power).await?;
        out.power_watts = p["PowerControl"]
            .as_array()
            .and_then(|a| a.iter().find_map(|c| c["PowerConsumedWatts"].as_f64()));
    }
    if out.power_watts.is_none()
        && let Some(env) = link(&doc["EnvironmentMetrics"])
    {
        let e = client.get(&env).await?;
        out.power_watts = e["PowerWatts"]["Reading"].as_f64();
    }
    if let Some(thermal) = link(&doc["Thermal"]) {
        let t = client.get(&thermal).await?;
        for s in t["Temperatures"].as_array().into_iter().flatten() {
            if let Some(c) = s["ReadingCelsius"].as_f64() {
                out.temperatures.push(Temperature {
                    name: text(&s["Name"]),
                    celsius: c,
                    context: text(&s["PhysicalContext"]),
                });
            }
        }
    } else if let Some(sub) = link(&doc["ThermalSubsystem"]) {
        let sub = client.get(&sub).await?;
        if let Some(metrics) = link(&sub["ThermalMetrics"]) {
            let m = client.get(&metrics).await?;
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
    /// The CD slot's image, when one is inserted.
    pub media: Option<String>,
}

/// Reads a node's status.
pub async fn status(client: &BmcClient, layout: &Layout) -> Result<Status, BmcError> {
    let host = host(client, layout).await?;
    let gpus = crate::bmc::discover::gpus(client, layout).await?;
    let media = layout
        .media
        .iter()
        .find(|s| s.state.inserted)
        .map(|s| s.state.image.clone().unwrap_or_else(|| "(inserted)".into()));
    Ok(Status {
        identity: layout.identity.clone(),
        host,
        gpus,
        media,
    })
}
