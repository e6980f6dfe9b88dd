//! The on-disk cache under `--cache-dir`.
//!
//! Layout (all folders 0700):
//! ```text
//! blobs/sha256/<hex>            verified blob bytes
//! manifests/sha256/<hex>        verified manifest bytes
//! manifests/sha256/<hex>.type   its Content-Type
//! tags/<sha256(key)>.json       tag → digest for (upstream, repo, tag, Accept), with fetch time
//! confirmed/<sha256(key)>       the upstream confirmed (upstream, repo, digest, identity)
//! tmp/                          downloads in progress (emptied at start)
//! ```
//!
//! Owns: the cache as a whole — opening it (one proxy per folder, `tmp/` emptied), the content
//! store behind the [`super::store`] seam (blobs and manifests: a file appears under `blobs/` or
//! `manifests/` only by commit from `tmp/` after its bytes hashed to the name and were fsynced, so
//! a crash — even `kill -9` mid-download — leaves at worst a stray temp file, never a wrong
//! entry), tag entries and repository confirmations beside it, and the library side of
//! `regauth cache ls|verify|gc`, which goes through the same seam.
//!
//! Why `confirmed/`: content addressing dedupes across repositories, but a private layer cached for
//! repository A must not be handed to a client asking for it via repository B unless the upstream,
//! with the credentials that client's request would use, says B has it (a HEAD). Confirmations are
//! remembered so that's one HEAD per (upstream, repo, digest, identity), and they survive restarts
//! so a cached image stays pullable while the upstream is down.
//!
//! Does not own: how content is stored ([`super::store`]) or fetching and verification while
//! streaming ([`super::verify`]).

use super::store::{ContentKind, ContentStore, Entry, FsStore, StoreError};
use crate::fsutil::{ensure_private_dir, write_atomic};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

/// Cache errors name the path.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {0} is in use by another running regauth proxy")]
    InUse(PathBuf),
    #[error("cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A tag resolution.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TagEntry {
    pub upstream: String,
    pub repo: String,
    pub tag: String,
    pub accept: String,
    pub digest: String,
    /// Unix seconds of the last time the upstream confirmed it.
    pub checked_at: u64,
}

/// The cache root: the content store plus tag entries and confirmations.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    store: FsStore,
    /// Held by a running proxy: one proxy per cache folder (it empties `tmp/` at start).
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

/// `sha256:<64 hex>` → hex, else `None` (only sha256 content is cached).
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

fn key_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    format!("{:x}", h.finalize())
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cache {
    /// Opens (creating) the cache and empties `tmp/` — anything there is from a process that died
    /// mid-download and was never verified.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for sub in [
            "",
            "blobs/sha256",
            "manifests/sha256",
            "tags",
            "confirmed",
            "tmp",
        ] {
            let d = root.join(sub);
            ensure_private_dir(&d).map_err(io(&d))?;
        }
        let lock_path = root.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CacheError::InUse(root.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let store = FsStore::new(root);
        store.clear_staging();
        Ok(Cache {
            root: root.to_owned(),
            store,
            _lock: Some(std::sync::Arc::new(lock)),
        })
    }

    /// Opens without creating or cleaning (for `regauth cache`, which may run beside a proxy).
    pub fn existing(root: &Path) -> Result<Cache, CacheError> {
        std::fs::metadata(root).map_err(io(root))?;
        Ok(Cache {
            root: root.to_owned(),
            store: FsStore::new(root),
            _lock: None,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store (blobs and manifests).
    pub fn store(&self) -> &FsStore {
        &self.store
    }

    /// Size of a cached blob.
    pub async fn blob_len(&self, hex: &str) -> Option<u64> {
        self.store.len(ContentKind::Blob, hex).await.ok().flatten()
    }

    /// A cached manifest and its Content-Type (and marks it used).
    pub async fn manifest(&self, hex: &str) -> Option<(Vec<u8>, String)> {
        let mut m = self
            .store
            .open(ContentKind::Manifest, hex, 0)
            .await
            .ok()??;
        let mut body = Vec::with_capacity(m.len as usize);
        m.reader.read_to_end(&mut body).await.ok()?;
        self.store.touch(ContentKind::Manifest, hex).await;
        Some((body, m.media_type?))
    }

    /// Stores a manifest whose digest the caller verified.
    pub async fn put_manifest(&self, hex: &str, body: &[u8], ct: &str) -> Result<(), CacheError> {
        let mut staged = self.store.stage(ContentKind::Manifest, hex).await?;
        staged.write(body).await?;
        self.store.commit(staged, Some(ct)).await?;
        Ok(())
    }

    fn tag_path(&self, upstream: &str, repo: &str, tag: &str, accept: &str) -> PathBuf {
        self.root
            .join("tags")
            .join(format!("{}.json", key_hash(&[upstream, repo, tag, accept])))
    }

    pub fn tag(&self, upstream: &str, repo: &str, tag: &str, accept: &str) -> Option<TagEntry> {
        let p = self.tag_path(upstream, repo, tag, accept);
        let e: TagEntry = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        (e.upstream == upstream && e.repo == repo && e.tag == tag && e.accept == accept)
            .then_some(e)
    }

    pub fn put_tag(&self, e: &TagEntry) -> Result<(), CacheError> {
        let p = self.tag_path(&e.upstream, &e.repo, &e.tag, &e.accept);
        let bytes = serde_json::to_vec(e).unwrap_or_default();
        write_atomic(&p, &bytes, 0o600).map_err(io(&p))
    }

    fn confirmed_path(&self, upstream: &str, repo: &str, digest: &str, identity: &str) -> PathBuf {
        self.root
            .join("confirmed")
            .join(key_hash(&[upstream, repo, digest, identity]))
    }

    pub fn is_confirmed(&self, upstream: &str, repo: &str, digest: &str, identity: &str) -> bool {
        self.confirmed_path(upstream, repo, digest, identity)
            .exists()
    }

    pub fn confirm(&self, upstream: &str, repo: &str, digest: &str, identity: &str) {
        let p = self.confirmed_path(upstream, repo, digest, identity);
        if let Err(e) = write_atomic(&p, b"", 0o600) {
            tracing::warn!(error = %e, "could not record a repository confirmation");
        }
    }

    /// Every content entry.
    pub async fn list(&self) -> Result<Vec<Entry>, CacheError> {
        Ok(self.store.list().await?)
    }

    /// Tag entries.
    pub fn tags(&self) -> Vec<TagEntry> {
        let mut v: Vec<TagEntry> = std::fs::read_dir(self.root.join("tags"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        v.sort_by(|a, b| (&a.upstream, &a.repo, &a.tag).cmp(&(&b.upstream, &b.repo, &b.tag)));
        v
    }

    /// Gc: drops temp leftovers, then entries unused for `max_age`, then least recently used
    /// entries until the total is at most `max_size`. Tag entries pointing at removed manifests
    /// go too.
    pub async fn gc(
        &self,
        max_size: Option<u64>,
        max_age: Option<Duration>,
        dry_run: bool,
    ) -> Result<GcReport, CacheError> {
        let mut report = GcReport {
            removed: self
                .store
                .sweep_staging(Duration::from_secs(3600), dry_run)
                .await?,
            ..GcReport::default()
        };
        let mut entries = self.list().await?;
        entries.sort_by_key(|e| e.accessed);
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut removed_manifests = Vec::new();
        for e in &entries {
            let too_old = max_age.is_some_and(|m| e.accessed.elapsed().is_ok_and(|a| a > m));
            let too_big = max_size.is_some_and(|m| total > m);
            if !(too_old || too_big) {
                continue;
            }
            report.removed += 1;
            report.freed += e.size;
            total -= e.size;
            report.entries.push(e.clone());
            if !dry_run && let Some(hex) = sha256_hex(&e.digest) {
                self.store.remove(e.kind, hex).await?;
            }
            if e.kind == ContentKind::Manifest {
                removed_manifests.push(e.digest.clone());
            }
        }
        self.drop_tags_of(&removed_manifests, dry_run);
        report.kept_bytes = total;
        Ok(report)
    }

    /// Removes tag entries that are unreadable or point at `removed` manifests.
    fn drop_tags_of(&self, removed: &[String], dry_run: bool) {
        let Ok(rd) = std::fs::read_dir(self.root.join("tags")) else {
            return;
        };
        for e in rd.flatten() {
            let gone = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<TagEntry>(&b).ok())
                .is_none_or(|t| removed.contains(&t.digest));
            if gone && !dry_run {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Re-hashes one entry.
    pub async fn verify_entry(&self, e: &Entry) -> Result<(), EntryProblem> {
        let hex = sha256_hex(&e.digest).ok_or(EntryProblem::Missing)?;
        let mut stored = self
            .store
            .open(e.kind, hex, 0)
            .await?
            .ok_or(EntryProblem::Missing)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = stored
                .reader
                .read(&mut buf)
                .await
                .map_err(EntryProblem::Read)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = format!("sha256:{:x}", h.finalize());
        if actual == e.digest {
            Ok(())
        } else {
            Err(EntryProblem::Mismatch { actual })
        }
    }
}

/// Result of [`Cache::gc`].
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Files removed (or, with `dry_run`, that would be): stale staging files and entries.
    pub removed: u64,
    pub freed: u64,
    pub kept_bytes: u64,
    /// The content entries removed (or that would be), least recently used first.
    pub entries: Vec<Entry>,
}

/// Why an entry failed [`Cache::verify_entry`].
#[derive(Debug, thiserror::Error)]
pub enum EntryProblem {
    #[error("content hashes to {actual}")]
    Mismatch { actual: String },
    #[error("entry is gone")]
    Missing,
    #[error("{0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_verify_gc() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let body = b"hello";
        let hex = format!("{:x}", Sha256::digest(body));
        let mut staged = c.store().stage(ContentKind::Blob, &hex).await.unwrap();
        staged.write(body).await.unwrap();
        assert_eq!(c.blob_len(&hex).await, None, "staged bytes are not content");
        let committed = c.store().commit(staged, None).await.unwrap();
        assert_eq!(committed, super::super::store::Committed::Stored);
        c.put_manifest(&hex, body, "application/x").await.unwrap();
        // A corrupt entry.
        let zero = "0".repeat(64);
        std::fs::write(d.path().join("blobs/sha256").join(&zero), b"x").unwrap();
        let list = c.list().await.unwrap();
        assert_eq!(list.len(), 3);
        let mut bad = 0;
        for e in &list {
            bad += usize::from(c.verify_entry(e).await.is_err());
        }
        assert_eq!(bad, 1);
        assert_eq!(c.manifest(&hex).await.unwrap().1, "application/x");
        let r = c.gc(Some(5), None, false).await.unwrap();
        assert!(r.kept_bytes <= 5);
        assert_eq!(r.removed, 2);
        // One proxy per cache folder.
        assert!(matches!(Cache::open(d.path()), Err(CacheError::InUse(_))));
        // Leftover staging is removed at open.
        let staged = c.store().stage(ContentKind::Blob, "x").await.unwrap();
        drop(staged);
        drop(c);
        Cache::open(d.path()).unwrap();
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }
}
