//! One HTTP/1.1 exchange at a time over a BMC connection: the request
//! written in one piece, the response read with `httparse` (fixed length,
//! chunked, or to the end of the connection).
//!
//! A BMC takes one request at a time per connection, so a general client
//! connection (a dispatch task, a request channel and its own buffers per
//! connection) buys nothing here, and at 12,500 BMCs in discovery at once
//! those cost about 30 KB each. This keeps only the TLS stream and a read
//! buffer that lives for one response.

use bytes::{Buf as _, Bytes, BytesMut};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Longest response head accepted.
const HEAD_LIMIT: usize = 64 << 10;
/// Most header lines in a response.
const MAX_HEADERS: usize = 96;

/// A whole response.
#[derive(Debug)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body, de-chunked.
    pub body: Bytes,
    /// Whether the connection may carry the next request.
    pub keep_alive: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The peer closed the connection before any byte of a response.
    #[error("the connection was closed before a response")]
    Closed,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The request cannot be written as given.
    #[error("cannot send: {0}")]
    Request(String),
    /// The response is not HTTP/1.1 as it should be.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The body is over the limit.
    #[error("the response body is over {0} bytes")]
    TooLarge(usize),
}

/// Bodies up to this size travel in the request's first write, as one
/// piece with its head.
const INLINE_BODY: usize = 64 << 10;

/// A request body in pieces: one for JSON; for a multipart upload its
/// head, the package, its tail. The pieces are reference-counted, so a
/// package shared by every node's upload is never copied per request.
#[derive(Clone, Debug, Default)]
pub struct Body {
    parts: Vec<Bytes>,
}

impl Body {
    /// A body of these pieces, in order.
    pub fn from_parts(parts: Vec<Bytes>) -> Body {
        Body { parts }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its pieces.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body { parts: vec![b] }
    }
}

/// A request ready to write: its head (with a small body inline), then
/// the pieces of a large body, written in turn and never joined.
#[derive(Debug)]
pub struct Wire {
    head: Vec<u8>,
    rest: Vec<Bytes>,
}

impl Wire {
    /// The bytes in one piece (tests, fuzzing).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        for p in &self.rest {
            out.extend_from_slice(p);
        }
        out
    }
}

/// The bytes of a request. Header values and the path come partly from
/// the BMC (session tokens, ETags, links), so control characters are
/// refused rather than letting a value end a header line.
pub fn encode_request(
    method: &Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &Body,
) -> Result<Wire, H1Error> {
    if path.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(H1Error::Request(format!("invalid path {path:?}")));
    }
    let len = body.len();
    let inline = len <= INLINE_BODY;
    let mut out = Vec::with_capacity(256 + if inline { len } else { 0 });
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f)
        {
            return Err(H1Error::Request(format!("invalid header {name}")));
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if len > 0 || !matches!(*method, Method::GET | Method::HEAD | Method::DELETE) {
        out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if inline {
        for p in body.parts() {
            out.extend_from_slice(p);
        }
        return Ok(Wire {
            head: out,
            rest: Vec::new(),
        });
    }
    Ok(Wire {
        head: out,
        rest: body.parts().to_vec(),
    })
}

/// Writes a request and reads its response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    method: &Method,
    request: &Wire,
    body_limit: usize,
) -> Result<Response, H1Error> {
    io.write_all(&request.head).await?;
    for part in &request.rest {
        io.write_all(part).await?;
    }
    io.flush().await?;
    read_response(io, *method == Method::HEAD, body_limit).await
}

/// Reads more bytes into `buf`; `Ok(0)` at the end of the stream.
async fn fill<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    buf.reserve(4096);
    io.read_buf(buf).await
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    /// Its length in bytes.
    len: usize,
    http10: bool,
}

/// Parses a response head from the start of `buf`: `None` until all of it
/// is there. Kept out of the async reader so httparse's header slots are
/// not part of every request's future (which is moved, and so copied, as
/// it is awaited).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
                .map_err(|e| H1Error::Malformed(e.to_string()))?;
            let mut headers = HeaderMap::with_capacity(parsed.headers.len());
            for h in parsed.headers.iter() {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|e| H1Error::Malformed(format!("header {}: {e}", h.name)))?;
                let value = HeaderValue::from_bytes(h.value)
                    .map_err(|e| H1Error::Malformed(format!("header {}: {e}", h.name)))?;
                headers.append(name, value);
            }
            Ok(Some(Head {
                status,
                headers,
                len,
                http10: parsed.version == Some(0),
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(H1Error::Malformed(e.to_string())),
    }
}

/// Reads one response (skipping interim 1xx ones).
pub async fn read_response<R: AsyncRead + Unpin>(
    io: &mut R,
    head_only: bool,
    body_limit: usize,
) -> Result<Response, H1Error> {
    let mut buf = BytesMut::new();
    loop {
        let Head {
            status,
            headers,
            len: head_len,
            http10,
        } = loop {
            if let Some(head) = parse_head(&buf)? {
                break head;
            }
            if buf.len() > HEAD_LIMIT {
                return Err(H1Error::Malformed(format!(
                    "the head is over {HEAD_LIMIT} bytes"
                )));
            }
            // A BMC that drops a kept-alive connection often skips TLS
            // close_notify: that is a close like any other here.
            let read = match fill(io, &mut buf).await {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                other => other?,
            };
            if read == 0 {
                return Err(if buf.is_empty() {
                    H1Error::Closed
                } else {
                    H1Error::Malformed("the connection closed inside the head".into())
                });
            }
        };
        buf.advance(head_len);
        if status.is_informational() {
            continue;
        }
        let connection = headers
            .get(hyper::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let mut keep_alive = if http10 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };
        let no_body =
            head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let body = if no_body {
            Bytes::new()
        } else if is_chunked(&headers) {
            Bytes::from(read_chunked(io, &mut buf, body_limit).await?)
        } else if let Some(len) = content_length(&headers)? {
            if len > body_limit {
                return Err(H1Error::TooLarge(body_limit));
            }
            while buf.len() < len {
                if fill(io, &mut buf).await? == 0 {
                    return Err(H1Error::Malformed(format!(
                        "the connection closed after {} of {len} body bytes",
                        buf.len()
                    )));
                }
            }
            buf.split_to(len).freeze()
        } else {
            // No length: the body runs to the end of the connection
            // (RFC 9112 §6.3). Many BMCs end such a reply, often an error,
            // by closing TCP without TLS close_notify; curl takes that as
            // the end too, and so does kiln here, where nothing else could
            // mark it. (A cut-short JSON document still fails to parse.)
            keep_alive = false;
            loop {
                match fill(io, &mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
                if buf.len() > body_limit {
                    return Err(H1Error::TooLarge(body_limit));
                }
            }
            buf.split().freeze()
        };
        // Bytes beyond the response mean the two ends disagree on framing.
        if !buf.is_empty() {
            keep_alive = false;
        }
        return Ok(Response {
            status,
            headers,
            body,
            keep_alive,
        });
    }
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

fn content_length(headers: &HeaderMap) -> Result<Option<usize>, H1Error> {
    let mut found: Option<usize> = None;
    for v in headers.get_all(hyper::header::CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or_else(|| H1Error::Malformed("invalid Content-Length".into()))?;
        if found.is_some_and(|f| f != n) {
            return Err(H1Error::Malformed("conflicting Content-Length".into()));
        }
        found = Some(n);
    }
    Ok(found)
}

/// The position just after the next CRLF at or beyond `from`.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i + 2)
}

/// Reads a chunked body; `buf` holds what was read past the head.
async fn read_chunked<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Vec<u8>, H1Error> {
    let mut body = Vec::new();
    let truncated = || H1Error::Malformed("the connection closed inside a chunked body".into());
    loop {
        let end = loop {
            match line_end(buf, 0) {
                Some(end) => break end,
                None if buf.len() > 1024 => {
                    return Err(H1Error::Malformed("a chunk size line is too long".into()));
                }
                None => {
                    if fill(io, buf).await? == 0 {
                        return Err(truncated());
                    }
                }
            }
        };
        let line = std::str::from_utf8(&buf[..end - 2])
            .map_err(|_| H1Error::Malformed("a chunk size is not text".into()))?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| H1Error::Malformed(format!("invalid chunk size {hex:?}")))?;
        buf.advance(end);
        if size == 0 {
            // Trailers, if any, up to an empty line.
            loop {
                match line_end(buf, 0) {
                    Some(2) => {
                        buf.advance(2);
                        return Ok(body);
                    }
                    Some(end) => {
                        buf.advance(end);
                    }
                    None => {
                        if buf.len() > HEAD_LIMIT {
                            return Err(H1Error::Malformed("the trailers are too long".into()));
                        }
                        if fill(io, buf).await? == 0 {
                            return Err(truncated());
                        }
                    }
                }
            }
        }
        // Checked: a size near usize::MAX would wrap the sum in a release
        // build, and the loop below would then buffer until memory ran out.
        if body.len().checked_add(size).is_none_or(|n| n > limit) {
            return Err(H1Error::TooLarge(limit));
        }
        while buf.len() < size + 2 {
            if fill(io, buf).await? == 0 {
                return Err(truncated());
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(H1Error::Malformed("a chunk does not end in CRLF".into()));
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(wire: &[u8]) -> Result<Response, H1Error> {
        let mut io = wire;
        read_response(&mut io, false, 1 << 20).await
    }

    #[tokio::test]
    async fn reads_a_fixed_length_body_and_keeps_the_connection() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"1\"\r\n\r\nhello")
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"hello");
        assert_eq!(r.headers["etag"], "\"1\"");
        assert!(r.keep_alive);
    }

    #[tokio::test]
    async fn reads_chunks_with_extensions_and_trailers() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(&r.body[..], b"Wikipedia");
        assert!(r.keep_alive);
    }

    #[tokio::test]
    async fn skips_interim_responses_and_honours_close() {
        let r = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(r.body.is_empty());
        assert!(!r.keep_alive);
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_end() {
        let r = parse(b"HTTP/1.0 200 OK\r\n\r\n{\"a\":1}").await.unwrap();
        assert_eq!(&r.body[..], b"{\"a\":1}");
        assert!(!r.keep_alive);
    }

    #[tokio::test]
    async fn broken_responses_are_errors_not_panics() {
        assert!(matches!(parse(b"").await, Err(H1Error::Closed)));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le").await,
            Err(H1Error::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").await,
            Err(H1Error::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await,
            Err(H1Error::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab").await,
            Err(H1Error::Malformed(_))
        ));
        // A chunk size that would wrap `len + size`.
        let mut io: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            1\r\na\r\nffffffffffffffff\r\nbbbb";
        assert!(matches!(
            read_response(&mut io, false, 4).await,
            Err(H1Error::TooLarge(4))
        ));
        let mut io: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        assert!(matches!(
            read_response(&mut io, false, 4).await,
            Err(H1Error::TooLarge(4))
        ));
    }

    #[test]
    fn requests_refuse_values_that_would_split_a_header() {
        let ok = encode_request(
            &Method::POST,
            "/redfish/v1/x",
            &[("X-Auth-Token", "t")],
            &Bytes::from_static(b"{}").into(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(ok.to_vec()).unwrap(),
            "POST /redfish/v1/x HTTP/1.1\r\nX-Auth-Token: t\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert!(
            encode_request(
                &Method::GET,
                "/a",
                &[("If-Match", "x\r\nEvil: 1")],
                &Body::default()
            )
            .is_err()
        );
        assert!(encode_request(&Method::GET, "/a b", &[], &Body::default()).is_err());
    }

    /// A large body's pieces follow the head unjoined (the package is not
    /// copied), and the bytes on the wire are those of one piece.
    #[tokio::test]
    async fn large_bodies_are_written_in_their_pieces() {
        let package = Bytes::from(vec![7u8; INLINE_BODY + 1]);
        let body = Body::from_parts(vec![
            Bytes::from_static(b"--b\r\n"),
            package.clone(),
            Bytes::from_static(b"\r\n--b--\r\n"),
        ]);
        let wire = encode_request(&Method::POST, "/up", &[], &body).unwrap();
        assert_eq!(wire.rest.len(), 3);
        assert_eq!(wire.rest[1].as_ptr(), package.as_ptr());
        let head = format!(
            "POST /up HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        assert_eq!(&wire.head, head.as_bytes());
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            // The server answers once it has the whole request.
            let mut got = vec![0u8; head.len() + body.len()];
            server.read_exact(&mut got).await.unwrap();
            server
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            got
        });
        let reply = exchange(&mut client, &Method::POST, &wire, 1024)
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(writer.await.unwrap(), wire.to_vec());
    }
}
