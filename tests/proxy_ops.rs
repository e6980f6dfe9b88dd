//! Operating the proxy: TLS with a generated CA (curl and skopeo verify it), HTTP/2, JSON logs,
//! graceful SIGTERM, Range on a cold blob, and `regauth cache ls|verify|gc`.

mod common;
mod proxy_util;

use proxy_util::{Proxy, curl, curl_code, curl_get};
use std::process::Command;

const MANIFEST_ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json";

#[test]
fn tls_generate_h2_json_logs_range_on_miss_cache_cli_and_sigterm() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let img = common::pushed_image(&reg, "test/busybox:latest", None);
    let tls_dir = tempfile::tempdir().unwrap();
    let tls = tls_dir.path().join("tls");
    let mut proxy = Proxy::start_tls(
        &serde_json::json!({}),
        &[
            "--upstream",
            &format!("local={}", reg.url()),
            "--tls-generate",
            tls.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    let ca = tls.join("ca.pem");
    let https = format!("https://{}", proxy.addr);
    // Verified TLS (CA + leaf), HTTP/2 negotiated by ALPN.
    let (out, _) = curl(&[
        "-s",
        "--cacert",
        ca.to_str().unwrap(),
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &format!("{https}/v2/"),
    ]);
    assert_eq!(out, "200 2", "TLS+h2 ping");
    // Without the CA the certificate is rejected.
    assert_eq!(curl_code(&format!("{https}/v2/"), &[]), "000");
    // skopeo verifies the proxy's certificate with the generated CA.
    let certs = tls_dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let out = common::run_checked(
        Command::new("skopeo")
            .args(["inspect", "--no-tags", "--no-creds"])
            .arg("--cert-dir")
            .arg(&certs)
            .arg(format!("docker://{}/local/test/busybox:latest", proxy.addr)),
        "skopeo inspect through the TLS proxy",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&img.manifest_digest));

    // Range on a cold blob: fetched fully (verified), then the range served.
    let layer = &img.layer_digests[0];
    let (status, headers, body) = curl_get(
        &format!("{https}/v2/local/test/busybox/blobs/{layer}"),
        &["--cacert", ca.to_str().unwrap(), "-H", "Range: bytes=100-"],
    );
    let full = img.blob(layer);
    assert_eq!(status, 206, "{headers}");
    assert_eq!(body, full[100..].to_vec());

    // JSON logs, no secrets (there are none here, but the format must hold).
    let log = proxy.log_text();
    let json_lines = log.lines().filter(|l| l.starts_with('{')).count();
    assert!(json_lines >= 3, "{log}");
    for l in log.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }

    // cache ls / gc.
    let ls = Command::new(common::bin("regauth"))
        .args(["cache", "ls", "--json", "--cache-dir"])
        .arg(&proxy.cache_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.contains(layer) && text.contains(&img.manifest_digest),
        "{text}"
    );
    let (_, _, _) = curl_get(
        &format!("{https}/v2/local/test/busybox/manifests/latest"),
        &["--cacert", ca.to_str().unwrap(), "-H", MANIFEST_ACCEPT],
    );
    // Corrupt an entry behind the proxy's back: verify reports it and fails.
    let hex = &layer["sha256:".len()..];
    let blob_path = proxy.cache_dir.join("blobs/sha256").join(hex);
    let mut bytes = std::fs::read(&blob_path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob_path, bytes).unwrap();
    let (ok, out) = proxy.cache_verify();
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("BAD blob {layer}")), "{out}");
    let gc = Command::new(common::bin("regauth"))
        .args(["cache", "gc", "--max-size", "0", "--cache-dir"])
        .arg(&proxy.cache_dir)
        .output()
        .unwrap();
    assert!(gc.status.success());
    let (ok, out) = proxy.cache_verify();
    assert!(ok && out.contains("0 entries verified, 0 bad"), "{out}");

    // SIGTERM → clean exit.
    assert!(
        proxy.terminate(),
        "graceful shutdown exit status:\n{}",
        proxy.log_text()
    );
}
