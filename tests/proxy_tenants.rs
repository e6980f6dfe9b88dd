//! Tenants (issue 11): per-client identities, pass-through credentials, the access file, and
//! cached private content served only to clients the upstream authorized — against the real
//! `regauth proxy`, the CNCF registry behind `tests/peers/tokenserver.py` with per-user grants
//! (alice → `team-a/*`, bob → `team-b/*`), curl, and (in the `dockerd` group) the docker CLI.
//!
//! The must-show: bob never receives a byte of alice's cached image — by tag, digest, HEAD or
//! Range — while both pull their own through the same proxy; no secret (or its plain hash) shows
//! in the proxy's log, `/metrics` or the cache folder.

mod common;
mod proxy_util;

use proxy_util::{Proxy, curl, curl_get};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN: (&str, &str) = ("admin", "admin-pw-Zq81uu");
const ALICE: (&str, &str) = ("alice", "alice-pw-Kx73vv");
const BOB: (&str, &str) = ("bob", "bob-pw-Jw55ww");

/// A token registry with alice's and bob's images, each visible only to its owner.
struct Tenants {
    reg: common::Registry,
    grants: PathBuf,
    a: common::TestImage,
    b: common::TestImage,
    _dir: tempfile::TempDir,
}

fn tenants() -> Tenants {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!("{}:{}\n{}:{}\n", ALICE.0, ALICE.1, BOB.0, BOB.1),
    )
    .unwrap();
    let grants = dir.path().join("grants.json");
    write_grants(&grants, &["team-a/*"], &["team-b/*"]);
    let reg = common::Registry::start_token_tenants(ADMIN.0, ADMIN.1, &users, &grants);
    let marker = format!("tenants {}", reg.addr);
    let a = common::busybox_image_unique(&dir.path().join("a"), "latest", &format!("{marker} a"));
    let b = common::busybox_image_unique(&dir.path().join("b"), "latest", &format!("{marker} b"));
    common::push_image(&a, &reg, "team-a/app:1.0", Some(ADMIN));
    common::push_image(&b, &reg, "team-b/app:1.0", Some(ADMIN));
    Tenants {
        reg,
        grants,
        a,
        b,
        _dir: dir,
    }
}

fn write_grants(path: &Path, alice: &[&str], bob: &[&str]) {
    let g = serde_json::json!({ ALICE.0: alice, BOB.0: bob });
    std::fs::write(path, g.to_string()).unwrap();
}

fn user(u: (&str, &str)) -> String {
    format!("{}:{}", u.0, u.1)
}

/// Status of `GET` (or `HEAD` with `-I`) of `path` on the proxy as `who` (`None`: anonymous).
fn status(proxy: &Proxy, path: &str, who: Option<&str>, extra: &[&str]) -> (u16, Vec<u8>) {
    let mut args: Vec<&str> = Vec::new();
    if let Some(w) = who {
        args.extend(["-u", w]);
    }
    args.extend_from_slice(extra);
    let (s, _, body) = curl_get(&proxy.url(path), &args);
    (s, body)
}

/// Every way to ask for `img` in `repo` (alias `priv`): tag, digest, blob GET/HEAD/Range.
fn attempts(img: &common::TestImage, repo: &str) -> Vec<(String, Vec<&'static str>)> {
    let layer = &img.layer_digests[0];
    vec![
        (format!("/v2/priv/{repo}/manifests/1.0"), vec![]),
        (
            format!("/v2/priv/{repo}/manifests/{}", img.manifest_digest),
            vec![],
        ),
        (
            format!("/v2/priv/{repo}/manifests/{}", img.manifest_digest),
            vec!["-I"],
        ),
        (format!("/v2/priv/{repo}/blobs/{layer}"), vec![]),
        (format!("/v2/priv/{repo}/blobs/{layer}"), vec!["-I"]),
        (
            format!("/v2/priv/{repo}/blobs/{layer}"),
            vec!["-H", "Range: bytes=0-99"],
        ),
        (
            format!("/v2/priv/{repo}/blobs/{}", img.config_digest),
            vec![],
        ),
    ]
}

/// Fetches every piece of `img` as `who`: all 200 (206 for the Range).
fn fetch_all(proxy: &Proxy, img: &common::TestImage, repo: &str, who: Option<&str>) {
    for (path, extra) in attempts(img, repo) {
        let (s, _) = status(proxy, &path, who, &extra);
        let want = if extra.iter().any(|e| e.starts_with("Range")) {
            206
        } else {
            200
        };
        assert_eq!(s, want, "{path} {extra:?} as {who:?}\n{}", proxy.log_text());
    }
}

/// Every attempt as `who` on `img` is refused with one of `allowed` and carries none of its bytes.
fn refused_all(
    proxy: &Proxy,
    img: &common::TestImage,
    repo: &str,
    who: Option<&str>,
    allowed: &[u16],
) {
    let layer = img.blob(&img.layer_digests[0]);
    let manifest = img.manifest_bytes();
    for (path, extra) in attempts(img, repo) {
        let (s, body) = status(proxy, &path, who, &extra);
        assert!(
            allowed.contains(&s),
            "{path} {extra:?} as {who:?}: {s}, want one of {allowed:?}"
        );
        assert!(
            !contains(&body, &layer[..100]) && !contains(&body, &manifest),
            "{path}: bytes of the image in the refusal"
        );
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// No secret, nor its plain SHA-256 (or the 16-hex prefix an identity once used), in the
/// proxy's log, its `/metrics` body, or any file name or content under its cache folder.
fn assert_no_secrets(proxy: &Proxy, secrets: &[&str]) {
    let log = proxy.log_text();
    let (_, metrics) = curl(&["-s", &proxy.url("/metrics")]);
    let mut files = Vec::new();
    walk(&proxy.cache_dir, &mut files);
    assert!(!files.is_empty(), "the cache holds files");
    for s in secrets {
        let hex = format!("{:x}", Sha256::digest(s.as_bytes()));
        for needle in [s.to_string(), hex[..16].to_owned()] {
            assert!(!log.contains(&needle), "log carries a secret");
            assert!(!metrics.contains(&needle), "/metrics carries a secret");
            for f in &files {
                assert!(
                    !f.to_string_lossy().contains(&needle),
                    "cache file name {f:?}"
                );
                let bytes = std::fs::read(f).unwrap_or_default();
                assert!(!contains(&bytes, needle.as_bytes()), "cache file {f:?}");
            }
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn pass_through_proxy(t: &Tenants, extra: &[&str]) -> Proxy {
    let up = format!("priv={}", t.reg.url());
    let mut args = vec!["--upstream", up.as_str(), "--pass-through"];
    args.extend_from_slice(extra);
    // The proxy holds no credentials of its own.
    Proxy::start(&serde_json::json!({}), &args)
}

/// Pass-through with curl: alice's image is cached by alice; bob is refused every piece of it
/// (401/403) yet gets his own; anonymous clients get 401 with a Basic challenge.
#[test]
fn pass_through_bob_never_gets_alices_cached_image() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let t = tenants();
    let proxy = pass_through_proxy(&t, &[]);
    let (alice, bob) = (user(ALICE), user(BOB));
    fetch_all(&proxy, &t.a, "team-a/app", Some(&alice));
    let fetched = proxy.metric("regauth_upstream_blob_fetches_total");
    fetch_all(&proxy, &t.a, "team-a/app", Some(&alice));
    assert_eq!(
        proxy.metric("regauth_upstream_blob_fetches_total"),
        fetched,
        "alice's second fetch came from the cache"
    );
    refused_all(&proxy, &t.a, "team-a/app", Some(&bob), &[401, 403]);
    // Alice's layer asked for via bob's own repository: that repository does not have it.
    let via_own = format!("/v2/priv/team-b/app/blobs/{}", t.a.layer_digests[0]);
    let (s, _) = status(&proxy, &via_own, Some(&bob), &[]);
    assert!(matches!(s, 401 | 403 | 404), "{s}");
    fetch_all(&proxy, &t.b, "team-b/app", Some(&bob));
    refused_all(&proxy, &t.a, "team-a/app", None, &[401]);
    let (_, headers, _) = curl_get(&proxy.url("/v2/"), &[]);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"regauth\""),
        "{headers}"
    );
    assert!(proxy.metric("regauth_access_denied_total") > 0);
    assert!(proxy.log_text().contains("client=bob") || proxy.log_text().contains("bob"));
    assert_no_secrets(&proxy, &[ALICE.1, BOB.1, ADMIN.1]);
}

/// Access-file mode with the proxy's own credentials: htpasswd users u1 (→ team-a/*) and u2
/// (→ team-b/*) each get only their own; the crossing attempts are 403, and the answer for
/// cached-but-denied equals the one for content that does not exist.
#[test]
fn access_file_keeps_htpasswd_users_in_their_repositories() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl", "htpasswd"]) {
        return;
    }
    let t = tenants();
    let dir = tempfile::tempdir().unwrap();
    let (u1, u2) = (("u1", "u1-pw-Qa19xx"), ("u2", "u2-pw-Rb28yy"));
    let htpasswd = proxy_util::htpasswd_file(dir.path(), &[u1, u2]);
    let access = dir.path().join("access.toml");
    let r = &t.reg.addr;
    std::fs::write(
        &access,
        format!(
            "[[access]]\nidentity = \"u1\"\nrepositories = [\"{r}/team-a/*\"]\n\n\
             [[access]]\nidentity = \"u2\"\nrepositories = [\"{r}/team-b/*\"]\ncredentials = \"proxy\"\n"
        ),
    )
    .unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(user(ADMIN));
    let dac = serde_json::json!({"auths": {r.clone(): {"auth": auth}}}).to_string();
    let up = format!("priv={}", t.reg.url());
    let proxy = Proxy::start_env(
        &serde_json::json!({}),
        &[
            "--upstream",
            &up,
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            "--access",
            access.to_str().unwrap(),
        ],
        &[("DOCKER_AUTH_CONFIG", &dac)],
    );
    let (w1, w2) = (user(u1), user(u2));
    fetch_all(&proxy, &t.a, "team-a/app", Some(&w1));
    refused_all(&proxy, &t.a, "team-a/app", Some(&w2), &[403]);
    refused_all(&proxy, &t.b, "team-b/app", Some(&w1), &[403]);
    fetch_all(&proxy, &t.b, "team-b/app", Some(&w2));
    // u2 asks for alice's layer via its own repository: not there (the proxy's HEAD says so).
    let via_own = format!("/v2/priv/team-b/app/blobs/{}", t.a.layer_digests[0]);
    let (s, _) = status(&proxy, &via_own, Some(&w2), &[]);
    assert_eq!(s, 404);
    // Cached-but-denied reads exactly like absent.
    let absent = format!("sha256:{}", "0".repeat(64));
    let cached = status(
        &proxy,
        &format!("/v2/priv/team-a/app/blobs/{}", t.a.layer_digests[0]),
        Some(&w2),
        &[],
    );
    let missing = status(
        &proxy,
        &format!("/v2/priv/team-a/app/blobs/{absent}"),
        Some(&w2),
        &[],
    );
    assert_eq!(cached, missing);
    let (s, _) = status(&proxy, "/v2/priv/team-a/app/manifests/1.0", None, &[]);
    assert_eq!(s, 401);
    let (s, _) = status(
        &proxy,
        "/v2/priv/team-a/app/manifests/1.0",
        Some("u1:wrong"),
        &[],
    );
    assert_eq!(s, 401);
    assert!(proxy.metric("regauth_access_denied_total{reason=\"access_rules\"}") >= 14);
    assert_no_secrets(&proxy, &[u1.1, u2.1, ADMIN.1]);
}

/// A grant revoked at the token server stops cached content being served within `--authz-ttl`.
#[test]
fn revoked_grant_applies_within_the_authz_ttl() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let t = tenants();
    let proxy = pass_through_proxy(&t, &["--authz-ttl", "2"]);
    let alice = user(ALICE);
    let layer = format!("/v2/priv/team-a/app/blobs/{}", t.a.layer_digests[0]);
    assert_eq!(status(&proxy, &layer, Some(&alice), &[]).0, 200);
    let hits = proxy.metric("regauth_cache_hits_total{kind=\"blob\"}");
    assert_eq!(status(&proxy, &layer, Some(&alice), &[]).0, 200);
    assert!(proxy.metric("regauth_cache_hits_total{kind=\"blob\"}") > hits);
    write_grants(&t.grants, &[], &["team-b/*"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let last = loop {
        let (s, body) = status(&proxy, &layer, Some(&alice), &[]);
        if matches!(s, 401 | 403) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still {s} long after the revocation ({} bytes)",
            body.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(matches!(last, 401 | 403));
    // Bob, never revoked, is unaffected.
    let (s, _) = status(
        &proxy,
        "/v2/priv/team-b/app/manifests/1.0",
        Some(&user(BOB)),
        &[],
    );
    assert_eq!(s, 200);
}

/// A hostile registry answering 200 to every HEAD cannot unlock bytes another registry served:
/// GET, Range and manifest-by-digest through it find nothing.
#[test]
fn a_registry_that_says_yes_to_every_head_unlocks_nothing_cached_from_another() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let reg = common::Registry::start_anonymous();
    let dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image_unique(dir.path(), "latest", &format!("yes {}", reg.addr));
    common::push_image(&img, &reg, "team-a/app:1.0", None);
    let env = proxy_util::fault::start(proxy_util::fault::AuthMode::None);
    let (good, bad) = (
        format!("good={}", reg.url()),
        format!("f=http://{}", env.fault_addr),
    );
    let proxy = Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &good, "--upstream", &bad],
    );
    let layer = &img.layer_digests[0];
    let (s, body) = status(
        &proxy,
        &format!("/v2/good/team-a/app/blobs/{layer}"),
        None,
        &[],
    );
    assert_eq!(s, 200);
    let m = format!("/v2/good/team-a/app/manifests/{}", img.manifest_digest);
    assert_eq!(status(&proxy, &m, None, &[]).0, 200);
    let bytes = img.blob(layer);
    assert_eq!(body, bytes);
    for (path, extra) in [
        (format!("/v2/f/yes/app/blobs/{layer}"), vec![]),
        (
            format!("/v2/f/yes/app/blobs/{layer}"),
            vec!["-H", "Range: bytes=0-99"],
        ),
        (
            format!("/v2/f/yes/app/manifests/{}", img.manifest_digest),
            vec![],
        ),
    ] {
        let (s, body) = status(&proxy, &path, None, &extra);
        assert!(!matches!(s, 200 | 206), "{path} {extra:?}: {s}");
        assert!(
            !contains(&body, &bytes[..100]),
            "{path}: cached bytes leaked"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The real docker CLI (the `dockerd` nextest group).
// ---------------------------------------------------------------------------------------------

fn docker(config_dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run docker");
    if let Some(s) = stdin {
        let _ = child.stdin.take().unwrap().write_all(s.as_bytes());
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), common::output_text(&out))
}

struct RemoveImages(Vec<String>);
impl Drop for RemoveImages {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// `docker login <proxy>` as alice, pull team-a/app (cached); as bob, team-a/app by tag and by
/// digest fail although cached, and team-b/app pulls; anonymous docker is refused.
#[test]
fn docker_login_pass_through_bob_never_pulls_alices_image() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"])
        || !common::require_docker_daemon()
    {
        return;
    }
    let t = tenants();
    let proxy = pass_through_proxy(&t, &[]);
    let a_tag = format!("{}/priv/team-a/app:1.0", proxy.addr);
    let a_digest = format!("{}/priv/team-a/app@{}", proxy.addr, t.a.manifest_digest);
    let b_tag = format!("{}/priv/team-b/app:1.0", proxy.addr);
    let _cleanup = RemoveImages(vec![a_tag.clone(), a_digest.clone(), b_tag.clone()]);
    let (alice_cfg, bob_cfg, anon_cfg) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // An `auths` entry keeps the docker CLI from picking a credential store of the machine's
    // (pass, secretservice): `docker login` then writes into this config.
    for cfg in [&alice_cfg, &bob_cfg, &anon_cfg] {
        let c = serde_json::json!({"auths": {"placeholder.invalid": {}}});
        std::fs::write(cfg.path().join("config.json"), c.to_string()).unwrap();
    }
    let login = |cfg: &Path, u: (&str, &str)| {
        let (ok, out) = docker(
            cfg,
            &["login", "-u", u.0, "--password-stdin", &proxy.addr],
            Some(u.1),
        );
        assert!(ok, "docker login as {}: {out}\n{}", u.0, proxy.log_text());
    };
    login(alice_cfg.path(), ALICE);
    let (ok, out) = docker(alice_cfg.path(), &["pull", &a_tag], None);
    assert!(ok, "alice pulls her image: {out}\n{}", proxy.log_text());
    let (ok, out) = docker(alice_cfg.path(), &["rmi", "-f", &a_tag], None);
    assert!(ok, "{out}");
    let fetched = proxy.metric("regauth_upstream_blob_fetches_total");
    assert!(fetched >= 2, "alice's layers are cached");

    // A wrong password is refused at login, by the upstream (the proxy cannot judge it).
    let (ok, out) = docker(
        bob_cfg.path(),
        &["login", "-u", BOB.0, "--password-stdin", &proxy.addr],
        Some("not-bobs-password"),
    );
    assert!(!ok, "a wrong password must not log in: {out}");
    assert!(out.to_lowercase().contains("unauthorized"), "{out}");
    login(bob_cfg.path(), BOB);
    for image in [&a_tag, &a_digest] {
        let (ok, out) = docker(bob_cfg.path(), &["pull", image], None);
        assert!(!ok, "bob must not pull {image}: {out}");
    }
    let (ok, out) = docker(anon_cfg.path(), &["pull", &a_tag], None);
    assert!(!ok, "anonymous must not pull {a_tag}: {out}");
    let bob = user(BOB);
    refused_all(&proxy, &t.a, "team-a/app", Some(&bob), &[401, 403]);
    let (ok, out) = docker(bob_cfg.path(), &["pull", &b_tag], None);
    assert!(ok, "bob pulls his own image: {out}\n{}", proxy.log_text());
    assert_eq!(
        proxy.metric("regauth_upstream_blob_fetches_total"),
        fetched + 2,
        "bob's config and layer fetched, nothing of alice's again"
    );
    // docker login stored the passwords in the CLI configs; none may reach the proxy's own.
    assert_no_secrets(&proxy, &[ALICE.1, BOB.1, ADMIN.1]);
}
