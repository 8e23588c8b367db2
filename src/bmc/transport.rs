//! HTTPS to one BMC: pooled keep-alive connections, connect and request
//! timeouts, retries with backoff that honour `Retry-After` (503, 429) and
//! connection failures, a cap on requests in flight (BMCs fall over under
//! parallel load), and a circuit breaker so a dead BMC fails fast instead
//! of holding up a whole rack.
//!
//! A POST or PATCH that may have reached the BMC (written, then no answer
//! or a broken one) is never sent again here: a repeated Reset reboots a
//! node twice, a repeated session POST leaks a session. Those are retried
//! only when nothing was sent (the connection could not be made) or the
//! BMC answered 503/429 (it did not act); callers that must know read the
//! state back before asking again (`ops.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;

use crate::bmc::h1;

/// How patient a transport is.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// One request, from sending to the whole body read.
    pub request_timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubles per attempt, with jitter.
    pub backoff: Duration,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Requests in flight at once to this BMC.
    pub max_in_flight: usize,
    /// Consecutive failures that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast.
    pub breaker_cooldown: Duration,
}

/// The slowest a BMC is expected to take a request body, bytes a second:
/// a firmware package of hundreds of MiB takes minutes on some BMCs, and
/// the request timeout alone is sized for Redfish documents.
pub const UPLOAD_FLOOR: u64 = 1 << 20;

/// The time a body of `len` bytes may take on top of the request timeout.
pub fn upload_time(len: usize) -> Duration {
    Duration::from_secs(len as u64 / UPLOAD_FLOOR)
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(60),
            max_in_flight: 1,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// Why a request failed; every variant names the BMC.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TCP or TLS could not be established.
    #[error("{bmc}: cannot connect: {reason}")]
    Connect {
        /// BMC address.
        bmc: String,
        /// What failed.
        reason: String,
    },
    /// The certificate is not the trusted one; never retried.
    #[error("{bmc}: certificate not trusted: {reason}")]
    Untrusted {
        /// BMC address.
        bmc: String,
        /// Why (fingerprints).
        reason: String,
    },
    /// No answer in time.
    #[error("{bmc}: no answer to {method} {path} within {secs} s")]
    Timeout {
        /// BMC address.
        bmc: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// The timeout.
        secs: u64,
    },
    /// The connection broke mid-request.
    #[error("{bmc}: {method} {path}: {reason}")]
    Io {
        /// BMC address.
        bmc: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// What happened.
        reason: String,
    },
    /// The answer is over the size kiln reads; never retried.
    #[error("{bmc}: {method} {path}: the answer is over {limit} bytes")]
    TooLarge {
        /// BMC address.
        bmc: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// Too many recent failures: not trying for a while.
    #[error("{bmc}: not answering ({failures} failures in a row); not retrying for {secs} s")]
    CircuitOpen {
        /// BMC address.
        bmc: String,
        /// Consecutive failures.
        failures: u32,
        /// Seconds until the next try.
        secs: u64,
    },
}

impl TransportError {
    /// Whether the request certainly never reached the BMC (nothing was
    /// written), so any method may be sent again.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::Untrusted { .. }
                | TransportError::CircuitOpen { .. }
        )
    }
}

/// Whether sending `method` twice has the effect of sending it once
/// (RFC 9110 §9.2.2). Redfish's POST (actions, sessions) and PATCH are not.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// A response, body read whole (Redfish documents are small).
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Connections to one BMC.
pub struct Transport {
    /// `host:port`, for messages.
    pub bmc: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    options: TransportOptions,
    /// Boxed: a TLS stream is over a kilobyte, and every request's future
    /// (moved, so copied, as it is awaited) would otherwise hold it inline.
    #[allow(clippy::vec_box, reason = "a stream leaves the pool for each request")]
    idle: Mutex<Vec<Box<TlsStream<TcpStream>>>>,
    gate: Semaphore,
    breaker: Mutex<Breaker>,
    /// Requests written to the BMC, retries and replays included.
    sent: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("bmc", &self.bmc)
            .finish_non_exhaustive()
    }
}

/// The largest answer read. A Redfish resource is a few kilobytes (the
/// largest of the ten vendor mockups is under 100 KB, and kiln asks for no
/// `$expand`); parsed into JSON values a body takes several times its size
/// in memory, per BMC, and any BMC may be hostile.
pub const BODY_LIMIT: usize = 4 << 20;

impl Transport {
    /// A transport to `host:port` trusting per `tls`.
    pub fn new(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        options: TransportOptions,
    ) -> Transport {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Transport {
            bmc: if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            host,
            port,
            tls,
            gate: Semaphore::new(options.max_in_flight.max(1)),
            options,
            idle: Mutex::new(Vec::new()),
            breaker: Mutex::new(Breaker::default()),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many requests were written to the BMC so far (every attempt,
    /// retries included), for counting what each step costs the BMC.
    pub fn requests(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the kept-alive connections. A node whose BMC work is done
    /// (or that waits a long time for its rack's power-on wave) should not
    /// hold a TLS connection: at 12,500 nodes they add up. The next
    /// request connects again.
    pub fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connect(&self) -> Result<Box<TlsStream<TcpStream>>, TransportError> {
        let connect =
            async {
                let tcp = TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| TransportError::Connect {
                        bmc: self.bmc.clone(),
                        reason: e.to_string(),
                    })?;
                let _ = tcp.set_nodelay(true);
                let name =
                    match self.host.parse::<std::net::IpAddr>() {
                        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                        Err(_) => rustls::pki_types::ServerName::try_from(self.host.clone())
                            .map_err(|e| TransportError::Connect {
                                bmc: self.bmc.clone(),
                                reason: e.to_string(),
                            })?,
                    };
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        let reason = e.to_string();
                        if reason.contains("certificate") || reason.contains("fingerprint") {
                            TransportError::Untrusted {
                                bmc: self.bmc.clone(),
                                reason,
                            }
                        } else {
                            TransportError::Connect {
                                bmc: self.bmc.clone(),
                                reason,
                            }
                        }
                    })?;
                Ok(Box::new(tls))
            };
        tokio::time::timeout(self.options.connect_timeout, connect)
            .await
            .map_err(|_| TransportError::Connect {
                bmc: self.bmc.clone(),
                reason: format!(
                    "timed out after {} s",
                    self.options.connect_timeout.as_secs()
                ),
            })?
    }

    /// Sends one request, retrying what is worth retrying.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<h1::Body>,
    ) -> Result<Reply, TransportError> {
        {
            let b = self.breaker();
            if let Some(until) = b.open_until {
                let now = Instant::now();
                if now < until {
                    return Err(TransportError::CircuitOpen {
                        bmc: self.bmc.clone(),
                        failures: b.failures,
                        secs: (until - now).as_secs().max(1),
                    });
                }
            }
        }
        let _permit = self.gate.acquire().await.map_err(|_| TransportError::Io {
            bmc: self.bmc.clone(),
            method: method.to_string(),
            path: path.to_owned(),
            reason: "transport closed".into(),
        })?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.once(&method, path, headers, body.clone()).await;
            let wait = match &result {
                // The BMC says it did not act: safe for any method.
                Ok(reply) if matches!(reply.status.as_u16(), 503 | 429) => {
                    Some(retry_after(&reply.headers))
                }
                Ok(_) => None,
                Err(TransportError::Untrusted { .. } | TransportError::TooLarge { .. }) => None,
                Err(e) if e.not_sent() || idempotent(&method) => Some(None),
                Err(e) => {
                    tracing::debug!(bmc = %self.bmc, %method, path, "not sending again: it may have reached the BMC ({e})");
                    None
                }
            };
            let last = attempt >= self.options.attempts;
            match (wait, last) {
                (Some(after), false) => {
                    let backoff = self.options.backoff * 2u32.saturating_pow(attempt - 1);
                    let pause = after
                        .map(|a| a.min(self.options.max_retry_after))
                        .unwrap_or_else(|| jitter(backoff, attempt));
                    tracing::debug!(bmc = %self.bmc, %method, path, attempt, "retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                }
                _ => {
                    self.record(&result);
                    return result;
                }
            }
        }
    }

    fn record(&self, result: &Result<Reply, TransportError>) {
        let mut b = self.breaker();
        let failed = match result {
            Ok(r) => matches!(r.status.as_u16(), 503 | 429),
            Err(_) => true,
        };
        if failed {
            b.failures += 1;
            if b.failures >= self.options.breaker_threshold {
                b.open_until = Some(Instant::now() + self.options.breaker_cooldown);
            }
        } else {
            *b = Breaker::default();
        }
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<h1::Body>,
    ) -> Result<Reply, TransportError> {
        let io = |reason: String| TransportError::Io {
            bmc: self.bmc.clone(),
            method: method.to_string(),
            path: path.to_owned(),
            reason,
        };
        let host = self.bmc.as_str();
        let agent = concat!("kiln/", env!("CARGO_PKG_VERSION"));
        let mut all: Vec<(&str, &str)> = vec![
            ("Host", host),
            ("Accept", "application/json"),
            ("OData-Version", "4.0"),
            ("User-Agent", agent),
        ];
        // JSON unless the caller names its own type (a multipart upload).
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !typed {
            all.push(("Content-Type", "application/json"));
        }
        all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
        let body = body.unwrap_or_default();
        let wire = h1::encode_request(method, path, &all, &body).map_err(|e| io(e.to_string()))?;
        // An upload is given time for its bytes on top of the answer's.
        let limit = self.options.request_timeout + upload_time(body.len());
        // Set once the first byte of the request may have left: a timeout
        // before that (a slow connect) is a failure to connect.
        let sent = std::sync::atomic::AtomicBool::new(false);
        let exchange = async {
            // A kept-alive connection the BMC has closed meanwhile is found
            // before use where possible; one found closed only when the
            // request gets no answer at all is replaced once, for methods
            // that are safe to send again.
            let mut pooled = self.pooled();
            loop {
                let reused = pooled.is_some();
                let mut stream = match pooled.take() {
                    Some(s) => s,
                    // Boxed: the handshake's state is kilobytes, and kept
                    // inline it would be copied with every request's future.
                    None => Box::pin(self.connect()).await?,
                };
                sent.store(true, std::sync::atomic::Ordering::Relaxed);
                self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match h1::exchange(&mut stream, method, &wire, BODY_LIMIT).await {
                    Ok(reply) => return Ok((stream, reply)),
                    Err(h1::H1Error::Closed)
                        if reused && matches!(*method, Method::GET | Method::HEAD) =>
                    {
                        continue;
                    }
                    Err(h1::H1Error::TooLarge(limit)) => {
                        return Err(TransportError::TooLarge {
                            bmc: self.bmc.clone(),
                            method: method.to_string(),
                            path: path.to_owned(),
                            limit,
                        });
                    }
                    Err(e) => return Err(io(e.to_string())),
                }
            }
        };
        let (stream, reply) = tokio::time::timeout(limit, exchange).await.map_err(|_| {
            if sent.load(std::sync::atomic::Ordering::Relaxed) {
                TransportError::Timeout {
                    bmc: self.bmc.clone(),
                    method: method.to_string(),
                    path: path.to_owned(),
                    secs: limit.as_secs(),
                }
            } else {
                TransportError::Connect {
                    bmc: self.bmc.clone(),
                    reason: format!("timed out after {} s", limit.as_secs()),
                }
            }
        })??;
        // Keep the connection for the next request unless it must close.
        if reply.keep_alive {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(stream);
        }
        Ok(Reply {
            status: reply.status,
            headers: reply.headers,
            body: reply.body,
        })
    }

    /// A kept-alive connection that still looks open: nothing may be
    /// waiting on an idle one, so readable data (a close, an alert) or an
    /// error means the BMC has let it go.
    fn pooled(&self) -> Option<Box<TlsStream<TcpStream>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(stream) = idle.pop() {
            let mut probe = [0u8; 1];
            match stream.get_ref().0.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(stream),
                _ => continue,
            }
        }
        None
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Up to +50%, varying per attempt and per process, so a rack of BMCs
/// answering 503 together is not retried in lockstep.
fn jitter(base: Duration, attempt: u32) -> Duration {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ attempt.wrapping_mul(0x9e37_79b9);
    base + base.mul_f64(f64::from(seed % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut h = HeaderMap::new();
        h.insert(hyper::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            hyper::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn jitter_stays_within_half_again() {
        for attempt in 1..20 {
            let d = jitter(Duration::from_millis(100), attempt);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(150));
        }
    }
}
