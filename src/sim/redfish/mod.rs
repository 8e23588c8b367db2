//! A simulated BMC's Redfish service: authentication (basic and
//! X-Auth-Token sessions), GET of the flavour's tree with live state, and
//! the actions that change a node — Reset, boot override, virtual media —
//! each checked the way the real vendor checks it. Faults (latency, 503
//! storms, hangs, failing inserts) are applied here too.

pub mod bios;
pub mod flavour;
mod headers;
pub mod metadata;
pub mod multipart;
pub mod query;
pub mod render;
pub mod update;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::sim::Clock;
use crate::sim::node::{self, PowerAction, SimNode};
use flavour::{Flavour, InsertBy, Vendor};

/// A Redfish session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Its id (last path segment).
    pub id: String,
    /// Who logged in.
    pub user: String,
    token: String,
}

/// A task's progress.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    /// Still working.
    Running,
    /// Done.
    Completed,
    /// Failed, with why.
    Failed(String),
}

/// A long-running action.
#[derive(Clone, Debug)]
pub struct Task {
    /// Its id.
    pub id: String,
    /// What it does.
    pub name: String,
    /// Where it is.
    pub state: TaskState,
    /// How far along it is (0 to 100).
    pub percent: u8,
}

/// Sessions and tasks of one BMC.
#[derive(Debug, Default)]
pub struct BmcState {
    /// Open sessions.
    pub sessions: Vec<Session>,
    /// Tasks, oldest first (the last 32 kept).
    pub tasks: Vec<Task>,
    /// Firmware versions changed by updates, and updates staged for reset.
    pub firmware: update::FirmwareState,
    /// BIOS values applied at resets, and those pending for the next.
    pub bios: bios::BiosState,
    next_id: u64,
    /// The BMC is rebooting until then (Manager.Reset).
    unavailable_until: Option<Instant>,
}

/// One simulated BMC.
pub struct Bmc {
    /// The node it manages.
    pub node: Arc<SimNode>,
    /// Its flavour.
    pub flavour: Arc<Flavour>,
    /// Login user.
    pub username: String,
    /// Login password.
    pub password: String,
    clock: Clock,
    state: Mutex<BmcState>,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    metadata: Arc<String>,
}

impl std::fmt::Debug for Bmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bmc")
            .field("node", &self.node.name)
            .finish_non_exhaustive()
    }
}

/// What the service answers.
pub type Reply = Response<Full<Bytes>>;

/// A request body the service can read: hyper's own, or one already read
/// whole (the close-delimited error fault reads requests itself).
pub trait ReqBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> ReqBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

const BODY_LIMIT: usize = 1 << 20;

impl Bmc {
    /// A BMC for `node`.
    pub fn new(
        node: Arc<SimNode>,
        flavour: Arc<Flavour>,
        username: String,
        password: String,
        clock: Clock,
        metadata: Arc<String>,
    ) -> Bmc {
        // A per-node tree shape that changes the flavour's own documents
        // gets a copy of the flavour (a few nodes at most).
        let flavour = if node.faults.bmc.tree.push_only {
            Arc::new(flavour.push_only())
        } else {
            flavour
        };
        Bmc {
            node,
            flavour,
            username,
            password,
            clock,
            state: Mutex::new(BmcState::default()),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            metadata,
        }
    }

    fn bmc_state(&self) -> MutexGuard<'_, BmcState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests answered or being answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The most requests this BMC has had in flight at once: what a
    /// client's per-BMC limit is measured against.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    /// Answers one HTTP request.
    pub async fn handle<B: ReqBody>(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Reply, std::convert::Infallible> {
        // Counted down on drop too: a client that gives up drops the request.
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        let _counted = InFlight(&self.in_flight);
        Arc::clone(&self).answer(req).await
    }

    async fn answer<B: ReqBody>(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Reply, std::convert::Infallible> {
        let faults = &self.node.faults.bmc;
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if faults.hang {
            // Accepts, then never answers: clients must time out.
            std::future::pending::<()>().await;
        }
        if !faults.latency.is_zero() || !faults.jitter.is_zero() {
            let jitter = if faults.jitter.is_zero() {
                Duration::ZERO
            } else {
                // Seeded by the node too: BMCs answering their n-th
                // request after the same delay would stay in lockstep,
                // which real BMCs never do.
                let nanos = faults.jitter.as_nanos() as u64;
                Duration::from_nanos(spread(n ^ name_seed(&self.node.name)) % nanos.max(1))
            };
            tokio::time::sleep(faults.latency + jitter).await;
        }
        if faults.unavailable_rate > 0.0 {
            let r = faults.unavailable_rate;
            if ((n as f64) * r).floor() != (((n - 1) as f64) * r).floor() {
                return Ok(unavailable(faults.retry_after));
            }
        }
        let rebooting = self
            .bmc_state()
            .unavailable_until
            .is_some_and(|t| Instant::now() < t);
        if rebooting {
            return Ok(unavailable(Duration::from_secs(5)));
        }
        // Boxed, so a request waiting out its latency (every BMC's, at
        // fleet scale) holds a small future rather than room for the
        // largest route's state.
        Ok(Box::pin(self.route(req)).await)
    }

    /// Answers `req`, with the headers DSP0266 asks of every reply.
    async fn route<B: ReqBody>(self: &Arc<Self>, req: Request<B>) -> Reply {
        // This service speaks OData 4.0 only; DSP0266 asks for 412 when a
        // client requires another version.
        if req
            .headers()
            .get("odata-version")
            .is_some_and(|v| v.as_bytes() != b"4.0")
        {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "only OData-Version 4.0 is supported",
            );
        }
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let method = req.method().clone();
        let mut r = self.dispatch(req).await;
        let read =
            (method == Method::GET || method == Method::HEAD) && r.status() == StatusCode::OK;
        if read || r.status() == StatusCode::METHOD_NOT_ALLOWED {
            headers::add_allow(&mut r, &self.allowed(&path));
        }
        r
    }

    async fn dispatch<B: ReqBody>(self: &Arc<Self>, req: Request<B>) -> Reply {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        // DSP0266: a POST to a collection's `Members` creates like a POST
        // to the collection itself.
        let path = match path.strip_suffix("/Members") {
            Some(c)
                if c == "/redfish/v1/SessionService/Sessions" && req.method() == Method::POST =>
            {
                c.to_owned()
            }
            _ => path,
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        let method = req.method().clone();
        let skip = req
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| {
                kv.strip_prefix("$skip=")
                    .or_else(|| kv.strip_prefix("%24skip="))
            })
            .and_then(|n| n.parse::<usize>().ok());
        // Refusals are answered only to reads, and only after authentication.
        let query = query::parse(&self.flavour, req.uri().query().unwrap_or(""));
        if path == "/redfish" && method == Method::GET {
            return json_reply(StatusCode::OK, &json!({"v1": "/redfish/v1/"}));
        }
        // Some BMCs take uploads outside the Redfish tree (Lenovo's `/mfwupdate`).
        let push = self.flavour.multipart_push.as_deref() == Some(path.as_str());
        if !path.starts_with("/redfish/v1") && !push {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceMissingAtURI",
                &format!("{path} is not a Redfish resource"),
            );
        }
        let open = matches!(
            path.as_str(),
            "/redfish/v1" | "/redfish/v1/odata" | "/redfish/v1/$metadata"
        ) && (method == Method::GET || method == Method::HEAD)
            || (path == "/redfish/v1/SessionService/Sessions" && method == Method::POST);
        let user = self.authenticate(&req);
        if !open && user.is_none() {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "NoValidSession",
                "authentication required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Redfish\""),
            );
            return r;
        }
        let if_match = req
            .headers()
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if push && method == Method::POST {
            return self.multipart_push(req).await;
        }
        let body = if method == Method::POST || method == Method::PATCH {
            match read_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            }
        } else {
            Value::Null
        };
        match method {
            Method::GET | Method::HEAD => {
                let mut r = match query {
                    Ok(q) => self.get(&path, skip, &q),
                    Err((code, id, message)) => {
                        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                        error(code, id, &message)
                    }
                };
                if method == Method::HEAD {
                    *r.body_mut() = Full::new(Bytes::new());
                }
                r
            }
            Method::POST => self.post(&path, body).await,
            Method::PATCH => self.patch(&path, body, if_match.as_deref()).await,
            Method::DELETE => self.delete(&path),
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "OperationNotAllowed",
                "method not allowed",
            ),
        }
    }

    fn authenticate<B>(&self, req: &Request<B>) -> Option<String> {
        if let Some(token) = req
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
        {
            return self
                .bmc_state()
                .sessions
                .iter()
                .find(|s| s.token == token)
                .map(|s| s.user.clone());
        }
        let basic = req
            .headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        (user == self.username && pass == self.password).then(|| user.to_owned())
    }

    fn render(&self, path: &str) -> Option<Value> {
        let st = self.node.lock();
        let bmc = self.bmc_state();
        if let Some(doc) = bios::render(&self.flavour, &bmc.bios, path) {
            return Some(doc);
        }
        let doc = render::resource(
            &self.flavour,
            &self.node.name,
            &st,
            &bmc,
            &self.node.faults.bmc.tree,
            path,
        );
        match (&self.node.faults.bmc.refused_insert_param, doc) {
            (Some(refused), Some(mut doc)) if path.ends_with("/InsertMediaActionInfo") => {
                if let Some(params) = doc["Parameters"].as_array_mut() {
                    params.retain(|p| p["Name"] != refused.as_str());
                }
                Some(doc)
            }
            (_, doc) => doc,
        }
    }

    fn get(&self, path: &str, skip: Option<usize>, query: &query::Query) -> Reply {
        if path == "/redfish/v1/$metadata" {
            let mut r = Response::new(Full::new(Bytes::from(self.metadata.as_bytes().to_vec())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            r.headers_mut()
                .insert("odata-version", HeaderValue::from_static("4.0"));
            return r;
        }
        if path == "/redfish/v1/odata" {
            return json_reply(StatusCode::OK, &metadata::odata(&self.flavour));
        }
        if let Some(id) = path
            .strip_prefix("/redfish/v1/TaskService/Tasks/")
            .and_then(|p| p.strip_suffix("/Monitor"))
        {
            return self.task_monitor(id);
        }
        let page_size = self.node.faults.bmc.tree.page_size;
        let doc = match self.render(path) {
            Some(doc) if query.only => match query::only_member(&doc) {
                Ok(Some(member)) => self.render(&member),
                Ok(None) => Some(doc),
                Err((code, id, message)) => {
                    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                    return error(code, id, &message);
                }
            },
            doc => doc,
        };
        match doc {
            Some(doc) => {
                let doc = match page_size {
                    Some(size) => page(doc, path, skip.unwrap_or(0), size),
                    None => doc,
                };
                // Expanded in this one request: members come from the same
                // rendering a GET of each takes, faults and state included.
                let mut doc = doc;
                if let Some((kind, levels)) = query.expand {
                    query::expand(&mut doc, kind, levels, &|p| self.render(p));
                }
                query::select(&mut doc, &query.select);
                // Serialized once, for the body and its ETag.
                let text = doc.to_string();
                let tag = etag_of(text.as_bytes());
                let mut r = json_text_reply(StatusCode::OK, text);
                headers::add_read_headers(&mut r, &doc);
                if let Ok(v) = HeaderValue::from_str(&tag) {
                    r.headers_mut().insert(header::ETAG, v);
                }
                r
            }
            None => error(
                StatusCode::NOT_FOUND,
                "ResourceMissingAtURI",
                &format!("{path} does not exist"),
            ),
        }
    }

    fn task_monitor(&self, id: &str) -> Reply {
        let task = self.bmc_state().tasks.iter().find(|t| t.id == id).cloned();
        match task {
            None => error(
                StatusCode::NOT_FOUND,
                "ResourceMissingAtURI",
                "no such task",
            ),
            Some(t) => match t.state {
                TaskState::Running => {
                    let path = format!("/redfish/v1/TaskService/Tasks/{id}");
                    let doc = self.render(&path).unwrap_or(Value::Null);
                    let mut r = json_reply(StatusCode::ACCEPTED, &doc);
                    if let Ok(v) = HeaderValue::from_str(&format!("{path}/Monitor")) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    r
                }
                TaskState::Completed => empty(StatusCode::NO_CONTENT),
                TaskState::Failed(why) => {
                    error(StatusCode::INTERNAL_SERVER_ERROR, "GeneralError", &why)
                }
            },
        }
    }

    async fn post(self: &Arc<Self>, path: &str, body: Value) -> Reply {
        let f = Arc::clone(&self.flavour);
        if path == "/redfish/v1/SessionService/Sessions" {
            return self.login(&body);
        }
        if path == format!("{}/Actions/ComputerSystem.Reset", f.system) {
            return self.reset(&body);
        }
        if path == format!("{}/Actions/Manager.Reset", f.manager) {
            self.bmc_state().unavailable_until =
                Some(Instant::now() + self.clock.real(Duration::from_secs(90)));
            return empty(StatusCode::NO_CONTENT);
        }
        if f.simple_update.as_deref() == Some(path) {
            return self.simple_update(&body).await;
        }
        for (i, slot) in f.media.iter().enumerate() {
            if slot.insert == InsertBy::Action
                && path == format!("{}/Actions/VirtualMedia.InsertMedia", slot.path)
            {
                return self.insert_action(i, &body).await;
            }
            if slot.eject_action && path == format!("{}/Actions/VirtualMedia.EjectMedia", slot.path)
            {
                return self.eject(i);
            }
        }
        if self.render(path).is_some() {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "OperationNotAllowed",
                &format!("POST is not allowed on {path}"),
            );
        }
        error(
            StatusCode::NOT_FOUND,
            "ResourceMissingAtURI",
            &format!("{path} does not exist"),
        )
    }

    fn login(&self, body: &Value) -> Reply {
        let (Some(user), Some(pass)) = (body["UserName"].as_str(), body["Password"].as_str())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyMissing",
                "UserName and Password are required",
            );
        };
        if user != self.username || pass != self.password {
            return error(
                StatusCode::UNAUTHORIZED,
                "NoValidSession",
                "invalid username or password",
            );
        }
        let (id, token) = {
            let mut st = self.bmc_state();
            st.next_id += 1;
            let id = st.next_id.to_string();
            let token = format!(
                "{:016x}{:016x}",
                spread(st.next_id ^ 0x5eed),
                spread(self.requests.load(Ordering::Relaxed))
            );
            st.sessions.push(Session {
                id: id.clone(),
                user: user.to_owned(),
                token: token.clone(),
            });
            (id, token)
        };
        let path = format!("/redfish/v1/SessionService/Sessions/{id}");
        let doc = self.render(&path).unwrap_or(Value::Null);
        let mut r = json_reply(StatusCode::CREATED, &doc);
        if let (Ok(t), Ok(l)) = (HeaderValue::from_str(&token), HeaderValue::from_str(&path)) {
            r.headers_mut().insert("x-auth-token", t);
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }

    fn delete(&self, path: &str) -> Reply {
        if let Some(id) = path.strip_prefix("/redfish/v1/SessionService/Sessions/") {
            let mut st = self.bmc_state();
            let before = st.sessions.len();
            st.sessions.retain(|s| s.id != id);
            return if st.sessions.len() < before {
                empty(StatusCode::NO_CONTENT)
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "ResourceMissingAtURI",
                    "no such session",
                )
            };
        }
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "OperationNotAllowed",
            &format!("DELETE is not allowed on {path}"),
        )
    }

    fn reset(&self, body: &Value) -> Reply {
        let Some(kind) = body["ResetType"].as_str() else {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterMissing",
                "ResetType is required",
            );
        };
        if !self.flavour.reset_types.iter().any(|t| t == kind) {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterValueNotInList",
                &format!(
                    "ResetType {kind} is not one of {}",
                    self.flavour.reset_types.join(", ")
                ),
            );
        }
        let action = match kind {
            "On" | "ForceOn" => PowerAction::On,
            "ForceOff" => PowerAction::ForceOff,
            "GracefulShutdown" => PowerAction::GracefulShutdown,
            // Some XCC firmware hangs on ForceRestart; clients must do
            // ForceOff, wait, On.
            "ForceRestart" if self.flavour.vendor == Vendor::Lenovo => PowerAction::HangingRestart,
            "ForceRestart" => PowerAction::ForceRestart,
            "GracefulRestart" => PowerAction::GracefulRestart,
            "PowerCycle" => PowerAction::PowerCycle,
            "PushPowerButton" => PowerAction::PushPowerButton,
            _ => return empty(StatusCode::NO_CONTENT), // Nmi and the like
        };
        if !matches!(
            action,
            PowerAction::ForceOff | PowerAction::GracefulShutdown
        ) {
            // Firmware staged OnReset takes effect as the host comes back.
            let ignored = self.node.faults.bmc.bios_ignore.as_deref();
            let mut bmc = self.bmc_state();
            bmc.firmware.apply_staged();
            // So do pending BIOS values, as BIOS setup runs on the way up.
            bmc.bios.apply_pending(ignored);
        }
        node::power(&self.node, &self.clock, action);
        empty(StatusCode::NO_CONTENT)
    }

    async fn patch(self: &Arc<Self>, path: &str, body: Value, if_match: Option<&str>) -> Reply {
        let f = Arc::clone(&self.flavour);
        let Some(current) = self.render(path) else {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceMissingAtURI",
                &format!("{path} does not exist"),
            );
        };
        if f.needs_if_match && path == f.system {
            match if_match {
                None => {
                    return error(
                        StatusCode::PRECONDITION_REQUIRED,
                        "PreconditionRequired",
                        "this resource needs If-Match",
                    );
                }
                Some(tag) if tag != "*" && tag != etag(&current) => {
                    return error(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        "ETag does not match",
                    );
                }
                Some(_) => {}
            }
        }
        if path == f.system {
            return self.patch_system(&body);
        }
        if self.is_bios_settings(path) {
            return self.patch_bios(&current, &body, if_match);
        }
        if let Some(i) = f.media.iter().position(|m| m.path == path) {
            return self.patch_media(i, &body).await;
        }
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "OperationNotAllowed",
            &format!("PATCH is not supported on {path}"),
        )
    }

    fn patch_system(&self, body: &Value) -> Reply {
        let Some(obj) = body.as_object() else {
            return error(
                StatusCode::BAD_REQUEST,
                "MalformedJSON",
                "expected a JSON object",
            );
        };
        for key in obj.keys() {
            if key != "Boot" {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PropertyNotWritable",
                    &format!("{key} cannot be changed here"),
                );
            }
        }
        let f = &self.flavour;
        let boot = &body["Boot"];
        let Some(boot_obj) = boot.as_object() else {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyValueTypeError",
                "Boot must be an object",
            );
        };
        let mut new = self.node.lock().boot.clone();
        for (key, value) in boot_obj {
            let text = value.as_str();
            match (key.as_str(), text) {
                ("BootSourceOverrideTarget", Some(t)) if f.boot_targets.iter().any(|a| a == t) => {
                    new.target = t.into()
                }
                ("BootSourceOverrideEnabled", Some(t)) if f.boot_enabled.iter().any(|a| a == t) => {
                    new.enabled = t.into()
                }
                ("BootSourceOverrideMode", Some(t @ ("UEFI" | "Legacy"))) => new.mode = t.into(),
                ("HttpBootUri", _) if f.http_boot_uri => new.http_uri = text.map(str::to_owned),
                (
                    "BootSourceOverrideTarget"
                    | "BootSourceOverrideEnabled"
                    | "BootSourceOverrideMode",
                    _,
                ) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "PropertyValueNotInList",
                        &format!("{value} is not an allowed value of Boot.{key}"),
                    );
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "PropertyUnknown",
                        &format!("Boot.{key} is not supported"),
                    );
                }
            }
        }
        if new.target == "UefiHttp" && new.http_uri.is_none() && f.http_boot_uri {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyMissing",
                "UefiHttp needs Boot.HttpBootUri",
            );
        }
        self.node.lock().boot = new;
        empty(StatusCode::NO_CONTENT)
    }

    async fn patch_media(self: &Arc<Self>, i: usize, body: &Value) -> Reply {
        let slot = self.flavour.media[i].clone();
        if let Some(flag) = body
            .pointer("/Oem/Hpe/BootOnNextServerReset")
            .and_then(Value::as_bool)
        {
            if self.flavour.vendor != Vendor::Hpe {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PropertyUnknown",
                    "Oem.Hpe is not supported",
                );
            }
            let mut st = self.node.lock();
            if flag && !st.media[i].inserted {
                return error(StatusCode::BAD_REQUEST, "GeneralError", "no media inserted");
            }
            st.media[i].boot_on_next_reset = flag;
            return empty(StatusCode::NO_CONTENT);
        }
        let ejecting = body["Inserted"] == false || (body.get("Image").is_some_and(Value::is_null));
        if ejecting {
            return self.eject(i);
        }
        if slot.insert == InsertBy::Patch && body["Image"].is_string() {
            return self.insert(i, body).await;
        }
        error(
            StatusCode::BAD_REQUEST,
            "PropertyNotWritable",
            "use the InsertMedia action",
        )
    }

    async fn insert_action(self: &Arc<Self>, i: usize, body: &Value) -> Reply {
        if let Some(obj) = body.as_object() {
            for key in obj.keys() {
                let refused_here = self.node.faults.bmc.refused_insert_param.as_deref();
                if self.flavour.refused_insert_params.contains(&key.as_str())
                    || refused_here == Some(key.as_str())
                {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "ActionParameterNotSupported",
                        &format!("the InsertMedia parameter {key} is not supported"),
                    );
                }
            }
        }
        if !body["Image"].is_string() {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterMissing",
                "Image is required",
            );
        }
        self.insert(i, body).await
    }

    async fn insert(self: &Arc<Self>, i: usize, body: &Value) -> Reply {
        let image = body["Image"].as_str().unwrap_or_default().to_owned();
        {
            let mut st = self.node.lock();
            if st.media[i].inserted {
                return error(
                    StatusCode::CONFLICT,
                    "ResourceInUse",
                    "media is already inserted; eject it first",
                );
            }
            if st.media_failures_left > 0 {
                st.media_failures_left -= 1;
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "GeneralError",
                    &format!("unable to mount {image}: the remote share did not answer"),
                );
            }
        }
        let write_protected = body["WriteProtected"].as_bool().unwrap_or(true);
        if self.flavour.insert_is_task {
            let id = self.new_task(format!("Insert {image}"), 50);
            let bmc = Arc::clone(self);
            let task = id.clone();
            tokio::spawn(async move {
                let result = mount(&bmc.node, i, &image, write_protected).await;
                let mut st = bmc.bmc_state();
                if let Some(t) = st.tasks.iter_mut().find(|t| t.id == task) {
                    t.percent = 100;
                    t.state = match result {
                        Ok(()) => TaskState::Completed,
                        Err(why) => TaskState::Failed(why),
                    };
                }
            });
            return self.accepted(&id);
        }
        match mount(&self.node, i, &image, write_protected).await {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(why) => error(StatusCode::INTERNAL_SERVER_ERROR, "GeneralError", &why),
        }
    }

    fn eject(&self, i: usize) -> Reply {
        let mut st = self.node.lock();
        st.media[i] = node::Media::default();
        empty(StatusCode::NO_CONTENT)
    }
}

/// One page of a collection: `size` members from `skip`, with
/// `Members@odata.nextLink` when more follow (`Members@odata.count` stays
/// the whole collection's). Other documents are left as they are.
fn page(mut doc: Value, path: &str, skip: usize, size: usize) -> Value {
    let Some(members) = doc.get_mut("Members").and_then(Value::as_array_mut) else {
        return doc;
    };
    let total = members.len();
    let from = skip.min(total);
    let to = (from + size).min(total);
    let kept: Vec<Value> = members.drain(..).skip(from).take(to - from).collect();
    *members = kept;
    if let Some(map) = doc.as_object_mut() {
        map.remove("Members@odata.nextLink");
        map.insert("Members@odata.count".into(), json!(total));
        if to < total {
            map.insert(
                "Members@odata.nextLink".into(),
                json!(format!("{path}?$skip={to}")),
            );
        }
    }
    doc
}

/// Fetches the image like a BMC does before it reports media inserted.
async fn mount(node: &SimNode, i: usize, image: &str, write_protected: bool) -> Result<(), String> {
    let mut scanner = crate::sim::fetch::SeedScanner::default();
    crate::sim::fetch::stream(image, 16 << 30, |chunk| scanner.feed(chunk))
        .await
        .map_err(|e| format!("unable to mount {image}: {e}"))?;
    let mut st = node.lock();
    st.media[i] = node::Media {
        image: Some(image.to_owned()),
        inserted: true,
        write_protected,
        seed_url: scanner.finish(),
        boot_on_next_reset: false,
    };
    Ok(())
}

/// A well-spread 64-bit value from a counter (splitmix64).
/// A number from a node's name (FNV-1a), to vary per-node sequences.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn spread(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn etag(doc: &Value) -> String {
    etag_of(doc.to_string().as_bytes())
}

/// A weak ETag from a document's serialized bytes (FNV-1a).
fn etag_of(text: &[u8]) -> String {
    let h = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("W/\"{h:016x}\"")
}

async fn read_json<B: ReqBody>(req: Request<B>) -> Result<Value, Reply> {
    let bytes = Limited::new(req.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "GeneralError",
                "request body too large",
            )
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            &format!("the request body is not valid JSON: {e}"),
        )
    })
}

fn json_reply(status: StatusCode, doc: &Value) -> Reply {
    json_text_reply(status, doc.to_string())
}

fn json_text_reply(status: StatusCode, text: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert("odata-version", HeaderValue::from_static("4.0"));
    r
}

fn empty(status: StatusCode) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    r
}

fn unavailable(retry_after: Duration) -> Reply {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceTemporarilyUnavailable",
        "the service is temporarily unavailable",
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A Redfish error response.
pub fn error(status: StatusCode, id: &str, message: &str) -> Reply {
    let message_id = format!("Base.1.8.{id}");
    json_reply(
        status,
        &json!({
            "error": {
                "code": message_id,
                "message": message,
                "@Message.ExtendedInfo": [{
                    "@odata.type": "#Message.v1_0_0.Message",
                    "MessageId": message_id,
                    "Message": message,
                    "Severity": "Warning",
                    "Resolution": "Correct the request and resubmit it.",
                }],
            }
        }),
    )
}
