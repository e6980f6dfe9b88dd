//! Step 3: which credentials does the proxy hold for an upstream?
//!
//! Owns: asking THE resolver ([`crate::resolve::Resolver::resolve_host`]) by the upstream's
//! registry host (`docker.io` for Docker Hub, so Hub's `https://index.docker.io/v1/` key applies),
//! and a short cache of the answer.
//!
//! Why `spawn_blocking`: the resolver may run `docker-credential-*` helpers — child processes
//! with their own timeouts — which must not stall the async runtime. Why a cache (30 s): docker
//! makes dozens of requests per pull and a helper run per request would dominate; short enough
//! that a `docker login` or a rotated secret is picked up quickly. Failures are not cached.
//!
//! Does not own: what to do with the credential (the token dance is [`super::upstream_auth`]).

use crate::resolve::{Credential, Resolver};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);

/// A credential (or none) plus a non-secret identity for cache keys.
#[derive(Clone, Debug)]
pub struct UpstreamCreds {
    pub credential: Option<Credential>,
    /// `anonymous`, or the user name plus a short hash of the secret (never the secret).
    pub identity: String,
}

/// Resolver front with a cache.
#[derive(Debug)]
pub struct CredStore {
    resolver: Resolver,
    cache: Mutex<HashMap<String, (Instant, Arc<UpstreamCreds>)>>,
}

impl CredStore {
    pub fn new(resolver: Resolver) -> CredStore {
        CredStore {
            resolver,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Credentials for `host[:port]`.
    pub async fn get(self: &Arc<Self>, host: &str) -> Result<Arc<UpstreamCreds>, String> {
        if let Ok(c) = self.cache.lock()
            && let Some((t, v)) = c.get(host)
            && t.elapsed() < TTL
        {
            return Ok(v.clone());
        }
        let me = self.clone();
        let h = host.to_owned();
        let res = tokio::task::spawn_blocking(move || me.resolver.resolve_host(&h))
            .await
            .map_err(|e| format!("credential lookup for {host} did not finish: {e}"))?
            .map_err(|e| format!("credential lookup for {host}: {e}"))?;
        for w in &res.warnings {
            tracing::warn!(upstream = host, "{w}");
        }
        let identity = match &res.credential {
            None => "anonymous".to_owned(),
            Some(c) => {
                let h = Sha256::digest(c.secret.expose().as_bytes());
                format!("{}#{:x}", c.username, h)[..c.username.len() + 17].to_owned()
            }
        };
        tracing::debug!(upstream = host, source = ?res.source, kind = ?res.kind.map(|k| k.as_str()), "upstream credentials resolved");
        let v = Arc::new(UpstreamCreds {
            credential: res.credential,
            identity,
        });
        if let Ok(mut c) = self.cache.lock() {
            c.insert(host.to_owned(), (Instant::now(), v.clone()));
        }
        Ok(v)
    }
}
