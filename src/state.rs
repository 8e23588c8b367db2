//! Sharing kiln's state folder between processes safely: the run lock
//! (one `kiln provision` per state folder), short locks around the stores'
//! read-modify-write, and the one way a store file is replaced.
//!
//! The locks are advisory `flock`s (`File::lock`) on files that are never
//! removed: the kernel drops a lock when its holder exits, even by
//! `kill -9`, so a crashed run never leaves the folder locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::exit::BadInput;

/// `KILN_STATE_DIR` when it is set and not empty (empty means unset).
pub fn state_dir_from_env() -> Option<PathBuf> {
    std::env::var_os("KILN_STATE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// kiln's state folder for an inventory: `KILN_STATE_DIR` (see
/// [`state_dir_from_env`]), or `.kiln/` beside the inventory file. The
/// one place this is worked out.
pub fn state_dir(inventory: &Path) -> PathBuf {
    state_dir_in(inventory.parent().unwrap_or(Path::new(".")))
}

/// The state folder for an inventory kept in `inventory_dir`:
/// `KILN_STATE_DIR`, or `.kiln/` in that folder (the current one when
/// `inventory_dir` is empty).
pub fn state_dir_in(inventory_dir: &Path) -> PathBuf {
    if let Some(dir) = state_dir_from_env() {
        return dir;
    }
    let dir = if inventory_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        inventory_dir
    };
    dir.join(".kiln")
}

/// The run lock's file name inside the state folder.
pub const LOCK_FILE: &str = "lock";

/// The state folder held by one run for its whole life. Dropping it (or
/// the process ending) lets the next run in.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the state folder's lock, or fails at once naming the folder
    /// and what the lock file says about its holder. A held lock is bad
    /// usage (exit 2), not kiln failing: the fix is to wait for that run
    /// or to point this one at another state folder.
    pub fn acquire(state: &Path) -> anyhow::Result<StateLock> {
        std::fs::create_dir_all(state)
            .with_context(|| format!("cannot create the state folder {}", state.display()))?;
        let path = state.join(LOCK_FILE);
        // Not truncated on open: the holder's note must survive our look.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" ({holder})")
                };
                return Err(BadInput(format!(
                    "the state folder {} is in use by another kiln run{holder}; wait for it to end, or set KILN_STATE_DIR to use another folder",
                    state.display()
                ))
                .into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let lock = StateLock { file, path };
        lock.note("")?;
        Ok(lock)
    }

    /// Writes who holds the lock into its file (pid, and `what`, e.g. the
    /// run id), for the message a refused run shows.
    pub fn note(&self, what: &str) -> anyhow::Result<()> {
        let text = match what {
            "" => format!("pid {}\n", std::process::id()),
            _ => format!("pid {}, {what}\n", std::process::id()),
        };
        let mut file = &self.file;
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(text.as_bytes())
        })()
        .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// A short exclusive lock beside `path` (`PATH.lock`), held until the
/// returned file is dropped: what a store takes around its read-modify-
/// write so two processes do not lose each other's entries. Blocks while
/// another holds it; holders only read and write a small file.
pub fn lock_beside(path: &Path) -> std::io::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(PathBuf::from(name))?;
    file.lock()?;
    Ok(file)
}

/// Replaces `path` with `bytes` so that a crash or power loss leaves the
/// old file or the new one, never a torn one: written to a temporary file
/// in the same folder, flushed to disk, renamed over `path`, and the
/// folder flushed so the rename itself is durable. `private` files are
/// created 0600 (keys, secrets).
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Unique per process and call: writers that hold no lock (a host key
    // made by two processes at once) must not share a temporary file.
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename lives in the folder's entry list: flush that too.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("store.json");
        write_atomic(&path, b"one", false).unwrap();
        write_atomic(&path, b"two", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("store.json")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            // Replaced by a private write: the new file is 0600.
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A failed write (the target is a folder) keeps no temporary file.
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("x"), "").unwrap();
        assert!(write_atomic(&folder, b"x", false).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_second_holder_is_refused_naming_the_folder_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        first.note("run r-1").unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}, run r-1", std::process::id())),
            "{text}"
        );
        assert_eq!(
            crate::exit::status_for(&err),
            crate::exit::ExitStatus::BadInput
        );
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
