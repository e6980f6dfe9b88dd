//! Answering one client request: dispatch.
//!
//! Owns: [`handle`] — `/healthz` and `/metrics`, then the distribution API in the order of the
//! step table in [`crate::proxy`]: client authentication, routing, the method rule (GET/HEAD
//! only; push → 405 `UNSUPPORTED`), `GET /v2/` ([`base`]), then the resource handlers ([`manifest`],
//! [`blob`], [`tags`]); `OCI-Namespace` is echoed for `?ns=` and every API answer carries
//! `Docker-Distribution-API-Version: registry/2.0`. Every request is counted
//! (`regauth_requests_total`, `regauth_request_duration_seconds`) and gets one access-log line
//! (target `regauth::access`): method, route kind, repository, reference, upstream, client user
//! (or `anonymous`), status, bytes, duration (to the response head) and the cache result the
//! resource handler marked on the response ([`CacheResult`]).
//!
//! A request from inside an intercepted CONNECT (it carries a [`ConnectTarget`], set only by
//! [`super::connect`]) skips the `Host` check and `/healthz`/`/metrics` (only the registry API is
//! served there), takes its client from the CONNECT's `Proxy-Authorization`, and is routed to the
//! CONNECT's registry.
//!
//! Does not own: the resources' logic (the submodules), response shapes
//! ([`super::response`]) or sockets ([`super::server`]).

pub mod authz;
pub mod base;
pub mod blob;
pub mod manifest;
pub mod peer;
pub mod tags;

use super::client_auth::{self, Identity};
use super::error::{ApiError, ErrorCode};
use super::limits::BudgetPermit;
use super::metrics::{CONTENT_TYPE, RouteKind};
use super::response::{self, API_VERSION, Body, OCI_NAMESPACE, full};
use super::route::{ConnectTarget, Endpoint, Route, RouteError};
use super::state::ProxyState;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What a resource handler found in the cache, carried on the response (as an extension) to
/// the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Coalesced,
    Stale,
    Revalidated,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Coalesced => "coalesced",
            CacheResult::Stale => "stale",
            CacheResult::Revalidated => "revalidated",
        }
    }
}

/// Marks `r` with what the cache did.
pub fn mark(mut r: Response<Body>, c: CacheResult) -> Response<Body> {
    r.extensions_mut().insert(c);
    r
}

/// One access-log line's fields, filled in as the request passes the steps.
struct Access {
    route: RouteKind,
    repo: String,
    reference: String,
    upstream: String,
    client: String,
}

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

/// 421 for a `Host` that is not a name of this listener.
fn misdirected(state: &ProxyState, peer: SocketAddr, req: &Request<Incoming>) -> Response<Body> {
    state.metrics.limit_tripped("host");
    tracing::warn!(%peer, host = ?req.headers().get(header::HOST), "refused: Host is not a name of this listener (DNS rebinding?)");
    response::error(
        StatusCode::MISDIRECTED_REQUEST,
        ErrorCode::Denied,
        "this proxy does not serve that host name",
    )
}

/// Entry point for every request: dispatch, then count it and write its access-log line
/// (`peer`: the client's address, for the auth-failure limiter).
pub async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    let mut access = Access::new();
    // Inside an intercepted CONNECT the Host is the registry's (vetted at CONNECT), and only
    // the registry API is served.
    let connect = req.extensions().get::<ConnectTarget>().cloned();
    if connect.is_none() && !host_allowed(&state, &req) {
        return misdirected(&state, peer, &req);
    }
    let resp = match path.as_str() {
        _ if connect.is_some() => registry_api(&state, peer, &req, &mut access).await,
        "/healthz" => {
            access.route = RouteKind::Healthz;
            healthz(&state, query.as_deref())
        }
        p if p.starts_with(super::peer::PEER_PREFIX) => {
            access.client = "peer".to_owned();
            let (r, route) = peer::serve(&state, &req, &path, query.as_deref()).await;
            if let Some(route) = &route {
                access.routed(route);
            }
            r
        }
        "/metrics" => {
            access.route = RouteKind::Metrics;
            metrics(&state)
        }
        _ => registry_api(&state, peer, &req, &mut access).await,
    };
    access.finish(&state, &method, &path, query.as_deref(), &resp, started);
    resp
}

/// The registry API (`/v2/…`), with its version header.
async fn registry_api(
    state: &ProxyState,
    peer: SocketAddr,
    req: &Request<Incoming>,
    access: &mut Access,
) -> Response<Body> {
    let (path, query, method) = (req.uri().path(), req.uri().query(), req.method());
    let mut r = api(state, peer, req, path, query, method, access).await;
    r.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    r
}

impl Access {
    fn new() -> Access {
        Access {
            route: RouteKind::Other,
            repo: String::new(),
            reference: String::new(),
            upstream: String::new(),
            client: "anonymous".to_owned(),
        }
    }

    /// What routing decided, for the log line.
    fn routed(&mut self, route: &Route) {
        self.route = match &route.endpoint {
            Endpoint::Base => RouteKind::Base,
            Endpoint::TagsList => RouteKind::Tags,
            Endpoint::Manifest(r) => {
                self.reference = r.clone();
                RouteKind::Manifest
            }
            Endpoint::Blob(d) => {
                self.reference = d.clone();
                RouteKind::Blob
            }
            Endpoint::Upload => RouteKind::Upload,
        };
        self.repo = route.repo.clone();
        self.upstream = route.upstream.authority.clone();
    }

    /// Counts the request and writes its access-log line.
    fn finish(
        &self,
        state: &ProxyState,
        method: &Method,
        path: &str,
        query: Option<&str>,
        resp: &Response<Body>,
        started: Instant,
    ) {
        let access = self;
        let took = started.elapsed();
        let status = resp.status().as_u16();
        let bytes = if method == Method::HEAD {
            0
        } else {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        state.metrics.request(access.route, status, took, bytes);
        let cache = resp
            .extensions()
            .get::<CacheResult>()
            .map_or("", |c| c.as_str());
        tracing::info!(
            target: "regauth::access",
            method = %method,
            query = query.unwrap_or(""),
            route = access.route.as_str(),
            repository = %access.repo,
            reference = %access.reference,
            upstream = %access.upstream,
            client = %access.client,
            status,
            bytes,
            duration_ms = took.as_millis() as u64,
            cache,
            "{method} {path} {status}"
        );
    }
}

/// The distribution API: client auth, route, method rule, resource.
async fn api(
    state: &ProxyState,
    peer: SocketAddr,
    req: &Request<Incoming>,
    path: &str,
    query: Option<&str>,
    method: &Method,
    access: &mut Access,
) -> Response<Body> {
    let (failures, m) = (&state.auth_failures, &state.metrics);
    let ca = state.client_auth.as_ref();
    let connect = req.extensions().get::<ConnectTarget>();
    let id = match connect.and_then(|c| c.user.clone()) {
        // Authenticated by `Proxy-Authorization` at the CONNECT (see `super::connect`).
        Some(user) => Identity::User(user),
        None => {
            match client_auth::identify(ca, state.door, failures, m, peer.ip(), req.headers()).await
            {
                Ok(id) => id,
                Err(r) => return r,
            }
        }
    };
    // The user name (never the password or token) goes into the access log.
    access.client = id.name().to_owned();
    let route = match route(state, connect, path, query).await {
        Ok(r) => r,
        Err(e) => return response::api_error(&ApiError::from(&e)),
    };
    access.routed(&route);
    let route = match authz::authorize(state, &id, route) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let mut resp = if method == Method::GET || method == Method::HEAD {
        let head = method == Method::HEAD;
        // HTTP/1.0 cannot tell an aborted close-delimited body from a complete one.
        let h10 = req.version() < hyper::Version::HTTP_11;
        resource(state, &route, req.headers(), query, head, h10).await
    } else {
        unsupported()
    };
    // An upstream's 401 for a client's own credentials: ask for other ones (`docker login`).
    if resp.status() == StatusCode::UNAUTHORIZED
        && !resp.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(client_auth::BASIC_CHALLENGE),
        );
    }
    if let Some(ns) = &route.ns
        && let Ok(v) = HeaderValue::from_str(ns)
    {
        resp.headers_mut().insert(OCI_NAMESPACE, v);
    }
    resp
}

/// Routes the request; a registry outside the reach is looked for again in the credential
/// sources (a `docker login` since the last look) before it is refused.
async fn route(
    state: &ProxyState,
    connect: Option<&ConnectTarget>,
    path: &str,
    query: Option<&str>,
) -> Result<Route, RouteError> {
    let routes = &state.routes;
    let once = || match connect {
        Some(c) => routes.route_connect(&c.authority, path, query),
        None => routes.route(path, query),
    };
    let mut routed = once();
    if matches!(routed, Err(RouteError::Denied(_)))
        && state.reach_sources.refresh(&state.routes.reach).await
    {
        routed = once();
    }
    if let Err(RouteError::Denied(registry)) = &routed {
        tracing::warn!(%registry, "refused: registry not in the proxy's reach");
    }
    routed
}

async fn resource(
    state: &ProxyState,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
    head: bool,
    h10: bool,
) -> Response<Body> {
    match &route.endpoint {
        Endpoint::Base => base::get(state, route, head).await,
        Endpoint::TagsList => tags::list(state, route, query).await,
        Endpoint::Manifest(reference) => {
            manifest::get(state, route, reference, headers, head).await
        }
        Endpoint::Blob(digest) => blob::get(state, route, digest, headers, head, h10).await,
        Endpoint::Upload => unsupported(),
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
        m.limit_tripped("max_manifest_size");
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
    let permit = state.budget.take(want, BUDGET_WAIT).await.map_err(|e| {
        m.limit_tripped("buffer_budget");
        tracing::warn!(what, "{e}");
        let msg = "the proxy is busy; try again";
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyRequests,
            msg,
        );
        err.retry_after = Some(HeaderValue::from_static("1"));
        err
    })?;
    let read = bounded_read(resp.into_body(), want);
    match tokio::time::timeout(state.limits.body_read_timeout, read).await {
        Ok(Ok(b)) => Ok((b, permit)),
        Ok(Err(None)) => Err(too_large()),
        Ok(Err(Some(e))) => Err(ApiError::from(e)),
        Err(_) => {
            m.limit_tripped("body_read_timeout");
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

/// `ok`; with `?verbose`, also each fleet peer's health (URLs and words, no secrets).
fn healthz(state: &ProxyState, query: Option<&str>) -> Response<Body> {
    let verbose = query.is_some_and(|q| q.split('&').any(|kv| kv == "verbose"));
    match (&state.peers, verbose) {
        (Some(p), true) => Response::new(full(format!("ok\n{}", p.describe()))),
        _ => Response::new(full("ok\n")),
    }
}

fn metrics(state: &ProxyState) -> Response<Body> {
    let mut r = Response::new(full(state.metrics.render()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}
