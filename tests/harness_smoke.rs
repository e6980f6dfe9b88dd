//! Proves the shared harness (`tests/common/mod.rs`) against the real peers: registries with each auth
//! mode, the busybox OCI image pushed with skopeo, moto's ECR endpoint and the Docker Engine.
//! Owns no product behaviour: if these fail, every other integration test's setup is suspect.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Moto, Registry, TestImage};

const USER: &str = "alice";
const PASS: &str = "s3cret";

fn skopeo_inspect(reg: &Registry, repo_tag: &str, creds: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false", "--no-tags"]);
    match creds {
        Some((u, p)) => cmd.arg("--creds").arg(format!("{u}:{p}")),
        None => cmd.arg("--no-creds"),
    };
    cmd.arg(format!("docker://{}/{repo_tag}", reg.addr));
    cmd.stdin(Stdio::null())
        .output()
        .expect("run skopeo inspect")
}

/// `skopeo inspect` must succeed and report `img`'s manifest digest.
fn assert_inspect_digest(
    reg: &Registry,
    repo_tag: &str,
    creds: Option<(&str, &str)>,
    img: &TestImage,
) {
    let out = skopeo_inspect(reg, repo_tag, creds);
    assert!(
        out.status.success(),
        "inspect {repo_tag} failed: {}",
        common::output_text(&out)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("skopeo inspect prints JSON");
    assert_eq!(
        v["Digest"],
        img.manifest_digest.as_str(),
        "digest of {repo_tag}"
    );
    assert_eq!(
        v["Layers"][0],
        img.layer_digests[0].as_str(),
        "layer of {repo_tag}"
    );
}

fn assert_inspect_refused(reg: &Registry, repo_tag: &str, creds: Option<(&str, &str)>) {
    let out = skopeo_inspect(reg, repo_tag, creds);
    assert!(
        !out.status.success(),
        "inspect {repo_tag} with {creds:?} should fail: {}",
        common::output_text(&out)
    );
    assert!(
        common::output_text(&out)
            .to_lowercase()
            .contains("unauthorized"),
        "expected `unauthorized`, got: {}",
        common::output_text(&out)
    );
}

#[test]
fn busybox_image_is_deterministic_and_consistent() {
    if !common::require_peers(&["tar", "gzip"]) {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let img_a = common::busybox_image(a.path(), "latest");
    let img_b = common::busybox_image(b.path(), "v1");
    assert_eq!(img_a.manifest_digest, img_b.manifest_digest);
    assert_eq!(img_a.layer_digests, img_b.layer_digests);
    // Every digest names the bytes it points at, and the manifest references config and layer.
    for d in [
        &img_a.manifest_digest,
        &img_a.config_digest,
        &img_a.layer_digests[0],
    ] {
        assert_eq!(&common::sha256_digest(&img_a.blob(d)), d);
    }
    let m: serde_json::Value = serde_json::from_slice(&img_a.manifest_bytes()).unwrap();
    assert_eq!(m["config"]["digest"], img_a.config_digest.as_str());
    assert_eq!(m["layers"][0]["digest"], img_a.layer_digests[0].as_str());
    assert_eq!(img_a.tag(), "latest");
    // A second tag in the same layout keeps the first; both name the same manifest.
    let again = common::busybox_image(a.path(), "second");
    assert_eq!(again.manifest_digest, img_a.manifest_digest);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("index.json")).unwrap()).unwrap();
    let mut refs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    refs.sort_unstable();
    assert_eq!(refs, ["latest", "second"]);
}

#[test]
fn htpasswd_registry_push_inspect_restart() {
    if !common::require_peers(&["docker-registry", "skopeo", "htpasswd", "tar", "gzip"]) {
        return;
    }
    let mut reg = Registry::start_htpasswd(USER, PASS);
    let dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(dir.path(), "latest");

    let refused = common::try_push_image(&img, &reg, "test/busybox:latest", None)
        .expect_err("anonymous push must fail");
    assert!(refused.to_lowercase().contains("unauthorized"), "{refused}");
    common::push_image(&img, &reg, "test/busybox:latest", Some((USER, PASS)));

    assert_inspect_refused(&reg, "test/busybox:latest", None);
    assert_inspect_refused(&reg, "test/busybox:latest", Some((USER, "wrong")));
    assert_inspect_digest(&reg, "test/busybox:latest", Some((USER, PASS)), &img);
    assert!(reg.request_count("GET /v2/test/busybox/manifests/latest") >= 1);

    // restart keeps port and storage; stop really stops.
    reg.stop();
    assert!(
        !skopeo_inspect(&reg, "test/busybox:latest", Some((USER, PASS)))
            .status
            .success()
    );
    reg.restart();
    assert_inspect_digest(&reg, "test/busybox:latest", Some((USER, PASS)), &img);
}

#[test]
fn tls_registry_verifies_with_its_ca_only() {
    if !common::require_peers(&[
        "docker-registry",
        "skopeo",
        "htpasswd",
        "openssl",
        "tar",
        "gzip",
    ]) {
        return;
    }
    let reg = Registry::start_tls(common::RegistryAuth::Htpasswd {
        user: USER.into(),
        pass: PASS.into(),
    });
    assert!(reg.url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(dir.path(), "latest");
    common::push_image(&img, &reg, "test/busybox:latest", Some((USER, PASS)));

    let inspect = |cert_dir: Option<&Path>| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--no-tags", "--creds", &format!("{USER}:{PASS}")]);
        if let Some(d) = cert_dir {
            cmd.arg("--cert-dir").arg(d);
        }
        cmd.arg(format!("docker://{}/test/busybox:latest", reg.addr));
        cmd.stdin(Stdio::null()).output().expect("run skopeo")
    };
    let verified = inspect(reg.cert_dir.as_deref());
    assert!(
        verified.status.success(),
        "inspect with the CA: {}",
        common::output_text(&verified)
    );
    let v: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(v["Digest"], img.manifest_digest.as_str());
    let unverified = inspect(None);
    assert!(
        !unverified.status.success(),
        "inspect without the CA must fail: {}",
        common::output_text(&unverified)
    );
    assert!(
        common::output_text(&unverified).contains("x509"),
        "{}",
        common::output_text(&unverified)
    );
}

#[test]
fn token_registry_push_inspect() {
    if !common::require_peers(&[
        "docker-registry",
        "skopeo",
        "tar",
        "gzip",
        ".venv-moto/bin/python",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(dir.path(), "latest");

    // Private: anonymous clients get a token without access, so the registry refuses them.
    let private = Registry::start_token_private(USER, PASS);
    common::push_image(&img, &private, "test/busybox:latest", Some((USER, PASS)));
    assert!(
        private.token_request_count("user=alice") >= 1,
        "push used a token"
    );
    assert_inspect_refused(&private, "test/busybox:latest", None);
    assert_inspect_refused(&private, "test/busybox:latest", Some((USER, "wrong")));
    assert!(
        private.token_request_count("status=401 user=alice") >= 1,
        "wrong password hit the token server"
    );
    let before = private.token_request_count("GET status=200 user=alice");
    assert_inspect_digest(&private, "test/busybox:latest", Some((USER, PASS)), &img);
    assert!(private.token_request_count("GET status=200 user=alice") > before);
    assert!(private.token_request_count("granted=repository:test/busybox:pull") >= 1);

    // Default: anonymous pull allowed, anonymous push denied.
    let public = Registry::start_token(USER, PASS);
    common::push_image(&img, &public, "test/busybox:latest", Some((USER, PASS)));
    let denied = common::try_push_image(&img, &public, "test/other:latest", None)
        .expect_err("anonymous push must fail");
    assert!(denied.to_lowercase().contains("denied"), "{denied}");
    assert_inspect_digest(&public, "test/busybox:latest", None, &img);
    assert_inspect_digest(&public, "test/busybox:latest", Some((USER, PASS)), &img);
}

#[test]
fn moto_serves_ecr_authorization_tokens() {
    if !common::require_peers(&[".venv-moto/bin/moto_server", ".venv-moto/bin/python"]) {
        return;
    }
    let moto = Moto::start();
    let before = moto.request_count("POST / ");
    let script = "import base64, boto3\n\
                  ecr = boto3.client('ecr')\n\
                  d = ecr.get_authorization_token()['authorizationData'][0]\n\
                  user = base64.b64decode(d['authorizationToken']).decode().split(':')[0]\n\
                  print(d['proxyEndpoint'], user)\n";
    let out = Command::new(common::venv_python())
        .arg("-c")
        .arg(script)
        .envs(moto.aws_env())
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        common::output_text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(".dkr.ecr.us-east-1.amazonaws.com AWS"),
        "{stdout}"
    );
    assert!(
        moto.request_count("POST / ") > before,
        "moto log did not count the call"
    );
}

/// Removes a docker image on drop (even when the test fails).
struct DockerImage(String);

impl Drop for DockerImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

#[test]
fn docker_daemon_pulls_and_runs_from_loopback_registry() {
    if !common::require_peers(&["docker-registry", "skopeo", "tar", "gzip"])
        || !common::require_docker_daemon()
    {
        return;
    }
    let reg = Registry::start_anonymous();
    let dir = tempfile::tempdir().unwrap();
    let img = common::busybox_image(dir.path(), "latest");
    let nonce = format!("{}-{}", std::process::id(), common::free_port());
    let repo_tag = format!("regauth-smoke/bb-{nonce}:latest");
    common::push_image(&img, &reg, &repo_tag, None);

    let image = format!("{}/{repo_tag}", reg.addr);
    let _cleanup = DockerImage(image.clone());
    let out = docker(&["pull", &image]);
    assert!(
        out.status.success(),
        "docker pull: {}",
        common::output_text(&out)
    );

    // The engine's image ID is the config digest, and it recorded the manifest digest we pushed.
    let out = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{json .RepoDigests}}",
        &image,
    ]);
    assert!(
        out.status.success(),
        "docker image inspect: {}",
        common::output_text(&out)
    );
    let inspect = String::from_utf8_lossy(&out.stdout);
    assert!(
        inspect.starts_with(&img.config_digest),
        "{inspect} vs config {}",
        img.config_digest
    );
    assert!(
        inspect.contains(&img.manifest_digest),
        "{inspect} vs manifest {}",
        img.manifest_digest
    );

    let word = format!("regauth-smoke-{nonce}");
    let name = format!("regauth-smoke-{nonce}");
    let out = docker(&[
        "run",
        "--rm",
        "--name",
        &name,
        "--network",
        "none",
        &image,
        "/bin/sh",
        "-c",
        &format!("echo {word}"),
    ]);
    assert!(
        out.status.success(),
        "docker run: {}",
        common::output_text(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), word);
    // The daemon asked this registry (a HEAD is enough when its content store already holds
    // the same bytes from another test's pull of the same busybox layers).
    assert!(reg.request_count(" /v2/regauth-smoke/") >= 1);
}

/// Not a test on its own: `peers_die_with_the_test_process` runs it in a child process.
#[test]
#[ignore = "helper process for peers_die_with_the_test_process"]
fn helper_hold_registry() {
    if std::env::var_os("REGAUTH_HARNESS_HELPER").is_none() {
        return;
    }
    let reg = Registry::start_anonymous();
    println!("DIR={}", reg.dir.display());
    println!("ADDR={}", reg.addr);
    std::thread::sleep(std::time::Duration::from_secs(300));
}

#[test]
fn peers_die_with_the_test_process() {
    use std::io::BufRead;
    if !common::require_peers(&["docker-registry", "bash"]) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "helper_hold_registry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REGAUTH_HARNESS_HELPER", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("re-run this test binary");
    let stdout = child.stdout.take().unwrap();
    // libtest prints "test helper_hold_registry ... " without a newline, so match anywhere in a line.
    let mut dir = None;
    let addr = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            if let Some((_, d)) = l.split_once("DIR=") {
                dir = Some(std::path::PathBuf::from(d.trim()));
            }
            l.split_once("ADDR=").map(|(_, a)| a.trim().to_string())
        })
        .expect("helper printed the registry address");
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    assert!(
        std::net::TcpStream::connect(sa).is_ok(),
        "registry up before the kill"
    );

    child.kill().unwrap(); // SIGKILL: no Drop runs in the helper
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut gone = false;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(sa).is_err() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The helper's Drop never ran, so its directory is ours to remove.
    if let Some(dir) = dir.filter(|d| d.starts_with(std::env::temp_dir())) {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(
        gone,
        "registry on {addr} outlived its SIGKILLed test process"
    );
}

/// The binaries are built with `test = false` (root and helpers/*/Cargo.toml: no second, test-harness copy
/// of each CLI to compile and link). That is only right while they hold no unit tests: a `#[test]` added
/// to `src/main.rs`, `src/cli/` or `helpers/*/src/` would silently never run, so this fails instead.
#[test]
fn binaries_built_with_test_false_hold_no_unit_tests() {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = common::repo_root();
    let untested = |manifest: &std::path::Path| -> bool {
        let text = std::fs::read_to_string(manifest).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        v.get("bin").and_then(|b| b.as_array()).is_some_and(|bins| {
            bins.iter()
                .any(|b| b.get("test").and_then(|t| t.as_bool()) == Some(false))
        })
    };
    let mut files = Vec::new();
    if untested(&root.join("Cargo.toml")) {
        files.push(root.join("src/main.rs"));
        rust_files(&root.join("src/cli"), &mut files);
    }
    let mut helpers = 0;
    for h in std::fs::read_dir(root.join("helpers")).unwrap().flatten() {
        if h.path().join("Cargo.toml").is_file() && untested(&h.path().join("Cargo.toml")) {
            helpers += 1;
            rust_files(&h.path().join("src"), &mut files);
        }
    }
    assert!(helpers >= 6, "every helper bin is test = false: {helpers}");
    let with_tests: Vec<String> = files
        .iter()
        .filter(|p| {
            let s = std::fs::read_to_string(p).unwrap();
            s.contains("#[test]") || s.contains("#[cfg(test)]") || s.contains("::test]")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        with_tests.is_empty(),
        "unit tests in a binary built with `test = false` would never run: remove `test = false` from its \
         [[bin]] (or move the tests into the library): {with_tests:?}"
    );
}
