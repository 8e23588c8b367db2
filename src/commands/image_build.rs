//! `kiln image build deploy-env|debian-12`: runs the build scripts that
//! ship inside kiln (`scripts/deploy-env/`, `scripts/debian-image.sh`), so
//! an installed kiln builds the same bytes as a checkout does. The
//! scripts use Debian's packages only (apt-get download, mmdebstrap) and
//! reuse their output when nothing changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::Ctx;
use crate::cli::BuildTarget;
use crate::exit::{BadInput, ExitStatus};

/// The scripts, by their path in the repository.
const SCRIPTS: &[(&str, &str)] = &[
    (
        "scripts/debian-image.sh",
        include_str!("../../scripts/debian-image.sh"),
    ),
    (
        "scripts/deploy-env/build.sh",
        include_str!("../../scripts/deploy-env/build.sh"),
    ),
    (
        "scripts/deploy-env/init",
        include_str!("../../scripts/deploy-env/init"),
    ),
];

/// Commands each build needs, with the Debian package that has them.
fn needs(what: BuildTarget) -> &'static [(&'static str, &'static str)] {
    match what {
        BuildTarget::DeployEnv => &[
            ("apt-get", "apt"),
            ("dpkg-deb", "dpkg"),
            ("cpio", "cpio"),
            ("xorriso", "xorriso"),
            ("grub-mkrescue", "grub-common"),
            ("mformat", "mtools"),
        ],
        BuildTarget::Debian12 => &[
            ("mmdebstrap", "mmdebstrap"),
            ("grub-mkstandalone", "grub-common"),
            ("mkfs.vfat", "dosfstools"),
            ("mcopy", "mtools"),
            ("mkfs.ext4", "e2fsprogs"),
            ("sfdisk", "fdisk"),
        ],
    }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|dir| dir.join(cmd).is_file())
    })
}

/// The tools `what` needs that this machine lacks, as `command (package)`.
pub fn missing_tools(what: BuildTarget) -> Vec<String> {
    needs(what)
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(cmd, pkg)| format!("{cmd} (Debian package {pkg})"))
        .collect()
}

/// Writes the embedded scripts into `dir`, keeping their layout.
pub fn write_scripts(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for (path, text) in SCRIPTS {
        let dest = dir.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", dest.display()))?;
    }
    Ok(())
}

/// Builds `what` into `out` (default under `state`); returns the output
/// folder. The script's progress goes to stderr.
pub fn run(what: BuildTarget, out: &Path) -> anyhow::Result<PathBuf> {
    let missing = missing_tools(what);
    if !missing.is_empty() {
        return Err(BadInput(format!(
            "building {} needs: {}",
            name(what),
            missing.join(", ")
        ))
        .into());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("resolving {}", out.display()))?;
    // The scripts are kept beside what they built: the record of how.
    let scripts = out.join(".scripts");
    write_scripts(&scripts)?;
    let script = scripts.join(match what {
        BuildTarget::DeployEnv => "scripts/deploy-env/build.sh",
        BuildTarget::Debian12 => "scripts/debian-image.sh",
    });
    let status = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        anyhow::bail!(
            "building {} failed ({status}); its messages are above",
            name(what)
        );
    }
    Ok(out)
}

fn name(what: BuildTarget) -> &'static str {
    match what {
        BuildTarget::DeployEnv => "the deploy environment",
        BuildTarget::Debian12 => "the debian-12 image",
    }
}

/// `kiln image build`.
pub fn build(
    ctx: &Ctx,
    what: BuildTarget,
    out: Option<&Path>,
    state: &Path,
) -> anyhow::Result<ExitStatus> {
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| match what {
        BuildTarget::DeployEnv => state.join("deploy-env"),
        BuildTarget::Debian12 => state.join("images"),
    });
    let dir = run(what, &out)?;
    let files: Vec<PathBuf> = match what {
        BuildTarget::DeployEnv => ["vmlinuz", "initrd.img", "deploy.iso", "deploy-env.json"]
            .iter()
            .map(|f| dir.join(f))
            .collect(),
        BuildTarget::Debian12 => ["debian-12.raw.gz", "debian-12.raw.gz.sha256"]
            .iter()
            .map(|f| dir.join(f))
            .collect(),
    };
    if ctx.printer.json {
        ctx.printer
            .json_data(&serde_json::json!({ "out": dir, "files": files }))?;
    } else {
        let lines: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        ctx.printer.data(&(lines.join("\n") + "\n"));
    }
    Ok(ExitStatus::Success)
}
