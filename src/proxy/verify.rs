//! Step 5b: verified, coalesced blob downloads.
//!
//! Owns: [`Flights`] — single-flight per (upstream, digest). The first request for a cold blob
//! starts one detached download task (it keeps going if that client disconnects, so the cache
//! still fills); every request for the same blob, first included, streams from the growing temp
//! file. The task hashes with SHA-256 as bytes arrive, checks the length against
//! `Content-Length` and the digest against the one requested, and only then fsyncs and renames the
//! file into the cache.
//!
//! Why the final chunk is held back: streaming keeps first-byte latency constant (store-then-
//! forward makes big first pulls time out), but a streamed body that turns out wrong has already
//! been delivered. So readers may send everything *except the last byte* while the download runs;
//! the last byte goes out only after the digest matched. On a mismatch, truncation or reset the
//! reader fails its body stream, hyper aborts the connection, and the client sees a short transfer
//! — never a complete wrong blob (the Content-Length it was promised is never met). A docker or
//! containerd client then retries; the bad bytes never entered the cache.
//!
//! Does not own: the HTTP exchange ([`super::fetch`]) or the cache layout ([`super::cache`]).

use super::cache::Cache;
use super::fetch::{UpstreamClient, UpstreamError, error_chain};
use super::metrics::{Metrics, inc};
use super::route::Upstream;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// No body bytes for this long → the download is abandoned.
const STALL: Duration = Duration::from_secs(60);
const READ_CHUNK: usize = 256 * 1024;

/// Why a download failed, with what the client should be told.
#[derive(Clone, Debug)]
pub struct Failure {
    pub status: StatusCode,
    /// Spec error code (`BLOB_UNKNOWN`, `TOOMANYREQUESTS`, …).
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<HeaderValue>,
    /// Upstream looked unreachable (vs. answered with an error).
    pub unavailable: bool,
}

/// Where a download is.
#[derive(Clone, Debug)]
pub enum State {
    Starting,
    Streaming { total: Option<u64>, written: u64 },
    Done { len: u64 },
    Failed(Arc<Failure>),
}

/// One download in flight.
#[derive(Debug)]
pub struct Flight {
    tx: watch::Sender<State>,
    tmp: PathBuf,
    final_path: PathBuf,
}

impl Flight {
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.tx.subscribe()
    }
}

/// The single-flight table.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<(String, String), Arc<Flight>>>,
}

/// Context a download needs.
#[derive(Clone)]
pub struct FlightCtx {
    pub client: Arc<UpstreamClient>,
    pub cache: Cache,
    pub metrics: Arc<Metrics>,
}

impl Flights {
    /// Is a download of this blob running?
    pub fn running(&self, up: &Upstream, digest: &str) -> bool {
        self.map
            .lock()
            .is_ok_and(|m| m.contains_key(&(up.key(), digest.to_owned())))
    }

    /// Joins the download of `digest` from `up`, starting it (for `repo`) if none runs.
    pub fn join(
        self: &Arc<Self>,
        ctx: &FlightCtx,
        up: &Upstream,
        repo: &str,
        hex: &str,
        digest: &str,
    ) -> Arc<Flight> {
        let key = (up.key(), digest.to_owned());
        let (tx, _) = watch::channel(State::Starting);
        let flight = Arc::new(Flight {
            tx,
            tmp: ctx.cache.tmp_path(hex),
            final_path: ctx.cache.blob_path(hex),
        });
        // (A poisoned lock only follows a panic elsewhere; then this fetch runs uncoalesced.)
        if let Ok(mut map) = self.map.lock() {
            if let Some(f) = map.get(&key) {
                inc(&ctx.metrics.coalesced_waiters);
                return f.clone();
            }
            // Registered before the task starts, so the task's removal can't come first.
            map.insert(key.clone(), flight.clone());
        }
        let (me, ctx, up, repo, hex, digest, f) = (
            self.clone(),
            ctx.clone(),
            up.clone(),
            repo.to_owned(),
            hex.to_owned(),
            digest.to_owned(),
            flight.clone(),
        );
        tokio::spawn(async move {
            let result = download(&ctx, &f, &up, &repo, &hex, &digest).await;
            // Leave the table first: a request arriving now finds the cache entry (or, after a
            // failure, starts a fresh attempt) instead of joining a finished flight.
            if let Ok(mut m) = me.map.lock()
                && m.get(&key).is_some_and(|x| Arc::ptr_eq(x, &f))
            {
                m.remove(&key);
            }
            match result {
                Ok(len) => {
                    f.tx.send_replace(State::Done { len });
                }
                Err(fail) => {
                    let _ = tokio::fs::remove_file(&f.tmp).await;
                    tracing::warn!(upstream = %up.authority, repo, digest, status = fail.status.as_u16(), "blob download failed: {}", fail.message);
                    f.tx.send_replace(State::Failed(Arc::new(fail)));
                }
            }
        });
        flight
    }
}

fn fail(status: StatusCode, code: &'static str, message: String) -> Failure {
    Failure {
        status,
        code,
        message,
        retry_after: None,
        unavailable: false,
    }
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Failure {
        let unavailable = e.is_unavailable();
        let (status, code) = match &e {
            UpstreamError::RealmRefused { .. } | UpstreamError::Token { .. } => {
                (StatusCode::BAD_GATEWAY, "UNAUTHORIZED")
            }
            UpstreamError::Credentials(_) => (StatusCode::BAD_GATEWAY, "UNAUTHORIZED"),
            UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "UNKNOWN"),
            _ => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
        };
        Failure {
            status,
            code,
            message: e.to_string(),
            retry_after: None,
            unavailable,
        }
    }
}

/// Maps an upstream error status to what our client sees.
pub fn failure_from_status(
    status: StatusCode,
    headers: &HeaderMap,
    not_found_code: &'static str,
    what: &str,
) -> Failure {
    let code = match status.as_u16() {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => not_found_code,
        429 => "TOOMANYREQUESTS",
        _ => "UNKNOWN",
    };
    let client_status = match status.as_u16() {
        401 | 403 | 404 | 429 => status,
        s if s >= 500 => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_GATEWAY,
    };
    Failure {
        status: client_status,
        code,
        message: format!("upstream answered {status} for {what}"),
        retry_after: headers.get(header::RETRY_AFTER).cloned(),
        unavailable: status.as_u16() >= 500 || status.as_u16() == 429,
    }
}

/// The download task body.
async fn download(
    ctx: &FlightCtx,
    f: &Flight,
    up: &Upstream,
    repo: &str,
    hex: &str,
    digest: &str,
) -> Result<u64, Failure> {
    inc(&ctx.metrics.upstream_blob_fetches);
    inc(&ctx.metrics.upstream_requests);
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let resp = ctx
        .client
        .send(up, repo, Method::GET, &format!("{repo}/blobs/{digest}"), &h)
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(failure_from_status(
            resp.status(),
            resp.headers(),
            "BLOB_UNKNOWN",
            &format!("blob {digest}"),
        ));
    }
    // The upstream has this blob in this repository for our identity.
    if let Ok(c) = ctx.client.creds(up).await {
        ctx.cache.confirm(&up.key(), repo, digest, &c.identity);
    }
    let total = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bad = |m: String| fail(StatusCode::BAD_GATEWAY, "BLOB_UNKNOWN", m);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&f.tmp)
        .await
        .map_err(|e| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                format!("creating {}: {e}", f.tmp.display()),
            )
        })?;
    f.tx.send_replace(State::Streaming { total, written: 0 });
    let mut body = resp.into_body();
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(STALL, body.frame()).await {
            Err(_) => return Err(bad(format!("upstream stalled for {} s", STALL.as_secs()))),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // Fewer bytes than promised: a failed length check, whatever the transport said.
                inc(&ctx.metrics.verification_failures);
                let mut x = bad(format!("upstream body broke off: {}", error_chain(&e)));
                x.unavailable = true;
                return Err(x);
            }
            Ok(Some(Ok(fr))) => fr,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        written += data.len() as u64;
        if total.is_some_and(|t| written > t) {
            inc(&ctx.metrics.verification_failures);
            return Err(bad(format!(
                "upstream sent more than its Content-Length for {digest}"
            )));
        }
        hasher.update(&data);
        ctx.metrics
            .upstream_bytes
            .fetch_add(data.len() as u64, Relaxed);
        let w = async {
            file.write_all(&data).await?;
            file.flush().await
        };
        w.await.map_err(|e| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                format!("writing {}: {e}", f.tmp.display()),
            )
        })?;
        f.tx.send_replace(State::Streaming { total, written });
    }
    if let Some(t) = total
        && written != t
    {
        inc(&ctx.metrics.verification_failures);
        return Err(bad(format!(
            "upstream body for {digest} ended at {written} of {t} bytes"
        )));
    }
    let actual = format!("sha256:{:x}", hasher.finalize());
    if actual != digest {
        inc(&ctx.metrics.verification_failures);
        return Err(bad(format!(
            "upstream blob hashes to {actual}, not the requested {digest}"
        )));
    }
    file.sync_all().await.map_err(|e| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("fsync {}: {e}", f.tmp.display()),
        )
    })?;
    drop(file);
    ctx.cache
        .commit_blob(&f.tmp, hex)
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()))?;
    tracing::info!(upstream = %up.authority, repo, digest, bytes = written, "blob verified and cached");
    Ok(written)
}

/// Waits until the flight has a length to announce (or failed/finished).
pub async fn first_state(rx: &mut watch::Receiver<State>) -> State {
    loop {
        let s = rx.borrow_and_update().clone();
        if !matches!(s, State::Starting) {
            return s;
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
        }
    }
}

/// Streams the flight's bytes into `tx`, holding back the last byte until verified.
pub async fn stream_flight(
    flight: Arc<Flight>,
    mut rx: watch::Receiver<State>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let abort = |m: String| std::io::Error::other(m);
    let mut file = match tokio::fs::File::open(&flight.tmp).await {
        Ok(f) => f,
        Err(_) => match tokio::fs::File::open(&flight.final_path).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(abort(format!("blob unavailable: {e}")))).await;
                return;
            }
        },
    };
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let state = rx.borrow_and_update().clone();
        let (limit, finished) = match state {
            State::Starting => (0, false),
            // Hold back the final byte: the body cannot complete before verification.
            State::Streaming { total, written } => {
                let cap = total.map_or(written.saturating_sub(1), |t| t.saturating_sub(1));
                (written.min(cap), false)
            }
            State::Done { len } => (len, true),
            State::Failed(f) => {
                let _ = tx.send(Err(abort(f.message.clone()))).await;
                return;
            }
        };
        while pos < limit {
            let want = ((limit - pos) as usize).min(READ_CHUNK);
            match file.read(&mut buf[..want]).await {
                Ok(0) if finished => {
                    let _ = tx
                        .send(Err(abort("cached blob is shorter than expected".into())))
                        .await;
                    return;
                }
                Ok(0) => break,
                Ok(n) => {
                    pos += n as u64;
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return; // client went away; the download continues for the cache
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        if finished && pos >= limit {
            return;
        }
        if !finished && rx.changed().await.is_err() {
            // The task ended; its last state is final.
            if matches!(*rx.borrow(), State::Streaming { .. } | State::Starting) {
                let _ = tx
                    .send(Err(abort("download ended without a result".into())))
                    .await;
                return;
            }
        }
    }
}
