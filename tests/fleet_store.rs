//! `regauth proxy --store s3://…`: verified content in a bucket shared by a fleet, against a real S3
//! API (moto's server, `common::S3Server`) and the hostile upstream of `proxy_util::fault` (which
//! counts the GETs it serves per digest). A relay in front of moto (`FlakyS3`) answers 503 and
//! stalls now and then, a fault a healthy local server cannot produce.

mod common;
mod fleet_util;
mod proxy_util;

use common::S3Server;
use fleet_util::{assert_verify_clean, bucket_entries, cache_cmd, wait_committed, wait_log};
use object_store::ObjectStore;
use proxy_util::fault::*;
use proxy_util::{Proxy, skopeo_copy_via};
use regauth::proxy::store::object::{ObjectStoreBackend, StoreUrl};
use regauth::proxy::store::{Committed, ContentKind};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A proxy on `store` with the fault server as upstream `f`, the AWS environment in `env`.
fn member(fault: &str, store: &str, env: &[(&'static str, String)], extra: &[&str]) -> Proxy {
    let up = format!("f=http://{fault}");
    let mut args = vec!["--upstream", &up, "--store", store];
    args.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Proxy::start_env(&serde_json::json!({}), &args, &env)
}

/// The store's request counts from a member's /metrics, `op/outcome=n` (for the closing note).
fn store_requests(p: &Proxy) -> String {
    let (_, body) = proxy_util::curl(&["-s", &p.url("/metrics")]);
    body.lines()
        .filter(|l| l.starts_with("regauth_store_requests_total{"))
        .map(|l| {
            l.trim_start_matches("regauth_store_requests_total")
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A counter, 0 when its family has no series yet.
fn metric0(p: &Proxy, name: &str) -> u64 {
    let (_, body) = proxy_util::curl(&["-s", &p.url("/metrics")]);
    proxy_util::metric_in(&body, name).unwrap_or(0)
}

fn get_ok(env: &Env, p: &Proxy, path: &str, digest: &str) {
    let (status, cl, got, completed, hash) = env.rt.block_on(raw_get(&p.url(path)));
    assert_eq!(status, 200, "{path}:\n{}", p.log_text());
    assert!(completed, "{path} broke off:\n{}", p.log_text());
    assert_eq!(Some(got), cl, "{path}");
    assert_eq!(hash, digest, "{path}");
}

/// Member A pulls an image (skopeo) and a 20 MiB layer (multipart upload + conditional copy); member
/// B, started afterwards on the same bucket with an empty cache folder, serves both with no blob
/// bytes from upstream.
#[test]
fn a_second_member_on_the_same_bucket_pulls_nothing_upstream() {
    if !common::require_peers(&["skopeo", "curl"]) {
        return;
    }
    let s3 = S3Server::start("fleet");
    let store = s3.url("ci");
    let env = start(AuthMode::None);
    let img_dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(img_dir.path(), "latest");
    let blobs: Vec<String> = img
        .layer_digests
        .iter()
        .chain([&img.config_digest])
        .cloned()
        .collect();
    env.fault.add_image(&img);
    let big = env.fault.add_blob(random_bytes(20 << 20));

    let a = member(&env.fault_addr, &store, &s3.env(), &[]);
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/f", a.addr), "good/img:latest", dest.path());
    assert!(ok, "{out}\n{}", a.log_text());
    let t = Instant::now();
    get_ok(&env, &a, &format!("/v2/f/good/img/blobs/{big}"), &big);
    eprintln!(
        "A: 20 MiB cold pull incl. multipart upload: {:?}",
        t.elapsed()
    );
    eprintln!("A store requests: {}", store_requests(&a));
    let gets_after_a: Vec<usize> = blobs
        .iter()
        .chain([&big])
        .map(|d| env.fault.gets(d))
        .collect();
    assert!(gets_after_a.iter().all(|n| *n == 1), "{gets_after_a:?}");

    let all: Vec<&str> = blobs
        .iter()
        .chain([&big, &img.manifest_digest])
        .map(String::as_str)
        .collect();
    wait_committed(&store, &s3.env(), &all, || a.log_text());
    assert!(
        !a.cache_dir.join("blobs/sha256").join(&big[7..]).exists(),
        "without --cache-max-size there is no local tier"
    );

    let b = member(&env.fault_addr, &store, &s3.env(), &[]);
    let before = store_requests(&b);
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/f", b.addr), "good/img:latest", dest.path());
    assert!(ok, "{out}\n{}", b.log_text());
    get_ok(&env, &b, &format!("/v2/f/good/img/blobs/{big}"), &big);
    let gets_after_b: Vec<usize> = blobs
        .iter()
        .chain([&big])
        .map(|d| env.fault.gets(d))
        .collect();
    assert_eq!(
        gets_after_a, gets_after_b,
        "member B fetched blobs upstream"
    );
    assert_eq!(metric0(&b, "regauth_upstream_blob_fetches_total"), 0);
    assert_eq!(
        b.metric("regauth_cache_hits_total{kind=\"blob\"}"),
        blobs.len() as u64 + 1
    );
    eprintln!(
        "B: upstream received bytes {}; store requests before {before:?}, after: {}",
        metric0(&b, "regauth_upstream_received_bytes_total"),
        store_requests(&b)
    );
    let out = assert_verify_clean(&store, &s3.env());
    eprintln!("{out}");

    // A member with a local tier (--cache-max-size): a bucket hit is copied in behind the client,
    // and the next pull is served from local disk without a bucket GET.
    let c = member(
        &env.fault_addr,
        &store,
        &s3.env(),
        &["--cache-max-size", "100M"],
    );
    get_ok(&env, &c, &format!("/v2/f/good/img/blobs/{big}"), &big);
    let local = c.cache_dir.join("blobs/sha256").join(&big[7..]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !local.exists() {
        assert!(Instant::now() < deadline, "never filled:\n{}", c.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let gets = metric0(&c, "regauth_store_requests_total{op=\"get\"}");
    get_ok(&env, &c, &format!("/v2/f/good/img/blobs/{big}"), &big);
    assert_eq!(
        metric0(&c, "regauth_store_requests_total{op=\"get\"}"),
        gets,
        "served from the local tier"
    );
    assert_eq!(env.fault.gets(&big), 1);
}

/// 16 members commit the same verified blob at once, small (one conditional PUT) and large
/// (multipart, then a conditional copy): exactly one stores it, the others find it present, and
/// the object holds the right bytes.
#[test]
fn sixteen_racing_commits_of_one_digest_make_one_object() {
    // Serialized: moto's threads can interleave its check-then-write (see Moto::start_serial).
    let s3 = S3Server::start_serial("race");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let os: Arc<dyn ObjectStore> = fleet_util::bucket_client(&s3, "race");
    for (name, size) in [("small", 300_000usize), ("large", 17 << 20)] {
        let body = Arc::new(random_bytes(size));
        let hex = format!("{:x}", Sha256::digest(body.as_slice()));
        let results = rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..16 {
                let dir = dirs.path().join(format!("{name}{i}"));
                std::fs::create_dir_all(dir.join("tmp")).unwrap();
                let url = StoreUrl::parse("s3://race/p").unwrap();
                let m =
                    ObjectStoreBackend::with(os.clone(), url, &dir, false, Duration::from_secs(60));
                let (body, hex) = (body.clone(), hex.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = m.stage(ContentKind::Blob, &hex).await.unwrap();
                    s.write(&body).await.unwrap();
                    m.commit(s, None).await
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        let stored = results
            .iter()
            .filter(|r| matches!(r, Ok(Committed::Stored)))
            .count();
        let present = results
            .iter()
            .filter(|r| matches!(r, Ok(Committed::AlreadyPresent)))
            .count();
        assert_eq!((stored, present), (1, 15), "{name}: {results:?}");
        let key = object_store::path::Path::from(format!("p/blobs/sha256/{hex}"));
        let got = rt.block_on(async {
            use object_store::ObjectStoreExt;
            os.get(&key).await.unwrap().bytes().await.unwrap()
        });
        assert_eq!(
            format!("{:x}", Sha256::digest(&got)),
            hex,
            "{name}: object intact"
        );
    }
    // No upload left behind under uploads/.
    let env = s3.env();
    let (ok, out) = cache_cmd("s3://race/p", &env, &["verify"]);
    assert!(ok && out.contains(" 0 bad"), "{out}");
    let left: Vec<_> = rt.block_on(async {
        use futures_util::TryStreamExt;
        os.list(Some(&"p/uploads".into()))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
    assert!(left.is_empty(), "{left:?}");
}

/// A flipped byte from upstream: the client never completes the body and nothing reaches the bucket.
#[test]
fn a_flipped_byte_commits_nothing_to_the_bucket() {
    if !common::require_peers(&["curl"]) {
        return;
    }
    let s3 = S3Server::start("flip");
    let store = s3.url("");
    let env = start(AuthMode::None);
    let good = env.fault.add_blob(random_bytes(1 << 20));
    let bad = env.fault.add_blob(random_bytes(1 << 20));
    let a = member(&env.fault_addr, &store, &s3.env(), &[]);
    let (status, cl, got, completed, hash) = env
        .rt
        .block_on(raw_get(&a.url(&format!("/v2/f/flip/img/blobs/{bad}"))));
    assert!(
        !completed || status != 200 || Some(got) != cl,
        "a wrong body completed"
    );
    assert_ne!(hash, bad);
    get_ok(&env, &a, &format!("/v2/f/good/img/blobs/{good}"), &good);
    wait_committed(&store, &s3.env(), &[&good], || a.log_text());
    let in_bucket = bucket_entries(&store, &s3.env());
    assert_eq!(
        in_bucket
            .iter()
            .map(|(d, _)| d.as_str())
            .collect::<Vec<_>>(),
        vec![good.as_str()],
        "only the verified blob is in the bucket"
    );
    assert!(a.metric("regauth_verification_failures_total") >= 1);
    assert_verify_clean(&store, &s3.env());
}

/// The bucket answers 503 to every 4th request and stalls every 5th: pulls succeed (retries with
/// backoff). Then it answers 503 to everything: pulls still succeed — verified bytes stream
/// through, the commit fails after its retries and the blob just isn't kept.
#[test]
fn a_flaky_bucket_slows_commits_but_never_fails_a_pull() {
    if !common::require_peers(&["curl"]) {
        return;
    }
    let s3 = S3Server::start("flaky");
    let store = s3.url("x");
    let env = start(AuthMode::None);
    let (flaky, relay) = start_flaky_s3(&env.rt, &s3.moto.addr, 4, 5, Duration::from_millis(300));
    let relay_env = s3.env_for(&format!("http://{relay}"));
    let a = member(&env.fault_addr, &store, &relay_env, &[]);
    let mut digests = Vec::new();
    for size in [1 << 20, 200_000, 20 << 20, 3 << 20] {
        let d = env.fault.add_blob(random_bytes(size));
        get_ok(&env, &a, &format!("/v2/f/good/img/blobs/{d}"), &d);
        digests.push(d);
    }
    assert!(
        flaky.failed.load(Ordering::SeqCst) > 0,
        "the relay failed nothing"
    );
    eprintln!(
        "relay: {} requests, {} answered 503; store requests: {}",
        flaky.requests.load(Ordering::SeqCst),
        flaky.failed.load(Ordering::SeqCst),
        store_requests(&a)
    );
    // Every blob was committed despite the 503s.
    let all: Vec<&str> = digests.iter().map(String::as_str).collect();
    wait_committed(&store, &s3.env(), &all, || a.log_text());
    drop(a);

    let (_down, dead) = start_flaky_s3(&env.rt, &s3.moto.addr, 1, 0, Duration::ZERO);
    let b = member(
        &env.fault_addr,
        &store,
        &s3.env_for(&format!("http://{dead}")),
        &[],
    );
    let d = env.fault.add_blob(random_bytes(2 << 20));
    get_ok(&env, &b, &format!("/v2/f/good/img/blobs/{d}"), &d);
    wait_log(&b, "commit failed");
    assert!(b.metric("regauth_store_requests_total{outcome=\"error\"}") > 0);
    assert_verify_clean(&store, &s3.env());
}

/// Two members with a 3 MiB bound on the bucket: one holds the sweeper lease and sweeps, the other
/// never does, and the bucket comes down to the bound.
#[test]
fn one_elected_sweeper_keeps_the_bucket_bounded() {
    if !common::require_peers(&["curl"]) {
        return;
    }
    let s3 = S3Server::start("bounded");
    let store = s3.url("b");
    let env = start(AuthMode::None);
    let extra = ["--store-max-size", "3M", "--store-sweep-interval", "2"];
    let a = member(&env.fault_addr, &store, &s3.env(), &extra);
    let b = member(&env.fault_addr, &store, &s3.env(), &extra);
    for i in 0..6 {
        let d = env.fault.add_blob(random_bytes(1 << 20));
        let p = if i % 2 == 0 { &a } else { &b };
        get_ok(&env, p, &format!("/v2/f/good/img/blobs/{d}"), &d);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let total = loop {
        let total: u64 = bucket_entries(&store, &s3.env())
            .iter()
            .map(|(_, n)| n)
            .sum();
        if total <= 3 << 20 {
            break total;
        }
        assert!(
            Instant::now() < deadline,
            "bucket still holds {total} bytes:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (sa, sb) = (
        a.metric("regauth_store_sweeps_total"),
        b.metric("regauth_store_sweeps_total"),
    );
    assert!(
        (sa > 0) != (sb > 0),
        "exactly one member sweeps: a={sa} b={sb}"
    );
    assert!(a.metric("regauth_cache_evicted_total") + b.metric("regauth_cache_evicted_total") >= 3);
    eprintln!("bucket {total} bytes; sweeps a={sa} b={sb}");
    assert_verify_clean(&store, &s3.env());
}
