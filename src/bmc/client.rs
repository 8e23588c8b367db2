//! A Redfish client for one BMC: a session created once and reused (basic
//! auth where the BMC has no SessionService), JSON in and out, Redfish
//! error messages surfaced, task monitors polled to completion, and the
//! session deleted at the end. The password never appears in errors or
//! logs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::bmc::h1::Body;
use crate::bmc::transport::{Reply, Transport, TransportError};
use crate::secret::Secret;

/// Why a Redfish call failed; every variant names the node.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    /// The request did not get an HTTP answer.
    #[error("{node}: {source}")]
    Transport {
        /// Node name.
        node: String,
        /// What failed.
        source: TransportError,
    },
    /// The BMC answered with an error status.
    #[error("{node}: {method} {path}: HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        /// Node name.
        node: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Status code.
        status: u16,
        /// The Redfish error message, when the BMC gave one.
        message: Option<String>,
    },
    /// The answer was not what Redfish promises.
    #[error("{node}: {path}: {reason}")]
    Protocol {
        /// Node name.
        node: String,
        /// Path.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

impl BmcError {
    /// The resource or feature is not there (404, 405, 501): an optional
    /// part of Redfish this BMC lacks, not a failure.
    pub fn is_absent(&self) -> bool {
        matches!(self.status(), Some(404 | 405 | 501))
    }

    /// The request may have reached the BMC and been carried out, though
    /// no answer said so (a timeout or a broken connection after it was
    /// sent): read the state back before asking again.
    pub fn maybe_acted(&self) -> bool {
        matches!(self, BmcError::Transport { source, .. } if !source.not_sent())
    }

    /// The HTTP status, for an HTTP error.
    pub fn status(&self) -> Option<u16> {
        match self {
            BmcError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Auth {
    /// Not logged in yet.
    None,
    /// `Authorization: Basic …`.
    Basic,
    /// A session.
    Session {
        token: String,
        location: Option<String>,
    },
}

/// A logged-in (lazily) Redfish client for one node's BMC.
pub struct BmcClient {
    /// The node it manages.
    pub node: String,
    transport: Transport,
    username: String,
    password: Secret,
    auth: Mutex<Auth>,
    login: tokio::sync::Mutex<()>,
    /// The ETag each resource last answered a GET with, so a PATCH that
    /// needs `If-Match` need not GET first (a stale one costs a 412 and a
    /// retry, what asking first would have cost).
    etags: Mutex<std::collections::HashMap<String, String>>,
}

impl std::fmt::Debug for BmcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcClient")
            .field("node", &self.node)
            .field("bmc", &self.transport.bmc)
            .finish_non_exhaustive()
    }
}

/// A JSON reply with what callers need from the headers.
#[derive(Debug)]
pub struct Doc {
    /// Status.
    pub status: StatusCode,
    /// Parsed body (`Null` when empty).
    pub body: Value,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Location` (task monitors, new sessions).
    pub location: Option<String>,
}

/// How long after a task is accepted its monitor is first polled.
const FIRST_TASK_POLL: Duration = Duration::from_millis(500);

fn redfish_message(body: &Value) -> Option<String> {
    let err = body.get("error")?;
    let extended = err
        .get("@Message.ExtendedInfo")
        .and_then(|e| e.get(0))
        .and_then(|m| m.get("Message"))
        .and_then(Value::as_str);
    extended
        .or_else(|| err.get("message").and_then(Value::as_str))
        .map(|m| crate::diag::clip(m, 300))
}

impl BmcClient {
    /// A client; nothing is sent until the first request.
    pub fn new(node: &str, transport: Transport, username: &str, password: Secret) -> BmcClient {
        BmcClient {
            node: node.to_owned(),
            transport,
            username: username.to_owned(),
            password,
            auth: Mutex::new(Auth::None),
            login: tokio::sync::Mutex::new(()),
            etags: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The ETag `path` answered its last GET with, if it gave one.
    pub fn known_etag(&self, path: &str) -> Option<String> {
        let etags = self.etags.lock().unwrap_or_else(|e| e.into_inner());
        etags.get(path).cloned()
    }

    /// How many HTTP requests this client sent to the BMC (every method,
    /// logins and retries included).
    pub fn requests(&self) -> u64 {
        self.transport.requests()
    }

    fn auth(&self) -> Auth {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_auth(&self, auth: Auth) {
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = auth;
    }

    fn transport_err(&self, source: TransportError) -> BmcError {
        BmcError::Transport {
            node: self.node.clone(),
            source,
        }
    }

    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Creates a session, or settles for basic auth where sessions are not
    /// offered.
    async fn ensure_login(&self) -> Result<(), BmcError> {
        let _one = self.login.lock().await;
        if !matches!(self.auth(), Auth::None) {
            return Ok(());
        }
        let body =
            serde_json::json!({"UserName": self.username, "Password": self.password.expose()});
        let reply = self
            .transport
            .request(
                Method::POST,
                "/redfish/v1/SessionService/Sessions",
                &[],
                Some(Bytes::from(body.to_string()).into()),
            )
            .await
            .map_err(|e| self.transport_err(e))?;
        match reply.status.as_u16() {
            200 | 201 => {
                let token = reply
                    .headers
                    .get("x-auth-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let location = reply
                    .headers
                    .get(hyper::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(|l| path_of(l).to_owned());
                match token {
                    Some(token) => self.set_auth(Auth::Session { token, location }),
                    None => self.set_auth(Auth::Basic),
                }
                Ok(())
            }
            401 | 403 => {
                // Either the credentials are wrong, or the service has no
                // sessions and guards every path with basic auth
                // (sushy-tools): one authenticated GET tells which.
                let probe = self
                    .transport
                    .request(
                        Method::GET,
                        "/redfish/v1/Systems",
                        &[("Authorization", self.basic())],
                        None,
                    )
                    .await
                    .map_err(|e| self.transport_err(e))?;
                if probe.status.is_success() {
                    self.set_auth(Auth::Basic);
                    return Ok(());
                }
                Err(BmcError::Http {
                    node: self.node.clone(),
                    method: "POST".into(),
                    path: "/redfish/v1/SessionService/Sessions".into(),
                    status: reply.status.as_u16(),
                    message: Some(format!(
                        "login as `{}` refused; check the BMC username and password",
                        self.username
                    )),
                })
            }
            // No SessionService (some emulators and old firmware): basic auth.
            _ => {
                self.set_auth(Auth::Basic);
                Ok(())
            }
        }
    }

    /// Sends a request with authentication; returns the raw reply.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, String)],
    ) -> Result<Reply, BmcError> {
        let payload = body.map(|b| Bytes::from(b.to_string()).into());
        self.send_payload(method, path, payload, extra).await
    }

    /// Sends a raw body (a multipart firmware upload) with its own
    /// `Content-Type`, authenticated as [`BmcClient::send`] is.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: &str,
        extra: &[(&str, String)],
    ) -> Result<Reply, BmcError> {
        let mut headers = extra.to_vec();
        headers.push(("Content-Type", content_type.to_owned()));
        self.send_payload(method, path, Some(body), &headers).await
    }

    /// The one authenticated request path: logs in when needed, and once
    /// more when a session has expired.
    async fn send_payload(
        &self,
        method: Method,
        path: &str,
        payload: Option<Body>,
        extra: &[(&str, String)],
    ) -> Result<Reply, BmcError> {
        // Logging in happens once per session: boxed, its state is not part
        // of every request's future, and the lock is taken only then.
        if matches!(self.auth(), Auth::None) {
            Box::pin(self.ensure_login()).await?;
        }
        let mut relogged = false;
        loop {
            let mut headers: Vec<(&str, String)> = extra.to_vec();
            match self.auth() {
                Auth::Session { token, .. } => headers.push(("X-Auth-Token", token)),
                _ => headers.push(("Authorization", self.basic())),
            }
            let reply = self
                .transport
                .request(method.clone(), path, &headers, payload.clone())
                .await
                .map_err(|e| self.transport_err(e))?;
            // A session may expire or be dropped by a BMC reset: log in again once.
            if reply.status == StatusCode::UNAUTHORIZED
                && !relogged
                && matches!(self.auth(), Auth::Session { .. })
            {
                self.set_auth(Auth::None);
                Box::pin(self.ensure_login()).await?;
                relogged = true;
                continue;
            }
            return Ok(reply);
        }
    }

    /// Sends and parses; an error status becomes [`BmcError::Http`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, String)],
    ) -> Result<Doc, BmcError> {
        let reply = self.send(method.clone(), path, body, extra).await?;
        self.parse(&method, path, reply)
    }

    /// Sends a raw body with its `Content-Type` and parses the answer as
    /// [`BmcClient::call`] does.
    pub async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: &str,
    ) -> Result<Doc, BmcError> {
        let reply = self
            .send_bytes(method.clone(), path, body, content_type, &[])
            .await?;
        self.parse(&method, path, reply)
    }

    /// A reply as a [`Doc`]; an error status becomes [`BmcError::Http`].
    fn parse(&self, method: &Method, path: &str, reply: Reply) -> Result<Doc, BmcError> {
        tracing::trace!(node = %self.node, %method, path, status = reply.status.as_u16(), bytes = reply.body.len(), "redfish");
        let parsed: Value = if reply.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
        };
        if !reply.status.is_success() {
            return Err(BmcError::Http {
                node: self.node.clone(),
                method: method.to_string(),
                path: path.to_owned(),
                status: reply.status.as_u16(),
                message: redfish_message(&parsed),
            });
        }
        let header = |name| {
            reply
                .headers
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(hyper::header::ETAG)
            .or_else(|| parsed["@odata.etag"].as_str().map(str::to_owned));
        if *method == Method::GET {
            let mut etags = self.etags.lock().unwrap_or_else(|e| e.into_inner());
            match &etag {
                // Few resources are PATCHed; a bound keeps a BMC that
                // tags every document from growing the map.
                Some(tag) if etags.len() < 16 || etags.contains_key(path) => {
                    etags.insert(path.to_owned(), tag.clone());
                }
                Some(_) => {}
                None => {
                    etags.remove(path);
                }
            }
        }
        Ok(Doc {
            status: reply.status,
            etag,
            location: header(hyper::header::LOCATION).map(|l| path_of(&l).to_owned()),
            body: parsed,
        })
    }

    /// GETs a resource.
    pub async fn get(&self, path: &str) -> Result<Value, BmcError> {
        let doc = self.call(Method::GET, path, None, &[]).await?;
        if !doc.body.is_object() {
            return Err(BmcError::Protocol {
                node: self.node.clone(),
                path: path.to_owned(),
                reason: "the answer is not a JSON object".into(),
            });
        }
        Ok(doc.body)
    }

    /// GETs a resource with its ETag.
    pub async fn get_doc(&self, path: &str) -> Result<Doc, BmcError> {
        self.call(Method::GET, path, None, &[]).await
    }

    /// POSTs an action; follows a task monitor (202) to its end.
    pub async fn action(&self, path: &str, body: &Value, limit: Duration) -> Result<(), BmcError> {
        let doc = self.call(Method::POST, path, Some(body), &[]).await?;
        if doc.status == StatusCode::ACCEPTED {
            let monitor = doc
                .location
                .or_else(|| doc.body["TaskMonitor"].as_str().map(str::to_owned))
                .or_else(|| doc.body["@odata.id"].as_str().map(str::to_owned));
            if let Some(monitor) = monitor {
                return self.wait_task(&monitor, limit).await;
            }
        }
        Ok(())
    }

    /// PATCHes, with `If-Match` when an ETag is known.
    pub async fn patch(
        &self,
        path: &str,
        body: &Value,
        etag: Option<&str>,
    ) -> Result<Doc, BmcError> {
        let headers: Vec<(&str, String)> = etag
            .map(|t| vec![("If-Match", t.to_owned())])
            .unwrap_or_default();
        self.call(Method::PATCH, path, Some(body), &headers).await
    }

    /// Polls a task monitor until the task ends or `limit` passes. The
    /// first poll waits a moment too: a task the BMC has just accepted is
    /// not done yet, and asking at once only costs a request.
    pub async fn wait_task(&self, monitor: &str, limit: Duration) -> Result<(), BmcError> {
        let start = Instant::now();
        tokio::time::sleep(FIRST_TASK_POLL).await;
        loop {
            let reply = self.send(Method::GET, monitor, None, &[]).await?;
            match reply.status.as_u16() {
                202 => {}
                200 | 201 | 204 => {
                    // A task resource (not a monitor) answers 200 with a state.
                    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
                    match body["TaskState"].as_str() {
                        Some("Running" | "New" | "Starting" | "Pending" | "Stopping") => {}
                        Some("Exception" | "Killed" | "Cancelled") => {
                            return Err(BmcError::Http {
                                node: self.node.clone(),
                                method: "task".into(),
                                path: monitor.to_owned(),
                                status: 500,
                                message: body["Messages"][0]["Message"].as_str().map(str::to_owned),
                            });
                        }
                        _ => return Ok(()),
                    }
                }
                status => {
                    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
                    return Err(BmcError::Http {
                        node: self.node.clone(),
                        method: "task".into(),
                        path: monitor.to_owned(),
                        status,
                        message: redfish_message(&body),
                    });
                }
            }
            if start.elapsed() > limit {
                return Err(BmcError::Protocol {
                    node: self.node.clone(),
                    path: monitor.to_owned(),
                    reason: format!("task still running after {} s", limit.as_secs()),
                });
            }
            let pause = reply
                .headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Duration::from_millis(500), |s| {
                    Duration::from_secs(s.min(10))
                });
            tokio::time::sleep(pause).await;
        }
    }

    /// Closes kept-alive connections (the session stays valid; the next
    /// request connects again). Known ETags are kept: a resource nothing
    /// changed meanwhile keeps its tag, and a stale one costs a 412 and a
    /// retry, no more than reading it first.
    pub fn close_idle(&self) {
        self.transport.close_idle();
    }

    /// Forgets the ETag known for `path`, for a resource known to change
    /// (a system document across a reboot), so the next PATCH reads it
    /// first instead of paying for a 412.
    pub fn forget_etag(&self, path: &str) {
        self.etags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }

    /// Deletes the session, if one was made. When the BMC could not be
    /// reached the session is kept, so a later logout tries again.
    pub async fn logout(&self) {
        if let Auth::Session {
            location: Some(location),
            ..
        } = self.auth()
            && self
                .send(Method::DELETE, &location, None, &[])
                .await
                .is_err()
        {
            return;
        }
        self.set_auth(Auth::None);
    }
}

/// The path of a `Location` that may be an absolute URL.
fn path_of(location: &str) -> &str {
    match location.find("://") {
        Some(i) => location[i + 3..]
            .find('/')
            .map_or("/", |p| &location[i + 3 + p..]),
        None => location,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_paths() {
        assert_eq!(
            path_of("https://10.0.0.1/redfish/v1/TaskService/Tasks/1"),
            "/redfish/v1/TaskService/Tasks/1"
        );
        assert_eq!(path_of("/redfish/v1/x"), "/redfish/v1/x");
    }

    #[test]
    fn redfish_messages_prefer_extended_info() {
        let body = serde_json::json!({"error": {"message": "General", "@Message.ExtendedInfo": [{"Message": "Specific"}]}});
        assert_eq!(redfish_message(&body).as_deref(), Some("Specific"));
    }
}
