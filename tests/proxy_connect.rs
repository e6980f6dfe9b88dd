//! CONNECT mode (`regauth proxy --connect`): real clients (skopeo, ctr, curl, openssl) use the
//! proxy through `HTTPS_PROXY`; the proxy intercepts allowlisted registries with leaves from its
//! own CA and adds the credentials only it holds, tunnels `--connect-tunnel` hosts unchanged and
//! refuses everything else before connecting.
//!
//! Go clients never send loopback names through a proxy, so the TLS registry is reached as
//! `registry.regauth.test` (127.0.0.1 in /etc/hosts, added by tests/install-peers.sh; the
//! harness's registry certificate names it).

mod common;
mod proxy_util;

use proxy_util::{Proxy, auths_config};
use std::io::{Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const TEST_HOST: &str = "registry.regauth.test";
const INTERCEPTED: &str = "regauth_connect_sessions_total{outcome=\"intercepted\"}";
const REFUSED: &str = "regauth_connect_sessions_total{outcome=\"refused\"}";
const TUNNELLED: &str = "regauth_connect_sessions_total{outcome=\"tunnelled\"}";
const UNAUTHORIZED: &str = "regauth_connect_sessions_total{outcome=\"unauthorized\"}";

/// The peers, and the test host name resolving to 127.0.0.1 (a missing entry is a missing peer).
fn peers(extra: &[&str]) -> bool {
    let mut bins = vec!["docker-registry", "skopeo", "htpasswd", "curl", "openssl"];
    bins.extend_from_slice(extra);
    if !common::require_peers(&bins) {
        return false;
    }
    let resolves = (TEST_HOST, 443)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|a| a.ip().is_loopback()));
    if !resolves {
        let required =
            std::env::var("REGAUTH_REQUIRE_PEERS").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "{TEST_HOST} does not resolve to 127.0.0.1 (run `bash tests/install-peers.sh`)"
        );
        eprintln!(
            "SKIP: {TEST_HOST} does not resolve to 127.0.0.1 (run `bash tests/install-peers.sh`)"
        );
    }
    resolves
}

/// A TLS registry (htpasswd alice:s3cret) holding `team/app:1`, and a proxy in CONNECT mode
/// that holds its credentials under `registry.regauth.test:PORT`.
struct Setup {
    reg: common::Registry,
    img: common::TestImage,
    /// `registry.regauth.test:PORT`.
    host: String,
    ca_dir: PathBuf,
    _ca_tmp: tempfile::TempDir,
}

fn setup(marker: &str) -> Setup {
    let reg = common::Registry::start_tls(common::RegistryAuth::Htpasswd {
        user: "alice".into(),
        pass: "s3cret".into(),
    });
    let img = common::pushed_image(&reg, "team/app:1", Some(marker));
    let port = reg.addr.rsplit_once(':').unwrap().1.to_owned();
    let ca_tmp = tempfile::tempdir().unwrap();
    Setup {
        host: format!("{TEST_HOST}:{port}"),
        ca_dir: ca_tmp.path().join("ca"),
        reg,
        img,
        _ca_tmp: ca_tmp,
    }
}

impl Setup {
    fn proxy(&self, extra: &[&str]) -> Proxy {
        let ca = self.reg.ca_cert.as_ref().unwrap().to_str().unwrap();
        let mut args = vec![
            "--connect",
            "--ca-dir",
            self.ca_dir.to_str().unwrap(),
            "--upstream-ca",
            ca,
        ];
        args.extend_from_slice(extra);
        Proxy::start(&auths_config(&self.host, "alice", "s3cret"), &args)
    }

    /// A certs directory holding the proxy's CA as `ca.crt` (skopeo's --src-cert-dir layout).
    fn cert_dir(&self) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(self.ca_dir.join("ca.pem"), d.path().join("ca.crt")).unwrap();
        d
    }

    fn assert_layout(&self, dest: &Path) {
        for d in self
            .img
            .layer_digests
            .iter()
            .chain([&self.img.config_digest])
        {
            let got = std::fs::read(dest.join("blobs/sha256").join(&d["sha256:".len()..]))
                .unwrap_or_else(|_| panic!("{d} missing in the copied layout"));
            assert_eq!(common::sha256_digest(&got), *d);
        }
        let got = std::fs::read(
            dest.join("blobs/sha256")
                .join(&self.img.manifest_digest["sha256:".len()..]),
        )
        .expect("manifest in the layout");
        assert_eq!(common::sha256_digest(&got), self.img.manifest_digest);
    }
}

/// `skopeo copy docker://<host>/team/app:1 oci:<dest>` with `env` and `--src-cert-dir`.
fn skopeo_copy(host: &str, cert_dir: &Path, env: &[(&str, &str)], dest: &Path) -> (bool, String) {
    let mut cmd = Command::new("skopeo");
    cmd.env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(env.iter().copied())
        .args([
            "--insecure-policy",
            "copy",
            "--src-no-creds",
            "--src-cert-dir",
        ])
        .arg(cert_dir)
        .arg(format!("docker://{host}/team/app:1"))
        .arg(format!("oci:{}:copied", dest.display()));
    common::run_text(&mut cmd, "skopeo")
}

/// The must-show: skopeo has no credentials, the registry needs them, the proxy holds
/// them; through HTTPS_PROXY and the proxy's CA the image is copied and its digests verified.
#[test]
fn skopeo_copies_through_https_proxy_with_credentials_only_the_proxy_holds() {
    if !peers(&[]) {
        return;
    }
    let s = setup("connect skopeo");
    let proxy = s.proxy(&[]);
    let certs = s.cert_dir();

    // Without the proxy skopeo is refused: it has no credentials.
    let direct = tempfile::tempdir().unwrap();
    let reg_certs = s.reg.cert_dir.as_ref().unwrap();
    let (ok, out) = skopeo_copy(&s.host, reg_certs, &[], direct.path());
    assert!(!ok, "the registry served skopeo without credentials: {out}");

    let dest = tempfile::tempdir().unwrap();
    let proxy_url = format!("http://{}", proxy.addr);
    let (ok, out) = skopeo_copy(
        &s.host,
        certs.path(),
        &[("HTTPS_PROXY", &proxy_url)],
        dest.path(),
    );
    assert!(ok, "{out}\nproxy log:\n{}", proxy.log_text());
    s.assert_layout(dest.path());
    assert!(proxy.metric(INTERCEPTED) >= 1, "{}", proxy.log_text());
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 0);
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), 2);
    assert!(
        s.reg.request_count("GET /v2/team/app/blobs/") >= 2,
        "blobs came from the registry through the proxy"
    );
    assert!(!proxy.log_text().contains("s3cret"));
    let (ok, report) = proxy.cache_verify();
    assert!(ok, "{report}");
}

/// A listener that counts the connections it accepts (and answers nothing).
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    (port, n)
}

/// `curl -p -x proxy URL` → (CONNECT status, HTTP status, body, headers).
fn curl_via(proxy: &Proxy, url: &str, extra: &[&str]) -> (String, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["--max-time", "60", "-s", "-p", "-x"])
        .arg(format!("http://{}", proxy.addr))
        .args(["-w", "%{http_connect} %{http_code}", "-D", "-", "-o"])
        .arg(&body)
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes = text.lines().last().unwrap_or_default().to_owned();
    (codes, text, std::fs::read(&body).unwrap_or_default())
}

/// Not allowlisted → 403 to the CONNECT and no connection at all; a `--connect-tunnel` host gets
/// its bytes through unchanged.
#[test]
fn connect_refuses_unlisted_hosts_and_tunnels_listed_ones_unchanged() {
    if !peers(&[]) {
        return;
    }
    let (refused_port, accepted) = counting_listener();
    // The tunnel target: answers one HTTP request with random bytes.
    let payload = proxy_util::fault::random_bytes(200_000);
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = target.local_addr().unwrap().port();
    let sent = payload.clone();
    std::thread::spawn(move || {
        for c in target.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                sent.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&sent);
        }
    });
    let ca_tmp = tempfile::tempdir().unwrap();
    let ca_dir = ca_tmp.path().join("ca");
    let tunnel = format!("127.0.0.1:{tport}");
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &[
            "--connect",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--connect-tunnel",
            &tunnel,
        ],
    );

    let (codes, text, _) = curl_via(&proxy, &format!("https://127.0.0.1:{refused_port}/"), &[]);
    assert!(codes.starts_with("403"), "{codes}\n{text}");
    let (codes, text, _) = curl_via(&proxy, "https://169.254.169.254/latest/meta-data/", &[]);
    assert!(codes.starts_with("403"), "{codes}\n{text}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the refused host was connected to"
    );
    assert_eq!(proxy.metric(REFUSED), 2);

    let (codes, text, body) = curl_via(&proxy, &format!("http://{tunnel}/payload"), &[]);
    assert_eq!(codes, "200 200", "{text}\n{}", proxy.log_text());
    assert!(
        body == payload,
        "tunnelled bytes changed ({} bytes)",
        body.len()
    );
    assert_eq!(proxy.metric(TUNNELLED), 1);
    assert_eq!(proxy.metric(INTERCEPTED), 0);
}

/// With --htpasswd a CONNECT needs `Proxy-Authorization`: 407 with `Proxy-Authenticate`
/// without it; with it the tunnel opens and the inner requests need nothing more.
#[test]
fn connect_requires_proxy_authorization_with_htpasswd() {
    if !peers(&[]) {
        return;
    }
    let s = setup("connect 407");
    let hp_dir = tempfile::tempdir().unwrap();
    let hp = hp_dir.path().join("htpasswd");
    let out = common::run_checked(
        Command::new("htpasswd").args(["-Bbn", "ci", "p4ss"]),
        "htpasswd",
    );
    std::fs::write(&hp, out.stdout).unwrap();
    let proxy = s.proxy(&["--htpasswd", hp.to_str().unwrap()]);
    let ca = s.ca_dir.join("ca.pem");
    let url = format!("https://{}/v2/team/app/manifests/1", s.host);
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";

    let (codes, text, _) = curl_via(&proxy, &url, &["--cacert", ca.to_str().unwrap()]);
    assert!(codes.starts_with("407"), "{codes}\n{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"regauth\""),
        "{text}"
    );
    let (codes, text, _) = curl_via(
        &proxy,
        &url,
        &["--cacert", ca.to_str().unwrap(), "-U", "ci:wrong"],
    );
    assert!(codes.starts_with("407"), "{codes}\n{text}");
    assert_eq!(proxy.metric(UNAUTHORIZED), 2);

    let (codes, text, body) = curl_via(
        &proxy,
        &url,
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "-U",
            "ci:p4ss",
            "-H",
            accept,
        ],
    );
    assert_eq!(codes, "200 200", "{text}\n{}", proxy.log_text());
    assert_eq!(common::sha256_digest(&body), s.img.manifest_digest);
    assert!(
        proxy.log_text().contains("client=ci"),
        "the CONNECT's user is in the access log:\n{}",
        proxy.log_text()
    );
}

fn openssl(args: &[&str]) -> (bool, String) {
    common::run_text(Command::new("openssl").args(args), "openssl")
}

/// The certificates a client gets through the proxy for `host` (`openssl s_client -proxy`).
fn served_chain(proxy: &Proxy, host: &str) -> String {
    let name = host.rsplit_once(':').unwrap().0;
    let (_, out) = openssl(&[
        "s_client",
        "-proxy",
        &proxy.addr,
        "-connect",
        host,
        "-servername",
        name,
        "-showcerts",
    ]);
    out
}

fn first_pem(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    format!("{}-----END CERTIFICATE-----\n", &text[start..end])
}

/// The CA: key 0600, made once and reused across restarts, name-constrained to the allowlist;
/// the leaf names the host and is signed by the CA (openssl verifies it).
#[test]
fn connect_ca_is_private_reused_constrained_and_signs_the_leaf() {
    if !peers(&[]) {
        return;
    }
    let s = setup("connect ca");
    let mut proxy = s.proxy(&[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.ca_dir.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "ca-key.pem mode {mode:o}");
    let ca = s.ca_dir.join("ca.pem");
    let ca_before = std::fs::read(&ca).unwrap();
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        ca.to_str().unwrap(),
        "-noout",
        "-ext",
        "nameConstraints,basicConstraints",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("DNS:{TEST_HOST}")), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");

    let chain = served_chain(&proxy, &s.host);
    let leaf_dir = tempfile::tempdir().unwrap();
    let leaf = leaf_dir.path().join("leaf.pem");
    std::fs::write(&leaf, first_pem(&chain)).unwrap();
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        leaf.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok && text.contains(&format!("DNS:{TEST_HOST}")), "{text}");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-verify_hostname",
        TEST_HOST,
        leaf.to_str().unwrap(),
    ]);
    assert!(ok, "leaf not signed by the CA for {TEST_HOST}: {text}");
    assert_eq!(proxy.metric("regauth_connect_leaves_minted_total"), 1);

    proxy.restart();
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        ca_before,
        "the CA was made again"
    );
    let chain = served_chain(&proxy, &s.host);
    std::fs::write(&leaf, first_pem(&chain)).unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(
        ok,
        "after a restart the leaf is signed by the same CA: {text}"
    );
}

/// containerd's client (`ctr images pull`, which fetches in the ctr process and honours
/// HTTPS_PROXY) pulls through the proxy with no credentials and no mirror configuration.
#[test]
fn ctr_pulls_through_https_proxy_with_credentials_only_the_proxy_holds() {
    if !peers(&["ctr", "containerd"]) {
        return;
    }
    let containerd = common::Containerd::get();
    let s = setup("connect ctr");
    let proxy = s.proxy(&[]);
    let ns = format!(
        "regauth-connect-test-{}",
        proxy.addr.replace([':', '.'], "-")
    );
    let _cleanup = common::CtrNamespace(containerd.address.clone(), ns.clone());
    let image = format!("{}/team/app:1", s.host);
    let ca = s.ca_dir.join("ca.pem");
    let mut args = vec!["images", "pull", "--tlscacert", ca.to_str().unwrap()];
    if let Some(snap) = containerd.snapshotter {
        args.extend(["--snapshotter", snap]);
    }
    args.push(&image);
    let proxy_url = format!("http://{}", proxy.addr);
    let (ok, out) = common::ctr(
        &containerd.address,
        &ns,
        &[("HTTPS_PROXY", &proxy_url)],
        &args,
    );
    assert!(
        ok,
        "ctr pull through HTTPS_PROXY failed:\n{out}\nproxy log:\n{}",
        proxy.log_text()
    );
    let (ok, out) = common::ctr(&containerd.address, &ns, &[], &["images", "ls", "-q"]);
    assert!(ok && out.contains(&image), "image registered: {out}");
    assert!(proxy.metric(INTERCEPTED) >= 1);
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 0);
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), 2);
}

/// A dockerd of the test's own (vfs storage, its own bridge and no iptables, its own data, exec
/// root, socket and managed containerd) started with HTTPS_PROXY. Never `--bridge none`: that
/// makes dockerd delete the host's `docker0`, breaking the machine's own dockerd; the proxy's CA is trusted in
/// `/etc/docker/certs.d/<host>/ca.crt` (dockerd reads only that folder; the entry names this
/// test's host:port alone and is removed on drop). Stopped with SIGTERM (then SIGKILL) on drop.
struct OwnDockerd {
    child: Option<std::process::Child>,
    /// The bridge made for it (`ip link`), deleted on drop.
    bridge: String,
    sock: PathBuf,
    certs_d: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl OwnDockerd {
    fn start(proxy_url: &str, host: &str, ca: &Path) -> OwnDockerd {
        let certs_d = Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&certs_d).expect("create /etc/docker/certs.d/<host> (root?)");
        std::fs::copy(ca, certs_d.join("ca.crt")).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("rgdd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = tmp.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let sock = d.join("d.sock");
        let log = d.join("dockerd.log");
        let n = std::process::id() % 250;
        let bridge = format!("rgdd{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            common::run_checked(
                Command::new("ip").args(args),
                "ip link/addr (own dockerd bridge)",
            )
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.213.{n}.1/24"), "dev", &bridge]);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("dockerd")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env("HTTPS_PROXY", proxy_url)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge", &bridge, "--iptables=false", "--ip6tables=false"])
            .arg("--ip-masq=false")
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start dockerd");
        let mut me = OwnDockerd {
            child: Some(child),
            bridge,
            sock,
            certs_d,
            log,
            _tmp: tmp,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if me.docker(&["info", "--format", "{{.ServerVersion}}"]).0 {
                return me;
            }
            if let Some(c) = me.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("dockerd exited ({st}):\n{}", me.log_text());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd not ready:\n{}",
                me.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn docker(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new("docker");
        cmd.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args);
        common::run_text(&mut cmd, "docker")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OwnDockerd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs_d);
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

impl OwnDockerd {
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The must-show for dockerd: started with the proxy environment (HTTPS_PROXY) and the
/// proxy's CA, no credentials and no mirror settings, it pulls the private image by its own
/// name; the digest is the registry's.
#[test]
fn dockerd_pulls_through_https_proxy_with_credentials_only_the_proxy_holds() {
    if !peers(&["dockerd", "docker", "ip"]) {
        return;
    }
    let s = setup("connect dockerd");
    let proxy = s.proxy(&[]);
    let dockerd = OwnDockerd::start(
        &format!("http://{}", proxy.addr),
        &s.host,
        &s.ca_dir.join("ca.pem"),
    );
    let image = format!("{}/team/app:1", s.host);
    let (ok, out) = dockerd.docker(&["pull", &image]);
    assert!(
        ok,
        "dockerd pull through HTTPS_PROXY failed:\n{out}\nproxy log:\n{}\ndockerd log:\n{}",
        proxy.log_text(),
        dockerd.log_text()
    );
    let (ok, out) = dockerd.docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]);
    assert!(
        ok && out.contains(&format!("{}/team/app@{}", s.host, s.img.manifest_digest)),
        "{out}"
    );
    assert!(proxy.metric(INTERCEPTED) >= 1);
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 0);
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), 2);
    assert!(!proxy.log_text().contains("s3cret"));
}
