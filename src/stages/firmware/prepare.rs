//! The firmware stage's run-wide setup: every package the run's baselines
//! name is found on this machine and its SHA-256 checked before any BMC is
//! asked for anything; once the run goes, each is served from the run's
//! boot server under a token, and the per-rack bound on nodes updating at
//! once is set up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::exit::BadInput;
use crate::imaging::server::ServedFile;
use crate::imaging::setup::ImagingRequest;
use crate::pipeline::prepare::{Prepare, PrepareCx, PreparedValue, StartCx};
use crate::pipeline::stages::StageFuture;
use crate::profiles::firmware::FirmwarePackage;

/// A package found on this machine, its digest checked.
#[derive(Clone, Debug)]
pub struct Package {
    /// The file.
    pub file: PathBuf,
    /// The name the BMC sees (some BMCs read the package type from it).
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
    /// Where the BMC fetches it from kiln's boot server (set once the run
    /// starts).
    pub url: String,
    /// Its bytes for a push upload: read and checked on first use, then
    /// shared by every node's upload (a pull needs none).
    image: Arc<tokio::sync::OnceCell<Bytes>>,
}

impl Package {
    /// Its bytes, read once for the whole run and checked against
    /// `sha256` (the digest the profile pins): every node's push shares
    /// this one copy instead of reading, hashing and copying it again.
    pub async fn bytes(&self, sha256: &str) -> Result<Bytes, String> {
        let image = self
            .image
            .get_or_try_init(|| {
                let file = self.file.clone();
                let sha256 = sha256.to_owned();
                async move {
                    // Reading and hashing a package of hundreds of MiB takes
                    // seconds: off the runtime's workers.
                    tokio::task::spawn_blocking(move || {
                        let image = std::fs::read(&file)
                            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                        let digest = crate::imaging::verify::sha256_hex(&image);
                        if digest != sha256 {
                            return Err(format!(
                                "{} changed since the run started (SHA-256 {digest})",
                                file.display()
                            ));
                        }
                        Ok(Bytes::from(image))
                    })
                    .await
                    .map_err(|e| format!("reading the package failed: {e}"))?
                }
            })
            .await?;
        Ok(image.clone())
    }
}

/// What every node of the firmware stage shares.
pub struct FirmwareSetup {
    /// Packages by (hardware profile, component).
    packages: HashMap<(String, String), Package>,
    /// Nodes updating at once in one rack.
    per_rack: usize,
    racks: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Poll interval for task monitors and read-backs.
    pub poll: Duration,
    /// How long after a reset the new values may take to show (the host
    /// runs its POST, where BIOS settings and some firmware apply).
    pub settle: Duration,
}

impl FirmwareSetup {
    /// The package of `component` in hardware profile `profile`.
    pub fn package(&self, profile: &str, component: &str) -> Option<&Package> {
        self.packages
            .get(&(profile.to_owned(), component.to_owned()))
    }

    /// Waits for one of the rack's update slots (`limits.firmware.per_rack`).
    pub async fn rack_slot(&self, rack: &str) -> Option<OwnedSemaphorePermit> {
        let gate = {
            let mut racks = self.racks.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                racks
                    .entry(rack.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_rack))),
            )
        };
        gate.acquire_owned().await.ok()
    }
}

/// The checked packages, waiting for the run to start the boot server.
pub struct Packages {
    found: HashMap<(String, String), (PathBuf, String)>,
    per_rack: usize,
    request: ImagingRequest,
}

impl Packages {
    /// Finds and checks every package the run's nodes' baselines name.
    pub fn check(run: &PrepareCx<'_>) -> Result<Packages, BadInput> {
        let base = run.inventory_path.parent().unwrap_or(Path::new(""));
        let mut found = HashMap::new();
        let mut problems = Vec::new();
        for node in run.nodes {
            let Some(entry) = run.inventory.catalog.hardware.get(&node.hardware) else {
                continue;
            };
            let profile = &entry.profile;
            for component in &profile.firmware {
                let key = (profile.name.clone(), component.component.clone());
                let Some(package) = &component.package else {
                    continue;
                };
                if found.contains_key(&key) {
                    continue;
                }
                let what = format!("{}: firmware {}", profile.name, component.component);
                match locate(package, base, run.imaging.iso_dir.as_deref(), &what) {
                    Ok(located) => {
                        found.insert(key, located);
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        problems.sort();
        problems.dedup();
        if !problems.is_empty() {
            return Err(BadInput(crate::diag::clip(&problems.join("\n"), 4000)));
        }
        Ok(Packages {
            found,
            per_rack: run.inventory.limits.firmware_per_rack.max(1),
            request: run.imaging.clone(),
        })
    }
}

/// Finds a package on this machine (its `path`, relative to the
/// inventory, or its URL's file name in `--image-dir`) and checks its
/// digest. Returns the file and the name the BMC sees.
fn locate(
    package: &FirmwarePackage,
    base: &Path,
    image_dir: Option<&Path>,
    what: &str,
) -> Result<(PathBuf, String), String> {
    let url_name = package
        .url
        .as_deref()
        .and_then(|u| u.split(['?', '#']).next())
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty());
    let file = match (&package.path, image_dir, url_name) {
        (Some(p), _, _) => base.join(p),
        (None, Some(dir), Some(name)) => dir.join(name),
        _ => {
            return Err(format!(
                "{what}: no local copy of the package: download {} and pass --image-dir DIR",
                package.url.as_deref().unwrap_or("it")
            ));
        }
    };
    let digest = crate::imaging::verify::sha256_file(&file, |_| {})
        .map_err(|e| format!("{what}: cannot read {}: {e}", file.display()))?;
    if digest != package.sha256 {
        return Err(format!(
            "{what}: {} has SHA-256 {digest}, the profile pins {}",
            file.display(),
            package.sha256
        ));
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "firmware.bin".into());
    Ok((file, name))
}

impl Prepare for Packages {
    fn start<'a>(
        self: Box<Self>,
        cx: StartCx<'a>,
    ) -> StageFuture<'a, anyhow::Result<PreparedValue>> {
        Box::pin(async move {
            let mut packages = HashMap::new();
            if !self.found.is_empty() {
                let server = crate::stages::image::prepare::boot_server(&self.request, cx).await?;
                for (key, (file, name)) in self.found {
                    let served = ServedFile::plain(&file)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                    let len = served.len;
                    let url = server.add_firmware(&name, served)?;
                    packages.insert(
                        key,
                        Package {
                            file,
                            name,
                            len,
                            url,
                            image: Arc::default(),
                        },
                    );
                }
            }
            let setup = FirmwareSetup {
                packages,
                per_rack: self.per_rack,
                racks: Mutex::new(HashMap::new()),
                poll: self.request.poll.unwrap_or(Duration::from_secs(1)),
                settle: self
                    .request
                    .boot_timeout
                    .unwrap_or(Duration::from_secs(15 * 60)),
            };
            Ok(Arc::new(setup) as PreparedValue)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(file: PathBuf) -> Package {
        Package {
            file,
            name: "fw.bin".into(),
            len: 0,
            url: String::new(),
            image: Arc::default(),
        }
    }

    /// Every node's push gets the one copy read first; a file whose bytes
    /// no longer match the pinned digest is refused, not sent.
    #[tokio::test]
    async fn a_package_is_read_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fw.bin");
        std::fs::write(&file, b"package one").unwrap();
        let sha = crate::imaging::verify::sha256_hex(b"package one");
        let p = package(file.clone());
        let first = p.bytes(&sha).await.unwrap();
        // A later change on disk does not reach nodes after the first.
        std::fs::write(&file, b"package two").unwrap();
        let again = p.clone().bytes(&sha).await.unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert_eq!(&again[..], b"package one");
        let err = package(file).bytes(&sha).await.unwrap_err();
        assert!(err.contains("changed since the run started"), "{err}");
    }
}
