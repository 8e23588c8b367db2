//! How simulated hardware tools reach their node's hardware model.
//!
//! Commands on a simulated node run in a real shell. The hardware-facing
//! tools (`nvidia-smi`, `gpu_burn`, `apt-get`, `reboot`, …) are small
//! scripts first on `PATH` that run `kiln sim tool NAME ARGS…`; that client
//! sends the call over the rack's Unix socket to this server, which runs
//! the tool against the node's model and streams its output back:
//!
//! ```text
//! → {"node":"r01-n01","argv":["nvidia-smi","-L"]}
//! ← {"out":"GPU 0: …\n"}   ← {"err":"…"}   ← {"exit":0}
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::sim::Clock;
use crate::sim::node::{self, SimNode};
use crate::sim::tools::{self, Effect, ToolCtx, ToolFaults};

/// Environment variable naming the socket.
pub const SOCKET_ENV: &str = "KILN_SIM_SOCKET";
/// Environment variable naming the node a command runs on.
pub const NODE_ENV: &str = "KILN_SIM_NODE";

#[derive(Serialize, Deserialize)]
struct Call {
    node: String,
    argv: Vec<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Frame {
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    err: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<i32>,
}

/// The rack's tool server.
#[derive(Debug)]
pub struct ToolServer {
    /// The Unix socket.
    pub socket: PathBuf,
    /// Folder of tool scripts, first on `PATH`.
    pub bin: PathBuf,
    nodes: Vec<Arc<SimNode>>,
    clock: Clock,
}

const SUDO: &str = r#"#!/bin/sh
# kiln virtual rack: sudo runs the command as is (the sandbox has one user).
while [ $# -gt 0 ]; do
  case "$1" in
    # NOPASSWD, as cloud images set it up: like the real sudo, -S reads
    # stdin only after prompting, so it never prompts and never reads.
    -S) shift ;;
    -u|-g|-p|-C|-h) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: sudo command" >&2; exit 1; }
exec "$@"
"#;

fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

impl ToolServer {
    /// Writes the tool scripts and starts serving the socket under `root`.
    pub async fn start(
        root: &Path,
        nodes: Vec<Arc<SimNode>>,
        clock: Clock,
        exe: Option<PathBuf>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<ToolServer>> {
        let exe = match exe {
            Some(e) => e,
            None => std::env::current_exe()
                .context("cannot find the kiln executable for the simulated tools")?,
        };
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin)
            .with_context(|| format!("cannot create {}", bin.display()))?;
        for name in tools::simulated() {
            let script = format!(
                "#!/bin/sh\n# kiln virtual rack: simulated {name}\nexec {} sim tool {} -- \"$@\"\n",
                sh_quote(&exe.to_string_lossy()),
                sh_quote(name)
            );
            let path = bin.join(name);
            std::fs::write(&path, script)
                .with_context(|| format!("cannot write {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        // sudo: the sandbox has no users to switch to; run the command as
        // is, after the options kiln and people commonly pass.
        let sudo = bin.join("sudo");
        std::fs::write(&sudo, SUDO).with_context(|| format!("cannot write {}", sudo.display()))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755))?;
        }
        let socket = root.join("s.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let server = Arc::new(ToolServer {
            socket,
            bin,
            nodes,
            clock,
        });
        let me = Arc::clone(&server);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match accepted {
                    Ok((stream, _)) => {
                        let me = Arc::clone(&me);
                        tokio::spawn(async move { me.serve(stream).await });
                    }
                    Err(e) => crate::fdlimit::accept_failed(&e).await,
                }
            }
        });
        Ok(server)
    }

    fn node(&self, name: &str) -> Option<&Arc<SimNode>> {
        self.nodes.iter().find(|n| n.name == name)
    }

    async fn serve(&self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read).take(64 * 1024);
        if reader.read_line(&mut line).await.is_err() {
            return;
        }
        let send = |frame: Frame| {
            let mut text = serde_json::to_string(&frame).unwrap_or_default();
            text.push('\n');
            text
        };
        let Ok(call) = serde_json::from_str::<Call>(&line) else {
            let _ = write
                .write_all(
                    send(Frame {
                        err: Some("kiln sim: bad tool call\n".into()),
                        exit: Some(127),
                        ..Frame::default()
                    })
                    .as_bytes(),
                )
                .await;
            return;
        };
        let Some(node) = self.node(&call.node).cloned() else {
            let _ = write
                .write_all(
                    send(Frame {
                        err: Some(format!("kiln sim: no node {}\n", call.node)),
                        exit: Some(127),
                        ..Frame::default()
                    })
                    .as_bytes(),
                )
                .await;
            return;
        };
        let run = {
            // Commands name files by absolute path on the simulated node,
            // which shares this machine's file system.
            let file_head = |path: &str| -> Option<Vec<u8>> {
                use std::io::Read as _;
                if !path.starts_with('/') {
                    return None;
                }
                let mut head = Vec::new();
                std::fs::File::open(path)
                    .ok()?
                    .take(1024)
                    .read_to_end(&mut head)
                    .ok()?;
                Some(head)
            };
            let peers = |host: &str| {
                self.node(host).map(|n| {
                    let st = n.lock();
                    tools::Peer {
                        hw: st.hw.clone(),
                        sw: st.sw.clone(),
                    }
                })
            };
            let mut st = node.lock();
            let st = &mut *st;
            let mut faults = ToolFaults {
                package_install_failures: st.package_failures_left,
            };
            let mut ctx = ToolCtx {
                hw: &st.hw,
                sw: &mut st.sw,
                faults: &mut faults,
                peers: &peers,
                now_unix: self.clock.now_unix(),
                load: if st.load_users > 0 { 1.0 } else { 0.0 },
                file_head: &file_head,
            };
            let run = tools::run(&mut ctx, &call.argv);
            st.package_failures_left = faults.package_install_failures;
            if run.load > 0.0 {
                st.load_users += 1;
            }
            run
        };
        let epoch = node.reach().epoch;
        for step in run.steps {
            self.clock.sleep(step.after).await;
            if node.reach().epoch != epoch {
                break; // the node went down under the tool
            }
            if !step.stdout.is_empty()
                && write
                    .write_all(
                        send(Frame {
                            out: Some(step.stdout),
                            ..Frame::default()
                        })
                        .as_bytes(),
                    )
                    .await
                    .is_err()
            {
                break;
            }
        }
        if run.load > 0.0 {
            let mut st = node.lock();
            if node.reach().epoch == epoch {
                st.load_users = st.load_users.saturating_sub(1);
            }
        }
        if !run.stderr.is_empty() {
            let _ = write
                .write_all(
                    send(Frame {
                        err: Some(run.stderr),
                        ..Frame::default()
                    })
                    .as_bytes(),
                )
                .await;
        }
        let _ = write
            .write_all(
                send(Frame {
                    exit: Some(run.code),
                    ..Frame::default()
                })
                .as_bytes(),
            )
            .await;
        let _ = write.shutdown().await;
        if let Some(effect) = run.effect {
            // Let the command's exit reach the client before the node goes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match effect {
                Effect::Reboot => node::os_reboot(&node, &self.clock),
                Effect::PowerOff => node::os_poweroff(&node),
            }
        }
    }
}

/// The client side, run by `kiln sim tool NAME ARGS…` inside a simulated
/// node: forwards the call and relays output. Returns the exit code.
// This is the simulated program itself: its stdout and stderr are the
// tool's own output, not kiln's, so the printer does not apply.
#[allow(clippy::disallowed_methods)]
pub fn call(name: &str, args: &[String]) -> i32 {
    use std::io::{BufRead as _, Write as _};
    let fail = |msg: String| {
        let _ = writeln!(std::io::stderr(), "{name}: {msg}");
        127
    };
    let (Ok(socket), Ok(node)) = (std::env::var(SOCKET_ENV), std::env::var(NODE_ENV)) else {
        return fail("not running inside a kiln virtual rack node".into());
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot reach the virtual rack at {socket}: {e}")),
    };
    let mut argv = vec![name.to_owned()];
    argv.extend(args.iter().cloned());
    let call = Call { node, argv };
    let mut text = serde_json::to_string(&call).unwrap_or_default();
    text.push('\n');
    if let Err(e) = stream.write_all(text.as_bytes()) {
        return fail(e.to_string());
    }
    let mut code = 255;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    for line in std::io::BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(frame) = serde_json::from_str::<Frame>(&line) else {
            continue;
        };
        if let Some(out) = frame.out {
            let mut o = stdout.lock();
            let _ = o.write_all(out.as_bytes());
            let _ = o.flush();
        }
        if let Some(err) = frame.err {
            let _ = stderr.lock().write_all(err.as_bytes());
        }
        if let Some(c) = frame.exit {
            code = c;
        }
    }
    code
}
