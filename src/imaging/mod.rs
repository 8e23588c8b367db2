//! Imaging: putting an operating system on a node through its BMC.
//!
//! - `iso.rs` finds a file inside an ISO 9660 image and plans the bytes
//!   that replace it while the image streams (and writes tiny images for
//!   tests and the demo);
//! - `seed.rs` renders the installer's configuration from the tera
//!   templates in `templates/` with typed contexts;
//! - `hostkeys.rs` makes and keeps each node's SSH host keys;
//! - `server.rs` is the boot server (images with Range, seeds behind
//!   per-node tokens, the install-finished call-back);
//! - `deploy.rs` is the imaging stage as named, resumable steps;
//! - `qcow2.rs` converts a qcow2 disk image once to gzip-compressed raw;
//! - `rootdev.rs` picks the target disk from root-device hints;
//! - `verify.rs` checks an installer image's digest.
//!
//! Seed delivery works with one virtual CD: the node's BMC mounts
//! `/node/TOKEN/installer.iso`, the vendor's image whose grub.cfg kiln
//! rewrites on the fly to carry `ds=nocloud;s=…/seed/TOKEN/` (or
//! `inst.ks=…`), so the installer reads its configuration from the boot
//! server and no second (cidata) image is needed.

pub mod deploy;
pub mod hostkeys;
pub mod iso;
pub mod qcow2;
pub mod rootdev;
pub mod seed;
pub mod server;
pub mod setup;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::exit::BadInput;
use crate::inventory::Node;
use crate::profiles::ImageProfile;
use crate::ssh::auth::Credentials;

/// Where the installer image of `profile` is on this machine: `--iso`,
/// the profile's `path`, or the URL's file name in `--iso-dir`.
pub fn installer_path(
    profile: &ImageProfile,
    iso: Option<&Path>,
    iso_dir: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let Some(installer) = &profile.installer else {
        return Err(BadInput(format!(
            "{} is a disk image, written by kiln's deploy environment, not an installer",
            profile.name
        ))
        .into());
    };
    let path = match (iso, &installer.path, iso_dir) {
        (Some(p), _, _) => p.to_owned(),
        (None, Some(p), _) => PathBuf::from(p),
        (None, None, Some(dir)) => dir.join(installer.file_name().unwrap_or_default()),
        (None, None, None) => {
            return Err(BadInput(format!(
                "no local copy of the {} installer: download {} and pass --iso FILE or --iso-dir DIR (or KILN_ISO_DIR)",
                profile.name,
                installer.url.as_deref().unwrap_or("it")
            ))
            .into());
        }
    };
    if !path.is_file() {
        return Err(BadInput(format!(
            "installer image {} of {} does not exist{}",
            path.display(),
            profile.name,
            installer
                .url
                .as_deref()
                .map(|u| format!(" (download {u})"))
                .unwrap_or_default()
        ))
        .into());
    }
    Ok(path)
}

/// What the image stage boots and writes for one image profile, found
/// (and a local disk image's digest checked) before any node is touched.
#[derive(Clone, Debug)]
pub enum Media {
    /// An installer ISO on this machine, booted with a per-node grub.cfg.
    Installer(PathBuf),
    /// A disk image written by kiln's deploy environment.
    Disk(DiskMedia),
}

/// An image-based deploy's parts.
#[derive(Clone, Debug)]
pub struct DiskMedia {
    /// The deploy environment's ISO (`deploy.iso` of `kiln image build
    /// deploy-env`), booted with a per-node grub.cfg.
    pub deploy_iso: PathBuf,
    /// Where the nodes fetch the image from.
    pub image: DiskSource,
    /// The SHA-256 the deploy environment checks while writing.
    pub sha256: String,
    /// How the file is compressed.
    pub compression: crate::profiles::image::Compression,
    /// The partition grown and seeded (0: the last).
    pub root_partition: u32,
    /// Time a plain copy of the image first (`kiln bench deploy`).
    pub bench_peer: bool,
}

/// Where a disk image comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DiskSource {
    /// A file on this machine, served by kiln's boot server.
    Local(PathBuf),
    /// A mirror or object store the nodes fetch from directly.
    Url(String),
}

/// The deploy environment's files, as `kiln image build deploy-env` lays
/// them out.
pub const DEPLOY_ISO: &str = "deploy.iso";

/// Where imaging looks for what it boots and writes.
#[derive(Clone, Copy, Debug)]
pub struct Places<'a> {
    /// `--iso FILE`: the installer for every node.
    pub iso: Option<&'a Path>,
    /// `--iso-dir`/`--image-dir`: downloaded installers and disk images.
    pub image_dir: Option<&'a Path>,
    /// `--deploy-env DIR`.
    pub deploy_env: Option<&'a Path>,
    /// The state folder: `deploy-env/` and `images/` there are where
    /// `kiln image build` puts what it builds.
    pub state: &'a Path,
}

/// Finds what `profile` needs on this machine: the installer ISO, or the
/// deploy environment and the disk image (a local copy: the profile's
/// `path`, or its file name in the image folder or the state folder's
/// `images/`; else the profile's URL). A local image is hashed here, so a
/// corrupt copy fails the run before any node is powered off.
pub fn locate(profile: &ImageProfile, places: Places<'_>) -> anyhow::Result<Media> {
    let Some(disk) = &profile.disk_image else {
        return installer_path(profile, places.iso, places.image_dir).map(Media::Installer);
    };
    let built_env = places.state.join("deploy-env");
    let deploy_env = places.deploy_env.unwrap_or(&built_env);
    let deploy_iso = deploy_env.join(DEPLOY_ISO);
    if !deploy_iso.is_file() {
        return Err(BadInput(format!(
            "{} is deployed from a disk image, but there is no deploy environment at {}: \
             build it with `kiln image build deploy-env` (or pass --deploy-env DIR)",
            profile.name,
            deploy_iso.display(),
        ))
        .into());
    }
    let candidates: Vec<PathBuf> = [
        disk.path.as_deref().map(PathBuf::from),
        places
            .image_dir
            .and_then(|d| disk.file_name().map(|f| d.join(f))),
        disk.file_name()
            .map(|f| places.state.join("images").join(f)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let local = candidates.iter().find(|p| p.is_file()).cloned();
    let qcow2 = disk.format == crate::profiles::image::DiskFormat::Qcow2;
    let (source, sha256) = match (local, &disk.url) {
        (Some(path), _) => {
            let expected = match &disk.sha256 {
                Some(d) => d.clone(),
                None => {
                    sidecar_digest(&path).map_err(|e| BadInput(format!("{}: {e}", profile.name)))?
                }
            };
            let actual = verify::sha256_file(&path, |_| {})
                .map_err(|e| BadInput(format!("reading {}: {e}", path.display())))?;
            if actual != expected {
                return Err(BadInput(format!(
                    "disk image {} of {} has SHA-256 {actual}, not {expected}",
                    path.display(),
                    profile.name
                ))
                .into());
            }
            (DiskSource::Local(path), expected)
        }
        (None, Some(url)) if qcow2 => {
            return Err(BadInput(format!(
                "{}: a qcow2 image is converted to raw on this machine before nodes get it; \
                 download {url} into --image-dir (its sha256 is checked there)",
                profile.name
            ))
            .into());
        }
        (None, Some(url)) => match &disk.sha256 {
            Some(d) => (DiskSource::Url(url.clone()), d.clone()),
            None => {
                return Err(BadInput(format!(
                    "{}: a disk image fetched from {url} needs its sha256 in the profile",
                    profile.name
                ))
                .into());
            }
        },
        (None, None) => {
            return Err(BadInput(format!(
                "no local copy of the {} disk image (looked for {}): build it (`kiln image build debian-12`) \
                 or download it, or pass --image-dir DIR",
                profile.name,
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
    };
    let (source, sha256, compression) = match source {
        DiskSource::Local(path) if qcow2 => {
            let cache = places.state.join("images").join("converted");
            let c = qcow2::to_raw_gz(&path, &sha256, &cache).map_err(|e| {
                e.context(format!("{}: converting {}", profile.name, path.display()))
            })?;
            tracing::info!(
                image = %path.display(),
                raw = %c.path.display(),
                "{} qcow2 image as gzip-compressed raw",
                if c.fresh { "converted the" } else { "reusing the converted" }
            );
            let gzip = crate::profiles::image::Compression::Gzip;
            (DiskSource::Local(c.path), c.sha256, gzip)
        }
        other => (other, sha256, disk.compression),
    };
    Ok(Media::Disk(DiskMedia {
        deploy_iso,
        image: source,
        sha256,
        compression,
        root_partition: disk.root_partition,
        bench_peer: false,
    }))
}

/// The digest in `FILE.sha256` beside a local image (its first word, as
/// `sha256sum` writes it).
fn sidecar_digest(path: &Path) -> Result<String, String> {
    let mut side = path.as_os_str().to_owned();
    side.push(".sha256");
    let side = PathBuf::from(side);
    let text = std::fs::read_to_string(&side).map_err(|e| {
        format!(
            "the profile gives no sha256 and {} cannot be read ({e})",
            side.display()
        )
    })?;
    let word = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(word)
    } else {
        Err(format!("{} does not start with a SHA-256", side.display()))
    }
}

/// The public-key lines the seed authorizes: the inventory's `ssh.key`
/// (its public half), per distinct key file.
pub fn authorized_keys(creds: &Credentials, node: &Node) -> anyhow::Result<Vec<String>> {
    let Some(path) = &node.ssh.key else {
        return Err(BadInput(format!(
            "{}: imaging needs ssh.key in the inventory (its public half goes into the seed so kiln can log in afterwards)",
            node.name
        ))
        .into());
    };
    let key = creds
        .key(path)
        .map_err(|e| BadInput(format!("{}: {e}", node.name)))?;
    let line = key
        .public_key()
        .to_openssh()
        .map_err(|e| BadInput(format!("{}: {e}", node.name)))?;
    Ok(vec![format!("{line} kiln")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::image::{Compression, DiskFormat, DiskImage};

    fn profile(disk: DiskImage) -> ImageProfile {
        let catalog = crate::profiles::Catalog::builtin().unwrap();
        let mut p = catalog.images["debian-12"].profile.clone();
        p.disk_image = Some(disk);
        p
    }

    fn disk(path: &Path, format: DiskFormat, sha256: Option<String>) -> DiskImage {
        DiskImage {
            url: None,
            path: Some(path.display().to_string()),
            sha256,
            format,
            compression: Compression::None,
            root_partition: 0,
        }
    }

    fn places(state: &Path) -> Places<'_> {
        Places {
            iso: None,
            image_dir: None,
            deploy_env: None,
            state,
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("deploy-env")).unwrap();
        std::fs::write(dir.path().join("deploy-env").join(DEPLOY_ISO), b"iso").unwrap();
        // Two MiB with a recognisable pattern and a hole.
        let mut raw = vec![0u8; 2 << 20];
        for (i, b) in raw[..64 << 10].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        raw[(2 << 20) - 5..].copy_from_slice(b"tail!");
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, &raw).unwrap();
        (dir, path, raw)
    }

    #[test]
    fn a_local_raw_image_is_checked_before_any_node() {
        let (dir, path, _) = setup();
        let good = verify::sha256_file(&path, |_| {}).unwrap();
        let p = profile(disk(&path, DiskFormat::Raw, Some(good.clone())));
        let Media::Disk(d) = locate(&p, places(dir.path())).unwrap() else {
            panic!("not a disk image")
        };
        assert_eq!((d.image, d.sha256), (DiskSource::Local(path.clone()), good));
        let p = profile(disk(&path, DiskFormat::Raw, Some("0".repeat(64))));
        let err = locate(&p, places(dir.path())).unwrap_err().to_string();
        assert!(err.contains("has SHA-256"), "{err}");
    }

    /// A qcow2 image reaches the nodes as gzip-compressed raw whose bytes
    /// are the image's disk, and a second run reuses the conversion.
    #[test]
    fn a_qcow2_image_is_converted_once() {
        let have = std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok();
        if !have {
            assert!(
                std::env::var_os("KILN_REQUIRE_VM").is_none(),
                "qemu-img is missing (KILN_REQUIRE_VM: scripts/vmrack/deps.sh installs qemu-utils)"
            );
            eprintln!("skipped: qemu-img is not installed");
            return;
        }
        let (dir, raw_path, raw) = setup();
        let qcow = dir.path().join("disk.qcow2");
        let ok = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw_path)
            .arg(&qcow)
            .status()
            .unwrap();
        assert!(ok.success());
        let digest = verify::sha256_file(&qcow, |_| {}).unwrap();
        let p = profile(disk(&qcow, DiskFormat::Qcow2, Some(digest)));
        let Media::Disk(d) = locate(&p, places(dir.path())).unwrap() else {
            panic!("not a disk image")
        };
        assert_eq!(d.compression, Compression::Gzip);
        let DiskSource::Local(gz) = &d.image else {
            panic!("not local")
        };
        assert_eq!(verify::sha256_file(gz, |_| {}).unwrap(), d.sha256);
        let out = std::process::Command::new("gzip")
            .args(["-dc"])
            .arg(gz)
            .output()
            .unwrap();
        assert!(
            out.stdout == raw,
            "the converted image differs from the disk"
        );
        let Media::Disk(again) = locate(&p, places(dir.path())).unwrap() else {
            panic!("not a disk image")
        };
        assert_eq!((again.image, again.sha256), (d.image, d.sha256));
        // A qcow2 that reads another file is refused before conversion.
        let backed = dir.path().join("backed.qcow2");
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&raw_path)
            .arg(&backed)
            .status()
            .unwrap();
        assert!(ok.success());
        let digest = verify::sha256_file(&backed, |_| {}).unwrap();
        let p = profile(disk(&backed, DiskFormat::Qcow2, Some(digest)));
        let err = format!("{:#}", locate(&p, places(dir.path())).unwrap_err());
        assert!(err.contains("backing file"), "{err}");
    }
}
