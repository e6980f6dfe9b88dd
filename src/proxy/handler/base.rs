//! `GET|HEAD /v2/`: the API version check, and for a pass-through client the upstream's verdict on
//! its credentials.
//!
//! Owns: the answer to the base endpoint. Without pass-through it is `200 {}` (client
//! authentication already ran). A pass-through client's credentials are only the upstream's to
//! judge, so here they are put to the upstreams' own `/v2/` — the `?ns=` registry when one is
//! named, else every configured `--upstream` in order until one accepts (one login to the proxy
//! is one credential for all of them), else the default upstream: refused by all — a 401/403, or
//! a token server saying no — is a 401 with the proxy's Basic challenge. Why: `docker login <proxy>` asks only this
//! endpoint; answering 200 to any password made a typo look like a successful login and fail
//! every pull after it. An accepted credential is remembered for `--authz-ttl` (in memory, under
//! the keyed fingerprint of [`crate::proxy::confirmations`]), because docker pings `/v2/` before
//! every pull. With no acceptance and an upstream that could not answer, the answer is that
//! upstream's error (a 502 or 504): the login can be neither confirmed nor refused.
//!
//! Does not own: identifying the client ([`crate::proxy::client_auth`]) or setting the
//! pass-through credentials on the route ([`super::authz::authorize`]).

use crate::proxy::client_auth;
use crate::proxy::confirmations::Freshness;
use crate::proxy::error::{ApiError, ErrorCode, UpstreamError};
use crate::proxy::response::{self, Body, api_error, empty, full};
use crate::proxy::route::{Route, Upstream};
use crate::proxy::state::ProxyState;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// What a confirmed login is remembered as in the confirmations (no repository, no digest).
const LOGIN: &str = "/v2/";

pub async fn get(state: &ProxyState, route: &Route, head: bool) -> Response<Body> {
    if let Some(acting) = &route.upstream.acting
        && let Err(r) = login(state, route, &acting.identity).await
    {
        return r;
    }
    let mut r = Response::new(if head { empty() } else { full("{}") });
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Which upstreams may judge a login: the `?ns=` registry when named, else the configured
/// upstreams (a login to the proxy is one credential for all of them), else the default.
fn judges(state: &ProxyState, route: &Route) -> Vec<Upstream> {
    let routes = &state.routes;
    let mut ups = if route.ns.is_some() || routes.aliases.is_empty() {
        vec![route.upstream.clone()]
    } else {
        routes.aliases.clone()
    };
    for u in &mut ups {
        u.acting = route.upstream.acting.clone();
    }
    ups
}

/// How one upstream judged the credentials.
enum Verdict {
    Accepted,
    Refused,
    /// No usable answer (unreachable, 5xx, a protocol error).
    Unknown(Response<Body>),
}

/// `Ok` when an upstream accepts the client's credentials (now, or within `--authz-ttl`).
async fn login(state: &ProxyState, route: &Route, identity: &str) -> Result<(), Response<Body>> {
    let confirmations = &state.client.confirmations;
    let ups = judges(state, route);
    let fresh = |u: &Upstream| {
        confirmations.check(identity, &u.registry.to_string(), "", LOGIN) == Some(Freshness::Fresh)
    };
    if ups.iter().any(fresh) {
        return Ok(());
    }
    let mut unknown = None;
    for up in &ups {
        let registry = up.registry.to_string();
        match ask(state, up).await {
            Verdict::Accepted => {
                confirmations.confirm(identity, &registry, "", LOGIN);
                return Ok(());
            }
            Verdict::Refused => confirmations.revoke(identity, &registry, "", LOGIN),
            Verdict::Unknown(r) => unknown = unknown.or(Some(r)),
        }
    }
    if let Some(r) = unknown {
        return Err(r);
    }
    state.metrics.client_unauthorized();
    tracing::warn!(
        upstreams = ups.len(),
        "refused: no upstream accepts the client's credentials"
    );
    Err(client_auth::challenge())
}

/// The upstream's `/v2/` with the client's credentials.
async fn ask(state: &ProxyState, up: &Upstream) -> Verdict {
    let sent = state
        .client
        .send(up, "", Method::GET, "", &HeaderMap::new())
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Verdict::Accepted,
        Ok(r) if matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            Verdict::Refused
        }
        Err(UpstreamError::Token {
            status: 401 | 403, ..
        }) => Verdict::Refused,
        Ok(_) => Verdict::Unknown(response::error(
            StatusCode::BAD_GATEWAY,
            ErrorCode::Unknown,
            "the upstream's answer to its version check was not usable",
        )),
        Err(e) => Verdict::Unknown(api_error(&ApiError::from(e))),
    }
}
