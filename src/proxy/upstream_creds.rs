//! Which credentials does the proxy hold for an upstream?
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
//! Does not own: what to do with the credential (the token dance is [`super::upstream_auth`];
//! the request that uses it is [`super::upstream`]).

use super::error::CredentialError;
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
    /// Where the credential came from (`DOCKER_AUTH_CONFIG`, a config path, a helper), for logs.
    pub source: Option<String>,
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
    pub async fn get(self: &Arc<Self>, host: &str) -> Result<Arc<UpstreamCreds>, CredentialError> {
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
            .map_err(|e| CredentialError::Unfinished {
                host: host.to_owned(),
                why: e.to_string(),
            })?
            .map_err(|source| CredentialError::Lookup {
                host: host.to_owned(),
                source,
            })?;
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
        let source = match (&res.source, &res.helper) {
            (Some(s), Some(h)) => Some(format!("docker-credential-{h} named in {s}")),
            (Some(s), None) => Some(s.clone()),
            (None, Some(h)) => Some(format!("docker-credential-{h}")),
            (None, None) => None,
        };
        let v = Arc::new(UpstreamCreds {
            credential: res.credential,
            identity,
            source,
        });
        if let Ok(mut c) = self.cache.lock() {
            c.insert(host.to_owned(), (Instant::now(), v.clone()));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::Upstream;
    use crate::resolve::Profile;

    #[tokio::test]
    async fn docker_hub_upstream_uses_the_hub_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let mut r = Resolver::new(Profile::Docker);
        r.env = crate::config::locations::Env::from_pairs([("HOME", "/nonexistent")]);
        r.config_dir = Some(dir.path().to_owned());
        let store = Arc::new(CredStore::new(r));
        for url in [
            "https://registry-1.docker.io",
            "https://docker.io",
            "https://index.docker.io",
        ] {
            let up = Upstream::from_url("hub", url).unwrap();
            let c = store.get(&up.cred_host).await.unwrap();
            let cred = c.credential.as_ref().expect("hub credential");
            assert_eq!(cred.username, "u");
            // user + a 16-hex-digit hash of the secret, never the secret itself.
            assert!(
                c.identity.starts_with("u#") && c.identity.len() == 2 + 16,
                "{}",
                c.identity
            );
        }
        let other = store.get("127.0.0.1:5999").await.unwrap();
        assert!(other.credential.is_none());
        assert_eq!(other.identity, "anonymous");
    }
}
