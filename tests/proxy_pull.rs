//! `regauth proxy` against real registries (CNCF distribution: anonymous, htpasswd, token auth) and
//! skopeo as the client: routing, verification, cache, stale-if-error, client auth, policy,
//! cross-repository isolation, push refusal.

mod common;
mod proxy_util;

use proxy_util::{Proxy, auths_config, curl, curl_code, curl_get, skopeo_copy_via};
use std::process::Command;

const MANIFEST_ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json";

fn peers() -> bool {
    common::require_peers(&["docker-registry", "skopeo", "htpasswd", "curl"])
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn anonymous_pull_through_verifies_caches_and_serves_stale() {
    if !peers() {
        return;
    }
    let mut reg = common::Registry::start_anonymous();
    let img = common::pushed_image(&reg, "test/busybox:latest", None);
    let proxy = Proxy::for_registry(&reg, "local", &["--tag-ttl", "0"]);

    // /v2/ ping.
    let (status, headers, _) = curl_get(&proxy.url("/v2/"), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // skopeo through the proxy, alias path-prefix routing.
    let mirror = format!("{}/local", proxy.addr);
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&mirror, "test/busybox:latest", dest.path());
    assert!(
        ok,
        "skopeo copy through proxy failed:\n{out}\nproxy log:\n{}",
        proxy.log_text()
    );
    for d in img
        .layer_digests
        .iter()
        .chain([&img.config_digest, &img.manifest_digest])
    {
        let hex = &d["sha256:".len()..];
        let got = std::fs::read(dest.path().join("blobs/sha256").join(hex))
            .unwrap_or_else(|_| panic!("{d} missing in the copied layout"));
        assert_eq!(common::sha256_digest(&got), *d);
    }
    assert_eq!(
        proxy.metric("regauth_upstream_blob_fetches_total"),
        2,
        "config + layer"
    );

    // ns routing: manifest by tag, digest header, OCI-Namespace echo.
    let (status, headers, body) = curl_get(
        &proxy.url(&format!(
            "/v2/test/busybox/manifests/latest?ns={}",
            reg.addr
        )),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(status, 200, "{headers}");
    assert_eq!(
        header(&headers, "docker-content-digest"),
        Some(img.manifest_digest.as_str())
    );
    assert_eq!(header(&headers, "oci-namespace"), Some(reg.addr.as_str()));
    assert_eq!(header(&headers, "content-type"), Some(common::OCI_MANIFEST));
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);

    // Range from the cache.
    let layer = &img.layer_digests[0];
    let (status, headers, body) = curl_get(
        &proxy.url(&format!("/v2/local/test/busybox/blobs/{layer}")),
        &["-H", "Range: bytes=10-19"],
    );
    assert_eq!(status, 206, "{headers}");
    let full = img.blob(layer);
    assert_eq!(body, full[10..20].to_vec());
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 10-19/{}", full.len()).as_str())
    );
    // HEAD on a blob.
    let (status, headers, _) = curl_get(
        &proxy.url(&format!("/v2/local/test/busybox/blobs/{layer}")),
        &["-I"],
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-length"),
        Some(full.len().to_string().as_str())
    );

    // Push is refused with the spec error.
    let (status, _, body) = curl_get(
        &proxy.url("/v2/local/test/busybox/blobs/uploads/"),
        &["-X", "POST"],
    );
    assert_eq!(status, 405);
    assert!(String::from_utf8_lossy(&body).contains("UNSUPPORTED"));

    // Second pull: blobs from cache, no new upstream blob download.
    let dest2 = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&mirror, "test/busybox:latest", dest2.path());
    assert!(ok, "{out}");
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), 2);
    assert!(proxy.metric("regauth_cache_hits_total{kind=\"blob\"}") >= 2);

    // Upstream down: the tag is served stale from the cache and the pull still works.
    reg.stop();
    let dest3 = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&mirror, "test/busybox:latest", dest3.path());
    assert!(
        ok,
        "pull with upstream stopped failed:\n{out}\n{}",
        proxy.log_text()
    );
    assert!(proxy.metric("regauth_stale_served_total") >= 1);

    let (ok, out) = proxy.cache_verify();
    assert!(ok, "{out}");
    assert!(out.contains(" 0 bad"), "{out}");
    assert!(!proxy.log_text().contains("verification failed"));
}

#[test]
fn htpasswd_upstream_and_client_auth() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_htpasswd("alice", "s3cret");
    let img = common::pushed_image(&reg, "team/app:1.0", None);

    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&htpasswd)
        .args(["ci", "runner-pw"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let proxy = Proxy::for_registry(&reg, "myreg", &["--htpasswd", htpasswd.to_str().unwrap()]);
    let url = proxy.url("/v2/myreg/team/app/manifests/1.0");
    let (status, headers, _) = curl_get(&url, &["-H", MANIFEST_ACCEPT]);
    assert_eq!(status, 401, "no client credentials");
    assert!(header(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Basic")));
    let (status, _, _) = curl_get(&url, &["-u", "ci:wrong", "-H", MANIFEST_ACCEPT]);
    assert_eq!(status, 401);
    let (status, headers, body) = curl_get(&url, &["-u", "ci:runner-pw", "-H", MANIFEST_ACCEPT]);
    assert_eq!(status, 200, "{headers}\n{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    let layer = &img.layer_digests[0];
    let (status, _, body) = curl_get(
        &proxy.url(&format!("/v2/myreg/team/app/blobs/{layer}")),
        &["-u", "ci:runner-pw"],
    );
    assert_eq!(status, 200);
    assert_eq!(common::sha256_digest(&body), *layer);
    assert!(proxy.metric("regauth_client_unauthorized_total") >= 2);
    assert!(
        !proxy.log_text().contains("s3cret"),
        "upstream secret in the log"
    );
    assert!(
        !proxy.log_text().contains("runner-pw"),
        "client secret in the log"
    );
}

#[test]
fn token_upstream_private_repo_and_cross_repo_isolation() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_token_private("alice", "s3cret");
    let img = common::pushed_image(&reg, "team/a:latest", None);
    let proxy = Proxy::for_registry(&reg, "tok", &[]);

    // Host-prefix routing (the host matches the alias's authority, so its http scheme is used).
    // (skopeo refuses a host:port as a path component, so the host form is exercised with curl below.)
    let mirror = format!("{}/tok", proxy.addr);
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&mirror, "team/a:latest", dest.path());
    assert!(ok, "{out}\n{}", proxy.log_text());
    assert!(
        reg.token_request_count("user=alice") >= 1,
        "the proxy fetched tokens with the resolved credentials"
    );
    let (status, headers, body) = curl_get(
        &proxy.url(&format!("/v2/{}/team/a/manifests/latest", reg.addr)),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(status, 200, "{headers}");
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);

    // The layer is cached via team/a; team/b does not have it upstream → not served.
    let layer = &img.layer_digests[0];
    let b_url = proxy.url(&format!("/v2/tok/team/b/blobs/{layer}"));
    let (status, _, body) = curl_get(&b_url, &[]);
    assert_eq!(
        status,
        404,
        "cached blob leaked to another repository: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("BLOB_UNKNOWN"));
    // Once the upstream has it in team/b, the cached copy is served (no new download).
    common::push_image(&img, &reg, "team/b:latest", reg.creds());
    let fetches = proxy.metric("regauth_upstream_blob_fetches_total");
    let (status, _, body) = curl_get(&b_url, &[]);
    assert_eq!(status, 200);
    assert_eq!(common::sha256_digest(&body), *layer);
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), fetches);
}

#[test]
fn policy_pins_and_digest_only() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let img = common::pushed_image(&reg, "test/pinned:latest", None);
    common::push_image(&img, &reg, "test/free:latest", None);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let wrong = format!("sha256:{}", "0".repeat(64));
    std::fs::write(
        &policy,
        serde_json::json!({
            "pins": {"local/test/pinned:latest": wrong, "local/test/free:latest": img.manifest_digest},
            "digest_only": ["strict"],
        })
        .to_string(),
    )
    .unwrap();
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--upstream",
            &format!("local={}", reg.url()),
            "--upstream",
            &format!("strict={}", reg.url()),
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    let (status, _, body) = curl_get(
        &proxy.url("/v2/local/test/pinned/manifests/latest"),
        &["-H", MANIFEST_ACCEPT],
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("DENIED") && body.contains(&wrong) && body.contains(&img.manifest_digest),
        "{body}"
    );
    let (status, _, _) = curl_get(
        &proxy.url("/v2/local/test/free/manifests/latest"),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(status, 200);
    let (status, _, body) = curl_get(
        &proxy.url("/v2/strict/test/free/manifests/latest"),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = curl_get(
        &proxy.url(&format!(
            "/v2/strict/test/free/manifests/{}",
            img.manifest_digest
        )),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(status, 200, "digest references pass");
    assert_eq!(proxy.metric("regauth_policy_denied_total"), 2);
}

#[test]
fn refuses_open_listen_without_client_auth() {
    let port = common::free_port();
    let out = Command::new(common::bin("regauth"))
        .args(["proxy", "--listen", &format!("0.0.0.0:{port}")])
        .arg("--cache-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--htpasswd") && err.contains("--allow-anonymous"),
        "{err}"
    );
    let code = curl_code(&format!("http://127.0.0.1:{port}/healthz"), &[]);
    assert_eq!(code, "000", "nothing listens");
}

#[test]
fn identity_token_uses_the_oauth2_refresh_token_grant() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_token_private("alice", "s3cret");
    let img = common::pushed_image(&reg, "team/app:1", None);
    // What `docker login` stores for an OAuth2 registry: an identity (refresh) token.
    let realm = reg.token_realm.clone().unwrap();
    let (_, body) = curl(&[
        "-s",
        "-u",
        "alice:s3cret",
        &format!(
            "{realm}?service={}&offline_token=true",
            common::TOKEN_SERVICE
        ),
    ]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let refresh = v["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let config = serde_json::json!({"auths": {reg.addr.clone(): {"identitytoken": refresh}}});
    let proxy = Proxy::start(&config, &["--upstream", &format!("r={}", reg.url())]);
    let (status, _, body) = curl_get(
        &proxy.url("/v2/r/team/app/manifests/1"),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(status, 200, "{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    assert!(
        reg.token_request_count("POST status=200 user=alice") >= 1,
        "refresh_token grant used; token log:\n{}",
        std::fs::read_to_string(reg.token_log.as_ref().unwrap()).unwrap_or_default()
    );
}

/// An https upstream (the harness's TLS registry, its own test CA): the proxy trusts it only with
/// `--upstream-ca`; without, the TLS handshake fails and nothing is served.
#[test]
fn https_upstream_is_trusted_with_upstream_ca_only() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_tls(common::RegistryAuth::Htpasswd {
        user: "alice".into(),
        pass: "s3cret".into(),
    });
    let img = common::pushed_image(&reg, "team/tls:1", Some("https upstream"));
    assert!(reg.url().starts_with("https://"), "{}", reg.url());
    let ca = reg.ca_cert.as_ref().unwrap().to_str().unwrap().to_owned();

    let untrusting = Proxy::for_registry(&reg, "tls", &[]);
    let (status, _, body) = curl_get(
        &untrusting.url("/v2/tls/team/tls/manifests/1"),
        &["-H", MANIFEST_ACCEPT],
    );
    assert!(
        status >= 500,
        "an upstream signed by an unknown CA was trusted ({status}): {}",
        String::from_utf8_lossy(&body)
    );

    let proxy = Proxy::for_registry(&reg, "tls", &["--upstream-ca", &ca]);
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/tls", proxy.addr), "team/tls:1", dest.path());
    assert!(ok, "{out}\n{}", proxy.log_text());
    for d in img.layer_digests.iter().chain([&img.config_digest]) {
        let got = std::fs::read(dest.path().join("blobs/sha256").join(&d["sha256:".len()..]))
            .unwrap_or_else(|_| panic!("{d} missing in the copied layout"));
        assert_eq!(common::sha256_digest(&got), *d);
    }
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), 2);
    assert!(
        reg.request_count("GET /v2/team/tls/blobs/") >= 2,
        "blobs came from the TLS registry"
    );
    assert!(!proxy.log_text().contains("s3cret"));
}

/// `--tag-ttl`: within the TTL a tag is answered from the cache without asking the upstream; with TTL 0
/// every read revalidates with a HEAD, which costs no GET while the digest is unchanged and picks up a
/// re-pushed tag at once.
#[test]
fn tag_ttl_and_head_revalidation() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let dir_a = tempfile::tempdir().unwrap();
    let a = common::busybox_image_unique(dir_a.path(), "latest", "ttl image A");
    let dir_b = tempfile::tempdir().unwrap();
    let b = common::busybox_image_unique(dir_b.path(), "latest", "ttl image B");
    common::push_image(&a, &reg, "ttl/app:latest", None);
    let long = Proxy::for_registry(&reg, "r", &["--tag-ttl", "3600"]);
    let zero = Proxy::for_registry(&reg, "r", &["--tag-ttl", "0"]);
    let get = |p: &Proxy| {
        let (status, headers, body) = curl_get(
            &p.url("/v2/r/ttl/app/manifests/latest"),
            &["-H", MANIFEST_ACCEPT],
        );
        assert_eq!(status, 200, "{headers}\n{}", p.log_text());
        common::sha256_digest(&body)
    };
    const GET_TAG: &str = "\"GET /v2/ttl/app/manifests/latest";
    const HEAD_TAG: &str = "\"HEAD /v2/ttl/app/manifests/latest";
    assert_eq!(get(&long), a.manifest_digest);
    assert_eq!(get(&zero), a.manifest_digest);
    let (gets, heads) = (reg.request_count(GET_TAG), reg.request_count(HEAD_TAG));
    assert!(gets >= 2, "each proxy fetched the tag once ({gets})");

    // Unchanged tag: the TTL-0 proxy asks with HEAD only; the long-TTL proxy does not ask at all.
    assert_eq!(get(&zero), a.manifest_digest);
    assert_eq!(get(&long), a.manifest_digest);
    assert_eq!(
        reg.request_count(GET_TAG),
        gets,
        "no GET for an unchanged tag"
    );
    assert_eq!(
        reg.request_count(HEAD_TAG),
        heads + 1,
        "one HEAD: the TTL-0 proxy's"
    );
    assert!(zero.metric("regauth_cache_hits_total{kind=\"manifest\"}") >= 1);

    // The tag moves upstream: TTL 0 sees it on the next read, the long TTL keeps the cached answer.
    common::push_image(&b, &reg, "ttl/app:latest", None);
    let heads = reg.request_count(HEAD_TAG);
    assert_eq!(get(&zero), b.manifest_digest);
    assert_eq!(
        get(&long),
        a.manifest_digest,
        "within the TTL the tag is not re-asked"
    );
    assert_eq!(reg.request_count(HEAD_TAG), heads + 1);
}

/// An OCI image index (two platforms) through the proxy: the index by tag with its media type and
/// digest, each platform manifest by digest, and skopeo's default pull (linux/amd64) resolving through it.
#[test]
fn oci_image_index_through_the_proxy() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let dir = tempfile::tempdir().unwrap();
    let amd = common::busybox_image_unique(dir.path(), "amd64", "index amd64");
    let arm = common::busybox_image_unique(dir.path(), "arm64", "index arm64");
    let index = common::add_oci_index(
        dir.path(),
        "multi",
        &[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")],
    );
    common::push_index(dir.path(), "multi", &reg, "multi/app:1");
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &format!("r={}", reg.url())],
    );
    let accept = format!("Accept: {}, {}", common::OCI_INDEX, common::OCI_MANIFEST);
    let (status, headers, body) =
        curl_get(&proxy.url("/v2/r/multi/app/manifests/1"), &["-H", &accept]);
    assert_eq!(status, 200, "{headers}\n{}", proxy.log_text());
    assert_eq!(header(&headers, "content-type"), Some(common::OCI_INDEX));
    assert_eq!(
        header(&headers, "docker-content-digest"),
        Some(index.as_str())
    );
    assert_eq!(common::sha256_digest(&body), index);
    for img in [&amd, &arm] {
        let (status, headers, body) = curl_get(
            &proxy.url(&format!(
                "/v2/r/multi/app/manifests/{}",
                img.manifest_digest
            )),
            &["-H", &accept],
        );
        assert_eq!(status, 200, "{headers}");
        assert_eq!(header(&headers, "content-type"), Some(common::OCI_MANIFEST));
        assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    }
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/r", proxy.addr), "multi/app:1", dest.path());
    assert!(ok, "{out}\n{}", proxy.log_text());
    let layer = &amd.layer_digests[0];
    assert!(
        dest.path()
            .join("blobs/sha256")
            .join(&layer["sha256:".len()..])
            .is_file(),
        "the amd64 layer was pulled through the index"
    );
    assert!(
        !dest
            .path()
            .join("blobs/sha256")
            .join(&arm.layer_digests[0]["sha256:".len()..])
            .exists(),
        "only the matching platform"
    );
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 0);
}

/// A tag that is deleted upstream (404) or whose credentials stop working (401) is passed on to the
/// client on revalidation: never served stale from the cache (stale is for outages and 429 only).
#[test]
fn upstream_404_and_401_are_passed_on_not_served_stale() {
    if !peers() {
        return;
    }
    // 404: the manifest is deleted upstream.
    let reg = common::Registry::start_anonymous();
    let img = common::pushed_image(&reg, "gone/app:latest", Some("deleted upstream"));
    let proxy = Proxy::for_registry(&reg, "r", &["--tag-ttl", "0"]);
    let url = proxy.url("/v2/r/gone/app/manifests/latest");
    let (status, _, _) = curl_get(&url, &["-H", MANIFEST_ACCEPT]);
    assert_eq!(status, 200);
    let manifest = format!(
        "{}/v2/gone/app/manifests/{}",
        reg.url(),
        img.manifest_digest
    );
    let code = curl_code(&manifest, &["-X", "DELETE"]);
    assert_eq!(code, "202", "registry deleted the manifest");
    let (status, headers, body) = curl_get(&url, &["-H", MANIFEST_ACCEPT]);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{headers}{body}\n{}", proxy.log_text());
    assert!(body.contains("MANIFEST_UNKNOWN"), "{body}");
    assert_eq!(proxy.metric("regauth_stale_served_total"), 0);

    // 401: the password changes upstream.
    let mut reg = common::Registry::start_htpasswd("alice", "s3cret");
    common::push_image(&img, &reg, "locked/app:latest", reg.creds());
    let proxy = Proxy::for_registry(&reg, "r", &["--tag-ttl", "0"]);
    let url = proxy.url("/v2/r/locked/app/manifests/latest");
    let (status, _, _) = curl_get(&url, &["-H", MANIFEST_ACCEPT]);
    assert_eq!(status, 200, "{}", proxy.log_text());
    let out = common::run_checked(
        Command::new("htpasswd").args(["-Bbn", "alice", "changed"]),
        "htpasswd -Bbn",
    );
    std::fs::write(reg.dir.join("htpasswd"), &out.stdout).unwrap();
    reg.restart();
    let (status, headers, body) = curl_get(&url, &["-H", MANIFEST_ACCEPT]);
    assert_eq!(
        status,
        401,
        "{headers}{}\n{}",
        String::from_utf8_lossy(&body),
        proxy.log_text()
    );
    assert_ne!(common::sha256_digest(&body), img.manifest_digest);
    assert_eq!(proxy.metric("regauth_stale_served_total"), 0);
}

/// A token server may answer with only `token` or only `access_token`: the proxy takes either, and
/// reuses a token for its scope: many upstream requests for one repository, one token request.
#[test]
fn token_only_and_access_token_only_answers_and_token_reuse() {
    if !peers() {
        return;
    }
    for fields in ["token", "access_token"] {
        let reg = common::Registry::start_token_private_fields("alice", "s3cret", fields);
        let _img = common::pushed_image(&reg, "team/one:latest", Some(fields));
        let proxy = Proxy::for_registry(&reg, "tok", &["--tag-ttl", "0"]);
        let pushes = reg.token_request_count("");
        let mirror = format!("{}/tok", proxy.addr);
        for _ in 0..2 {
            let dest = tempfile::tempdir().unwrap();
            let (ok, out) = skopeo_copy_via(&mirror, "team/one:latest", dest.path());
            assert!(
                ok,
                "{fields}-only token answer: {out}\n{}",
                proxy.log_text()
            );
        }
        // The proxy's upstream requests: manifest GET, two blob GETs, then the second pull's HEAD,
        // each needing a bearer token for repository:team/one:pull.
        assert!(
            proxy.metric("regauth_upstream_requests_total") >= 4,
            "{}",
            proxy.log_text()
        );
        assert!(reg.request_count("\"HEAD /v2/team/one/manifests/latest") >= 1);
        let proxy_tokens = reg.token_request_count("") - pushes;
        assert_eq!(
            proxy_tokens, 1,
            "{fields}: one token request for the proxy's pulls (the token is cached and reused)"
        );
    }
}

/// A cold image is asked for all at once (a client fetches its layers in parallel): every one of
/// those requests needs a token for the same scope, and the proxy makes one token request for all
/// of them, not one each (Docker Hub rate-limits its token server too).
#[test]
fn concurrent_cold_requests_share_one_token_request() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_token_private("alice", "s3cret");
    let img = common::pushed_image(&reg, "team/cold:latest", Some("token single-flight"));
    let proxy = Proxy::for_registry(&reg, "tok", &[]);
    let pushes = reg.token_request_count("");
    let mut paths = vec![
        "/v2/tok/team/cold/manifests/latest".to_owned(),
        format!("/v2/tok/team/cold/manifests/{}", img.manifest_digest),
        "/v2/tok/team/cold/tags/list".to_owned(),
    ];
    for d in img.layer_digests.iter().chain([&img.config_digest]) {
        paths.push(format!("/v2/tok/team/cold/blobs/{d}"));
    }
    let urls: Vec<String> = paths.iter().map(|p| proxy.url(p)).collect();
    let answers: Vec<(String, u16)> = std::thread::scope(|s| {
        let running: Vec<_> = (0..4)
            .flat_map(|_| urls.iter())
            .map(|u| {
                s.spawn(move || {
                    let (status, _, _) = curl_get(u, &["-H", MANIFEST_ACCEPT]);
                    (u.clone(), status)
                })
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (url, status) in &answers {
        assert_eq!(*status, 200, "{url}\n{}", proxy.log_text());
    }
    let proxy_tokens = reg.token_request_count("") - pushes;
    assert_eq!(
        proxy_tokens,
        1,
        "{} concurrent cold requests for one repository: one token request\n{}",
        answers.len(),
        proxy.log_text()
    );
}

/// `regauth proxy --profile gitlab --upstream r=<reg>` with an empty Docker config and
/// `DOCKER_AUTH_CONFIG` = `dac` (JSON, or a file path) as its only source of credentials.
fn gitlab_proxy(reg: &common::Registry, dac: &str) -> Proxy {
    Proxy::start_env(
        &serde_json::json!({}),
        &[
            "--profile",
            "gitlab",
            "--upstream",
            &format!("r={}", reg.url()),
        ],
        &[("DOCKER_AUTH_CONFIG", dac)],
    )
}

/// `--profile gitlab` with `DOCKER_AUTH_CONFIG` given as a file path (a GitLab file-type variable): the
/// proxy reads the credentials from the file and pulls from an htpasswd registry with them.
#[test]
fn gitlab_profile_docker_auth_config_file_path() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_htpasswd("alice", "s3cret");
    let img = common::pushed_image(&reg, "ci/app:1", Some("gitlab file variable"));
    let vars = tempfile::tempdir().unwrap();
    let dac = vars.path().join("DOCKER_AUTH_CONFIG");
    std::fs::write(&dac, auths_config(&reg.addr, "alice", "s3cret").to_string()).unwrap();
    let proxy = gitlab_proxy(&reg, dac.to_str().unwrap());
    let (status, headers, body) = curl_get(
        &proxy.url("/v2/r/ci/app/manifests/1"),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(status, 200, "{headers}\n{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/r", proxy.addr), "ci/app:1", dest.path());
    assert!(ok, "{out}\n{}", proxy.log_text());
    assert!(!proxy.log_text().contains("s3cret"));
}

/// Issue 8: under `--profile gitlab` the proxy's upstream credentials follow GitLab Runner's
/// longest-path-prefix rule for the *repository*: a `DOCKER_AUTH_CONFIG` whose only key is
/// `<host>/team` lets `team/app` through and leaves `other/app` anonymous (the upstream's 401 is
/// passed on), exactly as `regauth resolve --profile gitlab <host>/<repo>` answers.
#[test]
fn gitlab_profile_path_scoped_key_applies_to_its_repositories_only() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_htpasswd("ciuser", "j0b-t0ken");
    let img = common::pushed_image(&reg, "team/app:1", Some("path scoped"));
    common::push_image(&img, &reg, "other/app:1", reg.creds());
    let key = format!("{}/team", reg.addr);
    let dac = auths_config(&key, "ciuser", "j0b-t0ken");
    let proxy = gitlab_proxy(&reg, &dac.to_string());
    // The resolver says the same thing on the command line.
    for (repo, want) in [("team/app", Some(key.as_str())), ("other/app", None)] {
        let out = Command::new(common::bin("regauth"))
            .args(["resolve", "--profile", "gitlab", "--image"])
            .arg(format!("{}/{repo}:1", reg.addr))
            .env_clear()
            .env("HOME", "/nonexistent")
            .env("DOCKER_AUTH_CONFIG", dac.to_string())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(v["registry"].as_str(), want, "{repo}: {out:?}");
    }
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(&format!("{}/r", proxy.addr), "team/app:1", dest.path());
    assert!(ok, "{out}\n{}", proxy.log_text());
    let (status, _, body) = curl_get(
        &proxy.url("/v2/r/other/app/manifests/1"),
        &["-H", MANIFEST_ACCEPT],
    );
    assert_eq!(
        status,
        401,
        "other/app must not get team's key: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(!proxy.log_text().contains("j0b-t0ken"));
}

/// `count` GETs of `url` at once (`curl --parallel`, one connection each): the status and the body
/// digest of every answer.
fn storm(url: &str, count: usize, extra: &[&str]) -> Vec<(u16, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["--max-time", "120", "-s", "-Z", "--parallel-immediate"])
        .args(["--parallel-max", &count.to_string()])
        .args(["-w", "%{http_code} %{filename_effective}\\n"])
        .args(extra);
    for i in 0..count {
        cmd.arg("-o").arg(dir.path().join(i.to_string())).arg(url);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let answers: Vec<(u16, String)> = text
        .lines()
        .filter_map(|l| {
            let (code, file) = l.split_once(' ')?;
            let body = std::fs::read(file).unwrap_or_default();
            Some((code.parse().ok()?, common::sha256_digest(&body)))
        })
        .collect();
    assert_eq!(answers.len(), count, "curl answered:\n{text}");
    answers
}

/// Many clients asking at once for a manifest the proxy has not cached (one tag, then one digest):
/// every one gets a 200 with the right bytes, and the upstream sees one manifest GET per read, not
/// one per client (the fetch is shared), and the token server one token request.
#[test]
fn concurrent_cold_manifest_requests_share_one_upstream_fetch() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_token_private("alice", "s3cret");
    let by_tag = common::pushed_image(&reg, "team/s:latest", Some("storm-tag"));
    let by_digest = common::pushed_image(&reg, "team/s:other", Some("storm-digest"));
    let pushes = reg.token_request_count("");
    let proxy = Proxy::for_registry(&reg, "tok", &[]);
    const CLIENTS: usize = 200;
    let reads = [
        ("latest", &by_tag.manifest_digest),
        (
            by_digest.manifest_digest.as_str(),
            &by_digest.manifest_digest,
        ),
    ];
    for (reference, digest) in reads {
        let url = proxy.url(&format!("/v2/tok/team/s/manifests/{reference}"));
        let answers = storm(&url, CLIENTS, &["-H", MANIFEST_ACCEPT]);
        let wrong: Vec<_> = answers
            .iter()
            .filter(|a| a.0 != 200 || a.1 != *digest)
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {CLIENTS} answers for {reference} were not a 200 with {digest}: {:?}\n{}",
            wrong.len(),
            &wrong[..wrong.len().min(5)],
            proxy.log_text()
        );
        let gets = reg.request_count(&format!("\"GET /v2/team/s/manifests/{reference} "));
        // One, or a few when a request checked the cache just before the shared fetch stored
        // its result and joined just after it ended (without sharing: two per client, 401 + GET).
        assert!(
            (1..=5).contains(&gets),
            "{gets} upstream manifest GETs for {CLIENTS} clients asking for {reference}"
        );
    }
    let tokens = reg.token_request_count("") - pushes;
    assert!(
        (1..=4).contains(&tokens),
        "{tokens} token requests for two coalesced reads"
    );
}
