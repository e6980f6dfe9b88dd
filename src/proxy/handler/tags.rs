//! `GET /v2/<name>/tags/list`, passed through.
//!
//! Owns: forwarding the tag list (pagination query and `Link` header included, our `ns` dropped)
//! and mapping upstream errors. Nothing is cached: a tag list is only as good as it is current.
//!
//! Does not own: tag resolution for pulls ([`super::manifest`]).

use super::read_buffered;
use crate::proxy::error::{ApiError, ErrorCode};
use crate::proxy::response::{self, Body, api_error};
use crate::proxy::route::Route;
use crate::proxy::state::ProxyState;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Response, StatusCode};

pub async fn list(state: &ProxyState, route: &Route, query: Option<&str>) -> Response<Body> {
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
    let sent = state
        .client
        .send(
            &route.upstream,
            &route.repo,
            Method::GET,
            &path,
            &HeaderMap::new(),
        )
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return api_error(&ApiError::from(e)),
    };
    let status = resp.status();
    if !status.is_success() {
        let unknown = ErrorCode::NameUnknown;
        return api_error(&ApiError::from_status(
            status,
            resp.headers(),
            unknown,
            "tag list",
        ));
    }
    let link = resp.headers().get(header::LINK).cloned();
    match read_buffered(state, resp, "tag list").await {
        Ok((b, permit)) => {
            let mut r = response::json(StatusCode::OK, b);
            if let Some(l) = link {
                r.headers_mut().insert(header::LINK, l);
            }
            super::hold(r, permit)
        }
        Err(e) => api_error(&e),
    }
}
