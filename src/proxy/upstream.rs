//! One authorized request to an upstream registry.
//!
//! Owns: [`UpstreamClient`] — the credentials ([`super::upstream_creds`]), the [`Authorizer`]
//! ([`super::upstream_auth`]) and the [`Fetcher`] ([`super::fetch`]) put together: send with the
//! best known `Authorization`; on a 401 learn the challenge, fetch a token and retry once. It is
//! also the one place upstream registry requests are counted (`regauth_upstream_requests_total`)
//! and upstream failures are logged for the operator (host, cause, credential source), so a
//! handler or the blob downloader cannot forget to.
//!
//! Why the retry lives here and not in `fetch`: the fetcher is plain HTTP and must stay below auth
//! (auth uses it for token requests); putting the retry there made the two modules import each
//! other.
//!
//! Does not own: what to ask for or what to do with the answer (the handlers, [`super::verify`]).

use super::confirmations::Confirmations;
use super::error::{UpstreamError, UpstreamErrorKind};
use super::fetch::Fetcher;
use super::metrics::Metrics;
use super::route::Upstream;
use super::upstream_auth::Authorizer;
use super::upstream_creds::{CredStore, UpstreamCreds};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Response, StatusCode};
use std::sync::Arc;

/// Fetcher + credentials + authorizer: authorized requests to an upstream.
#[derive(Debug)]
pub struct UpstreamClient {
    fetcher: Fetcher,
    creds: Arc<CredStore>,
    auth: Authorizer,
    metrics: Arc<Metrics>,
    /// What the upstreams confirmed to which credentials (for `--authz-ttl`).
    pub confirmations: Confirmations,
}

impl UpstreamClient {
    pub fn new(fetcher: Fetcher, creds: CredStore, metrics: Arc<Metrics>) -> UpstreamClient {
        UpstreamClient {
            fetcher,
            creds: Arc::new(creds),
            auth: Authorizer::default(),
            metrics,
            confirmations: Confirmations::default(),
        }
    }

    /// How long a confirmation serves cached content without asking again (`--authz-ttl`).
    pub fn with_authz_ttl(mut self, ttl: std::time::Duration) -> UpstreamClient {
        self.confirmations = Confirmations::new(ttl);
        // A token carries the grants of its issue: kept no longer than a confirmation.
        self.auth = Authorizer::with_max_ttl(ttl);
        self
    }

    /// The upstream answered 200 with `digest` for `repo` to this request's credentials (a GET
    /// that verified): remembered as a confirmation.
    pub async fn confirmed(&self, up: &Upstream, repo: &str, digest: &str) {
        if let Ok(c) = self.creds(up, repo).await {
            let registry = up.registry.to_string();
            self.confirmations
                .confirm(&c.identity, &registry, repo, digest);
        }
    }

    /// The credentials requests for repository `repo` of `up` go with: a pass-through client's
    /// own ([`Upstream::acting`]), else the proxy's (the profile decides whether the repository
    /// matters).
    pub async fn creds(
        &self,
        up: &Upstream,
        repo: &str,
    ) -> Result<Arc<UpstreamCreds>, UpstreamError> {
        if let Some(c) = &up.acting {
            // Sent as the client sent them: Basic upstream, or the password of a token request.
            let credential = crate::resolve::Credential {
                username: c.user.clone(),
                secret: c.secret.clone(),
                secret_kind: crate::resolve::SecretKind::Password,
            };
            return Ok(Arc::new(UpstreamCreds {
                credential: Some(credential),
                identity: c.identity.clone(),
                source: Some("the client (pass-through)".to_owned()),
            }));
        }
        Ok(self.creds.get(&up.cred_host, repo).await?)
    }

    /// `method base/v2/<path>` about `repo`, authorized; one retry after a 401 challenge.
    /// Counted once in `regauth_upstream_requests_total`, however many exchanges it takes; a
    /// failure (no answer, or a final 401) is counted by kind and logged once for the operator.
    pub async fn send(
        &self,
        up: &Upstream,
        repo: &str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let creds = match self.creds(up, repo).await {
            Ok(c) => c,
            Err(e) => return Err(self.failed(up, None, e)),
        };
        match self.exchange(up, repo, method, path, headers, &creds).await {
            Ok(resp) => {
                let status = resp.status();
                self.metrics.upstream_request(up, Ok(status.as_u16()));
                if status == StatusCode::UNAUTHORIZED {
                    self.metrics
                        .upstream_error(up, UpstreamErrorKind::Unauthorized);
                    warn_unauthorized(up, &creds, "401");
                }
                Ok(resp)
            }
            Err(e) => Err(self.failed(up, Some(&creds), e)),
        }
    }

    /// Counts and logs a failed exchange; returns the error.
    fn failed(
        &self,
        up: &Upstream,
        creds: Option<&UpstreamCreds>,
        e: UpstreamError,
    ) -> UpstreamError {
        let kind = e.kind();
        self.metrics.upstream_request(up, Err(kind));
        self.metrics.upstream_error(up, kind);
        match (kind, creds) {
            (UpstreamErrorKind::Unauthorized, Some(c)) => warn_unauthorized(up, c, &e.to_string()),
            _ => tracing::warn!(
                upstream = %up.authority,
                kind = kind.as_str(),
                "{} {}: {e}",
                up.authority,
                kind.describe()
            ),
        }
        e
    }

    async fn exchange(
        &self,
        up: &Upstream,
        repo: &str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        creds: &UpstreamCreds,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let url = format!("{}/v2/{path}", up.base_url());
        let mut learned = false;
        loop {
            let auth = self.auth.header(&self.fetcher, up, repo, creds).await?;
            let resp = self
                .fetcher
                .send(method.clone(), &url, headers, auth.as_ref(), Bytes::new())
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || learned {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok());
            if self.auth.learn(up, challenge).is_none() {
                return Ok(resp);
            }
            if auth.is_some() {
                self.auth.forget_tokens(&creds.identity);
            }
            learned = true;
        }
    }
}

/// The operator's line for a refused credential: who was refused, and where it came from; or
/// that no credential was configured at all. Names the user, never the secret.
fn warn_unauthorized(up: &Upstream, creds: &UpstreamCreds, what: &str) {
    let host = &up.authority;
    match (&creds.credential, &creds.source) {
        (Some(c), source) => {
            let from = source.as_deref().unwrap_or("the resolver");
            tracing::warn!(upstream = %host, kind = "unauthorized", user = %c.username, credential_source = from,
                "{host} rejected {} (credentials from {from}): {what}", c.username);
        }
        (None, _) => {
            tracing::warn!(upstream = %host, kind = "unauthorized", user = "anonymous",
                "{host} requires credentials and none are configured for {} (anonymous): {what}", up.cred_host);
        }
    }
}
