//! Answering one client request: dispatch.
//!
//! Owns: [`handle`] — `/healthz` and `/metrics`, then the distribution API in the order of the
//! step table in [`crate::proxy`]: client authentication, routing, the method rule (GET/HEAD
//! only; push → 405 `UNSUPPORTED`), `GET /v2/`, then the resource handlers ([`manifest`],
//! [`blob`], [`tags`]); `OCI-Namespace` is echoed for `?ns=` and every API answer carries
//! `Docker-Distribution-API-Version: registry/2.0`.
//!
//! Does not own: the resources' logic (the submodules), response shapes
//! ([`super::response`]) or sockets ([`super::server`]).

pub mod authz;
pub mod blob;
pub mod manifest;
pub mod tags;

use super::client_auth;
use super::error::{ApiError, ErrorCode};
use super::limits::BudgetPermit;
use super::metrics::inc;
use super::response::{self, API_VERSION, Body, OCI_NAMESPACE, empty, full};
use super::route::{Endpoint, Route};
use super::state::ProxyState;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// On a loopback bind, `Host` (or h2's `:authority`) must be one of the listener's names: a
/// browser tricked by DNS rebinding sends the attacker's name. No `Host` at all (HTTP/1.0) is no
/// browser and passes.
fn host_allowed(state: &ProxyState, req: &Request<Incoming>) -> bool {
    let Some(allowed) = &state.hosts else {
        return true;
    };
    let host = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok().map(str::to_ascii_lowercase),
        None => match req.uri().authority() {
            Some(a) => Some(a.as_str().to_ascii_lowercase()),
            None => return true,
        },
    };
    host.is_some_and(|h| allowed.contains(&h))
}

/// Entry point for every request (`peer`: the client's address, for the auth-failure limiter).
pub async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    if !host_allowed(&state, &req) {
        inc(&state.metrics.host_rejected);
        tracing::warn!(%peer, host = ?req.headers().get(header::HOST), "refused: Host is not a name of this listener (DNS rebinding?)");
        return response::error(
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::Denied,
            "this proxy does not serve that host name",
        );
    }
    match path.as_str() {
        "/healthz" => return Response::new(full("ok\n")),
        "/metrics" => return metrics(&state),
        _ => {}
    }
    let mut resp = api(&state, peer, &req, &path, query.as_deref(), &method).await;
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    tracing::info!(method = %method, path = %path, query = query.as_deref().unwrap_or(""), status = resp.status().as_u16(), "request");
    resp
}

/// The distribution API: client auth, route, method rule, resource.
async fn api(
    state: &ProxyState,
    peer: SocketAddr,
    req: &Request<Incoming>,
    path: &str,
    query: Option<&str>,
    method: &Method,
) -> Response<Body> {
    if let Some(ca) = &state.client_auth
        && let Err(r) = client_auth::admit(
            ca,
            &state.auth_failures,
            &state.metrics,
            peer.ip(),
            req.headers(),
        )
        .await
    {
        return r;
    }
    let route = match state.routes.route(path, query) {
        Ok(r) => r,
        Err(e) => {
            inc(&state.metrics.requests_other);
            return response::api_error(&ApiError::from(&e));
        }
    };
    let mut resp = if method == Method::GET || method == Method::HEAD {
        let head = method == Method::HEAD;
        // HTTP/1.0 cannot tell an aborted close-delimited body from a complete one.
        let h10 = req.version() < hyper::Version::HTTP_11;
        resource(state, &route, req.headers(), query, head, h10).await
    } else {
        inc(&state.metrics.requests_other);
        unsupported()
    };
    if let Some(ns) = &route.ns
        && let Ok(v) = HeaderValue::from_str(ns)
    {
        resp.headers_mut().insert(OCI_NAMESPACE, v);
    }
    resp
}

async fn resource(
    state: &ProxyState,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
    head: bool,
    h10: bool,
) -> Response<Body> {
    let m = &state.metrics;
    match &route.endpoint {
        Endpoint::Base => {
            inc(&m.requests_other);
            let mut r = Response::new(if head { empty() } else { full("{}") });
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Endpoint::TagsList => {
            inc(&m.requests_other);
            tags::list(state, route, query).await
        }
        Endpoint::Manifest(reference) => {
            inc(&m.requests_manifest);
            manifest::get(state, route, reference, headers, head).await
        }
        Endpoint::Blob(digest) => {
            inc(&m.requests_blob);
            blob::get(state, route, digest, headers, head, h10).await
        }
        Endpoint::Upload => {
            inc(&m.requests_other);
            unsupported()
        }
    }
}

/// How long a request waits for the shared buffer budget before it is told to retry.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a manifest or tag-list body into memory within its bounds: at most
/// `max_manifest_bytes` (refused before reading when `Content-Length` says more), taken from
/// the global buffer budget for as long as the bytes are held (the permit), and within
/// `body_read_timeout`. `what` names it in errors.
pub async fn read_buffered(
    state: &ProxyState,
    resp: Response<Incoming>,
    what: &str,
) -> Result<(bytes::Bytes, BudgetPermit), ApiError> {
    let limit = state.limits.max_manifest_bytes;
    let m = &state.metrics;
    let too_large = || {
        inc(&m.body_too_large);
        let msg = format!("upstream {what} is larger than the limit of {limit} bytes");
        ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::ManifestInvalid, msg)
    };
    let declared = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let want = match declared {
        Some(n) if n > limit as u64 => return Err(too_large()),
        Some(n) => usize::try_from(n).unwrap_or(limit),
        None => limit,
    };
    let permit = match state.budget.take(want, BUDGET_WAIT).await {
        Ok(p) => p,
        Err(e) => {
            inc(&m.budget_busy);
            tracing::warn!(what, "{e}");
            let msg = "the proxy is busy; try again";
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyRequests,
                msg,
            );
            err.retry_after = Some(HeaderValue::from_static("1"));
            return Err(err);
        }
    };
    let read = bounded_read(resp.into_body(), want);
    match tokio::time::timeout(state.limits.body_read_timeout, read).await {
        Ok(Ok(b)) => Ok((b, permit)),
        Ok(Err(None)) => Err(too_large()),
        Ok(Err(Some(e))) => Err(ApiError::from(e)),
        Err(_) => {
            inc(&m.body_read_timeouts);
            let secs = state.limits.body_read_timeout.as_secs();
            let msg = format!("upstream {what} did not arrive within {secs} s");
            Err(ApiError {
                unavailable: true,
                ..ApiError::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Unknown, msg)
            })
        }
    }
}

/// Reads at most `limit` bytes, growing the buffer no further than `limit` (`Err(None)`: more).
async fn bounded_read(
    mut body: Incoming,
    limit: usize,
) -> Result<bytes::Bytes, Option<super::error::UpstreamError>> {
    use http_body_util::BodyExt;
    // `limit` is the declared length when there is one: one allocation, no regrowth (pages
    // are only resident once written).
    let mut buf: Vec<u8> = Vec::with_capacity(limit);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Some(super::error::UpstreamError::Body(
                super::error::error_chain(&e),
            ))
        })?;
        let Ok(d) = frame.into_data() else { continue };
        let needed = buf.len().saturating_add(d.len());
        if needed > limit {
            return Err(None);
        }
        if needed > buf.capacity() {
            let grown = buf.capacity().saturating_mul(2).max(needed).min(limit);
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&d);
    }
    Ok(bytes::Bytes::from(buf))
}

/// Keeps a budget permit until `r`'s body is dropped (sent or abandoned), so a slow client
/// reading a buffered body still counts against the budget.
pub fn hold<P: Send + Sync + 'static>(r: Response<Body>, permit: P) -> Response<Body> {
    use http_body_util::BodyExt;
    r.map(move |b| {
        b.map_frame(move |f| {
            let _held = &permit;
            f
        })
        .boxed()
    })
}

fn unsupported() -> Response<Body> {
    let mut r = response::error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unsupported,
        "this is a pull-through proxy; push and delete are not supported",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// 400 for a digest the cache cannot address.
fn only_sha256() -> Response<Body> {
    response::error(
        StatusCode::BAD_REQUEST,
        ErrorCode::Unsupported,
        "only sha256 digests are supported",
    )
}

fn metrics(state: &ProxyState) -> Response<Body> {
    let mut r = Response::new(full(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
