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
use super::metrics::inc;
use super::response::{self, API_VERSION, Body, OCI_NAMESPACE, empty, full};
use super::route::{Endpoint, Route, RouteError};
use super::state::ProxyState;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;

/// Entry point for every request.
pub async fn handle(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    match path.as_str() {
        "/healthz" => return Response::new(full("ok\n")),
        "/metrics" => return metrics(&state),
        _ => {}
    }
    let mut resp = api(&state, &req, &path, query.as_deref(), &method).await;
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    tracing::info!(method = %method, path = %path, query = query.as_deref().unwrap_or(""), status = resp.status().as_u16(), "request");
    resp
}

/// The distribution API: client auth, route, method rule, resource.
async fn api(
    state: &ProxyState,
    req: &Request<Incoming>,
    path: &str,
    query: Option<&str>,
    method: &Method,
) -> Response<Body> {
    if let Some(ca) = &state.client_auth
        && !ca.clone().allows(req.headers()).await
    {
        inc(&state.metrics.unauthorized);
        return client_auth::challenge();
    }
    let mut routed = state.routes.route(path, query);
    if matches!(routed, Err(RouteError::Denied(_)))
        && state.reach_sources.refresh(&state.routes.reach).await
    {
        routed = state.routes.route(path, query);
    }
    let route = match routed {
        Ok(r) => r,
        Err(e) => {
            if let RouteError::Denied(registry) = &e {
                tracing::warn!(%registry, "refused: registry not in the proxy's reach");
            }
            inc(&state.metrics.requests_other);
            return response::api_error(&ApiError::from(&e));
        }
    };
    let mut resp = if method == Method::GET || method == Method::HEAD {
        let head = method == Method::HEAD;
        resource(state, &route, req.headers(), query, head).await
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
            blob::get(state, route, digest, headers, head).await
        }
        Endpoint::Upload => {
            inc(&m.requests_other);
            unsupported()
        }
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
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
