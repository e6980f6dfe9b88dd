//! One authorized request to an upstream registry.
//!
//! Owns: [`UpstreamClient`] — the credentials ([`super::upstream_creds`]), the [`Authorizer`]
//! ([`super::upstream_auth`]) and the [`Fetcher`] ([`super::fetch`]) put together: send with the
//! best known `Authorization`; on a 401 learn the challenge, fetch a token and retry once. It is
//! also the one place upstream registry requests are counted (`upstream_requests`), so a handler
//! or the blob downloader cannot forget to.
//!
//! Why the retry lives here and not in `fetch`: the fetcher is plain HTTP and must stay below auth
//! (auth uses it for token requests); putting the retry there made the two modules import each
//! other.
//!
//! Does not own: what to ask for or what to do with the answer (the handlers, [`super::verify`]).

use super::error::UpstreamError;
use super::fetch::Fetcher;
use super::metrics::{Metrics, inc};
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
}

impl UpstreamClient {
    pub fn new(fetcher: Fetcher, creds: CredStore, metrics: Arc<Metrics>) -> UpstreamClient {
        UpstreamClient {
            fetcher,
            creds: Arc::new(creds),
            auth: Authorizer::default(),
            metrics,
        }
    }

    /// The credentials the proxy holds for repository `repo` of `up` (the profile decides whether
    /// the repository matters).
    pub async fn creds(
        &self,
        up: &Upstream,
        repo: &str,
    ) -> Result<Arc<UpstreamCreds>, UpstreamError> {
        Ok(self.creds.get(&up.cred_host, repo).await?)
    }

    /// `method base/v2/<path>` about `repo`, authorized; one retry after a 401 challenge.
    /// Counted once in `upstream_requests`, however many exchanges it takes.
    pub async fn send(
        &self,
        up: &Upstream,
        repo: &str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        inc(&self.metrics.upstream_requests);
        let creds = self.creds(up, repo).await?;
        let url = format!("{}/v2/{path}", up.base_url());
        let mut learned = false;
        loop {
            let auth = self.auth.header(&self.fetcher, up, repo, &creds).await?;
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
