//! The hostile upstream shared by the `proxy_faults` and `proxy_hostile` tests: a small hyper
//! registry whose repository name picks the fault (`/v2/<fault>/<repo>/…`): flipped byte,
//! truncated or reset bodies, wrong `Docker-Content-Digest`, 429, slow or held bodies, no
//! `Content-Length`, a redirect to the side server, a foreign token realm, a hostile token
//! response; `FaultState::add_image` serves a harness image from it and `Env::proxy` starts the
//! proxy in front of it. Plus a raw hyper client that counts received bytes.
#![allow(dead_code)]

use crate::common;
use crate::proxy_util::Proxy;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// A body sent in `chunk`-sized pieces with `delay` between them; `cut` = stop after that many
/// bytes, ending cleanly (`reset = false`, short body) or with an error (connection reset).
pub fn chunked(
    data: Bytes,
    chunk: usize,
    delay: Duration,
    cut: Option<usize>,
    reset: bool,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        let end = cut.unwrap_or(data.len());
        let mut pos = 0;
        while pos < end {
            let n = chunk.min(end - pos);
            if tx
                .send(Ok(Frame::data(data.slice(pos..pos + n))))
                .await
                .is_err()
            {
                return;
            }
            pos += n;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        if reset {
            let _ = tx.send(Err(std::io::Error::other("injected reset"))).await;
        }
    });
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    BodyExt::boxed(StreamBody::new(s))
}

/// A body that sends `data` except its last byte at once, then the last byte only when the test calls
/// [`FaultState::release_last_byte`].
pub fn held_last_byte(data: Bytes, st: Arc<FaultState>) -> Body {
    let last = data.len() - 1;
    held_from(data, last, st)
}

/// A body that sends `data[..at]` at once, then the rest only when the test calls
/// [`FaultState::release_last_byte`] (an upstream stalled midway).
pub fn held_from(data: Bytes, at: usize, st: Arc<FaultState>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        let last = at;
        for start in (0..last).step_by(64 * 1024) {
            let end = (start + 64 * 1024).min(last);
            if tx
                .send(Ok(Frame::data(data.slice(start..end))))
                .await
                .is_err()
            {
                return;
            }
        }
        let Ok(permit) = st.last_byte.acquire().await else {
            return;
        };
        permit.forget();
        for start in (last..data.len()).step_by(64 * 1024) {
            let end = (start + 64 * 1024).min(data.len());
            if tx
                .send(Ok(Frame::data(data.slice(start..end))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    BodyExt::boxed(StreamBody::new(s))
}

#[derive(Clone, Copy, PartialEq)]
pub enum AuthMode {
    None,
    /// Basic auth required (user alice / s3cret).
    Basic,
    /// 401 with a Bearer realm on another host.
    BadRealm,
    /// 401 with a Bearer realm on this server, whose token response says
    /// `expires_in: 18446744073709551615` (u64::MAX).
    HugeToken,
}

pub struct FaultState {
    pub blobs: Mutex<HashMap<String, Bytes>>,
    pub manifests: Mutex<HashMap<String, (Bytes, String)>>,
    pub gets: Mutex<HashMap<String, usize>>,
    pub auth_seen: AtomicUsize,
    /// When set, every request is answered 429 (a rate-limited upstream).
    pub rate_limited: std::sync::atomic::AtomicBool,
    /// When non-zero, every request is answered with this status and a spec error (403 has no real
    /// peer here: the CNCF registry never answers it to a pull).
    pub forced_status: std::sync::atomic::AtomicU16,
    pub auth: AuthMode,
    /// `http://localhost:<port>` of the side server (redirect target / bad realm).
    pub side: String,
    /// `http://127.0.0.1:<port>` of this server.
    pub own: String,
    /// The `hold*` faults send all but the last byte, then wait for one permit here
    /// ([`FaultState::release_last_byte`]) before sending it.
    pub last_byte: tokio::sync::Semaphore,
}

impl FaultState {
    pub fn add_blob(&self, b: Vec<u8>) -> String {
        let d = common::sha256_digest(&b);
        self.blobs.lock().unwrap().insert(d.clone(), Bytes::from(b));
        d
    }
    /// Serves `img`'s manifest (as an OCI manifest) under `reference`.
    pub fn add_manifest(&self, reference: &str, img: &common::TestImage) {
        let m = Bytes::from(img.manifest_bytes());
        let entry = (m, common::OCI_MANIFEST.to_owned());
        self.manifests
            .lock()
            .unwrap()
            .insert(reference.into(), entry);
    }
    /// Serves all of `img`: its config and layers, its manifest as `latest` and by digest.
    pub fn add_image(&self, img: &common::TestImage) {
        for d in img.layer_digests.iter().chain([&img.config_digest]) {
            self.add_blob(img.blob(d));
        }
        self.add_manifest("latest", img);
        self.add_manifest(&img.manifest_digest, img);
    }
    pub fn release_last_byte(&self) {
        self.last_byte.add_permits(1);
    }
    pub fn gets(&self, digest: &str) -> usize {
        *self.gets.lock().unwrap().get(digest).unwrap_or(&0)
    }
}

pub fn spec_error(status: StatusCode, code: &str) -> Response<Body> {
    let mut r = Response::new(full(format!(
        r#"{{"errors":[{{"code":"{code}","message":"x"}}]}}"#
    )));
    *r.status_mut() = status;
    r
}

pub async fn fault_handler(
    st: Arc<FaultState>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let head = req.method() == hyper::Method::HEAD;
    let has_auth = req.headers().contains_key(hyper::header::AUTHORIZATION);
    if has_auth {
        st.auth_seen.fetch_add(1, Ordering::SeqCst);
    }
    match st.auth {
        AuthMode::None => {}
        AuthMode::Basic => {
            let ok = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some("Basic YWxpY2U6czNjcmV0");
            if !ok {
                let mut r = spec_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
                r.headers_mut()
                    .insert("www-authenticate", "Basic realm=\"fault\"".parse().unwrap());
                return r;
            }
        }
        AuthMode::HugeToken => {
            if path == "/token" {
                return Response::new(full(r#"{"token":"t0k","expires_in":18446744073709551615}"#));
            }
            let ok = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some("Bearer t0k");
            if !ok {
                let mut r = spec_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
                let v = format!("Bearer realm=\"{}/token\",service=\"fault\"", st.own);
                r.headers_mut()
                    .insert("www-authenticate", v.parse().unwrap());
                return r;
            }
        }
        AuthMode::BadRealm => {
            let mut r = spec_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
            let v = format!("Bearer realm=\"{}/token\",service=\"fault\"", st.side);
            r.headers_mut()
                .insert("www-authenticate", v.parse().unwrap());
            return r;
        }
    }
    if path == "/v2/" {
        return Response::new(full("{}"));
    }
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let fault = rest.split('/').next().unwrap_or("");
    let forced = st.forced_status.load(Ordering::SeqCst);
    if forced != 0 {
        let code = match forced {
            401 => "UNAUTHORIZED",
            403 => "DENIED",
            _ => "MANIFEST_UNKNOWN",
        };
        return spec_error(StatusCode::from_u16(forced).unwrap(), code);
    }
    if fault == "ratelimit" || st.rate_limited.load(Ordering::SeqCst) {
        let mut r = spec_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
        r.headers_mut().insert("retry-after", "7".parse().unwrap());
        return r;
    }
    // `yes/…`: a liar that answers 200 to every HEAD, for any digest in any repository (and has
    // nothing to GET).
    if fault == "yes" && head {
        let digest = rest.rsplit('/').next().unwrap_or("").to_owned();
        let mut r = Response::new(full(Bytes::new()));
        if let Ok(v) = digest.parse() {
            r.headers_mut().insert("docker-content-digest", v);
        }
        return r;
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let reference = &rest[i + "/manifests/".len()..];
        let Some((body, ct)) = st.manifests.lock().unwrap().get(reference).cloned() else {
            return spec_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        };
        let mut digest = common::sha256_digest(&body);
        let mut body = body.to_vec();
        if fault == "wrongdcd" {
            digest = format!("sha256:{}", "e".repeat(64));
        }
        if fault == "flip" {
            let n = body.len() / 2;
            body[n] ^= 1;
        }
        let mut r = Response::new(if head {
            full(Bytes::new())
        } else if fault == "slowman" {
            chunked(
                Bytes::from(body.clone()),
                64 * 1024,
                Duration::from_millis(100),
                None,
                false,
            )
        } else {
            full(body.clone())
        });
        r.headers_mut().insert("content-type", ct.parse().unwrap());
        r.headers_mut()
            .insert("docker-content-digest", digest.parse().unwrap());
        r.headers_mut().insert("content-length", body.len().into());
        return r;
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let digest = rest[i + "/blobs/".len()..].to_owned();
        let Some(data) = st.blobs.lock().unwrap().get(&digest).cloned() else {
            return spec_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
        };
        let len = data.len();
        let mut r =
            if head {
                Response::new(full(Bytes::new()))
            } else {
                *st.gets.lock().unwrap().entry(digest.clone()).or_default() += 1;
                match fault {
                    "redirect" => {
                        let mut r = Response::new(full(Bytes::new()));
                        *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                        // Same scheme and host, another port: a redirect the reach rules follow
                        // (another authority, so Authorization must be dropped).
                        let loc = format!(
                            "{}/blobs/{digest}",
                            st.side.replace("localhost", "127.0.0.1")
                        );
                        r.headers_mut().insert("location", loc.parse().unwrap());
                        return r;
                    }
                    "flip" => {
                        let mut v = data.to_vec();
                        v[len / 2] ^= 0x40;
                        full(v)
                    }
                    .into_response(),
                    "truncate" => chunked(data, 64 * 1024, Duration::ZERO, Some(len / 2), false)
                        .into_response(),
                    "reset" => chunked(
                        data,
                        64 * 1024,
                        Duration::from_millis(5),
                        Some(len / 2),
                        true,
                    )
                    .into_response(),
                    "slow" => chunked(data, 64 * 1024, Duration::from_millis(15), None, false)
                        .into_response(),
                    // 1 KiB every 200 ms: about 5 KiB/s.
                    "trickle" => {
                        chunked(data, 1024, Duration::from_millis(200), None, false).into_response()
                    }
                    // Chunked without Content-Length (the length is not sent below).
                    "nolen" => chunked(data, 64 * 1024, Duration::from_millis(2), None, false)
                        .into_response(),
                    "nolenflip" => {
                        let mut v = data.to_vec();
                        v[len / 2] ^= 0x40;
                        let v = Bytes::from(v);
                        chunked(v, 64 * 1024, Duration::from_millis(2), None, false).into_response()
                    }
                    "hold" | "holdflip" => {
                        let mut v = data.to_vec();
                        if fault == "holdflip" {
                            v[len / 2] ^= 0x40;
                        }
                        held_last_byte(Bytes::from(v), st.clone()).into_response()
                    }
                    // Half the blob, then a stall until the test releases the rest.
                    "stall" => held_from(data, len / 2, st.clone()).into_response(),
                    "huge" => chunked(data, 256 * 1024, Duration::from_millis(10), None, false)
                        .into_response(),
                    _ => full(data).into_response(),
                }
            };
        if !fault.starts_with("nolen") {
            r.headers_mut().insert("content-length", len.into());
        }
        r.headers_mut()
            .insert("docker-content-digest", digest.parse().unwrap());
        return r;
    }
    spec_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN")
}

pub trait IntoResponse {
    fn into_response(self) -> Response<Body>;
}
impl IntoResponse for Body {
    fn into_response(self) -> Response<Body> {
        Response::new(self)
    }
}

/// The side server: redirect target and would-be token realm; records Authorization headers.
pub struct Side {
    pub blobs: Mutex<HashMap<String, Bytes>>,
    pub requests: AtomicUsize,
    pub auth_headers: AtomicUsize,
    pub token_requests: AtomicUsize,
}

pub async fn side_handler(st: Arc<Side>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(hyper::header::AUTHORIZATION) {
        st.auth_headers.fetch_add(1, Ordering::SeqCst);
    }
    let path = req.uri().path();
    if path.starts_with("/token") {
        st.token_requests.fetch_add(1, Ordering::SeqCst);
        return Response::new(full(r#"{"token":"stolen"}"#));
    }
    if let Some(d) = path.strip_prefix("/blobs/")
        && let Some(b) = st.blobs.lock().unwrap().get(d).cloned()
    {
        return Response::new(full(b));
    }
    spec_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
}

pub async fn serve<S, F>(listener: tokio::net::TcpListener, st: Arc<S>, f: F)
where
    S: Send + Sync + 'static,
    F: Fn(
            Arc<S>,
            Request<hyper::body::Incoming>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
        + Send
        + Sync
        + Copy
        + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let st = st.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, std::convert::Infallible>(f(st, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub fault: Arc<FaultState>,
    pub fault_addr: String,
    pub side: Arc<Side>,
    pub side_port: u16,
}

impl Env {
    /// `regauth proxy --upstream f=http://<the fault server> <extra>`, no credentials.
    pub fn proxy(&self, extra: &[&str]) -> Proxy {
        let up = format!("f=http://{}", self.fault_addr);
        let mut args = vec!["--upstream", up.as_str()];
        args.extend_from_slice(extra);
        Proxy::start(&serde_json::json!({}), &args)
    }
}

pub fn start(auth: AuthMode) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (fl, sl) = rt.block_on(async {
        (
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    });
    let side_port = sl.local_addr().unwrap().port();
    let fault = Arc::new(FaultState {
        blobs: Mutex::default(),
        manifests: Mutex::default(),
        gets: Mutex::default(),
        auth_seen: AtomicUsize::new(0),
        rate_limited: std::sync::atomic::AtomicBool::new(false),
        forced_status: std::sync::atomic::AtomicU16::new(0),
        auth,
        // "localhost" is another host than the upstream's "127.0.0.1".
        side: format!("http://localhost:{side_port}"),
        own: format!("http://{}", fl.local_addr().unwrap()),
        last_byte: tokio::sync::Semaphore::new(0),
    });
    let side = Arc::new(Side {
        blobs: Mutex::default(),
        requests: AtomicUsize::new(0),
        auth_headers: AtomicUsize::new(0),
        token_requests: AtomicUsize::new(0),
    });
    let fault_addr = fl.local_addr().unwrap().to_string();
    rt.spawn(serve(fl, fault.clone(), |s, r| {
        Box::pin(fault_handler(s, r))
    }));
    rt.spawn(serve(sl, side.clone(), |s, r| Box::pin(side_handler(s, r))));
    Env {
        rt,
        fault,
        fault_addr,
        side,
        side_port,
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut v = vec![0u8; n];
    std::io::Read::read_exact(&mut f, &mut v).unwrap();
    v
}

/// What a raw GET saw: (status, Content-Length, bytes received, completed without error, sha256 of what
/// was received).
pub type GetResult = (u16, Option<u64>, u64, bool, String);

/// A raw hyper GET that counts body bytes.
pub async fn raw_get(url: &str) -> GetResult {
    counted_get(url, None, &std::sync::atomic::AtomicU64::new(0)).await
}

/// [`raw_get`] with an optional `Range` header, storing the bytes received so far in `received`
/// as they arrive.
async fn counted_get(
    url: &str,
    range: Option<&str>,
    received: &std::sync::atomic::AtomicU64,
) -> GetResult {
    let uri: hyper::Uri = url.parse().unwrap();
    let stream = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(uri.path()).header("host", uri.authority().unwrap().as_str());
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let req = req.body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let cl = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut body = resp.into_body();
    let mut all = Vec::new();
    let mut ok = true;
    while let Some(fr) = body.frame().await {
        match fr {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    all.extend_from_slice(&d);
                    received.store(all.len() as u64, Ordering::SeqCst);
                }
            }
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    (
        status,
        cl,
        all.len() as u64,
        ok,
        common::sha256_digest(&all),
    )
}

/// A GET whose body is read in the background: `received` counts bytes as they arrive; the task returns
/// what [`raw_get`] returns.
pub fn streaming_get(
    env: &Env,
    url: &str,
) -> (
    Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<GetResult>,
) {
    streaming_range_get(env, url, None)
}

/// [`streaming_get`] with an optional `Range` header.
pub fn streaming_range_get(
    env: &Env,
    url: &str,
    range: Option<&str>,
) -> (
    Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<GetResult>,
) {
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let url = url.to_owned();
    let range = range.map(str::to_owned);
    let task = env
        .rt
        .spawn(async move { counted_get(&url, range.as_deref(), &counter).await });
    (received, task)
}

/// Waits (up to a minute) for a request task to finish; fails the test naming `what` if it
/// does not (the bound is a hang guard, not a timing assertion).
pub fn finish<T>(env: &Env, task: tokio::task::JoinHandle<T>, what: &str, proxy: &Proxy) -> T {
    match env
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), task).await })
    {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("{what} did not finish:\n{}", proxy.log_text()),
    }
}

/// Waits (up to a minute) until the client has received at least `n` bytes; returns what it holds.
pub fn wait_received(received: &std::sync::atomic::AtomicU64, n: u64, proxy: &Proxy) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = received.load(Ordering::SeqCst);
        if got >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "client holds {got} of the {n} bytes the upstream has sent:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A relay in front of an S3 server that misbehaves now and then, as a real bucket under load
/// does: every `fail_every`-th request is answered `503 SlowDown` (S3's throttling answer, which
/// clients retry with backoff) and every `slow_every`-th one is forwarded after `delay`.
/// Everything else is forwarded unchanged (moto does not check signatures, so the relay's
/// `Host` does not matter).
pub struct FlakyS3 {
    pub target: String,
    pub fail_every: usize,
    pub slow_every: usize,
    pub delay: Duration,
    pub requests: AtomicUsize,
    pub failed: AtomicUsize,
}

pub async fn flaky_s3_handler(
    st: Arc<FlakyS3>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let n = st.requests.fetch_add(1, Ordering::SeqCst) + 1;
    // The request is read whole first, as S3 does: an answer before the body would be a
    // connection reset to the client, not the 503 this relay is for.
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return spec_error(StatusCode::BAD_GATEWAY, "RELAY");
    };
    if st.fail_every > 0 && n.is_multiple_of(st.fail_every) {
        st.failed.fetch_add(1, Ordering::SeqCst);
        let mut r = Response::new(full(
            "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
        ));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    }
    if st.slow_every > 0 && n.is_multiple_of(st.slow_every) {
        tokio::time::sleep(st.delay).await;
    }
    let Ok(stream) = tokio::net::TcpStream::connect(&st.target).await else {
        return spec_error(StatusCode::BAD_GATEWAY, "RELAY");
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return spec_error(StatusCode::BAD_GATEWAY, "RELAY");
    };
    tokio::spawn(conn);
    let mut fwd = Request::from_parts(parts, Full::new(body));
    let pq = fwd
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *fwd.uri_mut() = pq.parse().unwrap();
    let Ok(resp) = sender.send_request(fwd).await else {
        return spec_error(StatusCode::BAD_GATEWAY, "RELAY");
    };
    let (parts, body) = resp.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return spec_error(StatusCode::BAD_GATEWAY, "RELAY");
    };
    Response::from_parts(parts, full(body))
}

/// Starts a [`FlakyS3`] relay to `target` (`HOST:PORT`) on `rt`; returns its state and address.
pub fn start_flaky_s3(
    rt: &tokio::runtime::Runtime,
    target: &str,
    fail_every: usize,
    slow_every: usize,
    delay: Duration,
) -> (Arc<FlakyS3>, String) {
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let st = Arc::new(FlakyS3 {
        target: target.to_owned(),
        fail_every,
        slow_every,
        delay,
        requests: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    rt.spawn(serve(l, st.clone(), |s, r| {
        Box::pin(flaky_s3_handler(s, r))
    }));
    (st, addr)
}
