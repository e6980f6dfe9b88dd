//! Which credentials does the proxy hold for an upstream repository?
//!
//! Owns: asking THE resolver ([`crate::resolve::Resolver`]) the question its profile asks — the
//! docker profile by registry host (`docker.io` for Docker Hub, so Hub's
//! `https://index.docker.io/v1/` key applies), the GitLab profile by `host/repository` (GitLab
//! Runner matches keys by the longest path prefix, so `registry.example.com:5000/team` applies to
//! `team/app` and not to `other/app`, exactly as `regauth resolve --profile gitlab` answers) — and
//! a short, bounded cache of the answers.
//!
//! Why `spawn_blocking`: the resolver may run `docker-credential-*` helpers — child processes
//! with their own timeouts — which must not stall the async runtime. Why a cache (30 s): docker
//! makes dozens of requests per pull and a helper run per request would dominate; short enough
//! that a `docker login` or a rotated secret is picked up quickly. Failures are not cached. Why
//! bounded, with one lookup in flight per registry: every distinct repository is a key under the
//! GitLab profile, and a client naming many of them must not make the proxy spawn helpers without
//! limit (at most one helper run per registry at a time; the cache holds at most `capacity`
//! answers, oldest dropped first).
//!
//! Does not own: what to do with the credential (the token dance is [`super::upstream_auth`]).

use super::error::CredentialError;
use crate::reference::Target;
use crate::resolve::{Credential, Profile, Resolver};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);

/// A credential (or none) plus a non-secret identity for cache keys.
#[derive(Clone, Debug)]
pub struct UpstreamCreds {
    pub credential: Option<Credential>,
    /// `anonymous`, or the user name plus a short hash of the secret (never the secret).
    pub identity: String,
    /// Where the credential came from (`DOCKER_AUTH_CONFIG`, a config file path, `job`), for
    /// operator messages; `None` when there is none.
    pub source: Option<String>,
}

/// What an answer is cached under: the registry, and the repository where the profile looks
/// at paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CredKey {
    host: String,
    repo: Option<String>,
}

type Answers = HashMap<CredKey, (Instant, Arc<UpstreamCreds>)>;

/// Resolver front with a bounded cache.
#[derive(Debug)]
pub struct CredStore {
    resolver: Resolver,
    capacity: usize,
    cache: Mutex<Answers>,
    /// One lookup at a time per registry host (the hosts are the allowlist's, so this is bounded).
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Locks a std mutex; a panic elsewhere leaves a usable map behind, so poisoning must not disable
/// the cache.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CredStore {
    /// A store keeping at most `capacity` answers.
    pub fn new(resolver: Resolver, capacity: usize) -> CredStore {
        CredStore {
            resolver,
            capacity: capacity.max(1),
            cache: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, host: &str, repo: &str) -> CredKey {
        let repo =
            (self.resolver.profile == Profile::Gitlab && !repo.is_empty()).then(|| repo.to_owned());
        CredKey {
            host: host.to_owned(),
            repo,
        }
    }

    fn cached(&self, key: &CredKey) -> Option<Arc<UpstreamCreds>> {
        let cache = relock(&self.cache);
        let (t, v) = cache.get(key)?;
        (t.elapsed() < TTL).then(|| v.clone())
    }

    fn remember(&self, key: CredKey, v: Arc<UpstreamCreds>) {
        let mut cache = relock(&self.cache);
        if cache.len() >= self.capacity && !cache.contains_key(&key) {
            cache.retain(|_, (t, _)| t.elapsed() < TTL);
            while cache.len() >= self.capacity {
                let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (Instant::now(), v));
    }

    /// Credentials for repository `repo` on registry `host[:port]` (`repo` may be empty, for
    /// `/v2/`).
    pub async fn get(
        self: &Arc<Self>,
        host: &str,
        repo: &str,
    ) -> Result<Arc<UpstreamCreds>, CredentialError> {
        let key = self.key(host, repo);
        if let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let gate = relock(&self.running)
            .entry(host.to_owned())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        // Whoever ran before us may have answered this very key.
        if let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let v = Arc::new(self.lookup(&key).await?);
        self.remember(key, v.clone());
        Ok(v)
    }

    async fn lookup(self: &Arc<Self>, key: &CredKey) -> Result<UpstreamCreds, CredentialError> {
        let me = self.clone();
        let (host, repo) = (key.host.clone(), key.repo.clone());
        let res = tokio::task::spawn_blocking(move || match repo {
            Some(repo) => match Target::image(&format!("{host}/{repo}")) {
                Ok(target) => me.resolver.resolve(&target),
                Err(_) => me.resolver.resolve_host(&host),
            },
            None => me.resolver.resolve_host(&host),
        })
        .await
        .map_err(|e| CredentialError::Unfinished {
            host: key.host.clone(),
            why: e.to_string(),
        })?
        .map_err(|source| CredentialError::Lookup {
            host: key.host.clone(),
            source,
        })?;
        for w in &res.warnings {
            tracing::warn!(upstream = %key.host, "{w}");
        }
        tracing::debug!(upstream = %key.host, repo = ?key.repo, source = ?res.source, registry_key = ?res.registry, kind = ?res.kind.map(|k| k.as_str()), "upstream credentials resolved");
        let source = match (&res.source, &res.helper) {
            (Some(s), Some(h)) => Some(format!("docker-credential-{h} named in {s}")),
            (Some(s), None) => Some(s.clone()),
            (None, Some(h)) => Some(format!("docker-credential-{h}")),
            (None, None) => None,
        };
        Ok(UpstreamCreds {
            identity: identity_of(res.credential.as_ref()),
            source: res.credential.as_ref().and(source),
            credential: res.credential,
        })
    }
}

/// `anonymous`, or `user#<16 hex of a per-process keyed hash>` ([`super::confirmations::fingerprint`]).
fn identity_of(c: Option<&Credential>) -> String {
    match c {
        None => "anonymous".to_owned(),
        Some(c) => super::confirmations::fingerprint(&c.username, c.secret.expose()),
    }
}

#[cfg(test)]
#[path = "upstream_creds_tests.rs"]
mod tests;
