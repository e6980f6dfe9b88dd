//! The peer endpoint: a blob for another fleet member.
//!
//! Owns: `GET|HEAD /_regauth/peer/v2/<repo>/blobs/<digest>?ns=<registry>[&cached=1]` — the
//! request must carry a valid `x-regauth-peer` signature ([`crate::proxy::peer::Peers::check`]:
//! none → 401; a wrong or stale one, one signed for another member, or a replay of one this
//! member already accepted → 403, before anything else happens); then it is routed like
//! a pull (`ns` names the registry, so a registry outside *this* member's allowlist is refused
//! with 403 before any connection) and served by [`blob::get_for_peer`]: the cache, or this
//! member's own verified download with its own credentials — never forwarded to a third member.
//!
//! Why the client's htpasswd does not apply here: members authenticate with the fleet secret,
//! and a client that only knows an htpasswd password must not reach the peer endpoint.
//!
//! Does not own: signing and member health ([`crate::proxy::peer`]), the blob itself
//! ([`blob`]).

use super::blob;
use crate::proxy::error::{ApiError, ErrorCode};
use crate::proxy::peer::{AuthFailure, PEER_PREFIX};
use crate::proxy::response::{self, Body};
use crate::proxy::route::{Endpoint, Route};
use crate::proxy::state::ProxyState;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// Answers a request under [`PEER_PREFIX`]; `Some(route)` when it got as far as routing.
pub async fn serve(
    state: &ProxyState,
    req: &Request<Incoming>,
    path: &str,
    query: Option<&str>,
) -> (Response<Body>, Option<Route>) {
    let m = &state.metrics;
    let Some(peers) = &state.peers else {
        return (not_found(), None);
    };
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return (not_found(), None);
    }
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    if let Err(why) = peers.check(method, &pq, req.headers()) {
        let (status, outcome, what) = match why {
            AuthFailure::Missing => (StatusCode::UNAUTHORIZED, "unauthorized", "no signature"),
            AuthFailure::Bad => (
                StatusCode::FORBIDDEN,
                "unauthorized",
                "a malformed, stale or wrong signature, or one for another member",
            ),
            AuthFailure::Replayed => (StatusCode::FORBIDDEN, "replayed", "a replayed signature"),
            AuthFailure::ReplayCacheFull => (
                StatusCode::FORBIDDEN,
                "replay_cache_full",
                "the replay cache is full of unexpired nonces",
            ),
        };
        m.peer_served(outcome);
        tracing::warn!(path, "refused a peer request: {what}");
        let msg = "fleet peer authentication required";
        return (response::error(status, ErrorCode::Denied, msg), None);
    }
    let inner = path.strip_prefix(PEER_PREFIX).unwrap_or("");
    let route = match super::route(state, None, inner, query).await {
        Ok(r) => r,
        Err(e) => {
            m.peer_served("refused");
            return (response::api_error(&ApiError::from(&e)), None);
        }
    };
    let Endpoint::Blob(digest) = &route.endpoint else {
        m.peer_served("refused");
        return (not_found(), Some(route));
    };
    let cached_only = query.is_some_and(|q| q.split('&').any(|kv| kv == "cached=1"));
    let head = method == Method::HEAD;
    let r = blob::get_for_peer(state, &route, digest, req.headers(), head, cached_only).await;
    m.peer_served(match r.status() {
        s if s.is_success() => "ok",
        StatusCode::NOT_FOUND => "not_found",
        _ => "error",
    });
    (r, Some(route))
}

fn not_found() -> Response<Body> {
    response::error(StatusCode::NOT_FOUND, ErrorCode::Unknown, "not found")
}
