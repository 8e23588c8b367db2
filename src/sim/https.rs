//! Serves one simulated BMC over HTTPS: accept, TLS handshake, HTTP/1.1,
//! each connection in its own task.

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
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    crate::fdlimit::accept_failed(&e).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let bmc = Arc::clone(&bmc);
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
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
