//! The demo's stand-ins for a site's services, on one loopback address:
//!
//! - the cloud: a webhook receiver (`POST /nodes`) that takes each node's
//!   signed acceptance record, checks its signature against the site's
//!   public key (as a real receiver must: it trusts the key, not the laptop
//!   that sent the record), keeps it in a folder and answers 200; a record
//!   that does not verify gets 422;
//! - the site's package mirror (`GET /nvidia/…`): the files of a folder,
//!   laid out as NVIDIA's repository, for the drivers stage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response, StatusCode};

use crate::handoff::sign::{SignedRecord, Verified, verify};

/// The largest record accepted.
const BODY_LIMIT: usize = 8 << 20;

/// A running receiver; it stops when dropped.
pub struct Cloud {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the services on `bind`: records kept in `dir`, signed by the
/// public key `trusted`; the mirror served from `mirror`.
pub async fn start(
    bind: SocketAddr,
    dir: PathBuf,
    trusted: Vec<u8>,
    mirror: PathBuf,
) -> anyhow::Result<Cloud> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} for the demo's cloud"))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new((dir, trusted, mirror));
    let task = tokio::spawn(crate::listen::serve(
        listener,
        crate::listen::Limits::default(),
        move |_peer| {
            let shared = Arc::clone(&shared);
            hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move {
                    let reply = if req.method() == hyper::Method::GET {
                        serve(req.uri().path(), &shared.2)
                    } else {
                        take(req, &shared.0, &shared.1).await
                    };
                    Ok::<_, std::convert::Infallible>(reply)
                }
            })
        },
    ));
    Ok(Cloud { addr, task })
}

fn answer(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r
}

/// A mirror file: `/nvidia/PATH` from the mirror folder.
fn serve(path: &str, mirror: &std::path::Path) -> Response<Full<Bytes>> {
    let Some(rest) = path.strip_prefix("/nvidia/") else {
        return answer(StatusCode::NOT_FOUND, "not found");
    };
    if rest
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return answer(StatusCode::NOT_FOUND, "not found");
    }
    match std::fs::read(mirror.join(rest)) {
        Ok(body) => Response::new(Full::new(Bytes::from(body))),
        Err(_) => answer(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn take(
    req: Request<hyper::body::Incoming>,
    dir: &std::path::Path,
    trusted: &[u8],
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "POST a signed record");
    }
    let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(StatusCode::PAYLOAD_TOO_LARGE, "record too large"),
    };
    let Ok(signed) = serde_json::from_slice::<SignedRecord>(&body) else {
        return answer(StatusCode::BAD_REQUEST, "not a signed acceptance record");
    };
    if let Verified::Invalid(why) = verify(&signed, Some(trusted)) {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("rejected: {why}"),
        );
    }
    let node = signed.record["node"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Node names are host names (the inventory checks them); anything else
    // is not written as a file name.
    if node.is_empty()
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return answer(StatusCode::BAD_REQUEST, "record names no valid node");
    }
    match std::fs::write(dir.join(format!("{node}.json")), &body) {
        Ok(()) => answer(StatusCode::OK, &format!("accepted {node}")),
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
