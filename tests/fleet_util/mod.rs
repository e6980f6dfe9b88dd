//! Helpers shared by the fleet tests (`tests/fleet*.rs`): a byte-counting relay in front of the
//! real CNCF registry (`Upstream`: registry, relay and peer secret, the set-up of the fleet.rs and
//! fleet_peers.rs tests), a hashing client that retries through other members, fleet members in
//! front of it (`Upstream::member`: `--peer`/`--advertise`/`--peer-secret-file`, optionally on a
//! shared `--store`), the
//! measurements two fleet tests share (30 cold pulls, a warm joiner, the owner killed
//! mid-download), and `regauth cache --store` against a bucket.
#![allow(dead_code)]

use crate::common;
use crate::proxy_util::{self, Proxy, auths_config, curl_get};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const USER: &str = "alice";
pub const PASS: &str = "s3cret";
pub const SECRET: &str = "fleet-secret-0123456789abcdef";
/// How much of what its clients sent a [`Relay`] keeps.
pub const SENT_KEPT: usize = 1 << 20;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A TCP relay to `target` counting the bytes that come back from it; `rate` (bytes/s) throttles
/// that direction when set.
pub struct Relay {
    pub port: u16,
    pub bytes: Arc<AtomicU64>,
    /// What the clients sent, all connections appended (the first [`SENT_KEPT`] bytes): a
    /// captured request, for the replay tests.
    pub sent: Arc<Mutex<Vec<u8>>>,
    /// When set, the byte at offset 1 MiB of every response longer than that is flipped (a
    /// blob body: manifests, tokens and errors are shorter).
    pub flip: Arc<AtomicBool>,
}

pub fn relay(rt: &tokio::runtime::Runtime, target: String, rate: Option<u64>) -> Relay {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let bytes = Arc::new(AtomicU64::new(0));
    let flip = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (counter, flipper, log) = (bytes.clone(), flip.clone(), sent.clone());
    rt.spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                continue;
            };
            let (counter, flipper, log) = (counter.clone(), flipper.clone(), log.clone());
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        {
                            let mut kept = log.lock().unwrap();
                            let room = SENT_KEPT.saturating_sub(kept.len()).min(n);
                            kept.extend_from_slice(&buf[..room]);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 64 << 10];
                let mut seen = 0usize;
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                    let at = 1usize << 20;
                    if flipper.load(Ordering::SeqCst) && seen <= at && at < seen + n {
                        buf[at - seen] ^= 0x01;
                    }
                    seen += n;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    if let Some(r) = rate {
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / r as f64)).await;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    Relay {
        port,
        bytes,
        flip,
        sent,
    }
}

/// The real registry (htpasswd `USER`/`PASS`) behind a byte-counting [`relay`], and a peer
/// secret file holding `SECRET`. Field order is drop order: the relay's runtime stops before
/// the registry.
pub struct Upstream {
    pub secret: PathBuf,
    _tmp: tempfile::TempDir,
    pub relay: Relay,
    pub rt: tokio::runtime::Runtime,
    pub reg: common::Registry,
}

impl Upstream {
    /// `rate`: the relay's throttle (see [`relay`]).
    pub fn start(rate: Option<u64>) -> Upstream {
        let reg = common::Registry::start_htpasswd(USER, PASS);
        let rt = rt();
        let relay = relay(&rt, reg.addr.clone(), rate);
        let tmp = tempfile::tempdir().unwrap();
        Upstream {
            secret: secret_file(tmp.path(), SECRET),
            _tmp: tmp,
            relay,
            rt,
            reg,
        }
    }

    /// Starts fleet member `i` of `addrs` (every member in `--peer`, this secret), upstream `up`
    /// → the relay, its own docker config with the registry's credentials.
    pub fn member(&self, addrs: &[String], i: usize) -> Proxy {
        self.member_with(addrs, i, PASS, &[], &[])
    }

    /// Like [`Upstream::member`] with `pass` as its upstream password (a wrong one: a member
    /// without access), extra arguments (`--store s3://…`) and environment (the AWS one).
    pub fn member_with(
        &self,
        addrs: &[String],
        i: usize,
        pass: &str,
        extra: &[&str],
        env: &[(&'static str, String)],
    ) -> Proxy {
        self.start_member(&addrs[i], addrs, i, pass, extra, env)
    }

    /// Like [`Upstream::member_with`] (the right password), listening on `listen` rather than on
    /// `addrs[i]` (which it still advertises): the other members reach it through whatever
    /// listens at `addrs[i]`, a [`Relay`].
    pub fn member_at(
        &self,
        listen: &str,
        addrs: &[String],
        i: usize,
        extra: &[&str],
        env: &[(&'static str, String)],
    ) -> Proxy {
        self.start_member(listen, addrs, i, PASS, extra, env)
    }

    fn start_member(
        &self,
        listen: &str,
        addrs: &[String],
        i: usize,
        pass: &str,
        extra: &[&str],
        env: &[(&'static str, String)],
    ) -> Proxy {
        let relay = format!("127.0.0.1:{}", self.relay.port);
        let mut args: Vec<String> = vec!["--upstream".into(), format!("up=http://{relay}")];
        for a in addrs {
            args.push("--peer".into());
            args.push(format!("http://{a}"));
        }
        args.push("--advertise".into());
        args.push(format!("http://{}", addrs[i]));
        args.push("--peer-secret-file".into());
        args.push(self.secret.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let creds = auths_config(&relay, USER, pass);
        Proxy::start_at(listen, &creds, &args, &env)
    }

    /// Pushes `len` random bytes as a blob of `repo` (not kept); returns its digest.
    pub fn push_random(&self, repo: &str, len: usize) -> String {
        push_blob(&self.reg, repo, &proxy_util::fault::random_bytes(len))
    }
}

/// Pushes `data` as a blob of `repo` (monolithic upload, curl); returns its digest.
pub fn push_blob(reg: &common::Registry, repo: &str, data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    std::fs::write(&file, data).unwrap();
    let digest = common::sha256_digest(data);
    let auth = format!("{USER}:{PASS}");
    let base = format!("http://{}", reg.addr);
    let (status, headers, _) = curl_get(
        &format!("{base}/v2/{repo}/blobs/uploads/"),
        &["-u", &auth, "-X", "POST"],
    );
    assert_eq!(status, 202, "upload start: {headers}");
    let loc = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .expect("Location");
    let loc = if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            &auth,
            "-X",
            "PUT",
        ])
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("{loc}{sep}digest={digest}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201", "blob upload");
    digest
}

/// What a client GET saw: status, promised length, bytes received, completed, sha256.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub length: Option<u64>,
    pub received: u64,
    pub complete: bool,
    pub digest: String,
}

impl Got {
    /// A body the client would take as whole: 200, complete, all promised bytes.
    pub fn whole(&self) -> bool {
        self.status == 200 && self.complete && self.length == Some(self.received)
    }
}

/// A GET that hashes the body as it arrives (nothing kept).
pub async fn hashed_get(url: &str) -> Got {
    let failed = |status| Got {
        status,
        length: None,
        received: 0,
        complete: false,
        digest: String::new(),
    };
    let uri: hyper::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().as_str().to_owned();
    let Ok(stream) = tokio::net::TcpStream::connect(&authority).await else {
        return failed(0);
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return failed(0);
    };
    tokio::spawn(conn);
    let req = hyper::Request::get(uri.path())
        .header("host", authority)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let Ok(resp) = sender.send_request(req).await else {
        return failed(0);
    };
    let status = resp.status().as_u16();
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut body = resp.into_body();
    let mut h = Sha256::new();
    let (mut received, mut complete) = (0u64, true);
    while let Some(fr) = body.frame().await {
        match fr {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    received += d.len() as u64;
                    h.update(&d);
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    Got {
        status,
        length,
        received,
        complete,
        digest: format!("sha256:{:x}", h.finalize()),
    }
}

/// Pulls `path` from the members in `order`, moving on to the next after a failure (what a
/// docker client retrying through another runner's proxy does); every whole body it saw must
/// hash right. Returns the attempts it took.
pub async fn pull(urls: Vec<String>, digest: String) -> Result<usize, String> {
    for (n, url) in urls.iter().cycle().take(urls.len() * 3).enumerate() {
        let got = hashed_get(url).await;
        if got.whole() {
            if got.digest != digest {
                return Err(format!(
                    "a client completed a wrong body from {url}: {got:?}"
                ));
            }
            return Ok(n + 1);
        }
        if got.complete && got.status == 200 && got.digest == digest {
            return Ok(n + 1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("no member served {digest}"))
}

pub fn secret_file(dir: &Path, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("peer.secret");
    std::fs::write(&f, secret).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// A plain proxy (no fleet) in front of the relay, with `extra` arguments and `env`.
pub fn independent(relay_port: u16, extra: &[&str], env: &[(&'static str, String)]) -> Proxy {
    let up = format!("up=http://127.0.0.1:{relay_port}");
    let creds = auths_config(&format!("127.0.0.1:{relay_port}"), USER, PASS);
    let mut args = vec!["--upstream", &up];
    args.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Proxy::start_env(&creds, &args, &env)
}

/// Waits until every member in `fleet` reports each of `up` healthy (`/healthz?verbose`): members
/// started one after the other first saw the later ones down.
pub fn converge(fleet: &[&Proxy], up: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in fleet {
        loop {
            let (_, body) = proxy_util::curl(&["-s", &p.url("/healthz?verbose")]);
            let seen = up.iter().all(|a| {
                let u = format!("peer http://{a} ");
                body.lines()
                    .any(|l| l.starts_with(&u) && (l.ends_with(" healthy") || l.ends_with(" self")))
            });
            if seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet never converged: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn addrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect()
}

/// `n` concurrent pulls spread round-robin over `members`, each retrying through the others.
pub fn pull_many(
    rt: &tokio::runtime::Runtime,
    members: &[String],
    repo: &str,
    digest: &str,
    n: usize,
) -> Vec<Result<usize, String>> {
    let tasks: Vec<_> = (0..n)
        .map(|c| {
            let urls: Vec<String> = (0..members.len())
                .map(|k| {
                    let m = &members[(c + k) % members.len()];
                    format!("http://{m}/v2/up/{repo}/blobs/{digest}")
                })
                .collect();
            rt.spawn(pull(urls, digest.to_owned()))
        })
        .collect();
    rt.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

pub fn assert_all_ok(results: &[Result<usize, String>], logs: &str) {
    for r in results {
        if let Err(e) = r {
            panic!("{e}\n{logs}");
        }
    }
}

/// Every member's log, for a failure message.
pub fn logs(fleet: &[Proxy]) -> String {
    fleet
        .iter()
        .map(Proxy::log_text)
        .collect::<Vec<_>>()
        .join("\n----\n")
}

/// `regauth cache --store URL <args>` (with a throwaway local folder): (exit ok, stdout+stderr).
pub fn cache_cmd(store: &str, env: &[(&'static str, String)], args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::bin("regauth"));
    cmd.arg("cache")
        .arg("--cache-dir")
        .arg(dir.path())
        .args(["--store", store])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    common::run_text(&mut cmd, "regauth cache")
}

/// Content entries in the bucket: (digest, size).
pub fn bucket_entries(store: &str, env: &[(&'static str, String)]) -> Vec<(String, u64)> {
    let (ok, out) = cache_cmd(store, env, &["ls", "--json"]);
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "blob" || v["kind"] == "manifest")
        .map(|v| {
            (
                v["digest"].as_str().unwrap_or("").to_owned(),
                v["size"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// `regauth cache verify --store`: exit 0 and no bad object (every object's bytes hash to its key).
pub fn assert_verify_clean(store: &str, env: &[(&'static str, String)]) -> String {
    let (ok, out) = cache_cmd(store, env, &["verify"]);
    assert!(ok && out.contains(" 0 bad"), "cache verify --store:\n{out}");
    out
}

/// An `object_store` client for `bucket` on `s3` (signed as the members are), conditional copies
/// as the proxy makes them.
pub fn bucket_client(s3: &common::S3Server, bucket: &str) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&s3.moto.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_bucket_name(bucket)
            .with_copy_if_not_exists(object_store::aws::S3CopyIfNotExists::Multipart)
            .build()
            .unwrap(),
    )
}

/// Waits until every digest in `digests` is in the bucket: a commit runs behind the clients (they
/// have their verified bytes before the upload), so a pull returning does not mean it landed.
/// `why` is the failure message (the members' logs).
pub fn wait_committed(
    store: &str,
    env: &[(&'static str, String)],
    digests: &[&str],
    why: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let in_bucket = bucket_entries(store, env);
        let missing: Vec<&&str> = digests
            .iter()
            .filter(|d| !in_bucket.iter().any(|(e, _)| e == **d))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never committed: {missing:?}\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until `p`'s log contains `needle` (something a task behind the clients logs).
pub fn wait_log(p: &Proxy, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !p.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 30 concurrent cold pulls of `digest` (`fleet/big`) over `members` (the addresses of `proxies`):
/// every client gets the right bytes. Returns the bytes the upstream sent for them and the wall
/// time; `what` and both are printed, never asserted (the wall time is for the closing note).
fn thirty_cold_pulls(
    up: &Upstream,
    proxies: &[Proxy],
    members: &[String],
    digest: &str,
    len: u64,
    what: &str,
) -> u64 {
    up.relay.bytes.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let results = pull_many(&up.rt, members, "fleet/big", digest, 30);
    let wall = started.elapsed();
    assert_all_ok(&results, &logs(proxies));
    let bytes = up.relay.bytes.load(Ordering::SeqCst);
    eprintln!(
        "{what}: 30 pulls of {} MiB, upstream bytes {bytes} = {:.3}x the layer, wall {:.1} s",
        len >> 20,
        bytes as f64 / len as f64,
        wall.as_secs_f64()
    );
    bytes
}

/// [`thirty_cold_pulls`] over the first three members of `fleet`: the upstream sends the layer
/// about once (≤ 1.05×).
pub fn assert_fleet_fetches_once(
    up: &Upstream,
    fleet: &[Proxy],
    addrs: &[String],
    digest: &str,
    len: u64,
    what: &str,
) {
    let bytes = thirty_cold_pulls(up, fleet, &addrs[..3], digest, len, what);
    assert!(
        bytes * 100 <= len * 105,
        "the fleet fetched {:.3}x the layer from upstream:\n{}",
        bytes as f64 / len as f64,
        logs(fleet)
    );
}

/// A member started after the others pulled `digest` (`fleet/big`): it converges with
/// `addrs[..3]` and serves the blob with no upstream blob bytes, less than 64 KiB relayed (HEAD
/// confirmations). Returns the bytes relayed.
pub fn assert_joins_warm(up: &Upstream, joiner: &Proxy, addrs: &[String], digest: &str) -> u64 {
    converge(&[joiner], &addrs[..3]);
    up.relay.bytes.store(0, Ordering::SeqCst);
    let joiner_addr = [joiner.addr.clone()];
    let r = pull_many(&up.rt, &joiner_addr, "fleet/big", digest, 1);
    assert_all_ok(&r, &joiner.log_text());
    let (_, text) = proxy_util::curl(&["-s", &joiner.url("/metrics")]);
    let blob_bytes =
        proxy_util::metric_in(&text, "regauth_upstream_received_bytes_total").unwrap_or(0);
    let relayed = up.relay.bytes.load(Ordering::SeqCst);
    eprintln!(
        "joining member: upstream blob bytes {blob_bytes}, relayed bytes {relayed} (HEAD confirmations)"
    );
    assert_eq!(blob_bytes, 0, "{}", joiner.log_text());
    assert!(relayed < 64 << 10, "{relayed} bytes came from upstream");
    relayed
}

/// Nine concurrent pulls of `digest` (`repo`, `len` bytes, the relay throttled) over the members
/// `addrs` of `fleet`; once 6 MiB have come from upstream, `kill -9` of the blob's owner. Returns
/// the owner's index and the clients' results.
pub fn kill_owner_mid_download(
    up: &Upstream,
    fleet: &mut [Proxy],
    addrs: &[String],
    repo: &str,
    digest: &str,
    len: u64,
) -> (usize, Vec<Result<usize, String>>) {
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let owner = regauth::proxy::peer::rank(&url_refs, digest.trim_start_matches("sha256:"))[0];
    let (members, repo, d) = (addrs.to_vec(), repo.to_owned(), digest.to_owned());
    let handle = std::thread::spawn(move || pull_many(&rt(), &members, &repo, &d, 9));
    // Mid-download: some, not all, of the layer has come from upstream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.relay.bytes.load(Ordering::SeqCst) < 6 << 20 {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let at = up.relay.bytes.load(Ordering::SeqCst);
    fleet[owner].kill9();
    eprintln!("killed the owner (member {owner}) at {at} upstream bytes of {len}");
    (owner, handle.join().unwrap())
}

/// The baseline for the closing note: 30 concurrent cold pulls of `digest` over three proxies
/// that share nothing (no bucket, no peers) — each fetches the layer itself (≈3×). Every client
/// must still get the right bytes; the ratio and wall time are printed, never asserted.
pub fn independent_baseline(up: &Upstream, digest: &str, len: u64) {
    let solo: Vec<Proxy> = (0..3)
        .map(|_| independent(up.relay.port, &[], &[]))
        .collect();
    let solo_addrs: Vec<String> = solo.iter().map(|p| p.addr.clone()).collect();
    thirty_cold_pulls(up, &solo, &solo_addrs, digest, len, "3 independent proxies");
}
