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

use super::authz::{ensure_confirmed, from_origin};
use super::read_buffered;
use super::{CacheResult, mark, only_sha256};
use crate::proxy::cache::{OCI_MANIFEST, TagEntry, manifest_media_type, now_secs, sha256_hex};
use crate::proxy::confirmations::Freshness;
use crate::proxy::error::{ApiError, ErrorCode};
use crate::proxy::response::{self, Body, DOCKER_CONTENT_DIGEST, api_error};
use crate::proxy::route::Route;
use crate::proxy::state::{FetchedManifest, ManifestKey, ProxyState};
use crate::proxy::store::ContentKind;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The `Accept` sent when the client sent none.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

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
    let what = format!("manifest {}:{digest}", route.repo);
    // Bytes another registry served are not this registry's answer: a miss here.
    let cached = match state.cache.manifest(hex).await {
        Some(m) if from_origin(state, route, digest).await => Some(m),
        _ => None,
    };
    if let Some((body, media_type)) = cached {
        let kind = ContentKind::Manifest;
        if let Err(r) = ensure_confirmed(state, route, digest, kind, &what).await {
            return r;
        }
        state.metrics.cache_hit(ContentKind::Manifest);
        let r = response::manifest(body.into(), &media_type, digest, head);
        return mark(r, CacheResult::Hit);
    }
    state.metrics.cache_miss(ContentKind::Manifest);
    let r = match fetch_manifest(state, route, digest, accept, Some(digest), None).await {
        Ok(m) => super::hold(
            response::manifest(m.body, &m.media_type, &m.digest, head),
            m.permit,
        ),
        Err(e) => api_error(&e),
    };
    mark(r, CacheResult::Miss)
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
            state.metrics.policy_denied();
            return api_error(&ApiError::from(&denied));
        }
        let cached = self.cached().await;
        if let Some(c) = &cached {
            if self.is_fresh(c) {
                // A fresh tag is still only for credentials the upstream confirmed; a refusal
                // reads as a miss by tag would (no digest in it).
                let (d, kind) = (&c.entry.digest, ContentKind::Manifest);
                let what = format!("manifest {}:{}", route.repo, self.tag);
                if let Err(r) = ensure_confirmed(state, route, d, kind, &what).await {
                    return r;
                }
                return mark(self.hit(c), CacheResult::Hit);
            }
            match self.revalidate(c).await {
                Revalidation::Same => {
                    // The HEAD was answered to this request's credentials.
                    state
                        .client
                        .confirmed(&route.upstream, &route.repo, &c.entry.digest)
                        .await;
                    self.store_tag(&c.entry.digest).await;
                    state.metrics.revalidated();
                    return mark(self.hit(c), CacheResult::Revalidated);
                }
                Revalidation::Moved => {}
                Revalidation::Unavailable(why) => {
                    if !self.recently_confirmed(&c.entry.digest).await {
                        let e = ApiError {
                            unavailable: true,
                            ..ApiError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                ErrorCode::Unavailable,
                                "the upstream is unavailable",
                            )
                        };
                        return api_error(&e);
                    }
                    return mark(self.serve_stale(c, &why), CacheResult::Stale);
                }
                Revalidation::Failed(e) => return api_error(&e),
            }
        }
        state.metrics.cache_miss(ContentKind::Manifest);
        self.fetch(cached).await
    }

    async fn cached(&self) -> Option<CachedTag> {
        let up_key = self.route.upstream.key();
        let cache = &self.state.cache;
        let entry = cache
            .tag(&up_key, &self.route.repo, self.tag, &self.accept_text)
            .await?;
        let (body, media_type) = cache.manifest(sha256_hex(&entry.digest)?).await?;
        Some(CachedTag {
            entry,
            body,
            media_type,
        })
    }

    /// Did the upstream confirm this request's credentials for `digest` here recently enough to
    /// serve it stale while it cannot be asked?
    async fn recently_confirmed(&self, digest: &str) -> bool {
        let (state, route) = (self.state, self.route);
        let Ok(creds) = state.client.creds(&route.upstream, &route.repo).await else {
            return false;
        };
        let registry = route.upstream.registry.to_string();
        let known =
            state
                .client
                .confirmations
                .check(&creds.identity, &registry, &route.repo, digest);
        matches!(known, Some(Freshness::Fresh | Freshness::Stale))
    }

    fn is_fresh(&self, c: &CachedTag) -> bool {
        now_secs().saturating_sub(c.entry.checked_at) < self.state.tag_ttl.as_secs()
    }

    async fn store_tag(&self, digest: &str) {
        let e = TagEntry {
            upstream: self.route.upstream.key(),
            repo: self.route.repo.clone(),
            tag: self.tag.to_owned(),
            accept: self.accept_text.clone(),
            digest: digest.to_owned(),
            checked_at: now_secs(),
        };
        if let Err(err) = self.state.cache.put_tag(&e).await {
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
        self.state.metrics.policy_denied();
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
        self.state.metrics.cache_hit(ContentKind::Manifest);
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
        self.state.metrics.stale_served();
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
        match fetch_manifest(state, route, self.tag, &self.accept, None, Some(self)).await {
            Ok(m) => {
                // (The flight stored the resolution, if the pin allows it.)
                if let Some(r) = self.pin_denial(&m.digest) {
                    return r;
                }
                let r = response::manifest(m.body, &m.media_type, &m.digest, self.head);
                mark(super::hold(r, m.permit), CacheResult::Miss)
            }
            Err(e) => match cached {
                Some(c) if e.unavailable && self.recently_confirmed(&c.entry.digest).await => {
                    state.metrics.stale_served();
                    mark(self.cached_response(&c), CacheResult::Stale)
                }
                _ => mark(api_error(&e), CacheResult::Miss),
            },
        }
    }
}

/// The client's `Accept` (all of its values), or every OCI and Docker v2 manifest type when it
/// named none. A bare wildcard (`*/*`, what curl sends) names none: a registry answers that with
/// its oldest format (schema1) or a 404, and schema1 cannot be verified.
fn accept_of(headers: &HeaderMap) -> HeaderValue {
    let parts: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| {
            let t = p.split(';').next().unwrap_or("").trim();
            !t.is_empty() && t != "*/*" && t != "application/*"
        })
        .collect();
    if parts.is_empty() {
        HeaderValue::from_static(MANIFEST_TYPES)
    } else {
        HeaderValue::from_str(&parts.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(MANIFEST_TYPES))
    }
}

/// [`fetch_one`] (and, for a tag read, storing the tag), shared by every request that asks for
/// the same manifest while it runs: a thousand clients pulling one cold tag make one upstream GET
/// (and one token request).
async fn fetch_manifest(
    state: &ProxyState,
    route: &Route,
    reference: &str,
    accept: &HeaderValue,
    expected: Option<&str>,
    tag: Option<&TagRead<'_>>,
) -> Result<FetchedManifest, ApiError> {
    let fetch = || async move {
        let m = fetch_one(state, route, reference, accept, expected).await?;
        // A tag's resolution is stored before the result is shared: a request that arrives
        // after the flight ended finds it cached instead of starting another fetch.
        if let Some(t) = tag {
            let pin = state
                .policy
                .check_pin(&route.upstream, &route.repo, t.tag, &m.digest);
            if pin.is_ok() {
                t.store_tag(&m.digest).await;
            }
        }
        Ok(m)
    };
    // No credentials to key by: the fetch fails on its own, counted and logged as usual.
    let Ok(creds) = state.client.creds(&route.upstream, &route.repo).await else {
        return fetch().await;
    };
    let key = ManifestKey {
        upstream: route.upstream.key(),
        repo: route.repo.clone(),
        reference: reference.to_owned(),
        accept: accept.as_bytes().to_vec(),
        identity: creds.identity.clone(),
    };
    state.manifest_flights.run(key, fetch).await
}

/// GETs a manifest upstream, verifies it and stores it. `expected` = the digest asked for.
async fn fetch_one(
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
    // The upstream's Content-Type is not covered by the digest: the media type served comes from
    // the verified bytes (`cache::manifest_media_type`), never from this header.
    let header_digest = resp
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (body, permit) = read_buffered(state, resp, "manifest").await?;
    state
        .metrics
        .upstream_bytes(&route.upstream, body.len() as u64);
    if is_schema1(&body) {
        return Err(schema1_refused(state, route, reference));
    }
    let check = Check {
        state,
        route,
        reference,
    };
    let digest = check.verify(&body, expected, header_digest.as_deref())?;
    let media_type = manifest_media_type(&body).unwrap_or_else(|| OCI_MANIFEST.to_owned());
    store(state, route, &body, &digest).await;
    Ok(FetchedManifest {
        body,
        media_type,
        digest,
        permit: Arc::new(permit),
    })
}

/// A schema1 answer: counted and logged as what it is (not as a failed verification).
fn schema1_refused(state: &ProxyState, route: &Route, reference: &str) -> ApiError {
    let up = &route.upstream;
    state
        .metrics
        .upstream_error(up, crate::proxy::metrics::UpstreamErrorKind::Schema1);
    tracing::warn!(upstream = %up.authority, repo = %route.repo, reference, kind = "schema1",
        "{} served a schema1 manifest (unsupported) for {}:{reference}", up.authority, route.repo);
    let message = format!(
        "upstream served a schema1 manifest (unsupported) for {}:{reference}",
        route.repo
    );
    ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::ManifestInvalid, message)
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
        self.state
            .metrics
            .verification_failure(ContentKind::Manifest);
        let (up, repo) = (&self.route.upstream, &self.route.repo);
        tracing::warn!(upstream = %up.authority, repo = %repo, reference = self.reference, "manifest verification failed: {what} {want}, body {actual}");
        let message = format!("upstream manifest hashes to {actual}, but {what} is {want}");
        ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::ManifestInvalid, message)
    }
}

/// Docker's schema1 (`"schemaVersion": 1`): signed manifests whose digest is not the body's,
/// which this proxy does not serve. Judged by the bytes alone: the upstream's Content-Type is not
/// covered by any digest, and a schema1 label on v2 bytes must not refuse a good manifest.
fn is_schema1(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("schemaVersion")?.as_u64())
        == Some(1)
}

/// Caches a verified manifest and records that this repository has it.
async fn store(state: &ProxyState, route: &Route, body: &[u8], digest: &str) {
    let hex = &digest["sha256:".len()..];
    if let Err(e) = state.cache.put_manifest(hex, body).await {
        tracing::warn!(error = %e, "could not cache manifest");
    }
    // This registry served these bytes (they verified), to these credentials for this
    // repository.
    state
        .cache
        .record_origin(&route.upstream.registry, digest)
        .await;
    state
        .client
        .confirmed(&route.upstream, &route.repo, digest)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema1_is_recognised_and_wildcards_get_the_v2_types() {
        assert!(is_schema1(br#"{"schemaVersion":1,"name":"x"}"#));
        assert!(!is_schema1(br#"{"schemaVersion":2}"#));
        assert!(!is_schema1(b"{}"));
        let mut h = HeaderMap::new();
        assert_eq!(accept_of(&h), MANIFEST_TYPES);
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(accept_of(&h), MANIFEST_TYPES);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json, */*;q=0.1"),
        );
        assert_eq!(accept_of(&h), "application/vnd.oci.image.manifest.v1+json");
    }
}
