//! The firmware stage's step metrics as types: the signed acceptance
//! record and the HTML report read each node's versions before and after
//! and its BIOS values read back from them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::record::step_metrics;
use crate::stages::firmware::compliance::ComponentCheck;

/// The firmware stage's name in the journal.
pub const STAGE: &str = "firmware";

step_metrics! {
    STAGE, "inventory",
    /// `inventory`: where the node stood against the baseline before kiln
    /// changed anything.
    pub struct InventoryMetrics {
        /// Each baseline component and the members it matched.
        pub components: Vec<ComponentCheck>,
    }
}

/// One component update kiln asked the BMC for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentUpdate {
    /// kiln's name for the component.
    pub component: String,
    /// How the package reached the BMC: `SimpleUpdate` or
    /// `MultipartHttpPushUri`.
    pub method: String,
    /// The apply time asked for (`Immediate` or `OnReset`).
    pub apply: String,
    /// How the BMC's task ended: `Completed`, `Lost` (the BMC rebooted and
    /// forgot it; versions were read back), or the BMC's failure message.
    pub task: String,
}

step_metrics! {
    STAGE, "update",
    /// `update`: the updates asked for, in order.
    pub struct UpdateMetrics {
        /// One entry per component updated.
        pub updates: Vec<ComponentUpdate>,
        /// Whether the system was reset to apply `OnReset` updates.
        pub reset: bool,
    }
}

/// One BIOS setting of the baseline as kiln found and left it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BiosCheck {
    /// kiln's name for the setting (`sr-iov`, `secure-boot`).
    pub setting: String,
    /// The BMC's attribute name (`None`: the BIOS has no such attribute).
    pub attribute: Option<String>,
    /// The value wanted.
    pub wanted: Value,
    /// The value read (`None`: not reported).
    pub value: Option<Value>,
    /// Whether the value read is the value wanted.
    pub meets: bool,
}

step_metrics! {
    STAGE, "bios",
    /// `bios`: the settings before kiln wrote any, and what it wrote.
    pub struct BiosMetrics {
        /// Each setting as found.
        pub before: Vec<BiosCheck>,
        /// The attributes written (name → value), empty when none differed.
        pub written: serde_json::Map<String, Value>,
    }
}

step_metrics! {
    STAGE, "verify",
    /// `verify`: where the node stands after the stage: versions and BIOS
    /// values read back from the BMC.
    pub struct VerifyMetrics {
        /// Each baseline component, read back.
        pub components: Vec<ComponentCheck>,
        /// Each BIOS setting, read back.
        pub bios: Vec<BiosCheck>,
    }
}
