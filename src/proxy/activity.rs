//! What a client connection's watchdog sees, and the watchdog.
//!
//! Owns: [`Activity`] (did the client speak, how many requests started and are running, when one
//! last started or ended), [`Running`] (a request counted as running while alive) and
//! [`watchdog`], which resolves when a connection should be closed (silent past the header-read
//! timeout, or idle past the idle timeout) and counts the trip.
//!
//! Why its own module: the listener ([`super::server`]) and the connections inside an
//! intercepted CONNECT ([`super::connect`]) are bounded by the same rule.
//!
//! Also owns [`Heard`], the stream wrapper that notes when bytes arrive: the listener's sockets
//! mark [`Activity`] with it, a CONNECT tunnel's two ends a shared timestamp ([`LastHeard`]).
//!
//! Does not own: the sockets themselves.

use super::limits::Limits;
use super::metrics::Metrics;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's watchdog sees: whether the client spoke, requests started and running
/// (a request runs until its response body is sent or dropped), and when one last started or
/// ended. Not raw I/O: h2 keep-alive pings would keep an idle connection busy forever.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` when a request last started or ended.
    last_io: AtomicU64,
    requests: AtomicU64,
    running: AtomicUsize,
    /// Set once the first byte arrives.
    pub(super) spoke: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            spoke: AtomicBool::new(false),
        })
    }
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io.store(ms, Relaxed);
    }
    fn quiet_for(&self) -> Duration {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_io.load(Relaxed)))
    }
}

/// Counts a request as running while alive.
pub struct Running(Arc<Activity>);

impl Running {
    pub fn new(a: &Arc<Activity>) -> Running {
        a.requests.fetch_add(1, Relaxed);
        a.running.fetch_add(1, Relaxed);
        a.touch();
        Running(a.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.touch();
        self.0.running.fetch_sub(1, Relaxed);
    }
}

/// Resolves when the connection should be closed: nothing sent within the header-read timeout,
/// or idle (no request running, none started or ended) for the idle timeout.
pub async fn watchdog(a: Arc<Activity>, limits: Limits, metrics: Arc<Metrics>) {
    let tick = Duration::from_millis(250);
    loop {
        tokio::time::sleep(tick).await;
        let silent = a.requests.load(Relaxed) == 0 && !a.spoke.load(Relaxed);
        if silent && a.start.elapsed() >= limits.header_read_timeout {
            metrics.limit_tripped("header_read_timeout");
            return;
        }
        if a.running.load(Relaxed) == 0 && a.quiet_for() >= limits.idle_timeout {
            metrics.limit_tripped("idle_timeout");
            return;
        }
    }
}

/// What a [`Heard`] stream tells when bytes arrive.
pub trait OnHeard {
    fn heard(&self);
}

/// The client spoke (the watchdog's header-read rule).
impl OnHeard for Arc<Activity> {
    fn heard(&self) {
        self.spoke.store(true, Relaxed);
    }
}

/// Milliseconds after `start` when bytes last arrived (shared by both ends of a tunnel).
#[derive(Clone, Debug)]
pub struct LastHeard {
    pub start: Instant,
    pub last: Arc<AtomicU64>,
}

impl LastHeard {
    pub fn new() -> LastHeard {
        LastHeard {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How long nothing arrived.
    pub fn quiet(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Relaxed)))
    }
}

impl Default for LastHeard {
    fn default() -> Self {
        LastHeard::new()
    }
}

impl OnHeard for LastHeard {
    fn heard(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Relaxed);
    }
}

/// A stream that tells `on` whenever a read brought bytes; writes pass through.
pub struct Heard<S, M> {
    pub inner: S,
    pub on: M,
}

impl<S: AsyncRead + Unpin, M: OnHeard + Unpin> AsyncRead for Heard<S, M> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.on.heard();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, M: Unpin> AsyncWrite for Heard<S, M> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    // Passed through: without them hyper sees a socket that cannot `writev` and copies every
    // body chunk into its own write buffer first (its "flatten" strategy) — a second memcpy of
    // every byte served, the largest cost of a warm GET after the file read.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
