//! Copies streamed over a plain exec channel (`cat`), so they work with
//! every SSH server and through sudo, and need no SFTP subsystem. Uploads
//! land in a temporary name and are renamed into place, so a reader never
//! sees half a file; downloads are written straight to a local file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Remote;
use super::exec::{ExecError, ExecOptions, Input, Output, RemoteCommand, Sink, Stream};
use super::quote::quote;

/// The command that receives an upload at `remote` with `mode`.
pub fn upload_command(remote: &str, mode: u32) -> RemoteCommand {
    let tmp = format!("{remote}.kiln-upload");
    RemoteCommand::shell(format!(
        "umask 077 && cat > {t} && chmod {mode:o} {t} && mv -f {t} {r}",
        t = quote(&tmp),
        r = quote(remote),
    ))
}

/// Uploads the local file `local` to `remote` on the node, keeping its
/// permission bits.
pub async fn upload(
    node: &Remote,
    local: &Path,
    remote: &str,
    sudo: bool,
    timeout: Option<Duration>,
    opts: &ExecOptions,
) -> Result<Output, ExecError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(local)
        .map_err(|source| ExecError::Input {
            node: node.node().to_owned(),
            path: local.to_owned(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    let cmd = upload_command(remote, mode).sudo(sudo).timeout(timeout);
    node.run(
        &cmd,
        Input::File(local.to_owned()),
        &mut super::exec::Discard,
        opts,
    )
    .await
}

/// Writes stdout to a file as it arrives; stderr is kept by the capture.
struct ToFile {
    file: Option<std::io::BufWriter<std::fs::File>>,
    error: Option<std::io::Error>,
}

impl Sink for ToFile {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        if stream != Stream::Stdout {
            return;
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(data)
        {
            self.error = Some(e);
            self.file = None;
        }
    }
}

/// Downloads `remote` from the node into the local file `local` (its
/// folder is created). stdout is not kept in memory.
pub async fn download(
    node: &Remote,
    remote: &str,
    local: &Path,
    sudo: bool,
    timeout: Option<Duration>,
    opts: &ExecOptions,
) -> Result<Output, DownloadError> {
    let io = |source| DownloadError::Local {
        path: local.to_owned(),
        source,
    };
    if let Some(dir) = local.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::fs::File::create(local).map_err(io)?;
    let mut sink = ToFile {
        file: Some(std::io::BufWriter::new(file)),
        error: None,
    };
    let opts = ExecOptions {
        head: 0,
        ..opts.clone()
    };
    let cmd = RemoteCommand::argv(&["cat", "--", remote])
        .sudo(sudo)
        .timeout(timeout);
    let out = node.run(&cmd, Input::None, &mut sink, &opts).await?;
    if let Some(e) = sink.error {
        return Err(io(e));
    }
    if let Some(mut f) = sink.file {
        f.flush().map_err(io)?;
    }
    if !out.success() {
        let _ = std::fs::remove_file(local);
    }
    Ok(out)
}

/// A download that failed on this side or the node's.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Running `cat` on the node failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The local file could not be written.
    #[error("cannot write {path}")]
    Local {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
