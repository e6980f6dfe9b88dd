//! The object-store implementation of the storage seam: a bucket (S3 API; `memory://` for tests)
//! shared by a fleet of proxies, on the `object_store` crate — kept behind [`super::ContentStore`]
//! so the crate can be swapped.
//!
//! Keys under the configured prefix:
//! ```text
//! blobs/sha256/<hex>        verified blob bytes
//! manifests/sha256/<hex>    verified manifest bytes; the media type derived from them is the
//!                           object's Content-Type attribute
//! access/<kind>/<hex>       empty "touch" object: its last-modified is the entry's last use
//! tags/<sha256(key)>.json   tag entries, with their fetch time (the TTL is checked on read)
//! uploads/<hex>.<unique>    multipart uploads of large blobs before their conditional copy
//! lease/sweeper             the eviction lease (holder and expiry, JSON)
//! ```
//!
//! Why commit is a conditional create: staging is a local file (readers of a download in flight
//! follow it), and the upload starts only after the digest matched (the caller verifies, then
//! commits). Blobs up to [`MULTIPART_THRESHOLD`] and every manifest are one `PUT` with
//! `If-None-Match: *` ([`PutMode::Create`]); a 409/412 (`AlreadyExists`/`Precondition`) means
//! another member committed the same digest — the same bytes — and is
//! [`Committed::AlreadyPresent`]. `object_store` 0.14 has no conditional multipart complete, so
//! a larger blob is uploaded in parts to an `uploads/` key, then copied to its final key with
//! `copy_if_not_exists` (S3: the `multipart` mode — an `UploadPartCopy` whose
//! `CompleteMultipartUpload` carries `If-None-Match: *`; moto honours it), and the upload key is
//! deleted. Even where a store could only overwrite, every writer writes the same verified bytes.
//!
//! Why access is a separate touch object: S3 cannot change an object's last-modified without
//! rewriting it. A hit writes one empty object per digest at most once per `touch_every` per
//! process, so the LRU order costs one small `PUT` per entry per interval, not one per hit.
//!
//! Owns: the key layout, the S3 client's retry policy, the memory budget of uploads
//! ([`UPLOAD_MEMORY_MIB`]), the lease object, the store metrics calls.
//! Does not own: which entries to evict (`Cache::plan` in [`crate::proxy::cache`]).

use super::{
    Committed, ContentKind, Entry, FsStore, Staged, StoreError, StoreObserver, StoreReader, Stored,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Blobs larger than this are uploaded in parts (then copied conditionally).
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// How long a member's claim on uploading a large blob stands unless renewed: a member that died
/// mid-upload holds the others' commits of that blob back this long at most.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often the uploading member renews its claim (well inside [`CLAIM_TTL`]).
const CLAIM_RENEW: Duration = Duration::from_secs(15);
/// How long a member waits for another member's (renewed) upload before giving up its commit.
const CLAIM_WAIT_MAX: Duration = Duration::from_secs(30 * 60);
/// The part size of multipart uploads.
const PART_SIZE: usize = 8 << 20;

/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// MiB of memory all bucket uploads of a process may hold at once. Why a budget: a single `PUT`
/// holds its blob (up to [`MULTIPART_THRESHOLD`]) and a multipart upload its parts in flight, and
/// a cold image's layers commit at once — fifty of them would hold most of a gigabyte. A commit
/// waiting here delays nothing a client sees (the readers got the verified bytes before the
/// commit began); it only keeps the blob out of the bucket a little longer.
const UPLOAD_MEMORY_MIB: u32 = 96;

/// MiB an upload of `len` bytes holds: the whole body for one `PUT`, else the parts in flight, the
/// part being filled and the read buffer.
fn upload_mib(len: u64, multipart: bool) -> u32 {
    let bytes = if multipart {
        (PARTS_IN_FLIGHT + 1) * PART_SIZE + (1 << 20)
    } else {
        usize::try_from(len).unwrap_or(usize::MAX)
    };
    let mib = bytes.div_ceil(1 << 20).max(1);
    u32::try_from(mib)
        .unwrap_or(u32::MAX)
        .min(UPLOAD_MEMORY_MIB)
}

/// `s3://BUCKET[/PREFIX]` or `memory://[PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    pub scheme: String,
    pub bucket: String,
    pub prefix: String,
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<StoreUrl, StoreError> {
        // The URL is not echoed: a mistyped one may carry a secret (`s3://KEY:SECRET@…`).
        let bad = |why: &str| StoreError::Url {
            why: why.to_owned(),
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("expected s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = match scheme {
            "s3" => rest.split_once('/').unwrap_or((rest, "")),
            "memory" => ("", rest),
            _ => return Err(bad("only s3:// (and memory:// for tests) are supported")),
        };
        if scheme == "s3" && bucket.is_empty() {
            return Err(bad("no bucket name"));
        }
        let bucket_ok = bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !bucket_ok {
            return Err(bad(
                "a bucket name is letters, digits, '.', '-' and '_' (credentials come from the AWS environment, never the URL)",
            ));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        Key::parse(&prefix).map_err(|e| bad(&e.to_string()))?;
        Ok(StoreUrl {
            scheme: scheme.to_owned(),
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}/{}", self.scheme, self.bucket, self.prefix)
    }
}

/// The bucket behind the seam, with local staging (and optionally a local disk tier in front).
#[derive(Clone)]
pub struct ObjectStoreBackend {
    os: Arc<dyn ObjectStore>,
    url: StoreUrl,
    prefix: Key,
    /// Local root for staging (`tmp/`).
    staging: FsStore,
    /// The local disk tier: read first, filled on commit.
    local: Option<FsStore>,
    touched: Arc<Mutex<HashMap<String, Instant>>>,
    touch_every: Duration,
    /// Told about every request (the proxy's metrics).
    metrics: Arc<dyn StoreObserver>,
    /// MiB the uploads in flight may hold in memory ([`UPLOAD_MEMORY_MIB`]).
    upload_memory: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

/// The S3 client's retries: transient failures (5xx, timeouts, connection resets) are retried
/// with exponential backoff, so a flaky bucket slows a commit rather than losing it.
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(60),
    }
}

/// The lease's content.
#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    holder: String,
    /// Unix milliseconds.
    expires_ms: u64,
}

/// A claim held by `holder` until [`CLAIM_TTL`] from now.
fn claim_body(holder: &str) -> PutPayload {
    let body = serde_json::to_vec(&Lease {
        holder: holder.to_owned(),
        expires_ms: now_ms().saturating_add(CLAIM_TTL.as_millis() as u64),
    })
    .unwrap_or_default();
    PutPayload::from(body)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lossless_io(e: object_store::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// A `GET` body stream that is `Sync` (the readers of [`super::StoreReader`] are shared by
/// reference across awaits); only ever polled through `&mut`, so the lock never contends.
struct SyncStream(Mutex<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>>);

impl futures_util::Stream for SyncStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .poll_next_unpin(cx)
    }
}

impl ObjectStoreBackend {
    /// Connects to `url` (S3: the standard AWS environment — `AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// the credentials chain, `AWS_ALLOW_HTTP`). `root` holds staging; `local_tier` puts the
    /// folders of `root` in front of the bucket.
    pub fn connect(
        url: &StoreUrl,
        root: &std::path::Path,
        local_tier: bool,
        touch_every: Duration,
    ) -> Result<ObjectStoreBackend, StoreError> {
        let os: Arc<dyn ObjectStore> = match url.scheme.as_str() {
            "s3" => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&url.bucket)
                    .with_retry(retry_config());
                if std::env::var_os("AWS_COPY_IF_NOT_EXISTS").is_none() {
                    b = b.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
                }
                if std::env::var_os("AWS_CONDITIONAL_PUT").is_none() {
                    b = b.with_config(AmazonS3ConfigKey::ConditionalPut, "etag");
                }
                Arc::new(b.build().map_err(|e| StoreError::Object {
                    op: "configure",
                    key: url.to_string(),
                    source: e,
                })?)
            }
            _ => Arc::new(object_store::memory::InMemory::new()),
        };
        Ok(ObjectStoreBackend::with(
            os,
            url.clone(),
            root,
            local_tier,
            touch_every,
        ))
    }

    /// Wraps an existing object store (tests share one `InMemory` between members).
    pub fn with(
        os: Arc<dyn ObjectStore>,
        url: StoreUrl,
        root: &std::path::Path,
        local_tier: bool,
        touch_every: Duration,
    ) -> ObjectStoreBackend {
        let prefix = Key::parse(&url.prefix).unwrap_or_default();
        ObjectStoreBackend {
            os,
            url,
            prefix,
            staging: FsStore::new(root),
            local: local_tier.then(|| FsStore::new(root)),
            touched: Arc::default(),
            touch_every,
            metrics: Arc::new(super::NoObserver),
            upload_memory: Arc::new(tokio::sync::Semaphore::new(UPLOAD_MEMORY_MIB as usize)),
        }
    }

    pub fn set_metrics(&mut self, m: Arc<dyn StoreObserver>) {
        self.metrics = m;
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The local tier, if any.
    pub fn local(&self) -> Option<&FsStore> {
        self.local.as_ref()
    }

    /// The local root (staging, confirmations).
    pub fn staging(&self) -> &FsStore {
        &self.staging
    }

    fn key(&self, parts: &[&str]) -> Key {
        let mut k = self.prefix.clone();
        for p in parts {
            k = k.join(*p);
        }
        k
    }

    fn content_key(&self, kind: ContentKind, hex: &str) -> Key {
        self.key(&[kind.path_segment(), "sha256", hex])
    }

    fn access_key(&self, kind: ContentKind, hex: &str) -> Key {
        self.key(&["access", kind.path_segment(), hex])
    }

    fn err(&self, op: &'static str, key: &Key) -> impl FnOnce(object_store::Error) -> StoreError {
        let key = format!("{}/{key}", self.url.bucket);
        move |source| StoreError::Object { op, key, source }
    }

    /// Times and counts one store request.
    async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let start = Instant::now();
        let r = f.await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(object_store::Error::NotFound { .. }) => "not_found",
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => "conflict",
            Err(_) => "error",
        };
        self.metrics.request(op, outcome, start.elapsed());
        r
    }

    pub async fn stage(&self, kind: ContentKind, hex: &str) -> Result<Staged, StoreError> {
        super::ContentStore::stage(&self.staging, kind, hex).await
    }

    pub async fn commit(
        &self,
        staged: Staged,
        media_type: Option<&str>,
    ) -> Result<Committed, StoreError> {
        let r = self
            .upload(staged.kind, &staged.hex, &staged.path, media_type)
            .await;
        match (&r, &self.local) {
            // Then the local tier (a rename of the same staging file).
            (Ok(_), Some(local)) => {
                let _ = super::ContentStore::commit(local, staged, media_type).await?;
            }
            // Readers of the download hold the file open; unlinking keeps their bytes.
            _ => {
                let _ = tokio::fs::remove_file(&staged.path).await;
            }
        }
        r
    }

    async fn upload(
        &self,
        kind: ContentKind,
        hex: &str,
        path: &std::path::Path,
        media_type: Option<&str>,
    ) -> Result<Committed, StoreError> {
        let key = self.content_key(kind, hex);
        let len = tokio::fs::metadata(path)
            .await
            .map_err(super::io(path))?
            .len();
        let mut attributes = Attributes::new();
        if let Some(t) = media_type {
            attributes.insert(Attribute::ContentType, AttributeValue::from(t.to_owned()));
        }
        let r = if len <= MULTIPART_THRESHOLD || kind == ContentKind::Manifest {
            let _memory = self.memory(len, false).await;
            let body = tokio::fs::read(path).await.map_err(super::io(path))?;
            let opts = PutOptions {
                mode: PutMode::Create,
                attributes,
                ..PutOptions::default()
            };
            let put = self.os.put_opts(&key, PutPayload::from(body), opts);
            self.call("put", put).await.map(|_| ())
        } else {
            return self.commit_large(hex, &key, path).await;
        };
        match r {
            Ok(()) => Ok(Committed::Stored),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(Committed::AlreadyPresent),
            Err(e) => Err(self.err("commit", &key)(e)),
        }
    }

    /// Waits for the memory an upload holds (see [`UPLOAD_MEMORY_MIB`]); `None` only if the
    /// budget were closed, which it never is (then the upload goes ahead unbudgeted).
    async fn memory(&self, len: u64, multipart: bool) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.upload_memory
            .acquire_many(upload_mib(len, multipart))
            .await
            .ok()
    }

    /// A large blob: one member uploads it — the one whose conditional create of
    /// `uploads/<hex>.claim` wins (a `PUT` with `If-None-Match: *`, atomic even where a
    /// conditional multipart complete is not: moto's isn't under concurrency) — and the others
    /// wait for its object rather than upload the same gigabytes again. The holder renews its
    /// claim every [`CLAIM_RENEW`] while it uploads; a claim past its expiry (not renewed for
    /// [`CLAIM_TTL`]: its member died) is removed and the race run again.
    async fn commit_large(
        &self,
        hex: &str,
        key: &Key,
        path: &std::path::Path,
    ) -> Result<Committed, StoreError> {
        let claim = self.key(&["uploads", &format!("{hex}.claim")]);
        let deadline = Instant::now() + CLAIM_WAIT_MAX;
        loop {
            match self.call("head", self.os.head(key)).await {
                Ok(_) => return Ok(Committed::AlreadyPresent),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("head", key)(e)),
            }
            let holder = super::unique_suffix();
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            let put = self.os.put_opts(&claim, claim_body(&holder), opts);
            match self.call("put", put).await {
                Ok(_) => {
                    // Renewed while the upload runs, so a short TTL suffices for a dead holder.
                    let upload = async {
                        let _memory = self.memory(0, true).await;
                        self.upload_large(hex, key, path).await
                    };
                    tokio::pin!(upload);
                    let r = loop {
                        tokio::select! {
                            r = &mut upload => break r,
                            () = tokio::time::sleep(CLAIM_RENEW) => {
                                let renew = self.os.put(&claim, claim_body(&holder));
                                let _ = self.call("put", renew).await;
                            }
                        }
                    };
                    let _ = self.call("delete", self.os.delete(&claim)).await;
                    return match r {
                        Ok(()) => Ok(Committed::Stored),
                        Err(
                            object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. },
                        ) => Ok(Committed::AlreadyPresent),
                        Err(e) => Err(self.err("commit", key)(e)),
                    };
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Err(e) => return Err(self.err("commit", &claim)(e)),
            }
            if self.wait_for_claim(key, &claim, deadline).await? {
                return Ok(Committed::AlreadyPresent);
            }
        }
    }

    /// Another member is uploading: waits for its object (`true`) or for its claim to go
    /// (`false`: released without the object, or expired and removed — race again).
    async fn wait_for_claim(
        &self,
        key: &Key,
        claim: &Key,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let mut wait = Duration::from_millis(100);
        loop {
            if Instant::now() > deadline {
                return Err(self.err("commit", key)(object_store::Error::Generic {
                    store: "claim",
                    source: "another member's upload did not finish".into(),
                }));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
            if self.call("head", self.os.head(key)).await.is_ok() {
                return Ok(true);
            }
            let Some(b) = self.get_meta_key(claim).await else {
                return Ok(false);
            };
            let expired =
                serde_json::from_slice::<Lease>(&b).map_or(true, |l| l.expires_ms < now_ms());
            if expired {
                let _ = self.call("delete", self.os.delete(claim)).await;
                return Ok(false);
            }
        }
    }

    async fn get_meta_key(&self, key: &Key) -> Option<Bytes> {
        let got = self.call("get", self.os.get(key)).await.ok()?;
        self.call("get_body", got.bytes()).await.ok()
    }

    /// Multipart to `uploads/`, then a conditional copy to `key`.
    async fn upload_large(
        &self,
        hex: &str,
        key: &Key,
        path: &std::path::Path,
    ) -> object_store::Result<()> {
        use tokio::io::AsyncReadExt;
        let tmp = self.key(&["uploads", &format!("{hex}.{}", super::unique_suffix())]);
        let upload = self
            .call("multipart_start", self.os.put_multipart(&tmp))
            .await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut f =
            tokio::fs::File::open(path)
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                })?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(object_store::Error::Generic {
                        store: "local",
                        source: Box::new(e),
                    });
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = w.abort().await;
                return Err(e);
            }
            w.write(&buf[..n]);
        }
        self.call("multipart_complete", w.finish()).await?;
        let copied = self
            .call("copy_if_not_exists", self.os.copy_if_not_exists(&tmp, key))
            .await;
        let _ = self.call("delete", self.os.delete(&tmp)).await;
        copied
    }

    pub async fn open(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> Result<Option<Stored<StoreReader>>, StoreError> {
        if let Some(local) = &self.local
            && let Some(s) = super::ContentStore::open(local, kind, hex, offset).await?
        {
            return Ok(Some(Stored {
                len: s.len,
                media_type: s.media_type,
                reader: Box::new(s.reader),
            }));
        }
        self.open_bucket(kind, hex, offset).await
    }

    /// [`ObjectStoreBackend::open`] without the local tier: a streamed (ranged) `GET`.
    pub async fn open_bucket(
        &self,
        kind: ContentKind,
        hex: &str,
        offset: u64,
    ) -> Result<Option<Stored<StoreReader>>, StoreError> {
        let key = self.content_key(kind, hex);
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let got = match self.call("get", self.os.get_opts(&key, opts)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("get", &key)(e)),
        };
        let len = got.meta.size;
        let media_type = got
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref().to_owned());
        // Streamed: the body is never held whole in memory.
        let stream = got.into_stream().map_err(lossless_io);
        let reader = tokio_util::io::StreamReader::new(SyncStream(Mutex::new(stream.boxed())));
        Ok(Some(Stored {
            len,
            media_type,
            reader: Box::new(reader),
        }))
    }

    pub async fn len(&self, kind: ContentKind, hex: &str) -> Result<Option<u64>, StoreError> {
        if let Some(local) = &self.local
            && let Some(n) = super::ContentStore::len(local, kind, hex).await?
        {
            return Ok(Some(n));
        }
        let key = self.content_key(kind, hex);
        match self.call("head", self.os.head(&key)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("head", &key)(e)),
        }
    }

    /// At most one touch object write per entry per `touch_every` (per process).
    pub async fn touch(&self, kind: ContentKind, hex: &str) {
        if let Some(local) = &self.local {
            super::ContentStore::touch(local, kind, hex).await;
        }
        let id = format!("{}/{hex}", kind.as_str());
        {
            let mut m = self
                .touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let fresh = m.get(&id).is_some_and(|t| t.elapsed() < self.touch_every);
            if fresh {
                return;
            }
            m.insert(id, Instant::now());
        }
        // In the background: a hit does not wait for its access record.
        let (me, key) = (self.clone(), self.access_key(kind, hex));
        tokio::spawn(async move {
            let _ = me
                .call("put", me.os.put(&key, PutPayload::from_static(b"")))
                .await;
        });
    }

    pub async fn remove(&self, kind: ContentKind, hex: &str) -> Result<bool, StoreError> {
        if let Some(local) = &self.local {
            super::ContentStore::remove(local, kind, hex).await?;
        }
        let key = self.content_key(kind, hex);
        let existed = match self.call("head", self.os.head(&key)).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(self.err("head", &key)(e)),
        };
        let del = self.call("delete", self.os.delete(&key)).await;
        match del {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err("delete", &key)(e)),
        }
        let _ = self
            .call("delete", self.os.delete(&self.access_key(kind, hex)))
            .await;
        Ok(existed)
    }

    /// Objects under `parts` (key → (size, last modified)), by the last path segment.
    async fn list_under(
        &self,
        parts: &[&str],
    ) -> Result<Vec<(String, u64, SystemTime)>, StoreError> {
        let prefix = self.key(parts);
        let start = Instant::now();
        let listed: object_store::Result<Vec<_>> = self.os.list(Some(&prefix)).try_collect().await;
        let outcome = if listed.is_ok() { "ok" } else { "error" };
        self.metrics.request("list", outcome, start.elapsed());
        let listed = listed.map_err(self.err("list", &prefix))?;
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_owned();
                Some((name, m.size, SystemTime::from(m.last_modified)))
            })
            .collect())
    }

    /// Every committed entry; its access time is the later of its own last-modified and its
    /// touch object's.
    pub async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for kind in [ContentKind::Blob, ContentKind::Manifest] {
            let touched: HashMap<String, SystemTime> = self
                .list_under(&["access", kind.path_segment()])
                .await?
                .into_iter()
                .map(|(n, _, t)| (n, t))
                .collect();
            for (name, size, modified) in self.list_under(&[kind.path_segment(), "sha256"]).await? {
                let is_hex = name.len() == 64
                    && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !is_hex {
                    continue;
                }
                let accessed = touched.get(&name).map_or(modified, |t| (*t).max(modified));
                out.push(Entry {
                    kind,
                    digest: format!("sha256:{name}"),
                    size,
                    accessed,
                });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Local staging older than `age`, and abandoned `uploads/` objects.
    pub async fn sweep_staging(&self, age: Duration, dry_run: bool) -> Result<u64, StoreError> {
        let mut n = super::ContentStore::sweep_staging(&self.staging, age, dry_run).await?;
        for (name, _, modified) in self.list_under(&["uploads"]).await? {
            if modified.elapsed().is_ok_and(|a| a > age) {
                n += 1;
                if !dry_run {
                    let key = self.key(&["uploads", &name]);
                    let _ = self.call("delete", self.os.delete(&key)).await;
                }
            }
        }
        Ok(n)
    }

    /// A small metadata object (tag entries); `None` if absent or unreadable.
    pub async fn get_meta(&self, parts: &[&str]) -> Option<Bytes> {
        self.get_meta_key(&self.key(parts)).await
    }

    pub async fn put_meta(&self, parts: &[&str], body: Vec<u8>) -> Result<(), StoreError> {
        let key = self.key(parts);
        self.call("put", self.os.put(&key, PutPayload::from(body)))
            .await
            .map(|_| ())
            .map_err(self.err("put", &key))
    }

    pub async fn delete_meta(&self, parts: &[&str]) {
        let key = self.key(parts);
        let _ = self.call("delete", self.os.delete(&key)).await;
    }

    /// Names of the metadata objects under `parts` (none if the listing fails: logged).
    pub async fn list_meta(&self, parts: &[&str]) -> Vec<String> {
        match self.list_under(parts).await {
            Ok(l) => l.into_iter().map(|(n, _, _)| n).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing the bucket failed");
                Vec::new()
            }
        }
    }

    /// Takes or renews the sweeper lease for `ttl`: created if absent ([`PutMode::Create`]),
    /// taken over when expired or renewed when ours ([`PutMode::Update`] on the etag read), so two
    /// members racing for it cannot both win. `true`: `holder` is the sweeper until `ttl` passes.
    pub async fn take_lease(&self, holder: &str, ttl: Duration) -> bool {
        let key = self.key(&["lease", "sweeper"]);
        let body = serde_json::to_vec(&Lease {
            holder: holder.to_owned(),
            expires_ms: now_ms().saturating_add(ttl.as_millis() as u64),
        })
        .unwrap_or_default();
        let mode = match self.call("get", self.os.get(&key)).await {
            Err(object_store::Error::NotFound { .. }) => PutMode::Create,
            Err(_) => return false,
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let Ok(bytes) = self.call("get_body", got.bytes()).await else {
                    return false;
                };
                let current: Option<Lease> = serde_json::from_slice(&bytes).ok();
                let ours_or_expired =
                    current.is_none_or(|l| l.holder == holder || l.expires_ms < now_ms());
                if !ours_or_expired {
                    return false;
                }
                PutMode::Update(version)
            }
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.call("put", self.os.put_opts(&key, PutPayload::from(body), opts))
            .await
            .is_ok()
    }

    /// The current lease holder (for tests and `cache ls`).
    pub async fn lease_holder(&self) -> Option<String> {
        let bytes = self.get_meta(&["lease", "sweeper"]).await?;
        serde_json::from_slice::<Lease>(&bytes)
            .ok()
            .map(|l| l.holder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;

    fn member(os: &Arc<dyn ObjectStore>, dir: &std::path::Path) -> ObjectStoreBackend {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let url = StoreUrl::parse("memory://fleet").unwrap();
        ObjectStoreBackend::with(os.clone(), url, dir, false, Duration::from_secs(60))
    }

    #[test]
    fn urls() {
        let u = StoreUrl::parse("s3://bucket/a/b/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("bucket", "a/b"));
        assert_eq!(StoreUrl::parse("s3://bucket").unwrap().prefix, "");
        assert!(StoreUrl::parse("s3:///x").is_err());
        assert!(StoreUrl::parse("ftp://x/y").is_err());
        assert!(StoreUrl::parse("bucket/x").is_err());
        let e = StoreUrl::parse("s3://AKIA:s3cret@bucket/x").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[tokio::test]
    async fn concurrent_commits_one_winner_and_ranged_reads() {
        let os: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let d = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let hex = format!("{:x}", Sha256::digest(&body));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let m = member(&os, &d.path().join(i.to_string()));
            let (body, hex) = (body.clone(), hex.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = m.stage(ContentKind::Blob, &hex).await.unwrap();
                s.write(&body).await.unwrap();
                m.commit(s, None).await.unwrap()
            }));
        }
        let mut stored = 0;
        for t in tasks {
            stored += usize::from(t.await.unwrap() == Committed::Stored);
        }
        assert_eq!(stored, 1, "one writer stores, the rest find it present");
        let m = member(&os, &d.path().join("r"));
        let mut s = m
            .open(ContentKind::Blob, &hex, 99_990)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.len, 100_000);
        let mut tail = Vec::new();
        s.reader.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, body[99_990..]);
        let l = m.list().await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].size, 100_000);
        assert!(m.remove(ContentKind::Blob, &hex).await.unwrap());
        assert!(!m.remove(ContentKind::Blob, &hex).await.unwrap());
        assert_eq!(m.len(ContentKind::Blob, &hex).await.unwrap(), None);
    }

    #[test]
    fn an_upload_holds_its_body_or_its_parts_in_flight_within_the_budget() {
        assert_eq!(upload_mib(0, false), 1);
        assert_eq!(upload_mib(3 << 20, false), 3);
        assert_eq!(upload_mib((3 << 20) + 1, false), 4);
        assert_eq!(upload_mib(MULTIPART_THRESHOLD, false), 16);
        assert_eq!(upload_mib(1 << 40, true), 41);
        assert_eq!(upload_mib(u64::MAX, false), UPLOAD_MEMORY_MIB);
    }

    #[tokio::test]
    async fn commits_beyond_the_upload_budget_wait_and_all_complete() {
        let os: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let d = tempfile::tempdir().unwrap();
        let mut m = member(&os, d.path());
        m.upload_memory = Arc::new(tokio::sync::Semaphore::new(8));
        let m = Arc::new(m);
        let mut tasks = Vec::new();
        for i in 0..10u8 {
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                let body = vec![i; 3 << 20];
                let hex = format!("{:x}", Sha256::digest(&body));
                let mut s = m.stage(ContentKind::Blob, &hex).await.unwrap();
                s.write(&body).await.unwrap();
                m.commit(s, None).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Committed::Stored);
        }
        assert_eq!(m.list().await.unwrap().len(), 10);
        assert_eq!(
            m.upload_memory.available_permits(),
            8,
            "every permit returned"
        );
    }

    #[tokio::test]
    async fn one_sweeper_holds_the_lease_until_it_expires() {
        let os: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let d = tempfile::tempdir().unwrap();
        let a = member(&os, &d.path().join("a"));
        let b = member(&os, &d.path().join("b"));
        let ttl = Duration::from_millis(300);
        assert!(a.take_lease("a", ttl).await);
        assert!(!b.take_lease("b", ttl).await, "held by a");
        assert!(a.take_lease("a", ttl).await, "a renews");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(b.take_lease("b", ttl).await, "expired: b takes over");
        assert!(!a.take_lease("a", ttl).await);
        assert_eq!(b.lease_holder().await.as_deref(), Some("b"));
    }
}
