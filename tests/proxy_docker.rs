//! The machine's dockerd pulls a private image through `regauth proxy` with no credentials in the
//! docker CLI: the proxy holds them (DOCKER_AUTH_CONFIG), does the token dance upstream, verifies
//! and caches; the image then runs.

mod common;
mod proxy_util;

use base64::Engine;
use proxy_util::Proxy;
use std::process::Command;

fn docker(config_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", config_dir).args(args);
    common::run_text(&mut cmd, "docker")
}

struct RemoveImage(String);
impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// The must-show: an htpasswd-protected registry, the credentials held by the proxy in a
/// `credsStore` (our encrypted file helper), nothing in the docker CLI.
#[test]
fn dockerd_pulls_htpasswd_image_through_proxy_with_creds_store() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"])
        || !common::require_docker_daemon()
    {
        return;
    }
    let reg = common::Registry::start_htpasswd("alice", "s3cret");
    let store_dir = tempfile::tempdir().unwrap();
    let mut store = Command::new(common::bin("docker-credential-file"))
        .arg("store")
        .env("REGAUTH_CONFIG_DIR", store_dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let creds = serde_json::json!({"ServerURL": reg.addr, "Username": "alice", "Secret": "s3cret"});
    store
        .stdin
        .take()
        .unwrap()
        .write_all(creds.to_string().as_bytes())
        .unwrap();
    assert!(
        store.wait().unwrap().success(),
        "docker-credential-file store"
    );
    let store_path = store_dir.path().to_str().unwrap().to_owned();
    let proxy = Proxy::start_env(
        &serde_json::json!({"credsStore": "file"}),
        &["--upstream", &format!("priv={}", reg.url())],
        &[("REGAUTH_CONFIG_DIR", &store_path)],
    );
    pull_and_run(&reg, &proxy, "team/basic:2.0");
    assert!(!proxy.log_text().contains("s3cret"));
}

#[test]
fn dockerd_pulls_private_image_through_proxy_without_client_credentials() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"])
        || !common::require_docker_daemon()
    {
        return;
    }
    let reg = common::Registry::start_token_private("alice", "s3cret");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let dac = serde_json::json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string();
    let proxy = Proxy::start_env(
        &serde_json::json!({}),
        &["--upstream", &format!("priv={}", reg.url())],
        &[("DOCKER_AUTH_CONFIG", &dac)],
    );
    pull_and_run(&reg, &proxy, "team/app:1.0");
    assert!(
        reg.token_request_count("user=alice") >= 1,
        "tokens fetched with the proxy's credentials"
    );
    assert!(!proxy.log_text().contains("s3cret"));
}

/// Pushes the busybox image to `reg` as `repo_tag`, shows docker itself is refused there, then has
/// dockerd pull it through `proxy` (alias `priv`) with an empty client config, runs it, and pulls
/// again from the proxy's cache.
fn pull_and_run(reg: &common::Registry, proxy: &Proxy, repo_tag: &str) {
    let img_dir = tempfile::tempdir().unwrap();
    // Unique layer per test (and per run): dockerd must fetch every blob through the proxy, so the
    // blob-fetch counts and the "second pull from cache" check below measure this test's pull.
    let marker = format!("{repo_tag} {}", proxy.addr);
    let img = common::busybox_image_unique(img_dir.path(), "latest", &marker);
    common::push_image(&img, reg, repo_tag, Some(("alice", "s3cret")));
    let empty_cli_config = tempfile::tempdir().unwrap();
    let image = format!("{}/priv/{repo_tag}", proxy.addr);
    let _cleanup = RemoveImage(image.clone());

    // Without the proxy's credentials the upstream refuses docker itself.
    let (ok, out) = docker(
        empty_cli_config.path(),
        &["pull", &format!("{}/{repo_tag}", reg.addr)],
    );
    assert!(!ok, "upstream should refuse anonymous pulls: {out}");

    let (ok, out) = docker(empty_cli_config.path(), &["pull", &image]);
    assert!(
        ok,
        "docker pull through proxy failed:\n{out}\nproxy log:\n{}",
        proxy.log_text()
    );
    assert!(
        out.contains(&img.manifest_digest),
        "pulled digest shown: {out}"
    );
    let (ok, out) = docker(
        empty_cli_config.path(),
        &[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "echo hello-through-regauth; cat /regauth-test-marker",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("hello-through-regauth"), "{out}");
    assert!(out.contains(&marker), "this test's own layer ran: {out}");
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 0);
    let fetched = proxy.metric("regauth_upstream_blob_fetches_total");
    assert_eq!(fetched, 2, "config + layer downloaded once each");

    // Pull again after removing the local image: served from the proxy cache.
    let (ok, out) = docker(empty_cli_config.path(), &["rmi", "-f", &image]);
    assert!(ok, "{out}");
    let hits = proxy.metric(BLOB_HITS);
    let (ok, out) = docker(empty_cli_config.path(), &["pull", &image]);
    assert!(ok, "{out}");
    assert_eq!(proxy.metric("regauth_upstream_blob_fetches_total"), fetched);
    assert!(
        proxy.metric(BLOB_HITS) >= hits + 2,
        "dockerd fetched config + layer again, from the proxy's cache"
    );
    let (ok, out) = proxy.cache_verify();
    assert!(ok && out.contains(" 0 bad"), "{out}");
}

const BLOB_HITS: &str = "regauth_cache_hits_total{kind=\"blob\"}";

/// containerd (dockerd's own when its socket is there, else a harness containerd: `common::Containerd`)
/// via `ctr --hosts-dir` with a hosts.toml mirror: it appends `?ns=<registry>` and the proxy routes on
/// it, adding the credentials containerd never sends to a mirror.
#[test]
fn containerd_pulls_through_proxy_with_ns_routing() {
    if !common::require_peers(&["docker-registry", "skopeo", "ctr", "containerd"]) {
        return;
    }
    let containerd = common::Containerd::get();
    let reg = common::Registry::start_token_private("alice", "s3cret");
    let proxy = Proxy::start(
        &proxy_util::auths_config(&reg.addr, "alice", "s3cret"),
        &["--upstream", &format!("priv={}", reg.url())],
    );
    let img_dir = tempfile::tempdir().unwrap();
    let marker = format!("containerd {}", proxy.addr);
    let img = common::busybox_image_unique(img_dir.path(), "latest", &marker);
    common::push_image(&img, &reg, "team/app:2.0", Some(("alice", "s3cret")));
    let hosts = tempfile::tempdir().unwrap();
    let dir = hosts.path().join(&reg.addr);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.url(),
            proxy.addr
        ),
    )
    .unwrap();
    let ns = format!("regauth-proxy-test-{}", proxy.addr.replace([':', '.'], "-"));
    let image = format!("{}/team/app:2.0", reg.addr);
    let mut args = vec![
        "images",
        "pull",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
    ];
    if let Some(s) = containerd.snapshotter {
        args.extend(["--snapshotter", s]);
    }
    args.push(&image);
    let (ok, out) = common::ctr(&containerd.address, &ns, &[], &args);
    let _cleanup = common::CtrNamespace(containerd.address.clone(), ns.clone());
    assert!(
        ok,
        "ctr pull through proxy failed (containerd at {}):\n{out}\nproxy log:\n{}",
        containerd.address.display(),
        proxy.log_text()
    );
    assert!(
        proxy.log_text().contains(&format!("ns={}", reg.addr))
            || proxy
                .log_text()
                .contains(&format!("ns={}", reg.addr.replace(':', "%3A"))),
        "containerd sent ?ns=; proxy log:\n{}",
        proxy.log_text()
    );
    let (ok, out) = common::ctr(&containerd.address, &ns, &[], &["images", "ls", "-q"]);
    assert!(ok && out.contains(&image), "image registered: {out}");
    assert_eq!(proxy.metric("regauth_verification_failures_total"), 0);
    assert_eq!(
        proxy.metric("regauth_upstream_blob_fetches_total"),
        2,
        "config + this test's unique layer fetched through the proxy"
    );
}
