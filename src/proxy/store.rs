//! The storage seam: where verified content (blobs and manifests) lives.
//!
//! Owns: the [`ContentStore`] trait — stage, commit after verification, open for reading with
//! length, stat, touch, remove, list with sizes and access times, sweep abandoned staging — its
//! vocabulary ([`ContentKind`], [`Staged`], [`Committed`], [`Stored`], [`Entry`], [`StoreError`]),
//! and [`FsStore`], today's one implementation (the `blobs/` and `manifests/` folders of the cache
//! directory, staging in `tmp/`).
//!
//! Why the commit is its own step, and why "already there" is success: content is addressed by
//! its digest, so a store never holds anything under a name the bytes did not hash to. Bytes are
//! written to a local staging file ([`Staged`], which readers of a download in flight follow as it
//! grows) and become visible only through [`ContentStore::commit`], called after the digest
//! matched. For the filesystem, commit is fsync + `rename`; for an object store it is a
//! conditional `PUT` (`If-None-Match: *`) of the staged file — a `412` there means another writer
//! committed the same digest first, i.e. the same bytes, and is reported as
//! [`Committed::AlreadyPresent`], not as an error.
//!
//! Staging is always a local file, whatever the store: readers of a download in flight follow it
//! as it grows, and an object store uploads it at commit.
//!
//! [`Store`] is the one seam the cache holds: the filesystem ([`FsStore`]) or a bucket
//! ([`object::ObjectStoreBackend`], `--store s3://…`), chosen at start.
//!
//! Does not own: tag entries and repository confirmations (small metadata the [`super::cache`]
//! keeps beside the store), verifying digests ([`super::verify`], the handlers), or eviction policy
//! (`Cache::gc` in [`super::cache`], which goes through this seam).

pub mod object;

use crate::fsutil::write_atomic;
use bytes::Bytes;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncSeekExt};

/// Which kind of content an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentKind {
    Manifest,
    Blob,
}

impl ContentKind {
    /// `manifest` / `blob` (for listings and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Manifest => "manifest",
            ContentKind::Blob => "blob",
        }
    }

    /// The distribution API path segment: `manifests` / `blobs`.
    pub fn path_segment(self) -> &'static str {
        match self {
            ContentKind::Manifest => "manifests",
            ContentKind::Blob => "blobs",
        }
    }
}

/// Storage failures name the path or object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--store: {why}")]
    Url { why: String },
    #[error("object store {op} {key}: {source}")]
    Object {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
}

/// Told about each request a remote store makes (the proxy's metrics implement it; the store
/// does not depend on the metrics module).
pub trait StoreObserver: Send + Sync {
    /// `op`, `outcome`: fixed words chosen by the store code.
    fn request(&self, op: &'static str, outcome: &'static str, took: Duration);
}

/// Observes nothing (a store outside the proxy: `regauth cache`, tests).
pub struct NoObserver;

impl StoreObserver for NoObserver {
    fn request(&self, _: &'static str, _: &'static str, _: Duration) {}
}

/// What [`Store::open`] reads from: a local file or a streamed ranged `GET`.
pub type StoreReader = Box<dyn AsyncRead + Unpin + Send + Sync>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Bytes being written, not yet content. Readers of a download in flight open [`Staged::path`]
/// and follow it as it grows; nothing else ever reads it.
#[derive(Debug)]
pub struct Staged {
    kind: ContentKind,
    hex: String,
    path: PathBuf,
    file: Arc<std::fs::File>,
}

impl Staged {
    /// Appends (followers see the bytes once it returns).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.write_chunks(vec![Bytes::copy_from_slice(data)]).await
    }

    /// Appends `chunks`, in order, in one blocking-pool task. Why not `tokio::fs`: it copies
    /// every byte into a buffer of its own first and makes a pool hop per write; a download
    /// stages each batch of received frames with one hop and no copy.
    pub async fn write_chunks(&mut self, chunks: Vec<Bytes>) -> Result<(), StoreError> {
        let file = self.file.clone();
        let done = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            chunks.iter().try_for_each(|c| (&*file).write_all(c))
        })
        .await;
        done.map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(io(&self.path))
    }

    /// What is being staged.
    pub fn kind(&self) -> ContentKind {
        self.kind
    }

    /// The sha256 hex the bytes are expected to hash to.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The local staging file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops unverified bytes.
    pub async fn discard(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

/// What a commit found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    Stored,
    /// Another writer committed the same digest first (same bytes): success.
    AlreadyPresent,
}

/// Stored content opened for reading.
pub struct Stored<R> {
    /// Length of the whole content (not of what is left after an offset).
    pub len: u64,
    /// The media type given at commit (manifests).
    pub media_type: Option<String>,
    /// Positioned at the requested offset.
    pub reader: R,
}

/// One stored content entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: ContentKind,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// Last use (eviction removes the least recently used first).
    pub accessed: SystemTime,
}

/// Content-addressed storage for verified blobs and manifests, keyed by sha256 hex.
///
/// Implementations must never expose bytes under a name before [`ContentStore::commit`].
pub trait ContentStore: Send + Sync + std::fmt::Debug {
    type Reader: AsyncRead + Unpin + Send + 'static;

    /// Starts writing content expected to hash to `hex`.
    fn stage(
        &self,
        kind: ContentKind,
        hex: &str,
    ) -> impl Future<Output = Result<Staged, StoreError>> + Send;

    /// Makes verified, staged bytes the content for their digest (durably).
    fn commit(
        &self,
        staged: Staged,
        media_type: Option<&str>,
    ) -> impl Future<Output = Result<Committed, StoreError>> + Send;

    /// Opens content at byte `offset`; `None` if absent.
    fn open(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> impl Future<Output = Result<Option<Stored<Self::Reader>>, StoreError>> + Send;

    /// Content as a local file positioned at `offset`, when the store keeps it in one; `None`
    /// when absent or not a local file (then [`ContentStore::open`] reads it). Why a second way
    /// to open: a cached blob is then served by one blocking task with large reads straight into
    /// the body's chunks ([`super::response::stream_file`]) instead of `tokio::fs`, which hops to
    /// the blocking pool for every read and copies each chunk once more out of its own buffer.
    fn open_file(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> impl Future<Output = Result<Option<Stored<std::fs::File>>, StoreError>> + Send {
        let _ = (kind, hex, offset);
        async { Ok(None) }
    }

    /// The length of content, if present.
    fn len(
        &self,
        kind: ContentKind,
        hex: &str,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Records a use (best effort).
    fn touch(&self, kind: ContentKind, hex: &str) -> impl Future<Output = ()> + Send;

    /// Removes content; `false` if it was not there.
    fn remove(
        &self,
        kind: ContentKind,
        hex: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every entry, sorted by digest.
    fn list(&self) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// Removes staging older than `age` (abandoned by a process that died); returns how many.
    fn sweep_staging(
        &self,
        age: Duration,
        dry_run: bool,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The filesystem store: `blobs/sha256/<hex>`, `manifests/sha256/<hex>` (+ `<hex>.type`), staging
/// in `tmp/`.
#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// The folders are created by the caller ([`super::cache::Cache::open`]).
    pub fn new(root: &Path) -> FsStore {
        FsStore {
            root: root.to_owned(),
        }
    }

    fn dir(&self, kind: ContentKind) -> PathBuf {
        self.root.join(kind.path_segment()).join("sha256")
    }

    fn path(&self, kind: ContentKind, hex: &str) -> PathBuf {
        self.dir(kind).join(hex)
    }

    /// Where committed content lives (for `cache verify`).
    pub fn content_path(&self, kind: ContentKind, hex: &str) -> PathBuf {
        self.path(kind, hex)
    }

    fn type_path(&self, hex: &str) -> PathBuf {
        self.path(ContentKind::Manifest, hex).with_extension("type")
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Empties staging (at start, when no other process can be writing).
    pub fn clear_staging(&self) {
        if let Ok(rd) = std::fs::read_dir(self.staging_dir()) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn list_kind(&self, kind: ContentKind, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        let d = self.dir(kind);
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
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
                accessed: m.modified().unwrap_or(UNIX_EPOCH),
            });
        }
        Ok(())
    }
}

pub(crate) fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}.{nanos}", std::process::id())
}

fn sync_dir(d: Option<&Path>) {
    if let Some(d) = d
        && let Ok(f) = std::fs::File::open(d)
    {
        let _ = f.sync_all();
    }
}

impl ContentStore for FsStore {
    type Reader = tokio::fs::File;

    async fn stage(&self, kind: ContentKind, hex: &str) -> Result<Staged, StoreError> {
        let path = self
            .staging_dir()
            .join(format!("{hex}.{}", unique_suffix()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(io(&path))?;
        Ok(Staged {
            kind,
            hex: hex.to_owned(),
            path,
            file: Arc::new(file.into_std().await),
        })
    }

    async fn commit(
        &self,
        staged: Staged,
        media_type: Option<&str>,
    ) -> Result<Committed, StoreError> {
        let Staged {
            kind,
            hex,
            path,
            file,
        } = staged;
        let dst = self.path(kind, &hex);
        let tp = self.type_path(&hex);
        let media_type = media_type.map(str::to_owned);
        // fsync + rename + folder fsync (+ the type file) block: off the async workers.
        let dst2 = dst.clone();
        let done = tokio::task::spawn_blocking(move || {
            file.sync_all().map_err(io(&path))?;
            drop(file);
            let existed = dst2.exists();
            if let Some(t) = media_type {
                write_atomic(&tp, t.as_bytes(), 0o600).map_err(io(&tp))?;
            }
            if let Err(e) = std::fs::rename(&path, &dst2) {
                let _ = std::fs::remove_file(&path);
                return Err(io(&dst2)(e));
            }
            sync_dir(dst2.parent());
            Ok(existed)
        })
        .await;
        let existed = match done {
            Ok(r) => r?,
            Err(e) => return Err(io(&dst)(std::io::Error::other(e))),
        };
        Ok(if existed {
            Committed::AlreadyPresent
        } else {
            Committed::Stored
        })
    }

    async fn open(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> Result<Option<Stored<tokio::fs::File>>, StoreError> {
        let p = self.path(kind, hex);
        let mut f = match tokio::fs::File::open(&p).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&p)(e)),
        };
        let len = f.metadata().await.map_err(io(&p))?.len();
        let media_type = match kind {
            ContentKind::Manifest => match tokio::fs::read_to_string(self.type_path(hex)).await {
                Ok(t) => Some(t),
                Err(_) => return Ok(None),
            },
            ContentKind::Blob => None,
        };
        if offset > 0 {
            f.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io(&p))?;
        }
        Ok(Some(Stored {
            len,
            media_type,
            reader: f,
        }))
    }

    async fn open_file(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> Result<Option<Stored<std::fs::File>>, StoreError> {
        let Some(s) = self.open(kind, hex, offset).await? else {
            return Ok(None);
        };
        Ok(Some(Stored {
            len: s.len,
            media_type: s.media_type,
            reader: s.reader.into_std().await,
        }))
    }

    async fn len(&self, kind: ContentKind, hex: &str) -> Result<Option<u64>, StoreError> {
        let p = self.path(kind, hex);
        match tokio::fs::metadata(&p).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// The mtime is the access time the eviction order uses (atime is unreliable under
    /// `noatime`/`relatime`), so the order survives a restart.
    async fn touch(&self, kind: ContentKind, hex: &str) {
        let p = self.path(kind, hex);
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(f) = std::fs::OpenOptions::new().append(true).open(p) {
                let _ = f.set_modified(SystemTime::now());
            }
        })
        .await;
    }

    async fn remove(&self, kind: ContentKind, hex: &str) -> Result<bool, StoreError> {
        let p = self.path(kind, hex);
        if kind == ContentKind::Manifest {
            let _ = tokio::fs::remove_file(self.type_path(hex)).await;
        }
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&p)(e)),
        }
    }

    async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let me = self.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            me.list_kind(ContentKind::Blob, &mut out)?;
            me.list_kind(ContentKind::Manifest, &mut out)?;
            Ok(out)
        })
        .await;
        let mut out = match listed {
            Ok(r) => r?,
            Err(e) => return Err(io(&self.root)(std::io::Error::other(e))),
        };
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn sweep_staging(&self, age: Duration, dry_run: bool) -> Result<u64, StoreError> {
        let mut removed = 0;
        if let Ok(rd) = std::fs::read_dir(self.staging_dir()) {
            for e in rd.flatten() {
                // Only stale partials: a live proxy may be writing fresh ones.
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a > age);
                if old {
                    removed += 1;
                    if !dry_run {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// The content store the cache uses: one seam, two backends.
#[derive(Clone, Debug)]
pub enum Store {
    Fs(FsStore),
    Object(object::ObjectStoreBackend),
}

impl Store {
    /// The local filesystem store content lives in (the only one, or the local tier).
    pub fn local(&self) -> Option<&FsStore> {
        match self {
            Store::Fs(f) => Some(f),
            Store::Object(o) => o.local(),
        }
    }

    /// The bucket, when there is one.
    pub fn object(&self) -> Option<&object::ObjectStoreBackend> {
        match self {
            Store::Fs(_) => None,
            Store::Object(o) => Some(o),
        }
    }
}

impl ContentStore for Store {
    type Reader = StoreReader;

    async fn stage(&self, kind: ContentKind, hex: &str) -> Result<Staged, StoreError> {
        match self {
            Store::Fs(f) => f.stage(kind, hex).await,
            Store::Object(o) => o.stage(kind, hex).await,
        }
    }

    async fn commit(
        &self,
        staged: Staged,
        media_type: Option<&str>,
    ) -> Result<Committed, StoreError> {
        match self {
            Store::Fs(f) => f.commit(staged, media_type).await,
            Store::Object(o) => o.commit(staged, media_type).await,
        }
    }

    async fn open(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> Result<Option<Stored<StoreReader>>, StoreError> {
        match self {
            Store::Fs(f) => Ok(f.open(kind, hex, offset).await?.map(|s| Stored {
                len: s.len,
                media_type: s.media_type,
                reader: Box::new(s.reader) as StoreReader,
            })),
            Store::Object(o) => o.open(kind, hex, offset).await,
        }
    }

    /// The filesystem, or the bucket's local tier (the bucket itself has no local file).
    async fn open_file(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> Result<Option<Stored<std::fs::File>>, StoreError> {
        match self.local() {
            Some(f) => f.open_file(kind, hex, offset).await,
            None => Ok(None),
        }
    }

    async fn len(&self, kind: ContentKind, hex: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Fs(f) => f.len(kind, hex).await,
            Store::Object(o) => o.len(kind, hex).await,
        }
    }

    async fn touch(&self, kind: ContentKind, hex: &str) {
        match self {
            Store::Fs(f) => f.touch(kind, hex).await,
            Store::Object(o) => o.touch(kind, hex).await,
        }
    }

    async fn remove(&self, kind: ContentKind, hex: &str) -> Result<bool, StoreError> {
        match self {
            Store::Fs(f) => f.remove(kind, hex).await,
            Store::Object(o) => o.remove(kind, hex).await,
        }
    }

    async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::Fs(f) => f.list().await,
            Store::Object(o) => o.list().await,
        }
    }

    async fn sweep_staging(&self, age: Duration, dry_run: bool) -> Result<u64, StoreError> {
        match self {
            Store::Fs(f) => f.sweep_staging(age, dry_run).await,
            Store::Object(o) => o.sweep_staging(age, dry_run).await,
        }
    }
}
