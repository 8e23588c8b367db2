//! Hardware profiles: what a node of a given model must prove (GPU count and
//! model, links, thermal limits, bandwidth floors, fatal Xids).

use serde::Serialize;

use crate::profiles::firmware::{BiosBaseline, FirmwareComponent};
use crate::yaml::Node;
use crate::yaml::decode::{ByteSize, Cx, FromNode, HumanDuration};

/// Everything kiln expects of one server model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HardwareProfile {
    /// The profile's name, as inventories refer to it.
    pub name: String,
    /// A one-line description.
    pub description: String,
    /// The GPUs.
    pub gpu: GpuSpec,
    /// Whether the GPUs hang off NVSwitches (needs nvidia-fabricmanager).
    pub nvswitch: bool,
    /// The compute-fabric NICs.
    pub infiniband: InfinibandSpec,
    /// The burn-in.
    pub burnin: BurninSpec,
    /// DCGM diagnostics.
    pub dcgm: DcgmSpec,
    /// NCCL bandwidth floors.
    pub nccl: NcclSpec,
    /// nvbandwidth floors.
    pub nvbandwidth: NvbandwidthSpec,
    /// ib_write_bw floor.
    pub ib_write_bw: IbWriteBwSpec,
    /// Xid handling.
    pub xid: XidSpec,
    /// The NVIDIA driver stack the drivers stage installs and verifies.
    pub drivers: DriverStack,
    /// The firmware baseline the firmware stage brings nodes to (empty:
    /// firmware is only listed, as preflight always did).
    pub firmware: Vec<FirmwareComponent>,
    /// The BIOS baseline (default: nothing checked).
    pub bios: BiosBaseline,
}

/// The pinned NVIDIA software of a server model: what the drivers stage
/// installs and what verification holds a node to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriverStack {
    /// The driver branch (`570`): package names carry it.
    pub branch: u32,
    /// The exact driver version (`570.133.20`); `nvidia-smi` must show it,
    /// and fabric manager must match it to the digit.
    pub version: String,
    /// Whether the open GPU kernel modules are required (Blackwell only
    /// runs them; NVIDIA recommends them from Turing on).
    pub open_kernel_modules: bool,
    /// DCGM major version (3 or 4).
    pub dcgm_major: u32,
    /// CUDA toolkit `MAJOR.MINOR` (`12.8`).
    pub cuda: String,
    /// NCCL version (`2.26.5`).
    pub nccl: String,
    /// The OpenPGP fingerprint (40 hex digits, upper case) of the key that
    /// signs NVIDIA's apt repositories: the one key `cuda-keyring` must
    /// hold before the drivers stage trusts it. `None`: Ubuntu and Debian
    /// installs refuse to start.
    pub repo_key: Option<String>,
    /// The same for NVIDIA's RPM repositories (their `D42D0685.pub`), a
    /// different key. `None`: RHEL installs refuse to start.
    pub rpm_repo_key: Option<String>,
    /// Where the test tools' sources come from and their pinned digests.
    pub tools: ToolSources,
}

/// The sources of the test tools the drivers stage builds where a node
/// lacks them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ToolSources {
    /// nccl-tests (`all_reduce_perf` and friends).
    pub nccl_tests: ToolSource,
    /// gpu-burn.
    pub gpu_burn: ToolSource,
    /// nvbandwidth.
    pub nvbandwidth: ToolSource,
}

/// One tool's source tarball.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ToolSource {
    /// The tarball's URL (`None`: the site mirror's `tools/NAME.tar.gz`, or
    /// upstream's release without a mirror).
    pub url: Option<String>,
    /// Its SHA-256 (64 hex digits, lower case). `None`: the tool is not
    /// built; a node without it fails the install.
    pub sha256: Option<String>,
}

/// `text` as an OpenPGP v4 fingerprint: 40 hex digits, spaces allowed,
/// upper-cased. `None` when it is not one.
pub fn normalise_fingerprint(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_uppercase())
}

/// `text` as a SHA-256 digest: 64 hex digits, lower-cased. `None` when it
/// is not one.
pub fn normalise_sha256(text: &str) -> Option<String> {
    let hex = text.trim();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// The GPUs of a node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuSpec {
    /// How many GPUs a healthy node shows.
    pub count: u32,
    /// The model exactly as `nvidia-smi --query-gpu=name` prints it.
    pub model: String,
    /// Total memory per GPU as nvidia-smi reports it, MiB.
    pub memory_mib: u64,
    /// Board power limit, W.
    pub power_limit_w: u32,
    /// NVLink.
    pub nvlink: NvlinkSpec,
    /// The GPU's PCIe link.
    pub pcie: PcieSpec,
}

/// NVLink per GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NvlinkSpec {
    /// Links per GPU that must be up.
    pub links_per_gpu: u32,
    /// Per-link speed as `nvidia-smi nvlink -s` prints it, GB/s.
    pub link_gbps: f64,
}

/// A PCIe link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PcieSpec {
    /// Maximum generation.
    pub generation: u32,
    /// Maximum width (lanes).
    pub width: u32,
}

/// Compute-fabric NICs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InfinibandSpec {
    /// How many.
    pub nics: u32,
    /// Port rate, Gb/s.
    pub rate_gbps: u32,
}

/// Which burn-in tool a profile runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BurninTool {
    /// wilicc/gpu-burn.
    GpuBurn,
    /// DCGM diagnostics (`dcgmi diag`).
    Dcgm,
}

/// The burn-in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BurninSpec {
    /// Tool.
    pub tool: BurninTool,
    /// How long, seconds.
    pub duration_s: u64,
    /// GPU temperature that fails the node, °C.
    pub max_temp_c: u32,
    /// How far below the best GPU in its node a GPU may fall, percent.
    pub max_spread_pct: f64,
    /// Chassis inlet air temperature, as the BMC reads it during the burn,
    /// that fails the node, °C. Optional in a profile:
    /// [`DEFAULT_MAX_INLET_C`] when left out.
    pub max_inlet_c: f64,
}

/// The inlet limit of a profile that names none: the upper end of ASHRAE
/// TC 9.9 class A2's allowable inlet range (10-35 C dry bulb; "Thermal
/// Guidelines for Data Processing Environments", 5th ed., the class most
/// enterprise servers are rated for). Above it the vendor no longer
/// promises the cooling a full GPU load needs, so a burn-in there proves
/// nothing about the node.
pub const DEFAULT_MAX_INLET_C: f64 = 35.0;

/// DCGM diagnostics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DcgmSpec {
    /// `dcgmi diag -r` level.
    pub level: u32,
}

/// NCCL bandwidth floors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NcclSpec {
    /// Collectives to run (`all_reduce`, `all_gather`, …).
    pub collectives: Vec<String>,
    /// Largest message size, bytes; floors apply at this size.
    pub max_bytes: u64,
    /// busbw floor inside one node, GB/s.
    pub in_node_busbw_gbps: f64,
    /// busbw floor across nodes (ring), GB/s.
    pub cross_node_busbw_gbps: f64,
}

/// nvbandwidth floors, GB/s.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NvbandwidthSpec {
    /// Host to device, per GPU.
    pub h2d_gbps: f64,
    /// Device to host, per GPU.
    pub d2h_gbps: f64,
    /// Device to device read, per pair.
    pub d2d_gbps: f64,
}

/// ib_write_bw floor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IbWriteBwSpec {
    /// Per port, Gb/s.
    pub min_gbps: f64,
}

/// Xid handling.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct XidSpec {
    /// Xid codes that fail a node.
    pub fail: Vec<u32>,
}

/// Reads a mapping with `$fields` decoded by their types, and any fields of
/// a trailing `optional { … }` block defaulted when absent; `None` if any
/// field failed (each failure already reported).
macro_rules! decode_struct {
    (
        $cx:expr, $node:expr, $what:literal,
        $ty:ident { $($field:ident $(as $key:literal)? : $fty:ty $(=> $conv:expr)?),* $(,)? }
        $(optional { $($ofield:ident : $ofty:ty),* $(,)? })?
    ) => {{
        let mut m = $cx.map($node, $what)?;
        $( let $field: Option<$fty> = m.req($cx, decode_struct!(@key $field $($key)?)); )*
        // An optional field may be absent (its default), but a malformed
        // one fails the whole struct.
        let before = $cx.error_count();
        $($( let $ofield: Option<$ofty> = m.opt($cx, stringify!($ofield)); )*)?
        let optional_ok = $cx.error_count() == before;
        m.finish($cx);
        optional_ok.then_some(())?;
        Some($ty {
            $( $field: decode_struct!(@conv $field? $(, $conv)?), )*
            $($( $ofield: $ofield.unwrap_or_default(), )*)?
        })
    }};
    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:literal) => { $key };
    (@conv $e:expr) => { $e };
    (@conv $e:expr, $conv:expr) => { ($conv)($e) };
}

impl FromNode for HardwareProfile {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        // The baselines are optional: a profile without them checks none.
        decode_struct!(
            cx,
            node,
            "hardware profile",
            HardwareProfile {
                name: String,
                description: String,
                gpu: GpuSpec,
                nvswitch: bool,
                infiniband: InfinibandSpec,
                burnin: BurninSpec,
                dcgm: DcgmSpec,
                nccl: NcclSpec,
                nvbandwidth: NvbandwidthSpec,
                ib_write_bw: IbWriteBwSpec,
                xid: XidSpec,
                drivers: DriverStack,
            }
            optional {
                firmware: Vec<FirmwareComponent>,
                bios: BiosBaseline,
            }
        )
    }
}

impl FromNode for DriverStack {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "drivers")?;
        let branch: Option<u32> = m.req(cx, "branch");
        let version: Option<String> = m.req(cx, "version");
        let open_kernel_modules: Option<bool> = m.req(cx, "open_kernel_modules");
        let dcgm_major: Option<u32> = m.req(cx, "dcgm_major");
        let cuda: Option<String> = m.req(cx, "cuda");
        let nccl: Option<String> = m.req(cx, "nccl");
        let mut ok = true;
        let mut key = |cx: &mut Cx, name: &'static str| -> Option<String> {
            let n = m.get(name)?;
            let text = String::from_node(cx, n)?;
            let fpr = normalise_fingerprint(&text);
            if fpr.is_none() {
                cx.error(
                    n.pos,
                    format!(
                        "drivers.{name} `{text}` is not an OpenPGP fingerprint (40 hex digits, spaces allowed)"
                    ),
                );
                ok = false;
            }
            fpr
        };
        let repo_key = key(cx, "repo_key");
        let rpm_repo_key = key(cx, "rpm_repo_key");
        let tools = match m.get("tools") {
            Some(n) if n.value != crate::yaml::Value::Null => match ToolSources::from_node(cx, n) {
                Some(t) => t,
                None => {
                    ok = false;
                    ToolSources::default()
                }
            },
            _ => ToolSources::default(),
        };
        m.finish(cx);
        let spec = DriverStack {
            branch: branch?,
            version: version?,
            open_kernel_modules: open_kernel_modules?,
            dcgm_major: dcgm_major?,
            cuda: cuda?,
            nccl: nccl?,
            repo_key,
            rpm_repo_key,
            tools,
        };
        let digits = |s: &str, parts: usize| {
            let v: Vec<&str> = s.split('.').collect();
            v.len() == parts
                && v.iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        if !digits(&spec.version, 3) || !spec.version.starts_with(&format!("{}.", spec.branch)) {
            cx.error(
                node.pos,
                format!(
                    "drivers.version `{}` must be a full driver version of branch {} (like {}.133.20)",
                    spec.version, spec.branch, spec.branch
                ),
            );
            ok = false;
        }
        if !(3..=4).contains(&spec.dcgm_major) {
            cx.error(
                node.pos,
                format!("drivers.dcgm_major {} is not 3 or 4", spec.dcgm_major),
            );
            ok = false;
        }
        if !digits(&spec.cuda, 2) {
            cx.error(
                node.pos,
                format!("drivers.cuda `{}` is not MAJOR.MINOR", spec.cuda),
            );
            ok = false;
        }
        if !digits(&spec.nccl, 3) {
            cx.error(
                node.pos,
                format!("drivers.nccl `{}` is not MAJOR.MINOR.PATCH", spec.nccl),
            );
            ok = false;
        }
        ok.then_some(spec)
    }
}

impl FromNode for ToolSources {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "drivers.tools")?;
        let nccl_tests = m.opt(cx, "nccl_tests");
        let gpu_burn = m.opt(cx, "gpu_burn");
        let nvbandwidth = m.opt(cx, "nvbandwidth");
        let before = cx.error_count();
        m.finish(cx);
        (cx.error_count() == before).then(|| ToolSources {
            nccl_tests: nccl_tests.unwrap_or_default(),
            gpu_burn: gpu_burn.unwrap_or_default(),
            nvbandwidth: nvbandwidth.unwrap_or_default(),
        })
    }
}

impl FromNode for ToolSource {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let before = cx.error_count();
        let mut m = cx.map(node, "tool source")?;
        let url: Option<String> = m.opt(cx, "url");
        let sha256 = match m.get("sha256") {
            Some(n) if n.value != crate::yaml::Value::Null => {
                let text = String::from_node(cx, n)?;
                let sum = normalise_sha256(&text);
                if sum.is_none() {
                    cx.error(
                        n.pos,
                        format!("sha256 `{text}` is not a SHA-256 digest (64 hex digits)"),
                    );
                }
                sum
            }
            _ => None,
        };
        m.finish(cx);
        if let Some(u) = &url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            cx.error(
                node.pos,
                format!("tool source url `{u}` is not an http:// or https:// URL"),
            );
        }
        (cx.error_count() == before).then_some(ToolSource { url, sha256 })
    }
}

impl FromNode for GpuSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(
            cx,
            node,
            "gpu",
            GpuSpec {
                count: u32,
                model: String,
                memory_mib: u64,
                power_limit_w: u32,
                nvlink: NvlinkSpec,
                pcie: PcieSpec,
            }
        )
    }
}

impl FromNode for NvlinkSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(
            cx,
            node,
            "nvlink",
            NvlinkSpec {
                links_per_gpu: u32,
                link_gbps: f64
            }
        )
    }
}

impl FromNode for PcieSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(cx, node, "pcie", PcieSpec { generation as "gen": u32, width: u32 })
    }
}

impl FromNode for InfinibandSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(
            cx,
            node,
            "infiniband",
            InfinibandSpec {
                nics: u32,
                rate_gbps: u32
            }
        )
    }
}

crate::keywords!(BurninTool, "burn-in tool", [
    "gpu-burn" => BurninTool::GpuBurn,
    "dcgm" => BurninTool::Dcgm,
]);

impl FromNode for BurninSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "burnin")?;
        let tool = m.req::<BurninTool>(cx, "tool");
        let duration = m.req::<HumanDuration>(cx, "duration");
        let max_temp_c = m.req::<u32>(cx, "max_temp_c");
        let max_spread_pct = m.req::<f64>(cx, "max_spread_pct");
        let max_inlet_c = m.opt::<f64>(cx, "max_inlet_c");
        m.finish(cx);
        Some(BurninSpec {
            tool: tool?,
            duration_s: duration?.0.as_secs(),
            max_temp_c: max_temp_c?,
            max_spread_pct: max_spread_pct?,
            max_inlet_c: max_inlet_c.unwrap_or(DEFAULT_MAX_INLET_C),
        })
    }
}

impl FromNode for DcgmSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let spec = decode_struct!(cx, node, "dcgm", DcgmSpec { level: u32 })?;
        if !(1..=4).contains(&spec.level) {
            cx.error(node.pos, format!("dcgm level {} is not 1 to 4", spec.level));
            return None;
        }
        Some(spec)
    }
}

impl FromNode for NcclSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(cx, node, "nccl", NcclSpec {
            collectives: Vec<String>,
            max_bytes: ByteSize => |b: ByteSize| b.0,
            in_node_busbw_gbps: f64, cross_node_busbw_gbps: f64,
        })
    }
}

impl FromNode for NvbandwidthSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(
            cx,
            node,
            "nvbandwidth",
            NvbandwidthSpec {
                h2d_gbps: f64,
                d2h_gbps: f64,
                d2d_gbps: f64
            }
        )
    }
}

impl FromNode for IbWriteBwSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(cx, node, "ib_write_bw", IbWriteBwSpec { min_gbps: f64 })
    }
}

impl FromNode for XidSpec {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        decode_struct!(cx, node, "xid", XidSpec { fail: Vec<u32> })
    }
}
