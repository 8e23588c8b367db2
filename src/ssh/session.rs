//! SSH connections: connecting (directly or through a jump host), checking
//! the host key, logging in, keepalives, and a pool that keeps one
//! connection per node and reconnects after a drop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh::ChannelMsg;
use russh::client::{Handle, Msg};
use tokio::io::AsyncWriteExt as _;

use super::auth::{self, AuthError, Credentials};
use super::exec::{
    self, Event, ExecError, ExecOptions, Exit, Input, Output, Proc, RemoteCommand, Sink, Stream,
};
use super::hostkeys::{HostId, HostKeyError, Trust, Verifier};
use crate::inventory::{Host, Node};

/// Where and how to log in to one node.
#[derive(Clone, Debug)]
pub struct Target {
    /// Node name (for messages and the pool).
    pub node: String,
    /// Host: IP or DNS name, no brackets.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file (else the agent, then `~/.ssh/id_*`).
    pub key: Option<PathBuf>,
    /// The node's own known_hosts file.
    pub known_hosts: Option<PathBuf>,
    /// Bastion to go through.
    pub jump: Option<Jump>,
}

/// A jump host (OpenSSH's `ProxyJump`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Jump {
    /// Login user on the bastion.
    pub user: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

fn host_text(host: &Host) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(n) => n.clone(),
    }
}

impl Target {
    /// The target for an inventory node.
    pub fn from_node(node: &Node) -> Target {
        Target {
            node: node.name.clone(),
            host: host_text(&node.ssh.endpoint.host),
            port: node.ssh.endpoint.port,
            user: node.ssh.user.clone(),
            key: node.ssh.key.clone(),
            known_hosts: node.ssh.known_hosts.clone(),
            jump: node.ssh.jump.as_ref().map(|j| Jump {
                user: j.user.clone().unwrap_or_else(|| node.ssh.user.clone()),
                host: host_text(&j.endpoint.host),
                port: j.endpoint.port,
            }),
        }
    }

    /// `host:port` (IPv6 in brackets).
    pub fn addr(&self) -> String {
        addr(&self.host, self.port)
    }

    fn id(&self) -> HostId {
        HostId {
            node: self.node.clone(),
            host: self.host.clone(),
            port: self.port,
            known_hosts: self.known_hosts.clone(),
        }
    }
}

fn addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// TCP connect failed.
    #[error("{node} ({addr}): cannot connect")]
    Connect {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No SSH session within the connect timeout.
    #[error("{node} ({addr}): no SSH session within {after:?}")]
    Timeout {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The host key is not trusted.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// Login failed.
    #[error("{node} ({addr}): login as {user} failed")]
    Auth {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// User.
        user: String,
        /// What was tried.
        #[source]
        source: AuthError,
    },
    /// The SSH protocol failed (handshake, closed connection).
    #[error("{node} ({addr}): SSH handshake failed")]
    Protocol {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// Why.
        #[source]
        source: russh::Error,
    },
    /// The jump host could not be used.
    #[error("{node}: through jump host {jump}")]
    Jump {
        /// Node.
        node: String,
        /// `user@host:port`.
        jump: String,
        /// Why.
        #[source]
        source: Box<SshError>,
    },
    /// No session before the deadline of `wait-for-ssh`.
    #[error("{node} ({addr}): SSH not up after {after:?}")]
    NotUp {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// How long kiln waited.
        after: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<SshError>,
    },
}

impl SshError {
    /// Whether trying again later could help (a rebooting node), as
    /// opposed to a refused host key, which never gets better by waiting.
    pub fn retryable(&self) -> bool {
        match self {
            SshError::HostKey(_) => false,
            SshError::Jump { source, .. } | SshError::NotUp { last: source, .. } => {
                source.retryable()
            }
            SshError::Auth {
                source: AuthError::Key(_),
                ..
            } => false,
            _ => true,
        }
    }
}

/// The russh handler: checks the server's host key.
pub struct Checker {
    verifier: Arc<Verifier>,
    id: HostId,
    verdict: Verdict,
}

/// What the host-key check decided: the key's fingerprint and how it is
/// trusted, or why not.
type Verdict = Arc<Mutex<Option<Result<(String, Trust), HostKeyError>>>>;

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let result = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => self
                .verifier
                .check(&self.id, key)
                .map(|t| (super::known_hosts::fingerprint(key), t)),
            russh::keys::PublicKeyOrCertificate::Certificate(_) => Err(HostKeyError::Certificate {
                node: self.id.node.clone(),
                addr: addr(&self.id.host, self.id.port),
            }),
        };
        let ok = result.is_ok();
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(result);
        }
        Ok(ok)
    }
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for TCP connect, handshake and login together.
    pub connect_timeout: Duration,
    /// Keepalive interval; three unanswered keepalives close the connection.
    pub keepalive: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// Opens authenticated SSH connections.
pub struct Client {
    verifier: Arc<Verifier>,
    creds: Arc<Credentials>,
    opts: ClientOptions,
    /// Bastion connections, shared by every node behind them.
    jumps: tokio::sync::Mutex<HashMap<Jump, Arc<Handle<Checker>>>>,
}

/// One authenticated connection to a node.
pub struct Session {
    handle: Handle<Checker>,
    host_key: (String, Trust),
    target: Target,
    _via: Option<Arc<Handle<Checker>>>,
}

impl Session {
    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// The host key's fingerprint and why it was trusted.
    pub fn host_key(&self) -> &(String, Trust) {
        &self.host_key
    }

    /// The node.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs `cmd` on a new channel of this connection.
    pub async fn run(
        &self,
        cmd: &RemoteCommand,
        input: Input,
        sink: &mut dyn Sink,
        opts: &ExecOptions,
    ) -> Result<Output, ExecError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| ExecError::Refused {
                node: self.target.node.clone(),
                addr: self.target.addr(),
                command: cmd.shown(),
                why: format!("cannot open a channel: {e}"),
            })?;
        run_on(&self.target, channel, cmd, input, sink, opts).await
    }
}

async fn run_on(
    target: &Target,
    channel: russh::Channel<Msg>,
    cmd: &RemoteCommand,
    input: Input,
    sink: &mut dyn Sink,
    opts: &ExecOptions,
) -> Result<Output, ExecError> {
    let addr = target.addr();
    let (read, write) = channel.split();
    let write = Arc::new(write);
    if write.exec(true, cmd.wire()).await.is_err() {
        return Err(ExecError::Dropped {
            node: target.node.clone(),
            addr,
            command: cmd.shown(),
        });
    }
    let proc = SshProc { read, write };
    exec::drive(
        exec::Where {
            node: &target.node,
            addr: &addr,
        },
        proc,
        cmd,
        input,
        sink,
        opts,
    )
    .await
}

struct SshProc {
    read: russh::ChannelReadHalf,
    write: Arc<russh::ChannelWriteHalf<Msg>>,
}

impl Proc for SshProc {
    async fn next(&mut self) -> Option<Event> {
        loop {
            return match self.read.wait().await? {
                ChannelMsg::Data { data } => Some(Event::Data(Stream::Stdout, data)),
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    Some(Event::Data(Stream::Stderr, data))
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    Some(Event::Exit(Exit::Code(exit_status)))
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    Some(Event::Exit(Exit::Signal(sig_name(&signal_name))))
                }
                ChannelMsg::Failure => Some(Event::Refused),
                ChannelMsg::Close => Some(Event::Closed),
                _ => continue,
            };
        }
    }

    async fn write(&mut self, data: Bytes) -> bool {
        self.write.data_bytes(data).await.is_ok()
    }

    fn start_input(
        &mut self,
        input: Input,
    ) -> tokio::sync::oneshot::Receiver<(PathBuf, std::io::Error)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let write = Arc::clone(&self.write);
        tokio::spawn(async move {
            match input {
                Input::None => {}
                Input::Bytes(b) => {
                    let _ = write.data_bytes(b).await;
                }
                Input::File(path) => match tokio::fs::File::open(&path).await {
                    Ok(mut file) => {
                        use tokio::io::AsyncReadExt as _;
                        let mut w = write.make_writer();
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            // A read error is the local file's; a write
                            // error means the channel is gone, which the
                            // reader side reports.
                            let n = match file.read(&mut buf).await {
                                Ok(0) => break,
                                Ok(n) => n,
                                Err(e) => {
                                    let _ = tx.send((path, e));
                                    break;
                                }
                            };
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        let _ = w.flush().await;
                    }
                    Err(e) => {
                        let _ = tx.send((path, e));
                        // Close stdin anyway so the remote side ends.
                    }
                },
            }
            let _ = write.eof().await;
        });
        rx
    }

    async fn terminate(&mut self) {
        let _ = self.write.signal(russh::Sig::TERM).await;
    }

    async fn kill(&mut self) {
        let _ = self.write.signal(russh::Sig::KILL).await;
        let _ = self.write.eof().await;
        let _ = self.write.close().await;
    }
}

fn sig_name(sig: &russh::Sig) -> String {
    let text = format!("{sig:?}");
    text.trim_start_matches("Custom(\"")
        .trim_end_matches("\")")
        .to_owned()
}

impl Client {
    /// A client checking host keys with `verifier` and logging in with
    /// `creds`.
    pub fn new(verifier: Arc<Verifier>, creds: Arc<Credentials>, opts: ClientOptions) -> Client {
        Client {
            verifier,
            creds,
            opts,
            jumps: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn config(&self, id: &HostId) -> Arc<russh::client::Config> {
        let mut preferred = russh::Preferred::default();
        // Ask for a key type we can verify, as OpenSSH does.
        let known = self.verifier.algorithms(id);
        if !known.is_empty() {
            let mut keys = known;
            for a in preferred.key.iter() {
                if !keys.contains(a) {
                    keys.push(a.clone());
                }
            }
            preferred.key = keys.into();
        }
        Arc::new(russh::client::Config {
            keepalive_interval: Some(self.opts.keepalive),
            keepalive_max: 3,
            nodelay: true,
            preferred,
            ..Default::default()
        })
    }

    async fn handshake<S>(
        &self,
        id: HostId,
        user: &str,
        key: Option<&std::path::Path>,
        stream: S,
    ) -> Result<(Handle<Checker>, (String, Trust)), SshError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let verdict: Verdict = Arc::new(Mutex::new(None));
        let checker = Checker {
            verifier: Arc::clone(&self.verifier),
            id: id.clone(),
            verdict: Arc::clone(&verdict),
        };
        let node = id.node.clone();
        let a = addr(&id.host, id.port);
        let mut handle =
            match russh::client::connect_stream(self.config(&id), stream, checker).await {
                Ok(h) => h,
                Err(source) => {
                    if let Some(Err(e)) = verdict.lock().ok().and_then(|mut v| v.take()) {
                        return Err(SshError::HostKey(e));
                    }
                    return Err(SshError::Protocol {
                        node,
                        addr: a,
                        source,
                    });
                }
            };
        auth::authenticate(&mut handle, user, key, &self.creds)
            .await
            .map_err(|source| SshError::Auth {
                node,
                addr: a,
                user: user.to_owned(),
                source,
            })?;
        let trust = match verdict.lock().ok().and_then(|mut v| v.take()) {
            Some(Ok(t)) => t,
            // russh calls check_server_key before any session exists.
            _ => (String::new(), Trust::Known(String::new())),
        };
        Ok((handle, trust))
    }

    async fn tcp(node: &str, host: &str, port: u16) -> Result<tokio::net::TcpStream, SshError> {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|source| SshError::Connect {
                node: node.to_owned(),
                addr: addr(host, port),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn bastion(
        &self,
        jump: &Jump,
        target: &Target,
    ) -> Result<Arc<Handle<Checker>>, SshError> {
        let mut jumps = self.jumps.lock().await;
        if let Some(h) = jumps.get(jump)
            && !h.is_closed()
        {
            return Ok(Arc::clone(h));
        }
        let id = HostId {
            node: format!("jump host {}", jump.host),
            host: jump.host.clone(),
            port: jump.port,
            known_hosts: target.known_hosts.clone(),
        };
        let tcp = Self::tcp(&id.node, &jump.host, jump.port).await?;
        let (handle, _) = self
            .handshake(id, &jump.user, target.key.as_deref(), tcp)
            .await?;
        let handle = Arc::new(handle);
        jumps.insert(jump.clone(), Arc::clone(&handle));
        Ok(handle)
    }

    /// Connects to `target` and logs in, within the connect timeout.
    pub async fn connect(&self, target: &Target) -> Result<Session, SshError> {
        let attempt = async {
            match &target.jump {
                None => {
                    let tcp = Self::tcp(&target.node, &target.host, target.port).await?;
                    let (handle, host_key) = self
                        .handshake(target.id(), &target.user, target.key.as_deref(), tcp)
                        .await?;
                    Ok(Session {
                        handle,
                        host_key,
                        target: target.clone(),
                        _via: None,
                    })
                }
                Some(jump) => {
                    let wrap = |source: SshError| SshError::Jump {
                        node: target.node.clone(),
                        jump: format!("{}@{}", jump.user, addr(&jump.host, jump.port)),
                        source: Box::new(source),
                    };
                    let via = self.bastion(jump, target).await.map_err(wrap)?;
                    let channel = via
                        .channel_open_direct_tcpip(
                            target.host.clone(),
                            u32::from(target.port),
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| {
                            wrap(SshError::Connect {
                                node: target.node.clone(),
                                addr: target.addr(),
                                source: std::io::Error::other(format!(
                                    "the jump host cannot reach it: {e}"
                                )),
                            })
                        })?;
                    let (handle, host_key) = self
                        .handshake(
                            target.id(),
                            &target.user,
                            target.key.as_deref(),
                            channel.into_stream(),
                        )
                        .await?;
                    Ok(Session {
                        handle,
                        host_key,
                        target: target.clone(),
                        _via: Some(via),
                    })
                }
            }
        };
        match tokio::time::timeout(self.opts.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                node: target.node.clone(),
                addr: target.addr(),
                after: self.opts.connect_timeout,
            }),
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

/// One connection per node, opened on first use, reused by every later
/// command, and reopened when it has dropped (a reboot, a network blip).
pub struct Pool {
    client: Client,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Pool {
    /// A pool over `client`.
    pub fn new(client: Client) -> Pool {
        Pool {
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, node: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(node.to_owned()).or_default())
    }

    /// A live session to `target`, connecting if there is none.
    pub async fn session(&self, target: &Target) -> Result<Arc<Session>, SshError> {
        let slot = self.slot(&target.node);
        let mut guard = slot.lock().await;
        if let Some(s) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok(Arc::clone(s));
        }
        let session = Arc::new(self.client.connect(target).await?);
        *guard = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Drops the node's connection (after a reboot was asked for).
    pub async fn forget(&self, node: &str) {
        *self.slot(node).lock().await = None;
    }

    /// Closes the node's connection politely, when kiln is done with the
    /// node: a fan-out over 10,000 nodes must not keep 10,000 sockets open.
    pub async fn close(&self, node: &str) {
        let session = self.slot(node).lock().await.take();
        if let Some(s) = session {
            let _ = s
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(node);
    }

    /// Runs `cmd` on `target`. A connection that turns out dead before the
    /// command started is replaced once; a command the connection died
    /// under is reported, not rerun (it may not be safe to run twice).
    pub async fn run(
        &self,
        target: &Target,
        cmd: &RemoteCommand,
        input: Input,
        sink: &mut dyn Sink,
        opts: &ExecOptions,
    ) -> Result<Output, ExecError> {
        let session = self.session(target).await?;
        let channel = match session.handle.channel_open_session().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(node = %target.node, "stale connection ({e}); reconnecting");
                self.forget(&target.node).await;
                let session = self.session(target).await?;
                session
                    .handle
                    .channel_open_session()
                    .await
                    .map_err(|e| ExecError::Refused {
                        node: target.node.clone(),
                        addr: target.addr(),
                        command: cmd.shown(),
                        why: format!("cannot open a channel: {e}"),
                    })?
            }
        };
        run_on(target, channel, cmd, input, sink, opts).await
    }

    /// Waits until `target` answers SSH (and accepts the login), retrying
    /// with backoff from 250 ms up to 5 s between attempts, until
    /// `deadline`. A refused host key ends the wait at once.
    pub async fn wait_for_ssh(
        &self,
        target: &Target,
        within: Duration,
    ) -> Result<Arc<Session>, SshError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            match self.session(target).await {
                Ok(s) => return Ok(s),
                Err(e) if !e.retryable() => return Err(e),
                Err(e) => {
                    let elapsed = start.elapsed();
                    if elapsed + delay >= within {
                        return Err(SshError::NotUp {
                            node: target.node.clone(),
                            addr: target.addr(),
                            after: elapsed,
                            last: Box::new(e),
                        });
                    }
                    tracing::debug!(node = %target.node, "SSH not up yet: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
