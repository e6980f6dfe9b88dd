//! What the upstream has confirmed, for which credentials: the memory behind authorized cache hits.
//!
//! Owns: [`Confirmations`] — "registry R said that repository P has digest D, to the credentials
//! F" (an authorized `HEAD` or `GET` answered 200), remembered for `--authz-ttl`; and
//! [`fingerprint`], the per-process keyed hash that stands for a credential wherever one must be
//! told apart from another (token cache, confirmations) without keeping or logging it.
//!
//! Why in memory and keyed: a confirmation on disk, keyed by a plain hash of the credential, would
//! let anyone who reads the cache folder test password guesses offline (the user name, registry,
//! repository and digest are not secret). Here the key is SHA-256 over a 32-byte random key drawn
//! at start-up plus length-prefixed fields; the key never leaves the process, so the values are
//! useless outside it and after a restart. Nothing here is logged, counted by name or written.
//!
//! Why a confirmation is per (credentials, canonical registry, repository, digest) and never per
//! routed-to host: content addressing dedupes across repositories and registries, so "the bytes
//! are cached" says nothing about who may have them. Bob's credentials confirmed for `team-b/app`
//! say nothing about `team-a/app`; a registry's answer says nothing about another registry's
//! repositories.
//!
//! Stale-if-error: an entry older than the TTL is not a confirmation, but while the upstream cannot
//! be asked (no answer, 5xx, 429) an entry younger than [`STALE_FOR`] still is — an outage must not
//! stop CI for identities the upstream recently vouched for, and must not open the cache to anyone
//! else.
//!
//! Does not own: asking the upstream ([`super::handler::authz`]) or which identity may ask for
//! which repository ([`super::access`]).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The identity of origin records in the cache's `confirmed/` entries: "this canonical registry
/// served these bytes and they verified" (no credential involved, so they may live on disk).
pub const ORIGIN: &str = "origin";

/// Default `--authz-ttl`.
pub const DEFAULT_AUTHZ_TTL: Duration = Duration::from_secs(300);

/// How long a confirmation still counts while the upstream is unreachable.
pub const STALE_FOR: Duration = Duration::from_secs(3600);

/// Confirmations kept at most (oldest dropped first).
const CAPACITY: usize = 65_536;

/// The per-process key: drawn once from the system's secure random source (the TLS provider's).
fn process_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        if provider.secure_random.fill(&mut k).is_err() {
            // No randomness: a key derived from the clock and address space still keeps values
            // from being stable across processes; log it, this host has a bigger problem.
            tracing::error!(
                "the system random number generator failed; confirmation keys are weak"
            );
            let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &k);
            k = Sha256::digest(seed.as_bytes()).into();
        }
        k
    })
}

/// Keyed hash of length-prefixed fields (so `("ab","c")` and `("a","bc")` differ).
fn keyed(fields: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(process_key());
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    h.finalize().into()
}

/// A credential's stand-in: `user#<16 hex of a keyed hash of user and secret>`. Stable for one
/// process, meaningless outside it; the user name is kept for the operator's eye in debugging.
pub fn fingerprint(user: &str, secret: &str) -> String {
    let h = keyed(&[b"credential", user.as_bytes(), secret.as_bytes()]);
    let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{user}#{hex}")
}

/// Is the answer fresh, or only good while the upstream cannot be asked?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than the TTL: serve without asking.
    Fresh,
    /// Older, but younger than [`STALE_FOR`]: serve only if the upstream cannot answer.
    Stale,
}

/// The confirmations, in memory.
#[derive(Debug)]
pub struct Confirmations {
    ttl: Duration,
    seen: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Default for Confirmations {
    fn default() -> Confirmations {
        Confirmations::new(DEFAULT_AUTHZ_TTL)
    }
}

impl Confirmations {
    pub fn new(ttl: Duration) -> Confirmations {
        Confirmations {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(identity: &str, registry: &str, repo: &str, digest: &str) -> [u8; 32] {
        keyed(&[
            b"confirmation",
            identity.as_bytes(),
            registry.as_bytes(),
            repo.as_bytes(),
            digest.as_bytes(),
        ])
    }

    /// `identity` ([`super::upstream_creds::UpstreamCreds::identity`]) was answered 200 for
    /// `digest` in `registry/repo`.
    pub fn confirm(&self, identity: &str, registry: &str, repo: &str, digest: &str) {
        let k = Confirmations::key(identity, registry, repo, digest);
        let mut seen = self.lock();
        if seen.len() >= CAPACITY && !seen.contains_key(&k) {
            seen.retain(|_, t| t.elapsed() < STALE_FOR);
            while seen.len() >= CAPACITY {
                let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) else {
                    break;
                };
                seen.remove(&oldest);
            }
        }
        seen.insert(k, Instant::now());
    }

    /// What is known for this (identity, registry, repository, digest); `None`: nothing usable.
    pub fn check(
        &self,
        identity: &str,
        registry: &str,
        repo: &str,
        digest: &str,
    ) -> Option<Freshness> {
        let k = Confirmations::key(identity, registry, repo, digest);
        let mut seen = self.lock();
        let age = seen.get(&k)?.elapsed();
        if age < self.ttl {
            Some(Freshness::Fresh)
        } else if age < STALE_FOR.max(self.ttl) {
            Some(Freshness::Stale)
        } else {
            seen.remove(&k);
            None
        }
    }

    /// Forgets the confirmation of `identity` for `digest` in `registry/repo` (the upstream
    /// refused it: a revocation applies at once, not only when the entry ages out).
    pub fn revoke(&self, identity: &str, registry: &str, repo: &str, digest: &str) {
        let k = Confirmations::key(identity, registry, repo, digest);
        self.lock().remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_every_field() {
        let c = Confirmations::new(Duration::from_secs(60));
        c.confirm("alice#1", "r:5000", "team-a/app", "sha256:x");
        assert_eq!(
            c.check("alice#1", "r:5000", "team-a/app", "sha256:x"),
            Some(Freshness::Fresh)
        );
        for (i, r, p, d) in [
            ("bob#2", "r:5000", "team-a/app", "sha256:x"),
            ("alice#1", "evil:5000", "team-a/app", "sha256:x"),
            ("alice#1", "r:5000", "team-b/app", "sha256:x"),
            ("alice#1", "r:5000", "team-a/app", "sha256:y"),
        ] {
            assert_eq!(c.check(i, r, p, d), None, "{i} {r} {p} {d}");
        }
        c.revoke("alice#1", "r:5000", "team-a/app", "sha256:x");
        assert_eq!(c.check("alice#1", "r:5000", "team-a/app", "sha256:x"), None);
    }

    #[test]
    fn expired_is_stale_not_fresh() {
        let c = Confirmations::new(Duration::ZERO);
        c.confirm("a", "r", "p", "d");
        assert_eq!(c.check("a", "r", "p", "d"), Some(Freshness::Stale));
    }

    #[test]
    fn fingerprints_differ_by_secret_and_hide_it() {
        let a = fingerprint("gitlab-ci-token", "job-token-1");
        let b = fingerprint("gitlab-ci-token", "job-token-2");
        assert_ne!(a, b);
        assert_eq!(a, fingerprint("gitlab-ci-token", "job-token-1"));
        assert!(!a.contains("job-token"));
        let plain = format!("{:x}", Sha256::digest(b"job-token-1"));
        assert!(!a.contains(&plain[..16]), "not the unkeyed hash");
    }
}
