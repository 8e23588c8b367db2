//! Serves one simulated BMC over HTTPS: accept, TLS handshake, HTTP/1.1,
//! each connection in its own task. A BMC with the close-delimited error
//! fault is served by a small HTTP/1.1 loop of its own instead of hyper,
//! which always frames a body by length or chunks.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::sim::redfish::Bmc;

/// Binds the BMC's address now, so callers know it is reachable when this
/// returns, then serves in the background until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    bmc: Arc<Bmc>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {}'s BMC: {e}", bmc.node.name))?;
    let acceptor = TlsAcceptor::from(tls);
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Some(tcp) = super::connection(accepted).await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let bmc = Arc::clone(&bmc);
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if bmc.node.faults.bmc.close_delimited_errors {
                    // Boxed: its read buffer would otherwise be part of
                    // every connection's task, fault or not (10 of the 14
                    // KiB each took; 120 MiB of simulator memory at 12,500
                    // BMCs).
                    tokio::select! {
                        _ = Box::pin(close_delimited::serve(tls, bmc)) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    return;
                }
                let service = service_fn(move |req| Arc::clone(&bmc).handle(req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
        }
    }))
}

/// HTTP/1.1 by hand, so error replies can be framed by closing the
/// connection (RFC 9112 §6.3, rule 8) without TLS `close_notify`.
mod close_delimited {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::{Method, Request};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio_rustls::server::TlsStream;

    use crate::sim::redfish::Bmc;

    /// The most a request head and body may take.
    const REQUEST_LIMIT: usize = 1 << 20;

    /// Answers requests on one connection until the client closes it or an
    /// error reply ends it.
    pub async fn serve(mut tls: TlsStream<TcpStream>, bmc: Arc<Bmc>) {
        let mut buf = Vec::new();
        loop {
            let Some(req) = read_request(&mut tls, &mut buf).await else {
                return;
            };
            let head_only = req.method() == Method::HEAD;
            let Ok(reply) = Arc::clone(&bmc).handle(req).await;
            let (parts, body) = reply.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes());
            let close = parts.status.as_u16() >= 400;
            let mut out = format!(
                "HTTP/1.1 {} {}\r\n",
                parts.status.as_u16(),
                parts.status.canonical_reason().unwrap_or("")
            );
            for (name, value) in &parts.headers {
                if let Ok(v) = value.to_str() {
                    out.push_str(&format!("{name}: {v}\r\n"));
                }
            }
            if close {
                out.push_str("connection: close\r\n\r\n");
            } else {
                out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            }
            let mut bytes = out.into_bytes();
            if !head_only {
                bytes.extend_from_slice(&body);
            }
            if tls.write_all(&bytes).await.is_err() || tls.flush().await.is_err() {
                return;
            }
            if close {
                // Dropped without `shutdown`: TCP closes, no close_notify.
                return;
            }
        }
    }

    /// Reads one request (head, then a `Content-Length` body); `None` when
    /// the client closed or sent something that is not HTTP/1.1.
    async fn read_request(
        tls: &mut TlsStream<TcpStream>,
        buf: &mut Vec<u8>,
    ) -> Option<Request<Full<Bytes>>> {
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed.parse(buf).ok()? {
                let mut builder = Request::builder().method(parsed.method?).uri(parsed.path?);
                let mut length = 0usize;
                for h in parsed.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
                    }
                    builder = builder.header(h.name, h.value);
                }
                if head_len + length > REQUEST_LIMIT {
                    return None;
                }
                while buf.len() < head_len + length {
                    let n = tls.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = Bytes::copy_from_slice(&buf[head_len..head_len + length]);
                buf.drain(..head_len + length);
                return builder.body(Full::new(body)).ok();
            }
            if buf.len() > REQUEST_LIMIT {
                return None;
            }
            let n = tls.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}
