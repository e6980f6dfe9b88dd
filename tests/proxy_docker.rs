//! The machine's dockerd pulls a private image through `regauth proxy` with no credentials in the
//! docker CLI: the proxy holds them (DOCKER_AUTH_CONFIG), does the token dance upstream, verifies
//! and caches; the image then runs.

mod common;
mod proxy_util;

use base64::Engine;
use proxy_util::Proxy;
use std::process::Command;

fn docker(config_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(args)
        .output()
        .expect("run docker");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct RemoveImage(String);
impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn dockerd_pulls_private_image_through_proxy_without_client_credentials() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"])
        || !common::require_docker_daemon()
    {
        return;
    }
    let reg = common::Registry::start_token_private("alice", "s3cret");
    let img_dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(img_dir.path(), "latest");
    common::push_image(&img, &reg, "team/app:1.0", Some(("alice", "s3cret")));

    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let dac = serde_json::json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string();
    let proxy = Proxy::start_env(
        &serde_json::json!({}),
        &["--upstream", &format!("priv={}", reg.url())],
        &[("DOCKER_AUTH_CONFIG", &dac)],
    );
    let empty_cli_config = tempfile::tempdir().unwrap();
    let image = format!("{}/priv/team/app:1.0", proxy.addr);
    let _cleanup = RemoveImage(image.clone());

    // Without the proxy's credentials the upstream refuses docker itself.
    let (ok, out) = docker(
        empty_cli_config.path(),
        &["pull", &format!("{}/team/app:1.0", reg.addr)],
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
            "echo hello-through-regauth",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("hello-through-regauth"), "{out}");
    assert!(
        reg.token_request_count("user=alice") >= 1,
        "tokens fetched with the proxy's credentials"
    );
    assert_eq!(proxy.metric("regauth_proxy_verification_failures_total"), 0);
    let fetched = proxy.metric("regauth_proxy_upstream_blob_fetches_total");
    assert_eq!(fetched, 2, "config + layer downloaded once each");

    // Pull again after removing the local image: served from the proxy cache.
    let (ok, out) = docker(empty_cli_config.path(), &["rmi", "-f", &image]);
    assert!(ok, "{out}");
    let (ok, out) = docker(empty_cli_config.path(), &["pull", &image]);
    assert!(ok, "{out}");
    assert_eq!(
        proxy.metric("regauth_proxy_upstream_blob_fetches_total"),
        fetched
    );
    let (ok, out) = proxy.cache_verify();
    assert!(ok && out.contains(" 0 bad"), "{out}");
    assert!(!proxy.log_text().contains("s3cret"));
}
