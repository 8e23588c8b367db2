//! The simulated BMC's and installer's own HTTP client: plain `http://`
//! GETs, as a BMC fetching virtual media or an installer reading its seed
//! does. Bounded in size and time; bodies are streamed, never held whole
//! unless the caller asks for a small document.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;

/// Why a fetch failed, worded like a BMC's or installer's log line.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not an `http://` URL with a host.
    #[error("unsupported URL `{0}` (the simulator fetches http:// URLs)")]
    BadUrl(String),
    /// Connecting or reading failed.
    #[error("{url}: {reason}")]
    Io {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body was larger than allowed.
    #[error("{url}: larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Streams the body of `url` through `visit`, chunk by chunk, up to `limit`
/// bytes. Returns the number of bytes read.
pub async fn stream(
    url: &str,
    limit: u64,
    mut visit: impl FnMut(&[u8]),
) -> Result<u64, FetchError> {
    let mut total = 0u64;
    exchange(url, Outgoing::Get, |data| {
        total += data.len() as u64;
        if total > limit {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        visit(data);
        Ok(())
    })
    .await?;
    Ok(total)
}

/// POSTs a small form (cloud-init's phone_home); the status must be 2xx.
pub async fn post_form(url: &str, body: String) -> Result<(), FetchError> {
    post(url, "application/x-www-form-urlencoded", body)
        .await
        .map(drop)
}

/// The most of a POST's answer kept (the deploy agent's plan is a few
/// lines).
const ANSWER_LIMIT: usize = 64 << 10;

/// POSTs a small body; the status must be 2xx. Returns the answer's text
/// (at most 64 KiB of it).
pub async fn post(url: &str, content_type: &str, body: String) -> Result<String, FetchError> {
    let mut answer = Vec::new();
    exchange(url, Outgoing::Post { content_type, body }, |data| {
        let room = ANSWER_LIMIT.saturating_sub(answer.len());
        answer.extend_from_slice(&data[..data.len().min(room)]);
        Ok(())
    })
    .await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// What a request sends.
enum Outgoing<'a> {
    /// A GET, as a BMC or installer fetching a file.
    Get,
    /// A POST of a small body, as cloud-init's phone_home.
    Post {
        /// Its `Content-Type`.
        content_type: &'a str,
        /// The body.
        body: String,
    },
}

/// Sends one request over a fresh connection (within [`TIMEOUT`]); a 2xx
/// answer's body goes through `visit` frame by frame.
async fn exchange(
    url: &str,
    outgoing: Outgoing<'_>,
    mut visit: impl FnMut(&[u8]) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let io = |reason: String| FetchError::Io {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| FetchError::BadUrl(url.to_owned()))?;
    if uri.scheme_str() != Some("http") {
        return Err(FetchError::BadUrl(url.to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| FetchError::BadUrl(url.to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| io(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| io(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let req = match outgoing {
            Outgoing::Get => hyper::Request::get(path)
                .header(hyper::header::USER_AGENT, "kiln-sim")
                .body(Full::new(Bytes::new())),
            Outgoing::Post { content_type, body } => hyper::Request::post(path)
                .header(hyper::header::USER_AGENT, "Cloud-Init/24.1 (kiln-sim)")
                .header(hyper::header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(body))),
        };
        let mut req = req.map_err(|e| io(e.to_string()))?;
        let authority = authority
            .parse()
            .map_err(|_| FetchError::BadUrl(url.to_owned()))?;
        req.headers_mut().insert(hyper::header::HOST, authority);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| io(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
            });
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| io(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                visit(data)?;
            }
        }
        Ok(())
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| io("timed out".into()))?
}

/// Fetches a small document whole.
pub async fn text(url: &str, limit: u64) -> Result<String, FetchError> {
    let mut buf = Vec::new();
    stream(url, limit, |chunk| buf.extend_from_slice(chunk)).await?;
    String::from_utf8(buf).map_err(|_| FetchError::Io {
        url: url.to_owned(),
        reason: "not UTF-8 text".into(),
    })
}

/// Finds the NoCloud seed URL an installer image boots with, the way a real
/// installer's boot menu passes it on the kernel command line:
/// `ds=nocloud;s=http://…/` (grub escapes the `;` as `\;`; `nocloud-net`
/// is the older spelling). Scans a stream chunk by chunk.
#[derive(Default)]
pub struct SeedScanner {
    tail: Vec<u8>,
    found: Option<String>,
}

const NEEDLES: [&[u8]; 2] = [b"ds=nocloud-net", b"ds=nocloud"];

impl SeedScanner {
    /// Feeds the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.found.is_some() {
            return;
        }
        // Keep a window big enough to hold a whole kernel argument that
        // straddles two chunks.
        self.tail.extend_from_slice(chunk);
        if let Some(url) = find_seed(&self.tail) {
            self.found = Some(url);
            return;
        }
        let keep = 2048.min(self.tail.len());
        let cut = self.tail.len() - keep;
        self.tail.drain(..cut);
    }

    /// The seed URL, once seen.
    pub fn finish(self) -> Option<String> {
        self.found
    }
}

fn find_seed(hay: &[u8]) -> Option<String> {
    // kiln's deploy environment: `kiln.url=http://…/agent/TOKEN` (reported
    // as `agent:URL`).
    if let Some(at) = find(hay, b"kiln.url=") {
        let rest = &hay[at + b"kiln.url=".len()..];
        let end = rest
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'"' || *b == b'\'' || *b == 0)?;
        let url = String::from_utf8_lossy(&rest[..end]).into_owned();
        if url.starts_with("http://") {
            return Some(format!("agent:{url}"));
        }
    }
    // Anaconda's kickstart: `inst.ks=http://…` (reported as `ks:URL`).
    if let Some(at) = find(hay, b"inst.ks=") {
        let rest = &hay[at + b"inst.ks=".len()..];
        let end = rest
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'"' || *b == b'\'' || *b == 0)?;
        let url = String::from_utf8_lossy(&rest[..end]).into_owned();
        if url.starts_with("http://") || url.starts_with("https://") {
            return Some(format!("ks:{url}"));
        }
    }
    for needle in NEEDLES {
        let mut from = 0;
        while let Some(at) = find(&hay[from..], needle) {
            let start = from + at + needle.len();
            let rest = &hay[start..];
            // The argument ends at whitespace, a quote or a line end; it may
            // be cut at the window's end, in which case wait for more.
            let end = rest
                .iter()
                .position(|b| b.is_ascii_whitespace() || *b == b'"' || *b == b'\'' || *b == 0)?;
            let arg = String::from_utf8_lossy(&rest[..end]).replace("\\;", ";");
            if let Some(url) = arg.split(';').find_map(|p| p.strip_prefix("s="))
                && (url.starts_with("http://") || url.starts_with("https://"))
            {
                return Some(url.to_owned());
            }
            from = start;
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_found_in_a_grub_line_split_across_chunks() {
        let cfg = b"menuentry 'Install' {\n linux /casper/vmlinuz autoinstall ds=nocloud\\;s=http://127.0.0.1:8080/seed/n1/ ---\n}";
        let mut s = SeedScanner::default();
        for chunk in cfg.chunks(7) {
            s.feed(chunk);
        }
        assert_eq!(
            s.finish().as_deref(),
            Some("http://127.0.0.1:8080/seed/n1/")
        );
    }

    #[test]
    fn no_seed_no_url() {
        let mut s = SeedScanner::default();
        s.feed(b"just an ISO with ds=nocloud but no source\n");
        assert_eq!(s.finish(), None);
    }
}
