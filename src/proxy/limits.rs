//! Limits: every bound the proxy puts on what clients and upstreams can make it spend.
//!
//! Owns: the [`Limits`] values (one field per bound, each a `regauth proxy` flag with the default
//! written here), the byte budget for buffered bodies ([`BodyBudget`]) and the per-client failure
//! limiter for client authentication ([`FailureLimiter`]).
//!
//! Why one place: the proxy sits on a network CI jobs (untrusted code) can reach, and each
//! unbounded resource is a way to stop it — slowloris, descriptor exhaustion, memory through many
//! buffered manifests, a 1 byte/s upstream keeping a download alive, bcrypt as a CPU sink. The
//! security model in `docs/proxy.md` lists these same defaults; keep the two in step.
//!
//! Does not own: enforcing them (the listener, the handlers and the fetcher do, each at its own
//! step) or counting trips (the metrics do).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds. `Default` is what `regauth proxy` uses without flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A client must send a request's headers within this time (slowloris).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this time.
    pub idle_timeout: Duration,
    /// Open client connections at most; more are closed at once (and counted).
    pub max_connections: usize,
    /// Largest manifest or tag list read into memory (the spec's 4 MiB manifest limit).
    pub max_manifest_bytes: usize,
    /// All buffered manifest and tag-list bodies together, across requests.
    pub buffer_budget_bytes: usize,
    /// A buffered upstream body (manifest, tag list, token) must arrive within this time.
    pub body_read_timeout: Duration,
    /// A blob download (also one no client waits for any more) ends after this time.
    pub download_deadline: Duration,
    /// A blob download slower than this on average over [`Limits::rate_window`] is aborted.
    pub download_min_rate: u64,
    /// The window for [`Limits::download_min_rate`].
    pub rate_window: Duration,
    /// Credential answers kept (one per registry and repository).
    pub credential_cache_entries: usize,
    /// Failed client authentications per client address within [`Limits::auth_failure_window`]
    /// before further attempts are refused without checking.
    pub auth_failures: u32,
    /// The window for [`Limits::auth_failures`].
    pub auth_failure_window: Duration,
    /// How long a successful bcrypt check is remembered (bcrypt costs ~0.1 s of CPU by design).
    pub auth_cache_ttl: Duration,
    /// Redirect hops followed per upstream request.
    pub max_redirects: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_manifest_bytes: 4 << 20,
            buffer_budget_bytes: 64 << 20,
            body_read_timeout: Duration::from_secs(60),
            download_deadline: Duration::from_secs(3600),
            download_min_rate: 16 << 10,
            rate_window: Duration::from_secs(30),
            credential_cache_entries: 256,
            auth_failures: 10,
            auth_failure_window: Duration::from_secs(60),
            auth_cache_ttl: Duration::from_secs(60),
            max_redirects: 5,
        }
    }
}

/// A byte budget shared by all buffered bodies: a request takes what it needs before reading and
/// gives it back when the body is dropped, so memory stays bounded however many requests wait.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// Why a budget could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("a body of {asked} bytes is over the per-request limit of {limit} bytes")]
    TooLarge { asked: usize, limit: usize },
    #[error("the proxy's buffer budget is in use; try again")]
    Busy,
}

/// Bytes taken from a [`BodyBudget`]; given back on drop.
#[derive(Debug)]
pub struct BudgetPermit(#[allow(dead_code)] OwnedSemaphorePermit);

/// One KiB: the unit the semaphore counts in (its count is a u32 on some platforms).
const UNIT: usize = 1024;

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> BodyBudget {
        let units = (total / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(units)),
            total,
        }
    }

    /// Takes `bytes` (rounded up to KiB), waiting at most `wait` for others to give some back.
    pub async fn take(&self, bytes: usize, wait: Duration) -> Result<BudgetPermit, BudgetError> {
        if bytes > self.total {
            return Err(BudgetError::TooLarge {
                asked: bytes,
                limit: self.total,
            });
        }
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).map_err(|_| BudgetError::Busy)?;
        match tokio::time::timeout(wait, self.permits.clone().acquire_many_owned(units)).await {
            Ok(Ok(p)) => Ok(BudgetPermit(p)),
            _ => Err(BudgetError::Busy),
        }
    }
}

/// Counts failed client authentications per address; past the limit, the address is refused
/// until its window passes, without running bcrypt.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses remembered at most; the oldest windows are dropped first.
const LIMITER_ENTRIES: usize = 4096;

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        // A panic elsewhere must not disable the limiter: the map stays usable.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when `ip` has used up its failures in the current window.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let map = self.lock();
        map.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < self.window && *n >= self.max)
    }

    /// Records one failure of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.lock();
        if map.len() >= LIMITER_ENTRIES && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, (start, _)| start.elapsed() < window);
            if map.len() >= LIMITER_ENTRIES
                && let Some(oldest) = map.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let e = map.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= self.window {
            *e = (Instant::now(), 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_bounds_and_gives_back() {
        let b = BodyBudget::new(8 << 10);
        let err = b.take(9 << 10, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, BudgetError::TooLarge { .. }));
        let p = b.take(8 << 10, Duration::ZERO).await.unwrap();
        assert_eq!(
            b.take(1, Duration::from_millis(10)).await.unwrap_err(),
            BudgetError::Busy
        );
        drop(p);
        b.take(1, Duration::ZERO).await.unwrap();
    }

    #[test]
    fn limiter_blocks_after_max_failures_and_forgets_after_window() {
        let l = FailureLimiter::new(2, Duration::from_millis(50));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        l.failed(ip);
        assert!(!l.blocked(ip));
        l.failed(ip);
        assert!(l.blocked(ip));
        assert!(!l.blocked(other));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!l.blocked(ip));
    }

    #[test]
    fn limiter_is_bounded() {
        let l = FailureLimiter::new(1, Duration::from_secs(60));
        for i in 0..(LIMITER_ENTRIES as u32 + 10) {
            l.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(l.lock().len() <= LIMITER_ENTRIES);
    }
}
