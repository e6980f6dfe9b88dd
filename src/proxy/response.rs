//! What goes back to the client: bodies, spec errors, headers, byte ranges, file streaming.
//!
//! Owns: the [`Body`] type and its constructors ([`full`], [`empty`], [`ChannelBody`]), the spec
//! error body `{"errors":[{"code","message","detail"}]}` built from an [`ApiError`] or an
//! [`ErrorCode`], the registry headers (`Docker-Distribution-API-Version`,
//! `Docker-Content-Digest`, `OCI-Namespace`), the response shapes of a manifest and of a blob,
//! `Range` parsing, and [`BodyStreamer`] — the one loop that copies stored bytes into a response
//! body, used both for cached blobs and by the verifier for a download in flight — with its
//! blocking twin [`stream_file`] for a cached blob in a local file (same rule, fewer copies).
//!
//! Why one streamer: the "send what is there, stop at a limit, turn a short read or a read error
//! into an aborted body" rule is what keeps a client from completing a download it should not;
//! written twice, the two copies had already drifted in their messages.
//!
//! Does not own: deciding which failure is which ([`super::error`]) or what to serve
//! ([`super::handler`]).

use super::error::{ApiError, ErrorCode};
use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Response body type.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// The sending side of a [`ChannelBody`]; an `Err` aborts the response.
pub type BodySender = mpsc::Sender<Result<Bytes, std::io::Error>>;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");

const CHUNK: usize = 256 * 1024;

/// Chunks queued ahead of hyper per blob body. Two keep the socket fed (one being written, one
/// ready) while bounding a stream's buffered bytes to a few [`CHUNK`]s: 50 concurrent 1 GiB
/// streams must fit the RSS bound of the Limits table, and a deeper queue buys no throughput.
pub const BODY_DEPTH: usize = 2;

/// A body fed by a channel; an `Err` item aborts the response (the connection is reset).
pub struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl ChannelBody {
    /// A body and the sender that feeds it.
    pub fn channel(depth: usize) -> (BodySender, Body) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, ChannelBody(rx).boxed())
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A spec error response.
pub fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code.as_str(), "message": message, "detail": null}]});
    json(status, body.to_string())
}

/// The response for an [`ApiError`] (with the upstream's `Retry-After`, if any).
pub fn api_error(e: &ApiError) -> Response<Body> {
    let mut r = error(e.status, e.code, &e.message);
    if let Some(ra) = &e.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, ra.clone());
    }
    r
}

/// A JSON body with its Content-Type.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Sets `Docker-Content-Digest`.
pub fn set_digest(h: &mut HeaderMap, digest: &str) {
    if let Ok(v) = HeaderValue::from_str(digest) {
        h.insert(DOCKER_CONTENT_DIGEST, v);
    }
}

/// A manifest: its bytes (none for HEAD), Content-Type, digest and length.
pub fn manifest(body: Bytes, media_type: &str, digest: &str, head: bool) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(if head { empty() } else { full(body) });
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    set_digest(h, digest);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// A blob response's headers: octet-stream, the digest, and the length when known.
pub fn blob(body: Body, digest: &str, len: Option<HeaderValue>) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    if let Some(l) = len {
        h.insert(header::CONTENT_LENGTH, l);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    set_digest(h, digest);
    r
}

/// A satisfiable single byte range, `end` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// What a `Range` header asks of a body of some length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, or not a single byte range: the whole body.
    Whole,
    Part(ByteRange),
    Unsatisfiable,
}

/// `Range: bytes=a-b | a- | -n` for a body of `len` bytes.
pub fn parse_range(headers: &HeaderMap, len: u64) -> RangeRequest {
    parse_range_value(headers, len).unwrap_or(RangeRequest::Whole)
}

fn parse_range_value(headers: &HeaderMap, len: u64) -> Option<RangeRequest> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(RangeRequest::Unsatisfiable);
        }
        (len.saturating_sub(n), len)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len
        } else {
            let e: u64 = b.parse().ok()?;
            if e < start {
                return None;
            }
            // Checked: `bytes=0-18446744073709551615` asks for everything, clamped to `len`.
            e.saturating_add(1).min(len)
        };
        (start, end)
    };
    if start >= len || end <= start {
        return Some(RangeRequest::Unsatisfiable);
    }
    Some(RangeRequest::Part(ByteRange { start, end }))
}

/// 416 with `Content-Range: bytes */len`.
pub fn range_not_satisfiable(len: u64) -> Response<Body> {
    let mut r = error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::BlobUnknown,
        "requested range not satisfiable",
    );
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

/// Marks a blob response as the part `range` of `len` bytes (206, `Content-Range`).
pub fn set_partial(r: &mut Response<Body>, range: ByteRange, len: u64) {
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    let last = range.end.saturating_sub(1);
    let spec = format!("bytes {}-{last}/{len}", range.start);
    if let Ok(v) = HeaderValue::from_str(&spec) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
}

/// How far a [`BodyStreamer::send_up_to`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Every byte up to the limit went out.
    Reached,
    /// The reader had no more bytes before the limit (for a growing file: not yet).
    EndOfData,
    /// The client went away, or a read error was sent (the body is aborted); stop.
    Stopped,
}

/// Copies stored bytes into a response body, up to a limit that may grow.
///
/// Why each chunk is read into a fresh buffer that becomes the body chunk: copying out of one
/// reused buffer cost a second memcpy of every byte served (warm GETs are memory-bound), and a
/// chunk handed to hyper cannot be reused until hyper wrote it anyway. Memory per stream stays
/// bounded by the body channel's depth × [`CHUNK`].
pub struct BodyStreamer<R> {
    reader: R,
    pos: u64,
    tx: BodySender,
}

impl<R: AsyncRead + Unpin> BodyStreamer<R> {
    /// `reader` is positioned at byte `pos` of the content.
    pub fn new(reader: R, pos: u64, tx: BodySender) -> BodyStreamer<R> {
        BodyStreamer { reader, pos, tx }
    }

    /// Sends bytes until the content position reaches `limit`.
    pub async fn send_up_to(&mut self, limit: u64) -> Sent {
        while self.pos < limit {
            let left = limit.saturating_sub(self.pos);
            let want = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            let mut buf = BytesMut::with_capacity(want);
            match (&mut self.reader)
                .take(want as u64)
                .read_buf(&mut buf)
                .await
            {
                Ok(0) => return Sent::EndOfData,
                Ok(n) => {
                    self.pos = self.pos.saturating_add(n as u64);
                    if self.tx.send(Ok(buf.freeze())).await.is_err() {
                        return Sent::Stopped;
                    }
                }
                Err(e) => {
                    self.abort(e).await;
                    return Sent::Stopped;
                }
            }
        }
        Sent::Reached
    }

    /// Aborts the body: the client sees a reset, never a complete transfer.
    pub async fn abort(&self, e: std::io::Error) {
        let _ = self.tx.send(Err(e)).await;
    }
}

/// Streams `range` of stored content (the reader is at `range.start`) into `tx`; a short read
/// aborts the body.
pub async fn stream_range<R: AsyncRead + Unpin>(reader: R, range: ByteRange, tx: BodySender) {
    let mut s = BodyStreamer::new(reader, range.start, tx);
    if s.send_up_to(range.end).await == Sent::EndOfData {
        s.abort(std::io::Error::other("cached blob truncated"))
            .await;
    }
}

/// Largest chunk [`stream_file`] reads: big enough that a read and a body frame cost little per
/// byte, small enough that 50 concurrent streams × ([`BODY_DEPTH`] queued + one being read + the
/// one or two hyper is writing) stay within the RSS bound of the Limits table (256 KiB: 73 MiB
/// peak with 50 × 1 GiB).
pub const FILE_CHUNK: usize = 128 * 1024;

/// [`stream_range`] for a local file, blocking: run it on a blocking thread, one per body. Each
/// chunk is read straight into a fresh buffer that becomes the body chunk (no second copy, no
/// thread hop per read); a short read or a read error aborts the body, the client going away
/// ends it.
pub fn stream_file(mut file: std::fs::File, range: ByteRange, tx: BodySender) {
    use std::io::Read;
    let mut pos = range.start;
    while pos < range.end {
        let left = range.end.saturating_sub(pos);
        let want = usize::try_from(left).map_or(FILE_CHUNK, |l| l.min(FILE_CHUNK));
        let mut buf = Vec::with_capacity(want);
        let item = match (&mut file).take(want as u64).read_to_end(&mut buf) {
            Ok(0) => Err(std::io::Error::other("cached blob truncated")),
            Ok(n) => {
                pos = pos.saturating_add(n as u64);
                Ok(Bytes::from(buf))
            }
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let part = |start, end| RangeRequest::Part(ByteRange { start, end });
        let mut h = HeaderMap::new();
        assert_eq!(parse_range(&h, 10), RangeRequest::Whole);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=2-4"));
        assert_eq!(parse_range(&h, 10), part(2, 5));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=7-"));
        assert_eq!(parse_range(&h, 10), part(7, 10));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=-3"));
        assert_eq!(parse_range(&h, 10), part(7, 10));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        assert_eq!(parse_range(&h, 10), RangeRequest::Unsatisfiable);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1,3-4"));
        assert_eq!(parse_range(&h, 10), RangeRequest::Whole);
        h.insert(
            header::RANGE,
            HeaderValue::from_static("bytes=0-18446744073709551615"),
        );
        assert_eq!(parse_range(&h, 10), part(0, 10));
        h.insert(
            header::RANGE,
            HeaderValue::from_static("bytes=18446744073709551615-"),
        );
        assert_eq!(parse_range(&h, 10), RangeRequest::Unsatisfiable);
        h.insert(
            header::RANGE,
            HeaderValue::from_static("bytes=-18446744073709551615"),
        );
        assert_eq!(parse_range(&h, 10), part(0, 10));
    }

    proptest::proptest! {
        /// Any Range value, any length: no panic, and a part is always inside the body.
        #[test]
        fn any_range_is_safe(v in "bytes=[0-9-, ]{0,48}|[ -~]{0,48}", len in proptest::prelude::any::<u64>()) {
            let mut h = HeaderMap::new();
            if let Ok(hv) = HeaderValue::from_str(&v) {
                h.insert(header::RANGE, hv);
            }
            if let RangeRequest::Part(r) = parse_range(&h, len) {
                proptest::prop_assert!(r.start < r.end && r.end <= len);
                let mut resp = Response::new(empty());
                set_partial(&mut resp, r, len);
            }
        }
    }

    #[tokio::test]
    async fn a_short_read_aborts_the_body() {
        let (tx, mut rx) = mpsc::channel(8);
        let data: &[u8] = b"abc";
        stream_range(data, ByteRange { start: 0, end: 5 }, tx).await;
        assert_eq!(
            rx.recv().await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        assert!(rx.recv().await.unwrap().is_err(), "truncation must abort");
    }

    #[tokio::test]
    async fn a_file_streams_its_range_and_a_short_file_aborts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(FILE_CHUNK * 2 + 10)).map(|i| i as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let read = |start: u64, end: u64| {
            let p = p.clone();
            async move {
                let (tx, mut rx) = mpsc::channel(2);
                let mut f = std::fs::File::open(p).unwrap();
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start)).unwrap();
                let range = ByteRange { start, end };
                let t = tokio::task::spawn_blocking(move || stream_file(f, range, tx));
                let (mut got, mut failed) = (Vec::new(), false);
                while let Some(item) = rx.recv().await {
                    match item {
                        Ok(b) => got.extend_from_slice(&b),
                        Err(_) => failed = true,
                    }
                }
                t.await.unwrap();
                (got, failed)
            }
        };
        let (got, failed) = read(5, data.len() as u64).await;
        assert!(!failed);
        assert_eq!(got, &data[5..]);
        let (got, failed) = read(0, data.len() as u64 + 1).await;
        assert!(failed, "a file shorter than the range must abort the body");
        assert_eq!(got, data);
    }
}
