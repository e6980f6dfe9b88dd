//! Fleet peers: cross-node single-flight for blobs.
//!
//! Owns: [`Peers`] — the member list (`--peer`, this member's `--advertise`), who owns a digest
//! (rendezvous / HRW hashing over the healthy members, [`Peers::plan`]), each member's health (a
//! periodic `/healthz` probe plus passive failure marking with exponential backoff), and the
//! peer wire: the `x-regauth-peer` header (HMAC-SHA256 of method, path and time under the shared
//! `--peer-secret-file`, checked in constant time within a replay window) and the request a member
//! sends another for a blob ([`Peers::get`]).
//!
//! Why HRW: every member computes the same order for a digest from the member list alone — no
//! coordinator, no ring to rebalance — and when the owner is unhealthy the next member in that
//! order is the one all the others fall to as well, so a layer still comes from upstream once.
//!
//! Why correctness never depends on the owner: a member only ever *streams* a peer's bytes into
//! its own verified download ([`super::verify`]): hashed, length-checked, last byte held back until
//! the digest matched. A peer that dies mid-stream is resumed from (next member, then upstream)
//! with a `Range` from the bytes already received; one that lies fails the digest and is marked
//! unhealthy. And before a member asks a peer at all, it has confirmed the client's repository
//! upstream with its own credentials ([`super::handler::authz`]): a peer never hands a member
//! content its own credentials could not get.
//!
//! Why peer requests are never forwarded: a request carrying the peer header is served from the
//! cache, from the download already running on this member, or from a new one planned without
//! members ([`Peers::plan`] with `for_peer`). A running download only ever asks members ranked
//! *above* this one in the digest's HRW order, so a chain of asks climbs that one order and
//! cannot come back: no loops, even when members disagree about who is healthy.
//!
//! Does not own: serving the peer endpoint ([`super::handler::peer`]), the download itself
//! ([`super::verify`]), or HTTP ([`super::fetch`]).

use super::error::UpstreamError;
use super::fetch::Fetcher;
use super::metrics::Metrics;
use aws_lc_rs::hmac;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The header a member signs its peer requests with: `v1 <unix seconds> <hex HMAC>`.
pub const PEER_HEADER: HeaderName = HeaderName::from_static("x-regauth-peer");
/// Where members ask each other for blobs: `<prefix>/v2/<repo>/blobs/<digest>?ns=<registry>`.
pub const PEER_PREFIX: &str = "/_regauth/peer";
/// A signature older or newer than this is refused (replays and clock skew).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(60);
/// How long a member waits for a peer's response head before moving on.
const PEER_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer's body may stall before the download moves on.
pub const PEER_STALL: Duration = Duration::from_secs(10);
/// Health probe period and timeout.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Passive failure backoff: first and largest.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The shortest shared secret accepted.
const MIN_SECRET: usize = 16;

/// Why the peer configuration was refused, naming the flag or file.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("--peer {0:?}: not an http(s)://host:port URL without a path")]
    BadUrl(String),
    #[error("--advertise {0:?} is not one of the --peer URLs (list every member, this one too)")]
    AdvertiseNotPeer(String),
    #[error("--peer needs --advertise URL (which member this is) and --peer-secret-file FILE")]
    Incomplete,
    #[error("reading --peer-secret-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--peer-secret-file {} is accessible by group or others (mode {mode:o}); chmod 600 it",
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("--peer-secret-file {} holds fewer than {MIN_SECRET} bytes of secret", path.display())]
    TooShort { path: PathBuf },
}

/// The peer flags, as given.
#[derive(Clone, Debug, Default)]
pub struct PeerConfig {
    pub peers: Vec<String>,
    pub advertise: Option<String>,
    pub secret_file: Option<PathBuf>,
}

/// One member's health as this member sees it.
#[derive(Debug)]
struct Health {
    /// The last `/healthz` probe answered 200 (optimistic until the first probe).
    probe_ok: bool,
    /// After a failed fetch: not asked again before this.
    failed_until: Option<Instant>,
    backoff: Duration,
}

#[derive(Debug)]
struct Member {
    url: String,
    health: Mutex<Health>,
}

/// Where a blob download takes its bytes from, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A member that fetches (from its cache or its upstream) on our behalf.
    Member(usize),
    /// A member asked only for what it already has (`?cached=1`: a 404 otherwise).
    Cached(usize),
    /// The registry, with this member's credentials.
    Upstream,
}

/// The sources of one download.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sources: Vec<Source>,
}

impl Plan {
    /// Only the upstream (no peers configured).
    pub fn upstream() -> Plan {
        Plan {
            sources: vec![Source::Upstream],
        }
    }

    /// Whether another member fetches for us.
    pub fn via_member(&self) -> bool {
        self.sources.iter().any(|s| matches!(s, Source::Member(_)))
    }

    /// Whether any bytes may come from another member (fetched for us, or already cached there):
    /// then nothing but a confirmation upstream says our credentials could get this blob.
    pub fn uses_members(&self) -> bool {
        self.sources.iter().any(|s| *s != Source::Upstream)
    }
}

/// The fleet, as this member sees it.
pub struct Peers {
    members: Vec<Member>,
    me: usize,
    key: hmac::Key,
    http: Fetcher,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.members.get(self.me).map(|m| &m.url))
            .finish_non_exhaustive()
    }
}

/// `http(s)://host:port` without a trailing slash, or `None`.
fn normalize(url: &str) -> Option<String> {
    let u = url.strip_suffix('/').unwrap_or(url);
    let (scheme, rest) = u.split_once("://")?;
    let ok = (scheme == "http" || scheme == "https")
        && !rest.is_empty()
        && !rest.contains('/')
        && !rest.contains('@')
        && rest.parse::<hyper::http::uri::Authority>().is_ok();
    ok.then(|| format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

/// Reads the shared secret: the file must be private to its owner.
fn read_secret(path: &Path) -> Result<Vec<u8>, PeerError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| PeerError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PeerError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let raw = std::fs::read(path).map_err(read)?;
    let secret = raw.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET {
        return Err(PeerError::TooShort {
            path: path.to_owned(),
        });
    }
    Ok(secret)
}

/// The HRW score of `member` for `hex`.
fn score(member: &str, hex: &str) -> u64 {
    let h = Sha256::new()
        .chain_update(member.as_bytes())
        .chain_update([0u8])
        .chain_update(hex.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b)
}

/// Every member's index, highest HRW score for `hex` first.
pub fn rank(members: &[&str], hex: &str) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (score(m, hex), i))
        .collect();
    order.sort_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, i)| i).collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the signature covers.
fn signed_text(method: &Method, path_and_query: &str, ts: u64) -> String {
    format!("regauth-peer-v1\n{method}\n{path_and_query}\n{ts}")
}

/// The hex HMAC of `text`.
fn sign_text(key: &hmac::Key, text: &str) -> String {
    let tag = hmac::sign(key, text.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

/// Why a peer request's header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No header: not a peer (401).
    Missing,
    /// Malformed, expired or a wrong signature (403).
    Bad,
}

impl Peers {
    /// The fleet from the flags, or `None` without `--peer`.
    pub fn from_config(
        cfg: &PeerConfig,
        http: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Peers>>, PeerError> {
        if cfg.peers.is_empty() && cfg.advertise.is_none() && cfg.secret_file.is_none() {
            return Ok(None);
        }
        let (Some(adv), Some(secret_file)) = (&cfg.advertise, &cfg.secret_file) else {
            return Err(PeerError::Incomplete);
        };
        let mut urls: Vec<String> = Vec::new();
        for p in &cfg.peers {
            let u = normalize(p).ok_or_else(|| PeerError::BadUrl(p.clone()))?;
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        let me_url = normalize(adv).ok_or_else(|| PeerError::AdvertiseNotPeer(adv.clone()))?;
        let me = urls
            .iter()
            .position(|u| *u == me_url)
            .ok_or_else(|| PeerError::AdvertiseNotPeer(adv.clone()))?;
        let secret = read_secret(secret_file)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let members = urls
            .into_iter()
            .map(|url| Member {
                url,
                health: Mutex::new(Health {
                    probe_ok: true,
                    failed_until: None,
                    backoff: BACKOFF_MIN,
                }),
            })
            .collect::<Vec<_>>();
        for (i, m) in members.iter().enumerate() {
            if i != me {
                metrics.peer_health(&m.url, true);
            }
        }
        Ok(Some(Arc::new(Peers {
            members,
            me,
            key,
            http,
            metrics,
        })))
    }

    fn health(&self, i: usize) -> Option<std::sync::MutexGuard<'_, Health>> {
        let m = self.members.get(i)?;
        Some(m.health.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The URL of member `i` (for logs and metrics; no secret in it).
    pub fn url(&self, i: usize) -> &str {
        self.members.get(i).map_or("", |m| m.url.as_str())
    }

    /// Is member `i` to be asked now? This member always is.
    pub fn is_healthy(&self, i: usize) -> bool {
        if i == self.me {
            return true;
        }
        self.health(i)
            .is_some_and(|h| h.probe_ok && h.failed_until.is_none_or(|t| Instant::now() >= t))
    }

    /// A failed fetch from member `i`: not asked again for a backoff that doubles each time.
    pub fn mark_failed(&self, i: usize) {
        if let Some(mut h) = self.health(i) {
            let wait = h.backoff;
            h.failed_until = Some(Instant::now() + wait);
            h.backoff = (wait * 2).min(BACKOFF_MAX);
            tracing::warn!(peer = %self.url(i), backoff_s = wait.as_secs(), "fleet peer failed; skipping it for a while");
        }
        self.metrics.peer_health(self.url(i), false);
    }

    /// A good fetch from member `i`: the backoff starts over.
    pub fn mark_ok(&self, i: usize) {
        if let Some(mut h) = self.health(i) {
            h.failed_until = None;
            h.backoff = BACKOFF_MIN;
        }
    }

    /// Where to take `hex` from. `for_peer`: the request came from another member, so no member
    /// fetches for us (never forwarded twice); we only ask the others for what they have.
    /// Otherwise: the healthy members ranked above this one fetch for us (the first is the
    /// owner), then — this member being the next owner — the others are asked for what they
    /// already hold, then the upstream.
    pub fn plan(&self, hex: &str, for_peer: bool) -> Plan {
        let urls: Vec<&str> = self.members.iter().map(|m| m.url.as_str()).collect();
        let ranked: Vec<usize> = rank(&urls, hex)
            .into_iter()
            .filter(|&i| self.is_healthy(i))
            .collect();
        let mut sources = Vec::new();
        let mut above = !for_peer;
        for &i in &ranked {
            if i == self.me {
                above = false;
                continue;
            }
            sources.push(match above {
                true => Source::Member(i),
                false => Source::Cached(i),
            });
        }
        sources.push(Source::Upstream);
        Plan { sources }
    }

    /// The `x-regauth-peer` value for `method path_and_query` now.
    pub fn sign(&self, method: &Method, path_and_query: &str) -> String {
        let ts = now_secs();
        let mac = sign_text(&self.key, &signed_text(method, path_and_query, ts));
        format!("v1 {ts} {mac}")
    }

    /// Checks a request's peer header (constant-time compare, replay window).
    pub fn check(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<(), AuthFailure> {
        let v = headers.get(PEER_HEADER).ok_or(AuthFailure::Missing)?;
        let v = v.to_str().map_err(|_| AuthFailure::Bad)?;
        let mut parts = v.split(' ');
        let (Some("v1"), Some(ts), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::Bad);
        };
        let ts: u64 = ts.parse().map_err(|_| AuthFailure::Bad)?;
        if now_secs().abs_diff(ts) > REPLAY_WINDOW.as_secs() {
            return Err(AuthFailure::Bad);
        }
        let mac = from_hex(mac).ok_or(AuthFailure::Bad)?;
        let text = signed_text(method, path_and_query, ts);
        hmac::verify(&self.key, text.as_bytes(), &mac).map_err(|_| AuthFailure::Bad)
    }

    /// `GET` of a blob from member `i`, signed; `from` > 0 asks for the rest (`Range`).
    pub async fn get(
        &self,
        i: usize,
        registry: &str,
        repo: &str,
        digest: &str,
        cached_only: bool,
        from: u64,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let cached = if cached_only { "&cached=1" } else { "" };
        let pq = format!("{PEER_PREFIX}/v2/{repo}/blobs/{digest}?ns={registry}{cached}");
        let url = format!("{}{pq}", self.url(i));
        let mut h = HeaderMap::new();
        let sig = self.sign(&Method::GET, &pq);
        let v = HeaderValue::from_str(&sig).map_err(|_| UpstreamError::Protocol {
            what: "peer signature is not a header value".into(),
        })?;
        h.insert(PEER_HEADER, v);
        h.insert(hyper::header::ACCEPT, HeaderValue::from_static("*/*"));
        if from > 0
            && let Ok(v) = HeaderValue::from_str(&format!("bytes={from}-"))
        {
            h.insert(hyper::header::RANGE, v);
        }
        let sent = self.http.send(Method::GET, &url, &h, None, Bytes::new());
        match tokio::time::timeout(PEER_HEADERS_TIMEOUT, sent).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout {
                host: self.url(i).to_owned(),
                secs: PEER_HEADERS_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Probes every other member's `/healthz` every [`PROBE_EVERY`], for as long as the proxy runs.
    pub fn spawn_probes(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                for i in 0..me.members.len() {
                    if i != me.me {
                        me.probe(i).await;
                    }
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
    }

    async fn probe(&self, i: usize) {
        let url = format!("{}/healthz", self.url(i));
        let none = HeaderMap::new();
        let sent = self.http.send(Method::GET, &url, &none, None, Bytes::new());
        let ok = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, sent).await,
            Ok(Ok(r)) if r.status().is_success()
        );
        let changed = self.health(i).map(|mut h| {
            let was = h.probe_ok;
            h.probe_ok = ok;
            was != ok
        });
        if changed == Some(true) {
            tracing::info!(peer = %self.url(i), healthy = ok, "fleet peer health changed");
        }
        self.metrics.peer_health(self.url(i), self.is_healthy(i));
    }

    /// `/healthz?verbose` lines: each member and its health (no secrets).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let what = if i == self.me {
                "self"
            } else if self.is_healthy(i) {
                "healthy"
            } else {
                "unhealthy"
            };
            s.push_str(&format!("peer {} {what}\n", m.url));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize, me: usize) -> (Arc<Peers>, tempfile::TempDir) {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secret");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let peers: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9000 + i))
            .collect();
        let cfg = PeerConfig {
            advertise: Some(peers[me].clone()),
            peers,
            secret_file: Some(f),
        };
        let p = Peers::from_config(&cfg, Fetcher::new(None).unwrap(), Arc::default())
            .unwrap()
            .unwrap();
        (p, d)
    }

    #[test]
    fn every_member_agrees_on_the_order_and_it_spreads() {
        let members = ["http://a:1", "http://b:1", "http://c:1"];
        let mut owners = [0usize; 3];
        for n in 0..300 {
            let hex = format!("{n:064x}");
            let r = rank(&members, &hex);
            assert_eq!(r, rank(&members, &hex));
            assert_eq!(r.len(), 3);
            owners[r[0]] += 1;
        }
        assert!(owners.iter().all(|&c| c > 50), "skewed: {owners:?}");
    }

    #[test]
    fn a_plan_asks_the_members_above_this_one_then_the_rest_cached_then_upstream() {
        let (p, _d) = fleet(3, 1);
        let hex = "ab".repeat(32);
        let plan = p.plan(&hex, false);
        assert_eq!(plan.sources.last(), Some(&Source::Upstream));
        assert_eq!(plan.sources.len(), 3);
        let for_peer = p.plan(&hex, true);
        assert!(
            !for_peer.via_member(),
            "a peer request was forwarded: {for_peer:?}"
        );
        p.mark_failed(0);
        p.mark_failed(2);
        assert_eq!(p.plan(&hex, false).sources, vec![Source::Upstream]);
    }

    #[test]
    fn signatures_verify_and_refuse_tampering_and_age() {
        let (p, _d) = fleet(2, 0);
        let (q, _e) = fleet(2, 1);
        let path = "/_regauth/peer/v2/a/blobs/sha256:00?ns=x";
        let mut h = HeaderMap::new();
        assert_eq!(p.check(&Method::GET, path, &h), Err(AuthFailure::Missing));
        let sig = q.sign(&Method::GET, path);
        h.insert(PEER_HEADER, HeaderValue::from_str(&sig).unwrap());
        assert_eq!(p.check(&Method::GET, path, &h), Ok(()));
        assert_eq!(
            p.check(&Method::GET, "/_regauth/peer/v2/b", &h),
            Err(AuthFailure::Bad)
        );
        assert_eq!(p.check(&Method::HEAD, path, &h), Err(AuthFailure::Bad));
        let old = now_secs() - 3600;
        let mac = sign_text(&q.key, &signed_text(&Method::GET, path, old));
        h.insert(
            PEER_HEADER,
            HeaderValue::from_str(&format!("v1 {old} {mac}")).unwrap(),
        );
        assert_eq!(p.check(&Method::GET, path, &h), Err(AuthFailure::Bad));
        assert!(!format!("{p:?}").contains("0123456789"));
    }

    #[test]
    fn the_secret_file_must_be_private_and_advertise_a_member() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secret");
        std::fs::write(&f, "0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cfg = PeerConfig {
            peers: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            advertise: Some("http://127.0.0.1:1/".into()),
            secret_file: Some(f.clone()),
        };
        let m = || Arc::<Metrics>::default();
        let err = Peers::from_config(&cfg, Fetcher::new(None).unwrap(), m()).unwrap_err();
        assert!(matches!(err, PeerError::Permissions { .. }), "{err}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Peers::from_config(&cfg, Fetcher::new(None).unwrap(), m()).is_ok());
        cfg.advertise = Some("http://127.0.0.1:3".into());
        let err = Peers::from_config(&cfg, Fetcher::new(None).unwrap(), m()).unwrap_err();
        assert!(matches!(err, PeerError::AdvertiseNotPeer(_)), "{err}");
        cfg.peers.push("http://h/path".into());
        let err = Peers::from_config(&cfg, Fetcher::new(None).unwrap(), m()).unwrap_err();
        assert!(matches!(err, PeerError::BadUrl(_)), "{err}");
    }
}
