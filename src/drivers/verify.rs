//! What a node's driver stack looks like, read in one read-only command
//! (the probe), and how it is held to the hardware profile. Pure: the
//! probe is text in, [`Facts`] out, and [`check`] gives one reason per
//! mismatch with the expected and the observed value.

use std::collections::BTreeMap;

use serde_json::Value;

use super::metrics::{VerifyGpu, VerifyMetrics};
use super::script::Packages;
use crate::judge::{Verdict, judge_nvlink};
use crate::pipeline::record::StepMetrics as _;
use crate::profiles::hardware::HardwareProfile;
use crate::profiles::image::OsFamily;
use crate::ssh::quote::quote;

/// Marks the start of a probe section: `@@kiln NAME`.
const SECTION: &str = "@@kiln ";
/// Ends a section with its command's exit status: `@@kiln-rc N`.
const STATUS: &str = "@@kiln-rc ";

/// The units the stage enables, fabric manager first where there is one.
pub fn units(hw: &HardwareProfile) -> Vec<&'static str> {
    let mut units = Vec::new();
    if hw.nvswitch {
        units.push("nvidia-fabricmanager");
    }
    units.extend(["nvidia-dcgm", "nvidia-persistenced"]);
    units
}

/// The read-only command that gathers everything [`check`] needs: each
/// section's output followed by its exit status. Runs without sudo.
pub fn probe(hw: &HardwareProfile, family: OsFamily) -> String {
    let p = Packages::new(hw, family);
    let mut pkgs = vec![p.driver.clone()];
    if let Some(open) = &p.open_modules
        && !pkgs.contains(open)
    {
        pkgs.push(open.clone());
    }
    pkgs.extend([
        p.fabricmanager.clone(),
        p.dcgm.clone(),
        p.cuda.clone(),
        p.nccl,
    ]);
    let pkgs: Vec<String> = pkgs.iter().map(|p| quote(p)).collect();
    let packages = match family {
        OsFamily::Ubuntu | OsFamily::Debian => format!(
            "dpkg-query -W -f='${{Package}} ${{Version}}\\n' {}",
            pkgs.join(" ")
        ),
        OsFamily::Rhel => format!("rpm -q {}", pkgs.join(" ")),
    };
    let root = "\"${KILN_NODE_ROOT:-}\"";
    let mut sections: Vec<(&str, String)> = vec![
        ("os", "hostnamectl".into()),
        (
            "gpus",
            "nvidia-smi --query-gpu=index,uuid,serial,name,driver_version,pcie.link.gen.max,\
             pcie.link.width.max,pcie.link.width.current,persistence_mode --format=csv,noheader"
                .into(),
        ),
        ("packages", packages),
        (
            "services",
            format!("systemctl is-active {}", units(hw).join(" ")),
        ),
        ("modules", "lsmod".into()),
        (
            "blacklist",
            format!(
                "grep -rhs '^blacklist nouveau' {root}/etc/modprobe.d {root}/usr/lib/modprobe.d {root}/lib/modprobe.d"
            ),
        ),
    ];
    if hw.gpu.nvlink.links_per_gpu > 0 {
        sections.push(("nvlink", "nvidia-smi nvlink -s".into()));
    }
    let mut script = String::new();
    for (name, cmd) in sections {
        script.push_str(&format!(
            "echo '{SECTION}{name}'; {cmd} 2>&1; echo \"{STATUS}$?\"\n"
        ));
    }
    script
}

/// One GPU as `nvidia-smi --query-gpu` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Gpu {
    /// Index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Board serial.
    pub serial: String,
    /// Model name.
    pub model: String,
    /// Driver version.
    pub driver: String,
    /// Maximum PCIe generation of the GPU and its slot.
    pub pcie_gen: Option<u32>,
    /// Maximum PCIe width of the GPU and its slot.
    pub pcie_width: Option<u32>,
    /// Current PCIe width.
    pub pcie_width_now: Option<u32>,
    /// Persistence mode on.
    pub persistence: bool,
}

/// A node's driver stack as the probe saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Each section's output and exit status.
    pub sections: BTreeMap<String, (String, i32)>,
    /// `Operating System:` of hostnamectl.
    pub os: Option<String>,
    /// The running kernel.
    pub kernel: Option<String>,
    /// The GPUs, when nvidia-smi answered.
    pub gpus: Vec<Gpu>,
    /// Installed package versions by name.
    pub packages: BTreeMap<String, String>,
    /// `systemctl is-active` state per unit.
    pub services: BTreeMap<String, String>,
    /// Loaded kernel modules.
    pub modules: Vec<String>,
}

impl Facts {
    /// Reads the probe's output.
    pub fn parse(text: &str, hw: &HardwareProfile, family: OsFamily) -> Facts {
        let mut sections = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix(SECTION) {
                current = Some((name.trim().to_owned(), String::new()));
            } else if let Some(rc) = line.strip_prefix(STATUS) {
                if let Some((name, body)) = current.take() {
                    sections.insert(name, (body, rc.trim().parse().unwrap_or(-1)));
                }
            } else if let Some((_, body)) = &mut current {
                body.push_str(line);
                body.push('\n');
            }
        }
        let mut f = Facts {
            sections,
            ..Facts::default()
        };
        if let Some((text, _)) = f.sections.get("os") {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once(':') {
                    match k.trim() {
                        "Operating System" => f.os = Some(v.trim().to_owned()),
                        "Kernel" => {
                            f.kernel = Some(v.trim().trim_start_matches("Linux ").to_owned())
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some((text, 0)) = f.sections.get("gpus") {
            f.gpus = text.lines().filter_map(parse_gpu).collect();
        }
        if let Some((text, _)) = f.sections.get("packages") {
            let p = Packages::new(hw, family);
            let names = [
                Some(p.driver),
                p.open_modules,
                Some(p.fabricmanager),
                Some(p.dcgm),
                Some(p.cuda),
                Some(p.nccl),
            ];
            for line in text.lines() {
                match family {
                    OsFamily::Ubuntu | OsFamily::Debian => {
                        if let Some((n, v)) = line.split_once(' ')
                            && !v.trim().is_empty()
                        {
                            f.packages.insert(n.to_owned(), v.trim().to_owned());
                        }
                    }
                    OsFamily::Rhel => {
                        // `name-version-release.arch`, longest name first.
                        for n in names.iter().flatten() {
                            if let Some(rest) = line.strip_prefix(&format!("{n}-"))
                                && rest.starts_with(|c: char| c.is_ascii_digit())
                            {
                                f.packages.insert(n.clone(), rest.to_owned());
                            }
                        }
                    }
                }
            }
        }
        if let Some((text, _)) = f.sections.get("services") {
            for (unit, state) in units(hw).iter().zip(text.lines()) {
                f.services
                    .insert((*unit).to_owned(), state.trim().to_owned());
            }
        }
        if let Some((text, _)) = f.sections.get("modules") {
            f.modules = text
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect();
        }
        f
    }

    /// The driver version every GPU reports, when they agree.
    pub fn driver(&self) -> Option<&str> {
        let first = self.gpus.first()?.driver.as_str();
        self.gpus.iter().all(|g| g.driver == first).then_some(first)
    }

    /// The upstream version of an installed package (`1:4.2.3-1` ->
    /// `4.2.3`).
    pub fn upstream(&self, package: &str) -> Option<String> {
        let v = self.packages.get(package)?;
        let v = v.rsplit_once(':').map_or(v.as_str(), |(_, v)| v);
        Some(v.split('-').next().unwrap_or(v).to_owned())
    }

    /// Why nvidia-smi did not answer, if it did not.
    pub fn smi_error(&self) -> Option<String> {
        match self.sections.get("gpus") {
            None => Some("the probe printed no nvidia-smi section".into()),
            Some((_, 0)) => None,
            Some((text, rc)) => Some(format!(
                "nvidia-smi failed (exit {rc}): {}",
                text.lines().next().unwrap_or("no output")
            )),
        }
    }
}

fn parse_gpu(line: &str) -> Option<Gpu> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() < 9 {
        return None;
    }
    let num = |s: &str| s.parse::<u32>().ok();
    Some(Gpu {
        index: num(f[0])?,
        uuid: f[1].to_owned(),
        serial: f[2].to_owned(),
        model: f[3].to_owned(),
        driver: f[4].to_owned(),
        pcie_gen: num(f[5]),
        pcie_width: num(f[6]),
        pcie_width_now: num(f[7]),
        persistence: f[8].eq_ignore_ascii_case("enabled"),
    })
}

/// Every way the node differs from the profile, one reason each, naming
/// the expected and the observed value. Empty: the stack is exactly right.
pub fn check(f: &Facts, hw: &HardwareProfile, family: OsFamily) -> Vec<String> {
    let d = &hw.drivers;
    let p = Packages::new(hw, family);
    let mut why = Vec::new();
    let shown = |v: Option<String>| v.unwrap_or_else(|| "not installed".into());
    // The installed driver.
    match f.upstream(&p.driver) {
        Some(v) if v == d.version => {}
        v => why.push(format!(
            "driver package {}: expected {}, observed {}",
            p.driver,
            d.version,
            shown(v)
        )),
    }
    if let Some(open) = &p.open_modules
        && !f.packages.contains_key(open)
    {
        why.push(format!(
            "open GPU kernel modules required ({open}), observed not installed"
        ));
    }
    // The loaded driver and the GPUs.
    if let Some(e) = f.smi_error() {
        why.push(e);
    } else {
        match f.driver() {
            Some(v) if v == d.version => {}
            Some(v) => why.push(format!(
                "loaded driver: expected {}, observed {v}",
                d.version
            )),
            None => why.push("the GPUs report different driver versions".into()),
        }
        if f.gpus.len() != hw.gpu.count as usize {
            why.push(format!(
                "GPU count: expected {}, observed {}",
                hw.gpu.count,
                f.gpus.len()
            ));
        }
        for g in &f.gpus {
            let gpu = format!("GPU {} ({})", g.index, g.serial);
            if g.model != hw.gpu.model {
                why.push(format!(
                    "{gpu} model: expected {}, observed {}",
                    hw.gpu.model, g.model
                ));
            }
            if g.pcie_gen != Some(hw.gpu.pcie.generation) {
                why.push(format!(
                    "{gpu} PCIe generation: expected Gen{}, observed {}",
                    hw.gpu.pcie.generation,
                    g.pcie_gen.map_or("unknown".into(), |v| format!("Gen{v}"))
                ));
            }
            for (what, w) in [("maximum", g.pcie_width), ("current", g.pcie_width_now)] {
                if w != Some(hw.gpu.pcie.width) {
                    why.push(format!(
                        "{gpu} PCIe {what} width: expected x{}, observed {}",
                        hw.gpu.pcie.width,
                        w.map_or("unknown".into(), |v| format!("x{v}"))
                    ));
                }
            }
            if !g.persistence {
                why.push(format!("{gpu}: persistence mode expected on, observed off"));
            }
        }
        if let Some((text, _)) = f.sections.get("nvlink") {
            match judge_nvlink(text, &crate::acceptance::limits::nvlink(Some(hw))) {
                Ok(j) if j.verdict == Verdict::Pass => {}
                Ok(j) => why.extend(j.reasons),
                Err(e) => why.push(format!("nvidia-smi nvlink -s: {e}")),
            }
        }
    }
    // Fabric manager, DCGM, NCCL, CUDA.
    if hw.nvswitch {
        match f.upstream(&p.fabricmanager) {
            Some(v) if v == d.version => {}
            v => why.push(format!(
                "fabric manager ({}): expected {} (the driver's version), observed {}",
                p.fabricmanager,
                d.version,
                shown(v)
            )),
        }
    }
    match f.upstream(&p.dcgm) {
        Some(v) if v.split('.').next() == Some(&d.dcgm_major.to_string()) => {}
        v => why.push(format!(
            "DCGM ({}): expected {}.x, observed {}",
            p.dcgm,
            d.dcgm_major,
            shown(v)
        )),
    }
    match f.upstream(&p.nccl) {
        Some(v) if v == d.nccl => {}
        v => why.push(format!(
            "NCCL ({}): expected {}, observed {}",
            p.nccl,
            d.nccl,
            shown(v)
        )),
    }
    if !f.packages.contains_key(&p.cuda) {
        why.push(format!(
            "CUDA toolkit: expected {} ({}), observed not installed",
            d.cuda, p.cuda
        ));
    }
    for unit in units(hw) {
        let state = f.services.get(unit).map_or("unknown", String::as_str);
        if state != "active" {
            let what = match unit {
                "nvidia-fabricmanager" => "fabric manager",
                "nvidia-dcgm" => "DCGM host engine",
                _ => "persistence daemon",
            };
            why.push(format!(
                "{what} ({unit}): expected active, observed {state}"
            ));
        }
    }
    // Kernel modules.
    if hw.infiniband.nics > 0 && !f.modules.iter().any(|m| m == "nvidia_peermem") {
        why.push(
            "nvidia_peermem (GPUDirect RDMA over InfiniBand): expected loaded, observed not loaded"
                .into(),
        );
    }
    if f.modules.iter().any(|m| m == "nouveau") {
        why.push("nouveau: expected not loaded, observed loaded".into());
    }
    match f.sections.get("blacklist") {
        Some((text, _)) if text.contains("blacklist nouveau") => {}
        _ => why.push("nouveau: expected blacklisted in modprobe.d, observed no blacklist".into()),
    }
    why
}

/// The `verify` step's metrics (the handoff stage reads them): versions,
/// OS, kernel and the GPUs.
pub fn metrics(f: &Facts, hw: &HardwareProfile, family: OsFamily) -> Value {
    let p = Packages::new(hw, family);
    let gpus = f
        .gpus
        .iter()
        .map(|g| VerifyGpu {
            index: Some(g.index),
            uuid: Some(g.uuid.clone()),
            serial: Some(g.serial.clone()),
            model: Some(g.model.clone()),
            pcie_gen: g.pcie_gen,
            pcie_width: g.pcie_width,
        })
        .collect();
    VerifyMetrics {
        driver: f
            .driver()
            .map(str::to_owned)
            .or_else(|| f.upstream(&p.driver)),
        cuda: f
            .packages
            .contains_key(&p.cuda)
            .then(|| hw.drivers.cuda.clone()),
        fabricmanager: if hw.nvswitch {
            f.upstream(&p.fabricmanager)
        } else {
            None
        },
        dcgm: f.upstream(&p.dcgm),
        nccl: f.upstream(&p.nccl),
        os: f.os.clone(),
        kernel: f.kernel.clone(),
        open_kernel_modules: p
            .open_modules
            .as_ref()
            .is_some_and(|m| f.packages.contains_key(m)),
        nvidia_peermem: f.modules.iter().any(|m| m == "nvidia_peermem"),
        gpus: Some(gpus),
    }
    .to_metrics()
}
