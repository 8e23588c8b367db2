//! The per-node hardware model of the virtual rack: GPUs, InfiniBand ports,
//! injected faults, and the software state of the node's operating system
//! (driver, fabric manager, DCGM, NCCL, services).
//!
//! Everything here is deterministic: two models built for the same node name
//! and profile are equal, serials, UUIDs, VBIOS versions and the small
//! per-GPU performance jitter all derive from a hash of the node name. Nothing
//! large is stored per node (a site has ~12,500 of them); tool output is
//! generated on demand by [`crate::sim::tools`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::profiles::hardware::HardwareProfile;
use crate::profiles::image::{ImageProfile, OsFamily};

// ---------------------------------------------------------------------------
// Deterministic hashing
// ---------------------------------------------------------------------------

/// FNV-1a over `bytes`: the seed every per-node value derives from.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 of `seed` and `salt`: an independent stream per salt.
pub(crate) fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in `[0, 1)` from `seed` and `salt`.
pub(crate) fn unit(seed: u64, salt: u64) -> f64 {
    (mix(seed, salt) >> 11) as f64 / (1u64 << 53) as f64
}

/// A number in `[-1, 1)` from `seed` and `salt`.
pub(crate) fn signed_unit(seed: u64, salt: u64) -> f64 {
    unit(seed, salt) * 2.0 - 1.0
}

// ---------------------------------------------------------------------------
// GPU model constants
// ---------------------------------------------------------------------------

/// PCI bus numbers of the eight SXM GPUs on an HGX baseboard, in
/// enumeration order (the Dell XE9680 / DGX H100 layout).
pub const HGX_GPU_BUSES: [u8; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

/// HGX module (slot) ids by enumeration order; the baseboard does not number
/// its sockets in PCI order.
const HGX_MODULE_IDS: [u8; 8] = [2, 4, 3, 1, 7, 5, 8, 6];

/// Constants of one GPU model that no profile carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ModelSpec {
    pub arch: &'static str,
    pub device_id: u32,
    pub subsys_id: u32,
    pub vbios_major: u8,
    pub board_part: &'static str,
    pub gpu_part: &'static str,
    pub inforom_img: &'static str,
    pub compute_cap: &'static str,
    pub max_sm_mhz: u32,
    pub mem_mhz: u32,
    pub video_max_mhz: u32,
    pub idle_w: f64,
    pub reserved_mib: u64,
    /// gpu_burn FP32 (SGEMM) Gflop/s of a healthy GPU.
    pub fp32_gflops: f64,
    /// gpu_burn FP64 (DGEMM) Gflop/s of a healthy GPU.
    pub fp64_gflops: f64,
    /// DCGM "Diagnostic" plugin gigaflops of a healthy GPU.
    pub dcgm_gflops: f64,
    /// Host to device copy-engine bandwidth, GB/s (PCIe Gen5 x16).
    pub h2d_gbps: f64,
    /// Device to device copy-engine read bandwidth per pair, GB/s.
    pub d2d_gbps: f64,
    /// Max operating temperature (°C): the slowdown starts above it.
    pub max_operating_c: u32,
}

impl ModelSpec {
    /// The spec of the model named `model` (as nvidia-smi prints it).
    pub(crate) fn for_model(model: &str) -> ModelSpec {
        let hopper = ModelSpec {
            arch: "Hopper",
            device_id: 0x2330,
            subsys_id: 0x16C1_10DE,
            vbios_major: 0x96,
            board_part: "692-2G520-0200-000",
            gpu_part: "2330-885-A1",
            inforom_img: "G520.0200.00.05",
            compute_cap: "9.0",
            max_sm_mhz: 1980,
            mem_mhz: 2619,
            video_max_mhz: 1545,
            idle_w: 70.0,
            reserved_mib: 551,
            fp32_gflops: 44_800.0,
            fp64_gflops: 52_300.0,
            dcgm_gflops: 1_645.0,
            h2d_gbps: 55.6,
            d2d_gbps: 371.2,
            max_operating_c: 87,
        };
        if model.contains("H200") {
            ModelSpec {
                device_id: 0x2335,
                subsys_id: 0x18BE_10DE,
                board_part: "692-2G520-0280-000",
                gpu_part: "2335-885-A1",
                inforom_img: "G520.0280.00.01",
                mem_mhz: 3201,
                idle_w: 76.0,
                reserved_mib: 603,
                fp32_gflops: 46_100.0,
                fp64_gflops: 53_900.0,
                dcgm_gflops: 1_690.0,
                ..hopper
            }
        } else if model.contains("B200") || model.contains("B100") || model.contains("B300") {
            ModelSpec {
                arch: "Blackwell",
                device_id: 0x2901,
                subsys_id: 0x1999_10DE,
                vbios_major: 0x97,
                board_part: "692-2G525-0220-000",
                gpu_part: "2901-886-A1",
                inforom_img: "G525.0220.00.02",
                compute_cap: "10.0",
                max_sm_mhz: 1965,
                mem_mhz: 3996,
                video_max_mhz: 1665,
                idle_w: 142.0,
                reserved_mib: 695,
                fp32_gflops: 71_500.0,
                fp64_gflops: 36_800.0,
                dcgm_gflops: 2_610.0,
                h2d_gbps: 55.9,
                d2d_gbps: 765.4,
                ..hopper
            }
        } else {
            hopper
        }
    }
}

// ---------------------------------------------------------------------------
// Hardware
// ---------------------------------------------------------------------------

/// One GPU of a node: identity and health. Small and `Copy`; strings are
/// formatted on demand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gpu {
    /// Physical index (its position on the baseboard, 0-based); the index
    /// nvidia-smi prints shifts down when an earlier GPU is missing.
    pub index: u32,
    /// PCI bus number (`0x18` in `00000000:18:00.0`).
    pub pci_bus: u8,
    /// Board serial number (13 digits).
    pub serial: u64,
    /// UUID bytes (`GPU-xxxxxxxx-xxxx-...`).
    pub uuid: [u8; 16],
    /// HGX module id.
    pub module_id: u8,
    /// Idle temperature, °C.
    pub idle_temp_c: u32,
    /// Healthy performance relative to the model's nominal (±1%).
    pub perf: f64,
    /// Whether the GPU is on the bus at all (`GpuMissing` clears it).
    pub present: bool,
    /// Compute speed factor (`SlowGpu`), 1.0 when healthy.
    pub slow_factor: f64,
    /// Temperature under full load when the GPU runs hot (`HotGpu`).
    pub hot_temp_c: Option<u32>,
    /// Uncorrectable DRAM ECC errors since boot (`EccUncorrectable`).
    pub ecc_uncorrectable: u32,
    /// A row remap is pending (`RowRemapPending`).
    pub remap_pending: bool,
    /// Bit `n` set: NVLink `n` is down (`NvlinkDown`).
    pub nvlinks_down: u32,
    /// Host-link copy rate factor (`PcieSlow`), 1.0 when healthy.
    pub pcie_factor: f64,
}

impl Gpu {
    /// `GPU-566e6f65-c38e-b12f-4824-6944218668b9`.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "GPU-{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// `1655022005478`.
    pub fn serial_string(&self) -> String {
        self.serial.to_string()
    }

    /// `00000000:18:00.0`, as nvidia-smi prints it.
    pub fn pci_bus_id(&self) -> String {
        format!("00000000:{:02X}:00.0", self.pci_bus)
    }

    /// Whether any of the GPU's NVLinks is down.
    pub fn nvlink_degraded(&self) -> bool {
        self.nvlinks_down != 0
    }
}

/// One compute-fabric NIC port (`mlx5_N`, port 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IbPort {
    /// Index N of `mlx5_N`.
    pub index: u32,
    /// The port's nominal rate, Gb/s.
    pub nominal_gbps: u32,
    /// The rate the port trained at, Gb/s (lower when `IbDegraded`).
    pub rate_gbps: u32,
    /// Whether the link is up (`IbPortDown` clears it).
    pub up: bool,
    /// Port GUID.
    pub guid: u64,
    /// Subnet LID.
    pub lid: u16,
}

impl IbPort {
    /// `mlx5_0`.
    pub fn name(&self) -> String {
        format!("mlx5_{}", self.index)
    }
}

/// An Xid event the driver logs (in dmesg) once it is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XidEvent {
    /// Physical GPU index.
    pub gpu: u32,
    /// Xid code.
    pub code: u32,
}

/// A hardware fault to inject into one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HwFault {
    /// The GPU fell off the bus: not listed by any tool, Xid 79 in dmesg.
    GpuMissing {
        /// Physical GPU index.
        gpu: u32,
    },
    /// The GPU computes at `factor` (0..1) of its normal speed.
    SlowGpu {
        /// Physical GPU index.
        gpu: u32,
        /// Speed factor, e.g. 0.6.
        factor: f64,
    },
    /// The GPU reaches `temp_c` under full load and throttles.
    HotGpu {
        /// Physical GPU index.
        gpu: u32,
        /// Temperature under full load, °C.
        temp_c: u32,
    },
    /// Uncorrectable (double-bit) DRAM ECC errors: Xid 48.
    EccUncorrectable {
        /// Physical GPU index.
        gpu: u32,
    },
    /// A row remap is pending (GPU reset needed): Xid 63.
    RowRemapPending {
        /// Physical GPU index.
        gpu: u32,
    },
    /// One NVLink of the GPU is down: Xid 74, in-node bandwidth collapses.
    NvlinkDown {
        /// Physical GPU index.
        gpu: u32,
        /// Link number (0 to links_per_gpu - 1).
        link: u32,
    },
    /// The compute-fabric port `mlx5_<port>` is down.
    IbPortDown {
        /// NIC index.
        port: u32,
    },
    /// The port `mlx5_<port>` trained at a lower rate.
    IbDegraded {
        /// NIC index.
        port: u32,
        /// The rate it trained at, Gb/s.
        rate_gbps: u32,
    },
    /// An Xid with `code` on the GPU (a line in dmesg).
    Xid {
        /// Physical GPU index.
        gpu: u32,
        /// Xid code.
        code: u32,
    },
    /// The GPU's host link moves data at `factor` (0..1) of its normal
    /// rate while it still trains at full width and generation (replays on
    /// a marginal riser or retimer, a misconfigured PCIe switch): only a
    /// copy test such as nvbandwidth's host-to-device shows it.
    PcieSlow {
        /// Physical GPU index.
        gpu: u32,
        /// Rate factor, e.g. 0.5.
        factor: f64,
    },
    /// The air entering the chassis is at `temp_c` (a hot aisle, a failed
    /// CRAH, recirculation): the BMC's inlet sensor reads it.
    InletHot {
        /// Inlet temperature, °C.
        temp_c: u32,
    },
}

/// A fault that does not fit the node it was meant for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// No such GPU.
    #[error("node {node} has no GPU {gpu} (it has {count})")]
    NoGpu {
        /// Node name.
        node: String,
        /// The GPU asked for.
        gpu: u32,
        /// GPUs on the node.
        count: u32,
    },
    /// No such NIC.
    #[error("node {node} has no IB port {port} (it has {count})")]
    NoPort {
        /// Node name.
        node: String,
        /// The port asked for.
        port: u32,
        /// Ports on the node.
        count: u32,
    },
    /// No such NVLink.
    #[error("GPU {gpu} of node {node} has no NVLink {link} (it has {count})")]
    NoLink {
        /// Node name.
        node: String,
        /// GPU.
        gpu: u32,
        /// The link asked for.
        link: u32,
        /// Links per GPU.
        count: u32,
    },
    /// A value out of its range.
    #[error("fault on node {node}: {what}")]
    Invalid {
        /// Node name.
        node: String,
        /// What is wrong.
        what: String,
    },
}

/// What one GPU reads right now (Redfish telemetry, nvidia-smi).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuReading {
    /// Physical GPU index.
    pub gpu: u32,
    /// GPU temperature, °C.
    pub temp_c: u32,
    /// HBM temperature, °C.
    pub memory_temp_c: u32,
    /// Board power, W.
    pub power_w: f64,
    /// SM clock, MHz.
    pub sm_clock_mhz: u32,
    /// GPU utilisation, percent.
    pub util_pct: u32,
    /// Clocks are being held down for temperature.
    pub thermal_slowdown: bool,
}

/// The hardware of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeHardware {
    /// The node's host name.
    pub node: String,
    /// The hardware profile the node was built from (shared between nodes).
    pub profile: Arc<HardwareProfile>,
    /// The GPUs, by physical index (missing ones included, `present` false).
    pub gpus: Vec<Gpu>,
    /// The compute-fabric NIC ports.
    pub ib_ports: Vec<IbPort>,
    /// Xids the driver logs once loaded, besides those implied by faults.
    pub xids: Vec<XidEvent>,
    /// The hash of the node name every derived value starts from.
    pub seed: u64,
    /// VBIOS version bytes (`96.00.74.00.01`).
    pub vbios: [u8; 5],
    /// Air temperature at the chassis inlet, °C, as the BMC reads it.
    pub inlet_c: u32,
}

impl NodeHardware {
    /// A healthy node of `profile`, its identity derived from `node`.
    pub fn new(node: &str, profile: &HardwareProfile) -> Self {
        Self::with_profile(node, Arc::new(profile.clone()))
    }

    /// Like [`NodeHardware::new`], sharing one profile between many nodes.
    pub fn with_profile(node: &str, profile: Arc<HardwareProfile>) -> Self {
        let seed = fnv1a(node.as_bytes());
        let spec = ModelSpec::for_model(&profile.gpu.model);
        let gpus = (0..profile.gpu.count)
            .map(|i| {
                let s = mix(seed, 0x100 + u64::from(i));
                let mut uuid = [0u8; 16];
                uuid[..8].copy_from_slice(&mix(s, 1).to_be_bytes());
                uuid[8..].copy_from_slice(&mix(s, 2).to_be_bytes());
                let slot = i as usize % HGX_GPU_BUSES.len();
                Gpu {
                    index: i,
                    pci_bus: HGX_GPU_BUSES[slot]
                        .wrapping_add((i as usize / HGX_GPU_BUSES.len()) as u8),
                    serial: 1_650_000_000_000 + mix(s, 3) % 10_000_000_000,
                    uuid,
                    module_id: HGX_MODULE_IDS[slot],
                    idle_temp_c: 30 + (mix(s, 4) % 9) as u32,
                    perf: 1.0 + signed_unit(s, 5) * 0.008,
                    present: true,
                    slow_factor: 1.0,
                    hot_temp_c: None,
                    ecc_uncorrectable: 0,
                    remap_pending: false,
                    nvlinks_down: 0,
                    pcie_factor: 1.0,
                }
            })
            .collect();
        let ib_ports = (0..profile.infiniband.nics)
            .map(|i| {
                let s = mix(seed, 0x200 + u64::from(i));
                IbPort {
                    index: i,
                    nominal_gbps: profile.infiniband.rate_gbps,
                    rate_gbps: profile.infiniband.rate_gbps,
                    up: true,
                    guid: 0xa088_c203_0000_0000 | (mix(s, 1) & 0xffff_ffff),
                    lid: 1 + (mix(s, 2) % 0xbfff) as u16,
                }
            })
            .collect();
        const MINORS: [u8; 6] = [0x74, 0x99, 0xA5, 0xD9, 0x6A, 0x80];
        let minor = MINORS[(mix(seed, 7) % MINORS.len() as u64) as usize];
        let vbios = [
            spec.vbios_major,
            0x00,
            minor,
            0x00,
            1 + (mix(seed, 8) % 3) as u8,
        ];
        NodeHardware {
            node: node.to_owned(),
            profile,
            gpus,
            ib_ports,
            xids: Vec::new(),
            seed,
            vbios,
            // A cold aisle within ASHRAE's recommended 18-27 C.
            inlet_c: 24,
        }
    }

    /// Injects `fault`; a fault naming a GPU, link or port the node does
    /// not have is refused and changes nothing.
    pub fn apply(&mut self, fault: &HwFault) -> Result<(), FaultError> {
        let count = self.gpus.len() as u32;
        let links = self.profile.gpu.nvlink.links_per_gpu;
        let node = self.node.clone();
        fn gpu_mut<'g>(
            gpus: &'g mut [Gpu],
            gpu: u32,
            node: &str,
            count: u32,
        ) -> Result<&'g mut Gpu, FaultError> {
            gpus.get_mut(gpu as usize).ok_or(FaultError::NoGpu {
                node: node.to_owned(),
                gpu,
                count,
            })
        }
        match *fault {
            HwFault::GpuMissing { gpu } => {
                gpu_mut(&mut self.gpus, gpu, &node, count)?.present = false
            }
            HwFault::SlowGpu { gpu, factor } => {
                if !(factor > 0.0 && factor <= 1.0) {
                    return Err(FaultError::Invalid {
                        node,
                        what: format!("slow GPU factor {factor} is not in (0, 1]"),
                    });
                }
                gpu_mut(&mut self.gpus, gpu, &node, count)?.slow_factor = factor;
            }
            HwFault::HotGpu { gpu, temp_c } => {
                gpu_mut(&mut self.gpus, gpu, &node, count)?.hot_temp_c = Some(temp_c);
            }
            HwFault::EccUncorrectable { gpu } => {
                let g = gpu_mut(&mut self.gpus, gpu, &node, count)?;
                g.ecc_uncorrectable = g.ecc_uncorrectable.max(2);
            }
            HwFault::RowRemapPending { gpu } => {
                gpu_mut(&mut self.gpus, gpu, &node, count)?.remap_pending = true;
            }
            HwFault::NvlinkDown { gpu, link } => {
                if link >= links || link >= 32 {
                    return Err(FaultError::NoLink {
                        node,
                        gpu,
                        link,
                        count: links,
                    });
                }
                gpu_mut(&mut self.gpus, gpu, &node, count)?.nvlinks_down |= 1 << link;
            }
            HwFault::IbPortDown { port } | HwFault::IbDegraded { port, .. } => {
                let nports = self.ib_ports.len() as u32;
                let p = self
                    .ib_ports
                    .get_mut(port as usize)
                    .ok_or(FaultError::NoPort {
                        node,
                        port,
                        count: nports,
                    })?;
                match *fault {
                    HwFault::IbDegraded { rate_gbps, .. } => p.rate_gbps = rate_gbps,
                    _ => p.up = false,
                }
            }
            HwFault::Xid { gpu, code } => {
                gpu_mut(&mut self.gpus, gpu, &node, count)?;
                self.xids.push(XidEvent { gpu, code });
            }
            HwFault::PcieSlow { gpu, factor } => {
                if !(factor > 0.0 && factor <= 1.0) {
                    return Err(FaultError::Invalid {
                        node,
                        what: format!("PCIe rate factor {factor} is not in (0, 1]"),
                    });
                }
                gpu_mut(&mut self.gpus, gpu, &node, count)?.pcie_factor = factor;
            }
            HwFault::InletHot { temp_c } => self.inlet_c = temp_c,
        }
        Ok(())
    }

    /// The GPUs on the bus, in the order tools enumerate them.
    pub fn present_gpus(&self) -> impl Iterator<Item = &Gpu> {
        self.gpus.iter().filter(|g| g.present)
    }

    /// The model constants of this node's GPUs.
    pub(crate) fn spec(&self) -> ModelSpec {
        ModelSpec::for_model(&self.profile.gpu.model)
    }

    /// `96.00.74.00.01`.
    pub fn vbios_version(&self) -> String {
        let v = self.vbios;
        format!(
            "{:02X}.{:02X}.{:02X}.{:02X}.{:02X}",
            v[0], v[1], v[2], v[3], v[4]
        )
    }

    /// The reading of one GPU at `load` (0 idle .. 1 full burn).
    pub fn reading(&self, gpu: &Gpu, load: f64) -> GpuReading {
        let load = load.clamp(0.0, 1.0);
        let spec = self.spec();
        let s = mix(self.seed, 0x300 + u64::from(gpu.index));
        let idle = f64::from(gpu.idle_temp_c);
        let (idle, loaded) = match gpu.hot_temp_c {
            Some(hot) => (idle + 9.0, f64::from(hot)),
            None => (idle, idle + 25.0 + unit(s, 1) * 5.0),
        };
        let temp = idle + (loaded - idle) * load;
        let thermal_slowdown =
            gpu.hot_temp_c.is_some() && load > 0.5 && temp >= f64::from(spec.max_operating_c);
        let limit = f64::from(self.profile.gpu.power_limit_w);
        let full = limit * (0.88 + unit(s, 2) * 0.06);
        let mut power = spec.idle_w * (0.95 + unit(s, 3) * 0.1);
        power += (full - power) * load * gpu.slow_factor.max(0.3);
        if thermal_slowdown {
            power *= 0.82;
        }
        let sm_clock_mhz = if load <= 0.0 {
            345
        } else if thermal_slowdown {
            (spec.max_sm_mhz * 72 / 100) / 15 * 15
        } else {
            spec.max_sm_mhz
        };
        GpuReading {
            gpu: gpu.index,
            temp_c: temp.round() as u32,
            memory_temp_c: (temp + 6.0 + unit(s, 4) * 4.0).round() as u32,
            power_w: (power * 100.0).round() / 100.0,
            sm_clock_mhz,
            util_pct: (load * 100.0).round() as u32,
            thermal_slowdown,
        }
    }

    /// Readings of every present GPU at `load` (0..1); a hot GPU runs
    /// hotter under load and throttles, a slow one draws less power.
    pub fn readings(&self, load: f64) -> Vec<GpuReading> {
        self.present_gpus().map(|g| self.reading(g, load)).collect()
    }

    /// Every Xid the driver logs after boot: injected ones and those the
    /// faults imply (79 for a missing GPU, 48 for ECC, 63 for a pending
    /// remap, 74 for a downed NVLink), in GPU order.
    pub fn all_xids(&self) -> Vec<XidEvent> {
        let mut out = Vec::new();
        for g in &self.gpus {
            let gpu = g.index;
            if !g.present {
                out.push(XidEvent { gpu, code: 79 });
            }
            if g.ecc_uncorrectable > 0 {
                out.push(XidEvent { gpu, code: 48 });
            }
            if g.remap_pending {
                out.push(XidEvent { gpu, code: 63 });
            }
            if g.nvlinks_down != 0 {
                out.push(XidEvent { gpu, code: 74 });
            }
        }
        out.extend(self.xids.iter().copied());
        out
    }

    /// Peak in-node all_reduce bus bandwidth at the largest sizes, GB/s:
    /// ~8% above the profile's floor (±1% per node) when healthy, under
    /// half of it with an NVLink down.
    pub fn nccl_in_node_peak_gbps(&self) -> f64 {
        let base = self.profile.nccl.in_node_busbw_gbps * 1.08;
        let mut peak = base * (1.0 + signed_unit(self.seed, 0x400) * 0.01);
        if self.present_gpus().any(|g| g.nvlinks_down != 0) {
            peak *= 0.44;
        }
        peak
    }

    /// Peak cross-node (ring) bus bandwidth this node allows, GB/s: ~8%
    /// above the cross-node floor when every port is up at full rate,
    /// ~41% of it with a port down (NCCL rings then share a NIC), and
    /// scaled by the slowest port's trained rate when one is degraded.
    pub fn nccl_cross_node_peak_gbps(&self) -> f64 {
        let base = self.profile.nccl.cross_node_busbw_gbps * 1.08;
        let mut peak = base * (1.0 + signed_unit(self.seed, 0x401) * 0.01);
        let mut factor: f64 = 1.0;
        for p in &self.ib_ports {
            if !p.up {
                factor = factor.min(0.41);
            } else if p.rate_gbps < p.nominal_gbps && p.nominal_gbps > 0 {
                factor = factor.min(f64::from(p.rate_gbps) / f64::from(p.nominal_gbps));
            }
        }
        if self.ib_ports.is_empty() {
            factor = 0.1;
        }
        peak *= factor;
        peak.min(self.nccl_in_node_peak_gbps())
    }
}

// ---------------------------------------------------------------------------
// Software state
// ---------------------------------------------------------------------------

/// Full driver versions by branch, as the distributions ship them.
const DRIVER_BRANCHES: &[(u32, &str, &str)] = &[
    (535, "535.247.01", "12.2"),
    (550, "550.163.01", "12.4"),
    (560, "560.35.03", "12.6"),
    (565, "565.57.01", "12.7"),
    (570, "570.133.20", "12.8"),
    (575, "575.57.08", "12.9"),
    (580, "580.82.07", "13.0"),
    (590, "590.48.01", "13.1"),
];

/// The branch picked when a package names none (`nvidia-open`, `cuda-drivers`).
const DEFAULT_BRANCH: u32 = 580;

/// The branch of a full driver version (`570.133.20` -> 570).
pub(crate) fn branch_of(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// The full version of `branch` (unknown branches get a plausible one).
pub(crate) fn driver_version_of(branch: u32) -> String {
    DRIVER_BRANCHES
        .iter()
        .find(|(b, _, _)| *b == branch)
        .map(|(_, v, _)| (*v).to_owned())
        .unwrap_or_else(|| format!("{branch}.86.10"))
}

/// The CUDA version a driver supports, as nvidia-smi prints it.
pub(crate) fn cuda_version_of(driver: &str) -> &'static str {
    let branch = branch_of(driver).unwrap_or(DEFAULT_BRANCH);
    DRIVER_BRANCHES
        .iter()
        .rev()
        .find(|(b, _, _)| *b <= branch)
        .map_or("12.2", |(_, _, c)| c)
}

/// What a package brings to the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PkgKind {
    /// The GPU driver (kernel module, libcuda, NVML, nvidia-smi).
    Driver(Option<u32>),
    /// nvidia-fabricmanager (the service NVSwitch systems need).
    FabricManager(Option<u32>),
    /// DCGM of a major version (3 or 4): dcgmi and nv-hostengine.
    Dcgm(u32),
    /// The NCCL library.
    Nccl,
    /// perftest (ib_write_bw).
    Perftest,
    /// An MPI (mpirun).
    Mpi,
    /// Anything else.
    Other,
}

/// The first number of three digits in `name` (`nvidia-driver-570-open`).
fn branch_in(name: &str) -> Option<u32> {
    name.split(|c: char| !c.is_ascii_digit())
        .find(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
}

/// Classifies a package name (Ubuntu or RHEL spelling).
pub(crate) fn classify(name: &str) -> PkgKind {
    let n = name.to_ascii_lowercase();
    if (n.contains("fabricmanager") || n.contains("fabric-manager")) && !n.contains("-dev") {
        return PkgKind::FabricManager(branch_in(&n));
    }
    if n.starts_with("datacenter-gpu-manager") {
        let major = if n.starts_with("datacenter-gpu-manager-4") {
            4
        } else {
            3
        };
        return PkgKind::Dcgm(major);
    }
    if n.starts_with("libnccl") || n == "nccl" {
        return PkgKind::Nccl;
    }
    if n == "perftest" {
        return PkgKind::Perftest;
    }
    if n.starts_with("openmpi") || n.starts_with("mpich") || n.starts_with("hpcx") {
        return PkgKind::Mpi;
    }
    let driver_prefixes = [
        "nvidia-driver",
        "nvidia-open",
        "cuda-drivers",
        "nvidia-headless",
        "kmod-nvidia",
    ];
    if driver_prefixes.iter().any(|p| n.starts_with(p))
        && !n.contains("-libs")
        && !n.contains("-devel")
    {
        // `nvidia-driver:570-open` (a dnf module) carries its branch too.
        return PkgKind::Driver(branch_in(&n));
    }
    PkgKind::Other
}

/// A systemd unit's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Starts at boot.
    pub enabled: bool,
    /// Running.
    pub active: bool,
    /// The last start failed.
    pub failed: bool,
}

/// Why CUDA applications cannot run on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaProblem {
    /// No driver installed: there is no libcuda.
    NoDriver,
    /// The driver is installed but its kernel module is not loaded (no
    /// reboot or `modprobe nvidia` since the install).
    NotLoaded,
    /// The loaded kernel module is another version than the installed
    /// user-space driver (upgraded without a reboot).
    Mismatch {
        /// Version of the loaded module.
        loaded: String,
        /// Version of the installed libraries.
        installed: String,
    },
    /// NVSwitch system without nvidia-fabricmanager running: CUDA init
    /// fails with "system not yet initialized".
    FabricManagerDown,
}

/// The operating system's side of a node: installed packages, the loaded
/// kernel module, services. Changed by the simulated package managers,
/// `systemctl`, `modprobe`, and [`SoftwareState::boot`].
#[derive(Clone, Debug, PartialEq)]
pub struct SoftwareState {
    /// apt (Ubuntu) or dnf (RHEL).
    pub family: OsFamily,
    /// Installed packages: name -> package version.
    pub packages: BTreeMap<String, String>,
    /// Installed driver version (`570.133.20`), if any.
    pub driver: Option<String>,
    /// Version of the loaded `nvidia` kernel module, if loaded.
    pub loaded_driver: Option<String>,
    /// Installed fabric manager version, if any.
    pub fabricmanager: Option<String>,
    /// Installed DCGM version (`3.3.9`, `4.2.3`), if any.
    pub dcgm: Option<String>,
    /// Installed NCCL version, if any.
    pub nccl: Option<String>,
    /// systemd units the packages brought, by name without `.service`.
    pub services: BTreeMap<String, Service>,
    /// GPU persistence mode (`nvidia-smi -pm 1` or nvidia-persistenced).
    pub persistence_mode: bool,
    /// When the node last booted, seconds since the Unix epoch.
    pub booted_at_unix: u64,
    /// The OS as `hostnamectl` names it (`Ubuntu 24.04 LTS`).
    pub os_name: String,
    /// The running kernel release (`uname -r`).
    pub kernel: String,
    /// Whether `nvidia_peermem` (GPUDirect RDMA) is loaded.
    pub peermem_loaded: bool,
    /// How many times the initramfs was rebuilt since imaging
    /// (`update-initramfs -u`, `dracut -f`).
    pub initramfs_builds: u32,
}

/// The kernel an image's installer puts down (the GA kernel of the
/// release).
fn kernel_of(family: OsFamily, version: &str) -> String {
    match (family, version) {
        (OsFamily::Ubuntu, "22.04") => "5.15.0-126-generic",
        (OsFamily::Ubuntu, _) => "6.8.0-49-generic",
        (OsFamily::Rhel, _) => "5.14.0-503.14.1.el9_5.x86_64",
        (OsFamily::Debian, _) => "6.1.0-37-cloud-amd64",
    }
    .to_owned()
}

/// Units every image has.
const BASE_UNITS: &[&str] = &[
    "ssh",
    "sshd",
    "cron",
    "crond",
    "rsyslog",
    "chrony",
    "chronyd",
    "systemd-journald",
    "systemd-networkd",
    "NetworkManager",
];

/// Package version strings of the driver stack.
pub(crate) const DCGM3_VERSION: &str = "3.3.9";
/// DCGM 4 version.
pub(crate) const DCGM4_VERSION: &str = "4.2.3";
/// NCCL version.
pub(crate) const NCCL_VERSION: &str = "2.26.5";

impl SoftwareState {
    /// A freshly imaged node of `family`: no NVIDIA software.
    pub fn new(family: OsFamily) -> Self {
        let services = BASE_UNITS
            .iter()
            .map(|u| {
                let on = match family {
                    OsFamily::Ubuntu | OsFamily::Debian => {
                        matches!(*u, "ssh" | "cron" | "rsyslog" | "chrony")
                    }
                    OsFamily::Rhel => matches!(*u, "sshd" | "crond" | "rsyslog" | "chronyd"),
                };
                (
                    (*u).to_owned(),
                    Service {
                        enabled: on,
                        active: on,
                        failed: false,
                    },
                )
            })
            .collect();
        SoftwareState {
            family,
            packages: BTreeMap::new(),
            driver: None,
            loaded_driver: None,
            fabricmanager: None,
            dcgm: None,
            nccl: None,
            services,
            persistence_mode: false,
            booted_at_unix: 0,
            os_name: match family {
                OsFamily::Ubuntu => "Ubuntu 24.04 LTS".into(),
                OsFamily::Rhel => "Rocky Linux 9".into(),
                OsFamily::Debian => "Debian GNU/Linux 12 (bookworm)".into(),
            },
            kernel: kernel_of(family, ""),
            peermem_loaded: false,
            initramfs_builds: 0,
        }
    }

    /// The state right after imaging with `image`: an image that carries
    /// the driver stack has driver, fabric manager, DCGM and NCCL installed
    /// and enabled (effective from the first boot).
    pub fn for_image(image: &ImageProfile) -> Self {
        let mut sw = Self::new(image.family);
        sw.os_name = match image.family {
            OsFamily::Ubuntu => format!("Ubuntu {} LTS", image.version),
            OsFamily::Rhel => format!("Rocky Linux {}", image.version),
            OsFamily::Debian => format!("Debian GNU/Linux {}", image.version),
        };
        sw.kernel = kernel_of(image.family, &image.version);
        if image.includes_driver_stack {
            let (driver, fm, dcgm) = match image.family {
                OsFamily::Ubuntu | OsFamily::Debian => (
                    "nvidia-driver-570-server-open",
                    "nvidia-fabricmanager-570",
                    "datacenter-gpu-manager-4-cuda12",
                ),
                OsFamily::Rhel => (
                    "nvidia-driver:570-open",
                    "nvidia-fabric-manager",
                    "datacenter-gpu-manager-4-cuda12",
                ),
            };
            for p in [driver, fm, dcgm, "libnccl2"] {
                sw.install(p, None);
            }
            for unit in ["nvidia-fabricmanager", "nvidia-dcgm"] {
                if let Some(s) = sw.services.get_mut(unit) {
                    s.enabled = true;
                }
            }
        }
        sw
    }

    /// Whether `package` is installed.
    pub fn is_installed(&self, package: &str) -> bool {
        self.packages.contains_key(package)
    }

    /// Whether some installed package is of `kind`.
    pub(crate) fn has_kind(&self, kind: fn(PkgKind) -> bool) -> bool {
        self.packages.keys().any(|p| kind(classify(p)))
    }

    /// The version string a package gets on this OS. `pinned` is the
    /// version asked for (`apt-get install pkg=VERSION`).
    pub(crate) fn package_version(&self, name: &str, pinned: Option<&str>) -> String {
        let upstream = |v: &str| -> String {
            match self.family {
                OsFamily::Ubuntu => format!("{v}-0ubuntu0.24.04.1"),
                OsFamily::Rhel => format!("{v}-1.el9"),
                OsFamily::Debian => format!("{v}-1"),
            }
        };
        if let Some(p) = pinned {
            return p.to_owned();
        }
        match classify(name) {
            PkgKind::Driver(b) | PkgKind::FabricManager(b) => {
                let branch = b
                    .or_else(|| self.driver.as_deref().and_then(branch_of))
                    .unwrap_or(DEFAULT_BRANCH);
                upstream(&driver_version_of(branch))
            }
            PkgKind::Dcgm(4) => format!("1:{DCGM4_VERSION}-1"),
            PkgKind::Dcgm(_) => format!("1:{DCGM3_VERSION}"),
            PkgKind::Nccl => format!("{NCCL_VERSION}-1+cuda12.9"),
            PkgKind::Perftest => "24.10.0-0.66.g9093bae.2410066".to_owned(),
            PkgKind::Mpi => "4.1.6-7ubuntu2".to_owned(),
            PkgKind::Other => {
                let h = fnv1a(name.as_bytes());
                format!(
                    "{}.{}.{}-{}",
                    1 + h % 5,
                    (h >> 8) % 20,
                    (h >> 16) % 10,
                    1 + (h >> 24) % 3
                )
            }
        }
    }

    /// Installs `name` (at `pinned` when given) with its effects: a driver
    /// is installed but not loaded until [`SoftwareState::boot`] or
    /// `modprobe nvidia`; services are installed disabled and stopped.
    pub fn install(&mut self, name: &str, pinned: Option<&str>) {
        let version = self.package_version(name, pinned);
        // `570.133.20-0ubuntu1` / `1:4.2.3-1` -> the upstream part.
        let upstream = version
            .rsplit_once(':')
            .map_or(version.as_str(), |(_, v)| v)
            .split('-')
            .next()
            .unwrap_or_default()
            .to_owned();
        match classify(name) {
            PkgKind::Driver(_) => {
                self.driver = Some(upstream);
                self.services
                    .entry("nvidia-persistenced".into())
                    .or_insert(Service {
                        enabled: true,
                        active: false,
                        failed: false,
                    });
            }
            PkgKind::FabricManager(b) => {
                let v = if branch_of(&upstream).is_some() && upstream.contains('.') {
                    upstream
                } else {
                    driver_version_of(
                        b.or_else(|| self.driver.as_deref().and_then(branch_of))
                            .unwrap_or(DEFAULT_BRANCH),
                    )
                };
                self.fabricmanager = Some(v);
                self.services
                    .entry("nvidia-fabricmanager".into())
                    .or_default();
            }
            PkgKind::Dcgm(major) => {
                self.dcgm = Some(
                    if major == 4 {
                        DCGM4_VERSION
                    } else {
                        DCGM3_VERSION
                    }
                    .to_owned(),
                );
                self.services.entry("nvidia-dcgm".into()).or_default();
            }
            PkgKind::Nccl => self.nccl = Some(NCCL_VERSION.to_owned()),
            PkgKind::Perftest | PkgKind::Mpi | PkgKind::Other => {}
        }
        self.packages.insert(name.to_owned(), version);
    }

    /// Removes `name` and what it brought (a loaded module stays loaded
    /// until the next boot).
    pub fn remove(&mut self, name: &str) -> bool {
        if self.packages.remove(name).is_none() {
            return false;
        }
        let still = |sw: &SoftwareState, f: fn(PkgKind) -> bool| sw.has_kind(f);
        match classify(name) {
            PkgKind::Driver(_) if !still(self, |k| matches!(k, PkgKind::Driver(_))) => {
                self.driver = None;
                self.services.remove("nvidia-persistenced");
            }
            PkgKind::FabricManager(_)
                if !still(self, |k| matches!(k, PkgKind::FabricManager(_))) =>
            {
                self.fabricmanager = None;
                self.services.remove("nvidia-fabricmanager");
            }
            PkgKind::Dcgm(_) if !still(self, |k| matches!(k, PkgKind::Dcgm(_))) => {
                self.dcgm = None;
                self.services.remove("nvidia-dcgm");
            }
            PkgKind::Nccl if !still(self, |k| k == PkgKind::Nccl) => self.nccl = None,
            _ => {}
        }
        true
    }

    /// The node (re)booted at `now_unix`: the installed driver's module is
    /// loaded, enabled services start (or fail), runtime settings such as
    /// `nvidia-smi -pm 1` are lost.
    pub fn boot(&mut self, now_unix: u64) {
        self.booted_at_unix = now_unix;
        self.loaded_driver = self.driver.clone();
        self.persistence_mode = false;
        self.peermem_loaded = false;
        let units: Vec<String> = self.services.keys().cloned().collect();
        for unit in units {
            if let Some(s) = self.services.get_mut(&unit) {
                s.active = false;
                s.failed = false;
            }
            if self.services.get(&unit).is_some_and(|s| s.enabled) {
                let _ = self.start(&unit);
            }
        }
    }

    /// Loads the installed driver's kernel module (`modprobe nvidia`);
    /// `Err` with modprobe's message when there is none. A loaded module of
    /// another version stays (only a reboot replaces it).
    pub fn modprobe_nvidia(&mut self) -> Result<(), String> {
        match (&self.driver, &self.loaded_driver) {
            (None, _) => Err(
                "modprobe: FATAL: Module nvidia not found in directory /lib/modules/6.8.0-60-generic"
                    .to_owned(),
            ),
            (Some(_), Some(_)) => Ok(()),
            (Some(v), None) => {
                self.loaded_driver = Some(v.clone());
                Ok(())
            }
        }
    }

    /// Loads the kernel module `name` as modprobe does, dependencies
    /// first: the NVIDIA modules need the installed driver, `nvidia_peermem`
    /// also needs the InfiniBand stack (`has_ib`). Other modules load.
    pub fn load_module(&mut self, name: &str, has_ib: bool) -> Result<(), String> {
        let name = name.replace('-', "_");
        if !name.starts_with("nvidia") {
            return Ok(());
        }
        self.modprobe_nvidia()
            .map_err(|e| e.replace("Module nvidia", &format!("Module {name}")))?;
        if name == "nvidia_peermem" {
            if !has_ib {
                return Err(
                    "modprobe: ERROR: could not insert 'nvidia_peermem': Invalid argument"
                        .to_owned(),
                );
            }
            self.peermem_loaded = true;
        }
        Ok(())
    }

    /// Starts `unit`; `Err` explains why it failed (the unit is then
    /// `failed`). `None` inside the error: no such unit.
    pub fn start(&mut self, unit: &str) -> Result<(), Option<String>> {
        let unit = unit.strip_suffix(".service").unwrap_or(unit);
        let why: Option<String> = match unit {
            "nvidia-fabricmanager" => match (&self.loaded_driver, &self.fabricmanager) {
                (None, _) => Some("NVIDIA driver is not loaded".to_owned()),
                (Some(d), Some(fm)) if branch_of(d) != branch_of(fm) || d != fm => Some(format!(
                    "fabric manager NVIDIA GPU driver interface version {fm} don't match with driver version {d}. Please update with matching NVIDIA driver package."
                )),
                _ => None,
            },
            "nvidia-persistenced" if self.loaded_driver.is_none() => {
                Some("Failed to query NVIDIA devices. Please ensure that the NVIDIA device files (/dev/nvidia*) exist".to_owned())
            }
            "nvidia-dcgm" if self.nvml_problem().is_some() => {
                Some("nv-hostengine: Failed to initialize NVML".to_owned())
            }
            _ => None,
        };
        let Some(s) = self.services.get_mut(unit) else {
            return Err(None);
        };
        match why {
            Some(why) => {
                s.active = false;
                s.failed = true;
                Err(Some(why))
            }
            None => {
                s.active = true;
                s.failed = false;
                if unit == "nvidia-persistenced" {
                    self.persistence_mode = true;
                }
                Ok(())
            }
        }
    }

    /// Stops `unit`; false if there is no such unit.
    pub fn stop(&mut self, unit: &str) -> bool {
        let unit = unit.strip_suffix(".service").unwrap_or(unit);
        match self.services.get_mut(unit) {
            Some(s) => {
                s.active = false;
                s.failed = false;
                true
            }
            None => false,
        }
    }

    /// Whether `unit` is running.
    pub fn is_active(&self, unit: &str) -> bool {
        let unit = unit.strip_suffix(".service").unwrap_or(unit);
        self.services.get(unit).is_some_and(|s| s.active)
    }

    /// Why NVML (nvidia-smi, dcgmi) cannot talk to the driver, if it cannot.
    pub(crate) fn nvml_problem(&self) -> Option<CudaProblem> {
        match (&self.driver, &self.loaded_driver) {
            (None, None) => Some(CudaProblem::NoDriver),
            (Some(_), None) => Some(CudaProblem::NotLoaded),
            (None, Some(_)) => Some(CudaProblem::NoDriver),
            (Some(i), Some(l)) if i != l => Some(CudaProblem::Mismatch {
                loaded: l.clone(),
                installed: i.clone(),
            }),
            _ => None,
        }
    }

    /// Why CUDA applications cannot run on `hw`, if they cannot.
    pub fn cuda_problem(&self, hw: &NodeHardware) -> Option<CudaProblem> {
        if let Some(p) = self.nvml_problem() {
            return Some(p);
        }
        if hw.profile.nvswitch && !self.is_active("nvidia-fabricmanager") {
            return Some(CudaProblem::FabricManagerDown);
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profiles::Catalog;

    /// A built-in profile by name.
    pub(crate) fn profile(name: &str) -> HardwareProfile {
        Catalog::builtin().unwrap().hardware[name].profile.clone()
    }

    pub(crate) fn h100() -> HardwareProfile {
        profile("hgx-h100-80gb-8x")
    }

    #[test]
    fn identity_is_deterministic_and_distinct() {
        let p = h100();
        let a = NodeHardware::new("node001", &p);
        let b = NodeHardware::new("node001", &p);
        let c = NodeHardware::new("node002", &p);
        assert_eq!(a, b);
        assert_ne!(a.gpus[0].uuid, c.gpus[0].uuid);
        assert_eq!(a.gpus.len(), 8);
        assert_eq!(a.ib_ports.len(), 8);
        let buses: Vec<String> = a.gpus.iter().map(Gpu::pci_bus_id).collect();
        assert_eq!(buses[0], "00000000:18:00.0");
        assert_eq!(buses[7], "00000000:DB:00.0");
        let uuid = a.gpus[3].uuid_string();
        assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "{uuid}");
        assert_eq!(a.gpus[0].serial_string().len(), 13);
        assert!(a.vbios_version().starts_with("96.00."));
    }

    #[test]
    fn faults_out_of_range_are_refused() {
        let mut hw = NodeHardware::new("n", &h100());
        assert!(hw.apply(&HwFault::GpuMissing { gpu: 8 }).is_err());
        assert!(hw.apply(&HwFault::IbPortDown { port: 9 }).is_err());
        assert!(hw.apply(&HwFault::NvlinkDown { gpu: 0, link: 18 }).is_err());
        assert!(
            hw.apply(&HwFault::SlowGpu {
                gpu: 0,
                factor: 0.0
            })
            .is_err()
        );
        assert!(
            hw.apply(&HwFault::PcieSlow {
                gpu: 0,
                factor: 1.5
            })
            .is_err()
        );
        assert!(
            hw.apply(&HwFault::PcieSlow {
                gpu: 8,
                factor: 0.5
            })
            .is_err()
        );
        assert_eq!(hw, NodeHardware::new("n", &h100()));
        hw.apply(&HwFault::InletHot { temp_c: 41 }).unwrap();
        assert_eq!(hw.inlet_c, 41);
    }

    #[test]
    fn hot_gpu_runs_hotter_under_load() {
        let mut hw = NodeHardware::new("n", &h100());
        hw.apply(&HwFault::HotGpu { gpu: 2, temp_c: 93 }).unwrap();
        let idle = hw.readings(0.0);
        let busy = hw.readings(1.0);
        assert_eq!(busy[2].temp_c, 93);
        assert!(busy[2].thermal_slowdown);
        assert!(idle[2].temp_c < busy[2].temp_c);
        for r in busy.iter().filter(|r| r.gpu != 2) {
            assert!(r.temp_c < 85, "{r:?}");
            assert!(r.power_w > 550.0, "{r:?}");
        }
        assert!(idle.iter().all(|r| r.power_w < 100.0));
    }

    #[test]
    fn missing_gpu_is_not_read() {
        let mut hw = NodeHardware::new("n", &h100());
        hw.apply(&HwFault::GpuMissing { gpu: 5 }).unwrap();
        let r = hw.readings(0.5);
        assert_eq!(r.len(), 7);
        assert!(r.iter().all(|r| r.gpu != 5));
        assert_eq!(hw.all_xids(), [XidEvent { gpu: 5, code: 79 }]);
    }

    #[test]
    fn package_classes() {
        assert_eq!(
            classify("nvidia-driver-570-server-open"),
            PkgKind::Driver(Some(570))
        );
        assert_eq!(
            classify("cuda-drivers-fabricmanager-570"),
            PkgKind::FabricManager(Some(570))
        );
        assert_eq!(classify("nvidia-open"), PkgKind::Driver(None));
        assert_eq!(
            classify("nvidia-driver:570-open"),
            PkgKind::Driver(Some(570))
        );
        assert_eq!(
            classify("datacenter-gpu-manager-4-cuda12"),
            PkgKind::Dcgm(4)
        );
        assert_eq!(classify("libnccl2"), PkgKind::Nccl);
        assert_eq!(classify("curl"), PkgKind::Other);
    }

    #[test]
    fn driver_loads_at_boot_and_fabric_manager_needs_it() {
        let mut sw = SoftwareState::new(OsFamily::Ubuntu);
        let hw = NodeHardware::new("n", &h100());
        assert_eq!(sw.cuda_problem(&hw), Some(CudaProblem::NoDriver));
        sw.install("nvidia-driver-570-server-open", None);
        sw.install("nvidia-fabricmanager-570", None);
        assert_eq!(sw.cuda_problem(&hw), Some(CudaProblem::NotLoaded));
        assert!(sw.start("nvidia-fabricmanager").is_err());
        sw.services.get_mut("nvidia-fabricmanager").unwrap().enabled = true;
        sw.boot(1_700_000_000);
        assert_eq!(sw.loaded_driver.as_deref(), Some("570.133.20"));
        assert!(sw.is_active("nvidia-fabricmanager"));
        assert!(sw.persistence_mode);
        assert_eq!(sw.cuda_problem(&hw), None);
        // An upgrade without a reboot leaves the old module loaded.
        sw.install("nvidia-driver-580-server-open", None);
        assert!(matches!(
            sw.cuda_problem(&hw),
            Some(CudaProblem::Mismatch { .. })
        ));
    }

    #[test]
    fn image_with_driver_stack_is_ready_after_first_boot() {
        let image = ImageProfile {
            name: "x".into(),
            description: "x".into(),
            family: OsFamily::Ubuntu,
            version: "24.04".into(),
            includes_driver_stack: true,
            ..ImageProfile::default()
        };
        let mut sw = SoftwareState::for_image(&image);
        sw.boot(0);
        assert_eq!(sw.cuda_problem(&NodeHardware::new("n", &h100())), None);
    }
}
