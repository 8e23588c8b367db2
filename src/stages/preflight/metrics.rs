//! The preflight steps' metrics as types: the signed acceptance record reads
//! the node's identity, host, GPUs and firmware from them. The JSON keys
//! are the journal's and the record's, so they must not change; the parts
//! the record copies whole stay JSON so an old record rebuilds byte for byte.

use serde_json::Value;

use crate::pipeline::record::step_metrics;

/// The preflight stage's name in the journal.
const STAGE: &str = "preflight";

step_metrics! {
    STAGE, "bmc",
    /// `bmc`: what the BMC says it is and which system is the node's.
    pub struct BmcMetrics {
        /// The BMC's identity (vendor, model, firmware; `mac` where known).
        pub identity: Option<Value>,
        /// The Redfish system the node is.
        pub system: Option<Value>,
    }
}

step_metrics! {
    STAGE, "host",
    /// `host`: the host as the BMC describes it.
    pub struct HostMetrics {
        /// Serial, model, maker, power, health and BIOS version.
        pub host: Option<Value>,
    }
}

step_metrics! {
    STAGE, "gpus",
    /// `gpus`: the GPUs the BMC lists, against what the profile expects.
    pub struct GpusMetrics {
        /// The GPUs as the BMC lists them.
        pub gpus: Option<Vec<Value>>,
        /// What the hardware profile expects.
        pub expected: Option<Value>,
        /// What the step warned about, when anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub warnings: Option<Vec<String>>,
    }
}

step_metrics! {
    STAGE, "firmware",
    /// `firmware`: the firmware components the BMC lists.
    pub struct FirmwareMetrics {
        /// One entry per component.
        pub firmware: Option<Value>,
    }
}
