//! Manifests, by digest and by tag.
//!
//! Owns: the two reads, each a few small steps in the manner of distribution's
//! `proxymanifeststore.go`:
//! * by digest — cached and confirmed for this repository → serve; else fetch, verify, store;
//! * by tag — policy (digest-only registries) → a fresh cached resolution is a hit → an older one
//!   is revalidated with `HEAD` (same digest → hit) → upstream unavailable or 429 → serve stale →
//!   otherwise fetch, verify against `Docker-Content-Digest`, store, pin-check.
//!
//! Why tags are revalidated with HEAD: Docker Hub does not count HEAD against pull limits; a HEAD
//! whose `Docker-Content-Digest` matches the cached digest costs no download. When the upstream
//! fails or answers 429, a cached tag is served stale (an outage must not stop CI); 401/403/404
//! are passed on (a revoked or deleted image must not live on through the cache).
//!
//! Does not own: the repository confirmation ([`super::authz`]), the pin rules
//! ([`crate::proxy::policy`]) or the response shape ([`crate::proxy::response::manifest`]).

use super::authz::ensure_confirmed;
use super::only_sha256;
use super::read_buffered;
use crate::proxy::cache::{TagEntry, now_secs, sha256_hex};
use crate::proxy::error::{ApiError, ErrorCode};
use crate::proxy::limits::BudgetPermit;
use crate::proxy::metrics::inc;
use crate::proxy::response::{self, Body, DOCKER_CONTENT_DIGEST, api_error};
use crate::proxy::route::Route;
use crate::proxy::state::ProxyState;
use crate::proxy::store::ContentKind;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The `Accept` sent when the client sent none.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A manifest fetched from upstream, verified and stored.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub body: Bytes,
    pub media_type: String,
    /// `sha256:<hex>` of `body`.
    pub digest: String,
    /// Its share of the buffer budget, held until the response body is gone ([`super::hold`]).
    pub permit: Arc<BudgetPermit>,
}

/// `GET|HEAD /v2/<name>/manifests/<reference>`.
pub async fn get(
    state: &ProxyState,
    route: &Route,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let accept = accept_of(headers);
    if reference.contains(':') {
        return by_digest(state, route, reference, &accept, head).await;
    }
    let read = TagRead {
        state,
        route,
        tag: reference,
        accept_text: accept.to_str().unwrap_or("").to_owned(),
        accept,
        head,
    };
    read.run().await
}

async fn by_digest(
    state: &ProxyState,
    route: &Route,
    digest: &str,
    accept: &HeaderValue,
    head: bool,
) -> Response<Body> {
    let Some(hex) = sha256_hex(digest) else {
        return only_sha256();
    };
    if let Some((body, media_type)) = state.cache.manifest(hex).await {
        if let Err(r) = ensure_confirmed(state, route, digest, ContentKind::Manifest).await {
            return r;
        }
        inc(&state.metrics.cache_hits_manifest);
        return response::manifest(body.into(), &media_type, digest, head);
    }
    inc(&state.metrics.cache_misses_manifest);
    match fetch_manifest(state, route, digest, accept, Some(digest)).await {
        Ok(m) => super::hold(
            response::manifest(m.body, &m.media_type, &m.digest, head),
            m.permit,
        ),
        Err(e) => api_error(&e),
    }
}

/// A cached tag resolution with its manifest.
struct CachedTag {
    entry: TagEntry,
    body: Vec<u8>,
    media_type: String,
}

/// What a `HEAD` revalidation of a cached tag found.
enum Revalidation {
    /// The tag still points at the cached digest.
    Same,
    /// It moved (or the answer carried no digest): fetch.
    Moved,
    /// The upstream could not answer: the cached resolution may be served.
    Unavailable(String),
    /// An answer to pass on (401/403/404 …).
    Failed(ApiError),
}

/// One read by tag.
struct TagRead<'a> {
    state: &'a ProxyState,
    route: &'a Route,
    tag: &'a str,
    accept: HeaderValue,
    accept_text: String,
    head: bool,
}

impl TagRead<'_> {
    async fn run(&self) -> Response<Body> {
        let (state, route) = (self.state, self.route);
        let allowed = state
            .policy
            .check_tag_allowed(&route.upstream, &route.repo, self.tag);
        if let Err(denied) = allowed {
            inc(&state.metrics.policy_denied);
            return api_error(&ApiError::from(&denied));
        }
        let cached = self.cached().await;
        if let Some(c) = &cached {
            if self.is_fresh(c) {
                return self.hit(c);
            }
            match self.revalidate(c).await {
                Revalidation::Same => {
                    self.store_tag(&c.entry.digest);
                    return self.hit(c);
                }
                Revalidation::Moved => {}
                Revalidation::Unavailable(why) => return self.serve_stale(c, &why),
                Revalidation::Failed(e) => return api_error(&e),
            }
        }
        inc(&state.metrics.cache_misses_manifest);
        self.fetch(cached).await
    }

    async fn cached(&self) -> Option<CachedTag> {
        let up_key = self.route.upstream.key();
        let cache = &self.state.cache;
        let entry = cache.tag(&up_key, &self.route.repo, self.tag, &self.accept_text)?;
        let (body, media_type) = cache.manifest(sha256_hex(&entry.digest)?).await?;
        Some(CachedTag {
            entry,
            body,
            media_type,
        })
    }

    fn is_fresh(&self, c: &CachedTag) -> bool {
        now_secs().saturating_sub(c.entry.checked_at) < self.state.tag_ttl.as_secs()
    }

    fn store_tag(&self, digest: &str) {
        let e = TagEntry {
            upstream: self.route.upstream.key(),
            repo: self.route.repo.clone(),
            tag: self.tag.to_owned(),
            accept: self.accept_text.clone(),
            digest: digest.to_owned(),
            checked_at: now_secs(),
        };
        if let Err(err) = self.state.cache.put_tag(&e) {
            tracing::warn!(error = %err, "could not cache tag");
        }
    }

    /// The digest-pin check for what the tag resolved to: the 403 to send, if it fails.
    fn pin_denial(&self, digest: &str) -> Option<Response<Body>> {
        let route = self.route;
        let checked = self
            .state
            .policy
            .check_pin(&route.upstream, &route.repo, self.tag, digest);
        let denied = checked.err()?;
        inc(&self.state.metrics.policy_denied);
        tracing::warn!("{denied}");
        Some(api_error(&ApiError::from(&denied)))
    }

    /// The cached resolution, pin-checked.
    fn cached_response(&self, c: &CachedTag) -> Response<Body> {
        if let Some(r) = self.pin_denial(&c.entry.digest) {
            return r;
        }
        self.manifest_of(c)
    }

    fn manifest_of(&self, c: &CachedTag) -> Response<Body> {
        let body = Bytes::from(c.body.clone());
        response::manifest(body, &c.media_type, &c.entry.digest, self.head)
    }

    /// A cache hit: pin-checked and counted.
    fn hit(&self, c: &CachedTag) -> Response<Body> {
        if let Some(r) = self.pin_denial(&c.entry.digest) {
            return r;
        }
        inc(&self.state.metrics.cache_hits_manifest);
        self.manifest_of(c)
    }

    async fn revalidate(&self, c: &CachedTag) -> Revalidation {
        let route = self.route;
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, self.accept.clone());
        let path = format!("{}/manifests/{}", route.repo, self.tag);
        let sent = self
            .state
            .client
            .send(&route.upstream, &route.repo, Method::HEAD, &path, &h)
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) if e.is_unavailable() => return Revalidation::Unavailable(e.to_string()),
            Err(e) => return Revalidation::Failed(ApiError::from(e)),
        };
        let status = r.status();
        if status == StatusCode::OK {
            let digest = r.headers().get(DOCKER_CONTENT_DIGEST);
            let same = digest
                .and_then(|v| v.to_str().ok())
                .is_some_and(|d| d == c.entry.digest);
            return if same {
                Revalidation::Same
            } else {
                Revalidation::Moved
            };
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Revalidation::Unavailable(format!("upstream answered {status}"));
        }
        let what = format!("manifest {}:{}", route.repo, self.tag);
        let e = ApiError::from_status(status, r.headers(), ErrorCode::ManifestUnknown, &what);
        Revalidation::Failed(e)
    }

    fn serve_stale(&self, c: &CachedTag, why: &str) -> Response<Body> {
        inc(&self.state.metrics.stale_served);
        let (up, repo) = (&self.route.upstream, &self.route.repo);
        tracing::warn!(upstream = %up.authority, repo = %repo, tag = self.tag, "serving cached tag: {why}");
        let mut r = self.cached_response(c);
        if r.status() == StatusCode::OK {
            r.headers_mut().insert(
                header::WARNING,
                HeaderValue::from_static("110 regauth \"stale: upstream unavailable\""),
            );
        }
        r
    }

    /// A miss (or a moved tag): fetch; if the upstream is unavailable, an old resolution serves.
    async fn fetch(&self, cached: Option<CachedTag>) -> Response<Body> {
        let (state, route) = (self.state, self.route);
        match fetch_manifest(state, route, self.tag, &self.accept, None).await {
            Ok(m) => {
                if let Some(r) = self.pin_denial(&m.digest) {
                    return r;
                }
                self.store_tag(&m.digest);
                let r = response::manifest(m.body, &m.media_type, &m.digest, self.head);
                super::hold(r, m.permit)
            }
            Err(e) => match cached {
                Some(c) if e.unavailable => {
                    inc(&state.metrics.stale_served);
                    self.cached_response(&c)
                }
                _ => api_error(&e),
            },
        }
    }
}

/// The client's `Accept` (all of its values), or every manifest type.
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

/// GETs a manifest upstream, verifies it and stores it. `expected` = the digest asked for.
async fn fetch_manifest(
    state: &ProxyState,
    route: &Route,
    reference: &str,
    accept: &HeaderValue,
    expected: Option<&str>,
) -> Result<FetchedManifest, ApiError> {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, accept.clone());
    let path = format!("{}/manifests/{reference}", route.repo);
    let resp = state
        .client
        .send(&route.upstream, &route.repo, Method::GET, &path, &h)
        .await?;
    if resp.status() != StatusCode::OK {
        let what = format!("manifest {}:{reference}", route.repo);
        let unknown = ErrorCode::ManifestUnknown;
        return Err(ApiError::from_status(
            resp.status(),
            resp.headers(),
            unknown,
            &what,
        ));
    }
    let header_text = |name| {
        let v = resp.headers().get(name)?.to_str().ok()?;
        Some(v.to_owned())
    };
    let content_type = header_text(header::CONTENT_TYPE)
        .map(|s| s.split(';').next().unwrap_or(&s).trim().to_owned());
    let header_digest = header_text(DOCKER_CONTENT_DIGEST);
    let (body, permit) = read_buffered(state, resp, "manifest").await?;
    let received = body.len() as u64;
    state.metrics.upstream_bytes.fetch_add(received, Relaxed);
    let check = Check {
        state,
        route,
        reference,
    };
    let digest = check.verify(&body, expected, header_digest.as_deref())?;
    let media_type = content_type.unwrap_or_else(|| media_type_of(&body));
    store(state, route, &body, &media_type, &digest).await;
    Ok(FetchedManifest {
        body,
        media_type,
        digest,
        permit: Arc::new(permit),
    })
}

/// Verifying a fetched manifest.
struct Check<'a> {
    state: &'a ProxyState,
    route: &'a Route,
    reference: &'a str,
}

impl Check<'_> {
    /// The body's digest, if it matches what was asked for and what the upstream claimed.
    fn verify(
        &self,
        body: &[u8],
        expected: Option<&str>,
        header_digest: Option<&str>,
    ) -> Result<String, ApiError> {
        let actual = format!("sha256:{:x}", Sha256::digest(body));
        if let Some(e) = expected
            && e != actual
        {
            return Err(self.mismatch(&actual, "the requested digest", e));
        }
        if let Some(d) = header_digest
            && d.starts_with("sha256:")
            && d != actual
        {
            return Err(self.mismatch(&actual, "Docker-Content-Digest", d));
        }
        Ok(actual)
    }

    fn mismatch(&self, actual: &str, what: &str, want: &str) -> ApiError {
        inc(&self.state.metrics.verification_failures);
        let (up, repo) = (&self.route.upstream, &self.route.repo);
        tracing::warn!(upstream = %up.authority, repo = %repo, reference = self.reference, "manifest verification failed: {what} {want}, body {actual}");
        let message = format!("upstream manifest hashes to {actual}, but {what} is {want}");
        ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::ManifestInvalid, message)
    }
}

/// `mediaType` from the body, or the OCI manifest type.
fn media_type_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned())
}

/// Caches a verified manifest and records that this repository has it.
async fn store(state: &ProxyState, route: &Route, body: &[u8], media_type: &str, digest: &str) {
    let hex = &digest["sha256:".len()..];
    if let Err(e) = state.cache.put_manifest(hex, body, media_type).await {
        tracing::warn!(error = %e, "could not cache manifest");
    }
    if let Ok(c) = state.client.creds(&route.upstream).await {
        let up_key = route.upstream.key();
        state
            .cache
            .confirm(&up_key, &route.repo, digest, &c.identity);
    }
}
