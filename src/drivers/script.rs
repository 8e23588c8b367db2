//! The install script of the drivers stage, rendered from
//! `templates/drivers/` (compiled in) with a typed context. Every value
//! reaches the shell through the `sh` filter (POSIX single quotes,
//! [`crate::ssh::quote`]), so no inventory or profile value can add shell
//! syntax.

use serde::Serialize;
use tera::Tera;

use crate::profiles::hardware::HardwareProfile;
use crate::profiles::image::{ImageProfile, OsFamily};

/// The built-in driver templates, by name.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "drivers/ubuntu",
        include_str!("../../templates/drivers/ubuntu.sh.tera"),
    ),
    (
        "drivers/rhel",
        include_str!("../../templates/drivers/rhel.sh.tera"),
    ),
];

/// NVIDIA's public CUDA repositories, one folder per distribution
/// (<https://developer.download.nvidia.com/compute/cuda/repos/>).
pub const NVIDIA_REPOS: &str = "https://developer.download.nvidia.com/compute/cuda/repos";

/// Why a script did not render.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// Tera failed (a kiln bug in a built-in template, shown with its cause).
    #[error("template `{name}`: {source}")]
    Tera {
        /// The template.
        name: String,
        /// Tera's error.
        #[source]
        source: tera::Error,
    },
}

/// Everything an install script is rendered from.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScriptContext {
    /// The node (for the header comment).
    pub node: String,
    /// The hardware profile's name.
    pub hardware: String,
    /// The image profile's name.
    pub image: String,
    /// NVIDIA's repository folder for this distribution, or the mirror's.
    pub repo: String,
    /// The site's mirror (empty: NVIDIA's public repository).
    pub mirror: String,
    /// NVIDIA's name for the distribution (`ubuntu2404`, `rhel9`).
    pub distro: String,
    /// Driver branch.
    pub driver_branch: u32,
    /// Exact driver version.
    pub driver_version: String,
    /// The driver package (Ubuntu) or module stream (RHEL).
    pub driver_package: String,
    /// `yes` on NVSwitch systems.
    pub fabricmanager: String,
    /// The fabric manager package.
    pub fabricmanager_package: String,
    /// DCGM major version.
    pub dcgm_major: u32,
    /// The DCGM package.
    pub dcgm_package: String,
    /// The CUDA toolkit package.
    pub cuda_package: String,
    /// NCCL version.
    pub nccl_version: String,
    /// `yes` where InfiniBand is used (load `nvidia_peermem`).
    pub peermem: String,
    /// nccl-tests source tarball.
    pub nccl_tests_url: String,
    /// gpu-burn source tarball.
    pub gpu_burn_url: String,
    /// nvbandwidth source tarball.
    pub nvbandwidth_url: String,
    /// The pinned fingerprint of the repository signing key for this OS
    /// family (empty: none pinned, the script refuses to start).
    pub repo_key: String,
    /// The profile setting that pins it (`drivers.repo_key`,
    /// `drivers.rpm_repo_key`), for the script's reasons.
    pub repo_key_setting: String,
    /// nccl-tests' pinned SHA-256 (empty: not built).
    pub nccl_tests_sha256: String,
    /// gpu-burn's pinned SHA-256 (empty: not built).
    pub gpu_burn_sha256: String,
    /// nvbandwidth's pinned SHA-256 (empty: not built).
    pub nvbandwidth_sha256: String,
}

/// nccl-tests' upstream source: a release tag, not a branch head.
pub const NCCL_TESTS_UPSTREAM: &str =
    "https://github.com/NVIDIA/nccl-tests/archive/refs/tags/v2.18.3.tar.gz";
/// gpu-burn's upstream source. gpu-burn has no releases, so this is its
/// branch head: only a pinned SHA-256 (`drivers.tools.gpu_burn.sha256`)
/// makes it buildable.
pub const GPU_BURN_UPSTREAM: &str =
    "https://github.com/wilicc/gpu-burn/archive/refs/heads/master.tar.gz";
/// nvbandwidth's upstream source: a release tag.
pub const NVBANDWIDTH_UPSTREAM: &str =
    "https://github.com/NVIDIA/nvbandwidth/archive/refs/tags/v0.8.tar.gz";

/// Where the drivers stage fetches tool `name`'s source (`nccl-tests`,
/// `gpu-burn`, `nvbandwidth`): the profile's `url`, else the mirror's
/// `tools/NAME.tar.gz`, else `upstream`.
pub fn tool_url(
    source: &crate::profiles::hardware::ToolSource,
    mirror: Option<&str>,
    name: &str,
    upstream: &str,
) -> String {
    match (&source.url, mirror) {
        (Some(url), _) => url.clone(),
        (None, Some(m)) => format!("{}/tools/{name}.tar.gz", m.trim_end_matches('/')),
        (None, None) => upstream.to_owned(),
    }
}

/// The names of the packages the stage installs and verifies, per OS
/// family: one place, shared by the script and the verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packages {
    /// The driver: Ubuntu's `nvidia-driver-BRANCH-server[-open]`, or on
    /// RHEL the `nvidia-driver` package of the module stream.
    pub driver: String,
    /// What proves the open kernel modules are the ones installed, when
    /// the profile requires them (`None`: not required).
    pub open_modules: Option<String>,
    /// Fabric manager.
    pub fabricmanager: String,
    /// DCGM.
    pub dcgm: String,
    /// The CUDA toolkit.
    pub cuda: String,
    /// NCCL's runtime library.
    pub nccl: String,
}

impl Packages {
    /// The packages of `stack` on `family`.
    pub fn new(hw: &HardwareProfile, family: OsFamily) -> Packages {
        let d = &hw.drivers;
        let cuda_major = d.cuda.split('.').next().unwrap_or("12");
        let dcgm = if d.dcgm_major >= 4 {
            format!("datacenter-gpu-manager-{}-cuda{cuda_major}", d.dcgm_major)
        } else {
            "datacenter-gpu-manager".to_owned()
        };
        let cuda = format!("cuda-toolkit-{}", d.cuda.replace('.', "-"));
        match family {
            // NVIDIA's debian12 repository is apt too; its package names are
            // taken to be those of its Ubuntu repositories.
            OsFamily::Ubuntu | OsFamily::Debian => {
                let open = if d.open_kernel_modules { "-open" } else { "" };
                let driver = format!("nvidia-driver-{}-server{open}", d.branch);
                Packages {
                    open_modules: d.open_kernel_modules.then(|| driver.clone()),
                    driver,
                    fabricmanager: format!("nvidia-fabricmanager-{}", d.branch),
                    dcgm,
                    cuda,
                    nccl: "libnccl2".to_owned(),
                }
            }
            OsFamily::Rhel => Packages {
                driver: "nvidia-driver".to_owned(),
                open_modules: d
                    .open_kernel_modules
                    .then(|| "kmod-nvidia-open-dkms".to_owned()),
                fabricmanager: "nvidia-fabric-manager".to_owned(),
                dcgm,
                cuda,
                nccl: "libnccl".to_owned(),
            },
        }
    }
}

/// NVIDIA's name for a distribution's repository folder.
pub fn distro(image: &ImageProfile) -> String {
    let major = image.version.split('.').next().unwrap_or_default();
    match image.family {
        OsFamily::Ubuntu => format!("ubuntu{}", image.version.replace('.', "")),
        OsFamily::Rhel => format!("rhel{major}"),
        OsFamily::Debian => format!("debian{major}"),
    }
}

impl ScriptContext {
    /// The context for `node` with `hw` and `image`, installing from
    /// `mirror` when the inventory names one. A mirror holds NVIDIA's
    /// repository folders as NVIDIA lays them out (`MIRROR/ubuntu2404/x86_64`)
    /// and the test tools' sources under `MIRROR/tools/`.
    pub fn new(
        node: &str,
        hw: &HardwareProfile,
        image: &ImageProfile,
        mirror: Option<&str>,
    ) -> ScriptContext {
        let d = &hw.drivers;
        let distro = distro(image);
        let packages = Packages::new(hw, image.family);
        let base = mirror.unwrap_or(NVIDIA_REPOS).trim_end_matches('/');
        let driver_package = match image.family {
            OsFamily::Ubuntu | OsFamily::Debian => packages.driver.clone(),
            OsFamily::Rhel => {
                let flavour = if d.open_kernel_modules {
                    "open"
                } else {
                    "dkms"
                };
                format!("{}-{flavour}", d.branch)
            }
        };
        let (repo_key, repo_key_setting) = match image.family {
            OsFamily::Ubuntu | OsFamily::Debian => (&d.repo_key, "drivers.repo_key"),
            OsFamily::Rhel => (&d.rpm_repo_key, "drivers.rpm_repo_key"),
        };
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        // These three go into the header comment unquoted: one line each.
        let line = |s: &str| s.replace(|c: char| c.is_control(), "?");
        ScriptContext {
            node: line(node),
            hardware: line(&hw.name),
            image: line(&image.name),
            repo: format!("{base}/{distro}/x86_64"),
            mirror: mirror.unwrap_or_default().to_owned(),
            distro,
            driver_branch: d.branch,
            driver_version: d.version.clone(),
            driver_package,
            fabricmanager: yes(hw.nvswitch),
            fabricmanager_package: packages.fabricmanager,
            dcgm_major: d.dcgm_major,
            dcgm_package: packages.dcgm,
            cuda_package: packages.cuda,
            nccl_version: d.nccl.clone(),
            peermem: yes(hw.infiniband.nics > 0),
            nccl_tests_url: tool_url(
                &d.tools.nccl_tests,
                mirror,
                "nccl-tests",
                NCCL_TESTS_UPSTREAM,
            ),
            gpu_burn_url: tool_url(&d.tools.gpu_burn, mirror, "gpu-burn", GPU_BURN_UPSTREAM),
            nvbandwidth_url: tool_url(
                &d.tools.nvbandwidth,
                mirror,
                "nvbandwidth",
                NVBANDWIDTH_UPSTREAM,
            ),
            repo_key: repo_key.clone().unwrap_or_default(),
            repo_key_setting: repo_key_setting.to_owned(),
            nccl_tests_sha256: d.tools.nccl_tests.sha256.clone().unwrap_or_default(),
            gpu_burn_sha256: d.tools.gpu_burn.sha256.clone().unwrap_or_default(),
            nvbandwidth_sha256: d.tools.nvbandwidth.sha256.clone().unwrap_or_default(),
        }
    }
}

/// The template for an OS family.
pub fn template_for(family: OsFamily) -> &'static str {
    match family {
        OsFamily::Ubuntu | OsFamily::Debian => "drivers/ubuntu",
        OsFamily::Rhel => "drivers/rhel",
    }
}

fn sh_filter(
    v: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let text = match v {
        tera::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(tera::Value::String(crate::ssh::quote::quote(&text)))
}

/// Renders the install script for `family` with `cx`.
pub fn render(family: OsFamily, cx: &ScriptContext) -> Result<String, ScriptError> {
    let name = template_for(family);
    let tera_err = |source| ScriptError::Tera {
        name: name.to_owned(),
        source,
    };
    let mut tera = Tera::default();
    tera.autoescape_on(vec![]);
    for (n, text) in TEMPLATES {
        tera.add_raw_template(n, text).map_err(tera_err)?;
    }
    tera.register_filter("sh", sh_filter);
    let context = tera::Context::from_serialize(cx).map_err(tera_err)?;
    tera.render(name, &context).map_err(tera_err)
}
