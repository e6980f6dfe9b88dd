//! Who is this client, and may it use the proxy at all?
//!
//! Owns: [`Identity`] and [`identify`] — an htpasswd user (`Basic` credentials whose user name is
//! in the file, bcrypt-verified), a **pass-through** identity (`Basic` credentials whose user name
//! is not in the file, when pass-through is on: `--pass-through` or an access-file entry; the
//! proxy does not judge them, it sends them upstream for this client's requests, so the upstream
//! decides — GitLab's `gitlab-ci-token:$CI_JOB_TOKEN`), or anonymous. htpasswd user names take
//! precedence: a client whose user name is in the file must have that user's password. Every
//! refusal is a 401 with `WWW-Authenticate: Basic realm="regauth"`, the challenge `docker login`,
//! containerd, skopeo and podman answer. Also owns the `--htpasswd` check (bcrypt entries as written by `htpasswd -B`, verified with the
//! `bcrypt` crate) and the 401 challenge sent to clients; [`super::handler`] runs the check first,
//! before routing. Without `--htpasswd` every client is let
//! in — which is why [`super::server`] refuses a non-loopback listen address unless
//! `--htpasswd` or `--allow-anonymous` is given: the proxy holds the host's upstream credentials,
//! so an open proxy on the network would hand everyone the host's private images.
//!
//! Why a verification cache: bcrypt is deliberately slow (tens of milliseconds at cost 10) and
//! docker sends the credentials on every request of a pull; each bcrypt verdict is remembered for
//! `--auth-cache-ttl` (default a minute) under the SHA-256 of the whole `Authorization` value —
//! never the credential itself — so a changed password or removed user takes effect within that
//! time (the file is re-read when its modification time changes). Failed attempts are counted per
//! client address ([`super::limits::FailureLimiter`]); past `--auth-failures` in a window the
//! client gets 429 `TOOMANYREQUESTS` without bcrypt running, so a wrong-password flood cannot
//! turn the proxy into a CPU sink. A credential already verified still passes.
//!
//! `/healthz` and `/metrics` are answered without client authentication (probes and scrapers have
//! no credentials; the metrics carry no repository, host or user names).
//!
//! Does not own: upstream credentials ([`super::upstream_creds`]).

use super::error::ErrorCode;
use super::limits::FailureLimiter;
use super::metrics::Metrics;
use super::response::{self, Body};
use crate::secret::Secret;
use base64::Engine;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Verdicts remembered at most (expired ones are dropped first, then all).
const VERDICTS: usize = 4096;

/// Problems with the htpasswd file.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("reading htpasswd file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("htpasswd file {path} line {line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
}

struct Loaded {
    modified: Option<SystemTime>,
    users: HashMap<String, String>,
}

/// Client authorization against a bcrypt htpasswd file.
pub struct ClientAuth {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    /// SHA-256 of the `Authorization` value → (bcrypt verdict, when).
    verdicts: Mutex<HashMap<[u8; 32], (bool, Instant)>>,
    ttl: Duration,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("path", &self.path)
            .finish()
    }
}

fn parse(path: &Path) -> Result<Loaded, HtpasswdError> {
    let meta = std::fs::metadata(path).map_err(|source| HtpasswdError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why| HtpasswdError::Line {
            path: path.to_owned(),
            line: i + 1,
            why,
        };
        let (user, hash) = line.split_once(':').ok_or_else(|| err("no ':'"))?;
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
            return Err(err("not a bcrypt entry (create it with `htpasswd -B`)"));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(Loaded {
        modified: meta.modified().ok(),
        users,
    })
}

impl ClientAuth {
    /// Loads and validates the file (so a bad file fails at start, not at the first pull).
    /// `ttl`: how long a bcrypt verdict is remembered.
    pub fn load(path: &Path, ttl: Duration) -> Result<ClientAuth, HtpasswdError> {
        let loaded = parse(path)?;
        Ok(ClientAuth {
            path: path.to_owned(),
            loaded: Mutex::new(loaded),
            verdicts: Mutex::new(HashMap::new()),
            ttl,
        })
    }

    fn verdicts(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (bool, Instant)>> {
        // A panic elsewhere must not disable the cache: the map stays usable.
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A remembered verdict for this `Authorization` value (no bcrypt).
    pub fn cached(&self, authorization: &str) -> Option<bool> {
        let key: [u8; 32] = Sha256::digest(authorization.as_bytes()).into();
        let v = self.verdicts();
        v.get(&key)
            .filter(|(_, t)| t.elapsed() < self.ttl)
            .map(|(ok, _)| *ok)
    }

    /// The bcrypt entry of `user`, re-reading the file when it changed.
    fn hash_of(&self, user: &str) -> Option<String> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let current = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| m.modified().ok());
        if current != l.modified {
            match parse(&self.path) {
                Ok(n) => *l = n,
                Err(e) => {
                    tracing::warn!(error = %e, "htpasswd reload failed; keeping the previous entries")
                }
            }
        }
        l.users.get(user).cloned()
    }

    /// Is `user` in the file (off the async threads: it may re-read the file)?
    pub async fn has_user(self: Arc<Self>, user: &str) -> bool {
        let user = user.to_owned();
        tokio::task::spawn_blocking(move || self.hash_of(&user).is_some())
            .await
            .unwrap_or(false)
    }

    /// Checks an `Authorization` header value. Blocking (bcrypt); call from `spawn_blocking`.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(authorization) = authorization else {
            return false;
        };
        if let Some(ok) = self.cached(authorization) {
            return ok;
        }
        let Some((user, pass)) = decode_basic(authorization) else {
            return false;
        };
        let hash = self.hash_of(&user);
        let ok = hash.is_some_and(|h| bcrypt::verify(pass.expose(), &h).unwrap_or(false));
        let key: [u8; 32] = Sha256::digest(authorization.as_bytes()).into();
        let mut v = self.verdicts();
        if v.len() >= VERDICTS {
            let ttl = self.ttl;
            v.retain(|_, (_, t)| t.elapsed() < ttl);
            if v.len() >= VERDICTS {
                v.clear();
            }
        }
        v.insert(key, (ok, Instant::now()));
        ok
    }
}

/// Who a client is (its secret, if any, only for pass-through, in a [`Secret`]).
#[derive(Clone, Debug)]
pub enum Identity {
    /// An htpasswd user, password verified.
    User(String),
    /// Registry credentials the proxy passes upstream instead of its own.
    PassThrough {
        user: String,
        credential: Secret,
    },
    Anonymous,
}

impl Identity {
    /// For logs: the user name or `anonymous`, never a secret.
    pub fn name(&self) -> &str {
        match self {
            Identity::User(u) | Identity::PassThrough { user: u, .. } => u,
            Identity::Anonymous => "anonymous",
        }
    }
}

/// What the door lets through besides htpasswd users.
#[derive(Clone, Copy, Debug)]
pub struct Door {
    /// Credentials of users not in the htpasswd file become pass-through identities.
    pub pass_through: bool,
    /// Clients without credentials may continue (as [`Identity::Anonymous`]).
    pub anonymous: bool,
}

/// Identifies the client of one request; `Err` is the answer (401 challenge, or 429 once its
/// address used up its failures).
pub async fn identify(
    ca: Option<&Arc<ClientAuth>>,
    door: Door,
    failures: &FailureLimiter,
    metrics: &Metrics,
    ip: IpAddr,
    headers: &HeaderMap,
) -> Result<Identity, Response<Body>> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some((user, pass)) = authz.and_then(decode_basic) {
        if let Some(ca) = ca
            && ca.clone().has_user(&user).await
        {
            admit(ca, failures, metrics, ip, headers).await?;
            return Ok(Identity::User(user));
        }
        if door.pass_through {
            return Ok(Identity::PassThrough {
                user,
                credential: pass,
            });
        }
    }
    // Basic credentials of no known user, or credentials that are not Basic: judged (and
    // counted) as a failed login.
    if authz.is_some()
        && let Some(ca) = ca
    {
        admit(ca, failures, metrics, ip, headers).await?;
        // Not reached: such credentials never verify.
        return Err(challenge());
    }
    // No credentials, or no client authentication configured (the header is not ours to judge).
    if door.anonymous {
        return Ok(Identity::Anonymous);
    }
    metrics.client_unauthorized();
    Err(challenge())
}

/// Client authentication of one request: `Err` is the answer (401 challenge, or 429 once the
/// client's address has used up its failures — then without running bcrypt).
pub async fn admit(
    ca: &Arc<ClientAuth>,
    failures: &FailureLimiter,
    metrics: &Metrics,
    ip: IpAddr,
    headers: &HeaderMap,
) -> Result<(), Response<Body>> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authz.and_then(|a| ca.cached(a)) == Some(true) {
        return Ok(());
    }
    if failures.blocked(ip) {
        metrics.limit_tripped("auth_failures");
        return Err(response::error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            "too many failed authentication attempts; try again later",
        ));
    }
    if ca.clone().allows(headers).await {
        return Ok(());
    }
    if authz.is_some() {
        failures.failed(ip);
    }
    metrics.client_unauthorized();
    Err(challenge())
}

impl ClientAuth {
    /// Checks a request's `Authorization` off the async threads (bcrypt is slow on purpose).
    pub async fn allows(self: Arc<Self>, headers: &HeaderMap) -> bool {
        let authz = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        tokio::task::spawn_blocking(move || self.check(authz.as_deref()))
            .await
            .unwrap_or(false)
    }
}

/// The answer to a refused client: 401 with a Basic challenge.
pub fn challenge() -> Response<Body> {
    let mut r = response::error(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "authentication required",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(BASIC_CHALLENGE),
    );
    r
}

/// The challenge clients are sent.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"regauth\"";

/// `Basic base64(user:pass)` → (user, pass).
pub fn decode_basic(value: &str) -> Option<(String, Secret)> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), Secret::new(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_entries_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&p, format!("alice:{hash}\n")).unwrap();
        let a = ClientAuth::load(&p, Duration::from_secs(60)).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(a.check(Some(&format!("Basic {}", b64("alice:s3cret")))));
        assert!(
            a.check(Some(&format!("Basic {}", b64("alice:s3cret")))),
            "cached"
        );
        assert!(!a.check(Some(&format!("Basic {}", b64("alice:wrong")))));
        assert!(!a.check(Some(&format!("Basic {}", b64("bob:s3cret")))));
        assert!(!a.check(None));
        std::fs::write(&p, "alice:plaintext\n").unwrap();
        assert!(
            ClientAuth::load(&p, Duration::from_secs(60)).is_err(),
            "non-bcrypt refused"
        );
    }
}
