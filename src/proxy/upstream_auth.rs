//! Step 4: turning upstream credentials into an `Authorization` header.
//!
//! Owns: `WWW-Authenticate` parsing (Basic, and Bearer `realm`/`service`/`scope` — several scopes
//! allowed), the realm trust check, the token request (`GET realm?service=…&scope=…` with Basic
//! credentials; OAuth2 `POST` with `grant_type=refresh_token` for identity tokens, falling back to
//! `GET` when the token server does not take POST), reading `token` or `access_token` with
//! `expires_in` (default 60 s), and the token cache keyed by (realm, service, scopes, identity).
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
//! Does not own: sending the request itself ([`super::fetch`]).

use super::fetch::{Fetcher, UpstreamError};
use super::route::Upstream;
use super::upstream_creds::UpstreamCreds;
use crate::resolve::SecretKind;
use crate::secret::Secret;
use base64::Engine;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A parsed challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scopes: Vec<String>,
    },
}

/// Parses a `WWW-Authenticate` value; the first Basic or Bearer challenge wins.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let realm = params.iter().find(|(k, _)| k == "realm")?.1.clone();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone());
    let scopes = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    Some(Challenge::Bearer {
        realm,
        service,
        scopes,
    })
}

/// `k=v, k="quoted, \"x\""` → pairs (keys lower-cased).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), val.trim().to_owned()));
    }
    out
}

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
pub fn realm_allowed(upstream_authority: &str, realm: &str) -> Result<(), String> {
    let Some((scheme, rest)) = realm.split_once("://") else {
        return Err(format!("realm {realm:?} is not an absolute URL"));
    };
    if scheme != "https" && scheme != "http" {
        return Err(format!("realm {realm:?} is not http(s)"));
    }
    let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (rh, uh) = (hostname(auth), hostname(upstream_authority));
    if rh.is_empty() {
        return Err(format!("realm {realm:?} has no host"));
    }
    if rh == uh {
        return Ok(());
    }
    if is_ip_or_local(&rh) || is_ip_or_local(&uh) {
        return Err(format!(
            "token realm host {rh} differs from upstream host {uh} (IP/localhost never match another host)"
        ));
    }
    if registrable(&rh) == registrable(&uh) {
        Ok(())
    } else {
        Err(format!(
            "token realm host {rh} is not on the upstream's domain {}",
            registrable(&uh)
        ))
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

type TokenKey = (String, Option<String>, Vec<String>, String);

/// Challenges learned per upstream and tokens per (realm, service, scopes, identity).
#[derive(Default)]
pub struct Authorizer {
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<TokenKey, (Instant, Secret)>>,
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

impl Authorizer {
    /// Remembers the challenge from a 401 response.
    pub fn learn(&self, up: &Upstream, www_authenticate: Option<&str>) -> Option<Challenge> {
        let c = www_authenticate.and_then(parse_challenge)?;
        if let Ok(mut m) = self.challenges.lock() {
            m.insert(up.key(), c.clone());
        }
        Some(c)
    }

    /// Drops cached tokens for `identity` (after a 401 despite a token: revoked or expired early
    /// on the server's side), so the retry fetches a fresh one.
    pub fn forget_tokens(&self, identity: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.retain(|k, _| k.3 != identity);
        }
    }

    /// The header for a request to `up` about `repo` (empty repo: the `/v2/` ping), or `None`
    /// when no challenge is known yet or no credential fits. `extra_scopes` come from a fresh
    /// challenge.
    pub async fn header(
        &self,
        fetcher: &Fetcher,
        up: &Upstream,
        repo: &str,
        creds: &UpstreamCreds,
    ) -> Result<Option<Secret>, UpstreamError> {
        let challenge = self
            .challenges
            .lock()
            .ok()
            .and_then(|m| m.get(&up.key()).cloned());
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
                    return Ok(Some(Secret::new(format!("Bearer {}", c.secret.expose()))));
                }
                realm_allowed(&up.authority, &realm).map_err(|why| {
                    UpstreamError::RealmRefused {
                        upstream: up.authority.clone(),
                        why,
                    }
                })?;
                let mut want: Vec<String> = if repo.is_empty() {
                    Vec::new()
                } else {
                    vec![format!("repository:{repo}:pull")]
                };
                for s in scopes {
                    if s.starts_with("repository:")
                        && !repo.is_empty()
                        && s != format!("repository:{repo}:pull")
                    {
                        // Scopes from a challenge for another repository are not ours to ask.
                        if !s.starts_with(&format!("repository:{repo}:")) {
                            continue;
                        }
                    }
                    if !want.contains(&s) {
                        want.push(s);
                    }
                }
                want.sort();
                let key = (realm.clone(), service.clone(), want, creds.identity.clone());
                if let Ok(t) = self.tokens.lock()
                    && let Some((exp, tok)) = t.get(&key)
                    && Instant::now() < *exp
                {
                    return Ok(Some(Secret::new(format!("Bearer {}", tok.expose()))));
                }
                let (tok, ttl) = fetch_token(fetcher, &key.0, &key.1, &key.2, creds).await?;
                let keep = ttl.saturating_sub(Duration::from_secs(10).min(ttl / 2));
                if let Ok(mut t) = self.tokens.lock() {
                    t.retain(|_, (exp, _)| Instant::now() < *exp);
                    t.insert(key, (Instant::now() + keep, tok.clone()));
                }
                Ok(Some(Secret::new(format!("Bearer {}", tok.expose()))))
            }
        }
    }
}

async fn fetch_token(
    fetcher: &Fetcher,
    realm: &str,
    service: &Option<String>,
    scopes: &[String],
    creds: &UpstreamCreds,
) -> Result<(Secret, Duration), UpstreamError> {
    let cred = creds.credential.as_ref();
    let mut q: Vec<String> = Vec::new();
    if let Some(s) = service {
        q.push(format!("service={}", urlencode(s)));
    }
    for s in scopes {
        q.push(format!("scope={}", urlencode(s)));
    }
    let refused = |status: StatusCode| UpstreamError::Token {
        realm: realm.to_owned(),
        status: status.as_u16(),
    };
    // OAuth2 refresh-token grant for identity tokens.
    if let Some(c) = cred
        && c.secret_kind == SecretKind::IdentityToken
    {
        let mut form = vec![
            "grant_type=refresh_token".to_owned(),
            "client_id=regauth".to_owned(),
            format!("refresh_token={}", urlencode(c.secret.expose())),
        ];
        form.extend(q.iter().cloned());
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
            return parse_token(&bytes, realm);
        }
        if status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED {
            return Err(refused(status));
        }
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
        return Err(refused(status));
    }
    parse_token(&bytes, realm)
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
    Ok((
        Secret::new(tok),
        Duration::from_secs(t.expires_in.unwrap_or(60).max(1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push repository:c:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scopes: vec![
                    "repository:a/b:pull,push".into(),
                    "repository:c:pull".into()
                ],
            })
        );
        assert_eq!(parse_challenge("Negotiate x"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None, "realm required");
    }

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
    fn encode() {
        assert_eq!(
            urlencode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
