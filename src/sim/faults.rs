//! The faults file of `kiln sim up --faults FILE`: which simulated nodes
//! misbehave, and how. Each rule picks nodes with the `--select` syntax and
//! lists faults; a node collects the faults of every rule that selects it,
//! later rules overriding earlier ones field by field.
//!
//! ```yaml
//! faults:
//!   - nodes: "r01-n03"
//!     bmc_latency: 200ms
//!     bmc_503_rate: 0.2
//!     gpu_missing: 3
//!   - nodes: "rack:r02"
//!     ib_degraded: { port: 1, rate_gbps: 200 }
//!   - nodes: "r01-n05"
//!     pcie_slow: { gpu: 2, factor: 0.5 }
//!     inlet_hot: { temp_c: 41 }
//!   - nodes: "rack:r03"          # BMC trees shaped as on other servers
//!     bmc_sled: true             # a second host system with its own GPUs
//!     bmc_gpus_as_pcie: true     # GPUs only as PCIe devices and functions
//!     bmc_page_size: 3           # collections in pages, with next links
//!     bmc_unlinked_chassis: true # the system links no chassis
//!     bmc_null_power: true       # PowerConsumedWatts null
//!     bmc_gpu_model: { model: "AMD Instinct MI250X OAM", vendor: "AMD" }
//!   - nodes: "r01-n02"
//!     bmc_close_delimited_errors: true # errors end by a close, no close_notify
//!     bmc_bios_ignore: BootMode  # this BIOS attribute is accepted, never applied
//!     bmc_refused_insert_param: WriteProtected # InsertMedia refuses it (400),
//!                                # and its ActionInfo does not declare it
//!     bmc_push_only: true        # no SimpleUpdate: firmware is uploaded
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::diag::{Diagnostic, Source};
use crate::inventory::{Node, Selection};
use crate::sim::hw::HwFault;
use crate::yaml::Node as YamlNode;
use crate::yaml::decode::{Cx, FromNode, HumanDuration, Spanned};

/// Faults that act on a node's BMC.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BmcFaults {
    /// Added to every response.
    pub latency: Duration,
    /// Up to this much more, varying per request.
    pub jitter: Duration,
    /// Share of requests (0..1) answered `503 Service Unavailable`.
    pub unavailable_rate: f64,
    /// The `Retry-After` those 503s carry.
    pub retry_after: Duration,
    /// The BMC accepts connections but never answers.
    pub hang: bool,
    /// The next N virtual-media inserts fail.
    pub media_insert_failures: u32,
    /// Error replies (status 400 and up) carry no length and end by
    /// closing TCP without TLS `close_notify`, as some BMCs' web servers
    /// do; the client must take the close as the end of the body.
    pub close_delimited_errors: bool,
    /// How firmware updates go wrong.
    pub update: UpdateFault,
    /// A BIOS attribute the BMC accepts on PATCH but never applies at reset.
    pub bios_ignore: Option<String>,
    /// An InsertMedia parameter the BMC refuses with 400 and leaves out of
    /// the action's ActionInfo, beyond what its flavour refuses.
    pub refused_insert_param: Option<String>,
    /// How the BMC's tree differs from its flavour's mockup.
    pub tree: TreeShape,
}

/// A way a firmware update goes wrong (`bmc_update_fault` in the file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateFault {
    /// Updates go well.
    #[default]
    None,
    /// The BMC rejects every image (400 with a Redfish message).
    Rejected,
    /// The update task ends in `Exception` halfway.
    Exception,
    /// The BMC reboots halfway through (503s for a while), then finishes.
    Reboot,
    /// The task completes but the version stays what it was.
    Unchanged,
}

impl UpdateFault {
    fn parse(text: &str) -> Option<UpdateFault> {
        Some(match text {
            "none" => UpdateFault::None,
            "rejected" => UpdateFault::Rejected,
            "exception" => UpdateFault::Exception,
            "reboot" => UpdateFault::Reboot,
            "unchanged" => UpdateFault::Unchanged,
            _ => return None,
        })
    }
}

/// Shapes of Redfish trees seen on servers the flavours' mockups do not
/// cover: each is a way a BMC may lay out the same facts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TreeShape {
    /// A two-node sled: the BMC also serves the other node's system (with
    /// GPUs of its own, in the same chassis), and lists an enclosure
    /// manager before its own.
    pub sled: bool,
    /// GPUs are not processors: each is a PCIe device of the chassis
    /// named after the HGX board, whose function says `DisplayController`
    /// and the maker's PCI vendor id.
    pub gpus_as_pcie: bool,
    /// Collections answer in pages of this many members, each with
    /// `Members@odata.nextLink` to the next.
    pub page_size: Option<usize>,
    /// The system links no chassis; the chassis still names the system.
    pub unlinked_chassis: bool,
    /// `PowerConsumedWatts` is null; `PowerMetrics.AverageConsumedWatts`
    /// and the power supplies' `PowerInputWatts` carry the draw.
    pub null_power: bool,
    /// The GPUs the BMC lists are this model by this maker (the wrong
    /// parts fitted), instead of the hardware profile's.
    pub gpu_model: Option<(String, String)>,
    /// UpdateService offers no `SimpleUpdate`, only its multipart push
    /// URI (where the flavour's mockup has one), as some BMCs do: firmware
    /// must be uploaded.
    pub push_only: bool,
}

/// Faults that act on the host: boot, SSH and hardware.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostFaults {
    /// The node hangs while booting: it never answers SSH.
    pub boot_hang: bool,
    /// The installer cannot use the seed it fetched (as if its user-data
    /// were mangled on the way): it stops with `installer: …`.
    pub broken_seed: bool,
    /// SSH connections are dropped this long into a command.
    pub ssh_drop_after: Option<Duration>,
    /// The next N package installs fail.
    pub package_install_failures: u32,
    /// Hardware faults, applied to the node's hardware model.
    pub hardware: Vec<HwFault>,
}

/// Everything wrong with one node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFaults {
    /// BMC faults.
    pub bmc: BmcFaults,
    /// Host faults.
    pub host: HostFaults,
}

impl NodeFaults {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        *self == NodeFaults::default()
    }
}

/// One rule of the file.
#[derive(Clone, Debug)]
struct Rule {
    selection: Selection,
    bmc: PartialBmc,
    host: HostFaults,
}

#[derive(Clone, Debug, Default)]
struct PartialBmc {
    latency: Option<Duration>,
    jitter: Option<Duration>,
    unavailable_rate: Option<f64>,
    retry_after: Option<Duration>,
    hang: Option<bool>,
    media_insert_failures: Option<u32>,
    close_delimited_errors: Option<bool>,
    update: Option<UpdateFault>,
    bios_ignore: Option<String>,
    refused_insert_param: Option<String>,
    sled: Option<bool>,
    gpus_as_pcie: Option<bool>,
    page_size: Option<usize>,
    unlinked_chassis: Option<bool>,
    null_power: Option<bool>,
    gpu_model: Option<(String, String)>,
    push_only: Option<bool>,
}

/// A parsed faults file.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    rules: Vec<Rule>,
}

/// A faults file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    /// The file could not be read.
    #[error("cannot read faults file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file has errors, each with its position.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.render(false))
        .collect::<String>()
        .trim_end()
        .to_owned()
}

impl FaultPlan {
    /// No faults at all.
    pub fn none() -> FaultPlan {
        FaultPlan::default()
    }

    /// Reads a faults file.
    pub fn load(path: &Path) -> Result<FaultPlan, FaultsError> {
        let text = std::fs::read_to_string(path).map_err(|source| FaultsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        FaultPlan::parse(&path.display().to_string(), &text)
    }

    /// Parses faults-file text; `name` appears in messages.
    pub fn parse(name: &str, text: &str) -> Result<FaultPlan, FaultsError> {
        let source = Source::new(name, text);
        let mut cx = Cx::new(Arc::clone(&source));
        let root = match crate::yaml::parse(&source.text) {
            Ok(root) => root,
            Err(e) => {
                cx.push(crate::diag::Severity::Error, e.pos, e.message, None);
                return Err(FaultsError::Invalid(cx.diags));
            }
        };
        let mut rules = Vec::new();
        if root.value == crate::yaml::Value::Null {
            // An empty file: no faults.
            return Ok(FaultPlan { rules });
        }
        if let Some(mut top) = cx.map(&root, "the faults file") {
            if let Some(list) = top.get("faults") {
                match &list.value {
                    crate::yaml::Value::Seq(items) => {
                        for item in items {
                            if let Some(rule) = rule(&mut cx, item) {
                                rules.push(rule);
                            }
                        }
                    }
                    crate::yaml::Value::Null => {}
                    _ => cx.error(list.pos, "`faults` must be a list of rules"),
                }
            }
            top.finish(&mut cx);
        }
        if cx.has_errors() {
            return Err(FaultsError::Invalid(cx.diags));
        }
        Ok(FaultPlan { rules })
    }

    /// The faults that apply to `node`.
    pub fn for_node(&self, node: &Node) -> NodeFaults {
        let mut out = NodeFaults::default();
        for rule in self.rules.iter().filter(|r| r.selection.matches(node)) {
            let b = &rule.bmc;
            let o = &mut out.bmc;
            // A later rule's setting replaces an earlier one's; unset keeps it.
            macro_rules! later_wins {
                ($into:expr; $($field:ident),+) => {
                    $(if let Some(v) = &b.$field {
                        $into.$field = v.clone().into();
                    })+
                };
            }
            later_wins!(o; latency, jitter, unavailable_rate, retry_after, hang);
            later_wins!(o; media_insert_failures, close_delimited_errors, update);
            later_wins!(o; bios_ignore, refused_insert_param);
            let t = &mut o.tree;
            later_wins!(t; sled, gpus_as_pcie, page_size, unlinked_chassis, null_power, gpu_model);
            later_wins!(t; push_only);
            let h = &rule.host;
            out.host.boot_hang |= h.boot_hang;
            out.host.broken_seed |= h.broken_seed;
            if h.ssh_drop_after.is_some() {
                out.host.ssh_drop_after = h.ssh_drop_after;
            }
            out.host.package_install_failures = out
                .host
                .package_install_failures
                .max(h.package_install_failures);
            out.host.hardware.extend(h.hardware.iter().cloned());
        }
        if out.bmc.unavailable_rate > 0.0 && out.bmc.retry_after.is_zero() {
            out.bmc.retry_after = Duration::from_secs(1);
        }
        out
    }

    /// Whether the plan has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn rule(cx: &mut Cx, node: &YamlNode) -> Option<Rule> {
    let mut m = cx.map(node, "a fault rule")?;
    let selection = match m.req::<Spanned<String>>(cx, "nodes") {
        Some(text) => match text.value.parse::<Selection>() {
            Ok(s) => Some(s),
            Err(e) => {
                cx.error(text.pos, e.to_string());
                None
            }
        },
        None => None,
    };
    let duration = |cx: &mut Cx, m: &mut crate::yaml::decode::MapReader, key| {
        m.opt::<HumanDuration>(cx, key).map(|d| d.0)
    };
    let bmc = PartialBmc {
        latency: duration(cx, &mut m, "bmc_latency"),
        jitter: duration(cx, &mut m, "bmc_jitter"),
        unavailable_rate: rate(cx, &mut m, "bmc_503_rate"),
        retry_after: duration(cx, &mut m, "bmc_retry_after"),
        hang: m.opt(cx, "bmc_hang"),
        media_insert_failures: m.opt(cx, "media_insert_failures"),
        close_delimited_errors: m.opt(cx, "bmc_close_delimited_errors"),
        update: update_fault(cx, &mut m),
        bios_ignore: m.opt(cx, "bmc_bios_ignore"),
        refused_insert_param: m.opt(cx, "bmc_refused_insert_param"),
        sled: m.opt(cx, "bmc_sled"),
        gpus_as_pcie: m.opt(cx, "bmc_gpus_as_pcie"),
        page_size: page_size(cx, &mut m),
        unlinked_chassis: m.opt(cx, "bmc_unlinked_chassis"),
        null_power: m.opt(cx, "bmc_null_power"),
        gpu_model: gpu_model(cx, &mut m),
        push_only: m.opt(cx, "bmc_push_only"),
    };
    let mut host = HostFaults {
        boot_hang: m.opt(cx, "boot_hang").unwrap_or(false),
        broken_seed: m.opt(cx, "broken_seed").unwrap_or(false),
        ssh_drop_after: duration(cx, &mut m, "ssh_drop_after"),
        package_install_failures: m.opt(cx, "package_install_failures").unwrap_or(0),
        hardware: Vec::new(),
    };
    let hw = &mut host.hardware;
    if let Some(gpu) = m.opt::<u32>(cx, "gpu_missing") {
        hw.push(HwFault::GpuMissing { gpu });
    }
    if let Some(node) = m.get("slow_gpu")
        && let Some((gpu, factor)) = gpu_and(cx, node, "slow_gpu", "factor")
    {
        hw.push(HwFault::SlowGpu { gpu, factor });
    }
    if let Some(node) = m.get("hot_gpu")
        && let Some((gpu, temp)) = gpu_and(cx, node, "hot_gpu", "temp_c")
    {
        hw.push(HwFault::HotGpu {
            gpu,
            temp_c: temp as u32,
        });
    }
    if let Some(gpu) = m.opt::<u32>(cx, "ecc_uncorrectable") {
        hw.push(HwFault::EccUncorrectable { gpu });
    }
    if let Some(gpu) = m.opt::<u32>(cx, "row_remap_pending") {
        hw.push(HwFault::RowRemapPending { gpu });
    }
    if let Some(node) = m.get("nvlink_down")
        && let Some((gpu, link)) = gpu_and(cx, node, "nvlink_down", "link")
    {
        hw.push(HwFault::NvlinkDown {
            gpu,
            link: link as u32,
        });
    }
    if let Some(port) = m.opt::<u32>(cx, "ib_port_down") {
        hw.push(HwFault::IbPortDown { port });
    }
    if let Some(node) = m.get("ib_degraded")
        && let Some(mut d) = cx.map(node, "`ib_degraded`")
    {
        let port = d.req::<u32>(cx, "port");
        let rate = d.req::<u32>(cx, "rate_gbps");
        d.finish(cx);
        if let (Some(port), Some(rate_gbps)) = (port, rate) {
            hw.push(HwFault::IbDegraded { port, rate_gbps });
        }
    }
    if let Some(node) = m.get("xid")
        && let Some((gpu, code)) = gpu_and(cx, node, "xid", "code")
    {
        hw.push(HwFault::Xid {
            gpu,
            code: code as u32,
        });
    }
    if let Some(node) = m.get("pcie_slow")
        && let Some((gpu, factor)) = gpu_and(cx, node, "pcie_slow", "factor")
    {
        hw.push(HwFault::PcieSlow { gpu, factor });
    }
    if let Some(node) = m.get("inlet_hot")
        && let Some(mut d) = cx.map(node, "`inlet_hot`")
    {
        let temp = d.req::<u32>(cx, "temp_c");
        d.finish(cx);
        if let Some(temp_c) = temp {
            hw.push(HwFault::InletHot { temp_c });
        }
    }
    m.finish(cx);
    Some(Rule {
        selection: selection?,
        bmc,
        host,
    })
}

/// Reads `bmc_page_size`: at least one member a page.
fn page_size(cx: &mut Cx, m: &mut crate::yaml::decode::MapReader) -> Option<usize> {
    let node = m.get("bmc_page_size")?;
    let value = u32::from_node(cx, node)?;
    if value == 0 {
        cx.error(node.pos, "`bmc_page_size` is members per page, at least 1");
        return None;
    }
    Some(value as usize)
}

/// Reads `bmc_update_fault: rejected | exception | reboot | unchanged | none`.
fn update_fault(cx: &mut Cx, m: &mut crate::yaml::decode::MapReader) -> Option<UpdateFault> {
    let node = m.get("bmc_update_fault")?;
    let text = String::from_node(cx, node)?;
    let fault = UpdateFault::parse(&text);
    if fault.is_none() {
        cx.error(
            node.pos,
            "`bmc_update_fault` is one of rejected, exception, reboot, unchanged, none",
        );
    }
    fault
}

/// Reads `bmc_gpu_model: {model: …, vendor: …}`.
fn gpu_model(cx: &mut Cx, m: &mut crate::yaml::decode::MapReader) -> Option<(String, String)> {
    let node = m.get("bmc_gpu_model")?;
    let mut d = cx.map(node, "`bmc_gpu_model`")?;
    let model = d.req::<String>(cx, "model");
    let vendor = d.req::<String>(cx, "vendor");
    d.finish(cx);
    Some((model?, vendor?))
}

/// Reads `{gpu: N, <other>: X}`.
fn gpu_and(
    cx: &mut Cx,
    node: &YamlNode,
    what: &'static str,
    other: &'static str,
) -> Option<(u32, f64)> {
    let mut m = cx.map(node, what)?;
    let gpu = m.req::<u32>(cx, "gpu");
    let value = m.req::<f64>(cx, other);
    m.finish(cx);
    Some((gpu?, value?))
}

fn rate(cx: &mut Cx, m: &mut crate::yaml::decode::MapReader, key: &'static str) -> Option<f64> {
    let node = m.get(key)?;
    let value = f64::from_node(cx, node)?;
    if !(0.0..=1.0).contains(&value) {
        cx.error(
            node.pos,
            format!("`{key}` is a share of requests, from 0 to 1"),
        );
        return None;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_reported_with_their_position() {
        let err =
            FaultPlan::parse("f.yaml", "faults:\n  - nodes: a\n    gpu_mising: 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("f.yaml:3:5"), "{text}");
        assert!(text.contains("gpu_missing"), "{text}");
    }

    #[test]
    fn pcie_and_inlet_faults_parse() {
        let plan = FaultPlan::parse(
            "f",
            "faults:\n  - nodes: all\n    pcie_slow: {gpu: 2, factor: 0.5}\n    inlet_hot: {temp_c: 41}\n",
        )
        .unwrap();
        assert_eq!(
            plan.rules[0].host.hardware,
            [
                HwFault::PcieSlow {
                    gpu: 2,
                    factor: 0.5
                },
                HwFault::InletHot { temp_c: 41 }
            ]
        );
    }

    #[test]
    fn tree_shapes_parse_and_a_page_holds_a_member() {
        let plan = FaultPlan::parse(
            "f",
            "faults:\n  - nodes: a\n    bmc_sled: true\n    bmc_page_size: 50\n    bmc_gpu_model: {model: MI250X, vendor: AMD}\n",
        )
        .unwrap();
        let t = &plan.rules[0].bmc;
        assert_eq!(t.sled, Some(true));
        assert_eq!(t.page_size, Some(50));
        assert_eq!(t.gpu_model, Some(("MI250X".into(), "AMD".into())));
        let err =
            FaultPlan::parse("f", "faults:\n  - nodes: a\n    bmc_page_size: 0\n").unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        let err =
            FaultPlan::parse("f", "faults:\n  - nodes: a\n    bmc_503_rate: 3\n").unwrap_err();
        assert!(err.to_string().contains("from 0 to 1"));
    }
}
