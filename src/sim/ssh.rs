//! A simulated node's SSH server (russh). It listens only while the
//! node's installed OS is running, presents the host keys the node was
//! installed with, accepts the authorized keys from its seed, and runs each
//! exec request in a real `sh` inside the node's sandbox folder, with the
//! simulated hardware tools first on `PATH`. A power action drops every
//! session, as pulling the plug would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use russh::keys::ssh_key::{self, LineEnding, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin};
use tokio::sync::watch;

use crate::sim::Clock;
use crate::sim::node::SimNode;
use crate::sim::toolsock::{NODE_ENV, SOCKET_ENV, ToolServer};

/// A new Ed25519 host key.
pub fn generate_host_key() -> anyhow::Result<PrivateKey> {
    use ring::rand::SecureRandom as _;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("no system randomness for a host key"))?;
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    Ok(PrivateKey::from(pair))
}

/// A key's public half as an OpenSSH line (`ssh-ed25519 AAAA…`).
pub fn public_line(key: &PrivateKey) -> anyhow::Result<String> {
    Ok(key.public_key().to_openssh()?)
}

/// A private key in OpenSSH PEM form.
pub fn private_pem(key: &PrivateKey) -> anyhow::Result<String> {
    Ok(key.to_openssh(LineEnding::LF)?.to_string())
}

/// Serves SSH for `node` at `addr` whenever its OS is up.
pub fn serve(
    node: Arc<SimNode>,
    addr: SocketAddr,
    tools: Arc<ToolServer>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(node.root())
        .with_context(|| format!("cannot create the sandbox {}", node.sandbox.display()))?;
    std::fs::create_dir_all(node.sandbox.join("home"))
        .with_context(|| format!("cannot create the sandbox {}", node.sandbox.display()))?;
    tokio::spawn(async move {
        let mut reach = node.watch_reach();
        loop {
            // Wait for the OS to come up (or the rack to stop).
            tokio::select! {
                r = reach.wait_for(|r| r.ssh_up) => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            let epoch = node.reach().epoch;
            let Some(config) = config_for(&node) else {
                // No usable host key: sshd would not start either.
                epoch_ends(&mut reach, epoch).await;
                continue;
            };
            let listener = match bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(node = %node.name, "SSH cannot listen on {addr}: {e}");
                    epoch_ends(&mut reach, epoch).await;
                    continue;
                }
            };
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = epoch_ends(&mut reach, epoch) => break,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let Some(tcp) = super::connection(accepted).await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let handler = Conn {
                    node: Arc::clone(&node),
                    tools: Arc::clone(&tools),
                    clock,
                    epoch,
                    env: HashMap::new(),
                    stdin: HashMap::new(),
                    pids: HashMap::new(),
                };
                let config = Arc::clone(&config);
                let mut reach = node.watch_reach();
                tokio::spawn(async move {
                    let Ok(session) = russh::server::run_stream(config, tcp, handler).await else {
                        return;
                    };
                    let handle = session.handle();
                    tokio::select! {
                        _ = session => {}
                        _ = epoch_ends(&mut reach, epoch) => {
                            // Power went: the connection dies with it.
                            let _ = handle
                                .disconnect(russh::Disconnect::ByApplication, "host is down".into(), String::new())
                                .await;
                        }
                    }
                });
            }
        }
    });
    Ok(())
}

/// Returns once the node's epoch moves past `epoch` (or its state is gone).
async fn epoch_ends(reach: &mut watch::Receiver<crate::sim::node::Reach>, epoch: u64) {
    let _ = reach.wait_for(|r| r.epoch != epoch).await;
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // A node rebooting quickly may find its old socket still closing.
    let mut last = None;
    for _ in 0..20 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

fn config_for(node: &SimNode) -> Option<Arc<russh::server::Config>> {
    let os = node.lock().os.clone()?;
    let keys: Vec<PrivateKey> = os
        .host_keys
        .iter()
        .filter_map(|pem| PrivateKey::from_openssh(pem.trim()).ok())
        .collect();
    if keys.is_empty() {
        return None;
    }
    Some(Arc::new(russh::server::Config {
        keys,
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        server_id: russh::SshId::Standard("SSH-2.0-OpenSSH_9.6p1 kiln-sim".into()),
        ..Default::default()
    }))
}

struct Conn {
    node: Arc<SimNode>,
    tools: Arc<ToolServer>,
    clock: Clock,
    epoch: u64,
    env: HashMap<String, String>,
    stdin: HashMap<ChannelId, ChildStdin>,
    /// Each channel's command (its process group), for signal requests.
    pids: HashMap<ChannelId, u32>,
}

impl Conn {
    fn authorized(&self, key: &ssh_key::PublicKey) -> bool {
        let Some(os) = self.node.lock().os.clone() else {
            return false;
        };
        os.authorized_keys.iter().any(|line| {
            // An authorized_keys line may carry options before the key.
            let start = line
                .find("ssh-")
                .or_else(|| line.find("ecdsa-"))
                .unwrap_or(0);
            ssh_key::PublicKey::from_openssh(line[start..].trim())
                .is_ok_and(|k| k.key_data() == key.key_data())
        })
    }

    fn spawn(&mut self, command: &str) -> std::io::Result<Child> {
        let home = self.node.sandbox.join("home");
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", self.tools.bin.display());
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&home)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .env("USER", "kiln")
            .env("LOGNAME", "kiln")
            .env("SHELL", "/bin/sh")
            .env("LANG", "C.UTF-8")
            .env("HOSTNAME", &self.node.name)
            .env(SOCKET_ENV, &self.tools.socket)
            .env(NODE_ENV, &self.node.name)
            // The node's own `/` for files the OS keeps (modprobe.d, apt
            // sources): simulated nodes share this machine's file system,
            // which the simulator never changes.
            .env(crate::sim::node::ROOT_ENV, self.node.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            if k == "LANG" || k.starts_with("LC_") || k.starts_with("KILN_USER_") {
                cmd.env(k, v);
            }
        }
        cmd.spawn()
    }
}

/// Kills a command's whole process group (the shell and what it started).
fn kill_group(pid: Option<u32>) {
    signal_group(pid, "KILL");
}

/// Sends `sig` to a command's process group, as OpenSSH's sshd does for a
/// `signal` channel request (`killpg`).
fn signal_group(pid: Option<u32>, sig: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{sig}"), "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
}

async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    handle: Handle,
    channel: ChannelId,
    ext: Option<u32>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = bytes::Bytes::copy_from_slice(&buf[..n]);
                let sent = match ext {
                    Some(code) => handle.extended_data(channel, code, data).await,
                    None => handle.data(channel, data).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.authorized(key.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        _channel: ChannelId,
        name: &str,
        value: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.env.len() < 64 {
            self.env.insert(name.to_owned(), value.to_owned());
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.exec_request(channel, b"exec /bin/sh", session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let mut child = match self.spawn(&command) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(node = %self.node.name, "cannot start a shell: {e}");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        session.channel_success(channel)?;
        if let Some(stdin) = child.stdin.take() {
            self.stdin.insert(channel, stdin);
        }
        if let Some(pid) = child.id() {
            self.pids.insert(channel, pid);
        }
        let handle = session.handle();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut reach = self.node.watch_reach();
        let epoch = self.epoch;
        let drop_after = self
            .node
            .faults
            .host
            .ssh_drop_after
            .map(|d| self.clock.real(d));
        tokio::spawn(async move {
            let pid = child.id();
            let out = stdout.map(|s| tokio::spawn(pump(s, handle.clone(), channel, None)));
            let err = stderr.map(|s| tokio::spawn(pump(s, handle.clone(), channel, Some(1))));
            let dropped = async {
                match drop_after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = epoch_ends(&mut reach, epoch) => None,
                _ = dropped => {
                    // The fault: the connection dies mid-command.
                    let _ = handle
                        .disconnect(russh::Disconnect::ConnectionLost, "connection lost".into(), String::new())
                        .await;
                    None
                }
            };
            let Some(status) = status else {
                kill_group(pid);
                return;
            };
            for task in [out, err].into_iter().flatten() {
                let _ = task.await;
            }
            let code = status.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt as _;
                128 + status.signal().unwrap_or(9)
            });
            let _ = handle.exit_status_request(channel, code as u32).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(stdin) = self.stdin.get_mut(&channel)
            && stdin.write_all(data).await.is_err()
        {
            self.stdin.remove(&channel);
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: russh::Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let name = match signal {
            russh::Sig::TERM => "TERM",
            russh::Sig::KILL => "KILL",
            russh::Sig::INT => "INT",
            russh::Sig::HUP => "HUP",
            _ => return Ok(()),
        };
        signal_group(self.pids.get(&channel).copied(), name);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The pid may be reused once the command is gone: never signal it.
        self.pids.remove(&channel);
        self.stdin.remove(&channel);
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Closing stdin lets `cat`-like commands finish.
        self.stdin.remove(&channel);
        Ok(())
    }
}
