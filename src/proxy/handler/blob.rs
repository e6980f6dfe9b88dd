//! Blobs: from the cache, or through one verified download.
//!
//! Owns: `GET|HEAD /v2/<name>/blobs/<digest>` — a cached blob (from this registry, and confirmed
//! for this repository and these credentials: [`super::authz`]; else it is a miss) is served from the store with `Range` → 206; a `HEAD` miss answers from a running download's
//! announced length, else asks the upstream (no download to answer a HEAD); a `GET` miss joins
//! the single-flight download ([`crate::proxy::verify`]) and streams from it — a `Range` too
//! (206 from the growing staging file, the blob's last byte still held until verified) — or,
//! when the upstream gave no length and the request is a `Range` or comes from an HTTP/1.0
//! client, waits for the verified blob and serves it from the store.
//!
//! Why a `Range` without a known length waits: `bytes=-N` and unsatisfiable ranges cannot be
//! resolved before the length is known, and a 206 needs `Content-Range: …/len`.
//!
//! Why HTTP/1.0 waits: without a `Content-Length` the body is close-delimited, and a client of
//! HTTP/1.0 (nginx talks it to backends by default) cannot tell the abort on a digest mismatch
//! from a normal end — it would keep a complete-looking wrong blob.
//!
//! With fleet peers ([`crate::proxy::peer`]) a `GET` miss first confirms the repository upstream
//! with this member's credentials (as a hit does: no member serves content its own credentials
//! could not get), then joins a download whose plan takes the bytes from the digest's owner.
//! [`get_for_peer`] answers another member: the same steps, but never forwarded again, and
//! `cached_only` answers a miss with 404 instead of downloading.
//!
//! Does not own: downloading and verifying ([`crate::proxy::verify`]) or copying bytes into the
//! body ([`crate::proxy::response::BodyStreamer`]).

use super::authz::{ensure_confirmed, from_origin};
use super::{CacheResult, mark, only_sha256};
use crate::proxy::cache::sha256_hex;
use crate::proxy::error::{ApiError, ErrorCode};
use crate::proxy::peer::Plan;
use crate::proxy::response::{
    self, Body, ByteRange, ChannelBody, RangeRequest, api_error, empty, parse_range,
    range_not_satisfiable, set_partial, stream_file, stream_range,
};
use crate::proxy::route::Route;
use crate::proxy::state::ProxyState;
use crate::proxy::store::{ContentKind, ContentStore};
use crate::proxy::verify::{Flight, State, first_state, open_flight, stream_flight};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use std::sync::Arc;
use tokio::sync::watch;

pub async fn get(
    state: &ProxyState,
    route: &Route,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
    h10: bool,
) -> Response<Body> {
    serve(state, route, digest, headers, head, h10, Asker::Client).await
}

/// Who asks for the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asker {
    Client,
    /// Another fleet member; `cached_only`: a miss is a 404, no download.
    Peer {
        cached_only: bool,
    },
}

/// A blob for another fleet member (the peer endpoint, authenticated by the caller).
pub async fn get_for_peer(
    state: &ProxyState,
    route: &Route,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
    cached_only: bool,
) -> Response<Body> {
    serve(
        state,
        route,
        digest,
        headers,
        head,
        false,
        Asker::Peer { cached_only },
    )
    .await
}

async fn serve(
    state: &ProxyState,
    route: &Route,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
    h10: bool,
    asker: Asker,
) -> Response<Body> {
    let Some(hex) = sha256_hex(digest) else {
        return only_sha256();
    };
    let what = format!("blob {digest}");
    // Bytes another registry served are not this registry's answer: a miss here.
    let cached = match state.cache.blob_len(hex).await {
        Some(len) if from_origin(state, route, digest).await => Some(len),
        _ => None,
    };
    if let Some(len) = cached {
        if let Err(r) = ensure_confirmed(state, route, digest, ContentKind::Blob, &what).await {
            return r;
        }
        state.metrics.cache_hit(ContentKind::Blob);
        let r = from_store(state, hex, digest, len, headers, head).await;
        return mark(r, CacheResult::Hit);
    }
    if asker == (Asker::Peer { cached_only: true }) {
        let m = format!("blob {digest} is not cached on this member");
        return response::error(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, &m);
    }
    state.metrics.cache_miss(ContentKind::Blob);
    if head {
        return mark(head_cold(state, route, digest).await, CacheResult::Miss);
    }
    join_flight(state, route, hex, digest, headers, h10, asker).await
}

/// A stored blob, whole or the requested range.
async fn from_store(
    state: &ProxyState,
    hex: &str,
    digest: &str,
    len: u64,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    state.cache.store().touch(ContentKind::Blob, hex).await;
    let part = match parse_range(headers, len) {
        RangeRequest::Whole => None,
        RangeRequest::Part(r) => Some(r),
        RangeRequest::Unsatisfiable => return range_not_satisfiable(len),
    };
    let span = part.unwrap_or(ByteRange { start: 0, end: len });
    let body = if head {
        empty()
    } else {
        stored_body(state, hex, span)
    };
    let length = HeaderValue::from(span.end - span.start);
    let mut r = response::blob(body, digest, Some(length));
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(p) = part {
        set_partial(&mut r, p, len);
    }
    r
}

/// A body streaming `span` of the stored blob (a failure to open it aborts the body).
fn stored_body(state: &ProxyState, hex: &str, span: ByteRange) -> Body {
    let (tx, body) = ChannelBody::channel(response::BODY_DEPTH);
    let cache = state.cache.clone();
    let hex = hex.to_owned();
    // Pinned before the task starts: the entry cannot be evicted between the hit and the open.
    let pin = cache.pin(&hex);
    tokio::spawn(async move {
        let _pin = pin;
        let local = cache.store().open_file(ContentKind::Blob, &hex, span.start);
        if let Ok(Some(stored)) = local.await {
            // One blocking thread per body, reading big chunks (see `response::stream_file`).
            let streamed =
                tokio::task::spawn_blocking(move || stream_file(stored.reader, span, tx));
            let _ = streamed.await;
            return;
        }
        let why = match cache.open_blob(&hex, span.start).await {
            Ok(Some(stored)) => return stream_range(stored.reader, span, tx).await,
            Ok(None) => "cached blob vanished".to_owned(),
            Err(e) => e.to_string(),
        };
        let _ = tx.send(Err(std::io::Error::other(why))).await;
    });
    body
}

/// `HEAD` on a miss: the length a running download announced (no upstream round trip, no
/// wait), else the upstream's answer.
async fn head_cold(state: &ProxyState, route: &Route, digest: &str) -> Response<Body> {
    let running = state.flights.get(&route.upstream, digest);
    let Some(total) = running.and_then(|f| f.total()) else {
        return head_upstream(state, route, digest).await;
    };
    // Learning of another repository's download needs the same confirmation as a hit.
    let what = format!("blob {digest}");
    if let Err(r) = ensure_confirmed(state, route, digest, ContentKind::Blob, &what).await {
        return r;
    }
    let mut r = response::blob(empty(), digest, Some(HeaderValue::from(total)));
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

/// `HEAD` on a miss: ask the upstream rather than download.
async fn head_upstream(state: &ProxyState, route: &Route, digest: &str) -> Response<Body> {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let path = format!("{}/blobs/{digest}", route.repo);
    let sent = state
        .client
        .send(&route.upstream, &route.repo, Method::HEAD, &path, &h)
        .await;
    match sent {
        Ok(r) if r.status() == StatusCode::OK => {
            let len = r.headers().get(header::CONTENT_LENGTH).cloned();
            response::blob(empty(), digest, len)
        }
        Ok(r) => {
            let what = format!("blob {digest}");
            let unknown = ErrorCode::BlobUnknown;
            api_error(&ApiError::from_status(
                r.status(),
                r.headers(),
                unknown,
                &what,
            ))
        }
        Err(e) => api_error(&ApiError::from(e)),
    }
}

/// Where the download takes its bytes from, and whether one is already running; the
/// confirmation it needs first.
async fn plan_and_confirm(
    state: &ProxyState,
    route: &Route,
    hex: &str,
    digest: &str,
    asker: Asker,
) -> Result<(Plan, bool), Response<Body>> {
    let plan = match &state.peers {
        Some(p) => p.plan(hex, asker != Asker::Client),
        None => Plan::upstream(),
    };
    // Joining a download another repository started needs the same confirmation as a hit; so
    // does a client's download whose bytes may come from another member (our credentials would
    // never be used). A peer's request was confirmed by that peer with its own credentials.
    let from_members = asker == Asker::Client && plan.uses_members();
    let joined = state.flights.running(&route.upstream, digest);
    if joined || from_members {
        let what = format!("blob {digest}");
        ensure_confirmed(state, route, digest, ContentKind::Blob, &what).await?;
    }
    Ok((plan, joined))
}

/// A `GET` miss: join (or start) the verified download.
async fn join_flight(
    state: &ProxyState,
    route: &Route,
    hex: &str,
    digest: &str,
    headers: &HeaderMap,
    h10: bool,
    asker: Asker,
) -> Response<Body> {
    let (plan, joined) = match plan_and_confirm(state, route, hex, digest, asker).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Held until the response is built: what the download commits is not evicted (or, on a
    // low disk, dropped) before this request opened it.
    let pin = state.cache.pin(hex);
    let result = if joined {
        CacheResult::Coalesced
    } else {
        CacheResult::Miss
    };
    let ctx = state.flight_ctx();
    let flight = state
        .flights
        .join_planned(&ctx, &route.upstream, &route.repo, hex, digest, plan);
    let mut rx = flight.subscribe();
    let mut progress = first_state(&mut rx).await;
    let unknown_length = matches!(progress, State::Streaming { total: None, .. });
    if unknown_length && (h10 || headers.contains_key(header::RANGE)) {
        // Served from the verified blob: wait for the download to finish.
        while matches!(progress, State::Streaming { .. } | State::Starting) {
            if rx.changed().await.is_err() {
                break;
            }
            progress = rx.borrow_and_update().clone();
        }
    }
    let r = match progress {
        State::Failed(f) => api_error(&f),
        // Verified but, with a bucket, maybe still committing (the flight stays registered
        // until then): the flight's file, not the store, which may not hold it yet.
        State::Done { len } => stream_cold(flight, rx, pin, digest, headers, Some(len)).await,
        State::Starting => response::error(
            StatusCode::BAD_GATEWAY,
            ErrorCode::Unknown,
            "blob download ended without a result",
        ),
        State::Streaming { total, .. } => {
            stream_cold(flight, rx, pin, digest, headers, total).await
        }
    };
    mark(r, result)
}

/// The response streaming from a running download: the whole blob, or (with a known length —
/// else the range waited for the verified blob) the requested part as a 206. The bytes are
/// opened before the status is decided: a blob that cannot be read is a 502, not a 200 whose
/// body aborts.
async fn stream_cold(
    flight: Arc<Flight>,
    rx: watch::Receiver<State>,
    pin: crate::proxy::cache::Pin,
    digest: &str,
    headers: &HeaderMap,
    total: Option<u64>,
) -> Response<Body> {
    let part = match total.map(|t| (t, parse_range(headers, t))) {
        Some((t, RangeRequest::Unsatisfiable)) => return range_not_satisfiable(t),
        Some((_, RangeRequest::Part(p))) => Some(p),
        Some((_, RangeRequest::Whole)) | None => None,
    };
    let file = match open_flight(&flight, part.map_or(0, |p| p.start)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(digest, "cold blob unreadable: {e}");
            let m = format!("blob {digest} is unavailable; retry");
            return response::error(StatusCode::BAD_GATEWAY, ErrorCode::BlobUnknown, &m);
        }
    };
    let (tx, body) = ChannelBody::channel(response::BODY_DEPTH);
    let streamed = stream_flight(flight, rx, tx, part, file);
    tokio::spawn(async move {
        let _pin = pin;
        streamed.await
    });
    let length = part.map(|p| p.end.saturating_sub(p.start)).or(total);
    let mut r = response::blob(body, digest, length.map(HeaderValue::from));
    if let Some(t) = total {
        r.headers_mut()
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(p) = part {
            set_partial(&mut r, p, t);
        }
    }
    r
}
