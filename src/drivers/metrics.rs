//! The drivers steps' metrics as types: `inspect` and the script steps feed
//! the steps after them, `verify` feeds the signed acceptance record. The
//! JSON keys are the journal's and the record's, so they must not change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::record::step_metrics;

/// The drivers stage's name in the journal.
const STAGE: &str = "drivers";

step_metrics! {
    STAGE, "inspect",
    /// `inspect`: how the node differs from the pinned versions.
    pub struct InspectMetrics {
        /// One sentence per difference; empty when already converged.
        pub differences: Vec<String>,
    }
}

step_metrics! {
    STAGE, "install",
    /// `install` and `settle`: what the install script asked for.
    pub struct ScriptMetrics {
        /// The script's last line asked for a reboot.
        pub reboot: bool,
        /// How the script ended, in words.
        pub exit: Value,
    }
}

step_metrics! {
    STAGE, "verify",
    /// `verify`: versions, OS, kernel and GPUs as the node reports them; the
    /// acceptance record's software and nvidia-smi identity parts.
    pub struct VerifyMetrics {
        /// The loaded driver's version.
        pub driver: Option<String>,
        /// The CUDA toolkit's version, when installed.
        pub cuda: Option<String>,
        /// Fabric Manager's version (NVSwitch systems).
        pub fabricmanager: Option<String>,
        /// DCGM's version.
        pub dcgm: Option<String>,
        /// NCCL's version.
        pub nccl: Option<String>,
        /// The OS.
        pub os: Option<String>,
        /// The running kernel.
        pub kernel: Option<String>,
        /// The open kernel modules are installed.
        pub open_kernel_modules: bool,
        /// `nvidia_peermem` is loaded.
        pub nvidia_peermem: bool,
        /// The GPUs nvidia-smi lists.
        pub gpus: Option<Vec<VerifyGpu>>,
    }
}

impl VerifyMetrics {
    /// The software part named `key` as the record spells it (`driver`,
    /// `cuda`, …), `None` when not recorded.
    pub fn software(&self, key: &str) -> Option<&str> {
        match key {
            "driver" => self.driver.as_deref(),
            "cuda" => self.cuda.as_deref(),
            "fabricmanager" => self.fabricmanager.as_deref(),
            "dcgm" => self.dcgm.as_deref(),
            "nccl" => self.nccl.as_deref(),
            "os" => self.os.as_deref(),
            "kernel" => self.kernel.as_deref(),
            _ => None,
        }
    }
}

/// One GPU in the `verify` metrics; every part optional, as an old
/// journal or a partial nvidia-smi answer may lack it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyGpu {
    /// nvidia-smi's index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Board serial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Model name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Maximum PCIe generation.
    pub pcie_gen: Option<u32>,
    /// Maximum PCIe width.
    pub pcie_width: Option<u32>,
}
