//! Image profiles: the operating system a node is imaged with, the
//! installer that puts it there, and how the node boots that installer.

use serde::Serialize;

use crate::yaml::Node;
use crate::yaml::decode::{Cx, FromNode};

/// The operating-system family, which picks templates and package tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Ubuntu (apt, cloud-init autoinstall).
    #[default]
    Ubuntu,
    /// Rocky Linux / RHEL (dnf, kickstart).
    Rhel,
}

/// How the node boots the installer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMethod {
    /// The BMC's virtual CD, boot-once to `Cd` in UEFI mode.
    #[default]
    VirtualMedia,
    /// UEFI HTTP boot of the installer image (`HttpBootUri`); falls back
    /// to virtual media on BMCs that cannot take a URI.
    UefiHttp,
}

/// How the installer is told what to do, which picks the seed templates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedKind {
    /// Ubuntu Server's autoinstall (subiquity) through a NoCloud seed.
    #[default]
    Autoinstall,
    /// Plain cloud-init NoCloud (`#cloud-config`), for installer images
    /// that write a prebuilt system and hand over to cloud-init.
    Nocloud,
    /// Anaconda kickstart (`inst.ks=`), for Rocky Linux and RHEL.
    Kickstart,
}

/// Where the installer image comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Installer {
    /// The vendor's download URL (documentation and the default file name).
    pub url: Option<String>,
    /// A local copy, relative to the working folder or absolute. Without
    /// one, the file named like the URL's last segment in `--iso-dir`.
    pub path: Option<String>,
    /// The published SHA-256 of the image (64 hex digits, lower case).
    pub sha256: String,
    /// The grub configuration inside the image that kiln rewrites per
    /// node (`/boot/grub/grub.cfg`).
    pub grub_cfg: String,
    /// The kernel and initrd paths inside the image.
    pub kernel: String,
    /// The initrd path inside the image.
    pub initrd: String,
}

impl Installer {
    /// The file name of the image (the URL's or path's last segment).
    pub fn file_name(&self) -> Option<&str> {
        self.path
            .as_deref()
            .or(self.url.as_deref())
            .and_then(|p| p.rsplit('/').next())
            .filter(|s| !s.is_empty())
    }
}

/// One installable operating system.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ImageProfile {
    /// The profile's name, as inventories refer to it.
    pub name: String,
    /// A one-line description.
    pub description: String,
    /// The OS family.
    pub family: OsFamily,
    /// The OS version (`24.04`, `9`).
    pub version: String,
    /// Whether the image already carries the NVIDIA driver stack.
    pub includes_driver_stack: bool,
    /// The installer image.
    pub installer: Installer,
    /// How the node boots it.
    pub boot: BootMethod,
    /// How the installer is configured (and so which templates render).
    pub seed: SeedKind,
    /// Extra kernel arguments for the installer and the installed system.
    pub kernel_args: Vec<String>,
}

impl ImageProfile {
    /// The templates a node's seed is made of, by the file name the
    /// installer asks the boot server for.
    pub fn seed_files(&self) -> &'static [&'static str] {
        match self.seed {
            SeedKind::Autoinstall | SeedKind::Nocloud => {
                &["user-data", "meta-data", "network-config", "vendor-data"]
            }
            // Anaconda reads the kickstart; the installed system's
            // cloud-init reads the NoCloud files on first boot.
            SeedKind::Kickstart => &[
                "ks.cfg",
                "user-data",
                "meta-data",
                "network-config",
                "vendor-data",
            ],
        }
    }
}

impl FromNode for OsFamily {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match String::from_node(cx, node)?.as_str() {
            "ubuntu" => Some(OsFamily::Ubuntu),
            "rhel" => Some(OsFamily::Rhel),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown OS family `{other}` (ubuntu or rhel)"),
                );
                None
            }
        }
    }
}

impl FromNode for BootMethod {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match String::from_node(cx, node)?.as_str() {
            "virtual-media" => Some(BootMethod::VirtualMedia),
            "uefi-http" => Some(BootMethod::UefiHttp),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown boot method `{other}` (virtual-media or uefi-http)"),
                );
                None
            }
        }
    }
}

impl FromNode for SeedKind {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match String::from_node(cx, node)?.as_str() {
            "autoinstall" => Some(SeedKind::Autoinstall),
            "nocloud" => Some(SeedKind::Nocloud),
            "kickstart" => Some(SeedKind::Kickstart),
            other => {
                cx.error(
                    node.pos,
                    format!("unknown seed kind `{other}` (autoinstall, nocloud or kickstart)"),
                );
                None
            }
        }
    }
}

/// Paths inside the image reach grub's configuration: keep them to plain
/// absolute paths.
fn image_path(cx: &mut Cx, node: &Node, value: Option<String>, default: &str) -> String {
    match value {
        Some(p)
            if p.starts_with('/')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)) =>
        {
            p
        }
        Some(p) => {
            cx.error(
                node.pos,
                format!(
                    "`{p}` is not an absolute path of letters, digits, `/._-` inside the image"
                ),
            );
            default.to_owned()
        }
        None => default.to_owned(),
    }
}

impl FromNode for Installer {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "installer")?;
        let url: Option<String> = m.opt(cx, "url");
        let path: Option<String> = m.opt(cx, "path");
        let sha256: Option<String> = m.req(cx, "sha256");
        let grub_cfg: Option<String> = m.opt(cx, "grub_cfg");
        let kernel: Option<String> = m.opt(cx, "kernel");
        let initrd: Option<String> = m.opt(cx, "initrd");
        m.finish(cx);
        if url.is_none() && path.is_none() {
            cx.error(node.pos, "installer needs a `url` or a `path`");
        }
        if let Some(u) = &url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            cx.error(node.pos, format!("installer url `{u}` is not http(s)://"));
        }
        let sha256 = sha256?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            cx.error(
                node.pos,
                format!("installer sha256 `{sha256}` is not 64 hex digits"),
            );
        }
        Some(Installer {
            url,
            path,
            sha256: sha256.to_ascii_lowercase(),
            grub_cfg: image_path(cx, node, grub_cfg, "/boot/grub/grub.cfg"),
            kernel: image_path(cx, node, kernel, "/casper/vmlinuz"),
            initrd: image_path(cx, node, initrd, "/casper/initrd"),
        })
    }
}

impl FromNode for ImageProfile {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "image profile")?;
        let name: Option<String> = m.req(cx, "name");
        let description: Option<String> = m.req(cx, "description");
        let family: Option<OsFamily> = m.req(cx, "family");
        let version: Option<String> = m.req(cx, "version");
        let includes_driver_stack: Option<bool> = m.opt(cx, "includes_driver_stack");
        let installer: Option<Installer> = m.req(cx, "installer");
        let boot: Option<BootMethod> = m.opt(cx, "boot");
        let seed: Option<SeedKind> = m.opt(cx, "seed");
        let kernel_args: Option<Vec<String>> = m.opt(cx, "kernel_args");
        m.finish(cx);
        let family = family?;
        let kernel_args = kernel_args.unwrap_or_default();
        for arg in &kernel_args {
            // Arguments land on a grub `linux` line: no spaces, quotes or
            // grub metacharacters that could end or extend it.
            if arg.is_empty()
                || !arg
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"\"'`\\;${}#".contains(&b))
            {
                cx.error(
                    node.pos,
                    format!("kernel argument `{arg}` must be printable ASCII without spaces, quotes or ;$\\{{}}#"),
                );
            }
        }
        let seed = seed.unwrap_or(match family {
            OsFamily::Ubuntu => SeedKind::Autoinstall,
            OsFamily::Rhel => SeedKind::Kickstart,
        });
        Some(ImageProfile {
            name: name?,
            description: description?,
            family,
            version: version?,
            includes_driver_stack: includes_driver_stack.unwrap_or(false),
            installer: installer?,
            boot: boot.unwrap_or_default(),
            seed,
            kernel_args,
        })
    }
}
