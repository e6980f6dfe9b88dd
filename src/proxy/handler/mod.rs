//! Answering one client request: dispatch.
//!
//! Owns: [`handle`] — `/healthz` and `/metrics`, then the distribution API in the order of the
//! step table in [`crate::proxy`]: client authentication, routing, the method rule (GET/HEAD
//! only; push → 405 `UNSUPPORTED`), `GET /v2/`, then the resource handlers ([`manifest`],
//! [`blob`], [`tags`]); `OCI-Namespace` is echoed for `?ns=` and every API answer carries
//! `Docker-Distribution-API-Version: registry/2.0`. Every request is counted
//! (`regauth_requests_total`, `regauth_request_duration_seconds`) and gets one access-log line
//! (target `regauth::access`): method, route kind, repository, reference, upstream, client user
//! (or `anonymous`), status, bytes, duration (to the response head) and the cache result the
//! resource handler marked on the response ([`CacheResult`]).
//!
//! Does not own: the resources' logic (the submodules), response shapes
//! ([`super::response`]) or sockets ([`super::server`]).

pub mod authz;
pub mod blob;
pub mod manifest;
pub mod tags;

use super::client_auth;
use super::error::{ApiError, ErrorCode};
use super::metrics::{CONTENT_TYPE, RouteKind};
use super::response::{self, API_VERSION, Body, OCI_NAMESPACE, empty, full};
use super::route::{Endpoint, Route, RouteError};
use super::state::ProxyState;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
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

/// Entry point for every request: dispatch, then count it and write its access-log line.
pub async fn handle(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    let mut access = Access::new();
    let resp = match path.as_str() {
        "/healthz" => {
            access.route = RouteKind::Healthz;
            Response::new(full("ok\n"))
        }
        "/metrics" => {
            access.route = RouteKind::Metrics;
            metrics(&state)
        }
        _ => {
            let mut r = api(&state, &req, &path, query.as_deref(), &method, &mut access).await;
            r.headers_mut()
                .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
            r
        }
    };
    access.finish(&state, &method, &path, query.as_deref(), &resp, started);
    resp
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
    req: &Request<Incoming>,
    path: &str,
    query: Option<&str>,
    method: &Method,
    access: &mut Access,
) -> Response<Body> {
    if let Some(ca) = &state.client_auth {
        if !ca.clone().allows(req.headers()).await {
            state.metrics.client_unauthorized();
            return client_auth::challenge();
        }
        // Authenticated: the user name (never the password) goes into the access log.
        if let Some((user, _)) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(client_auth::decode_basic)
        {
            access.client = user;
        }
    }
    let route = match route(state, path, query).await {
        Ok(r) => r,
        Err(e) => return response::api_error(&ApiError::from(&e)),
    };
    access.routed(&route);
    let mut resp = if method == Method::GET || method == Method::HEAD {
        let head = method == Method::HEAD;
        resource(state, &route, req.headers(), query, head).await
    } else {
        unsupported()
    };
    if let Some(ns) = &route.ns
        && let Ok(v) = HeaderValue::from_str(ns)
    {
        resp.headers_mut().insert(OCI_NAMESPACE, v);
    }
    resp
}

/// Routes the request; a registry outside the reach is looked for again in the credential
/// sources (a `docker login` since the last look) before it is refused.
async fn route(state: &ProxyState, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
    let mut routed = state.routes.route(path, query);
    if matches!(routed, Err(RouteError::Denied(_)))
        && state.reach_sources.refresh(&state.routes.reach).await
    {
        routed = state.routes.route(path, query);
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
) -> Response<Body> {
    match &route.endpoint {
        Endpoint::Base => {
            let mut r = Response::new(if head { empty() } else { full("{}") });
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Endpoint::TagsList => tags::list(state, route, query).await,
        Endpoint::Manifest(reference) => {
            manifest::get(state, route, reference, headers, head).await
        }
        Endpoint::Blob(digest) => blob::get(state, route, digest, headers, head).await,
        Endpoint::Upload => unsupported(),
    }
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
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}
