//! A small HTTP/1.1 client for the handoff targets (webhook, slurmrestd,
//! the Kubernetes API): one request per connection over hyper, TLS with
//! rustls (ring) against a CA bundle (the target's own, else the system's).
//! The BMC transport (`src/bmc/transport.rs`) is tuned for pinned,
//! rate-limited BMCs; receivers are ordinary web services, so this stays
//! separate and simple.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;

pub use crate::inventory::address::Url;
use crate::secret::Secret;

/// The most of an answer's body kept (receivers' answers are recorded).
const MAX_BODY: usize = 1 << 20;

/// The CA bundle used when a target names none (Debian, Ubuntu, Alpine).
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A request that got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// TCP, TLS or HTTP failed before an answer.
    #[error("{url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("{url}: no answer within {} s", .after.as_secs())]
    Timeout {
        /// Where.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// A credential would travel in clear and the target did not allow it.
    #[error(
        "{url}: refusing to send a token over plain http:// (use https://, or set `insecure_http: true` on the target)"
    )]
    PlainHttp {
        /// Where.
        url: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup for {url}: {reason}")]
    Tls {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The body (at most 1 MiB kept).
    pub body: Bytes,
}

impl Reply {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, cut to `max` characters, for messages and records.
    pub fn text(&self, max: usize) -> String {
        crate::diag::clip(String::from_utf8_lossy(&self.body).trim(), max)
    }
}

/// How to reach one receiver: TLS trust and a per-request timeout.
#[derive(Clone)]
pub struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    insecure_http: bool,
}

/// Headers that carry credentials (never sent over plain http:// unless
/// the target allows it).
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "x-slurm-user-token",
    "x-auth-token",
    "cookie",
];

impl Client {
    /// A client trusting the PEM bundle `ca`, else the system's bundle
    /// (which is read only when an https:// URL is used).
    pub fn new(ca: Option<&Path>, timeout: Duration) -> Result<Client, HttpError> {
        let bundle: Option<PathBuf> = match ca {
            Some(p) => Some(p.to_owned()),
            None => SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        };
        let tls = match bundle {
            Some(b) => Some(crate::bmc::tls::ca_bundle(&b).map_err(|e| HttpError::Tls {
                url: b.display().to_string(),
                reason: format!("{e:#}"),
            })?),
            None => None,
        };
        Ok(Client {
            tls,
            timeout,
            insecure_http: false,
        })
    }

    /// Lets tokens go over plain http:// (the inventory's `insecure_http:
    /// true`); without it a request carrying one to an http:// URL is
    /// refused before anything is sent.
    pub fn insecure_http(mut self, allow: bool) -> Client {
        self.insecure_http = allow;
        self
    }

    /// Sends one request. `bearer` becomes `Authorization: Bearer …`;
    /// other headers are given as pairs.
    pub async fn send(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        bearer: Option<&Secret>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, HttpError> {
        let shown = url.to_string();
        let credentials = bearer.is_some()
            || headers
                .iter()
                .any(|(k, _)| CREDENTIAL_HEADERS.contains(&k.to_ascii_lowercase().as_str()));
        if credentials && !url.https && !self.insecure_http {
            return Err(HttpError::PlainHttp { url: shown });
        }
        match tokio::time::timeout(self.timeout, self.once(method, url, headers, bearer, body))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                url: shown,
                after: self.timeout,
            }),
        }
    }

    async fn once(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        bearer: Option<&Secret>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, HttpError> {
        let err = |reason: String| HttpError::Connect {
            url: url.to_string(),
            reason,
        };
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(url.path.as_str())
            .header(hyper::header::HOST, url.authority())
            .header(
                hyper::header::USER_AGENT,
                concat!("kiln/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::ACCEPT, "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(token) = bearer {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            );
        }
        let bytes = match body {
            Some((kind, data)) => {
                req = req.header(hyper::header::CONTENT_TYPE, kind);
                Bytes::from(data)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| err(format!("bad request: {e}")))?;
        let resp = if url.https {
            let tls = self
                .tls
                .clone()
                .ok_or_else(|| err("no CA bundle: give the target `ca: FILE`".into()))?;
            let name = match url.host.parse::<std::net::IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| err(e.to_string()))?,
            };
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| err(format!("TLS: {e}")))?;
            send_on(TokioIo::new(stream), req).await
        } else {
            send_on(TokioIo::new(tcp), req).await
        }
        .map_err(err)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok(Reply { status, body })
    }
}

async fn send_on<I>(
    io: I,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}
