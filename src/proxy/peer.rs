//! Fleet peers: cross-node single-flight for blobs.
//!
//! Owns: [`Peers`] — the member list (`--peer`, this member's `--advertise`), who owns a digest
//! (rendezvous / HRW hashing over the healthy members, [`Peers::plan`]), each member's health (a
//! periodic `/healthz` probe plus passive failure marking with exponential backoff), and the
//! peer wire: the `x-regauth-peer` header ([`PeerKey`]: HMAC-SHA256 under the shared
//! `--peer-secret-file` of method, receiving member, path, time and a random nonce, checked in
//! constant time within a replay window), the replay cache that refuses a nonce seen before
//! ([`Replays`]), and the request a member sends another for a blob ([`Peers::get`]).
//!
//! Why a nonce *and* a receiver in the signature: the time window alone let a captured request be
//! sent again for 60 s. Each member remembers the nonces it accepted for as long as their
//! signature could still pass the time check, so a replay to the same member is refused; naming
//! the receiving member (its `--advertise` URL, the same spelling in every `--peer` list) makes
//! the same capture worthless at any other member, whose cache never saw that nonce.
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
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The header a member signs its peer requests with: `v2 <unix seconds> <hex nonce> <hex HMAC>`.
pub const PEER_HEADER: HeaderName = HeaderName::from_static("x-regauth-peer");
/// Where members ask each other for blobs: `<prefix>/v2/<repo>/blobs/<digest>?ns=<registry>`.
pub const PEER_PREFIX: &str = "/_regauth/peer";
/// A signature older or newer than this is refused (clock skew); within it, [`Replays`] refuses
/// a nonce seen before.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(60);
/// Nonces a member remembers at most (see [`Replays`] for what happens when it is full).
const REPLAY_CAPACITY: usize = 1 << 16;
/// Random bytes per request nonce.
const NONCE_LEN: usize = 16;
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
    key: PeerKey,
    replays: Replays,
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

/// The hex spelling of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    /// Malformed, expired, a wrong signature or one for another member (403).
    Bad,
    /// A right signature whose nonce this member already accepted: a replay (403).
    Replayed,
    /// A right signature, but [`Replays`] is full of unexpired nonces (403; see there).
    ReplayCacheFull,
}

/// The system random number generator failed: no nonce, so no peer request.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed; cannot sign a fleet peer request")]
pub struct NoRandom;

/// A verified header's time and nonce: what [`Replays`] remembers.
type Stamp = (u64, [u8; NONCE_LEN]);

/// The shared secret as an HMAC key, and the one spelling of the peer header it signs and checks.
/// Debug never shows the key.
pub struct PeerKey(hmac::Key);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(redacted)")
    }
}

impl PeerKey {
    /// The key for `secret` (the `--peer-secret-file` contents, trimmed).
    pub fn new(secret: &[u8]) -> PeerKey {
        PeerKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The `x-regauth-peer` value for `method path_and_query` sent to member `to` (its URL as in
    /// the `--peer` list) now, with a fresh nonce from the system's secure random source.
    pub fn sign(
        &self,
        method: &Method,
        to: &str,
        path_and_query: &str,
    ) -> Result<String, NoRandom> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| NoRandom)?;
        Ok(self.sign_at(method, to, path_and_query, (now_secs(), nonce)))
    }

    fn sign_at(&self, method: &Method, to: &str, pq: &str, (ts, nonce): Stamp) -> String {
        let nonce = to_hex(&nonce);
        let text = Self::signed_text(method, to, pq, ts, &nonce);
        let mac = to_hex(hmac::sign(&self.0, text.as_bytes()).as_ref());
        format!("v2 {ts} {nonce} {mac}")
    }

    /// What the signature covers; the receiver is in it so a capture is only good at one member.
    fn signed_text(method: &Method, to: &str, pq: &str, ts: u64, nonce: &str) -> String {
        format!("regauth-peer-v2\n{method}\n{to}\n{pq}\n{ts}\n{nonce}")
    }

    /// Checks `header` for a request to member `me` at time `now` (constant-time compare, time
    /// window); the verified time and nonce, for the replay check.
    fn verify(
        &self,
        method: &Method,
        me: &str,
        pq: &str,
        header: &str,
        now: u64,
    ) -> Result<Stamp, AuthFailure> {
        let mut parts = header.split(' ');
        let (Some("v2"), Some(ts), Some(nonce), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthFailure::Bad);
        };
        let ts: u64 = ts.parse().map_err(|_| AuthFailure::Bad)?;
        if now.abs_diff(ts) > REPLAY_WINDOW.as_secs() {
            return Err(AuthFailure::Bad);
        }
        let raw: [u8; NONCE_LEN] = from_hex(nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or(AuthFailure::Bad)?;
        let mac = from_hex(mac).ok_or(AuthFailure::Bad)?;
        let text = Self::signed_text(method, me, pq, ts, nonce);
        hmac::verify(&self.0, text.as_bytes(), &mac).map_err(|_| AuthFailure::Bad)?;
        Ok((ts, raw))
    }
}

/// The nonces of the peer requests this member accepted, each kept while its signature could
/// still pass the time check: until `ts + REPLAY_WINDOW` on this member's clock — the clock the
/// time check reads, so a nonce is never forgotten while its request could still be accepted.
/// With a sender's clock ahead of ours that is up to twice the window after it arrived.
///
/// Only verified signatures get in, so without the secret nobody can fill it. Bounded at
/// `capacity`; when it is full of unexpired nonces a new request is *refused* rather than an
/// unexpired nonce forgotten: forgetting one would reopen exactly the replay this closes, while a
/// refusal only sends the asking member on to its next source (another member, or upstream) —
/// slower, never wrong. Expired nonces go first, oldest first, on every check.
///
/// Keyed by (time, nonce): the time is under the signature too, so a replay carries the same
/// pair, and the order by time makes pruning the expired ones cheap.
#[derive(Debug)]
pub struct Replays {
    seen: Mutex<BTreeSet<Stamp>>,
    capacity: usize,
}

impl Replays {
    fn new(capacity: usize) -> Replays {
        Replays {
            seen: Mutex::new(BTreeSet::new()),
            capacity,
        }
    }

    /// Accepts `stamp` once; refuses it again while it is unexpired at `now`.
    fn admit(&self, stamp: Stamp, now: u64) -> Result<(), AuthFailure> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let window = REPLAY_WINDOW.as_secs();
        while let Some(&(ts, _)) = seen.first()
            && ts.saturating_add(window) < now
        {
            seen.pop_first();
        }
        if seen.contains(&stamp) {
            return Err(AuthFailure::Replayed);
        }
        if seen.len() >= self.capacity {
            return Err(AuthFailure::ReplayCacheFull);
        }
        seen.insert(stamp);
        Ok(())
    }
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
        let key = PeerKey::new(&secret);
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
            replays: Replays::new(REPLAY_CAPACITY),
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

    /// Checks a request's peer header: signed for this member within the window, and its nonce
    /// not seen before.
    pub fn check(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<(), AuthFailure> {
        let v = headers.get(PEER_HEADER).ok_or(AuthFailure::Missing)?;
        let v = v.to_str().map_err(|_| AuthFailure::Bad)?;
        let now = now_secs();
        let stamp = self
            .key
            .verify(method, self.url(self.me), path_and_query, v, now)?;
        self.replays.admit(stamp, now)
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
        let protocol = |what: String| UpstreamError::Protocol { what };
        let sig = self
            .key
            .sign(&Method::GET, self.url(i), &pq)
            .map_err(|e| protocol(e.to_string()))?;
        let v = HeaderValue::from_str(&sig)
            .map_err(|_| protocol("peer signature is not a header value".into()))?;
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

    /// A header signed by member `from` for member `to`.
    fn signed(from: &Peers, to: &Peers, method: &Method, pq: &str) -> HeaderMap {
        let sig = from.key.sign(method, to.url(to.me), pq).unwrap();
        let mut h = HeaderMap::new();
        h.insert(PEER_HEADER, HeaderValue::from_str(&sig).unwrap());
        h
    }

    #[test]
    fn signatures_verify_and_refuse_tampering_age_and_another_receiver() {
        let (p, _d) = fleet(3, 0);
        let (q, _e) = fleet(3, 1);
        let (r, _f) = fleet(3, 2);
        let path = "/_regauth/peer/v2/a/blobs/sha256:00?ns=x";
        assert_eq!(
            p.check(&Method::GET, path, &HeaderMap::new()),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            p.check(&Method::GET, path, &signed(&q, &p, &Method::GET, path)),
            Ok(())
        );
        let h = signed(&q, &p, &Method::GET, path);
        assert_eq!(
            p.check(&Method::GET, "/_regauth/peer/v2/b", &h),
            Err(AuthFailure::Bad)
        );
        assert_eq!(p.check(&Method::HEAD, path, &h), Err(AuthFailure::Bad));
        assert_eq!(
            r.check(&Method::GET, path, &h),
            Err(AuthFailure::Bad),
            "another member"
        );
        let old = q
            .key
            .sign_at(&Method::GET, p.url(0), path, (now_secs() - 3600, [7; 16]));
        let mut h = HeaderMap::new();
        h.insert(PEER_HEADER, HeaderValue::from_str(&old).unwrap());
        assert_eq!(p.check(&Method::GET, path, &h), Err(AuthFailure::Bad));
        assert!(!format!("{p:?}").contains("0123456789"));
        assert_eq!(format!("{:?}", p.key), "PeerKey(redacted)");
    }

    #[test]
    fn a_replayed_signature_is_refused_and_a_fresh_one_accepted() {
        let (p, _d) = fleet(2, 0);
        let (q, _e) = fleet(2, 1);
        let path = "/_regauth/peer/v2/a/blobs/sha256:00?ns=x";
        let h = signed(&q, &p, &Method::GET, path);
        assert_eq!(p.check(&Method::GET, path, &h), Ok(()));
        assert_eq!(p.check(&Method::GET, path, &h), Err(AuthFailure::Replayed));
        let fresh = signed(&q, &p, &Method::GET, path);
        assert_ne!(fresh, h, "two signatures of one request share a nonce");
        assert_eq!(p.check(&Method::GET, path, &fresh), Ok(()));
        assert_eq!(
            p.check(&Method::GET, path, &fresh),
            Err(AuthFailure::Replayed)
        );
    }

    #[test]
    fn the_replay_cache_is_bounded_and_forgets_only_expired_nonces() {
        let window = REPLAY_WINDOW.as_secs();
        let r = Replays::new(3);
        let t = 1_000_000;
        for n in 0..3u8 {
            assert_eq!(r.admit((t + u64::from(n), [n; 16]), t), Ok(()));
        }
        // Full of unexpired nonces: a new one is refused, a known one is still a replay.
        assert_eq!(r.admit((t, [9; 16]), t), Err(AuthFailure::ReplayCacheFull));
        assert_eq!(
            r.admit((t, [0; 16]), t + window),
            Err(AuthFailure::Replayed)
        );
        // Once the first nonce's signature could no longer pass the time check, it makes room.
        let later = t + window + 1;
        assert_eq!(r.admit((later, [9; 16]), later), Ok(()));
        assert_eq!(
            r.admit((later, [10; 16]), later),
            Err(AuthFailure::ReplayCacheFull)
        );
        assert_eq!(r.seen.lock().unwrap().len(), 3);
        assert_eq!(r.admit((t + 1, [1; 16]), later), Err(AuthFailure::Replayed));
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
