//! Verified, coalesced blob downloads.
//!
//! Owns: [`Flights`] — single-flight per (upstream, digest). The first request for a cold blob
//! starts one detached download task (it keeps going if that client disconnects, so the cache
//! still fills); every request for the same blob, first included, streams from the growing temp
//! staging file. The task hashes with SHA-256 as bytes arrive, checks the length against
//! `Content-Length` and the digest against the one requested, and only then commits it to the
//! store. With a bucket (`--store`) the readers' last byte is released before that commit: a
//! bucket upload, its retries or another member's upload claim never hold a verified body back.
//!
//! Why the final chunk is held back: streaming keeps first-byte latency constant (store-then-
//! forward makes big first pulls time out), but a streamed body that turns out wrong has already
//! been delivered. So readers may send everything *except the last byte* while the download runs;
//! the last byte goes out only after the digest matched. On a mismatch, truncation or reset the
//! reader fails its body stream, hyper aborts the connection, and the client sees a short transfer
//! — never a complete wrong blob (the Content-Length it was promised is never met). A docker or
//! containerd client then retries; the bad bytes never entered the cache.
//!
//! Ranges follow the same rule ([`stream_flight`] with a span): a `Range` that includes the
//! blob's final byte (`bytes=N-`, a suffix, a resume) is held back at that byte until the digest
//! matched. A range that ends *before* the final byte is released as soon as its bytes are
//! staged. Why that is acceptable: a part carries no identity a client could check
//! (`Docker-Content-Digest` names the whole blob), so the only unit anyone can verify is the
//! whole blob — and every way of completing it (a 200, or the part that reaches the end) still
//! waits for verification. Clients that read middle parts (lazy pullers such as stargz/SOCI)
//! check each part against the digests of a verified table of contents, as they would against
//! the upstream itself; the bytes are exactly what the authenticated upstream sent, nothing
//! unverified enters the cache, and a later request after a failed verification starts a new
//! download. Holding middle parts instead would make a lazy puller's first read wait for the
//! whole layer — the store-then-forward latency the streaming exists to avoid.
//!
//! Why a drop guard unregisters the flight: a download task can end in ways no `match` sees — a
//! panic, or its runtime shutting down. [`FlightGuard`] runs on every one of them: it leaves the
//! table and, unless a result was published, fails the waiters, so a later request starts a fresh
//! attempt instead of joining a dead one.
//!
//! Bounds ([`super::limits`]): no body bytes for a minute, less than `download_min_rate` bytes/s
//! over a `rate_window`, or past `download_deadline` in all → the download is aborted (and
//! counted), whether or not a client still waits.
//!
//! Where the bytes come from is the download's [`Plan`] ([`super::peer`]): with fleet peers, the
//! owner member (and the ones after it), then the upstream; without, the upstream alone. A source
//! that fails before the end (refused, reset, stalled, a peer killed mid-stream) is left for the
//! next with a `Range` from the bytes already staged, so the readers' streams just continue; the
//! hash runs over everything staged, whatever source each byte came from, so the digest check at
//! the end covers them all.
//!
//! Does not own: the authorized exchange ([`super::upstream`]), where bytes are kept
//! ([`super::store`]: staged, then committed) or how they are copied into a response body
//! ([`super::response::BodyStreamer`]).

use super::cache::Cache;
use super::error::{ApiError, ErrorCode, error_chain};
use super::limits::Limits;
use super::metrics::Metrics;
use super::peer::{PEER_STALL, Peers, Plan, Source};
use super::response::{BodySender, BodyStreamer, ByteRange, Sent};
use super::route::Upstream;
use super::store::{ContentKind, ContentStore, Staged, StoreReader};
use super::upstream::UpstreamClient;
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// No body bytes for this long → the download is abandoned.
const STALL: Duration = Duration::from_secs(60);

/// Where a download is.
#[derive(Clone, Debug)]
pub enum State {
    Starting,
    Streaming { total: Option<u64>, written: u64 },
    Done { len: u64 },
    Failed(Arc<ApiError>),
}

/// One download in flight.
#[derive(Debug)]
pub struct Flight {
    tx: watch::Sender<State>,
    /// The staging file, once the download has one (before the first `Streaming`).
    staging: OnceLock<PathBuf>,
    hex: String,
    cache: Cache,
}

impl Flight {
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.tx.subscribe()
    }

    /// The blob's length, once the upstream announced (or the download verified) it.
    pub fn total(&self) -> Option<u64> {
        match &*self.tx.borrow() {
            State::Streaming { total, .. } => *total,
            State::Done { len } => Some(*len),
            State::Starting | State::Failed(_) => None,
        }
    }
}

/// The key of a download: which upstream, which digest. One per member whatever its plan: a
/// peer's request joins the download this member's clients started, which is what makes a
/// layer come from upstream once. That cannot loop: a member only ever asks members ranked above
/// itself in the digest's one HRW order ([`super::peer::Peers::plan`]), so following the asks
/// always climbs that order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlightKey {
    upstream: String,
    digest: String,
}

impl FlightKey {
    fn new(up: &Upstream, digest: &str) -> FlightKey {
        FlightKey {
            upstream: up.key(),
            digest: digest.to_owned(),
        }
    }
}

/// The single-flight table.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<FlightKey, Arc<Flight>>>,
}

/// Context a download needs.
#[derive(Clone)]
pub struct FlightCtx {
    pub client: Arc<UpstreamClient>,
    pub cache: Cache,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// The fleet, when `--peer` is given.
    pub peers: Option<Arc<Peers>>,
}

/// What is being downloaded, for whom.
#[derive(Clone, Debug)]
struct Wanted {
    up: Upstream,
    repo: String,
    hex: String,
    digest: String,
    plan: Plan,
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FlightKey, Arc<Flight>>> {
        // A panic elsewhere must not disable coalescing: the table stays usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is a download of this blob running?
    pub fn running(&self, up: &Upstream, digest: &str) -> bool {
        let key = FlightKey::new(up, digest);
        self.lock().contains_key(&key)
    }

    /// The running download of this blob, if any (without joining it).
    pub fn get(&self, up: &Upstream, digest: &str) -> Option<Arc<Flight>> {
        let key = FlightKey::new(up, digest);
        self.lock().get(&key).cloned()
    }

    /// Joins the download of `digest` from `up`, starting it (for `repo`) if none runs.
    pub fn join(
        self: &Arc<Self>,
        ctx: &FlightCtx,
        up: &Upstream,
        repo: &str,
        hex: &str,
        digest: &str,
    ) -> Arc<Flight> {
        self.join_planned(ctx, up, repo, hex, digest, Plan::upstream())
    }

    /// [`Flights::join`], the bytes taken from `plan`'s sources in order.
    pub fn join_planned(
        self: &Arc<Self>,
        ctx: &FlightCtx,
        up: &Upstream,
        repo: &str,
        hex: &str,
        digest: &str,
        plan: Plan,
    ) -> Arc<Flight> {
        let key = FlightKey::new(up, digest);
        let (tx, _) = watch::channel(State::Starting);
        let flight = Arc::new(Flight {
            tx,
            staging: OnceLock::new(),
            hex: hex.to_owned(),
            cache: ctx.cache.clone(),
        });
        {
            let mut map = self.lock();
            if let Some(f) = map.get(&key) {
                ctx.metrics.coalesced();
                return f.clone();
            }
            // Registered before the task starts, so the task's removal can't come first.
            map.insert(key.clone(), flight.clone());
        }
        let wanted = Wanted {
            up: up.clone(),
            repo: repo.to_owned(),
            hex: hex.to_owned(),
            digest: digest.to_owned(),
            plan,
        };
        tokio::spawn(self.clone().run(ctx.clone(), key, flight.clone(), wanted));
        flight
    }

    /// The download task: download, leave the table, publish the result. The guard does the
    /// last two on every way out, a panic included.
    async fn run(self: Arc<Self>, ctx: FlightCtx, key: FlightKey, f: Arc<Flight>, w: Wanted) {
        let mut guard = FlightGuard {
            flights: self,
            key,
            flight: f.clone(),
            result: None,
        };
        let result = download(&ctx, &f, &w).await;
        if let Err(fail) = &result {
            tracing::warn!(upstream = %w.up.authority, repo = w.repo, digest = w.digest, status = fail.status.as_u16(), "blob download failed: {}", fail.message);
        }
        guard.result = Some(result);
    }
}

/// Unregisters a flight and publishes its result when the download task ends, however it ends.
struct FlightGuard {
    flights: Arc<Flights>,
    key: FlightKey,
    flight: Arc<Flight>,
    result: Option<Result<u64, ApiError>>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Leave the table first: a request arriving now finds the cache entry (or, after a
        // failure, starts a fresh attempt) instead of joining a finished flight.
        {
            let mut m = self.flights.lock();
            if m.get(&self.key)
                .is_some_and(|other| Arc::ptr_eq(other, &self.flight))
            {
                m.remove(&self.key);
            }
        }
        let state = match self.result.take() {
            Some(Ok(len)) => State::Done { len },
            Some(Err(fail)) => State::Failed(Arc::new(fail)),
            None => {
                tracing::error!(upstream = %self.key.upstream, digest = %self.key.digest, "blob download task ended without a result (panic?); failing its waiters");
                State::Failed(Arc::new(internal("blob download failed".to_owned())))
            }
        };
        self.flight.tx.send_replace(state);
    }
}

fn internal(message: String) -> ApiError {
    super::error::internal(&message)
}

fn bad_blob(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::BlobUnknown, message)
}

/// Requests the blob from the plan's sources in order, stages it while verifying, commits it.
async fn download(ctx: &FlightCtx, f: &Flight, w: &Wanted) -> Result<u64, ApiError> {
    let mut got = Got {
        hasher: Sha256::new(),
        written: 0,
        total: None,
        staged: None,
        progress: None,
        from_peers: Vec::new(),
    };
    let mut last: Option<ApiError> = None;
    for (n, source) in w.plan.sources.iter().enumerate() {
        if n > 0 && last.is_some() {
            ctx.metrics.peer_fallback();
        }
        if *source == Source::Upstream && w.plan.sources.len() > 1 {
            ctx.metrics.peer_owner_miss();
        }
        match from_source(ctx, f, w, source, &mut got).await {
            Ok(()) => return finish(ctx, f, w, got).await,
            Err(Step::Next(e)) => {
                if n + 1 < w.plan.sources.len() {
                    tracing::info!(
                        digest = w.digest,
                        written = got.written,
                        "blob source failed ({}); trying the next",
                        e.message
                    );
                }
                last = Some(e);
            }
            Err(Step::Fatal(e)) => {
                got.discard().await;
                return Err(e);
            }
        }
    }
    got.discard().await;
    Err(last.unwrap_or_else(|| internal("no source for the blob".to_owned())))
}

/// Every byte is staged: checks the digest (and tells the peers' health), releases the readers,
/// then commits.
async fn finish(ctx: &FlightCtx, f: &Flight, w: &Wanted, mut got: Got) -> Result<u64, ApiError> {
    let Some(staged) = got.staged.take() else {
        return Err(internal("blob download staged nothing".to_owned()));
    };
    let actual = format!("sha256:{:x}", got.hasher.finalize_reset());
    let good = actual == w.digest;
    if let Some(p) = ctx.peers.as_deref() {
        for &i in &got.from_peers {
            if good {
                p.mark_ok(i);
                ctx.metrics.peer_asked("ok");
            } else {
                tracing::warn!(peer = %p.url(i), digest = w.digest, "fleet peer sent bytes that fail the digest");
                p.mark_failed(i);
                ctx.metrics.peer_asked("bad_digest");
            }
        }
    }
    if !good {
        ctx.metrics.verification_failure(ContentKind::Blob);
        staged.discard().await;
        let m = format!("blob hashes to {actual}, not the requested {}", w.digest);
        return Err(bad_blob(m));
    }
    if let Some(p) = &got.progress {
        p.finish(got.written);
    }
    let written = got.written;
    // Verified. With a bucket the readers get the last byte now, not after the commit: a bucket
    // commit can take long — a large blob's multipart upload, retries of 503s, or waiting out
    // the upload claim of a member that died (up to its TTL) — and the clients must not wait for
    // it. They hold the staging file open; one arriving later still joins this flight (it stays
    // registered until the commit is done) and reads the staging file or the committed blob. On
    // the local disk the commit is a rename, and a completed pull still means a cached blob.
    if ctx.cache.store().object().is_some() {
        f.tx.send_replace(State::Done { len: written });
    }
    // Through the cache: the low-disk guard and the size bound apply. A failed commit (a bucket
    // down past its retries) does not fail the pull: the bytes are verified and the readers
    // hold the staging file open, so they stream through; the blob just isn't kept.
    match ctx.cache.commit(staged, None).await {
        Ok(_) => {
            // The registry (directly, or through the member that fetched it from the same
            // registry for us) served these bytes and they verified.
            ctx.cache.record_origin(&w.up.registry, &w.digest).await;
            tracing::info!(upstream = %w.up.authority, repo = w.repo, digest = w.digest, bytes = written, "blob verified and cached");
        }
        Err(e) => {
            tracing::warn!(upstream = %w.up.authority, repo = w.repo, digest = w.digest, error = %e, "blob verified and served but not kept: commit failed");
        }
    }
    Ok(written)
}

/// What a download has received so far, over all its sources.
struct Got {
    hasher: Sha256,
    written: u64,
    total: Option<u64>,
    staged: Option<Staged>,
    progress: Option<Progress>,
    /// The members whose bytes went into the staging file.
    from_peers: Vec<usize>,
}

impl Got {
    async fn discard(&mut self) {
        if let Some(s) = self.staged.take() {
            s.discard().await;
        }
    }
}

/// How one source failed: try the next one, or give up (our own side failed).
enum Step {
    Next(ApiError),
    Fatal(ApiError),
}

/// `bytes START-END/TOTAL` → `(START, TOTAL)`.
fn content_range(h: &HeaderMap) -> Option<(u64, u64)> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (span, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = span.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()?))
}

/// The member a source is, if it is one.
fn member_of(source: &Source) -> Option<usize> {
    match source {
        Source::Member(i) | Source::Cached(i) => Some(*i),
        Source::Upstream => None,
    }
}

/// Sends the request for the rest of the blob (from byte `from`) to `source`.
async fn request(
    ctx: &FlightCtx,
    w: &Wanted,
    source: &Source,
    from: u64,
) -> Result<hyper::Response<Incoming>, super::error::UpstreamError> {
    if let (Some(i), Some(p)) = (member_of(source), ctx.peers.as_deref()) {
        let cached = matches!(source, Source::Cached(_));
        let registry = w.up.registry.to_string();
        return p.get(i, &registry, &w.repo, &w.digest, cached, from).await;
    }
    ctx.metrics.blob_fetch(&w.up);
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    if from > 0
        && let Ok(v) = HeaderValue::from_str(&format!("bytes={from}-"))
    {
        h.insert(header::RANGE, v);
    }
    let path = format!("{}/blobs/{}", w.repo, w.digest);
    ctx.client
        .send(&w.up, &w.repo, Method::GET, &path, &h)
        .await
}

/// Where a source's body starts and the blob's whole length, from its answer; else the error
/// and the `regauth_peer_fetches_total` outcome.
fn span_of(
    resp: &hyper::Response<Incoming>,
    got: &Got,
    w: &Wanted,
    source: &Source,
) -> Result<(u64, Option<u64>), (ApiError, &'static str)> {
    let status = resp.status();
    let (start, total) = match status {
        StatusCode::OK => {
            let len = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (0, len)
        }
        StatusCode::PARTIAL_CONTENT if got.written > 0 => match content_range(resp.headers()) {
            Some((s, t)) if s == got.written => (s, Some(t)),
            _ => {
                let m = format!(
                    "blob source answered a Range it was not asked for: {}",
                    w.digest
                );
                return Err((bad_blob(m), "failed"));
            }
        },
        StatusCode::NOT_FOUND if *source != Source::Upstream => {
            let m = format!("fleet peer does not have blob {}", w.digest);
            let cached = matches!(source, Source::Cached(_));
            return Err((bad_blob(m), if cached { "not_cached" } else { "failed" }));
        }
        _ => {
            let what = format!("blob {}", w.digest);
            let e = ApiError::from_status(status, resp.headers(), ErrorCode::BlobUnknown, &what);
            return Err((e, "failed"));
        }
    };
    if let (Some(known), Some(t)) = (got.total, total)
        && known != t
    {
        let m = format!("blob sources disagree on the length of {}", w.digest);
        return Err((bad_blob(m), "failed"));
    }
    Ok((start, total))
}

/// The first answer with a body: the staging file, and the length readers are told.
async fn begin(
    ctx: &FlightCtx,
    f: &Flight,
    w: &Wanted,
    got: &mut Got,
    total: Option<u64>,
) -> Result<(), Step> {
    if got.staged.is_some() {
        return Ok(());
    }
    let staged = ctx
        .cache
        .store()
        .stage(ContentKind::Blob, &w.hex)
        .await
        .map_err(|e| Step::Fatal(internal(e.to_string())))?;
    let _ = f.staging.set(staged.path().to_owned());
    got.staged = Some(staged);
    got.total = total;
    got.progress = Some(Progress::start(w, total));
    f.tx.send_replace(State::Streaming { total, written: 0 });
    Ok(())
}

/// Takes the rest of the blob (from `got.written`) from one source into the staging file.
async fn from_source(
    ctx: &FlightCtx,
    f: &Flight,
    w: &Wanted,
    source: &Source,
    got: &mut Got,
) -> Result<(), Step> {
    let peer = member_of(source);
    // A member's failure counts against its health (a miss of a `cached=1` ask does not).
    let failed = |e: ApiError, outcome: &'static str| {
        if let (Some(i), Some(p)) = (peer, ctx.peers.as_deref()) {
            ctx.metrics.peer_asked(outcome);
            if outcome != "not_cached" {
                p.mark_failed(i);
            }
        }
        Step::Next(e)
    };
    let resp = match request(ctx, w, source, got.written).await {
        Ok(r) => r,
        Err(e) => return Err(failed(ApiError::from(e), "failed")),
    };
    let (start, total) = span_of(&resp, got, w, source).map_err(|(e, o)| failed(e, o))?;
    if peer.is_none() {
        // The upstream has this blob in this repository for these credentials. (The origin
        // record — this registry served these bytes — is written once they verified.)
        ctx.client.confirmed(&w.up, &w.repo, &w.digest).await;
    }
    begin(ctx, f, w, got, total).await?;
    let body = Body {
        body: resp.into_body(),
        skip: got.written.saturating_sub(start),
        stall: if peer.is_some() { PEER_STALL } else { STALL },
        from_upstream: peer.is_none(),
    };
    match receive(ctx, f, body, got, w).await {
        Ok(()) => {}
        Err(Step::Next(e)) => return Err(failed(e, "failed")),
        Err(fatal) => return Err(fatal),
    }
    if let Some(i) = peer {
        // Whether its bytes were right is known at the end, over every source ([`finish`]).
        got.from_peers.push(i);
    }
    Ok(())
}

/// One source's body, and how to read it.
struct Body {
    body: Incoming,
    /// Bytes to drop from its front (a source that ignored our `Range`).
    skip: u64,
    /// No byte for this long → the source has failed.
    stall: Duration,
    /// Counted in `regauth_upstream_received_bytes_total`.
    from_upstream: bool,
}

/// A source's body ended: it must have brought the blob to its known length.
fn ended(ctx: &FlightCtx, got: &Got, digest: &str) -> Result<(), Step> {
    match got.total {
        Some(t) if got.written != t => {
            ctx.metrics.verification_failure(ContentKind::Blob);
            let m = format!(
                "blob body for {digest} ended at {} of {t} bytes",
                got.written
            );
            Err(Step::Next(bad_blob(m)))
        }
        _ => Ok(()),
    }
}

/// The time bounds of one download: stall, overall deadline, minimum rate per window.
struct Pace {
    deadline: Instant,
    window_start: Instant,
    window_bytes: u64,
    last_data: Instant,
}

impl Pace {
    fn new(limits: &Limits) -> Pace {
        let now = Instant::now();
        Pace {
            deadline: now
                .checked_add(limits.download_deadline)
                .unwrap_or(now + STALL),
            window_start: now,
            window_bytes: 0,
            last_data: now,
        }
    }

    /// How long the next frame may take.
    fn wait(&self, limits: &Limits) -> Duration {
        let now = Instant::now();
        let to_deadline = self.deadline.saturating_duration_since(now);
        let window_end = self.window_start.checked_add(limits.rate_window);
        let to_window = window_end.map_or(STALL, |e| e.saturating_duration_since(now));
        STALL
            .min(to_deadline)
            .min(to_window.max(Duration::from_millis(10)))
    }

    /// Counts `n` bytes; `Err` when the deadline passed or the window ended below the rate.
    fn check(&mut self, ctx: &FlightCtx, n: u64) -> Result<(), ApiError> {
        let limits = &ctx.limits;
        self.window_bytes = self.window_bytes.saturating_add(n);
        let now = Instant::now();
        if n > 0 {
            self.last_data = now;
        }
        if now >= self.deadline {
            ctx.metrics.limit_tripped("download_deadline");
            let secs = limits.download_deadline.as_secs();
            return Err(unavailable(format!("download deadline of {secs} s passed")));
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= limits.rate_window {
            let want = u128::from(limits.download_min_rate) * elapsed.as_millis() / 1000;
            if u128::from(self.window_bytes) < want {
                ctx.metrics.limit_tripped("download_min_rate");
                let (got, secs) = (self.window_bytes, elapsed.as_secs());
                let min = limits.download_min_rate;
                return Err(unavailable(format!(
                    "upstream sent {got} bytes in {secs} s, below the minimum of {min} bytes/s"
                )));
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }
}

fn unavailable(why: String) -> ApiError {
    ApiError {
        unavailable: true,
        ..bad_blob(why)
    }
}

/// The next data chunk of a source's body (`None` at its end); `stall`: no byte for this long.
async fn next_data(
    ctx: &FlightCtx,
    pace: &mut Pace,
    body: &mut Incoming,
    stall: Duration,
) -> Result<Option<Bytes>, ApiError> {
    loop {
        let wait = pace.wait(&ctx.limits).min(stall);
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                pace.check(ctx, 0)?;
                if pace.last_data.elapsed() < stall {
                    continue;
                }
                let secs = stall.as_secs();
                return Err(bad_blob(format!("blob source stalled for {secs} s")));
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => {
                // Fewer bytes than promised: a failed length check, whatever the transport said.
                ctx.metrics.verification_failure(ContentKind::Blob);
                let why = format!("upstream body broke off: {}", error_chain(&e));
                return Err(ApiError {
                    unavailable: true,
                    ..bad_blob(why)
                });
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// Largest batch of received frames staged (hashed, written, published to the readers) at once.
///
/// Why batch: an upstream body arrives in frames of 8 KiB growing to a few hundred KiB, and
/// staging each frame alone cost a blocking-pool hop for its write (plus a copy into
/// `tokio::fs`'s buffer before [`Staged::write_chunks`]) and a wakeup of every reader, who then
/// read that one frame with a hop of its own. Frames already received are gathered, never
/// waited for — a batch is staged as soon as no further frame is ready — so a slow upstream's
/// bytes reach the readers as promptly as before. Bounded: one batch per download.
const STAGE_BATCH: usize = 512 * 1024;

/// Copies one source's body into the staging file, hashing, after dropping its first `skip`
/// bytes; checks it never passes the known length and, at its end, that it reached it.
async fn receive(
    ctx: &FlightCtx,
    f: &Flight,
    src: Body,
    got: &mut Got,
    w: &Wanted,
) -> Result<(), Step> {
    let Body {
        mut body,
        mut skip,
        stall,
        from_upstream,
    } = src;
    let (up, digest) = (&w.up, w.digest.as_str());
    let mut pace = Pace::new(&ctx.limits);
    let mut batch = Batch::default();
    loop {
        // Another frame joins the batch only if it is already here (see [`STAGE_BATCH`]).
        let next = next_data(ctx, &mut pace, &mut body, stall);
        let polled = match batch.bytes {
            0 => Some(next.await),
            n if n < STAGE_BATCH => next.now_or_never(),
            _ => {
                drop(next);
                None
            }
        };
        let data = match polled {
            None => {
                stage(f, got, &mut batch).await?;
                continue;
            }
            Some(Ok(Some(d))) => d,
            Some(Ok(None)) => {
                stage(f, got, &mut batch).await?;
                return ended(ctx, got, digest);
            }
            Some(Err(e)) => {
                // What did arrive is kept: the next source continues from it.
                stage(f, got, &mut batch).await?;
                return Err(Step::Next(e));
            }
        };
        pace.check(ctx, data.len() as u64).map_err(Step::Next)?;
        if from_upstream {
            ctx.metrics.upstream_bytes(up, data.len() as u64);
        }
        batch.take(ctx, got, data, &mut skip, digest)?;
    }
}

/// Received frames not staged yet (at most about [`STAGE_BATCH`] bytes).
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    /// Adds a received frame, less the `skip` bytes a resumed source repeats; more bytes than
    /// the announced length is a bad source.
    fn take(
        &mut self,
        ctx: &FlightCtx,
        got: &Got,
        data: Bytes,
        skip: &mut u64,
        digest: &str,
    ) -> Result<(), Step> {
        let n = usize::try_from(*skip).unwrap_or(usize::MAX).min(data.len());
        *skip -= n as u64;
        let data = data.slice(n..);
        if data.is_empty() {
            return Ok(());
        }
        let have = got.written.saturating_add(self.bytes as u64);
        if got
            .total
            .is_some_and(|t| have.saturating_add(data.len() as u64) > t)
        {
            ctx.metrics.verification_failure(ContentKind::Blob);
            let m = format!("blob source sent more than its Content-Length for {digest}");
            return Err(Step::Next(bad_blob(m)));
        }
        self.bytes += data.len();
        self.chunks.push(data);
        Ok(())
    }
}

/// Hashes and stages a batch of received bytes, then tells the readers how far they may go.
async fn stage(f: &Flight, got: &mut Got, batch: &mut Batch) -> Result<(), Step> {
    if batch.bytes == 0 {
        return Ok(());
    }
    for c in &batch.chunks {
        got.hasher.update(c);
    }
    let Some(staged) = got.staged.as_mut() else {
        return Err(Step::Fatal(internal("no staging file".to_owned())));
    };
    let chunks = std::mem::take(&mut batch.chunks);
    staged
        .write_chunks(chunks)
        .await
        .map_err(|e| Step::Fatal(internal(e.to_string())))?;
    got.written = got.written.saturating_add(batch.bytes as u64);
    batch.bytes = 0;
    f.tx.send_replace(State::Streaming {
        total: got.total,
        written: got.written,
    });
    if let Some(p) = got.progress.as_mut() {
        p.tick(got.written);
    }
    Ok(())
}

/// Blobs at least this big get progress lines.
const PROGRESS_MIN: u64 = 8 << 20;
/// How often a terminal gets a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// Progress of one long download, for the operator: on a terminal a line every few seconds
/// ("pulling sha256:abcd… 45 MiB / 120 MiB (12 MiB/s)"); in a pipe (a log collector) only the
/// start and end lines, so logs don't fill with percentages. Logged through `tracing` (target
/// `regauth::progress`), so `--log-format json` keeps one JSON object per line.
struct Progress {
    what: String,
    upstream: String,
    total: Option<u64>,
    started: Instant,
    last: Instant,
    on: bool,
    tty: bool,
}

fn mib(n: u64) -> String {
    format!("{:.0} MiB", n as f64 / (1u64 << 20) as f64)
}

impl Progress {
    fn start(w: &Wanted, total: Option<u64>) -> Progress {
        let short = w.digest.get(..19).unwrap_or(&w.digest);
        let p = Progress {
            what: format!("{short}…"),
            upstream: w.up.authority.clone(),
            total,
            started: Instant::now(),
            last: Instant::now(),
            on: total.is_none_or(|t| t >= PROGRESS_MIN),
            tty: std::io::stderr().is_terminal(),
        };
        if p.on {
            let size = total.map_or("unknown size".to_owned(), mib);
            tracing::info!(target: "regauth::progress", upstream = %p.upstream, digest = %w.digest, total, "pulling {} ({size}) from {}", p.what, p.upstream);
        }
        p
    }

    fn rate(&self, n: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!("{}/s", mib((n as f64 / secs) as u64))
    }

    fn tick(&mut self, written: u64) {
        if !self.on || !self.tty || self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let of = self
            .total
            .map_or(String::new(), |t| format!(" / {}", mib(t)));
        tracing::info!(target: "regauth::progress", upstream = %self.upstream, written, "pulling {} {}{of} ({})", self.what, mib(written), self.rate(written));
    }

    fn finish(&self, written: u64) {
        if self.on {
            let secs = self.started.elapsed().as_secs_f64();
            tracing::info!(target: "regauth::progress", upstream = %self.upstream, written, "pulled {} {} in {secs:.1} s ({})", self.what, mib(written), self.rate(written));
        }
    }
}

/// Waits until the flight has a length to announce (or failed/finished).
pub async fn first_state(rx: &mut watch::Receiver<State>) -> State {
    loop {
        let s = rx.borrow_and_update().clone();
        if !matches!(s, State::Starting) {
            return s;
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
        }
    }
}

/// How far readers may go in a state: `(limit, finished)`, or the failure. `end` is the
/// exclusive end of a requested range (`None`: the whole blob).
fn read_limit(state: &State, end: Option<u64>) -> Result<(u64, bool), Arc<ApiError>> {
    match state {
        State::Starting => Ok((0, false)),
        State::Streaming { total, written } => {
            // A range ending before the final byte goes out as staged (see the module docs).
            if let (Some(e), Some(t)) = (end, *total)
                && e < t
            {
                return Ok(((*written).min(e), *written >= e));
            }
            // Hold back the final byte: the body cannot complete before verification.
            let cap = total.map_or(written.saturating_sub(1), |t| t.saturating_sub(1));
            let limit = (*written).min(cap);
            Ok((end.map_or(limit, |e| limit.min(e)), false))
        }
        State::Done { len } => Ok((end.map_or(*len, |e| e.min(*len)), true)),
        State::Failed(f) => Err(f.clone()),
    }
}

/// Opens the flight's bytes at `offset`: the staging file while it exists, else the committed
/// blob. Called before the response is sent, not by the streaming task: with a bucket the commit
/// removes (or renames) the staging file after the readers got `Done`, and a reader that had not
/// opened it yet would find neither file nor — the commit failing — a stored blob, and abort a
/// body already answered 200.
pub async fn open_flight(flight: &Flight, offset: u64) -> std::io::Result<StoreReader> {
    if let Some(p) = flight.staging.get()
        && let Ok(mut f) = tokio::fs::File::open(p).await
    {
        if offset > 0 {
            tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(offset)).await?;
        }
        return Ok(Box::new(f));
    }
    match flight
        .cache
        .store()
        .open(ContentKind::Blob, &flight.hex, offset)
        .await
    {
        Ok(Some(s)) => Ok(s.reader),
        Ok(None) => Err(std::io::Error::other("blob unavailable: not in the cache")),
        Err(e) => Err(std::io::Error::other(format!("blob unavailable: {e}"))),
    }
}

/// Streams the flight's bytes — all of them, or the range `span` — into `tx`, holding back the
/// blob's last byte until verified. `file` is [`open_flight`] at the span's start.
pub async fn stream_flight(
    flight: Arc<Flight>,
    mut rx: watch::Receiver<State>,
    tx: BodySender,
    span: Option<ByteRange>,
    file: StoreReader,
) {
    let abort = |m: String| std::io::Error::other(m);
    // Not evicted from under this reader once committed.
    let _pin = flight.cache.pin(&flight.hex);
    let start = span.map_or(0, |s| s.start);
    let end = span.map(|s| s.end);
    let mut out = BodyStreamer::new(file, start, tx);
    loop {
        let state = rx.borrow_and_update().clone();
        let (limit, finished) = match read_limit(&state, end) {
            Ok(l) => l,
            Err(f) => return out.abort(abort(f.message.clone())).await,
        };
        match out.send_up_to(limit).await {
            Sent::Stopped => return, // client went away; the download continues for the cache
            Sent::EndOfData if finished => {
                let m = "cached blob is shorter than expected".to_owned();
                return out.abort(abort(m)).await;
            }
            Sent::Reached if finished => return,
            Sent::Reached | Sent::EndOfData => {}
        }
        if rx.changed().await.is_err()
            && matches!(*rx.borrow(), State::Streaming { .. } | State::Starting)
        {
            // The task ended; its last state is final.
            let m = "download ended without a result".to_owned();
            return out.abort(abort(m)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(cache: Cache) -> Arc<Flight> {
        let (tx, _) = watch::channel(State::Starting);
        Arc::new(Flight {
            tx,
            staging: OnceLock::new(),
            hex: "00".into(),
            cache,
        })
    }

    #[tokio::test]
    async fn a_panicking_download_fails_its_waiters_and_leaves_the_table() {
        let d = tempfile::tempdir().unwrap();
        let flights = Arc::new(Flights::default());
        let key = FlightKey {
            upstream: "u".into(),
            digest: "sha256:00".into(),
        };
        let f = flight(Cache::open(d.path()).unwrap());
        flights.lock().insert(key.clone(), f.clone());
        let mut rx = f.subscribe();
        let guard = FlightGuard {
            flights: flights.clone(),
            key,
            flight: f,
            result: None,
        };
        let task = tokio::spawn(async move {
            let _guard = guard;
            panic!("injected download panic");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(matches!(first_state(&mut rx).await, State::Failed(_)));
        assert!(
            flights.lock().is_empty(),
            "the dead flight stayed registered"
        );
    }

    #[test]
    fn only_a_range_short_of_the_end_goes_past_the_held_byte() {
        let streaming = State::Streaming {
            total: Some(100),
            written: 60,
        };
        // Whole blob, or a range reaching the end: held at the last byte until verified.
        assert_eq!(read_limit(&streaming, None).unwrap(), (60, false));
        assert_eq!(read_limit(&streaming, Some(100)).unwrap(), (60, false));
        let almost = State::Streaming {
            total: Some(100),
            written: 100,
        };
        assert_eq!(read_limit(&almost, None).unwrap(), (99, false));
        assert_eq!(read_limit(&almost, Some(100)).unwrap(), (99, false));
        // A middle range: released as staged, finished once staged.
        assert_eq!(read_limit(&streaming, Some(80)).unwrap(), (60, false));
        assert_eq!(read_limit(&streaming, Some(50)).unwrap(), (50, true));
        assert_eq!(read_limit(&almost, Some(99)).unwrap(), (99, true));
        // Unknown length: nothing counts as short of the end.
        let unknown = State::Streaming {
            total: None,
            written: 60,
        };
        assert_eq!(read_limit(&unknown, Some(50)).unwrap(), (50, false));
        assert_eq!(read_limit(&unknown, None).unwrap(), (59, false));
        let done = State::Done { len: 100 };
        assert_eq!(read_limit(&done, Some(50)).unwrap(), (50, true));
        assert_eq!(read_limit(&done, None).unwrap(), (100, true));
    }

    #[test]
    fn a_poisoned_table_stays_usable() {
        let flights = Arc::new(Flights::default());
        let f2 = flights.clone();
        let _ = std::thread::spawn(move || {
            let _held = f2.map.lock();
            panic!("poison it");
        })
        .join();
        assert!(flights.map.is_poisoned());
        assert!(flights.lock().is_empty());
    }
}
