//! Step 6: the on-disk cache under `--cache-dir`.
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
//! Owns: content addressing and the commit rule — a file appears under `blobs/` or `manifests/`
//! only by `rename` from `tmp/` after its bytes hashed to the name and were fsynced, so a crash
//! (even `kill -9` mid-download) leaves at worst a stray temp file, never a wrong entry. Also the
//! library side of `regauth cache ls|verify|gc`.
//!
//! Why `confirmed/`: content addressing dedupes across repositories, but a private layer cached for
//! repository A must not be handed to a client asking for it via repository B unless the upstream,
//! with the credentials that client's request would use, says B has it (a HEAD). Confirmations are
//! remembered so that's one HEAD per (upstream, repo, digest, identity), and they survive restarts
//! so a cached image stays pullable while the upstream is down.
//!
//! Does not own: fetching or verification while streaming ([`super::verify`]).

use crate::fsutil::{ensure_private_dir, write_atomic};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The cache root.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
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
        let tmp = root.join("tmp");
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Cache {
            root: root.to_owned(),
            _lock: Some(std::sync::Arc::new(lock)),
        })
    }

    /// Opens without creating or cleaning (for `regauth cache`, which may run beside a proxy).
    pub fn existing(root: &Path) -> Result<Cache, CacheError> {
        std::fs::metadata(root).map_err(io(root))?;
        Ok(Cache {
            root: root.to_owned(),
            _lock: None,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    fn manifest_path(&self, hex: &str) -> PathBuf {
        self.root.join("manifests/sha256").join(hex)
    }

    /// A fresh temp path for a download.
    pub fn tmp_path(&self, hex: &str) -> PathBuf {
        self.root.join("tmp").join(format!(
            "{hex}.{}.{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ))
    }

    /// Size of a cached blob.
    pub fn blob_len(&self, hex: &str) -> Option<u64> {
        std::fs::metadata(self.blob_path(hex)).ok().map(|m| m.len())
    }

    /// Moves a verified, fsynced temp file into place.
    pub fn commit_blob(&self, tmp: &Path, hex: &str) -> Result<(), CacheError> {
        let dst = self.blob_path(hex);
        std::fs::rename(tmp, &dst).map_err(io(&dst))?;
        if let Some(d) = dst.parent()
            && let Ok(f) = std::fs::File::open(d)
        {
            let _ = f.sync_all();
        }
        Ok(())
    }

    /// Marks an entry as recently used (gc evicts least recently used first).
    pub fn touch(&self, path: &Path) {
        if let Ok(f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// A cached manifest and its Content-Type.
    pub fn manifest(&self, hex: &str) -> Option<(Vec<u8>, String)> {
        let p = self.manifest_path(hex);
        let body = std::fs::read(&p).ok()?;
        let ct = std::fs::read_to_string(p.with_extension("type")).ok()?;
        self.touch(&p);
        Some((body, ct))
    }

    /// Stores a manifest whose digest the caller verified.
    pub fn put_manifest(&self, hex: &str, body: &[u8], ct: &str) -> Result<(), CacheError> {
        let p = self.manifest_path(hex);
        let t = p.with_extension("type");
        write_atomic(&t, ct.as_bytes(), 0o600).map_err(io(&t))?;
        write_atomic(&p, body, 0o600).map_err(io(&p))
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
    pub fn list(&self) -> Result<Vec<Entry>, CacheError> {
        let mut out = Vec::new();
        for (kind, sub) in [
            (EntryKind::Blob, "blobs/sha256"),
            (EntryKind::Manifest, "manifests/sha256"),
        ] {
            let d = self.root.join(sub);
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&d)(e)),
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains('.') {
                    continue;
                }
                let Ok(m) = e.metadata() else { continue };
                out.push(Entry {
                    kind,
                    digest: format!("sha256:{name}"),
                    size: m.len(),
                    modified: m.modified().unwrap_or(UNIX_EPOCH),
                    path: e.path(),
                });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
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
    pub fn gc(
        &self,
        max_size: Option<u64>,
        max_age: Option<Duration>,
        dry_run: bool,
    ) -> Result<GcReport, CacheError> {
        let mut report = GcReport::default();
        let rm = |p: &Path| {
            if !dry_run {
                let _ = std::fs::remove_file(p);
            }
        };
        if let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) {
            for e in rd.flatten() {
                // Only stale partials: a live proxy may be writing fresh ones.
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a > Duration::from_secs(3600));
                if old {
                    report.removed += 1;
                    rm(&e.path());
                }
            }
        }
        let mut entries = self.list()?;
        entries.sort_by_key(|e| e.modified);
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut removed_manifests = Vec::new();
        for e in &entries {
            let too_old = max_age.is_some_and(|m| e.modified.elapsed().is_ok_and(|a| a > m));
            let too_big = max_size.is_some_and(|m| total > m);
            if too_old || too_big {
                report.removed += 1;
                report.freed += e.size;
                total -= e.size;
                rm(&e.path);
                if e.kind == EntryKind::Manifest {
                    rm(&e.path.with_extension("type"));
                    removed_manifests.push(e.digest.clone());
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.root.join("tags")) {
            for e in rd.flatten() {
                let gone = std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<TagEntry>(&b).ok())
                    .is_none_or(|t| removed_manifests.contains(&t.digest));
                if gone {
                    rm(&e.path());
                }
            }
        }
        report.kept_bytes = total;
        Ok(report)
    }
}

/// What kind of content an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Blob,
    Manifest,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Blob => "blob",
            EntryKind::Manifest => "manifest",
        }
    }
}

/// One cached content file.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: EntryKind,
    pub digest: String,
    pub size: u64,
    pub modified: SystemTime,
    pub path: PathBuf,
}

/// Result of [`Cache::gc`].
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub removed: u64,
    pub freed: u64,
    pub kept_bytes: u64,
}

/// Re-hashes one entry; `Err` says why it is bad.
pub fn verify_entry(e: &Entry) -> Result<(), String> {
    let mut f = std::fs::File::open(&e.path).map_err(|x| x.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|x| x.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let actual = format!("sha256:{:x}", h.finalize());
    if actual == e.digest {
        Ok(())
    } else {
        Err(format!("content hashes to {actual}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_verify_gc() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let body = b"hello";
        let hex = format!("{:x}", Sha256::digest(body));
        let tmp = c.tmp_path(&hex);
        std::fs::write(&tmp, body).unwrap();
        c.commit_blob(&tmp, &hex).unwrap();
        c.put_manifest(&hex, body, "application/x").unwrap();
        // A corrupt entry.
        std::fs::write(c.blob_path(&"0".repeat(64)), b"x").unwrap();
        let list = c.list().unwrap();
        assert_eq!(list.len(), 3);
        let bad: Vec<_> = list.iter().filter(|e| verify_entry(e).is_err()).collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(c.manifest(&hex).unwrap().1, "application/x");
        let r = c.gc(Some(5), None, false).unwrap();
        assert!(r.kept_bytes <= 5);
        assert_eq!(r.removed, 2);
        // One proxy per cache folder.
        assert!(matches!(Cache::open(d.path()), Err(CacheError::InUse(_))));
        // Leftover temp files are removed at open.
        std::fs::write(c.tmp_path("x"), b"partial").unwrap();
        drop(c);
        Cache::open(d.path()).unwrap();
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }
}
