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
    /// Debian (apt, cloud-init), deployed from a disk image.
    Debian,
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
        last_segment(&self.path, &self.url)
    }
}

/// The last segment of `path`, else of `url`: an image's file name,
/// whichever way it is given.
fn last_segment<'a>(path: &'a Option<String>, url: &'a Option<String>) -> Option<&'a str> {
    path.as_deref()
        .or(url.as_deref())
        .and_then(|p| p.rsplit('/').next())
        .filter(|s| !s.is_empty())
}

/// How a disk image's bytes are laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A raw whole-disk image, written byte for byte.
    #[default]
    Raw,
    /// QEMU's qcow2: converted to raw once on kiln's machine (`qemu-img
    /// convert`), since the deploy environment writes raw streams.
    Qcow2,
}

/// How a disk image file is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    #[default]
    None,
    /// gzip (`.gz`): decompressed by the deploy environment as it streams.
    Gzip,
}

/// A whole-disk image written by kiln's deploy environment (the
/// image-based deploy of Ironic's agent, MAAS or Tinkerbell).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DiskImage {
    /// Where nodes fetch it (an HTTP(S) mirror or object store): at site
    /// scale the bytes then never pass through kiln's machine.
    pub url: Option<String>,
    /// A local copy, served by kiln's boot server; preferred over `url`
    /// when it exists.
    pub path: Option<String>,
    /// SHA-256 of the file as fetched (compressed bytes), 64 hex digits.
    /// A local copy may carry it in `FILE.sha256` beside it instead (as
    /// `kiln image build` writes it); a URL alone needs it here.
    pub sha256: Option<String>,
    /// Raw or qcow2.
    pub format: DiskFormat,
    /// How the file is compressed (default: from the name, `.gz`).
    pub compression: Compression,
    /// The partition the deploy environment grows to the end of the disk
    /// and writes the NoCloud seed into; 0 for the last one.
    pub root_partition: u32,
}

impl DiskImage {
    /// The file name of the image (the path's or URL's last segment).
    pub fn file_name(&self) -> Option<&str> {
        last_segment(&self.path, &self.url)
    }
}

/// A size bound in whole GiB, as Ironic writes root-device hints
/// (`100`, `>= 100`, `< 2000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SizeHint {
    /// Exactly this many GiB (rounded down, as Ironic does).
    Eq(u64),
    /// At least.
    Ge(u64),
    /// At most.
    Le(u64),
    /// More than.
    Gt(u64),
    /// Less than.
    Lt(u64),
}

impl SizeHint {
    /// Whether a disk of `bytes` satisfies the bound.
    pub fn accepts(self, bytes: u64) -> bool {
        let gib = bytes >> 30;
        match self {
            SizeHint::Eq(n) => gib == n,
            SizeHint::Ge(n) => gib >= n,
            SizeHint::Le(n) => gib <= n,
            SizeHint::Gt(n) => gib > n,
            SizeHint::Lt(n) => gib < n,
        }
    }

    /// Parses `N`, `== N`, `>= N`, `<= N`, `> N`, `< N` (GiB).
    pub fn parse(text: &str) -> Result<SizeHint, String> {
        let t = text.trim();
        let (op, rest) = ["==", ">=", "<=", ">", "<"]
            .iter()
            .find_map(|op| t.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("==", t));
        let n: u64 = rest.trim().parse().map_err(|_| {
            format!("size hint `{text}` is not a whole number of GiB, optionally after ==, >=, <=, > or <")
        })?;
        Ok(match op {
            ">=" => SizeHint::Ge(n),
            "<=" => SizeHint::Le(n),
            ">" => SizeHint::Gt(n),
            "<" => SizeHint::Lt(n),
            _ => SizeHint::Eq(n),
        })
    }
}

impl std::fmt::Display for SizeHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeHint::Eq(n) => write!(f, "{n} GiB"),
            SizeHint::Ge(n) => write!(f, ">= {n} GiB"),
            SizeHint::Le(n) => write!(f, "<= {n} GiB"),
            SizeHint::Gt(n) => write!(f, "> {n} GiB"),
            SizeHint::Lt(n) => write!(f, "< {n} GiB"),
        }
    }
}

/// Which disk the image is written to, as Ironic's root-device hints say
/// it: every hint given must match. Without hints: the smallest disk of
/// at least 4 GiB.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RootDeviceHints {
    /// The device name (`/dev/nvme0n1` or `nvme0n1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeHint>,
    /// The model string the disk reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The vendor string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The World Wide Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The udev `/dev/disk/by-path` name (`pci-0000:00:17.0-ata-1`, with
    /// or without the folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
    /// Spinning (true) or solid-state (false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

impl RootDeviceHints {
    /// Whether no hint is given.
    pub fn is_empty(&self) -> bool {
        *self == RootDeviceHints::default()
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
    /// The installer image (installer-based profiles).
    pub installer: Option<Installer>,
    /// The disk image written by kiln's deploy environment (image-based
    /// profiles). Exactly one of `installer` and `disk_image` is set.
    pub disk_image: Option<DiskImage>,
    /// Which disk an image-based deploy writes to.
    pub root_device: RootDeviceHints,
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

crate::keywords!(OsFamily, "OS family", [
    "ubuntu" => OsFamily::Ubuntu,
    "rhel" => OsFamily::Rhel,
    "debian" => OsFamily::Debian,
]);

crate::keywords!(BootMethod, "boot method", [
    "virtual-media" => BootMethod::VirtualMedia,
    "uefi-http" => BootMethod::UefiHttp,
]);

crate::keywords!(SeedKind, "seed kind", [
    "autoinstall" => SeedKind::Autoinstall,
    "nocloud" => SeedKind::Nocloud,
    "kickstart" => SeedKind::Kickstart,
]);

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

/// A download needs a `url` (http or https) or a local `path`.
pub(crate) fn check_source(
    cx: &mut Cx,
    node: &Node,
    what: &str,
    url: Option<&str>,
    has_path: bool,
) {
    match url {
        None if !has_path => cx.error(node.pos, format!("{what} needs a `url` or a `path`")),
        Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
            cx.error(node.pos, format!("{what} url `{u}` is not http(s)://"));
        }
        _ => {}
    }
}

/// A digest the profile pins must be a SHA-256.
pub(crate) fn check_sha256(cx: &mut Cx, node: &Node, what: &str, digest: &str) {
    if crate::profiles::hardware::normalise_sha256(digest).is_none() || digest.trim() != digest {
        cx.error(
            node.pos,
            format!("{what} sha256 `{digest}` is not 64 hex digits"),
        );
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
        check_source(cx, node, "installer", url.as_deref(), path.is_some());
        let sha256 = sha256?;
        check_sha256(cx, node, "installer", &sha256);
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

crate::keywords!(DiskFormat, "disk image format", [
    "raw" => DiskFormat::Raw,
    "qcow2" => DiskFormat::Qcow2,
]);

crate::keywords!(Compression, "compression", [
    "none" => Compression::None,
    "gzip" => Compression::Gzip,
]);

impl FromNode for DiskImage {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "disk_image")?;
        let url: Option<String> = m.opt(cx, "url");
        let path: Option<String> = m.opt(cx, "path");
        let sha256: Option<String> = m.opt(cx, "sha256");
        let format: Option<DiskFormat> = m.opt(cx, "format");
        let compression: Option<Compression> = m.opt(cx, "compression");
        let root_partition: Option<u32> = m.opt(cx, "root_partition");
        m.finish(cx);
        check_source(cx, node, "disk_image", url.as_deref(), path.is_some());
        if let Some(u) = &url
            && !u
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"'`\\;$".contains(&b))
        {
            cx.error(
                node.pos,
                format!("disk_image url `{u}` has spaces, quotes or shell metacharacters"),
            );
        }
        match &sha256 {
            Some(d) => check_sha256(cx, node, "disk_image", d),
            None if path.is_none() => cx.error_help(
                node.pos,
                "disk_image with only a `url` needs its `sha256`",
                "the digest, not the mirror, is what kiln trusts",
            ),
            _ => {}
        }
        let mut image = DiskImage {
            url,
            path,
            sha256: sha256.map(|d| d.to_ascii_lowercase()),
            format: format.unwrap_or_default(),
            compression: Compression::None,
            root_partition: root_partition.unwrap_or(0),
        };
        image.compression =
            compression.unwrap_or(if image.file_name().is_some_and(|f| f.ends_with(".gz")) {
                Compression::Gzip
            } else {
                Compression::None
            });
        if image.format == DiskFormat::Qcow2 && image.compression != Compression::None {
            cx.error(
                node.pos,
                "a qcow2 image is compressed inside; give it uncompressed",
            );
        }
        Some(image)
    }
}

impl FromNode for RootDeviceHints {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut m = cx.map(node, "root_device")?;
        let name: Option<String> = m.opt(cx, "name");
        let size_node = m.get("size");
        let model: Option<String> = m.opt(cx, "model");
        let vendor: Option<String> = m.opt(cx, "vendor");
        let serial: Option<String> = m.opt(cx, "serial");
        let wwn: Option<String> = m.opt(cx, "wwn");
        let by_path: Option<String> = m.opt(cx, "by_path");
        let rotational: Option<bool> = m.opt(cx, "rotational");
        m.finish(cx);
        let size = match size_node {
            None => None,
            Some(n) => {
                let text = String::from_node(cx, n)?;
                match SizeHint::parse(&text) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        cx.error(n.pos, e);
                        None
                    }
                }
            }
        };
        Some(RootDeviceHints {
            name: name.map(|n| n.trim_start_matches("/dev/").to_owned()),
            size,
            model,
            vendor,
            serial,
            wwn,
            by_path: by_path.map(|p| p.trim_start_matches("/dev/disk/by-path/").to_owned()),
            rotational,
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
        let installer: Option<Installer> = m.opt(cx, "installer");
        let disk_image: Option<DiskImage> = m.opt(cx, "disk_image");
        let root_device: Option<RootDeviceHints> = m.opt(cx, "root_device");
        let boot: Option<BootMethod> = m.opt(cx, "boot");
        let seed: Option<SeedKind> = m.opt(cx, "seed");
        let kernel_args: Option<Vec<String>> = m.opt(cx, "kernel_args");
        let pos = m.pos();
        m.finish(cx);
        match (&installer, &disk_image) {
            (Some(_), Some(_)) => cx.error(
                pos,
                "an image profile has an `installer` or a `disk_image`, not both",
            ),
            (None, None) => cx.error_help(
                pos,
                "an image profile needs an `installer` (an ISO kiln boots) or a `disk_image` (written by kiln's deploy environment)",
                "see images/ubuntu-24.04.yaml and images/debian-12.yaml",
            ),
            _ => {}
        }
        if installer.is_some() && root_device.is_some() {
            cx.error(pos, "`root_device` hints apply to a `disk_image` only (the installer picks its own disk)");
        }
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
            _ if disk_image.is_some() => SeedKind::Nocloud,
            OsFamily::Ubuntu => SeedKind::Autoinstall,
            OsFamily::Rhel => SeedKind::Kickstart,
            OsFamily::Debian => SeedKind::Nocloud,
        });
        if disk_image.is_some() && seed != SeedKind::Nocloud {
            cx.error(
                pos,
                "a `disk_image` is configured by a NoCloud seed (`seed: nocloud`)",
            );
        }
        Some(ImageProfile {
            name: name?,
            description: description?,
            family,
            version: version?,
            includes_driver_stack: includes_driver_stack.unwrap_or(false),
            installer,
            disk_image,
            root_device: root_device.unwrap_or_default(),
            boot: boot.unwrap_or_default(),
            seed,
            kernel_args,
        })
    }
}
