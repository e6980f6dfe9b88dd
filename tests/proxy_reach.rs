//! The proxy reaches only the registries it serves (issue: closed by default).
//!
//! A "target" is a loopback socket that counts every connection made to it: each refused route
//! must leave it at zero, which proves the refusal came before any connection (no port oracle, no
//! SSRF). The hostile upstream is a small hyper server that redirects every request to the target.

mod common;
mod proxy_util;

use proxy_util::{Proxy, auths_config, curl_get};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A loopback port that counts connections (and closes them).
struct Target {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Target {
    fn start() -> Target {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                h.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        Target { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn body_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_denied(status: u16, body: &[u8], host: &str) {
    assert_eq!(status, 403, "{}", body_text(body));
    let text = body_text(body);
    assert!(text.contains("DENIED"), "{text}");
    assert!(text.contains(host), "the refusal names {host}: {text}");
}

#[test]
fn ns_and_host_prefix_outside_the_allowlist_are_refused_before_any_connection() {
    let target = Target::start();
    let t = format!("127.0.0.1:{}", target.port);
    // The proxy knows one registry (by its credentials), not the target.
    let proxy = Proxy::start(&auths_config("registry.example.com:5000", "u", "p"), &[]);
    let digest = format!("sha256:{}", "0".repeat(64));
    for (path, query) in [
        ("/v2/".to_owned(), format!("ns={t}")),
        (
            "/v2/team/app/manifests/latest".to_owned(),
            format!("ns={t}"),
        ),
        (format!("/v2/team/app/blobs/{digest}"), format!("ns={t}")),
        ("/v2/team/app/tags/list".to_owned(), format!("ns={t}")),
        (format!("/v2/{t}/team/app/manifests/latest"), String::new()),
        (format!("/v2/{t}/team/app/blobs/{digest}"), String::new()),
    ] {
        let url = if query.is_empty() {
            proxy.url(&path)
        } else {
            format!("{}?{query}", proxy.url(&path))
        };
        let (status, _, body) = curl_get(&url, &[]);
        assert_denied(status, &body, &t);
    }
    // Another spelling of the target (leading zero in the port) is the same registry.
    let (status, _, body) = curl_get(
        &format!(
            "{}?ns=127.0.0.1:0{}",
            proxy.url("/v2/x/manifests/latest"),
            target.port
        ),
        &[],
    );
    assert_denied(status, &body, &t);
    assert_eq!(target.hits(), 0, "the target saw a connection");
    assert!(
        proxy
            .log_text()
            .contains("refused: registry not in the proxy's reach"),
        "{}",
        proxy.log_text()
    );
}

#[test]
fn no_port_oracle_open_and_closed_ports_answer_alike() {
    let open = Target::start();
    let closed = common::free_port();
    let proxy = Proxy::start(&serde_json::json!({}), &[]);
    let ask = |port: u16| {
        let (status, _, body) = curl_get(
            &format!(
                "{}?ns=127.0.0.1:{port}",
                proxy.url("/v2/x/manifests/latest")
            ),
            &[],
        );
        (status, body_text(&body).replace(&port.to_string(), "PORT"))
    };
    let a = ask(open.port);
    let b = ask(closed);
    let c = ask(22);
    assert_eq!(a.0, 403);
    assert_eq!(a, b, "open and closed ports must look the same");
    assert_eq!(b, c);
    assert_eq!(open.hits(), 0);
}

#[test]
fn the_compose_sidecar_cannot_reach_the_dind_api() {
    // The compose stack's regauth command line (packaging/runner/docker-compose.yml) with its
    // default upstream; dind answers on docker:2375 in that network.
    let compose = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging/runner/docker-compose.yml"),
    )
    .unwrap();
    assert!(
        compose.contains("proxy --listen 0.0.0.0:5000"),
        "the stack still runs the proxy this way"
    );
    let proxy = Proxy::start(&serde_json::json!({"credsStore": ""}), &[]);
    for url in [
        format!(
            "{}?ns=docker:2375",
            proxy.url("/v2/containers/json/manifests/x")
        ),
        proxy.url("/v2/docker:2375/containers/json/manifests/x"),
        format!("{}?ns=docker:2375", proxy.url("/v2/")),
    ] {
        let (status, _, body) = curl_get(&url, &[]);
        assert_denied(status, &body, "docker:2375");
    }
}

#[test]
fn allow_registry_opens_exactly_what_it_names() {
    // Over TLS: a registry named by `ns` (not a configured upstream) is spoken to over https.
    let reg = common::Registry::start_tls(common::RegistryAuth::Htpasswd {
        user: "alice".into(),
        pass: "s3cret".into(),
    });
    let work = tempfile::tempdir().unwrap();
    let img = common::busybox_image(work.path(), "reach");
    common::push_image(&img, &reg, "team/app:1", Some(("alice", "s3cret")));
    let ca = reg.ca_cert.as_ref().unwrap().to_str().unwrap().to_owned();
    let host = reg.addr.clone();
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let url = |proxy: &Proxy| format!("{}?ns={host}", proxy.url("/v2/team/app/manifests/1"));
    let accept = ["-H", "Accept: application/vnd.oci.image.manifest.v1+json"];
    // Closed: the registry is named nowhere.
    let closed = Proxy::start(&serde_json::json!({}), &["--upstream-ca", &ca]);
    let (status, _, _) = curl_get(&url(&closed), &accept);
    assert_eq!(status, 403);
    // The exact host:port, and a host:* pattern, open it (the registry then answers 401: the
    // proxy holds no credentials for it, which proves it was reached).
    for pattern in [host.clone(), "127.0.0.1:*".to_owned()] {
        let args = ["--allow-registry", &pattern, "--upstream-ca", &ca];
        let open = Proxy::start(&serde_json::json!({}), &args);
        let (status, _, body) = curl_get(&url(&open), &accept);
        assert_eq!(status, 401, "{pattern}: {}", body_text(&body));
    }
    // A pattern for another port does not.
    let other = format!("127.0.0.1:{}", port.wrapping_add(1).max(1));
    let wrong = Proxy::start(
        &serde_json::json!({}),
        &["--allow-registry", &other, "--upstream-ca", &ca],
    );
    let (status, _, _) = curl_get(&url(&wrong), &accept);
    assert_eq!(status, 403);
    // A credential key for the registry opens it, and its credentials are used.
    let by_key = Proxy::start(
        &auths_config(&host, "alice", "s3cret"),
        &["--upstream-ca", &ca],
    );
    let (status, _, body) = curl_get(&url(&by_key), &accept);
    assert_eq!(status, 200, "{}", body_text(&body));
}

#[test]
fn bad_allow_registry_patterns_refuse_to_start() {
    for bad in ["*", "a.*.com", "host:notaport"] {
        let out = std::process::Command::new(common::bin("regauth"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--allow-registry", bad])
            .args(["--cache-dir"])
            .arg(tempfile::tempdir().unwrap().path())
            .env("HOME", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--allow-registry"), "{bad}: {err}");
    }
}

mod hostile {
    //! An upstream that redirects every request to `location`.
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;

    pub fn start(location: String) -> (String, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let loc = location.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let loc = loc.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(StatusCode::TEMPORARY_REDIRECT)
                                    .header("location", loc)
                                    .body(Empty::<Bytes>::new())
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, rt)
    }
}

#[test]
fn redirects_to_other_hosts_over_http_or_to_internal_addresses_are_not_followed() {
    let target = Target::start();
    // The cloud-metadata pattern: an allowed upstream redirects to plain http elsewhere.
    for location in [
        format!("http://localhost:{}/latest/meta-data/", target.port),
        format!("http://127.0.0.2:{}/latest/meta-data/", target.port),
    ] {
        let (up, _rt) = hostile::start(location.clone());
        let proxy = Proxy::start(
            &serde_json::json!({}),
            &["--upstream", &format!("evil=http://{up}")],
        );
        let digest = format!("sha256:{}", "1".repeat(64));
        for path in [
            format!("/v2/evil/x/blobs/{digest}"),
            "/v2/evil/x/manifests/latest".to_owned(),
            "/v2/evil/x/tags/list".to_owned(),
        ] {
            let (status, _, body) = curl_get(&proxy.url(&path), &[]);
            assert!(status >= 400, "{location} {path}: {status}");
            let text = body_text(&body);
            assert!(!text.contains("meta-data"), "{text}");
        }
        assert!(
            proxy.log_text().contains("redirect to"),
            "{}",
            proxy.log_text()
        );
    }
    assert_eq!(target.hits(), 0, "a redirect reached the target");
}

#[test]
fn many_unknown_hosts_do_not_spawn_a_helper_each() {
    // A credsStore helper that counts its runs (list answers one registry, get answers nothing).
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("runs");
    let helper = dir.path().join("docker-credential-counting");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\necho x >> {}\ncase \"$1\" in\n  list) echo '{{\"registry.example.com\":\"u\"}}' ;;\n  get) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
            count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        common::path_with_bins().to_string_lossy()
    );
    let proxy = Proxy::start_env(
        &serde_json::json!({"credsStore": "counting"}),
        &[],
        &[("PATH", &path)],
    );
    let runs = || {
        std::fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let at_start = runs();
    assert!(at_start >= 1, "the store was listed for the allowlist");
    let started = std::time::Instant::now();
    for i in 0..300 {
        let (status, _, _) = curl_get(
            &format!(
                "{}?ns=host{i}.example.com",
                proxy.url("/v2/x/manifests/latest")
            ),
            &[],
        );
        assert_eq!(status, 403);
    }
    // One list per refresh window at most, however many hosts were named (the windows the loop
    // spanned: a loaded machine takes longer over 300 requests, and gets more windows).
    let after = runs();
    let windows = started.elapsed().as_secs() / regauth::proxy::reach::REFRESH_EVERY.as_secs() + 1;
    assert!(
        (after - at_start) as u64 <= windows + 1,
        "300 denied hosts ran the helper {} times in {windows} refresh windows",
        after - at_start
    );
    // The listed registry is reachable by name (routing only; no connection is needed to prove it:
    // the answer is not a 403).
    let (status, _, _) = curl_get(
        &format!("{}?ns=registry.example.com", proxy.url("/v2/")),
        &["--max-time", "15"],
    );
    assert_ne!(status, 403);
}
