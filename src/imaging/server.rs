//! The boot server: plain HTTP (BMCs and installers fetch over `http://`),
//! serving
//!
//! - `GET|HEAD /iso/NAME` — an installer image as it is on disk;
//! - `GET|HEAD /node/TOKEN/installer.iso` — the same image with its grub.cfg
//!   rewritten for that node (kernel arguments that point at its seed), the
//!   patched bytes laid over the file while it streams;
//! - `GET /seed/TOKEN/FILE` — the node's `user-data`, `meta-data`,
//!   `network-config`, `vendor-data`, `ks.cfg`;
//! - `POST /done/TOKEN` — the installed system's "install finished"
//!   call-back (cloud-init `phone_home`);
//! - `POST /report/TOKEN` — the installer's progress events (subiquity's
//!   webhook reporter, kickstart's `%post`/`%onerror`), which tell a node
//!   whose installer failed from one whose installed OS never came up;
//! - `POST /agent/TOKEN/{hello,progress,done,failed}` — the deploy
//!   environment's agent (`scripts/deploy-env/PROTOCOL.md`): its disks,
//!   answered by the plan (the disk the root-device hints choose, the image
//!   URL and digest, the seed), then progress and the outcome;
//! - `GET|HEAD /node/TOKEN/disk.img` — the disk image, when kiln serves it
//!   (not when the plan names a mirror);
//! - `GET|HEAD /fw/TOKEN/NAME` — a firmware package a BMC pulls
//!   (`SimpleUpdate`), under a token of its own so only the BMCs given the
//!   URL can fetch it.
//!
//! BMCs fetch virtual media at the media URL (`with_media_url`), which may
//! differ from the URL nodes use: a BMC sits on the management network,
//! the node's deploy environment on the provisioning network.
//!
//! Tokens are 128 random bits per node and registration: a node that knows
//! its own token cannot guess another's, so it cannot read another node's
//! host keys. Files stream from disk with positioned reads, one chunk at a
//! time on a bounded set of blocking threads, a few chunks in flight per
//! client, never a whole file in memory. Connections have a header-read
//! timeout, an idle bound and a cap (`crate::listen`). `Range: bytes=…` (one range) gets 206 with the patched bytes,
//! an unsatisfiable one 416. Every request is logged (`tracing`, target
//! `kiln::bootserver`) with the token replaced by the node's name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use tokio::sync::{mpsc, watch};

use crate::imaging::iso::Overlay;

/// Bytes read per positioned read and sent per frame.
const CHUNK: usize = 256 << 10;
/// Frames buffered per client (memory per client: CHUNK × this).
const IN_FLIGHT: usize = 4;
/// Largest call-back body accepted.
const CALLBACK_LIMIT: usize = 64 << 10;

/// File bytes handed to clients by every boot server of this process
/// (`kiln bench deploy` divides its CPU time by them).
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// File bytes served so far by the boot servers of this process.
pub fn bytes_served() -> u64 {
    SERVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A file the server streams, with bytes laid over it.
#[derive(Clone, Debug)]
pub struct ServedFile {
    /// The file on disk.
    pub path: PathBuf,
    /// Its length.
    pub len: u64,
    /// Bytes laid over it (empty for a plain file).
    pub overlay: Arc<Overlay>,
}

impl ServedFile {
    /// A plain file.
    pub fn plain(path: &Path) -> std::io::Result<ServedFile> {
        let len = std::fs::metadata(path)?.len();
        Ok(ServedFile {
            path: path.to_owned(),
            len,
            overlay: Arc::new(Overlay::default()),
        })
    }
}

/// What the server has seen of one node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Requests for its installer image.
    pub iso_requests: u32,
    /// Seed files it fetched.
    pub seed_files: BTreeSet<String>,
    /// The call-back's form fields, once it came.
    pub done: Option<BTreeMap<String, String>>,
    /// Installer progress events received (autoinstall's webhook
    /// reporter, kickstart's `%post`/`%onerror`).
    pub installer_events: u32,
    /// The installer reported that it finished installing.
    pub installer_done: bool,
    /// The first failure the installer reported (`name: description`).
    pub installer_error: Option<String>,
    /// What the deploy environment's agent reported (image-based deploys).
    pub agent: AgentProgress,
}

/// What the deploy agent of one node has reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentProgress {
    /// `hello`s received (the agent retries until it gets a plan).
    pub hellos: u32,
    /// The disks it found.
    pub disks: Vec<crate::imaging::rootdev::Disk>,
    /// The disk kiln chose (`/dev/NAME`).
    pub device: Option<String>,
    /// Why kiln refused to give it a plan (no disk fits the hints).
    pub refused: Option<String>,
    /// Requests for the disk image served by kiln.
    pub image_requests: u32,
    /// Bytes written so far, and the download's length when known.
    pub written: u64,
    /// The download's length, when the agent knows it.
    pub total: Option<u64>,
    /// `done`'s fields, once it came.
    pub done: Option<BTreeMap<String, String>>,
    /// `failed`'s reason, once it came.
    pub failed: Option<String>,
}

/// What the deploy agent of one node is told to write.
#[derive(Clone, Debug)]
pub struct AgentPlan {
    /// Which disk.
    pub hints: crate::profiles::image::RootDeviceHints,
    /// A mirror URL, or `None` when this server serves `image_file`.
    pub image_url: Option<String>,
    /// The image served at `/node/TOKEN/disk.img`.
    pub image_file: Option<ServedFile>,
    /// Its SHA-256 as fetched.
    pub sha256: String,
    /// How it is compressed.
    pub compression: crate::profiles::image::Compression,
    /// The partition grown and seeded (0: the last).
    pub root_partition: u32,
    /// Before writing, time a plain `wget | gunzip | dd` of the same image
    /// to the same disk (`kiln bench deploy`'s peer; `peer_seconds` in
    /// `done`).
    pub bench_peer: bool,
}

impl Progress {
    /// Takes in one installer event (a JSON object as subiquity's webhook
    /// reporter posts it: `event_type`, `name`, `result`, `description`).
    pub fn installer_event(&mut self, event: &serde_json::Value) {
        self.installer_events += 1;
        let field = |k: &str| event[k].as_str().unwrap_or_default();
        if field("event_type") != "finish" {
            return;
        }
        match field("result") {
            "FAIL" if self.installer_error.is_none() => {
                self.installer_error = Some(format!("{}: {}", field("name"), field("description")));
            }
            // subiquity's top-level install, curtin's, or kickstart's %post.
            "SUCCESS"
                if field("name").ends_with("/Install")
                    || matches!(field("name"), "cmd-install" | "kiln/install") =>
            {
                self.installer_done = true;
            }
            _ => {}
        }
    }
}

struct NodeEntry {
    node: String,
    files: BTreeMap<String, String>,
    iso: Option<ServedFile>,
    progress: watch::Sender<Progress>,
    /// The node's URLs (the agent's plan names its seed and image).
    urls: Urls,
}

#[derive(Default)]
struct State {
    by_token: HashMap<String, Arc<NodeEntry>>,
    isos: BTreeMap<String, ServedFile>,
    /// Firmware packages by token, with their file names.
    firmware: HashMap<String, (String, ServedFile)>,
    /// Deploy-agent plans by node name.
    agents: HashMap<String, Arc<AgentPlan>>,
}

/// A node's URLs on the boot server (each carries its token).
#[derive(Clone, Debug)]
pub struct Urls {
    /// The NoCloud seed URL (ends in `/`).
    pub seed: String,
    /// The node's own installer image (rewritten grub.cfg).
    pub iso: String,
    /// The install-finished call-back.
    pub done: String,
    /// Where the installer posts progress events.
    pub report: String,
    /// The deploy agent's base URL (`kiln.url=` on its kernel line).
    pub agent: String,
    /// The disk image, when this server serves it.
    pub image: String,
}

/// A node's registration: its URLs and what the server sees it do.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The NoCloud seed URL (ends in `/`).
    pub seed_url: String,
    /// The node's own installer image (rewritten grub.cfg).
    pub iso_url: String,
    /// The call-back URL.
    pub done_url: String,
    /// The installer's progress-event URL.
    pub report_url: String,
    /// The deploy agent's base URL.
    pub agent_url: String,
    /// What the server sees the node fetch and post.
    pub progress: watch::Receiver<Progress>,
}

/// A running boot server.
pub struct BootServer {
    state: Arc<RwLock<State>>,
    addr: SocketAddr,
    base: String,
    /// Where BMCs fetch virtual media (default: `base`).
    media_base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BootServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the boot server did not start or a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// No randomness for a token.
    #[error("no randomness for a node token")]
    Random,
    /// Bound to every address with no `--advertise` (the message says
    /// what to do).
    #[error("{0}")]
    Unadvertised(String),
}

fn new_token() -> Result<String, ServerError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ServerError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl BootServer {
    /// Starts listening on `bind`. Nodes reach it at `advertise`
    /// (`http://HOST:PORT`), by default the bound address; binding every
    /// address (`0.0.0.0`, `::`) needs `advertise`.
    pub async fn start(
        bind: SocketAddr,
        advertise: Option<&str>,
    ) -> Result<BootServer, ServerError> {
        BootServer::start_with(bind, advertise, crate::listen::Limits::default()).await
    }

    /// [`BootServer::start`] with other connection limits (tests use short
    /// timeouts and a small cap).
    pub async fn start_with(
        bind: SocketAddr,
        advertise: Option<&str>,
        limits: crate::listen::Limits,
    ) -> Result<BootServer, ServerError> {
        crate::listen::check_bind(bind, advertise).map_err(ServerError::Unadvertised)?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| ServerError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: bind, source })?;
        let base = match advertise {
            Some(a) => a.trim_end_matches('/').to_owned(),
            None => format!("http://{addr}"),
        };
        let state = Arc::new(RwLock::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(crate::listen::serve(listener, limits, move |peer| {
            let state = Arc::clone(&shared);
            hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(handle(&state, peer, req).await) }
            })
        }));
        tracing::info!(target: "kiln::bootserver", "boot server listening on {addr}, reached at {base}");
        Ok(BootServer {
            state,
            addr,
            media_base: base.clone(),
            base,
            task,
        })
    }

    /// BMCs fetch virtual media at `url` (`http://HOST:PORT`) instead of
    /// the URL nodes use, where the management network reaches this
    /// machine at another address than the provisioning network does.
    pub fn with_media_url(mut self, url: Option<&str>) -> BootServer {
        if let Some(u) = url {
            self.media_base = u.trim_end_matches('/').to_owned();
            tracing::info!(target: "kiln::bootserver", "BMCs reach the boot server at {}", self.media_base);
        }
        self
    }

    /// The URL BMCs fetch virtual media from.
    pub fn media_url(&self) -> &str {
        &self.media_base
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL nodes use (`http://HOST:PORT`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `file` at `/iso/NAME`; returns its URL.
    pub fn add_iso(&self, name: &str, file: ServedFile) -> String {
        self.write().isos.insert(name.to_owned(), file);
        format!("{}/iso/{name}", self.base)
    }

    /// Serves a firmware package at `/fw/TOKEN/NAME` under a fresh random
    /// token; returns its URL (on the media URL: BMCs fetch it). `name` is
    /// the file name the BMC sees (some BMCs read the package type from it).
    pub fn add_firmware(&self, name: &str, file: ServedFile) -> Result<String, ServerError> {
        let token = new_token()?;
        self.write()
            .firmware
            .insert(token.clone(), (name.to_owned(), file));
        Ok(format!("{}/fw/{token}/{name}", self.media_base))
    }

    /// Registers `node` under `token` (a fresh random one when `None`); any
    /// earlier registration of the node stops working. `build` makes the
    /// node's seed files and installer image from its URLs.
    pub fn register_as<E>(
        &self,
        node: &str,
        token: Option<&str>,
        build: impl FnOnce(&Urls) -> Result<(BTreeMap<String, String>, Option<ServedFile>), E>,
    ) -> Result<Registration, E>
    where
        E: From<ServerError>,
    {
        let token = match token {
            Some(t) => t.to_owned(),
            None => new_token()?,
        };
        let urls = Urls {
            seed: format!("{}/seed/{token}/", self.base),
            iso: format!("{}/node/{token}/installer.iso", self.media_base),
            done: format!("{}/done/{token}", self.base),
            report: format!("{}/report/{token}", self.base),
            agent: format!("{}/agent/{token}", self.base),
            image: format!("{}/node/{token}/disk.img", self.base),
        };
        let (files, iso) = build(&urls)?;
        let (tx, rx) = watch::channel(Progress::default());
        let reg = Registration {
            seed_url: urls.seed.clone(),
            iso_url: urls.iso.clone(),
            done_url: urls.done.clone(),
            report_url: urls.report.clone(),
            agent_url: urls.agent.clone(),
            progress: rx,
        };
        let entry = Arc::new(NodeEntry {
            node: node.to_owned(),
            files,
            iso,
            progress: tx,
            urls,
        });
        let mut st = self.write();
        st.by_token.retain(|_, e| e.node != node);
        st.by_token.insert(token, entry);
        Ok(reg)
    }

    /// Registers `node` under a fresh random token (see
    /// [`BootServer::register_as`]).
    pub fn register<E>(
        &self,
        node: &str,
        build: impl FnOnce(&Urls) -> Result<(BTreeMap<String, String>, Option<ServedFile>), E>,
    ) -> Result<Registration, E>
    where
        E: From<ServerError>,
    {
        self.register_as(node, None, build)
    }

    /// Gives `node`'s deploy agent its plan (an image-based deploy).
    pub fn set_agent_plan(&self, node: &str, plan: AgentPlan) {
        self.write().agents.insert(node.to_owned(), Arc::new(plan));
    }

    /// Forgets `node`'s registration (its URLs answer 404 from now on).
    pub fn unregister(&self, node: &str) {
        let mut st = self.write();
        st.by_token.retain(|_, e| e.node != node);
        st.agents.remove(node);
    }
}

/// The response body: a small document, or a file streamed by a reader
/// task.
pub enum Payload {
    /// Whole, small.
    Full(Option<Bytes>),
    /// Chunks from the reader task.
    Stream(mpsc::Receiver<std::io::Result<Bytes>>),
}

impl Body for Payload {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Payload::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Payload::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Payload::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Payload::Full(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            Payload::Full(None) => hyper::body::SizeHint::with_exact(0),
            Payload::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Payload> {
    let body = body.into();
    let mut resp = Response::new(Payload::Full(Some(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    state: &RwLock<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Payload> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let lookup = |token: &str| -> Option<Arc<NodeEntry>> {
        state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_token
            .get(token)
            .cloned()
    };
    // What the log shows instead of the path: tokens are secrets.
    let mut shown = path.clone();
    let resp = match (method.clone(), parts.as_slice()) {
        (Method::GET | Method::HEAD, ["iso", name]) => {
            let file = state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .isos
                .get(*name)
                .cloned();
            match file {
                Some(f) => serve_file(&f, &req).await,
                None => text(StatusCode::NOT_FOUND, "no such image\n"),
            }
        }
        (Method::GET | Method::HEAD, ["fw", token, name]) => {
            let file = state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .firmware
                .get(*token)
                .filter(|(n, _)| n == name)
                .map(|(_, f)| f.clone());
            shown = format!("/fw/<token>/{name}");
            match file {
                Some(f) => serve_file(&f, &req).await,
                None => text(StatusCode::NOT_FOUND, "no such package\n"),
            }
        }
        (Method::GET | Method::HEAD, ["node", token, "installer.iso"]) => match lookup(token) {
            Some(e) => {
                shown = format!("/node/<{}>/installer.iso", e.node);
                match &e.iso {
                    Some(f) => {
                        e.progress.send_modify(|p| p.iso_requests += 1);
                        serve_file(f, &req).await
                    }
                    None => text(StatusCode::NOT_FOUND, "no installer image for this node\n"),
                }
            }
            None => text(StatusCode::NOT_FOUND, "unknown token\n"),
        },
        (Method::GET | Method::HEAD, ["seed", token, file]) => match lookup(token) {
            Some(e) => {
                shown = format!("/seed/<{}>/{file}", e.node);
                match e.files.get(*file) {
                    Some(body) => {
                        e.progress.send_modify(|p| {
                            p.seed_files.insert((*file).to_owned());
                        });
                        let mut r = text(StatusCode::OK, body.clone());
                        if method == Method::HEAD {
                            *r.body_mut() = Payload::Full(None);
                            r.headers_mut().insert(
                                header::CONTENT_LENGTH,
                                header::HeaderValue::from(body.len()),
                            );
                        }
                        r
                    }
                    None => text(StatusCode::NOT_FOUND, "no such seed file\n"),
                }
            }
            None => text(StatusCode::NOT_FOUND, "unknown token\n"),
        },
        (Method::POST, ["done", token]) => match lookup(token) {
            Some(e) => {
                shown = format!("/done/<{}>", e.node);
                let body = http_body_util::Limited::new(req.into_body(), CALLBACK_LIMIT)
                    .collect()
                    .await
                    .map(|c| c.to_bytes());
                match body {
                    Ok(bytes) => {
                        let fields = form_fields(&bytes);
                        tracing::info!(target: "kiln::bootserver", node = %e.node, %peer, "install finished call-back");
                        e.progress.send_modify(|p| p.done = Some(fields));
                        text(StatusCode::OK, "ok\n")
                    }
                    Err(_) => text(StatusCode::PAYLOAD_TOO_LARGE, "call-back too large\n"),
                }
            }
            None => text(StatusCode::NOT_FOUND, "unknown token\n"),
        },
        (Method::POST, ["report", token]) => match lookup(token) {
            Some(e) => {
                shown = format!("/report/<{}>", e.node);
                let body = http_body_util::Limited::new(req.into_body(), CALLBACK_LIMIT)
                    .collect()
                    .await
                    .map(|c| c.to_bytes());
                match body
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                {
                    Some(event) => {
                        tracing::debug!(target: "kiln::bootserver", node = %e.node, "installer event {event}");
                        e.progress.send_modify(|p| p.installer_event(&event));
                        text(StatusCode::OK, "ok\n")
                    }
                    None => text(StatusCode::BAD_REQUEST, "an event is one JSON object\n"),
                }
            }
            None => text(StatusCode::NOT_FOUND, "unknown token\n"),
        },
        (Method::GET | Method::HEAD, ["node", token, "disk.img"]) => match lookup(token) {
            Some(e) => {
                shown = format!("/node/<{}>/disk.img", e.node);
                let plan = agent_plan(state, &e.node);
                match plan.as_ref().and_then(|p| p.image_file.as_ref()) {
                    Some(f) => {
                        e.progress.send_modify(|p| p.agent.image_requests += 1);
                        serve_file(f, &req).await
                    }
                    None => text(StatusCode::NOT_FOUND, "no disk image for this node\n"),
                }
            }
            None => text(StatusCode::NOT_FOUND, "unknown token\n"),
        },
        (Method::POST, ["agent", token, call]) => match lookup(token) {
            Some(e) => {
                shown = format!("/agent/<{}>/{call}", e.node);
                let body = http_body_util::Limited::new(req.into_body(), CALLBACK_LIMIT)
                    .collect()
                    .await
                    .map(|c| c.to_bytes());
                match body {
                    Ok(bytes) => agent_call(state, &e, call, &String::from_utf8_lossy(&bytes)),
                    Err(_) => text(StatusCode::PAYLOAD_TOO_LARGE, "report too large\n"),
                }
            }
            None => text(StatusCode::NOT_FOUND, "unknown token\n"),
        },
        (
            _,
            [
                "iso" | "node" | "seed" | "done" | "report" | "agent" | "fw",
                ..,
            ],
        ) => {
            shown = "/…".into();
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => {
            shown = "/…".into();
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    };
    tracing::info!(target: "kiln::bootserver", %peer, %method, path = %shown, status = resp.status().as_u16(), "request");
    resp
}

fn agent_plan(state: &RwLock<State>, node: &str) -> Option<Arc<AgentPlan>> {
    state
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .agents
        .get(node)
        .cloned()
}

/// `key=value` lines (the deploy agent's bodies); the last of a key wins.
pub fn kv_lines(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim_end_matches('\r').to_owned()))
        .collect()
}

/// One line of a plan: no line breaks or control characters inside.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Handles one deploy-agent call (`hello`, `progress`, `done`, `failed`).
fn agent_call(state: &RwLock<State>, e: &NodeEntry, call: &str, body: &str) -> Response<Payload> {
    let Some(plan) = agent_plan(state, &e.node) else {
        return text(StatusCode::NOT_FOUND, "no deploy plan for this node\n");
    };
    match call {
        "hello" => {
            let disks = match crate::imaging::rootdev::parse_disks(body) {
                Ok(d) => d,
                Err(why) => {
                    return text(StatusCode::BAD_REQUEST, format!("{}\n", one_line(&why)));
                }
            };
            let chosen = crate::imaging::rootdev::choose(&disks, &plan.hints)
                .map(|d| format!("/dev/{}", d.name));
            tracing::info!(target: "kiln::bootserver", node = %e.node, disks = disks.len(), chosen = ?chosen, "deploy agent hello");
            let answer = match &chosen {
                Ok(device) => {
                    let image = plan
                        .image_url
                        .clone()
                        .unwrap_or_else(|| e.urls.image.clone());
                    format!(
                        "action=deploy\ndevice={device}\nimage={image}\nsha256={}\ncompression={}\nroot_partition={}\nseed={}\n",
                        plan.sha256,
                        match plan.compression {
                            crate::profiles::image::Compression::None => "none",
                            crate::profiles::image::Compression::Gzip => "gzip",
                        },
                        plan.root_partition,
                        e.urls.seed
                    ) + if plan.bench_peer { "bench=1\n" } else { "" }
                }
                Err(why) => format!("action=fail\nreason={}\n", one_line(why)),
            };
            e.progress.send_modify(|p| {
                p.agent.hellos += 1;
                p.agent.disks = disks;
                match chosen {
                    Ok(d) => {
                        p.agent.device = Some(d);
                        p.agent.refused = None;
                    }
                    Err(why) => p.agent.refused = Some(why),
                }
            });
            text(StatusCode::OK, answer)
        }
        "progress" => {
            let f = kv_lines(body);
            let num = |k: &str| f.get(k).and_then(|v| v.trim().parse::<u64>().ok());
            e.progress.send_modify(|p| {
                if let Some(w) = num("written") {
                    p.agent.written = w;
                }
                if let Some(t) = num("total") {
                    p.agent.total = Some(t);
                }
            });
            text(StatusCode::OK, "ok\n")
        }
        "done" => {
            let f = kv_lines(body);
            tracing::info!(target: "kiln::bootserver", node = %e.node, "deploy agent wrote the image: {f:?}");
            e.progress.send_modify(|p| p.agent.done = Some(f));
            text(StatusCode::OK, "ok\n")
        }
        "failed" => {
            let f = kv_lines(body);
            let reason = one_line(
                f.get("reason")
                    .map(String::as_str)
                    .unwrap_or("no reason given"),
            );
            tracing::warn!(target: "kiln::bootserver", node = %e.node, "deploy agent failed: {reason}");
            e.progress.send_modify(|p| {
                if p.agent.failed.is_none() {
                    p.agent.failed = Some(reason);
                }
            });
            text(StatusCode::OK, "ok\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `application/x-www-form-urlencoded` fields (cloud-init's phone_home).
fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `Range` that no byte of the file satisfies (answered with 416).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// One `bytes=` range, resolved against `len`: `Ok(None)` for none (or
/// one kiln does not honour, like several ranges: RFC 9110 lets a server
/// ignore Range), `Err` when unsatisfiable.
pub fn parse_range(value: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || len == 0 {
            return Err(Unsatisfiable);
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if start >= len {
            return Err(Unsatisfiable);
        }
        (start, end)
    };
    Ok(Some(range))
}

async fn serve_file(file: &ServedFile, req: &Request<Incoming>) -> Response<Payload> {
    let range = parse_range(
        req.headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
        file.len,
    );
    let (status, start, end) = match range {
        Ok(None) => (StatusCode::OK, 0, file.len),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        Err(Unsatisfiable) => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = header::HeaderValue::from_str(&format!("bytes */{}", file.len)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if req.method() == Method::HEAD || start == end {
        Payload::Full(None)
    } else {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        // Chunks handed over a small channel, so memory stays at
        // CHUNK × IN_FLIGHT per client whatever the file's size.
        tokio::spawn(pump(
            file.path.clone(),
            Arc::clone(&file.overlay),
            start,
            end,
            tx,
        ));
        Payload::Stream(rx)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(end - start),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) =
            header::HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, file.len))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// Blocking file reads running at once, for every client of every boot
/// server in this process. A read holds a blocking thread for one chunk
/// only, never while a slow client drains its channel, so a thousand
/// streams cost at most this many threads.
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);

/// Runs `f` on a blocking thread under a [`READS`] slot.
async fn blocking_read<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let _slot = READS.acquire().await.map_err(std::io::Error::other)?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Streams bytes `start..end` of `path`, `overlay` laid over them, into
/// `tx` until done, failed, or the client went away.
async fn pump(
    path: PathBuf,
    overlay: Arc<Overlay>,
    start: u64,
    end: u64,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    use std::os::unix::fs::FileExt as _;
    let file = match blocking_read(move || std::fs::File::open(path)).await {
        Ok(f) => Arc::new(f),
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let mut pos = start;
    while pos < end {
        // Wait for room first: no read runs ahead of the client.
        let Ok(room) = tx.reserve().await else {
            return; // The client went away.
        };
        let n = CHUNK.min((end - pos) as usize);
        let (file, overlay) = (Arc::clone(&file), Arc::clone(&overlay));
        let chunk = blocking_read(move || {
            let mut buf = vec![0u8; n];
            let mut filled = 0;
            while filled < n {
                match file.read_at(&mut buf[filled..], pos + filled as u64) {
                    Ok(0) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "file shrank while being served",
                        ));
                    }
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            overlay.apply(pos, &mut buf);
            Ok(Bytes::from(buf))
        })
        .await;
        match chunk {
            Ok(bytes) => room.send(Ok(bytes)),
            Err(e) => {
                room.send(Err(e));
                return;
            }
        }
        SERVED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        pos += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Ok(None));
    }

    #[test]
    fn form() {
        let f = form_fields(b"instance_id=i-1&hostname=n%2D1&pub_key_ed25519=ssh-ed25519+AAAA");
        assert_eq!(f["hostname"], "n-1");
        assert_eq!(f["pub_key_ed25519"], "ssh-ed25519 AAAA");
    }
}
