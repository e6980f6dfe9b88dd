//! Turning upstream credentials into an `Authorization` header.
//!
//! Owns: acting on a challenge ([`super::challenge`] parses it): the realm trust check, the token request (`GET realm?service=…&scope=…` with Basic
//! credentials; OAuth2 `POST` with `grant_type=refresh_token` for identity tokens, falling back to
//! `GET` when the token server does not take POST), reading `token` or `access_token` with
//! `expires_in` (default 60 s), and the token cache keyed by (realm, service, scopes, identity),
//! with one request at a time per key ([`super::single_flight`]).
//!
//! Why the realm check: the realm is a URL chosen by whoever answers as the upstream; sending the
//! host's password to any realm would let a hostile upstream or a man in the middle collect it
//! (CVE-2026-33540 in distribution's proxy, same class as containerd CVE-2020-15157). A realm is
//! accepted only on the upstream's own host or the same registrable domain (`auth.docker.io` for
//! `registry-1.docker.io`); IP literals and `localhost` never match a different host. The
//! registrable domain is approximated by the last two labels, or three when the second-level label
//! is a common public second level (`co.uk`, `com.au`, …) — no public-suffix list is linked, so
//! private suffixes (e.g. two tenants under one cloud domain) count as one domain.
//!
//! Does not own: challenge parsing ([`super::challenge`]), sending requests ([`super::fetch`], which
//! it uses for token requests) or the 401 retry around a registry request ([`super::upstream`]).

use super::challenge::{Challenge, parse_challenge};
use super::error::{RealmError, UpstreamError};
use super::fetch::Fetcher;
use super::route::Upstream;
use super::single_flight::SingleFlight;
use super::upstream_creds::UpstreamCreds;
use crate::resolve::SecretKind;
use crate::secret::Secret;
use base64::Engine;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Host part of `host[:port]` / `[v6]:port`, lower-cased.
fn hostname(authority: &str) -> String {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let h = if let Some(r) = a.strip_prefix('[') {
        r.split(']').next().unwrap_or("")
    } else {
        a.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(a, |(h, _)| h)
    };
    h.to_ascii_lowercase()
}

fn is_ip_or_local(h: &str) -> bool {
    h == "localhost" || h.ends_with(".localhost") || h.parse::<std::net::IpAddr>().is_ok()
}

/// Approximate registrable domain (see module docs).
fn registrable(h: &str) -> String {
    const SECOND: &[&str] = &["co", "com", "net", "org", "gov", "edu", "ac", "ne", "or"];
    let labels: Vec<&str> = h.split('.').collect();
    let n = labels.len();
    let take = if n >= 3 && SECOND.contains(&labels[n - 2]) && labels[n - 1].len() == 2 {
        3
    } else {
        2
    };
    labels[n.saturating_sub(take)..].join(".")
}

/// The realm trust boundary. `Err` says why.
pub fn realm_allowed(upstream_authority: &str, realm: &str) -> Result<(), RealmError> {
    let Some((scheme, rest)) = realm.split_once("://") else {
        return Err(RealmError::NotAbsolute(realm.to_owned()));
    };
    if scheme != "https" && scheme != "http" {
        return Err(RealmError::NotHttp(realm.to_owned()));
    }
    let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (rh, uh) = (hostname(auth), hostname(upstream_authority));
    if rh.is_empty() {
        return Err(RealmError::NoHost(realm.to_owned()));
    }
    if rh == uh {
        return Ok(());
    }
    if is_ip_or_local(&rh) || is_ip_or_local(&uh) {
        return Err(RealmError::LiteralHost {
            realm_host: rh,
            upstream_host: uh,
        });
    }
    if registrable(&rh) == registrable(&uh) {
        Ok(())
    } else {
        Err(RealmError::OtherDomain {
            domain: registrable(&uh),
            realm_host: rh,
        })
    }
}

/// `application/x-www-form-urlencoded` / query escaping.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// What a cached token is good for: one realm, service and scope set, for one identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: Option<String>,
    /// Sorted, deduplicated.
    scopes: Vec<String>,
    /// [`UpstreamCreds::identity`] (never the secret).
    identity: String,
}

/// Tokens kept at most (one per realm, service, scope set and identity); past it the oldest go.
const MAX_TOKENS: usize = 4096;

/// Longest a token is used, whatever its `expires_in` says (a hostile `u64::MAX` included).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Locks a cache map; a panic elsewhere while it was held leaves it usable, not disabled.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A cached token and when to stop using it.
struct CachedToken {
    use_until: Instant,
    token: Secret,
}

/// Challenges learned per upstream and tokens per [`TokenKey`].
#[derive(Default)]
pub struct Authorizer {
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    /// Longest a token is used (`--authz-ttl`): a token carries the grants of when it was
    /// issued, so a revoked grant applies upstream only once the proxy asks for a new one.
    max_ttl: Option<Duration>,
    /// Token requests running now: a cold image's layers are asked for at once, and each miss
    /// would otherwise make its own token request (a token server that rate-limits — Docker
    /// Hub's — counts them all).
    fetching: SingleFlight<TokenKey, Result<Secret, UpstreamError>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorizer")
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn bearer(token: &Secret) -> Secret {
    Secret::new(format!("Bearer {}", token.expose()))
}

/// The scopes to ask for: `repository:<repo>:pull`, plus a fresh challenge's scopes unless they
/// name another repository (those are not ours to ask). Sorted, so equal sets share a token.
fn wanted_scopes(repo: &str, challenged: Vec<String>) -> Vec<String> {
    let own = format!("repository:{repo}:pull");
    let mut want: Vec<String> = if repo.is_empty() {
        Vec::new()
    } else {
        vec![own.clone()]
    };
    for s in challenged {
        let foreign = s.starts_with("repository:")
            && !repo.is_empty()
            && s != own
            && !s.starts_with(&format!("repository:{repo}:"));
        if !foreign && !want.contains(&s) {
            want.push(s);
        }
    }
    want.sort();
    want
}

impl Authorizer {
    /// An authorizer that uses a token at most `max_ttl`, whatever its `expires_in`.
    pub fn with_max_ttl(max_ttl: Duration) -> Authorizer {
        Authorizer {
            max_ttl: Some(max_ttl),
            ..Authorizer::default()
        }
    }

    /// Remembers the challenge from a 401 response.
    pub fn learn(&self, up: &Upstream, www_authenticate: Option<&str>) -> Option<Challenge> {
        let c = www_authenticate.and_then(parse_challenge)?;
        lock(&self.challenges).insert(up.key(), c.clone());
        Some(c)
    }

    /// Drops cached tokens for `identity` (after a 401 despite a token: revoked or expired early
    /// on the server's side), so the retry fetches a fresh one.
    pub fn forget_tokens(&self, identity: &str) {
        lock(&self.tokens).retain(|k, _| k.identity != identity);
    }

    /// The header for a request to `up` about `repo` (empty repo: the `/v2/` ping), or `None`
    /// when no challenge is known yet or no credential fits.
    pub async fn header(
        &self,
        fetcher: &Fetcher,
        up: &Upstream,
        repo: &str,
        creds: &UpstreamCreds,
    ) -> Result<Option<Secret>, UpstreamError> {
        let challenge = lock(&self.challenges).get(&up.key()).cloned();
        let cred = creds.credential.as_ref();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(cred
                .filter(|c| c.secret_kind == SecretKind::Password)
                .map(|c| Secret::new(basic(&c.username, c.secret.expose())))),
            Some(Challenge::Bearer {
                realm,
                service,
                scopes,
            }) => {
                if let Some(c) = cred
                    && c.secret_kind == SecretKind::RegistryToken
                {
                    return Ok(Some(bearer(&c.secret)));
                }
                realm_allowed(&up.authority, &realm).map_err(|why| {
                    UpstreamError::RealmRefused {
                        upstream: up.authority.clone(),
                        why,
                    }
                })?;
                let key = TokenKey {
                    realm,
                    service,
                    scopes: wanted_scopes(repo, scopes),
                    identity: creds.identity.clone(),
                };
                self.token(fetcher, key, creds).await.map(Some)
            }
        }
    }

    /// A `Bearer` header for `key`: from the cache, or fetched and cached.
    async fn token(
        &self,
        fetcher: &Fetcher,
        key: TokenKey,
        creds: &UpstreamCreds,
    ) -> Result<Secret, UpstreamError> {
        if let Some(t) = self.cached(&key) {
            return Ok(bearer(&t));
        }
        let shared = self.fetching.run(key.clone(), || async {
            // A request that finished just before this one joined filled the cache.
            if let Some(t) = self.cached(&key) {
                return Ok(t);
            }
            let (token, ttl) = fetch_token(fetcher, &key, creds).await?;
            self.keep(key.clone(), token.clone(), ttl);
            Ok(token)
        });
        shared.await.map(|token| bearer(&token))
    }

    /// The cached token for `key`, while it is good.
    fn cached(&self, key: &TokenKey) -> Option<Secret> {
        let t = lock(&self.tokens);
        t.get(key)
            .filter(|c| Instant::now() < c.use_until)
            .map(|c| c.token.clone())
    }

    /// Caches a fresh token (bounded: expired ones go, then the oldest past [`MAX_TOKENS`]).
    fn keep(&self, key: TokenKey, token: Secret, ttl: Duration) {
        let ttl = self.max_ttl.map_or(ttl, |m| ttl.min(m));
        let now = Instant::now();
        let use_until = use_until(now, ttl);
        let mut t = lock(&self.tokens);
        t.retain(|_, c| now < c.use_until);
        while t.len() >= MAX_TOKENS {
            let Some(oldest) = t
                .iter()
                .min_by_key(|(_, c)| c.use_until)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            t.remove(&oldest);
        }
        t.insert(key, CachedToken { use_until, token });
    }
}

/// When to stop using a token good for `ttl` from `now`: a little before the server does.
/// Saturating: `ttl` is at most a day ([`parse_token`]), but the addition is never trusted.
fn use_until(now: Instant, ttl: Duration) -> Instant {
    let keep = ttl.saturating_sub(Duration::from_secs(10).min(ttl / 2));
    now.checked_add(keep).unwrap_or(now)
}

/// `service=…&scope=…` for a token request.
fn token_query(key: &TokenKey) -> Vec<String> {
    let mut q: Vec<String> = Vec::new();
    if let Some(s) = &key.service {
        q.push(format!("service={}", urlencode(s)));
    }
    for s in &key.scopes {
        q.push(format!("scope={}", urlencode(s)));
    }
    q
}

fn refused(realm: &str, status: StatusCode) -> UpstreamError {
    UpstreamError::Token {
        realm: realm.to_owned(),
        status: status.as_u16(),
    }
}

async fn fetch_token(
    fetcher: &Fetcher,
    key: &TokenKey,
    creds: &UpstreamCreds,
) -> Result<(Secret, Duration), UpstreamError> {
    let realm = key.realm.as_str();
    let cred = creds.credential.as_ref();
    let q = token_query(key);
    if let Some(c) = cred
        && c.secret_kind == SecretKind::IdentityToken
        && let Some(t) = refresh_grant(fetcher, realm, &c.secret, &q).await?
    {
        return Ok(t);
    }
    let sep = if realm.contains('?') { '&' } else { '?' };
    let url = if q.is_empty() {
        realm.to_owned()
    } else {
        format!("{realm}{sep}{}", q.join("&"))
    };
    let auth = cred.map(|c| {
        let user = if c.secret_kind == SecretKind::IdentityToken && c.username.is_empty() {
            "<token>"
        } else {
            &c.username
        };
        Secret::new(basic(user, c.secret.expose()))
    });
    let (status, bytes) = fetcher
        .simple(Method::GET, &url, None, Bytes::new(), auth.as_ref())
        .await?;
    if !status.is_success() {
        return Err(refused(realm, status));
    }
    parse_token(&bytes, realm)
}

/// The OAuth2 refresh-token grant for identity tokens; `None` when the token server does not
/// take POST (404/405), so the caller falls back to `GET`.
async fn refresh_grant(
    fetcher: &Fetcher,
    realm: &str,
    refresh_token: &Secret,
    query: &[String],
) -> Result<Option<(Secret, Duration)>, UpstreamError> {
    let mut form = vec![
        "grant_type=refresh_token".to_owned(),
        "client_id=regauth".to_owned(),
        format!("refresh_token={}", urlencode(refresh_token.expose())),
    ];
    form.extend(query.iter().cloned());
    let body = Bytes::from(form.join("&"));
    let (status, bytes) = fetcher
        .simple(
            Method::POST,
            realm,
            Some("application/x-www-form-urlencoded"),
            body,
            None,
        )
        .await?;
    if status.is_success() {
        return parse_token(&bytes, realm).map(Some);
    }
    if status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED {
        return Err(refused(realm, status));
    }
    Ok(None)
}

fn parse_token(bytes: &[u8], realm: &str) -> Result<(Secret, Duration), UpstreamError> {
    let t: TokenResponse = serde_json::from_slice(bytes).map_err(|e| UpstreamError::Protocol {
        what: format!("token response from {realm} is not JSON: {e}"),
    })?;
    let tok = t
        .token
        .filter(|s| !s.is_empty())
        .or(t.access_token.filter(|s| !s.is_empty()))
        .ok_or_else(|| UpstreamError::Protocol {
            what: format!("token response from {realm} has neither token nor access_token"),
        })?;
    let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).max(1)).min(MAX_TOKEN_TTL);
    Ok((Secret::new(tok), ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_boundary() {
        assert!(realm_allowed("registry-1.docker.io", "https://auth.docker.io/token").is_ok());
        assert!(realm_allowed("registry.gitlab.com", "https://gitlab.com/jwt/auth").is_ok());
        assert!(realm_allowed("127.0.0.1:5002", "http://127.0.0.1:5001/token").is_ok());
        assert!(realm_allowed("127.0.0.1:5002", "http://localhost:5001/token").is_err());
        assert!(realm_allowed("127.0.0.1:5002", "http://10.0.0.1/token").is_err());
        assert!(realm_allowed("registry.example.com", "https://evil.test/token").is_err());
        assert!(realm_allowed("reg.example.co.uk", "https://auth.other.co.uk/t").is_err());
        assert!(realm_allowed("reg.example.co.uk", "https://auth.example.co.uk/t").is_ok());
        assert!(realm_allowed("reg.example.com", "file:///etc/passwd").is_err());
    }

    #[test]
    fn huge_expires_in_is_clamped_not_a_panic() {
        let b = br#"{"token":"t","expires_in":18446744073709551615}"#;
        let (_, ttl) = parse_token(b, "r").unwrap();
        assert_eq!(ttl, MAX_TOKEN_TTL);
        let now = Instant::now();
        assert!(use_until(now, ttl) > now);
        assert!(use_until(now, Duration::MAX) >= now);
    }

    proptest::proptest! {
        /// Token JSON and challenges from a hostile upstream: no panic, a bounded lifetime.
        #[test]
        fn token_json_never_panics(expires in proptest::prelude::any::<u64>(), junk in "[ -~]{0,64}") {
            let b = format!(r#"{{"access_token":"x","expires_in":{expires}}}"#);
            let (_, ttl) = parse_token(b.as_bytes(), "r").unwrap();
            proptest::prop_assert!(ttl <= MAX_TOKEN_TTL);
            let _ = use_until(Instant::now(), ttl);
            let _ = parse_token(junk.as_bytes(), "r");
        }

        #[test]
        fn challenges_never_panic(v in "(Bearer|Basic|bearer) [ -~]{0,96}") {
            let _ = parse_challenge(&v);
            let _ = realm_allowed("registry.example.com", &v);
        }
    }

    #[test]
    fn encode() {
        assert_eq!(
            urlencode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
