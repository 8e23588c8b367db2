//! Placeholder: replaced by the hardware model.
#![allow(missing_docs)]
use crate::profiles::hardware::HardwareProfile;

#[derive(Clone, Debug, PartialEq)]
pub enum HwFault {
    GpuMissing { gpu: u32 },
    SlowGpu { gpu: u32, factor: f64 },
    HotGpu { gpu: u32, temp_c: u32 },
    EccUncorrectable { gpu: u32 },
    RowRemapPending { gpu: u32 },
    NvlinkDown { gpu: u32, link: u32 },
    IbPortDown { port: u32 },
    IbDegraded { port: u32, rate_gbps: u32 },
    Xid { gpu: u32, code: u32 },
}

#[derive(Clone, Debug)]
pub struct Gpu {
    pub index: u32,
    pub serial: String,
    pub uuid: String,
    pub vbios: String,
    pub part_number: String,
}
#[derive(Clone, Debug)]
pub struct GpuReading {
    pub temp_c: f64,
    pub power_w: f64,
}
#[derive(Clone, Debug)]
pub struct NodeHardware {
    pub node: String,
    pub gpus: Vec<Gpu>,
    pub model: String,
}
impl NodeHardware {
    pub fn new(node: &str, profile: &HardwareProfile) -> Self {
        NodeHardware {
            node: node.into(),
            model: profile.gpu.model.clone(),
            gpus: (0..profile.gpu.count)
                .map(|i| Gpu {
                    index: i,
                    serial: format!("165232{i:07}"),
                    uuid: format!("GPU-{i}"),
                    vbios: "96.00.74.00.1C".into(),
                    part_number: "692-2G520-0200-000".into(),
                })
                .collect(),
        }
    }
    pub fn apply(&mut self, _f: &HwFault) {}
    pub fn visible_gpus(&self) -> impl Iterator<Item = &Gpu> {
        self.gpus.iter()
    }
    pub fn readings(&self, load: f64) -> Vec<GpuReading> {
        self.gpus
            .iter()
            .map(|_| GpuReading {
                temp_c: 35.0 + 40.0 * load,
                power_w: 70.0 + 600.0 * load,
            })
            .collect()
    }
}
#[derive(Clone, Debug, Default)]
pub struct SoftwareState {}
