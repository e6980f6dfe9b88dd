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
//! Does not own: the sockets (the listener records `spoke` from its reads).

use super::limits::Limits;
use super::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

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
