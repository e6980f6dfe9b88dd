//! Faults a real registry cannot produce, from a small upstream written here (hyper): flipped
//! byte, truncated body, wrong `Docker-Content-Digest`, reset mid-blob, 429 + Retry-After, slow
//! blobs (coalescing), a redirect to another host (Authorization must not follow), a token realm on
//! another host (credentials must not be sent), and `kill -9` of the proxy mid-download.
//! Clients: curl, skopeo, and a raw hyper client that counts received bytes.

mod common;
mod proxy_util;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_util::{Proxy, auths_config, curl_get, skopeo_copy_via};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// A body sent in `chunk`-sized pieces with `delay` between them; `cut` = stop after that many
/// bytes, ending cleanly (`reset = false`, short body) or with an error (connection reset).
fn chunked(data: Bytes, chunk: usize, delay: Duration, cut: Option<usize>, reset: bool) -> Body {
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
fn held_last_byte(data: Bytes, st: Arc<FaultState>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        let last = data.len() - 1;
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
        let _ = tx.send(Ok(Frame::data(data.slice(last..)))).await;
    });
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    BodyExt::boxed(StreamBody::new(s))
}

#[derive(Clone, Copy, PartialEq)]
enum AuthMode {
    None,
    /// Basic auth required (user alice / s3cret).
    Basic,
    /// 401 with a Bearer realm on another host.
    BadRealm,
}

struct FaultState {
    blobs: Mutex<HashMap<String, Bytes>>,
    manifests: Mutex<HashMap<String, (Bytes, String)>>,
    gets: Mutex<HashMap<String, usize>>,
    auth_seen: AtomicUsize,
    /// When set, every request is answered 429 (a rate-limited upstream).
    rate_limited: std::sync::atomic::AtomicBool,
    /// When non-zero, every request is answered with this status and a spec error (403 has no real
    /// peer here: the CNCF registry never answers it to a pull).
    forced_status: std::sync::atomic::AtomicU16,
    auth: AuthMode,
    /// `http://localhost:<port>` of the side server (redirect target / bad realm).
    side: String,
    /// The `hold*` faults send all but the last byte, then wait for one permit here
    /// ([`FaultState::release_last_byte`]) before sending it.
    last_byte: tokio::sync::Semaphore,
}

impl FaultState {
    fn add_blob(&self, b: Vec<u8>) -> String {
        let d = common::sha256_digest(&b);
        self.blobs.lock().unwrap().insert(d.clone(), Bytes::from(b));
        d
    }
    fn release_last_byte(&self) {
        self.last_byte.add_permits(1);
    }
    fn gets(&self, digest: &str) -> usize {
        *self.gets.lock().unwrap().get(digest).unwrap_or(&0)
    }
}

fn spec_error(status: StatusCode, code: &str) -> Response<Body> {
    let mut r = Response::new(full(format!(
        r#"{{"errors":[{{"code":"{code}","message":"x"}}]}}"#
    )));
    *r.status_mut() = status;
    r
}

async fn fault_handler(st: Arc<FaultState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
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
                    "hold" | "holdflip" => {
                        let mut v = data.to_vec();
                        if fault == "holdflip" {
                            v[len / 2] ^= 0x40;
                        }
                        held_last_byte(Bytes::from(v), st.clone()).into_response()
                    }
                    "huge" => chunked(data, 256 * 1024, Duration::from_millis(10), None, false)
                        .into_response(),
                    _ => full(data).into_response(),
                }
            };
        r.headers_mut().insert("content-length", len.into());
        r.headers_mut()
            .insert("docker-content-digest", digest.parse().unwrap());
        return r;
    }
    spec_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN")
}

trait IntoResponse {
    fn into_response(self) -> Response<Body>;
}
impl IntoResponse for Body {
    fn into_response(self) -> Response<Body> {
        Response::new(self)
    }
}

/// The side server: redirect target and would-be token realm; records Authorization headers.
struct Side {
    blobs: Mutex<HashMap<String, Bytes>>,
    requests: AtomicUsize,
    auth_headers: AtomicUsize,
    token_requests: AtomicUsize,
}

async fn side_handler(st: Arc<Side>, req: Request<hyper::body::Incoming>) -> Response<Body> {
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

async fn serve<S, F>(listener: tokio::net::TcpListener, st: Arc<S>, f: F)
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

struct Env {
    rt: tokio::runtime::Runtime,
    fault: Arc<FaultState>,
    fault_addr: String,
    side: Arc<Side>,
    side_port: u16,
}

fn start(auth: AuthMode) -> Env {
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

fn random_bytes(n: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut v = vec![0u8; n];
    std::io::Read::read_exact(&mut f, &mut v).unwrap();
    v
}

/// What a raw GET saw: (status, Content-Length, bytes received, completed without error, sha256 of what
/// was received).
type GetResult = (u16, Option<u64>, u64, bool, String);

/// A raw hyper GET that counts body bytes.
async fn raw_get(url: &str) -> GetResult {
    let uri: hyper::Uri = url.parse().unwrap();
    let stream = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(uri.path())
        .header("host", uri.authority().unwrap().as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let cl = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut body = resp.into_body();
    let mut n = 0u64;
    let mut all = Vec::new();
    let mut ok = true;
    while let Some(fr) = body.frame().await {
        match fr {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    n += d.len() as u64;
                    all.extend_from_slice(&d);
                }
            }
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    (status, cl, n, ok, common::sha256_digest(&all))
}

/// A GET whose body is read in the background: `received` counts bytes as they arrive; the task returns
/// what [`raw_get`] returns.
fn streaming_get(
    env: &Env,
    url: &str,
) -> (
    Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<GetResult>,
) {
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let url = url.to_owned();
    let task = env.rt.spawn(async move {
        let uri: hyper::Uri = url.parse().unwrap();
        let stream = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(uri.path())
            .header("host", uri.authority().unwrap().as_str())
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
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
                        counter.store(all.len() as u64, Ordering::SeqCst);
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
    });
    (received, task)
}

/// Waits (up to a minute) until the client has received at least `n` bytes; returns what it holds.
fn wait_received(received: &std::sync::atomic::AtomicU64, n: u64, proxy: &Proxy) -> u64 {
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

/// The proxy streams while it verifies: with the upstream holding back a blob's last byte, the client
/// already holds every other byte (store-then-forward would give it none); once the upstream sends the
/// last byte, the complete, correct body arrives. With a flipped byte, the client is left with
/// `len - 1` bytes and an error: the last byte never goes out.
#[test]
fn blobs_stream_all_but_the_last_byte_until_the_upstream_finishes() {
    let env = start(AuthMode::None);
    let len = 1u64 << 20;
    let good = env.fault.add_blob(random_bytes(len as usize));
    let bad = env.fault.add_blob(random_bytes(len as usize));
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &format!("f=http://{}", env.fault_addr)],
    );

    let (received, task) = streaming_get(&env, &proxy.url(&format!("/v2/f/hold/img/blobs/{good}")));
    let got = wait_received(&received, len - 1, &proxy);
    assert_eq!(
        got,
        len - 1,
        "the last byte went out before the upstream sent it"
    );
    // Still exactly len - 1 a moment later: the proxy itself has nothing more to give.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received.load(Ordering::SeqCst), len - 1);
    env.fault.release_last_byte();
    let (status, cl, got, completed, hash) = env.rt.block_on(task).unwrap();
    assert_eq!(status, 200);
    assert_eq!(cl, Some(len));
    assert!(completed, "body ended with an error");
    assert_eq!(got, len);
    assert_eq!(hash, good);

    let (received, task) =
        streaming_get(&env, &proxy.url(&format!("/v2/f/holdflip/img/blobs/{bad}")));
    let got = wait_received(&received, len - 1, &proxy);
    assert_eq!(got, len - 1);
    env.fault.release_last_byte();
    let (status, cl, got, completed, hash) = env.rt.block_on(task).unwrap();
    assert_eq!((status, cl), (200, Some(len)));
    assert_eq!(got, len - 1, "the last byte of a corrupt blob went out");
    assert!(
        !completed,
        "a short body must end with an error, not cleanly"
    );
    assert_ne!(hash, bad);
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 1);
    assert_eq!(env.fault.gets(&good), 1);
}

#[test]
fn corrupt_truncated_reset_and_lying_upstreams_never_complete_a_wrong_download() {
    if !common::require_peers(&["skopeo", "curl"]) {
        return;
    }
    let env = start(AuthMode::None);
    let mut digests = HashMap::new();
    for f in ["flip", "truncate", "reset"] {
        digests.insert(f, env.fault.add_blob(random_bytes(1 << 20)));
    }
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &format!("f=http://{}", env.fault_addr)],
    );
    for (fault, digest) in &digests {
        let url = proxy.url(&format!("/v2/f/{fault}/img/blobs/{digest}"));
        // Raw client: never receives the whole promised body.
        let (status, cl, got, completed, hash) = env.rt.block_on(raw_get(&url));
        assert!(
            !completed || status != 200 || Some(got) != cl,
            "{fault}: a complete body was delivered"
        );
        assert_ne!(&hash, digest, "{fault}");
        if let Some(cl) = cl {
            assert!(got < cl, "{fault}: got {got} of {cl}");
        }
        // curl agrees (non-zero exit or error status, and never the right/complete content).
        let (status, _, body) = curl_get(&url, &[]);
        assert!(
            status != 200 || body.len() < (1 << 20),
            "{fault}: curl got {} bytes with {status}",
            body.len()
        );
    }
    assert!(proxy.metric("regauth_verification_failures_total") >= 3);

    // Manifests: wrong Docker-Content-Digest, and a flipped byte under a digest reference.
    let img_dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(img_dir.path(), "latest");
    for d in img.layer_digests.iter().chain([&img.config_digest]) {
        env.fault.add_blob(img.blob(d));
    }
    let m = Bytes::from(img.manifest_bytes());
    {
        let mut ms = env.fault.manifests.lock().unwrap();
        ms.insert("latest".into(), (m.clone(), common::OCI_MANIFEST.into()));
        ms.insert(
            img.manifest_digest.clone(),
            (m, common::OCI_MANIFEST.into()),
        );
    }
    let (status, _, body) = curl_get(&proxy.url("/v2/f/wrongdcd/img/manifests/latest"), &[]);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("MANIFEST_INVALID"));
    let (status, _, _) = curl_get(
        &proxy.url(&format!("/v2/f/flip/img/manifests/{}", img.manifest_digest)),
        &[],
    );
    assert_eq!(status, 502);
    // skopeo through the proxy against the flipping repo fails…
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/f", proxy.addr), "flip/img:latest", dest.path());
    assert!(!ok, "skopeo completed a pull of corrupted content:\n{out}");
    // …and succeeds against the honest one.
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/f", proxy.addr), "good/img:latest", dest.path());
    assert!(ok, "{out}\n{}", proxy.log_text());

    // 429 passes through with Retry-After and the spec code.
    let (status, headers, body) = curl_get(&proxy.url("/v2/f/ratelimit/img/manifests/latest"), &[]);
    assert_eq!(status, 429);
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: 7"),
        "{headers}"
    );
    assert!(String::from_utf8_lossy(&body).contains("TOOMANYREQUESTS"));

    let (ok, out) = proxy.cache_verify();
    assert!(ok && out.contains(" 0 bad"), "{out}");
    for (fault, digest) in &digests {
        let hex = &digest["sha256:".len()..];
        assert!(
            !proxy.cache_dir.join("blobs/sha256").join(hex).exists(),
            "{fault}: bad blob entered the cache"
        );
    }
}

#[test]
fn concurrent_cold_pulls_make_one_upstream_download() {
    let env = start(AuthMode::None);
    let data = random_bytes(3 << 20);
    let digest = env.fault.add_blob(data);
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &format!("f=http://{}", env.fault_addr)],
    );
    let url = proxy.url(&format!("/v2/f/slow/img/blobs/{digest}"));
    let results = env.rt.block_on(async {
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                tokio::spawn({
                    let url = url.clone();
                    async move { raw_get(&url).await }
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (status, cl, got, completed, hash) in results {
        assert_eq!(status, 200);
        assert!(completed);
        assert_eq!(Some(got), cl);
        assert_eq!(hash, digest);
    }
    assert_eq!(
        env.fault.gets(&digest),
        1,
        "upstream GETs for one cold blob"
    );
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), 1);
    eprintln!(
        "coalesced waiters: {}",
        proxy.metric("regauth_coalesced_total")
    );
}

#[test]
fn authorization_never_follows_a_redirect_to_another_host() {
    let env = start(AuthMode::Basic);
    let data = random_bytes(200_000);
    let digest = env.fault.add_blob(data.clone());
    env.side
        .blobs
        .lock()
        .unwrap()
        .insert(digest.clone(), Bytes::from(data));
    let proxy = Proxy::start(
        &auths_config(&env.fault_addr, "alice", "s3cret"),
        &["--upstream", &format!("f=http://{}", env.fault_addr)],
    );
    let (status, _, body) = curl_get(
        &proxy.url(&format!("/v2/f/redirect/img/blobs/{digest}")),
        &[],
    );
    assert_eq!(status, 200, "{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), digest);
    assert!(
        env.fault.auth_seen.load(Ordering::SeqCst) >= 1,
        "the upstream got credentials"
    );
    assert_eq!(
        env.side.requests.load(Ordering::SeqCst),
        1,
        "redirect followed"
    );
    assert_eq!(
        env.side.auth_headers.load(Ordering::SeqCst),
        0,
        "Authorization leaked to 127.0.0.1:{}",
        env.side_port
    );
}

#[test]
fn token_realm_on_another_host_is_refused() {
    let env = start(AuthMode::BadRealm);
    let proxy = Proxy::start(
        &auths_config(&env.fault_addr, "alice", "s3cret"),
        &["--upstream", &format!("f=http://{}", env.fault_addr)],
    );
    let (status, _, body) = curl_get(&proxy.url("/v2/f/good/img/manifests/latest"), &[]);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("realm"), "{body}");
    assert_eq!(
        env.side.token_requests.load(Ordering::SeqCst),
        0,
        "credentials sent to a foreign realm"
    );
    assert_eq!(env.side.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn kill_9_mid_download_leaves_a_clean_cache_and_the_pull_then_succeeds() {
    let env = start(AuthMode::None);
    let data = random_bytes(48 << 20);
    let digest = env.fault.add_blob(data);
    let mut proxy = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &format!("f=http://{}", env.fault_addr)],
    );
    let url = proxy.url(&format!("/v2/f/huge/img/blobs/{digest}"));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("blob");
    let mut curl = std::process::Command::new("curl")
        .args(["-s", "-o"])
        .arg(&out)
        .arg(&url)
        .spawn()
        .unwrap();
    // Wait until the download is well under way, then kill -9 the proxy.
    let tmp = proxy.cache_dir.join("tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let partial: u64 = std::fs::read_dir(&tmp)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if partial > 4 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "download never started:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.kill9();
    let _ = curl.wait();
    assert!(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 48 << 20);
    let (ok, report) = proxy.cache_verify();
    assert!(ok, "{report}");
    proxy.restart();
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "partial removed at start"
    );
    let (status, cl, got, completed, hash) = env.rt.block_on(raw_get(&url));
    assert_eq!(status, 200);
    assert!(completed);
    assert_eq!(Some(got), cl);
    assert_eq!(hash, digest);
    let (ok, report) = proxy.cache_verify();
    assert!(
        ok && report.contains("1 entries verified, 0 bad"),
        "{report}"
    );
}

#[test]
fn rate_limited_upstream_serves_cached_tag_stale_and_client_disconnect_does_not_stop_caching() {
    let env = start(AuthMode::None);
    let img_dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(img_dir.path(), "latest");
    let m = Bytes::from(img.manifest_bytes());
    env.fault
        .manifests
        .lock()
        .unwrap()
        .insert("latest".into(), (m, common::OCI_MANIFEST.into()));
    let big = env.fault.add_blob(random_bytes(3 << 20));
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--upstream",
            &format!("f=http://{}", env.fault_addr),
            "--tag-ttl",
            "0",
        ],
    );
    let url = proxy.url("/v2/f/good/img/manifests/latest");
    let (status, _, _) = curl_get(&url, &[]);
    assert_eq!(status, 200);

    // A client that gives up early: the download continues and the verified blob is cached.
    let blob_url = proxy.url(&format!("/v2/f/slow/img/blobs/{big}"));
    let _ = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "0.3", &blob_url])
        .status();
    let cached = proxy
        .cache_dir
        .join("blobs/sha256")
        .join(&big["sha256:".len()..]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cached.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "blob never cached:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(common::sha256_digest(&std::fs::read(&cached).unwrap()), big);

    // Upstream now answers 429 to everything: the cached tag is served stale.
    env.fault.rate_limited.store(true, Ordering::SeqCst);
    let (status, headers, body) = curl_get(&url, &[]);
    assert_eq!(status, 200, "{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("warning: 110"),
        "{headers}"
    );
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    assert!(proxy.metric("regauth_stale_served_total") >= 1);
    // An uncached tag gets the 429 with Retry-After.
    let (status, headers, _) = curl_get(&proxy.url("/v2/f/other/img/manifests/latest"), &[]);
    assert_eq!(status, 429);
    assert!(headers.to_ascii_lowercase().contains("retry-after: 7"));
    assert_eq!(env.fault.gets(&big), 1);
}

/// A cached tag whose upstream now answers 401, 403 or 404 on revalidation: the status goes to the
/// client, the cached manifest is not served stale (a revoked or deleted image must not live on).
#[test]
fn revalidation_401_403_404_are_passed_on_never_stale() {
    let env = start(AuthMode::None);
    let img_dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(img_dir.path(), "latest");
    env.fault.manifests.lock().unwrap().insert(
        "latest".into(),
        (
            Bytes::from(img.manifest_bytes()),
            common::OCI_MANIFEST.into(),
        ),
    );
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--upstream",
            &format!("f=http://{}", env.fault_addr),
            "--tag-ttl",
            "0",
        ],
    );
    let url = proxy.url("/v2/f/good/img/manifests/latest");
    for forced in [401u16, 403, 404] {
        env.fault.forced_status.store(0, Ordering::SeqCst);
        let (status, _, body) = curl_get(&url, &[]);
        assert_eq!(status, 200);
        assert_eq!(common::sha256_digest(&body), img.manifest_digest);
        env.fault.forced_status.store(forced, Ordering::SeqCst);
        let (status, headers, body) = curl_get(&url, &[]);
        assert_eq!(
            status,
            forced,
            "{headers}{}\n{}",
            String::from_utf8_lossy(&body),
            proxy.log_text()
        );
        assert_ne!(common::sha256_digest(&body), img.manifest_digest);
        assert!(
            !headers.to_ascii_lowercase().contains("warning: 110"),
            "{headers}"
        );
    }
    assert_eq!(proxy.metric("regauth_stale_served_total"), 0);
}

/// A hostile upstream serves known manifest bytes with a wrong `Content-Type`: what a later client
/// gets for that digest from a good upstream is decided by the verified bytes, not by that header
/// (finding 2 of issue 10: one request used to break every later pull of the digest).
#[test]
fn a_wrong_content_type_from_one_upstream_does_not_poison_the_digest_for_others() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let env = start(AuthMode::None);
    let reg = common::Registry::start_anonymous();
    let img_dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image_unique(img_dir.path(), "latest", "media-type-poison");
    common::push_image(&img, &reg, "test/busybox:latest", None);
    let hostile = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    env.fault.manifests.lock().unwrap().insert(
        img.manifest_digest.clone(),
        (Bytes::from(img.manifest_bytes()), hostile.into()),
    );
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--upstream",
            &format!("f=http://{}", env.fault_addr),
            "--upstream",
            &format!("good={}", reg.url()),
        ],
    );
    let content_type = |headers: &str| {
        headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let path = |up: &str, repo: &str| {
        proxy.url(&format!(
            "/v2/{up}/{repo}/manifests/{}",
            img.manifest_digest
        ))
    };
    // Through the hostile upstream: the bytes verify, the header is not believed.
    let (status, headers, body) = curl_get(&path("f", "evil/img"), &[]);
    assert_eq!(status, 200, "{headers}\n{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    assert_eq!(content_type(&headers), common::OCI_MANIFEST, "{headers}");
    // Then through the good one: served from the cache with the type the bytes say.
    let (status, headers, body) = curl_get(
        &path("good", "test/busybox"),
        &["-H", "Accept: application/vnd.oci.image.manifest.v1+json"],
    );
    assert_eq!(status, 200, "{headers}\n{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    assert_eq!(content_type(&headers), common::OCI_MANIFEST, "{headers}");
    let mirror = format!("{}/good", proxy.addr);
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(
        &mirror,
        &format!("test/busybox@{}", img.manifest_digest),
        dest.path(),
    );
    assert!(ok, "skopeo by digest after the poisoning attempt:\n{out}");
    let (ok, out) = proxy.cache_verify();
    assert!(ok && out.contains(" 0 bad"), "{out}");
}
