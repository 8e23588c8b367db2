//! qcow2 disk images, turned once into what the deploy environment writes.
//!
//! The deploy environment streams raw (or gzip-compressed raw) bytes to
//! the disk; it has no qcow2 reader. So kiln converts a qcow2 image on
//! this machine, once, with `qemu-img convert` (as Ironic's conductor does
//! with `force_raw_images`), gzips the result (`gzip -1`: the zeros of a
//! fresh image shrink to almost nothing) and caches it under the state
//! folder, named by the qcow2's SHA-256, so a later run reuses it.
//!
//! The qcow2 is checked against the profile's digest before `qemu-img`
//! reads it, and an image that points outside itself (a backing file or
//! an external data file, which would make `qemu-img` read any path on
//! this machine into the node's disk) is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::exit::BadInput;

/// The cached conversion of one qcow2 image.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// `CACHE/SHA256.raw.gz`.
    pub path: PathBuf,
    /// SHA-256 of that file (what the deploy environment checks).
    pub sha256: String,
    /// Whether this call converted it (false: found in the cache).
    pub fresh: bool,
}

/// Converts `src` (whose digest, already checked, is `src_sha256`) into
/// `cache/SRC_SHA256.raw.gz`, or finds it there.
pub fn to_raw_gz(src: &Path, src_sha256: &str, cache: &Path) -> anyhow::Result<Converted> {
    let out = cache.join(format!("{src_sha256}.raw.gz"));
    let side = cache.join(format!("{src_sha256}.raw.gz.sha256"));
    if let (true, Ok(text)) = (out.is_file(), std::fs::read_to_string(&side)) {
        let sha256 = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if sha256.len() == 64 {
            return Ok(Converted {
                path: out,
                sha256,
                fresh: false,
            });
        }
    }
    refuse_outside_references(src)?;
    std::fs::create_dir_all(cache)
        .map_err(|e| BadInput(format!("cannot create {}: {e}", cache.display())))?;
    let raw = cache.join(format!(".{src_sha256}.raw.partial"));
    let gz = cache.join(format!(".{src_sha256}.raw.gz.partial"));
    let result = convert(src, &raw, &gz);
    let _ = std::fs::remove_file(&raw);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&gz);
        return Err(e);
    }
    let sha256 = super::verify::sha256_file(&gz, |_| {})?;
    std::fs::rename(&gz, &out)?;
    std::fs::write(&side, format!("{sha256}  {}\n", file_name(&out)))?;
    Ok(Converted {
        path: out,
        sha256,
        fresh: true,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn convert(src: &Path, raw: &Path, gz: &Path) -> anyhow::Result<()> {
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
        .arg(src)
        .arg(raw))?;
    let out = std::fs::File::create(gz)?;
    run(Command::new("gzip")
        .args(["-1", "-c", "--"])
        .arg(raw)
        .stdout(Stdio::from(out)))?;
    Ok(())
}

/// Runs a converter, its stderr in the error.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|c| c.wait_with_output());
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BadInput(format!(
                "converting a qcow2 image needs `{tool}` on this machine (Debian: apt install qemu-utils gzip)"
            ))
            .into());
        }
        Err(e) => return Err(anyhow::anyhow!("{tool}: {e}")),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(anyhow::anyhow!(
            "{tool} failed ({}): {}",
            out.status,
            err.trim().lines().last().unwrap_or("no message")
        ));
    }
    Ok(())
}

/// Refuses a qcow2 that is not one self-contained qcow2 file.
fn refuse_outside_references(src: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["info", "--output=json", "-f", "qcow2"])
        .arg(src)
        .stdout(Stdio::piped());
    let out = match cmd
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|c| c.wait_with_output())
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BadInput(
                "converting a qcow2 image needs `qemu-img` on this machine (Debian: apt install qemu-utils)"
                    .into(),
            )
            .into());
        }
        Err(e) => return Err(anyhow::anyhow!("qemu-img info: {e}")),
    };
    if !out.status.success() {
        return Err(BadInput(format!(
            "{} is not a qcow2 image qemu-img can read: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .into());
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("qemu-img info gave no JSON: {e}"))?;
    check_info(&info).map_err(|why| BadInput(format!("{}: {why}", src.display())).into())
}

/// The reasons `qemu-img info --output=json` gives to refuse an image.
pub fn check_info(info: &serde_json::Value) -> Result<(), String> {
    if info["format"] != "qcow2" {
        return Err(format!("its format is {}, not qcow2", info["format"]));
    }
    if let Some(b) = info.get("backing-filename").and_then(|b| b.as_str()) {
        return Err(format!(
            "it has a backing file ({b}); kiln writes self-contained images only \
             (flatten it with `qemu-img convert -O qcow2`)"
        ));
    }
    let specific = &info["format-specific"]["data"];
    if let Some(d) = specific.get("data-file").and_then(|d| d.as_str()) {
        return Err(format!(
            "it keeps its data in an external file ({d}); kiln writes self-contained images only"
        ));
    }
    if info["encrypted"] == true {
        return Err("it is encrypted".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_that_point_outside_themselves_are_refused() {
        let plain = json!({"format": "qcow2", "virtual-size": 1048576,
            "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}});
        assert_eq!(check_info(&plain), Ok(()));
        let backed = json!({"format": "qcow2", "backing-filename": "/etc/shadow"});
        assert!(check_info(&backed).unwrap_err().contains("/etc/shadow"));
        let external = json!({"format": "qcow2",
            "format-specific": {"data": {"data-file": "/dev/sda"}}});
        assert!(check_info(&external).unwrap_err().contains("/dev/sda"));
        assert!(check_info(&json!({"format": "raw"})).is_err());
        assert!(check_info(&json!({"format": "qcow2", "encrypted": true})).is_err());
    }
}
