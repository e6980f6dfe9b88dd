//! What an operator sees of `regauth proxy` (issue 14): the upstream-failure warnings (refused,
//! DNS, 401 with and without credentials, each naming the upstream, the cause and the credential
//! source), the access-log fields (parsed from `--log-format json`), the `/metrics` names and
//! labels, the default `Accept` for a client that names none (curl), and that no test secret
//! appears in any output, log or scrape. Real CNCF registry, real curl and skopeo.

mod common;
mod proxy_util;

use proxy_util::{Proxy, auths_config, curl, curl_get, metric_in, skopeo_copy_via};

fn peers() -> bool {
    common::require_peers(&["docker-registry", "skopeo", "htpasswd", "curl"])
}

/// The JSON log lines of `log` (non-JSON lines skipped).
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// The `fields` of every access-log event.
fn access_lines(log: &str) -> Vec<serde_json::Value> {
    json_lines(log)
        .into_iter()
        .filter(|v| v["target"] == "regauth::access")
        .map(|v| v["fields"].clone())
        .collect()
}

/// The WARN messages of a JSON log.
fn warnings(log: &str) -> Vec<String> {
    json_lines(log)
        .into_iter()
        .filter(|v| v["level"] == "WARN")
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

fn assert_no_secret(haystacks: &[(&str, &str)], secrets: &[&str]) {
    for (what, text) in haystacks {
        for s in secrets {
            assert!(!text.contains(s), "secret {s:?} appears in {what}:\n{text}");
        }
    }
}

#[test]
fn unreachable_upstreams_are_named_with_their_cause() {
    if !peers() {
        return;
    }
    let dead_port = common::free_port();
    let dead = format!("dead=http://127.0.0.1:{dead_port}");
    // A plain-HTTP registry asked for TLS: the handshake fails.
    let plain = common::Registry::start_anonymous();
    let tls = format!("tlsbad=https://{}", plain.addr);
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--upstream",
            &dead,
            "--upstream",
            &tls,
            "--upstream",
            "nx=https://nonexistent.invalid",
            "--log-format",
            "json",
        ],
    );
    let (status, _, body) = curl_get(&proxy.url("/v2/dead/app/manifests/latest"), &[]);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = curl_get(&proxy.url("/v2/nx/app/manifests/latest"), &[]);
    assert_eq!(status, 502);
    let (status, _, _) = curl_get(&proxy.url("/v2/tlsbad/app/manifests/latest"), &[]);
    assert_eq!(status, 502);

    let log = proxy.log_text();
    let warns = warnings(&log);
    let refused = format!("127.0.0.1:{dead_port} connection refused");
    assert!(
        warns
            .iter()
            .any(|w| w.starts_with(&refused) && w.contains("Connection refused")),
        "no refused warning in {warns:#?}"
    );
    assert!(
        warns
            .iter()
            .any(|w| w.starts_with("nonexistent.invalid DNS lookup failed")),
        "no DNS warning in {warns:#?}"
    );
    assert!(
        warns
            .iter()
            .any(|w| w.starts_with(&format!("{} TLS handshake failed", plain.addr))),
        "no TLS warning in {warns:#?}"
    );
    let text = curl(&["-s", &proxy.url("/metrics")]).1;
    assert_eq!(
        metric_in(
            &text,
            "regauth_upstream_errors_total{upstream=\"dead\",kind=\"connect\"}"
        ),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric_in(
            &text,
            "regauth_upstream_errors_total{upstream=\"nx\",kind=\"dns\"}"
        ),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric_in(
            &text,
            "regauth_upstream_errors_total{upstream=\"tlsbad\",kind=\"tls\"}"
        ),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric_in(
            &text,
            "regauth_upstream_requests_total{upstream=\"dead\",status=\"error\"}"
        ),
        Some(1)
    );
    assert_eq!(
        metric_in(
            &text,
            "regauth_requests_total{route=\"manifest\",status=\"502\"}"
        ),
        Some(3)
    );
}

#[test]
fn refused_credentials_name_the_user_and_their_source_never_the_secret() {
    if !peers() {
        return;
    }
    let (user, pass, wrong) = ("ciuser", "observe-right-s3cret", "observe-wrong-s3cret");
    let reg = common::Registry::start_htpasswd(user, pass);
    let up = format!("priv={}", reg.url());

    // Wrong password, from DOCKER_AUTH_CONFIG.
    let wrong_cfg = auths_config(&reg.addr, user, wrong).to_string();
    let with = Proxy::start_env(
        &serde_json::json!({}),
        &["--upstream", &up, "--log-format", "json"],
        &[("DOCKER_AUTH_CONFIG", &wrong_cfg)],
    );
    let (status, _, body_with) = curl_get(&with.url("/v2/priv/app/manifests/latest"), &[]);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body_with));
    let warns = warnings(&with.log_text());
    let expect = format!(
        "{} rejected {user} (credentials from DOCKER_AUTH_CONFIG): 401",
        reg.addr
    );
    assert!(warns.contains(&expect), "{expect:?} not in {warns:#?}");

    // No credentials at all for a private registry.
    let without = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &up, "--log-format", "json"],
    );
    let (status, _, body_without) = curl_get(&without.url("/v2/priv/app/manifests/latest"), &[]);
    assert_eq!(status, 401);
    let warns = warnings(&without.log_text());
    assert!(
        warns.iter().any(|w| w.starts_with(&format!(
            "{} requires credentials and none are configured",
            reg.addr
        ))),
        "{warns:#?}"
    );
    let metrics_with = curl(&["-s", &with.url("/metrics")]).1;
    assert_eq!(
        metric_in(
            &metrics_with,
            "regauth_upstream_errors_total{upstream=\"priv\",kind=\"unauthorized\"}"
        ),
        Some(1),
        "{metrics_with}"
    );
    assert_eq!(
        metric_in(
            &metrics_with,
            "regauth_upstream_requests_total{upstream=\"priv\",status=\"401\"}"
        ),
        Some(1)
    );
    let metrics_without = curl(&["-s", &without.url("/metrics")]).1;

    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (b_wrong, b_right) = (
        b64(&format!("{user}:{wrong}")),
        b64(&format!("{user}:{pass}")),
    );
    assert_no_secret(
        &[
            ("proxy log (wrong password)", &with.log_text()),
            ("proxy log (no credentials)", &without.log_text()),
            ("/metrics", &metrics_with),
            ("/metrics", &metrics_without),
            ("response", &String::from_utf8_lossy(&body_with)),
            ("response", &String::from_utf8_lossy(&body_without)),
        ],
        &[pass, wrong, &b_wrong, &b_right],
    );
}

#[test]
fn access_log_fields_and_metric_names() {
    if !peers() {
        return;
    }
    let (user, pass) = ("puller", "observe-pull-s3cret");
    let reg = common::Registry::start_htpasswd(user, pass);
    let img = common::pushed_image(&reg, "test/busybox:latest", None);
    let proxy = Proxy::for_registry(&reg, "local", &["--log-format", "json"]);
    let mirror = format!("{}/local", proxy.addr);
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let dest = tempfile::tempdir().unwrap();
        let (ok, out) = skopeo_copy_via(&mirror, "test/busybox:latest", dest.path());
        assert!(ok, "{out}\n{}", proxy.log_text());
        outputs.push(out);
    }
    let log = proxy.log_text();
    let access = access_lines(&log);
    let layer = &img.layer_digests[0];
    let layer_lines: Vec<_> = access
        .iter()
        .filter(|f| {
            f["route"] == "blob" && f["reference"] == layer.as_str() && f["method"] == "GET"
        })
        .collect();
    assert_eq!(layer_lines.len(), 2, "{access:#?}");
    for f in &layer_lines {
        assert_eq!(f["repository"], "test/busybox");
        assert_eq!(f["upstream"], reg.addr.as_str());
        assert_eq!(f["client"], "anonymous");
        assert_eq!(f["status"], 200);
        assert_eq!(f["bytes"], img.blob(layer).len() as u64);
        assert!(f["duration_ms"].is_u64(), "{f}");
    }
    assert_eq!(layer_lines[0]["cache"], "miss");
    assert_eq!(layer_lines[1]["cache"], "hit");
    let manifest_line = access
        .iter()
        .find(|f| f["route"] == "manifest" && f["reference"] == "latest")
        .expect("a manifest-by-tag line");
    assert_eq!(manifest_line["status"], 200);
    assert!(
        ["miss", "hit", "revalidated"].contains(&manifest_line["cache"].as_str().unwrap_or("")),
        "{manifest_line}"
    );

    // Metrics: every sample line is well formed, names are known, labels are bounded.
    let text = curl(&["-s", &proxy.url("/metrics")]).1;
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let known = [
        "regauth_requests_total",
        "regauth_request_duration_seconds_bucket",
        "regauth_request_duration_seconds_sum",
        "regauth_request_duration_seconds_count",
        "regauth_served_bytes_total",
        "regauth_upstream_requests_total",
        "regauth_upstream_errors_total",
        "regauth_upstream_received_bytes_total",
        "regauth_upstream_blob_fetches_total",
        "regauth_cache_hits_total",
        "regauth_cache_misses_total",
        "regauth_verification_failures_total",
        "regauth_limit_trips_total",
        "regauth_coalesced_total",
        "regauth_stale_served_total",
        "regauth_revalidated_total",
        "regauth_policy_denied_total",
        "regauth_client_unauthorized_total",
        "regauth_cache_evicted_total",
        "regauth_cache_evicted_bytes_total",
        "regauth_cache_skipped_low_disk_total",
        "regauth_confirm_expired_total",
        "regauth_peer_fetches_total",
        "regauth_peer_served_total",
        "regauth_peer_fallbacks_total",
        "regauth_peer_owner_misses_total",
        "regauth_connect_sessions_total",
        "regauth_connect_active",
        "regauth_connect_leaves_minted_total",
        "regauth_store_requests_total",
        "regauth_store_request_duration_seconds_bucket",
        "regauth_store_request_duration_seconds_sum",
        "regauth_store_request_duration_seconds_count",
        "regauth_store_sweeps_total",
        "regauth_access_denied_total",
    ];
    let routes = [
        "base", "manifest", "blob", "tags", "upload", "healthz", "metrics", "other",
    ];
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect(line);
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, proxy_util::labels_of(l.trim_end_matches('}'))),
            None => (series, vec![]),
        };
        assert!(known.contains(&name), "unknown metric {name} in {line}");
        for (k, v) in labels {
            match k.as_str() {
                "route" => assert!(routes.contains(&v.as_str()), "{line}"),
                "upstream" => assert_eq!(v, "local", "{line}"),
                "status" => assert!(v == "error" || v.parse::<u16>().is_ok(), "{line}"),
                "kind" => assert!(
                    ["manifest", "blob"].contains(&v.as_str())
                        || v.chars().all(|c| c.is_ascii_lowercase()),
                    "{line}"
                ),
                "le" | "limit" => {}
                "op" | "outcome" => assert!(
                    v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{line}"
                ),
                "reason" => assert!(
                    ["access_rules", "anonymous", "upstream"].contains(&v.as_str()),
                    "{line}"
                ),
                other => panic!("unexpected label {other} in {line}"),
            }
        }
    }
    assert!(!text.contains("busybox") && !text.contains(user), "{text}");
    assert_eq!(
        metric_in(
            &text,
            "regauth_upstream_blob_fetches_total{upstream=\"local\"}"
        ),
        Some(2)
    );
    assert!(
        metric_in(
            &text,
            "regauth_requests_total{route=\"blob\",status=\"200\"}"
        )
        .unwrap()
            >= 4
    );
    assert!(metric_in(&text, "regauth_cache_hits_total{kind=\"blob\"}").unwrap() >= 2);
    assert!(
        metric_in(
            &text,
            "regauth_upstream_requests_total{upstream=\"local\",status=\"200\"}"
        )
        .unwrap()
            >= 2
    );
    assert!(
        metric_in(
            &text,
            "regauth_request_duration_seconds_count{route=\"blob\"}"
        )
        .unwrap()
            >= 4
    );
    assert!(metric_in(&text, "regauth_served_bytes_total{route=\"blob\"}").unwrap() > 0);
    assert_eq!(
        metric_in(&text, "regauth_verification_failures_total"),
        Some(0)
    );

    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut hay: Vec<(&str, &str)> = vec![("proxy log", &log), ("/metrics", &text)];
    for o in &outputs {
        hay.push(("skopeo output", o));
    }
    assert_no_secret(&hay, &[pass, &b]);
}

#[test]
fn a_client_without_accept_gets_an_oci_or_docker_v2_manifest() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let img = common::pushed_image(&reg, "test/busybox:latest", None);
    let proxy = Proxy::for_registry(&reg, "local", &[]);
    let url = proxy.url("/v2/local/test/busybox/manifests/latest");
    // curl's own `Accept: */*`, then no Accept header at all.
    for extra in [&[][..], &["-H", "Accept:"][..]] {
        let (status, headers, body) = curl_get(&url, extra);
        assert_eq!(status, 200, "{headers}\n{}", String::from_utf8_lossy(&body));
        let ct = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type").then_some(v)
            })
            .unwrap_or("")
            .trim()
            .to_owned();
        assert!(
            [
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ]
            .contains(&ct.as_str()),
            "content-type {ct:?}"
        );
        assert_eq!(common::sha256_digest(&body), img.manifest_digest);
    }
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 0);
}

#[test]
fn first_interrupt_says_how_long_it_waits_and_a_second_one_exits() {
    if !peers() {
        return;
    }
    // An upstream that accepts and never answers: the request stays in flight.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = format!("silent=http://{}", silent.local_addr().unwrap());
    let mut proxy = Proxy::start(&serde_json::json!({}), &["--upstream", &up]);
    let url = proxy.url("/v2/silent/app/manifests/latest");
    let hung = std::thread::spawn(move || curl_get(&url, &[]));
    // Wait until the proxy has the request (the upstream connection is accepted).
    let (_conn, _) = silent.accept().unwrap();

    proxy.signal("INT");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !proxy.log_text().contains("press Ctrl-C again to exit now") {
        assert!(std::time::Instant::now() < deadline, "{}", proxy.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = proxy.log_text();
    assert!(
        log.contains("waiting up to 30 s for requests in flight"),
        "{log}"
    );
    assert!(
        proxy
            .wait_exit(std::time::Duration::from_millis(500))
            .is_none(),
        "exited with a request in flight before the grace period:\n{log}"
    );
    proxy.signal("INT");
    let st = proxy.wait_exit(std::time::Duration::from_secs(20));
    assert!(
        st.is_some(),
        "second interrupt did not exit:\n{}",
        proxy.log_text()
    );
    assert!(
        proxy.log_text().contains("second interrupt: exiting now"),
        "{}",
        proxy.log_text()
    );
    let _ = hung.join();
}

/// An OCI layout (`dir`, tag `big`) with one `size`-byte random layer; returns the layer digest.
fn random_layer_image(dir: &std::path::Path, size: u64) -> String {
    use std::io::Read;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = common::sha256_digest(bytes);
        std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
        (d, bytes.len())
    };
    let mut layer = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(size)
        .read_to_end(&mut layer)
        .unwrap();
    let (ld, ls) = put(&layer);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [ld]}, "config": {}});
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": common::OCI_CONFIG, "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]});
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": common::OCI_MANIFEST,
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "big"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    ld
}

#[test]
fn a_long_download_logs_one_start_and_one_end_line_in_a_pipe() {
    if !peers() {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let layout = tempfile::tempdir().unwrap();
    random_layer_image(layout.path(), 12 << 20);
    common::run_checked(
        std::process::Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                "--dest-no-creds",
            ])
            .arg(format!("oci:{}:big", layout.path().display()))
            .arg(format!("docker://{}/test/big:latest", reg.addr)),
        "skopeo copy (push test/big)",
    );
    let up = format!("local={}", reg.url());
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &up, "--log-format", "json"],
    );
    let dest = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo_copy_via(
        &format!("{}/local", proxy.addr),
        "test/big:latest",
        dest.path(),
    );
    assert!(ok, "{out}");
    let progress: Vec<String> = json_lines(&proxy.log_text())
        .into_iter()
        .filter(|v| v["target"] == "regauth::progress")
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .collect();
    // The log is a file (not a terminal): start and end only, no periodic lines.
    assert_eq!(progress.len(), 2, "{progress:#?}");
    assert!(
        progress[0].starts_with("pulling sha256:") && progress[0].contains(" MiB) from "),
        "{progress:#?}"
    );
    assert!(
        progress[1].starts_with("pulled sha256:") && progress[1].contains(" MiB in "),
        "{progress:#?}"
    );
}

#[test]
fn the_access_log_names_the_client_user_never_its_password() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let out = std::process::Command::new("htpasswd")
        .arg("-Bbc")
        .arg(&htpasswd)
        .args(["ci-client", "observe-client-pw"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    let (ok_status, _, _) = curl_get(&proxy.url("/v2/"), &["-u", "ci-client:observe-client-pw"]);
    assert_eq!(ok_status, 200);
    let (bad_status, _, _) = curl_get(&proxy.url("/v2/"), &["-u", "ci-client:wrong-client-pw"]);
    assert_eq!(bad_status, 401);
    let log = proxy.log_text();
    let base: Vec<_> = access_lines(&log)
        .into_iter()
        .filter(|f| f["route"] == "base" || f["status"] == 401)
        .collect();
    assert_eq!(base.len(), 2, "{base:#?}");
    assert_eq!(
        (base[0]["client"].as_str(), base[0]["status"].as_u64()),
        (Some("ci-client"), Some(200))
    );
    assert_eq!(
        (base[1]["client"].as_str(), base[1]["status"].as_u64()),
        (Some("anonymous"), Some(401))
    );
    let metrics = curl(&["-s", &proxy.url("/metrics")]).1;
    assert_eq!(
        metric_in(&metrics, "regauth_client_unauthorized_total"),
        Some(1)
    );
    assert_no_secret(
        &[("proxy log", &log), ("/metrics", &metrics)],
        &["observe-client-pw", "wrong-client-pw"],
    );
}

/// Start-up validation: a credential configuration with errors refuses the start and names the
/// file and field (instead of logging "ready" and answering every pull with 502 later).
#[test]
fn the_proxy_refuses_to_start_on_credential_config_errors() {
    let cases: [(&str, &str, &[&str]); 3] = [
        ("{not json", "config.json", &[]),
        (
            r#"{"credsStore":"nosuchhelper"}"#,
            "credsStore",
            &["nosuchhelper"],
        ),
        (
            r#"{"credHelpers":{"registry.example.com":"../evil"}}"#,
            "credHelpers",
            &["registry.example.com"],
        ),
    ];
    for (config, names, also) in cases {
        let home = tempfile::tempdir().unwrap();
        let docker = home.path().join(".docker");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(docker.join("config.json"), config).unwrap();
        let out = std::process::Command::new(common::bin("regauth"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--config-dir"])
            .arg(&docker)
            .arg("--cache-dir")
            .arg(home.path().join("cache"))
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {err}");
        assert!(err.contains("credential configuration has errors"), "{err}");
        assert!(err.contains(names), "{config}: names {names}: {err}");
        for a in also {
            assert!(err.contains(a), "{config}: names {a}: {err}");
        }
        assert!(!err.contains("ready"), "{err}");
    }
}
