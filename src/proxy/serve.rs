//! Step 8: answering one client request (the OCI pull API).
//!
//! Owns: the request → response logic tying the steps together: route, client auth, then
//! `GET /v2/` (with `Docker-Distribution-API-Version: registry/2.0`), manifests by tag and by
//! digest (GET/HEAD, the client's `Accept` forwarded, `Content-Type`, `Docker-Content-Digest` and
//! `Content-Length` set), blobs (GET/HEAD, `Range` → 206 from the cache; on a miss the blob is
//! fetched fully through the verified single flight, then the range is served), tag lists passed
//! through, push methods → 405 `UNSUPPORTED`, spec error bodies, `Retry-After` passed through,
//! `OCI-Namespace` echoed for `?ns=`, `/healthz` and `/metrics`.
//!
//! Why tags are revalidated with HEAD: Docker Hub does not count HEAD against pull limits; a HEAD
//! whose `Docker-Content-Digest` matches the cached digest costs no download. When the upstream
//! fails or answers 429, a cached tag is served stale (an outage must not stop CI); 401/403/404
//! are passed on (a revoked or deleted image must not live on through the cache).
//!
//! Does not own: sockets, TLS and shutdown ([`super::server`]).

// `Err(Response)` is the early-return shape of every handler step; a response is built once per
// request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use super::cache::{Cache, TagEntry, now_secs, sha256_hex};
use super::client_auth::ClientAuth;
use super::fetch::{UpstreamClient, read_limited};
use super::metrics::{Metrics, inc};
use super::policy::Policy;
use super::route::{Endpoint, Route, RouteError, Routes};
use super::verify::{
    Failure, FlightCtx, Flights, State, failure_from_status, first_state, stream_flight,
};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// Response body type.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Largest manifest accepted (containerd's limit is about 4.4 MB).
const MANIFEST_LIMIT: usize = 8 << 20;
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const DCD: HeaderName = HeaderName::from_static("docker-content-digest");
const OCI_NS: HeaderName = HeaderName::from_static("oci-namespace");

/// Everything a request handler needs.
pub struct ProxyState {
    pub routes: Routes,
    pub client: Arc<UpstreamClient>,
    pub cache: Cache,
    pub flights: Arc<Flights>,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    pub client_auth: Option<Arc<ClientAuth>>,
    /// How long a tag resolution is used without asking the upstream.
    pub tag_ttl: Duration,
}

impl ProxyState {
    /// One request to the upstream registry (auth handled by the client), counted in
    /// `upstream_requests` — every serve-side upstream call goes through here so none is missed.
    async fn upstream(
        &self,
        up: &crate::proxy::route::Upstream,
        repo: &str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, crate::proxy::fetch::UpstreamError> {
        inc(&self.metrics.upstream_requests);
        self.client.send(up, repo, method, path, headers).await
    }
}

/// A body fed by a channel; an `Err` item aborts the response (the connection is reset).
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

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

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A spec error response: `{"errors":[{"code","message","detail"}]}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn failure_response(f: &Failure) -> Response<Body> {
    let mut r = error(f.status, f.code, &f.message);
    if let Some(ra) = &f.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, ra.clone());
    }
    r
}

/// Entry point for every request.
pub async fn handle(st: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    match path.as_str() {
        "/healthz" => return Response::new(full("ok\n")),
        "/metrics" => {
            let mut r = Response::new(full(st.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        _ => {}
    }
    let mut resp = handle_api(&st, &req, &path, query.as_deref(), &method).await;
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    tracing::info!(method = %method, path = %path, query = query.as_deref().unwrap_or(""), status = resp.status().as_u16(), "request");
    resp
}

async fn handle_api(
    st: &Arc<ProxyState>,
    req: &Request<Incoming>,
    path: &str,
    query: Option<&str>,
    method: &Method,
) -> Response<Body> {
    if let Some(ca) = &st.client_auth {
        let authz = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ca = ca.clone();
        let ok = tokio::task::spawn_blocking(move || ca.check(authz.as_deref()))
            .await
            .unwrap_or(false);
        if !ok {
            inc(&st.metrics.unauthorized);
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"regauth\""),
            );
            return r;
        }
    }
    let route = match st.routes.route(path, query) {
        Ok(r) => r,
        Err(e) => {
            inc(&st.metrics.requests_other);
            let (status, code) = match e {
                RouteError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
                RouteError::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
                RouteError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
                RouteError::ReferenceInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
                RouteError::NsInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            };
            return error(status, code, &e.to_string());
        }
    };
    let mut resp = if route.endpoint == Endpoint::Upload
        || (method != Method::GET && method != Method::HEAD)
    {
        inc(&st.metrics.requests_other);
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this is a pull-through proxy; push and delete are not supported",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        let head = method == Method::HEAD;
        match &route.endpoint {
            Endpoint::Base => {
                inc(&st.metrics.requests_other);
                let mut r = Response::new(if head { empty() } else { full("{}") });
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Endpoint::TagsList => {
                inc(&st.metrics.requests_other);
                tags_list(st, &route, query).await
            }
            Endpoint::Manifest(reference) => {
                inc(&st.metrics.requests_manifest);
                manifest(st, &route, reference, req.headers(), head).await
            }
            Endpoint::Blob(digest) => {
                inc(&st.metrics.requests_blob);
                blob(st, &route, digest, req.headers(), head).await
            }
            Endpoint::Upload => unreachable_upload(),
        }
    };
    if let Some(ns) = &route.ns
        && let Ok(v) = HeaderValue::from_str(ns)
    {
        resp.headers_mut().insert(OCI_NS, v);
    }
    resp
}

fn unreachable_upload() -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "push is not supported",
    )
}

async fn tags_list(st: &ProxyState, route: &Route, query: Option<&str>) -> Response<Body> {
    let q: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("ns="))
        .collect();
    let path = if q.is_empty() {
        format!("{}/tags/list", route.repo)
    } else {
        format!("{}/tags/list?{}", route.repo, q.join("&"))
    };
    let resp = match st
        .upstream(
            &route.upstream,
            &route.repo,
            Method::GET,
            &path,
            &HeaderMap::new(),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return failure_response(&Failure::from(e)),
    };
    let status = resp.status();
    if !status.is_success() {
        return failure_response(&failure_from_status(
            status,
            resp.headers(),
            "NAME_UNKNOWN",
            "tag list",
        ));
    }
    let link = resp.headers().get(header::LINK).cloned();
    match read_limited(resp.into_body(), MANIFEST_LIMIT).await {
        Ok(b) => {
            let mut r = Response::new(full(b));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(l) = link {
                r.headers_mut().insert(header::LINK, l);
            }
            r
        }
        Err(e) => failure_response(&Failure::from(e)),
    }
}

fn manifest_response(body: Bytes, ct: &str, digest: &str, head: bool) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(if head { empty() } else { full(body) });
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(digest) {
        h.insert(DCD, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// GETs a manifest upstream, verifies it and stores it. `expected` = the digest asked for.
async fn fetch_manifest(
    st: &ProxyState,
    route: &Route,
    reference: &str,
    accept: &HeaderValue,
    expected: Option<&str>,
) -> Result<(Bytes, String, String), Failure> {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, accept.clone());
    let resp = st
        .upstream(
            &route.upstream,
            &route.repo,
            Method::GET,
            &format!("{}/manifests/{reference}", route.repo),
            &h,
        )
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(failure_from_status(
            resp.status(),
            resp.headers(),
            "MANIFEST_UNKNOWN",
            &format!("manifest {}:{reference}", route.repo),
        ));
    }
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
    let header_digest = resp
        .headers()
        .get(DCD)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_limited(resp.into_body(), MANIFEST_LIMIT).await?;
    st.metrics
        .upstream_bytes
        .fetch_add(body.len() as u64, Relaxed);
    let actual = format!("sha256:{:x}", Sha256::digest(&body));
    let mismatch = |what: &str, want: &str| {
        inc(&st.metrics.verification_failures);
        tracing::warn!(upstream = %route.upstream.authority, repo = %route.repo, reference, "manifest verification failed: {what} {want}, body {actual}");
        Failure {
            status: StatusCode::BAD_GATEWAY,
            code: "MANIFEST_INVALID",
            message: format!("upstream manifest hashes to {actual}, but {what} is {want}"),
            retry_after: None,
            unavailable: false,
        }
    };
    if let Some(e) = expected
        && e != actual
    {
        return Err(mismatch("the requested digest", e));
    }
    if let Some(d) = &header_digest
        && d.starts_with("sha256:")
        && *d != actual
    {
        return Err(mismatch("Docker-Content-Digest", d));
    }
    let ct = ct.unwrap_or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned())
    });
    let hex = &actual["sha256:".len()..];
    if let Err(e) = st.cache.put_manifest(hex, &body, &ct) {
        tracing::warn!(error = %e, "could not cache manifest");
    }
    if let Ok(c) = st.client.creds(&route.upstream).await {
        st.cache
            .confirm(&route.upstream.key(), &route.repo, &actual, &c.identity);
    }
    Ok((body, ct, actual))
}

/// Before serving cached content to `route.repo`: the upstream must have confirmed that this
/// repository has it, for the identity this request uses.
async fn ensure_confirmed(
    st: &ProxyState,
    route: &Route,
    digest: &str,
    kind: &str,
) -> Result<(), Response<Body>> {
    let up = &route.upstream;
    let creds = st
        .client
        .creds(up)
        .await
        .map_err(|e| failure_response(&Failure::from(e)))?;
    if st
        .cache
        .is_confirmed(&up.key(), &route.repo, digest, &creds.identity)
    {
        return Ok(());
    }
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static(if kind == "manifests" {
            MANIFEST_TYPES
        } else {
            "*/*"
        }),
    );
    let (unknown, what) = if kind == "manifests" {
        ("MANIFEST_UNKNOWN", "manifest")
    } else {
        ("BLOB_UNKNOWN", "blob")
    };
    match st
        .upstream(
            up,
            &route.repo,
            Method::HEAD,
            &format!("{}/{kind}/{digest}", route.repo),
            &h,
        )
        .await
    {
        Ok(r) if r.status() == StatusCode::OK => {
            st.cache
                .confirm(&up.key(), &route.repo, digest, &creds.identity);
            Ok(())
        }
        Ok(r) if matches!(r.status().as_u16(), 401 | 403 | 404) => Err(error(
            StatusCode::NOT_FOUND,
            unknown,
            &format!(
                "{what} {digest} is not known in repository {} upstream",
                route.repo
            ),
        )),
        Ok(r) => Err(failure_response(&failure_from_status(
            r.status(),
            r.headers(),
            unknown,
            &format!("{what} {digest}"),
        ))),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &format!(
                "cannot confirm that repository {} has {what} {digest}: {e}",
                route.repo
            ),
        )),
    }
}

fn accept_of(headers: &HeaderMap) -> HeaderValue {
    let parts: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if parts.is_empty() {
        HeaderValue::from_static(MANIFEST_TYPES)
    } else {
        HeaderValue::from_str(&parts.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(MANIFEST_TYPES))
    }
}

async fn manifest(
    st: &ProxyState,
    route: &Route,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let accept = accept_of(headers);
    if reference.contains(':') {
        let Some(hex) = sha256_hex(reference) else {
            return error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "only sha256 digests are supported",
            );
        };
        if let Some((body, ct)) = st.cache.manifest(hex) {
            if let Err(r) = ensure_confirmed(st, route, reference, "manifests").await {
                return r;
            }
            inc(&st.metrics.cache_hits_manifest);
            return manifest_response(body.into(), &ct, reference, head);
        }
        inc(&st.metrics.cache_misses_manifest);
        return match fetch_manifest(st, route, reference, &accept, Some(reference)).await {
            Ok((body, ct, d)) => manifest_response(body, &ct, &d, head),
            Err(f) => failure_response(&f),
        };
    }
    // By tag.
    let tag = reference;
    if let Err(m) = st
        .policy
        .check_tag_allowed(&route.upstream, &route.repo, tag)
    {
        inc(&st.metrics.policy_denied);
        return error(StatusCode::FORBIDDEN, "DENIED", &m);
    }
    let up_key = route.upstream.key();
    let accept_s = accept.to_str().unwrap_or("").to_owned();
    let entry = st.cache.tag(&up_key, &route.repo, tag, &accept_s);
    let cached = entry.as_ref().and_then(|e| {
        let (b, ct) = st.cache.manifest(sha256_hex(&e.digest)?)?;
        Some((e.clone(), b, ct))
    });
    let fresh = cached
        .as_ref()
        .is_some_and(|(e, _, _)| now_secs().saturating_sub(e.checked_at) < st.tag_ttl.as_secs());
    let store_tag = |digest: &str| {
        let e = TagEntry {
            upstream: up_key.clone(),
            repo: route.repo.clone(),
            tag: tag.to_owned(),
            accept: accept_s.clone(),
            digest: digest.to_owned(),
            checked_at: now_secs(),
        };
        if let Err(err) = st.cache.put_tag(&e) {
            tracing::warn!(error = %err, "could not cache tag");
        }
    };
    let pin = |digest: &str| -> Result<(), Response<Body>> {
        st.policy
            .check_pin(&route.upstream, &route.repo, tag, digest)
            .map_err(|m| {
                inc(&st.metrics.policy_denied);
                tracing::warn!("{m}");
                error(StatusCode::FORBIDDEN, "DENIED", &m)
            })
    };
    if let Some((e, body, ct)) = &cached {
        if fresh {
            if let Err(r) = pin(&e.digest) {
                return r;
            }
            inc(&st.metrics.cache_hits_manifest);
            return manifest_response(body.clone().into(), ct, &e.digest, head);
        }
        // Revalidate with HEAD.
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, accept.clone());
        let res = st
            .upstream(
                &route.upstream,
                &route.repo,
                Method::HEAD,
                &format!("{}/manifests/{tag}", route.repo),
                &h,
            )
            .await;
        let serve_stale = |why: String| {
            inc(&st.metrics.stale_served);
            tracing::warn!(upstream = %route.upstream.authority, repo = %route.repo, tag, "serving cached tag: {why}");
            if let Err(r) = pin(&e.digest) {
                return r;
            }
            let mut r = manifest_response(body.clone().into(), ct, &e.digest, head);
            r.headers_mut().insert(
                header::WARNING,
                HeaderValue::from_static("110 regauth \"stale: upstream unavailable\""),
            );
            r
        };
        match res {
            Ok(r) if r.status() == StatusCode::OK => {
                let same = r
                    .headers()
                    .get(DCD)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|d| d == e.digest);
                if same {
                    store_tag(&e.digest);
                    if let Err(r) = pin(&e.digest) {
                        return r;
                    }
                    inc(&st.metrics.cache_hits_manifest);
                    return manifest_response(body.clone().into(), ct, &e.digest, head);
                }
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                return serve_stale(format!("upstream answered {}", r.status()));
            }
            Ok(r) => {
                return failure_response(&failure_from_status(
                    r.status(),
                    r.headers(),
                    "MANIFEST_UNKNOWN",
                    &format!("manifest {}:{tag}", route.repo),
                ));
            }
            Err(err) if err.is_unavailable() => return serve_stale(err.to_string()),
            Err(err) => return failure_response(&Failure::from(err)),
        }
    }
    inc(&st.metrics.cache_misses_manifest);
    match fetch_manifest(st, route, tag, &accept, None).await {
        Ok((body, ct, digest)) => {
            if let Err(r) = pin(&digest) {
                return r;
            }
            store_tag(&digest);
            manifest_response(body, &ct, &digest, head)
        }
        Err(f) => {
            if f.unavailable
                && let Some((e, body, ct)) = cached
            {
                inc(&st.metrics.stale_served);
                if let Err(r) = pin(&e.digest) {
                    return r;
                }
                return manifest_response(body.into(), &ct, &e.digest, head);
            }
            failure_response(&f)
        }
    }
}

/// `Range: bytes=a-b | a- | -n` for a body of `len` bytes → `Some(Ok((start, end_exclusive)))`,
/// `Some(Err(()))` if unsatisfiable, `None` if absent or not a single byte range.
fn parse_range(headers: &HeaderMap, len: u64) -> Option<Result<(u64, u64), ()>> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
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
            (e + 1).min(len)
        };
        (start, end)
    };
    if r.0 >= len {
        return Some(Err(()));
    }
    Some(Ok(r))
}

fn serve_file(
    st: &ProxyState,
    hex: &str,
    digest: &str,
    len: u64,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let path = st.cache.blob_path(hex);
    st.cache.touch(&path);
    let (status, start, end) = match parse_range(headers, len) {
        None => (StatusCode::OK, 0, len),
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                "requested range not satisfiable",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if head {
        empty()
    } else {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut f = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if start > 0
                && let Err(e) = f.seek(std::io::SeekFrom::Start(start)).await
            {
                let _ = tx.send(Err(e)).await;
                return;
            }
            let mut left = end - start;
            let mut buf = vec![0u8; 256 * 1024];
            while left > 0 {
                let want = (left as usize).min(buf.len());
                match f.read(&mut buf[..want]).await {
                    Ok(0) => {
                        let _ = tx
                            .send(Err(std::io::Error::other("cached blob truncated")))
                            .await;
                        return;
                    }
                    Ok(n) => {
                        left -= n as u64;
                        if tx
                            .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        ChannelBody(rx).boxed()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(digest) {
        h.insert(DCD, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

async fn blob(
    st: &ProxyState,
    route: &Route,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let Some(hex) = sha256_hex(digest) else {
        return error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "only sha256 digests are supported",
        );
    };
    if let Some(len) = st.cache.blob_len(hex) {
        if let Err(r) = ensure_confirmed(st, route, digest, "blobs").await {
            return r;
        }
        inc(&st.metrics.cache_hits_blob);
        return serve_file(st, hex, digest, len, headers, head);
    }
    inc(&st.metrics.cache_misses_blob);
    if head {
        // Don't download a blob to answer HEAD: ask upstream.
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        return match st
            .upstream(
                &route.upstream,
                &route.repo,
                Method::HEAD,
                &format!("{}/blobs/{digest}", route.repo),
                &h,
            )
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => {
                let mut out = Response::new(empty());
                if let Some(l) = r.headers().get(header::CONTENT_LENGTH) {
                    out.headers_mut().insert(header::CONTENT_LENGTH, l.clone());
                }
                out.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                if let Ok(v) = HeaderValue::from_str(digest) {
                    out.headers_mut().insert(DCD, v);
                }
                out
            }
            Ok(r) => failure_response(&failure_from_status(
                r.status(),
                r.headers(),
                "BLOB_UNKNOWN",
                &format!("blob {digest}"),
            )),
            Err(e) => failure_response(&Failure::from(e)),
        };
    }
    // Joining a download another repository started needs the same confirmation as a hit.
    if st.flights.running(&route.upstream, digest)
        && let Err(r) = ensure_confirmed(st, route, digest, "blobs").await
    {
        return r;
    }
    let ctx = FlightCtx {
        client: st.client.clone(),
        cache: st.cache.clone(),
        metrics: st.metrics.clone(),
    };
    let flight = st
        .flights
        .join(&ctx, &route.upstream, &route.repo, hex, digest);
    let mut rx = flight.subscribe();
    let wants_range = headers.contains_key(header::RANGE);
    let mut state = first_state(&mut rx).await;
    if wants_range {
        // Ranges are served from the verified file: wait for the download to finish.
        while matches!(state, State::Streaming { .. } | State::Starting) {
            if rx.changed().await.is_err() {
                break;
            }
            state = rx.borrow_and_update().clone();
        }
    }
    match state {
        State::Failed(f) => failure_response(&f),
        State::Done { len } => serve_file(st, hex, digest, len, headers, head),
        State::Starting => error(
            StatusCode::BAD_GATEWAY,
            "UNKNOWN",
            "blob download ended without a result",
        ),
        State::Streaming { total, .. } => {
            let (tx, body_rx) = mpsc::channel(8);
            tokio::spawn(stream_flight(flight.clone(), rx, tx));
            let mut r = Response::new(ChannelBody(body_rx).boxed());
            let h = r.headers_mut();
            if let Some(t) = total {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(t));
            }
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(digest) {
                h.insert(DCD, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_range(&h, 10), None);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=2-4"));
        assert_eq!(parse_range(&h, 10), Some(Ok((2, 5))));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=7-"));
        assert_eq!(parse_range(&h, 10), Some(Ok((7, 10))));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=-3"));
        assert_eq!(parse_range(&h, 10), Some(Ok((7, 10))));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        assert_eq!(parse_range(&h, 10), Some(Err(())));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1,3-4"));
        assert_eq!(parse_range(&h, 10), None);
    }
}
