//! Single-flight for small buffered answers: one computation per key at a time, its result
//! shared with every caller that asked while it ran.
//!
//! Owns: [`SingleFlight`] — the table of running computations. Used for manifest fetches
//! ([`super::handler::manifest`]: one upstream GET for a thousand clients asking at once for a
//! cold tag or digest) and for token requests ([`super::upstream_auth`]: one per scope set and
//! identity).
//!
//! Why not [`super::verify::Flights`]: that is a streaming download with a staging file, detached
//! from its clients, for bodies that may be gigabytes. A manifest or a token is a few kilobytes
//! read into memory; what matters is only that concurrent callers share one upstream exchange.
//!
//! Why the first caller's future does the work and no task is spawned: if that caller goes
//! away (its client disconnected), [`tokio::sync::OnceCell::get_or_init`] lets the next waiter
//! run its own future, so nobody waits on an abandoned computation. An entry leaves the table as
//! soon as its result is published (later callers read the cache the computation filled), or
//! when its last waiter leaves without one — a drop guard, so cancellation cannot leak entries.
//!
//! Does not own: what is computed or what its result is keyed by (the caller chooses the key;
//! anything that may change the answer — the credentials' identity above all — must be in it).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::OnceCell;

/// Running computations by key.
#[derive(Debug)]
pub struct SingleFlight<K, V> {
    map: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// A panic elsewhere while the table was locked leaves it usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One caller's place in a computation; leaving the table is its drop.
struct Joined<'a, K: Hash + Eq, V> {
    map: &'a Mutex<HashMap<K, Arc<OnceCell<V>>>>,
    key: K,
    cell: Arc<OnceCell<V>>,
}

impl<K: Hash + Eq, V> Drop for Joined<'_, K, V> {
    fn drop(&mut self) {
        let mut map = lock(self.map);
        let ours = map
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        // Clones are only made under the lock: 2 = the table's and this one's, no other waiter.
        if ours && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2) {
            map.remove(&self.key);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// `compute`'s result, or that of the computation already running for `key`.
    pub async fn run<F, Fut>(&self, key: K, compute: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = lock(&self.map).entry(key.clone()).or_default().clone();
        let joined = Joined {
            map: &self.map,
            key,
            cell,
        };
        joined.cell.get_or_init(compute).await.clone()
    }

    /// Computations running now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_computation_and_the_table_empties() {
        let flights = Arc::new(SingleFlight::<&str, usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 7
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0);
        // A later call computes again (the result is not kept here).
        assert_eq!(flights.run("k", || async { 9 }).await, 9);
    }

    #[tokio::test]
    async fn an_abandoned_leader_hands_over_and_leaves_no_entry() {
        let flights = Arc::new(SingleFlight::<&str, u8>::default());
        let f = flights.clone();
        let leader = tokio::spawn(async move { f.run("k", std::future::pending).await });
        tokio::task::yield_now().await;
        let f = flights.clone();
        let follower = tokio::spawn(async move { f.run("k", || async { 3 }).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        assert_eq!(follower.await.unwrap(), 3);
        assert_eq!(flights.len(), 0);
        // A caller dropped before any result leaves nothing behind either.
        let f = flights.clone();
        let lone = tokio::spawn(async move { f.run("j", std::future::pending).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        lone.abort();
        let _ = lone.await;
        assert_eq!(flights.len(), 0);
    }
}
