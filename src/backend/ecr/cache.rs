//! The on-disk token cache: `cache.json` (0600, atomic writes) under `cache.lock`.
//!
//! Owns: the file format, the half-life freshness rule ([`CacheEntry::is_fresh`]) and locking.
//! Does not own: when to refresh or what to do when a refresh fails (see [`super::backend`]).

use super::EcrError;
use std::collections::BTreeMap;
use std::path::PathBuf;

const CACHE_FILE: &str = "cache.json";
const LOCK_FILE: &str = "cache.lock";
const CACHE_VERSION: u32 = 1;

/// One cached token.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    pub proxy_endpoint: String,
    pub username: String,
    pub password: String,
    /// Unix seconds when the token was fetched.
    pub fetched_at: u64,
    /// Unix seconds of the API's `expiresAt`, if it sent one.
    pub expires_at: Option<u64>,
}

impl CacheEntry {
    /// The lifetime used for the half-life rule.
    fn lifetime(&self, max_age: u64) -> u64 {
        match self.expires_at {
            Some(e) if e > self.fetched_at => (e - self.fetched_at).min(max_age),
            _ => max_age,
        }
    }

    /// True while less than half the lifetime has passed.
    pub fn is_fresh(&self, now: u64, max_age: u64) -> bool {
        now >= self.fetched_at && now - self.fetched_at < self.lifetime(max_age) / 2
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    version: u32,
    entries: BTreeMap<String, CacheEntry>,
}

/// The on-disk token cache.
pub struct TokenCache {
    dir: PathBuf,
}

impl TokenCache {
    pub fn new(dir: PathBuf) -> Self {
        TokenCache { dir }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(CACHE_FILE)
    }

    fn err(&self, path: PathBuf, e: impl std::fmt::Display) -> EcrError {
        EcrError::Cache {
            path,
            detail: e.to_string(),
        }
    }

    /// All entries; a missing, unreadable-as-JSON or other-version file reads as empty (it is a
    /// cache: the next write replaces it).
    fn read(&self) -> BTreeMap<String, CacheEntry> {
        let Ok(bytes) = std::fs::read(self.file()) else {
            return BTreeMap::new();
        };
        match serde_json::from_slice::<CacheFile>(&bytes) {
            Ok(f) if f.version == CACHE_VERSION => f.entries,
            _ => BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<CacheEntry> {
        self.read().remove(key)
    }

    pub fn entries(&self) -> BTreeMap<String, CacheEntry> {
        self.read()
    }

    /// Holds the cache's exclusive lock until dropped.
    pub(super) fn lock(&self) -> Result<std::fs::File, EcrError> {
        crate::fsutil::ensure_private_dir(&self.dir).map_err(|e| self.err(self.dir.clone(), e))?;
        let p = self.dir.join(LOCK_FILE);
        crate::fsutil::lock_exclusive(&p).map_err(|e| self.err(p, e))
    }

    /// Inserts an entry. The caller holds [`Self::lock`].
    pub(super) fn put_locked(&self, key: &str, entry: CacheEntry) -> Result<(), EcrError> {
        let mut entries = self.read();
        entries.insert(key.to_owned(), entry);
        let f = CacheFile {
            version: CACHE_VERSION,
            entries,
        };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| self.err(self.file(), e))?;
        crate::fsutil::write_atomic(&self.file(), &bytes, 0o600)
            .map_err(|e| self.err(self.file(), e))
    }
}
