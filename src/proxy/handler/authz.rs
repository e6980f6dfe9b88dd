//! May this client have this cached content, via this repository?
//!
//! Owns: [`ensure_confirmed`] — before cached content is served to `route.repo`, the upstream
//! must have confirmed (a `HEAD`, remembered in the cache) that this repository has it, for the
//! identity this request's credentials are. Content addressing dedupes across repositories; this
//! check keeps a private layer cached for repository A from being handed out via repository B.
//! A confirmation older than `--confirm-ttl` counts as none: the upstream is asked again, so a
//! revoked or deleted repository stops being served from the cache.
//!
//! Does not own: where confirmations are kept ([`crate::proxy::cache`]).

use super::manifest::MANIFEST_TYPES;
use crate::proxy::error::{ApiError, ErrorCode};
use crate::proxy::response::{self, Body, api_error};
use crate::proxy::route::Route;
use crate::proxy::state::ProxyState;
use crate::proxy::store::ContentKind;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// `Ok` when `route.repo` may be served `digest` from the cache; else the response to send.
pub async fn ensure_confirmed(
    state: &ProxyState,
    route: &Route,
    digest: &str,
    kind: ContentKind,
) -> Result<(), Response<Body>> {
    let up = &route.upstream;
    let creds = state
        .client
        .creds(up, &route.repo)
        .await
        .map_err(|e| api_error(&ApiError::from(e)))?;
    let up_key = up.key();
    if state
        .cache
        .is_confirmed(&up_key, &route.repo, digest, &creds.identity)
        .await
    {
        return Ok(());
    }
    ask_upstream(state, route, digest, kind, &creds.identity).await
}

/// `HEAD` the content in `route.repo`; a 200 is remembered as a confirmation.
async fn ask_upstream(
    state: &ProxyState,
    route: &Route,
    digest: &str,
    kind: ContentKind,
    identity: &str,
) -> Result<(), Response<Body>> {
    let (up, up_key) = (&route.upstream, route.upstream.key());
    let accept = match kind {
        ContentKind::Manifest => MANIFEST_TYPES,
        ContentKind::Blob => "*/*",
    };
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static(accept));
    let path = format!("{}/{}/{digest}", route.repo, kind.path_segment());
    let what = kind.as_str();
    let sent = state
        .client
        .send(up, &route.repo, Method::HEAD, &path, &h)
        .await;
    match sent {
        Ok(r) if r.status() == StatusCode::OK => {
            state
                .cache
                .confirm(&up_key, &route.repo, digest, identity)
                .await;
            Ok(())
        }
        Ok(r) if matches!(r.status().as_u16(), 401 | 403 | 404) => {
            let repo = &route.repo;
            let m = format!("{what} {digest} is not known in repository {repo} upstream");
            Err(response::error(
                StatusCode::NOT_FOUND,
                ErrorCode::unknown(kind),
                &m,
            ))
        }
        Ok(r) => {
            let what = format!("{what} {digest}");
            let e = ApiError::from_status(r.status(), r.headers(), ErrorCode::unknown(kind), &what);
            Err(api_error(&e))
        }
        Err(e) => {
            let repo = &route.repo;
            tracing::warn!(error = %e, repo = %repo, digest, "confirmation failed");
            let m = format!("cannot confirm that repository {repo} has {what} {digest}");
            let unavailable = ErrorCode::Unavailable;
            Err(response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                unavailable,
                &m,
            ))
        }
    }
}
