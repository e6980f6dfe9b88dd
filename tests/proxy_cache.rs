//! The proxy cache's bounds against real peers (CNCF registry, skopeo, curl): the live size bound
//! (`--cache-max-size`, LRU eviction while serving) and confirmations that expire
//! (`--confirm-ttl`), so access revoked upstream stops being served from the cache.

mod common;
mod proxy_util;

use proxy_util::{Proxy, curl_get, skopeo_copy_via};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn peers() -> bool {
    common::require_peers(&["docker-registry", "skopeo", "htpasswd", "curl"])
}

/// Bytes of every file under `dir` (blobs, manifests, tags, confirmations, staging).
fn folder_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn random_bytes(n: u64) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut v = vec![0u8; n as usize];
    std::io::Read::read_exact(&mut f, &mut v).unwrap();
    v
}

/// An OCI layout in `dir` with one image tagged `tag`: a config and one uncompressed layer of
/// `layer_size` random bytes (gzipped: it stays about that size). Returns (manifest digest, layer digest).
fn random_image(dir: &Path, tag: &str, layer_size: u64) -> (String, String) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = common::sha256_digest(bytes);
        std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
        d
    };
    let raw = random_bytes(layer_size);
    let diff_id = common::sha256_digest(&raw);
    let raw_path = dir.join("layer.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let layer = common::run_checked(
        Command::new("gzip").args(["-1", "-n", "-c"]).arg(&raw_path),
        "gzip (random layer)",
    )
    .stdout;
    std::fs::remove_file(&raw_path).unwrap();
    let layer_digest = put(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": common::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": common::OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (manifest_digest, layer_digest)
}

fn skopeo_push(layout: &Path, tag: &str, reg: &common::Registry, repo_tag: &str) {
    common::run_checked(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .arg("--dest-no-creds")
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", reg.addr)),
        &format!("push {repo_tag}"),
    );
}

/// Issue 12's must-show: with `--cache-max-size 100M`, three different 64 MiB images pulled one
/// after another all succeed, the cache folder (sampled during the pulls) never exceeds the bound
/// by more than the one blob in flight, and `cache verify` is clean afterwards.
#[test]
fn a_100m_bound_holds_while_three_64mib_images_are_pulled() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let layer_size = 64 * MIB;
    let mut images = Vec::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, layer) = random_image(dir.path(), "v1", layer_size);
        skopeo_push(dir.path(), "v1", &reg, &format!("test/big{i}:v1"));
        images.push((format!("test/big{i}:v1"), manifest, layer));
    }
    let bound = 100 * MIB;
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--upstream",
            &format!("local={}", reg.url()),
            "--cache-max-size",
            "100M",
        ],
    );
    // Sample the folder size while the pulls run.
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_seen, dir) = (stop.clone(), max_seen.clone(), proxy.cache_dir.clone());
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::SeqCst) {
                max_seen.fetch_max(folder_size(&dir), Ordering::SeqCst);
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let mirror = format!("{}/local", proxy.addr);
    for (repo_tag, _, layer) in &images {
        let dest = tempfile::tempdir().unwrap();
        let (ok, out) = skopeo_copy_via(&mirror, repo_tag, dest.path());
        assert!(ok, "pull {repo_tag}:\n{out}\n{}", proxy.log_text());
        let lp = dest.path().join("blobs/sha256").join(&layer[7..]);
        let listing: Vec<_> = std::fs::read_dir(dest.path().join("blobs/sha256"))
            .unwrap()
            .flatten()
            .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
            .collect();
        let got = std::fs::read(&lp).unwrap_or_else(|e| panic!("{e}: {layer} not in {listing:?}"));
        assert_eq!(common::sha256_digest(&got), *layer);
    }
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    let max = max_seen.load(Ordering::SeqCst);
    let end = folder_size(&proxy.cache_dir);
    // Manifests, configs, tags and confirmations are a few KiB; one blob may be in flight.
    let slack = MIB;
    eprintln!("cache bound {bound} B; max seen {max} B over {samples} samples; at the end {end} B");
    assert!(
        max <= bound + layer_size + slack,
        "cache folder reached {max} B with a {bound} B bound"
    );
    assert!(
        end <= bound + slack,
        "{end} B kept with a {bound} B bound\n{}",
        proxy.log_text()
    );
    // The least recently used image went; the last one pulled is cached.
    let blob = |d: &str| proxy.cache_dir.join("blobs/sha256").join(&d[7..]);
    assert!(!blob(&images[0].2).exists(), "oldest layer evicted");
    assert!(blob(&images[2].2).exists(), "newest layer cached");
    let (ok, out) = proxy.cache_verify();
    assert!(ok && out.contains(" 0 bad"), "{out}");
    // A pull of the evicted image still works (fetched again, within the bound).
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&mirror, &images[0].0, dest.path());
    assert!(ok, "pull after eviction:\n{out}");
    assert!(folder_size(&proxy.cache_dir) <= bound + slack);
}

/// Issue 10 finding 15: a confirmation expires after `--authz-ttl` (issue 11; `--confirm-ttl`
/// before it), so a user removed upstream
/// (htpasswd edited, registry restarted) no longer gets the cached digest via that repository.
#[test]
fn revocation_upstream_applies_after_the_confirmation_ttl() {
    if !peers() {
        return;
    }
    let mut reg = common::Registry::start_htpasswd("alice", "s3cret");
    let img = common::pushed_image(&reg, "test/busybox:latest", Some("confirm-ttl"));
    let proxy = Proxy::for_registry(&reg, "local", &["--authz-ttl", "1"]);
    let layer = &img.layer_digests[0];
    let url = proxy.url(&format!("/v2/local/test/busybox/blobs/{layer}"));
    let murl = proxy.url(&format!(
        "/v2/local/test/busybox/manifests/{}",
        img.manifest_digest
    ));
    let (status, _, body) = curl_get(&url, &[]);
    assert_eq!(status, 200, "{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), *layer);
    let accept = ["-H", "Accept: application/vnd.oci.image.manifest.v1+json"];
    let (status, h, b) = curl_get(&murl, &accept);
    assert_eq!(
        status,
        200,
        "{h}{}\n{}",
        String::from_utf8_lossy(&b),
        proxy.log_text()
    );
    let blob_gets = reg.request_count(&format!("GET /v2/test/busybox/blobs/{layer}"));
    // Past the TTL, with access still granted: served from the cache after a new HEAD.
    std::thread::sleep(Duration::from_millis(2100));
    let heads = reg.request_count(&format!("HEAD /v2/test/busybox/blobs/{layer}"));
    let (status, _, body) = curl_get(&url, &[]);
    assert_eq!(status, 200, "{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), *layer);
    assert!(
        reg.request_count(&format!("HEAD /v2/test/busybox/blobs/{layer}")) > heads,
        "an expired confirmation is asked again"
    );
    assert_eq!(
        reg.request_count(&format!("GET /v2/test/busybox/blobs/{layer}")),
        blob_gets,
        "still served from the cache"
    );
    // Revoke: alice is removed upstream.
    let out = common::run_checked(
        Command::new("htpasswd").args(["-Bbn", "bob", "other"]),
        "htpasswd -Bbn",
    );
    std::fs::write(reg.dir.join("htpasswd"), &out.stdout).unwrap();
    reg.restart();
    std::thread::sleep(Duration::from_millis(2100));
    let (status, headers, body) = curl_get(&url, &[]);
    assert_ne!(status, 200, "revoked blob served:\n{headers}");
    assert_ne!(common::sha256_digest(&body), *layer);
    let (status, headers, _) = curl_get(&murl, &accept);
    assert_ne!(status, 200, "revoked manifest served:\n{headers}");
    assert!(
        proxy
            .cache_dir
            .join("blobs/sha256")
            .join(&layer[7..])
            .exists(),
        "the content stays cached; only this repository's confirmation went"
    );
}

/// The low-disk guard: with less free space than `--cache-min-free` (here more than any disk has),
/// pulls keep working — streamed and verified — and nothing new is kept.
#[test]
fn below_cache_min_free_pulls_still_work_and_nothing_is_kept() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let img = common::pushed_image(&reg, "test/busybox:latest", Some("low-disk"));
    let proxy = Proxy::for_registry(&reg, "local", &["--cache-min-free", "1000000T"]);
    let mirror = format!("{}/local", proxy.addr);
    for round in 0..2 {
        let dest = tempfile::tempdir().unwrap();
        let (ok, out) = skopeo_copy_via(&mirror, "test/busybox:latest", dest.path());
        assert!(
            ok,
            "pull {round} with a low disk:\n{out}\n{}",
            proxy.log_text()
        );
        let layer = &img.layer_digests[0];
        let got = std::fs::read(dest.path().join("blobs/sha256").join(&layer[7..])).unwrap();
        assert_eq!(common::sha256_digest(&got), *layer);
    }
    // Removal follows the last reader off the async workers: give it a moment.
    let blobs = proxy.cache_dir.join("blobs/sha256");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = std::fs::read_dir(&blobs).unwrap().count();
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left, 0, "nothing kept below --cache-min-free");
    assert!(
        proxy.log_text().contains("low on disk space"),
        "{}",
        proxy.log_text()
    );
    // The layer was downloaded twice: not cached between the pulls.
    let layer = &img.layer_digests[0];
    assert_eq!(
        reg.request_count(&format!("GET /v2/test/busybox/blobs/{layer}")),
        2
    );
}
