//! The preflight steps' metrics as types: the signed acceptance record reads
//! the node's identity, host, GPUs and firmware from them. The JSON keys
//! are the journal's and the record's, so they must not change; the parts
//! the record copies whole stay JSON so an old record rebuilds byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::record::StepMetrics;

/// The preflight stage's name in the journal.
const STAGE: &str = "preflight";

/// `bmc`: what the BMC says it is and which system is the node's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BmcMetrics {
    /// The BMC's identity (vendor, model, firmware; `mac` where known).
    #[serde(default)]
    pub identity: Option<Value>,
    /// The Redfish system the node is.
    #[serde(default)]
    pub system: Option<Value>,
}

impl StepMetrics for BmcMetrics {
    const STAGE: &'static str = STAGE;
    const STEP: &'static str = "bmc";
}

/// `host`: the host as the BMC describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    /// Serial, model, maker, power, health and BIOS version.
    #[serde(default)]
    pub host: Option<Value>,
}

impl StepMetrics for HostMetrics {
    const STAGE: &'static str = STAGE;
    const STEP: &'static str = "host";
}

/// `gpus`: the GPUs the BMC lists, against what the profile expects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpusMetrics {
    /// The GPUs as the BMC lists them.
    #[serde(default)]
    pub gpus: Option<Vec<Value>>,
    /// What the hardware profile expects.
    #[serde(default)]
    pub expected: Option<Value>,
    /// What the step warned about, when anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

impl StepMetrics for GpusMetrics {
    const STAGE: &'static str = STAGE;
    const STEP: &'static str = "gpus";
}

/// `firmware`: the firmware components the BMC lists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FirmwareMetrics {
    /// One entry per component.
    #[serde(default)]
    pub firmware: Option<Value>,
}

impl StepMetrics for FirmwareMetrics {
    const STAGE: &'static str = STAGE;
    const STEP: &'static str = "firmware";
}
