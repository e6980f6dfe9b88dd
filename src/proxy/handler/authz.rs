//! May this client have this content, via this repository?
//!
//! Owns: the two checks every repository request passes.
//!
//! * [`authorize`] — the access rules ([`crate::proxy::access`]) for the client's identity and the
//!   route's canonical registry and repository, before the cache is looked at: a refusal is the
//!   same whatever is cached (401 with a Basic challenge for anonymous clients, where credentials
//!   could help; else 403 `DENIED`, one generic sentence), counted by reason in
//!   `regauth_access_denied_total`. A pass-through identity allowed with its own credentials gets
//!   them set on the route's upstream, so every upstream request for it uses them.
//! * [`ensure_confirmed`] — before cached content is served, two facts: the content came from
//!   this canonical registry (an origin record, written when the registry served the bytes and
//!   they verified — a registry answering `HEAD` 200 to everything cannot unlock what another
//!   registry served), and the upstream confirmed this request's credentials for the digest in
//!   this repository within `--authz-ttl` ([`crate::proxy::confirmations`], in memory): else one
//!   authorized `HEAD` asks. A refusal upstream is answered exactly as a cache miss would be
//!   (same status, code and message), so a client cannot tell cached-but-denied from absent.
//!   While the upstream cannot answer, a confirmation younger than an hour still serves.
//!
//! Does not own: where origin records are kept ([`crate::proxy::cache`]) or identifying the client
//! ([`crate::proxy::client_auth`]).

use super::manifest::MANIFEST_TYPES;
use crate::proxy::access::Creds;
use crate::proxy::client_auth::{self, Identity};
use crate::proxy::confirmations::Freshness;
use crate::proxy::error::{ApiError, ErrorCode};
use crate::proxy::response::{self, Body, api_error};
use crate::proxy::route::{ClientCreds, Endpoint, Route};
use crate::proxy::state::ProxyState;
use crate::proxy::store::ContentKind;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// Applies the access rules to `route` for `id`: the route to serve (with a pass-through
/// client's credentials set), or the refusal.
pub fn authorize(
    state: &ProxyState,
    id: &Identity,
    mut route: Route,
) -> Result<Route, Box<Response<Body>>> {
    if route.endpoint == Endpoint::Upload {
        return Ok(route);
    }
    if route.endpoint == Endpoint::Base {
        // No repository to decide on; a pass-through client's login is checked upstream.
        if let Identity::PassThrough { user, credential } = id
            && state.access.pass_through()
        {
            route.upstream.acting = Some(ClientCreds::new(user, credential));
        }
        return Ok(route);
    }
    let decided = state
        .access
        .decide(id, &route.upstream.registry, &route.repo);
    match (decided, id) {
        (Some(Creds::Proxy), _) => Ok(route),
        (Some(Creds::Client), Identity::PassThrough { user, credential }) => {
            route.upstream.acting = Some(ClientCreds::new(user, credential));
            Ok(route)
        }
        (_, Identity::Anonymous) => {
            state.metrics.access_denied("anonymous");
            Err(Box::new(client_auth::challenge()))
        }
        _ => {
            state.metrics.access_denied("access_rules");
            tracing::warn!(client = id.name(), repository = %route.repo, registry = %route.upstream.registry,
                "refused: the access rules do not allow this client this repository");
            Err(Box::new(denied()))
        }
    }
}

/// The one answer to a refused repository.
fn denied() -> Response<Body> {
    response::error(
        StatusCode::FORBIDDEN,
        ErrorCode::Denied,
        "access to the requested resource is denied",
    )
}

/// Was `digest` served (and verified) by `route`'s canonical registry? Checked before a cached
/// copy may stand in for that registry's answer.
pub async fn from_origin(state: &ProxyState, route: &Route, digest: &str) -> bool {
    state
        .cache
        .has_origin(&route.upstream.registry, digest)
        .await
}

/// `Ok` when `route.repo` may be served `digest` from the cache for this request's credentials;
/// else the response to send. `what` names the content as the client asked for it (`blob <d>`,
/// `manifest <repo>:<reference>`), the same words a miss would use.
pub async fn ensure_confirmed(
    state: &ProxyState,
    route: &Route,
    digest: &str,
    kind: ContentKind,
    what: &str,
) -> Result<(), Response<Body>> {
    let up = &route.upstream;
    let creds = state
        .client
        .creds(up, &route.repo)
        .await
        .map_err(|e| api_error(&ApiError::from(e)))?;
    let registry = up.registry.to_string();
    let known = state
        .client
        .confirmations
        .check(&creds.identity, &registry, &route.repo, digest);
    if known == Some(Freshness::Fresh) {
        return Ok(());
    }
    let stale_ok = known == Some(Freshness::Stale);
    let asked = Ask {
        state,
        route,
        digest,
        kind,
        what,
        identity: &creds.identity,
        registry: &registry,
    };
    asked.upstream(stale_ok).await
}

/// One confirmation question.
struct Ask<'a> {
    state: &'a ProxyState,
    route: &'a Route,
    digest: &'a str,
    kind: ContentKind,
    what: &'a str,
    identity: &'a str,
    registry: &'a str,
}

impl Ask<'_> {
    /// `HEAD` the content in `route.repo`; a 200 is remembered as a confirmation.
    async fn upstream(&self, stale_ok: bool) -> Result<(), Response<Body>> {
        let (state, route) = (self.state, self.route);
        let accept = match self.kind {
            ContentKind::Manifest => MANIFEST_TYPES,
            ContentKind::Blob => "*/*",
        };
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(accept));
        let path = format!(
            "{}/{}/{}",
            route.repo,
            self.kind.path_segment(),
            self.digest
        );
        let sent = state
            .client
            .send(&route.upstream, &route.repo, Method::HEAD, &path, &h)
            .await;
        let confirmations = &state.client.confirmations;
        let (id, reg, repo, d) = (self.identity, self.registry, &route.repo, self.digest);
        match sent {
            Ok(r) if r.status() == StatusCode::OK => {
                confirmations.confirm(id, reg, repo, d);
                Ok(())
            }
            Ok(r) => {
                let status = r.status();
                let unavailable =
                    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                if unavailable && stale_ok {
                    self.stale();
                    return Ok(());
                }
                if matches!(status.as_u16(), 401 | 403 | 404) {
                    confirmations.revoke(id, reg, repo, d);
                    state.metrics.access_denied("upstream");
                }
                let unknown = ErrorCode::unknown(self.kind);
                let e = ApiError::from_status(status, r.headers(), unknown, self.what);
                Err(api_error(&e))
            }
            Err(e) => {
                if e.is_unavailable() && stale_ok {
                    self.stale();
                    return Ok(());
                }
                Err(api_error(&ApiError::from(e)))
            }
        }
    }

    /// Serving on a recent confirmation while the upstream cannot answer.
    fn stale(&self) {
        self.state.metrics.stale_served();
        tracing::warn!(repository = %self.route.repo, registry = self.registry,
            "upstream unavailable: serving on a recent confirmation");
    }
}
