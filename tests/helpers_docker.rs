//! The docker CLI + the machine's dockerd against a local htpasswd registry, with our helpers as
//! `credsStore`: `docker login` stores through `docker-credential-file` (directly, and through the
//! `docker-credential-regauth` router), `docker push`/`pull` use what it stored, no plaintext
//! password (nor its base64 `auth`) lands in `config.json` or in the store, and `docker logout`
//! erases it.

mod common;

use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const USER: &str = "alice-docker";
const PASS: &str = "s3cret-Docker-pass";

struct Env {
    _tmp: tempfile::TempDir,
    docker_config: PathBuf,
    regauth_dir: PathBuf,
    images: Vec<String>,
}

impl Env {
    fn new(config_json: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let docker_config = tmp.path().join("docker");
        let regauth_dir = tmp.path().join("regauth");
        std::fs::create_dir_all(&docker_config).unwrap();
        std::fs::write(docker_config.join("config.json"), config_json).unwrap();
        Env {
            _tmp: tmp,
            docker_config,
            regauth_dir,
            images: Vec::new(),
        }
    }

    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("PATH", common::path_with_bins())
            .env("DOCKER_CONFIG", &self.docker_config)
            .env("REGAUTH_CONFIG_DIR", &self.regauth_dir)
            .env_remove("REGAUTH_ROUTER_CONFIG")
            .env_remove("DOCKER_AUTH_CONFIG");
        c
    }

    fn docker(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd("docker");
        c.args(args);
        run(c, stdin)
    }

    fn docker_ok(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let out = self.docker(args, stdin);
        common::assert_success(&out, &format!("docker {args:?}"));
        out
    }

    fn helper(&self, name: &str, action: &str, stdin: &str) -> Output {
        let mut c = self.cmd(common::bin(name));
        c.arg(action);
        run(c, Some(stdin))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for img in &self.images {
            let _ = Command::new("docker")
                .args(["rmi", "-f", img])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(mut c: Command, stdin: Option<&str>) -> Output {
    match stdin {
        Some(input) => common::run_with_stdin(&mut c, input.as_bytes()),
        None => c.stdin(Stdio::null()).output().expect("spawn"),
    }
}

/// A busybox rootfs tarball for `docker import`.
fn rootfs_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let tar = dir.join("rootfs.tar");
    common::run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        "tar rootfs",
    );
    tar
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// No file under `dir` holds the password, its `auth` encoding, or (for the store) the username.
fn assert_no_plaintext(dir: &Path, also: &[&str]) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    for entry in walk(dir) {
        let data = std::fs::read(&entry).unwrap();
        for needle in [PASS, auth.as_str()].iter().chain(also) {
            assert!(
                !contains(&data, needle),
                "{} contains {needle:?} in plaintext",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn unique(tag: &str) -> String {
    format!(
        "regauth-helpers-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// login → push → rmi → pull → checks → logout → pull refused.
fn login_push_pull_logout(env: &mut Env, reg: &common::Registry, store_helper: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let tar = rootfs_tar(tmp.path());
    let image = format!("{}/{}:v1", reg.addr, unique(store_helper));
    env.images.push(image.clone());

    // Before login, push is refused: the registry really wants credentials.
    env.docker_ok(&["import", tar.to_str().unwrap(), &image], None);
    let out = env.docker(&["push", &image], None);
    assert!(!out.status.success(), "push without login must fail");

    let out = env.docker_ok(
        &["login", "--username", USER, "--password-stdin", &reg.addr],
        Some(PASS),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Login Succeeded"), "{text}");
    assert!(
        !text.contains("stored unencrypted"),
        "docker fell back to config.json: {text}"
    );

    // The store holds it, encrypted; docker's config holds no secret.
    let out = env.helper("docker-credential-file", "get", &reg.addr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Username"], USER);
    assert_eq!(v["Secret"], PASS);
    assert!(env.regauth_dir.join("credentials.enc").is_file());
    assert_no_plaintext(&env.docker_config, &[]);
    assert_no_plaintext(&env.regauth_dir, &[]);
    // The store hides usernames and hosts too (router.json, beside it, names hosts on purpose).
    let store = std::fs::read(env.regauth_dir.join("credentials.enc")).unwrap();
    for needle in [USER, reg.addr.as_str()] {
        assert!(
            !contains(&store, needle),
            "credentials.enc shows {needle:?}"
        );
    }

    env.docker_ok(&["push", &image], None);
    env.docker_ok(&["rmi", &image], None);
    env.docker_ok(&["pull", &image], None);
    let out = env.docker_ok(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "/bin/sh",
            "-c",
            "echo ran-ok",
        ],
        None,
    );
    assert!(contains(&out.stdout, "ran-ok"));

    env.docker_ok(&["logout", &reg.addr], None);
    let out = env.helper("docker-credential-file", "get", &reg.addr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "credentials not found in native keychain\n"
    );
    // Without credentials the registry refuses the pull again.
    env.docker_ok(&["rmi", &image], None);
    let out = env.docker(&["pull", &image], None);
    assert!(!out.status.success(), "pull after logout must fail");
}

#[test]
fn docker_login_push_pull_logout_with_file_store() {
    if !common::require_docker_daemon()
        || !common::require_peers(&["docker-registry", "htpasswd", "tar"])
    {
        return;
    }
    common::bin("docker-credential-file");
    let reg = common::Registry::start_htpasswd(USER, PASS);
    let mut env = Env::new(r#"{"credsStore":"file"}"#);
    login_push_pull_logout(&mut env, &reg, "file");
}

#[test]
fn docker_login_push_pull_logout_through_router() {
    if !common::require_docker_daemon()
        || !common::require_peers(&["docker-registry", "htpasswd", "tar"])
    {
        return;
    }
    common::bin("docker-credential-regauth");
    common::bin("docker-credential-file");
    let reg = common::Registry::start_htpasswd(USER, PASS);
    let mut env = Env::new(r#"{"credsStore":"regauth"}"#);
    std::fs::create_dir_all(&env.regauth_dir).unwrap();
    std::fs::write(
        env.regauth_dir.join("router.json"),
        format!(
            r#"{{"store":"file","routes":[{{"host":"{}","backend":"file"}},{{"host":"*.example.org","backend":"env"}},{{"host":"ecr","helper":"ecr-login"}}]}}"#,
            reg.addr
        ),
    )
    .unwrap();
    login_push_pull_logout(&mut env, &reg, "router");
    // The router answers not-found (not an error) for hosts no route covers.
    let out = env.helper("docker-credential-regauth", "get", "unrouted.example.com");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "credentials not found in native keychain\n"
    );
}

/// A read-only helper as `credsStore`: `docker login` fails with our read-only message (not a
/// silent success), and succeeds as a no-op with `REGAUTH_IGNORE_STORE=true` — ecr-login's
/// `AWS_ECR_IGNORE_CREDS_STORAGE` pain point (reference §6.5); pulls then use the env credentials.
#[test]
fn docker_login_with_read_only_env_store() {
    if !common::require_docker_daemon()
        || !common::require_peers(&["docker-registry", "htpasswd", "tar"])
    {
        return;
    }
    common::bin("docker-credential-env");
    let reg = common::Registry::start_htpasswd(USER, PASS);
    let env = Env::new(r#"{"credsStore":"env"}"#);
    let out = env.docker(
        &["login", "--username", USER, "--password-stdin", &reg.addr],
        Some(PASS),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "login into a read-only store must fail"
    );
    assert!(
        err.contains("docker-credential-env is read-only"),
        "docker should relay our message: {err}"
    );
    assert!(!err.contains(PASS), "{err}");

    let host_part: String = reg
        .addr
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut c = env.cmd("docker");
    c.env("REGAUTH_IGNORE_STORE", "true").args([
        "login",
        "--username",
        USER,
        "--password-stdin",
        &reg.addr,
    ]);
    let out = run(c, Some(PASS));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_plaintext(&env.docker_config, &[]);

    // Pull (via `manifest inspect`, which uses the CLI's own credential lookup) with env credentials.
    let tmp = tempfile::tempdir().unwrap();
    let img = common::busybox_image(tmp.path(), "latest");
    common::push_image(&img, &reg, "test/bb:v1", Some((USER, PASS)));
    let inspect = |with_vars: bool| {
        let mut c = env.cmd("docker");
        if with_vars {
            c.env(format!("REGAUTH_{host_part}_USERNAME"), USER)
                .env(format!("REGAUTH_{host_part}_PASSWORD"), PASS);
        }
        c.args([
            "manifest",
            "inspect",
            "--insecure",
            &format!("{}/test/bb:v1", reg.addr),
        ]);
        run(c, None)
    };
    assert!(
        !inspect(false).status.success(),
        "no variables → no credentials"
    );
    let out = inspect(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&img.layer_digests[0]));
}
