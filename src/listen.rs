//! kiln's own HTTP listeners (the boot server, the demo's cloud): one
//! accept loop with the limits every listener needs, and the bind rule.
//!
//! Without a timer hyper silently skips its header-read timeout, so a
//! client that sends half a request head (or nothing) would hold its
//! connection, a task and a descriptor forever. Here every connection gets
//! a header-read timeout (which, in hyper 1.x, also bounds an idle
//! keep-alive connection waiting for its next request), an idle bound (no
//! byte moved either way: a stalled upload or a reader that stopped
//! reading), and a place under a cap on open connections. Connections
//! beyond the cap *wait* in the kernel's accept queue rather than being
//! refused: BMCs and installers fetching media retry badly, and a slot
//! frees as soon as a held connection finishes or times out.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-listener limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for a request head, from its first read (and for the
    /// next one on a kept-alive connection).
    pub header_read: Duration,
    /// Longest time a connection may move no byte in either direction.
    pub idle: Duration,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read: Duration::from_secs(30),
            // Generous: a BMC streaming virtual media may stop reading
            // while the host's installer works, and must not be cut off.
            idle: Duration::from_secs(600),
            // A large rack's BMCs and installers at once, well under the
            // descriptor limit `fdlimit::raise` gets.
            max_connections: 1024,
        }
    }
}

/// The bind rule shared by `kiln serve`, `kiln image deploy` and `kiln
/// provision`: a server bound to every address (`0.0.0.0`, `::`) cannot
/// tell nodes which address reaches it, so `--advertise` must say.
pub fn check_bind(bind: SocketAddr, advertise: Option<&str>) -> Result<(), String> {
    if bind.ip().is_unspecified() && advertise.is_none_or(|a| a.trim().is_empty()) {
        return Err(format!(
            "the boot server would listen on every address ({bind}); say which one nodes \
             reach with --advertise http://ADDR:{} (or --bind ADDR:PORT)",
            bind.port()
        ));
    }
    Ok(())
}

/// Accepts connections on `listener` forever, serving each over HTTP/1.1
/// with the service `make(peer)` under `limits`.
pub async fn serve<F, S>(listener: tokio::net::TcpListener, limits: Limits, mut make: F)
where
    F: FnMut(SocketAddr) -> S,
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        // Take a slot before accepting: past the cap, clients queue in
        // the kernel instead of costing a task and a descriptor here.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                crate::fdlimit::accept_failed(&e).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = make(peer);
        tokio::spawn(async move {
            let _slot = slot;
            let last = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let io = Tracked {
                inner: tcp,
                start,
                last: Arc::clone(&last),
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .serve_connection(TokioIo::new(io), service);
            // Dropping the connection on the idle bound closes the socket.
            tokio::select! {
                _ = conn => {}
                () = idle(start, &last, limits.idle) => {}
            }
        });
    }
}

/// Returns once `bound` has passed with no byte moved.
async fn idle(start: Instant, last: &AtomicU64, bound: Duration) {
    loop {
        let moved = start + Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = moved + bound;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A stream that notes when it last moved a byte (milliseconds since
/// `start`).
struct Tracked<T> {
    inner: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Tracked<T> {
    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_bind_needs_advertise() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let any6: SocketAddr = "[::]:8080".parse().unwrap();
        let one: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert!(check_bind(any, None).is_err());
        assert!(check_bind(any6, None).is_err());
        assert!(check_bind(any, Some(" ")).is_err());
        assert!(check_bind(any, Some("http://10.0.0.1:8080")).is_ok());
        assert!(check_bind(one, None).is_ok());
    }
}
