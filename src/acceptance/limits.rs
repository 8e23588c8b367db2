//! A hardware profile's numbers as the judges' limits: one place, used by
//! the stages and by `kiln judge --profile`, so both judge alike.

use crate::judge::{NvbandwidthFloors, NvidiaSmiLimits, NvlinkLimits, TopoLimits};
use crate::profiles::HardwareProfile;

/// nvidia-smi: the profile's GPU count, model and PCIe link; with
/// `under_load`, a link below its maximum fails and the burn-in
/// temperature limit applies (idle GPUs lower their link and run cool);
/// the profile's power limit is what a capture's power draw is measured
/// against when the capture lacks its own.
pub fn nvidia_smi(profile: Option<&HardwareProfile>, under_load: bool) -> NvidiaSmiLimits {
    match profile {
        None => NvidiaSmiLimits {
            under_load,
            ..NvidiaSmiLimits::default()
        },
        Some(p) => NvidiaSmiLimits {
            gpu_count: Some(p.gpu.count),
            model: Some(p.gpu.model.clone()),
            pcie_gen: Some(p.gpu.pcie.generation),
            pcie_width: Some(p.gpu.pcie.width),
            under_load,
            power_limit_w: Some(p.gpu.power_limit_w),
            max_temp_c: under_load.then_some(p.burnin.max_temp_c),
        },
    }
}

/// NVLink: the profile's links per GPU and per-link speed.
pub fn nvlink(profile: Option<&HardwareProfile>) -> NvlinkLimits {
    profile.map_or_else(NvlinkLimits::default, |p| NvlinkLimits {
        links_per_gpu: Some(p.gpu.nvlink.links_per_gpu),
        link_gbps: Some(p.gpu.nvlink.link_gbps),
    })
}

/// `topo -m`: the GPU count, NVLinks per GPU pair on NVSwitch boards
/// (every pair sees all of a GPU's links), and the compute NICs.
pub fn topo(profile: Option<&HardwareProfile>) -> TopoLimits {
    profile.map_or_else(TopoLimits::default, |p| TopoLimits {
        gpu_count: Some(p.gpu.count),
        nvlinks_per_pair: p.nvswitch.then_some(p.gpu.nvlink.links_per_gpu),
        compute_nics: Some(p.infiniband.nics),
    })
}

/// nvbandwidth: the profile's copy-engine floors.
pub fn nvbandwidth(profile: Option<&HardwareProfile>) -> NvbandwidthFloors {
    profile.map_or_else(NvbandwidthFloors::default, |p| NvbandwidthFloors {
        h2d_gbps: Some(p.nvbandwidth.h2d_gbps),
        d2h_gbps: Some(p.nvbandwidth.d2h_gbps),
        // Peer copies go over NVLink; a profile without it sets no floor.
        d2d_read_gbps: (p.gpu.nvlink.links_per_gpu > 0).then_some(p.nvbandwidth.d2d_gbps),
    })
}

/// The nccl-tests busbw floor for a run over `gpus` GPUs: the in-node
/// floor up to one node's GPUs, the cross-node (ring) floor beyond.
pub fn nccl_floor(profile: &HardwareProfile, gpus: u64) -> f64 {
    if gpus > u64::from(profile.gpu.count) {
        profile.nccl.cross_node_busbw_gbps
    } else {
        profile.nccl.in_node_busbw_gbps
    }
}
