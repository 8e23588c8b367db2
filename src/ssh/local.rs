//! The local transport: the same commands, run by `sh -c` on this machine,
//! for when kiln runs on the node itself (an integrator's burn-in station,
//! a GPU node testing itself). Same quoting, sudo, timeout and output
//! handling as over SSH.

use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

use super::exec::{
    self, Event, ExecError, ExecOptions, Exit, Input, Output, Proc, RemoteCommand, Sink, Stream,
};

/// Runs `cmd` here, as if on node `name`.
pub async fn run(
    name: &str,
    cmd: &RemoteCommand,
    input: Input,
    sink: &mut dyn Sink,
    opts: &ExecOptions,
) -> Result<Output, ExecError> {
    run_wire(name, &cmd.wire(), cmd, input, sink, opts).await
}

/// Runs the command line `wire`, driven as `cmd` (tests wrap the wire).
async fn run_wire(
    name: &str,
    wire: &str,
    cmd: &RemoteCommand,
    input: Input,
    sink: &mut dyn Sink,
    opts: &ExecOptions,
) -> Result<Output, ExecError> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(wire)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill takes its children too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(ExecError::Spawn)?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel(16);
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(pump(s, Stream::Stdout, tx.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(pump(s, Stream::Stderr, tx.clone())));
    tokio::spawn(async move {
        for task in [out, err].into_iter().flatten() {
            let _ = task.await;
        }
        let exit = match child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt as _;
                match (status.code(), status.signal()) {
                    (Some(c), _) => Exit::Code(c as u32),
                    (None, Some(s)) => Exit::Signal(signal_name(s)),
                    _ => Exit::Unknown,
                }
            }
            Err(_) => Exit::Unknown,
        };
        let _ = tx.send(Event::Exit(exit)).await;
        let _ = tx.send(Event::Closed).await;
    });
    let proc = LocalProc { rx, stdin, pid };
    exec::drive(
        exec::Where {
            node: name,
            addr: "local",
        },
        proc,
        cmd,
        input,
        sink,
        opts,
    )
    .await
}

fn signal_name(sig: i32) -> String {
    match sig {
        1 => "HUP",
        2 => "INT",
        9 => "KILL",
        13 => "PIPE",
        15 => "TERM",
        _ => return sig.to_string(),
    }
    .into()
}

async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::Sender<Event>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send(Event::Data(stream, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

struct LocalProc {
    rx: mpsc::Receiver<Event>,
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
}

impl LocalProc {
    /// Signals the command's whole process group.
    async fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid {
            let _ = tokio::process::Command::new("kill")
                .args([sig, "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
}

impl Proc for LocalProc {
    async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    async fn write(&mut self, data: Bytes) -> bool {
        match &mut self.stdin {
            Some(s) => s.write_all(&data).await.is_ok(),
            None => false,
        }
    }

    fn start_input(
        &mut self,
        input: Input,
    ) -> tokio::sync::oneshot::Receiver<(PathBuf, std::io::Error)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let Some(mut stdin) = self.stdin.take() else {
            return rx;
        };
        tokio::spawn(async move {
            match input {
                Input::None => {}
                Input::Bytes(b) => {
                    let _ = stdin.write_all(&b).await;
                }
                Input::File(path) => match tokio::fs::File::open(&path).await {
                    Ok(mut file) => {
                        let _ = tokio::io::copy(&mut file, &mut stdin).await;
                    }
                    Err(e) => {
                        let _ = tx.send((path, e));
                    }
                },
            }
            // Dropping stdin closes it.
        });
        rx
    }

    async fn terminate(&mut self) {
        self.signal("-TERM").await;
    }

    async fn kill(&mut self) {
        self.signal("-KILL").await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::secret::Secret;

    struct Lines(Vec<(Stream, String)>);

    impl Sink for Lines {
        fn output(&mut self, stream: Stream, data: &[u8]) {
            self.0
                .push((stream, String::from_utf8_lossy(data).into_owned()));
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn runs_streams_and_reports_status() {
        rt().block_on(async {
            let mut sink = Lines(Vec::new());
            let cmd = RemoteCommand::shell("echo out; echo err >&2; cat; exit 3");
            let out = run(
                "here",
                &cmd,
                Input::Bytes("in\n".into()),
                &mut sink,
                &ExecOptions::default(),
            )
            .await
            .unwrap();
            assert_eq!(out.exit, Exit::Code(3));
            assert_eq!(out.stdout.text(), "out\nin\n");
            assert_eq!(out.stderr.text(), "err\n");
            let err = out.check("here", &cmd).unwrap_err().to_string();
            assert!(
                err.contains("here: `echo out; echo err >&2; cat; exit 3` failed: exit status 3"),
                "{err}"
            );
            assert!(err.contains("stderr (last lines):\n    err"), "{err}");
        });
    }

    #[test]
    fn timeouts_kill_the_whole_group() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("pid");
            let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
            let cmd = RemoteCommand::shell(script).timeout(Some(Duration::from_millis(500)));
            let start = Instant::now();
            let out = run(
                "here",
                &cmd,
                Input::None,
                &mut exec::Discard,
                &ExecOptions::default(),
            )
            .await
            .unwrap();
            assert!(out.timed_out, "{out:?}");
            assert!(start.elapsed() < Duration::from_secs(5));
            let pid = std::fs::read_to_string(&pidfile).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            // Dead means gone or a zombie (its reaper may be slow).
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            let alive = stat.is_ok_and(|s| !s.contains(") Z "));
            assert!(!alive, "the background child survived the timeout");
        });
    }

    #[test]
    fn an_interrupt_stops_the_whole_group() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("pid");
            let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
            let cmd = RemoteCommand::shell(script);
            let (tx, rx) = tokio::sync::watch::channel(false);
            let opts = ExecOptions {
                cancel: Some(rx),
                ..ExecOptions::default()
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = tx.send(true);
            });
            let start = Instant::now();
            let out = run("here", &cmd, Input::None, &mut exec::Discard, &opts)
                .await
                .unwrap();
            assert!(out.interrupted && !out.success(), "{out:?}");
            assert_eq!(out.outcome(), "interrupted");
            assert!(start.elapsed() < Duration::from_secs(2));
            let pid = std::fs::read_to_string(&pidfile).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            assert!(
                !stat.is_ok_and(|s| !s.contains(") Z ")),
                "the child survived"
            );
        });
    }

    /// A stand-in for sudo that behaves like `sudo -S -p PROMPT`: prompts on
    /// stderr, reads a line from stdin, checks it.
    fn fake_sudo(dir: &std::path::Path, password: &str) -> String {
        let path = dir.join("sudo");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nshift 2; prompt=$1; shift 2\nfor i in 1 2 3; do printf '%s' \"$prompt\" >&2; IFS= read -r pw; [ \"$pw\" = '{password}' ] && exec \"$@\"; echo 'Sorry, try again.' >&2; done\nexit 1\n"
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&path)
            .status()
            .unwrap();
        format!("PATH={}:$PATH; ", dir.display())
    }

    #[test]
    fn sudo_password_is_answered_once_and_input_follows() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let cmd = RemoteCommand::shell("cat; echo done >&2").sudo(true);
            // The fake sudo must be found by the outer command line.
            let wire = format!("{}{}", fake_sudo(dir.path(), "s3cret"), cmd.wire());
            let with = |pw: Option<&str>| ExecOptions {
                sudo_password: pw.map(Secret::new),
                ..ExecOptions::default()
            };
            let mut sink = exec::Discard;
            let input = Input::Bytes("payload".into());
            let out = run_wire("here", &wire, &cmd, input, &mut sink, &with(Some("s3cret")))
                .await
                .unwrap();
            assert!(out.success(), "{out:?}");
            assert_eq!(out.stdout.text(), "payload");
            assert_eq!(out.stderr.text(), "done\n");
            let err = run_wire(
                "here",
                &wire,
                &cmd,
                Input::None,
                &mut sink,
                &with(Some("wrong")),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, ExecError::SudoRefused { .. }), "{err}");
            let err = run_wire("here", &wire, &cmd, Input::None, &mut sink, &with(None))
                .await
                .unwrap_err();
            assert!(matches!(err, ExecError::SudoNeedsPassword { .. }), "{err}");
        });
    }
}
