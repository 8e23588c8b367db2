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
pub mod seed;
pub mod server;
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
    let path = match (iso, &profile.installer.path, iso_dir) {
        (Some(p), _, _) => p.to_owned(),
        (None, Some(p), _) => PathBuf::from(p),
        (None, None, Some(dir)) => dir.join(profile.installer.file_name().unwrap_or_default()),
        (None, None, None) => {
            return Err(BadInput(format!(
                "no local copy of the {} installer: download {} and pass --iso FILE or --iso-dir DIR (or KILN_ISO_DIR)",
                profile.name,
                profile.installer.url.as_deref().unwrap_or("it")
            ))
            .into());
        }
    };
    if !path.is_file() {
        return Err(BadInput(format!(
            "installer image {} of {} does not exist{}",
            path.display(),
            profile.name,
            profile
                .installer
                .url
                .as_deref()
                .map(|u| format!(" (download {u})"))
                .unwrap_or_default()
        ))
        .into());
    }
    Ok(path)
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
