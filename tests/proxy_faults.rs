//! Faults a real registry cannot produce, from a small upstream written here (hyper): flipped
//! byte, truncated body, wrong `Docker-Content-Digest`, reset mid-blob, 429 + Retry-After, slow
//! blobs (coalescing), a redirect to another host (Authorization must not follow), a token realm on
//! another host (credentials must not be sent), and `kill -9` of the proxy mid-download.
//! Clients: curl, skopeo, and a raw hyper client that counts received bytes.

mod common;
mod proxy_util;

use bytes::Bytes;
use proxy_util::fault::*;
use proxy_util::{Proxy, auths_config, curl_get, skopeo_copy_via};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    let proxy = env.proxy(&[]);

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

/// A cold `Range` follows the download instead of waiting for the whole blob: with the upstream
/// stalled halfway, the first MiB arrives complete (206, right bytes), and a `HEAD` answers the
/// length from the running download without asking the upstream. A range that includes the last
/// byte gets everything up to it, then waits: it completes only after the digest verified — and
/// with a flipped byte it never completes.
#[test]
fn cold_ranges_follow_the_download_and_the_last_byte_waits_for_verification() {
    let env = start(AuthMode::None);
    let len: usize = 4 << 20;
    let data = random_bytes(len);
    let digest = env.fault.add_blob(data.clone());
    let proxy = env.proxy(&[]);
    let url = proxy.url(&format!("/v2/f/stall/img/blobs/{digest}"));
    let mib = 1usize << 20;

    // The whole-blob reader starts the download; it stalls at len / 2.
    let (whole, whole_task) = streaming_get(&env, &url);
    wait_received(&whole, (len / 2) as u64, &proxy);
    let first = streaming_range_get(&env, &url, Some(&format!("bytes=0-{}", mib - 1))).1;
    let (status, cl, got, completed, hash) = finish(
        &env,
        first,
        "a range of staged bytes (upstream stalled)",
        &proxy,
    );
    assert_eq!((status, cl, got), (206, Some(mib as u64), mib as u64));
    assert!(completed, "the staged range ended with an error");
    assert_eq!(hash, common::sha256_digest(&data[..mib]));

    let upstream_before = proxy.metric("regauth_upstream_requests_total");
    let (hs, headers, _) = curl_get(&url, &["-I"]);
    assert_eq!(hs, 200, "{headers}");
    let h = headers.to_ascii_lowercase();
    assert!(h.contains(&format!("content-length: {len}")), "{headers}");
    assert!(h.contains("accept-ranges: bytes"), "{headers}");
    assert_eq!(
        proxy.metric("regauth_upstream_requests_total"),
        upstream_before,
        "a HEAD during the download asked the upstream"
    );

    // From 1 MiB to the end: the staged part arrives, the rest waits for the upstream.
    let (tail, tail_task) = streaming_range_get(&env, &url, Some(&format!("bytes={mib}-")));
    wait_received(&tail, (len / 2 - mib) as u64, &proxy);
    assert!(!tail_task.is_finished() && !whole_task.is_finished());
    env.fault.release_last_byte();
    let (status, cl, got, completed, hash) = finish(&env, tail_task, "the tail range", &proxy);
    assert_eq!(
        (status, cl, got),
        (206, Some((len - mib) as u64), (len - mib) as u64)
    );
    assert!(completed);
    assert_eq!(hash, common::sha256_digest(&data[mib..]));
    let (status, _, got, completed, hash) = finish(&env, whole_task, "the whole blob", &proxy);
    assert_eq!((status, got, completed), (200, len as u64, true));
    assert_eq!(hash, digest);
    assert_eq!(
        env.fault.gets(&digest),
        1,
        "the ranges made their own downloads"
    );

    // The last 4 KiB of a blob whose last byte the upstream holds: 4095 bytes, then a wait
    // (the upstream has sent nothing the proxy may still release) until verification.
    let held = env.fault.add_blob(random_bytes(len));
    let held_url = proxy.url(&format!("/v2/f/hold/img/blobs/{held}"));
    let (rx, task) = streaming_range_get(&env, &held_url, Some("bytes=-4096"));
    wait_received(&rx, 4095, &proxy);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rx.load(Ordering::SeqCst),
        4095,
        "the last byte went out unverified"
    );
    assert!(!task.is_finished());
    env.fault.release_last_byte();
    let (status, cl, got, completed, _) = finish(&env, task, "the held suffix range", &proxy);
    assert_eq!((status, cl, got, completed), (206, Some(4096), 4096, true));

    // A flipped byte: the range that includes the end never completes with wrong bytes.
    let bad = env.fault.add_blob(random_bytes(len));
    let bad_url = proxy.url(&format!("/v2/f/holdflip/img/blobs/{bad}"));
    let (rx, task) = streaming_range_get(&env, &bad_url, Some(&format!("bytes={}-", len - mib)));
    wait_received(&rx, (mib - 1) as u64, &proxy);
    env.fault.release_last_byte();
    let (status, cl, got, completed, _) = finish(&env, task, "the corrupt tail range", &proxy);
    assert_eq!((status, cl), (206, Some(mib as u64)));
    assert_eq!(
        got,
        (mib - 1) as u64,
        "the last byte of a corrupt blob went out"
    );
    assert!(!completed, "a corrupt range must end with an error");
    assert!(proxy.metric("regauth_verification_failures_total") >= 1);
    let (ok, out) = proxy.cache_verify();
    assert!(ok, "{out}");
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
    let proxy = env.proxy(&[]);
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
    env.fault.add_image(&img);
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
    let proxy = env.proxy(&[]);
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
    let mut proxy = env.proxy(&[]);
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
    env.fault.add_manifest("latest", &img);
    let big = env.fault.add_blob(random_bytes(3 << 20));
    let proxy = env.proxy(&["--tag-ttl", "0"]);
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
    env.fault.add_manifest("latest", &img);
    let proxy = env.proxy(&["--tag-ttl", "0"]);
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
    let proxy = env.proxy(&["--upstream", &format!("good={}", reg.url())]);
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
