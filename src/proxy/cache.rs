//! The on-disk cache under `--cache-dir`.
//!
//! Layout (all folders 0700):
//! ```text
//! blobs/sha256/<hex>            verified blob bytes
//! manifests/sha256/<hex>        verified manifest bytes
//! manifests/sha256/<hex>.type   its media type, as derived from the verified bytes
//! tags/<sha256(key)>.json       tag → digest for (upstream, repo, tag, Accept), with fetch time
//! confirmed/<sha256(key)>       the upstream confirmed (upstream, repo, digest, identity); mtime = when
//! tmp/                          downloads in progress (emptied at start)
//! ```
//!
//! Folders the cache creates are 0700 and files 0600; a folder that already exists (say
//! `--cache-dir /tmp`, 1777) keeps its mode — chmod-ing a shared folder would break its other users.
//!
//! Why a manifest's media type is derived from its bytes ([`manifest_media_type`]): the upstream's
//! `Content-Type` is not covered by the digest. Storing it would let one hostile upstream, serving
//! known manifest bytes with a wrong type once, break every later pull of that digest from every
//! upstream. The bytes are verified, so what is derived from them is too.
//!
//! Why confirmations expire (`--confirm-ttl`): a confirmation that lived forever would keep serving
//! content the upstream has since deleted or revoked for that repository. After the TTL the
//! upstream is asked again (one `HEAD`) and an expired confirmation is removed.
//!
//! Why the live bound ([`Limits`]) shares [`Cache::gc`] with `regauth cache gc`: one plan (oldest
//! use first, by the entry's mtime, which a hit touches — atime is unreliable under
//! `noatime`/`relatime` — so the order survives restarts) and one set of exemptions: entries with
//! an open reader or a download in flight ([`Cache::pin`]) and digests the policy pins. Below
//! `min_free` free bytes on the cache's file system the proxy stops committing new content
//! (pulls still stream verified, they just aren't kept) rather than failing with `ENOSPC`.
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
//! With `--store` ([`StoreConfig`]): blobs, manifests and tag entries live in the bucket
//! ([`super::store::object`]); this folder keeps staging (`tmp/`), confirmations (per member: they
//! are per identity) and, with `--cache-max-size`, a local tier in front of the bucket (filled
//! behind a bucket hit by [`Cache::open_blob`], bounded by the live evictor). The bucket's bound is
//! [`Cache::sweep`]'s, run only by the member holding the bucket's lease.
//!
//! Does not own: how content is stored ([`super::store`]) or fetching and verification while
//! streaming ([`super::verify`]).

use super::confirmations::ORIGIN;
use super::metrics::Metrics;
use super::store::object::{ObjectStoreBackend, StoreUrl};
use super::store::{
    Committed, ContentKind, ContentStore, Entry, FsStore, Staged, Store, StoreError,
};
use crate::fsutil::{ensure_private_dir, write_atomic};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

/// [`Cache`]'s running total before it is known.
const UNKNOWN: u64 = u64::MAX;

/// Default `--confirm-ttl`: about a day.
pub const DEFAULT_CONFIRM_TTL: Duration = Duration::from_secs(86_400);

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
    #[error("cache {0}: a blocking file task failed")]
    Task(PathBuf),
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

/// The cache's bounds (`regauth proxy --cache-max-size`, `--cache-min-free`, `--confirm-ttl`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Evict least recently used entries while serving to stay at most this many bytes.
    pub max_size: Option<u64>,
    /// Below this many free bytes on the cache's file system, new content is not kept.
    pub min_free: u64,
    /// How long a repository confirmation is trusted before the upstream is asked again.
    pub confirm_ttl: Duration,
    /// Digests never evicted (the policy's pins).
    pub keep: BTreeSet<String>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_size: None,
            min_free: 0,
            confirm_ttl: DEFAULT_CONFIRM_TTL,
            keep: BTreeSet::new(),
        }
    }
}

/// `--store URL` and its bounds: content, tags and access records in a bucket shared by a fleet;
/// the cache folder keeps staging and confirmations (and, with `--cache-max-size`, a local tier).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// `--store-max-size`: the fleet-wide bound the elected sweeper keeps the bucket under.
    pub max_size: Option<u64>,
    /// `--store-sweep-interval`: how often members try the lease and sweep; also how often a hit
    /// rewrites an entry's access record, and how recently used content must be to be exempt.
    pub sweep_interval: Duration,
    /// Keep a local disk tier (bounded by `--cache-max-size`) in front of the bucket.
    pub local_tier: bool,
}

impl StoreConfig {
    pub fn new(url: StoreUrl) -> StoreConfig {
        StoreConfig {
            url,
            max_size: None,
            sweep_interval: Duration::from_secs(60),
            local_tier: false,
        }
    }
}

/// The cache root: the content store plus tag entries and confirmations.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    store: Store,
    /// With `--store`: the bucket's configuration.
    fleet: Option<Arc<StoreConfig>>,
    limits: Arc<Limits>,
    /// Open readers and downloads per content hex: pinned entries are never evicted.
    pins: Arc<Pins>,
    /// One eviction at a time.
    evicting: Arc<tokio::sync::Mutex<()>>,
    /// Blobs being copied from the bucket into the local tier.
    filling: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Bytes of content as of the last plan plus what was committed since ([`UNKNOWN`] before the
    /// first plan): the live bound lists the store only when this says it may be over. Removals
    /// by `regauth cache gc` beside the proxy only make it high, which costs one listing.
    total: Arc<std::sync::atomic::AtomicU64>,
    /// Counts evictions, low-disk skips and expired confirmations.
    metrics: Arc<Metrics>,
    /// Held by a running proxy: one proxy per cache folder (it empties `tmp/` at start).
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

/// Pin counts per content hex, and content kept only while it is read.
#[derive(Debug, Default)]
struct Pins {
    counts: Mutex<HashMap<String, usize>>,
    /// Committed while the disk was low: removed when its last pin goes.
    transient: Mutex<HashMap<String, Vec<PathBuf>>>,
}

/// Keeps an entry from eviction while alive ([`Cache::pin`]).
#[derive(Debug)]
pub struct Pin {
    pins: Arc<Pins>,
    hex: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let last = {
            let mut m = lock(&self.pins.counts);
            match m.get_mut(&self.hex) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    m.remove(&self.hex);
                    true
                }
                None => false,
            }
        };
        if last {
            let paths = lock(&self.pins.transient).remove(&self.hex);
            if let Some(paths) = paths {
                remove_files(paths);
            }
        }
    }
}

/// Unlinks `paths`, off the async workers when there is a runtime.
fn remove_files(paths: Vec<PathBuf>) {
    let unlink = move || {
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(unlink);
        }
        Err(_) => unlink(),
    }
}

/// A poisoned lock only follows a panic elsewhere; the map itself is always consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| CacheError::Task(path.to_owned()))
}

/// Free bytes for unprivileged users on the file system holding `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A manifest's media type from its (verified) bytes: its `mediaType` field, else the schema's
/// rules — schemaVersion 1 → Docker v1 (`prettyjws` when signed); schemaVersion 2 with
/// `manifests` → an index (Docker's manifest list when its entries are Docker types), with
/// `config` → an image manifest (Docker v2 when the config is Docker's). `None`: not a manifest.
pub fn manifest_media_type(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object()?;
    if let Some(t) = o.get("mediaType").and_then(|t| t.as_str()) {
        return Some(t.to_owned());
    }
    let docker = |t: Option<&serde_json::Value>| {
        t.and_then(|t| t.as_str())
            .is_some_and(|t| t.starts_with("application/vnd.docker."))
    };
    match o.get("schemaVersion").and_then(|n| n.as_u64())? {
        1 if o.contains_key("signatures") => {
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws".to_owned())
        }
        1 => Some("application/vnd.docker.distribution.manifest.v1+json".to_owned()),
        2 => {
            if let Some(m) = o.get("manifests").and_then(|m| m.as_array()) {
                let is_docker = !m.is_empty() && m.iter().all(|e| docker(e.get("mediaType")));
                Some(
                    if is_docker {
                        DOCKER_MANIFEST_LIST
                    } else {
                        OCI_INDEX
                    }
                    .to_owned(),
                )
            } else if let Some(c) = o.get("config") {
                let is_docker = docker(c.get("mediaType"));
                Some(
                    if is_docker {
                        DOCKER_MANIFEST_V2
                    } else {
                        OCI_MANIFEST
                    }
                    .to_owned(),
                )
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Is `name` a `write_atomic` temp file (`.<name>.tmp-<pid>-<nanos>`)?
fn is_atomic_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Removes stray `write_atomic` temp files (a crash between create and rename) and, given a TTL,
/// confirmations older than it (start-up, while no other proxy can write).
fn clean_at_start(root: &Path, ttl: Option<Duration>) {
    for sub in ["", "manifests/sha256", "tags", "confirmed"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let expired = sub == "confirmed"
                && ttl.is_some_and(|ttl| {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|a| a > ttl)
                });
            if is_atomic_temp(&name) || expired {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// `sha256:<64 hex>` → hex, else `None` (only sha256 content is cached).
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// A tag entry's object name in the bucket.
fn tag_name(parts: &[&str]) -> String {
    format!("{}.json", key_hash(parts))
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
        clean_at_start(root, None);
        Ok(Cache {
            _lock: Some(std::sync::Arc::new(lock)),
            ..Cache::unlocked(root)
        })
    }

    /// Opens the cache folder (staging, confirmations, the optional local tier) in front of the
    /// bucket `cfg` names.
    pub fn open_with_store(root: &Path, cfg: StoreConfig) -> Result<Cache, CacheError> {
        let mut c = Cache::open(root)?;
        c.use_store(cfg)?;
        Ok(c)
    }

    /// [`Cache::existing`] in front of a bucket (for `regauth cache --store`).
    pub fn existing_with_store(root: &Path, cfg: StoreConfig) -> Result<Cache, CacheError> {
        for sub in ["", "tmp"] {
            let d = root.join(sub);
            ensure_private_dir(&d).map_err(io(&d))?;
        }
        let mut c = Cache::unlocked(root);
        c.use_store(cfg)?;
        Ok(c)
    }

    fn use_store(&mut self, cfg: StoreConfig) -> Result<(), CacheError> {
        let o =
            ObjectStoreBackend::connect(&cfg.url, &self.root, cfg.local_tier, cfg.sweep_interval)?;
        self.store = Store::Object(o);
        self.fleet = Some(Arc::new(cfg));
        Ok(())
    }

    fn unlocked(root: &Path) -> Cache {
        Cache {
            root: root.to_owned(),
            store: Store::Fs(FsStore::new(root)),
            fleet: None,
            limits: Arc::new(Limits::default()),
            pins: Arc::default(),
            evicting: Arc::default(),
            filling: Arc::default(),
            total: Arc::new(std::sync::atomic::AtomicU64::new(UNKNOWN)),
            metrics: Arc::default(),
            _lock: None,
        }
    }

    /// Counts into the proxy's `/metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Cache {
        if let Store::Object(o) = &mut self.store {
            o.set_metrics(metrics.clone());
        }
        self.metrics = metrics;
        self
    }

    /// Applies the bounds (and drops confirmations older than the TTL now).
    pub fn with_limits(mut self, limits: Limits) -> Cache {
        if self._lock.is_some() {
            clean_at_start(&self.root, Some(limits.confirm_ttl));
        }
        self.limits = Arc::new(limits);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Keeps `hex` from eviction until the returned guard drops (an open reader, a download).
    pub fn pin(&self, hex: &str) -> Pin {
        *lock(&self.pins.counts).entry(hex.to_owned()).or_default() += 1;
        Pin {
            pins: self.pins.clone(),
            hex: hex.to_owned(),
        }
    }

    fn is_pinned(&self, hex: &str) -> bool {
        lock(&self.pins.counts).contains_key(hex)
    }

    /// Opens without creating or cleaning (for `regauth cache`, which may run beside a proxy).
    pub fn existing(root: &Path) -> Result<Cache, CacheError> {
        std::fs::metadata(root).map_err(io(root))?;
        Ok(Cache::unlocked(root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store (blobs and manifests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A stored blob opened at `offset`. With a local tier in front of the bucket, a bucket hit
    /// is streamed to the client and, in the background, copied into the local tier — verified
    /// against its digest again, since the local copy is a new write — so the next read is local.
    pub async fn open_blob(
        &self,
        hex: &str,
        offset: u64,
    ) -> Result<Option<super::store::Stored<super::store::StoreReader>>, CacheError> {
        let kind = ContentKind::Blob;
        let Some((o, local)) = self.store.object().and_then(|o| Some((o, o.local()?))) else {
            return Ok(self.store.open(kind, hex, offset).await?);
        };
        if let Some(s) = local.open(kind, hex, offset).await? {
            return Ok(Some(super::store::Stored {
                len: s.len,
                media_type: s.media_type,
                reader: Box::new(s.reader),
            }));
        }
        let got = o.open_bucket(kind, hex, offset).await?;
        if got.is_some() && lock(&self.filling).insert(hex.to_owned()) {
            let (me, hex) = (self.clone(), hex.to_owned());
            tokio::spawn(async move {
                if let Err(e) = me.fill_local(&hex).await {
                    tracing::warn!(error = %e, digest = %format!("sha256:{hex}"), "local tier fill failed");
                }
                lock(&me.filling).remove(&hex);
            });
        }
        Ok(got)
    }

    /// Copies a blob from the bucket into the local tier, then applies the local bound.
    async fn fill_local(&self, hex: &str) -> Result<(), CacheError> {
        let (Some(o), Some(local)) = (self.store.object(), self.store.local()) else {
            return Ok(());
        };
        let kind = ContentKind::Blob;
        let Some(mut src) = o.open_bucket(kind, hex, 0).await? else {
            return Ok(());
        };
        let fresh = self.pin(hex);
        let mut staged = local.stage(kind, hex).await?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match src.reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    staged.discard().await;
                    return Err(io(&self.root)(e));
                }
            };
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            staged.write(&buf[..n]).await?;
        }
        if format!("{:x}", h.finalize()) != hex {
            staged.discard().await;
            return Ok(());
        }
        if local.commit(staged, None).await? == Committed::Stored {
            self.enforce_bound(src.len).await;
        }
        drop(fresh);
        Ok(())
    }

    /// Size of a cached blob.
    pub async fn blob_len(&self, hex: &str) -> Option<u64> {
        self.store.len(ContentKind::Blob, hex).await.ok().flatten()
    }

    /// A cached manifest and its media type — derived from the bytes, the stored type only for
    /// bytes no rule covers (and marks it used).
    pub async fn manifest(&self, hex: &str) -> Option<(Vec<u8>, String)> {
        let mut m = self
            .store
            .open(ContentKind::Manifest, hex, 0)
            .await
            .ok()??;
        let mut body = Vec::with_capacity(m.len as usize);
        m.reader.read_to_end(&mut body).await.ok()?;
        self.store.touch(ContentKind::Manifest, hex).await;
        let media_type = manifest_media_type(&body).or(m.media_type)?;
        Some((body, media_type))
    }

    /// Stores a manifest whose digest the caller verified, with the media type its bytes say.
    pub async fn put_manifest(&self, hex: &str, body: &[u8]) -> Result<(), CacheError> {
        let media_type = manifest_media_type(body).unwrap_or_else(|| OCI_MANIFEST.to_owned());
        let mut staged = self.store.stage(ContentKind::Manifest, hex).await?;
        staged.write(body).await?;
        self.commit(staged, Some(&media_type)).await?;
        Ok(())
    }

    /// Commits verified, staged content and then evicts to the size bound. When the file system
    /// is low on space even after eviction, the content is not kept: it is committed (a rename,
    /// no new space — readers of the download and a `Range` waiting for it still get it) and
    /// removed when its last reader ([`Pin`]) goes; `Ok(false)`.
    pub async fn commit(
        &self,
        staged: Staged,
        media_type: Option<&str>,
    ) -> Result<bool, CacheError> {
        let kind = staged.kind();
        let hex = staged.hex().to_owned();
        // The fresh entry is not the one to evict for itself.
        let fresh = self.pin(&hex);
        if let Store::Object(o) = &self.store {
            // The bucket's bound is the sweeper's ([`Cache::sweep`]); the local tier's is ours.
            let existed = o.commit(staged, media_type).await? == Committed::AlreadyPresent;
            if let Some(local) = o.local() {
                let added = match existed {
                    false => local.len(kind, &hex).await.ok().flatten().unwrap_or(0),
                    true => 0,
                };
                self.enforce_bound(added).await;
            }
            drop(fresh);
            return Ok(true);
        }
        let low = self.limits.min_free > 0 && !self.has_room().await;
        let existed = self.store.commit(staged, media_type).await? == Committed::AlreadyPresent;
        if low && !existed {
            self.metrics.cache_skipped_low_disk();
            tracing::warn!(
                cache = %self.root.display(),
                min_free = self.limits.min_free,
                "low on disk space: verified content served but not kept"
            );
            let mut paths = Vec::new();
            if let Some(fs) = self.store.local() {
                paths.push(fs.content_path(kind, &hex));
                if kind == ContentKind::Manifest {
                    paths.push(fs.content_path(kind, &hex).with_extension("type"));
                }
            }
            lock(&self.pins.transient).insert(hex, paths);
            drop(fresh);
            return Ok(false);
        }
        let added = match existed {
            false => self.store.len(kind, &hex).await.ok().flatten().unwrap_or(0),
            true => 0,
        };
        self.enforce_bound(added).await;
        drop(fresh);
        Ok(true)
    }

    fn free_now(&self) -> u64 {
        free_space(&self.root).unwrap_or(u64::MAX)
    }

    /// Is `min_free` left (evicting least recently used entries if that helps)? The staged
    /// bytes already take their space.
    async fn has_room(&self) -> bool {
        let min = self.limits.min_free;
        if self.free_now() >= min {
            return true;
        }
        let total: u64 = match self.local_store().list().await {
            Ok(l) => l.iter().map(|e| e.size).sum(),
            Err(_) => return false,
        };
        let deficit = min.saturating_sub(self.free_now());
        let _guard = self.evicting.lock().await;
        let local = self.local_store();
        if let Ok(r) = self
            .plan(
                &local,
                Some(total.saturating_sub(deficit)),
                None,
                None,
                false,
            )
            .await
        {
            self.count_evicted(&r);
        }
        self.free_now() >= min
    }

    /// The live evictor: least recently used entries go until the cache is within `max_size`.
    /// `added`: bytes just committed. Counted under the eviction lock, so a plan's total never
    /// loses a commit (it may count one twice: high, so safe).
    pub async fn enforce_bound(&self, added: u64) {
        let Some(max) = self.limits.max_size else {
            return;
        };
        use std::sync::atomic::Ordering::Relaxed;
        let _guard = self.evicting.lock().await;
        let _ = self.total.fetch_update(Relaxed, Relaxed, |t| {
            (t != UNKNOWN).then(|| t.saturating_add(added))
        });
        let t = self.total.load(Relaxed);
        if t != UNKNOWN && t <= max {
            return;
        }
        match self
            .plan(&self.local_store(), Some(max), None, None, false)
            .await
        {
            Ok(r) => self.count_evicted(&r),
            Err(e) => tracing::warn!(error = %e, "cache eviction failed"),
        }
    }

    fn count_evicted(&self, r: &GcReport) {
        if r.entries.is_empty() {
            return;
        }
        let n = r.entries.len() as u64;
        self.metrics.cache_evicted(n, r.freed);
        tracing::info!(
            entries = r.entries.len(),
            freed = r.freed,
            kept = r.kept_bytes,
            "evicted least recently used cache entries"
        );
    }

    fn tag_path(&self, upstream: &str, repo: &str, tag: &str, accept: &str) -> PathBuf {
        self.root
            .join("tags")
            .join(format!("{}.json", key_hash(&[upstream, repo, tag, accept])))
    }

    pub async fn tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        accept: &str,
    ) -> Option<TagEntry> {
        let bytes = match self.store.object() {
            Some(o) => {
                let name = tag_name(&[upstream, repo, tag, accept]);
                o.get_meta(&["tags", &name]).await?.to_vec()
            }
            None => tokio::fs::read(self.tag_path(upstream, repo, tag, accept))
                .await
                .ok()?,
        };
        let e: TagEntry = serde_json::from_slice(&bytes).ok()?;
        (e.upstream == upstream && e.repo == repo && e.tag == tag && e.accept == accept)
            .then_some(e)
    }

    pub async fn put_tag(&self, e: &TagEntry) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(e).unwrap_or_default();
        if let Some(o) = self.store.object() {
            let name = tag_name(&[&e.upstream, &e.repo, &e.tag, &e.accept]);
            return Ok(o.put_meta(&["tags", &name], bytes).await?);
        }
        let p = self.tag_path(&e.upstream, &e.repo, &e.tag, &e.accept);
        let q = p.clone();
        blocking(&p, move || write_atomic(&q, &bytes, 0o600))
            .await?
            .map_err(io(&p))
    }

    /// The local record of confirmation `name` (`key_hash` of upstream, repo, digest, identity:
    /// the same name as in the bucket).
    fn confirmed_path(&self, name: &str) -> PathBuf {
        self.root.join("confirmed").join(name)
    }

    /// Records that `registry` (canonical) served `digest` and the bytes verified: the origin
    /// record without which a cached copy never stands in for that registry's answer.
    pub async fn record_origin(&self, registry: &impl std::fmt::Display, digest: &str) {
        let origin = registry.to_string();
        self.confirm(&origin, "", digest, ORIGIN).await;
    }

    /// Did `registry` serve `digest` within `--confirm-ttl` ([`Cache::record_origin`])?
    pub async fn has_origin(&self, registry: &impl std::fmt::Display, digest: &str) -> bool {
        let origin = registry.to_string();
        self.is_confirmed(&origin, "", digest, ORIGIN).await
    }

    /// Is there a confirmation younger than `--confirm-ttl`? An expired one is removed.
    ///
    /// With `--store` the record is shared by the fleet (the bytes are in the bucket, so is the
    /// fact that this registry served them: a record any member wrote counts), and the local
    /// file is this member's copy of it, so a hit costs no bucket request while it is fresh.
    pub async fn is_confirmed(
        &self,
        upstream: &str,
        repo: &str,
        digest: &str,
        identity: &str,
    ) -> bool {
        let name = key_hash(&[upstream, repo, digest, identity]);
        if self.is_confirmed_here(&name).await {
            return true;
        }
        let Some(o) = self.store.object() else {
            return false;
        };
        let Some(b) = o.get_meta(&["confirmed", &name]).await else {
            return false;
        };
        // Body: seconds since the epoch when it was written.
        let at = std::str::from_utf8(&b)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs());
        if let (Some(at), Ok(now)) = (at, now)
            && at <= now
            && now - at <= self.limits.confirm_ttl.as_secs()
        {
            self.confirm_here(&name).await;
            return true;
        }
        self.metrics.confirm_expired();
        o.delete_meta(&["confirmed", &name]).await;
        false
    }

    /// The local record (the cache folder's `confirmed/`).
    async fn is_confirmed_here(&self, name: &str) -> bool {
        let p = self.confirmed_path(name);
        let Ok(m) = tokio::fs::metadata(&p).await else {
            return false;
        };
        // An mtime in the future (clock set back) counts as expired: ask again rather than trust.
        let age = m.modified().ok().and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a <= self.limits.confirm_ttl) {
            return true;
        }
        self.metrics.confirm_expired();
        let _ = tokio::fs::remove_file(&p).await;
        false
    }

    async fn confirm_here(&self, name: &str) {
        let p = self.confirmed_path(name);
        let q = p.clone();
        match blocking(&p, move || write_atomic(&q, b"", 0o600)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not record a repository confirmation"),
            Err(e) => tracing::warn!(error = %e, "could not record a repository confirmation"),
        }
    }

    /// Records a confirmation: here, and with `--store` in the bucket for the fleet.
    pub async fn confirm(&self, upstream: &str, repo: &str, digest: &str, identity: &str) {
        let name = key_hash(&[upstream, repo, digest, identity]);
        if let Some(o) = self.store.object() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let body = now.to_string().into_bytes();
            if let Err(e) = o.put_meta(&["confirmed", &name], body).await {
                tracing::warn!(error = %e, "could not record a repository confirmation in the bucket");
            }
        }
        self.confirm_here(&name).await;
    }

    /// Every content entry.
    pub async fn list(&self) -> Result<Vec<Entry>, CacheError> {
        Ok(self.store.list().await?)
    }

    /// Tag entries.
    pub async fn tags(&self) -> Vec<TagEntry> {
        let mut v: Vec<TagEntry> = match self.store.object() {
            Some(o) => {
                let mut v = Vec::new();
                for name in o.list_meta(&["tags"]).await {
                    if let Some(b) = o.get_meta(&["tags", &name]).await
                        && let Ok(t) = serde_json::from_slice(&b)
                    {
                        v.push(t);
                    }
                }
                v
            }
            None => std::fs::read_dir(self.root.join("tags"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                .collect(),
        };
        v.sort_by(|a, b| (&a.upstream, &a.repo, &a.tag).cmp(&(&b.upstream, &b.repo, &b.tag)));
        v
    }

    /// Gc: drops temp leftovers, then entries unused for `max_age`, then least recently used
    /// entries until the total is at most `max_size`. Tag entries pointing at removed manifests
    /// go too.
    /// Entries pinned (open readers, downloads) or kept by the policy are skipped; this is
    /// also the live evictor's plan ([`Cache::enforce_bound`]).
    pub async fn gc(
        &self,
        max_size: Option<u64>,
        max_age: Option<Duration>,
        dry_run: bool,
    ) -> Result<GcReport, CacheError> {
        let swept = self
            .store
            .sweep_staging(Duration::from_secs(3600), dry_run)
            .await?;
        let mut report = self
            .plan(&self.store, max_size, max_age, None, dry_run)
            .await?;
        report.removed += swept;
        Ok(report)
    }

    /// The local store live bounds apply to: the filesystem store, or the bucket's local tier.
    fn local_store(&self) -> Store {
        match self.store.local() {
            Some(l) => Store::Fs(l.clone()),
            None => self.store.clone(),
        }
    }

    /// With `--store`: runs [`Cache::sweep`] every `--store-sweep-interval` (in the background).
    pub fn spawn_sweeper(&self) {
        let Some(cfg) = self.fleet.clone() else {
            return;
        };
        if cfg.max_size.is_none() {
            return;
        }
        let me = self.clone();
        let holder = format!("{}-{}", std::process::id(), super::store::unique_suffix());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(cfg.sweep_interval).await;
                me.sweep(&holder).await;
            }
        });
    }

    /// One fleet sweep: only the holder of the bucket's lease evicts (so members never fight
    /// over it); least recently used first, sparing content used within the last interval (a
    /// member may be serving it) and this member's pins.
    pub async fn sweep(&self, holder: &str) -> bool {
        let (Some(cfg), Some(o)) = (&self.fleet, self.store.object()) else {
            return false;
        };
        // Held for three intervals: a sweeper that dies is replaced within that.
        if !o.take_lease(holder, cfg.sweep_interval * 3).await {
            return false;
        }
        self.metrics.store_sweep();
        let _guard = self.evicting.lock().await;
        let bucket = Store::Object(o.clone());
        let grace = Some(cfg.sweep_interval);
        match self.plan(&bucket, cfg.max_size, None, grace, false).await {
            Ok(r) => self.count_evicted(&r),
            Err(e) => tracing::warn!(error = %e, "bucket sweep failed"),
        }
        true
    }

    /// The one eviction plan: oldest use first, skipping pinned and kept entries.
    async fn plan(
        &self,
        store: &Store,
        max_size: Option<u64>,
        max_age: Option<Duration>,
        grace: Option<Duration>,
        dry_run: bool,
    ) -> Result<GcReport, CacheError> {
        let mut report = GcReport::default();
        let mut entries = store.list().await?;
        entries.sort_by_key(|e| e.accessed);
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut removed_manifests = Vec::new();
        for e in &entries {
            let too_old = max_age.is_some_and(|m| e.accessed.elapsed().is_ok_and(|a| a > m));
            let too_big = max_size.is_some_and(|m| total > m);
            if !(too_old || too_big) {
                continue;
            }
            let recent = grace.is_some_and(|g| e.accessed.elapsed().is_ok_and(|a| a < g));
            let exempt = recent
                || self.limits.keep.contains(&e.digest)
                || sha256_hex(&e.digest).is_some_and(|h| self.is_pinned(h));
            if exempt {
                continue;
            }
            report.removed += 1;
            report.freed += e.size;
            total -= e.size;
            report.entries.push(e.clone());
            if !dry_run && let Some(hex) = sha256_hex(&e.digest) {
                store.remove(e.kind, hex).await?;
            }
            if e.kind == ContentKind::Manifest {
                removed_manifests.push(e.digest.clone());
            }
        }
        if let (Store::Object(o), false) = (store, removed_manifests.is_empty() || dry_run) {
            drop_bucket_tags_of(o, &removed_manifests).await;
        } else if !removed_manifests.is_empty() || max_age.is_some() {
            let tags = self.root.join("tags");
            let _ = blocking(&tags.clone(), move || {
                drop_tags_of(&tags, &removed_manifests, dry_run)
            })
            .await;
        }
        report.kept_bytes = total;
        if !dry_run && store.object().is_none() {
            // Concurrent commits may add to this meanwhile; the next one re-plans if so.
            self.total
                .store(total, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(report)
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
        if actual != e.digest {
            return Err(EntryProblem::Mismatch { actual });
        }
        if e.kind == ContentKind::Manifest {
            // The stored type must be what the (now verified) bytes say.
            let mut body = Vec::new();
            let mut again = self
                .store
                .open(e.kind, hex, 0)
                .await?
                .ok_or(EntryProblem::Missing)?;
            again
                .reader
                .read_to_end(&mut body)
                .await
                .map_err(EntryProblem::Read)?;
            let derived = manifest_media_type(&body);
            if let (Some(stored), Some(derived)) = (&stored.media_type, &derived)
                && stored != derived
            {
                return Err(EntryProblem::MediaType {
                    stored: stored.clone(),
                    derived: derived.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Removes the bucket's tag entries that are unreadable or point at `removed` manifests.
async fn drop_bucket_tags_of(o: &ObjectStoreBackend, removed: &[String]) {
    for name in o.list_meta(&["tags"]).await {
        let gone = o
            .get_meta(&["tags", &name])
            .await
            .and_then(|b| serde_json::from_slice::<TagEntry>(&b).ok())
            .is_none_or(|t| removed.contains(&t.digest));
        if gone {
            o.delete_meta(&["tags", &name]).await;
        }
    }
}

/// Removes tag entries (in the `tags` folder) that are unreadable or point at `removed` manifests.
fn drop_tags_of(tags: &Path, removed: &[String], dry_run: bool) {
    let Ok(rd) = std::fs::read_dir(tags) else {
        return;
    };
    for e in rd.flatten() {
        if is_atomic_temp(&e.file_name().to_string_lossy()) {
            continue;
        }
        let gone = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<TagEntry>(&b).ok())
            .is_none_or(|t| removed.contains(&t.digest));
        if gone && !dry_run {
            let _ = std::fs::remove_file(e.path());
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
    #[error("stored media type {stored} disagrees with the bytes ({derived})")]
    MediaType { stored: String, derived: String },
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
        // Not a manifest by any rule: the default type is stored.
        c.put_manifest(&hex, body).await.unwrap();
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
        assert_eq!(c.manifest(&hex).await.unwrap().1, OCI_MANIFEST);
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

    async fn put_blob(c: &Cache, body: &[u8]) -> String {
        let hex = format!("{:x}", Sha256::digest(body));
        let mut staged = c.store().stage(ContentKind::Blob, &hex).await.unwrap();
        staged.write(body).await.unwrap();
        c.commit(staged, None).await.unwrap();
        hex
    }

    /// Ages an entry's recorded use (the mtime the eviction order reads).
    fn age(c: &Cache, hex: &str, secs: u64) {
        let p = c
            .store()
            .local()
            .unwrap()
            .content_path(ContentKind::Blob, hex);
        let f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[tokio::test]
    async fn live_bound_evicts_lru_but_never_a_pinned_or_policy_kept_entry() {
        let d = tempfile::tempdir().unwrap();
        let keep_body = vec![3u8; 1000];
        let keep_digest = format!("sha256:{:x}", Sha256::digest(&keep_body));
        let limits = Limits {
            max_size: Some(2500),
            keep: [keep_digest.clone()].into(),
            ..Limits::default()
        };
        let c = Cache::open(d.path()).unwrap().with_limits(limits);
        let kept = put_blob(&c, &keep_body).await;
        age(&c, &kept, 400);
        let read = put_blob(&c, &[1u8; 1000]).await;
        age(&c, &read, 300);
        // An open reader on the second-oldest entry.
        let pin = c.pin(&read);
        let idle = put_blob(&c, &[2u8; 1000]).await;
        // 3000 > 2500, but every entry is kept, read or fresh: none goes.
        assert!(c.blob_len(&idle).await.is_some());
        age(&c, &idle, 200);
        // 4000 > 2500: the oldest entry that is neither kept nor pinned goes.
        let newest = put_blob(&c, &[4u8; 1000]).await;
        assert!(c.blob_len(&kept).await.is_some(), "policy pin kept");
        assert!(
            c.blob_len(&read).await.is_some(),
            "entry with a reader kept"
        );
        assert!(
            c.blob_len(&idle).await.is_none(),
            "least recently used unpinned entry evicted"
        );
        assert!(c.blob_len(&newest).await.is_some());
        // The reader leaves: the next commit may evict it.
        drop(pin);
        put_blob(&c, &[5u8; 1000]).await;
        assert!(c.blob_len(&read).await.is_none(), "evicted once unpinned");
        assert!(c.blob_len(&kept).await.is_some());
        let total: u64 = c.list().await.unwrap().iter().map(|e| e.size).sum();
        assert!(total <= 3000, "{total}");
    }

    #[test]
    fn media_types_come_from_the_bytes() {
        let t = |j: serde_json::Value| manifest_media_type(j.to_string().as_bytes());
        assert_eq!(
            t(serde_json::json!({"mediaType": "application/x.y", "schemaVersion": 2})).unwrap(),
            "application/x.y"
        );
        assert_eq!(
            t(serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.docker.container.image.v1+json"}})).unwrap(),
            DOCKER_MANIFEST_V2
        );
        assert_eq!(
            t(serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}})).unwrap(),
            OCI_MANIFEST
        );
        assert_eq!(
            t(serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": DOCKER_MANIFEST_V2}]})).unwrap(),
            DOCKER_MANIFEST_LIST
        );
        assert_eq!(
            t(serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST}]}))
                .unwrap(),
            OCI_INDEX
        );
        assert_eq!(
            t(serde_json::json!({"schemaVersion": 1, "signatures": []})).unwrap(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws"
        );
        assert_eq!(
            t(serde_json::json!({"schemaVersion": 1})).unwrap(),
            "application/vnd.docker.distribution.manifest.v1+json"
        );
        assert_eq!(t(serde_json::json!({"schemaVersion": 3})), None);
        assert_eq!(manifest_media_type(b"not json"), None);
    }

    #[tokio::test]
    async fn verify_flags_a_stored_type_that_disagrees_with_the_bytes() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let body = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}})
            .to_string();
        let hex = format!("{:x}", Sha256::digest(body.as_bytes()));
        c.put_manifest(&hex, body.as_bytes()).await.unwrap();
        let e = c.list().await.unwrap().remove(0);
        c.verify_entry(&e).await.unwrap();
        let tp = d
            .path()
            .join("manifests/sha256")
            .join(format!("{hex}.type"));
        std::fs::write(&tp, "text/plain").unwrap();
        // Served by what the bytes say, and verify calls the stored type bad.
        assert_eq!(c.manifest(&hex).await.unwrap().1, OCI_MANIFEST);
        let why = c.verify_entry(&e).await.unwrap_err();
        assert!(matches!(why, EntryProblem::MediaType { .. }), "{why}");
    }

    #[tokio::test]
    async fn existing_shared_folder_keeps_its_mode_created_ones_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        // Strays from a crash: a write_atomic temp file and an expired confirmation.
        std::fs::create_dir_all(shared.join("tags")).unwrap();
        std::fs::write(shared.join("tags/.x.json.tmp-1-2"), b"").unwrap();
        std::fs::create_dir_all(shared.join("confirmed")).unwrap();
        let old = shared.join("confirmed/old");
        std::fs::write(&old, b"").unwrap();
        std::fs::File::options()
            .append(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - DEFAULT_CONFIRM_TTL - Duration::from_secs(60))
            .unwrap();
        let c = Cache::open(&shared).unwrap().with_limits(Limits::default());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&shared), 0o1777, "an existing folder keeps its mode");
        for sub in [
            "blobs",
            "blobs/sha256",
            "manifests",
            "manifests/sha256",
            "tmp",
        ] {
            assert_eq!(mode(&shared.join(sub)), 0o700, "{sub}");
        }
        assert!(
            !shared.join("tags/.x.json.tmp-1-2").exists(),
            "stray temp file removed"
        );
        assert!(!old.exists(), "expired confirmation removed");
        let hex = put_blob(&c, b"blob").await;
        let body =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        let mhex = format!("{:x}", Sha256::digest(body));
        c.put_manifest(&mhex, body).await.unwrap();
        c.confirm("u", "r", "sha256:x", "anon").await;
        assert_eq!(
            mode(
                &c.store()
                    .local()
                    .unwrap()
                    .content_path(ContentKind::Blob, &hex)
            ),
            0o600
        );
        assert_eq!(
            mode(
                &c.store()
                    .local()
                    .unwrap()
                    .content_path(ContentKind::Manifest, &mhex)
            ),
            0o600
        );
    }

    #[tokio::test]
    async fn confirmations_expire_after_the_ttl() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits {
            confirm_ttl: Duration::from_secs(60),
            ..Limits::default()
        };
        let c = Cache::open(d.path()).unwrap().with_limits(limits);
        c.confirm("u", "r", "sha256:x", "anon").await;
        assert!(c.is_confirmed("u", "r", "sha256:x", "anon").await);
        assert!(!c.is_confirmed("u", "other", "sha256:x", "anon").await);
        let p = c.confirmed_path(&key_hash(&["u", "r", "sha256:x", "anon"]));
        std::fs::File::options()
            .append(true)
            .open(&p)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(61))
            .unwrap();
        assert!(
            !c.is_confirmed("u", "r", "sha256:x", "anon").await,
            "expired"
        );
        assert!(!p.exists(), "an expired confirmation is removed");
    }

    #[tokio::test]
    async fn low_disk_stops_caching_without_failing() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits {
            // More free space than any file system has: the guard always trips.
            min_free: u64::MAX,
            ..Limits::default()
        };
        let c = Cache::open(d.path()).unwrap().with_limits(limits);
        let body = b"verified but not kept";
        let hex = format!("{:x}", Sha256::digest(body));
        let mut staged = c.store().stage(ContentKind::Blob, &hex).await.unwrap();
        staged.write(body).await.unwrap();
        // A reader (the download's client) holds it: still readable, then gone.
        let reader = c.pin(&hex);
        assert!(!c.commit(staged, None).await.unwrap(), "not kept");
        assert_eq!(c.blob_len(&hex).await, Some(body.len() as u64));
        drop(reader);
        for _ in 0..100 {
            if c.blob_len(&hex).await.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(c.blob_len(&hex).await, None, "removed with its last reader");
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert!(free_space(d.path()).is_some_and(|f| f > 0));
    }
}
