//! Packaging tests: the runner stack's scripts and Makefile (shell tests under `tests/packaging/`,
//! run against recording fakes of docker/docker-compose), compose validation, shellcheck, the
//! `FROM scratch` image built offline on the machine's engine (and, once `regauth proxy` exists, a
//! real `docker pull` through the containerised proxy from a local htpasswd registry), and the
//! .deb (opt-in: `REGAUTH_SLOW_TESTS=1`, it needs a release build).

mod common;
mod proxy_util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn slow_tests() -> bool {
    std::env::var("REGAUTH_SLOW_TESTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `tests/packaging/<script>` with bash and fails the test with its output unless it exits 0.
fn shell_test(script: &str) {
    let root = common::repo_root();
    let out = Command::new("bash")
        .arg(root.join("tests/packaging").join(script))
        .current_dir(&root)
        .env_remove("COMPOSE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {script}: {e}"));
    let log = text(&out);
    println!("{log}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{log}",
        out.status
    );
    assert!(
        log.contains("all assertions passed") || log.contains("shellcheck clean"),
        "{script} did not report completion:\n{log}"
    );
}

#[test]
fn runner_scripts_run_the_documented_commands() {
    if !common::require_peers(&["bash", "sed"]) {
        return;
    }
    shell_test("runner_scripts_test.sh");
}

#[test]
fn runner_makefile_targets_print_the_documented_commands() {
    if !common::require_peers(&["bash", "make"]) {
        return;
    }
    shell_test("runner_makefile_test.sh");
}

fn has_compose_v2() -> bool {
    Command::new("docker")
        .args(["compose", "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a `docker compose config` test needs: the v2 plugin when present, else v1 docker-compose
/// (this machine has only v1).
fn compose_peers() -> &'static [&'static str] {
    if has_compose_v2() {
        &["bash", "python3"]
    } else {
        &["bash", "python3", "docker-compose"]
    }
}

#[test]
fn compose_file_validates() {
    if !common::require_peers(compose_peers()) {
        return;
    }
    shell_test("compose_config_test.sh");
}

#[test]
fn fleet_compose_file_validates() {
    if !common::require_peers(compose_peers()) {
        return;
    }
    shell_test("fleet_compose_test.sh");
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    if !common::require_peers(&["bash", "systemd-analyze"]) {
        return;
    }
    shell_test("systemd_unit_test.sh");
}

#[test]
fn shell_scripts_are_shellcheck_clean() {
    if !common::require_peers(&["bash", "shellcheck"]) {
        return;
    }
    shell_test("shellcheck_test.sh");
}

// ---------------------------------------------------------------------------------------------------
// The container image
// ---------------------------------------------------------------------------------------------------

/// Removes what a test created in the engine, also when it panics.
#[derive(Default)]
struct DockerCleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The helpers whose static debug build is cheap (no AWS SDK, no D-Bus stack).
const LIGHT_HELPERS: [&str; 4] = [
    "docker-credential-file",
    "docker-credential-env",
    "docker-credential-gitlab",
    "docker-credential-regauth",
];

/// The helper binaries the workspace defines (`helpers/*/Cargo.toml` package names).
fn workspace_helpers() -> Vec<String> {
    let root = common::repo_root();
    let mut names = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root.join("helpers")) else {
        return names;
    };
    for d in dirs.flatten() {
        let manifest = d.path().join("Cargo.toml");
        let Ok(s) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let v: toml::Value = toml::from_str(&s)
            .unwrap_or_else(|e| panic!("{} is not TOML: {e}", manifest.display()));
        if let Some(n) = v
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        {
            names.push(n.to_owned());
        }
    }
    names.sort();
    names
}

/// `docker export` of a created (never started) container, listed with tar.
fn image_files(image: &str, cleanup: &mut DockerCleanup) -> Vec<String> {
    let name = format!("regauth-pkgtest-ls-{}", std::process::id());
    cleanup.containers.push(name.clone());
    docker_ok(&["create", "--name", &name, image]);
    let export = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {name} | tar --numeric-owner -tvf -"))
        .stdin(Stdio::null())
        .output()
        .expect("docker export | tar");
    assert!(export.status.success(), "export failed: {}", text(&export));
    String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn image_builds_offline_from_scratch_and_serves() {
    if !common::require_peers(&["bash", "cargo", "rustc", "tar", "readelf", "strip"])
        || !common::require_docker_daemon()
    {
        return;
    }
    let root = common::repo_root();
    let image = format!("regauth-pkgtest:{}", std::process::id());
    let mut cleanup = DockerCleanup::default();
    cleanup.images.push(image.clone());

    // 1. Build: static binaries, staged context, classic builder with --network none.
    let mut build = Command::new("bash");
    build
        .arg(root.join("packaging/docker/build.sh"))
        .args(["--tag", &image]);
    // The helpers this image test builds: all of them with REGAUTH_SLOW_TESTS=1 (release), else
    // the light ones (debug), which keeps a second, static compile of the AWS SDK and the D-Bus
    // stack out of every test run.
    let helpers = if slow_tests() {
        workspace_helpers()
    } else {
        build.arg("--debug"); // a release build is minutes on the shared cores
        let light = LIGHT_HELPERS.map(String::from).to_vec();
        build.env("REGAUTH_IMAGE_HELPERS", light.join(" "));
        light
    };
    let out = build
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run build.sh");
    assert!(out.status.success(), "build.sh failed:\n{}", text(&out));

    // 2. What the image is: non-root numeric user, a healthcheck, regauth as entrypoint, and a
    //    filesystem holding only what build.sh staged (no shell, no libc, no base image).
    let user = docker_ok(&["image", "inspect", "--format", "{{.Config.User}}", &image]);
    assert_eq!(user, "65532:65532", "numeric non-root USER");
    let health = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Healthcheck.Test}}",
        &image,
    ]);
    assert_eq!(health, r#"["CMD","regauth","healthcheck","--quiet"]"#);
    let entry = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        &image,
    ]);
    assert_eq!(entry, r#"["regauth"]"#);
    let size: u64 = docker_ok(&["image", "inspect", "--format", "{{.Size}}", &image])
        .parse()
        .expect("image size");
    println!("image {image}: {size} bytes");

    let files = image_files(&image, &mut cleanup);
    let paths: Vec<&str> = files
        .iter()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for p in &paths {
        let top = p.trim_start_matches("./").split('/').next().unwrap_or("");
        assert!(
            [
                "",
                "usr",
                "etc",
                "var",
                "home",
                "tmp",
                "dev",
                "proc",
                "sys",
                ".dockerenv"
            ]
            .contains(&top),
            "unexpected path in the scratch image: {p}\n{files:#?}"
        );
    }
    for must in [
        "usr/local/bin/regauth",
        "etc/passwd",
        "etc/regauth/docker/config.json",
    ] {
        assert!(
            paths.iter().any(|p| p.trim_start_matches("./") == must),
            "{must} missing: {files:#?}"
        );
    }
    assert!(
        !paths.iter().any(|p| p.ends_with("bin/sh")),
        "a shell in the image: {files:#?}"
    );
    let owner = |path: &str| {
        files
            .iter()
            .find(|l| {
                l.split_whitespace()
                    .nth(5)
                    .map(|p| p.trim_start_matches("./").trim_end_matches('/'))
                    == Some(path)
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{path} not in the image: {files:#?}"))
    };
    assert_eq!(
        owner("usr/local/bin/regauth"),
        "0/0",
        "binaries are root-owned"
    );
    assert_eq!(
        owner("etc/regauth"),
        "65532/65532",
        "state dir owned by the user"
    );
    assert_eq!(
        owner("var/cache/regauth"),
        "65532/65532",
        "cache dir owned by the user"
    );
    for helper in &helpers {
        let p = format!("usr/local/bin/{helper}");
        assert!(
            paths.iter().any(|x| x.trim_start_matches("./") == p),
            "{helper} missing from the image"
        );
        let v = docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            helper,
            &image,
            "version",
        ]);
        assert!(
            v.status.success(),
            "{helper} version in the image: {}",
            text(&v)
        );
    }

    // 3. The static binary runs in the empty image, as the numeric user.
    let v = docker_ok(&["run", "--rm", "--network", "none", &image, "--version"]);
    assert!(v.starts_with("regauth "), "{v}");
    let probe = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "healthcheck",
        "http://127.0.0.1:9/healthz",
    ]);
    assert_eq!(
        probe.status.code(),
        Some(1),
        "healthcheck with nothing listening: {}",
        text(&probe)
    );

    // 4. The proxy in the container, pulled through by the machine's dockerd.
    let has_proxy = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "proxy",
        "--help",
    ]);
    assert!(
        has_proxy.status.success(),
        "`regauth proxy --help` failed inside {image}: the image must ship the proxy:\n{}",
        text(&has_proxy)
    );
    pull_through_containerised_proxy(&image, &mut cleanup);

    // 5. `make login`'s path for real: compose starts the regauth service from this image, the
    //    host's `docker login` checks the password against a registry and login.sh's shim stores
    //    it into the container's docker-credential-file store (needs the proxy, for the
    //    service to run, and the helpers merged).
    assert!(
        paths
            .iter()
            .any(|p| p.trim_start_matches("./") == "usr/local/bin/docker-credential-file"),
        "docker-credential-file missing from {image}: the compose login needs it"
    );
    compose_login_into_file_store(&image);
}

/// `compose down -v` for a test project, also when the test panics.
struct ComposeProject {
    cmd: Vec<String>,
    file: PathBuf,
    project: String,
}

impl ComposeProject {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.cmd[0]);
        c.args(&self.cmd[1..])
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.project])
            .stdin(Stdio::null());
        c
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["down", "-v", "--remove-orphans"])
            .output();
    }
}

fn compose_login_into_file_store(image: &str) {
    let compose: &[&str] = if has_compose_v2() {
        &["docker", "compose"]
    } else {
        &["docker-compose"]
    };
    if !common::require_peers(&["docker-registry", "htpasswd", compose[0]]) {
        return;
    }
    let root = common::repo_root();
    let reg = common::Registry::start_htpasswd("loginuser", "login-s3cret");
    let stack = ComposeProject {
        cmd: compose.iter().map(|s| (*s).to_owned()).collect(),
        file: root.join("packaging/runner/docker-compose.yml"),
        project: format!("regauthpkg{}", std::process::id()),
    };
    let up = stack
        .command()
        .env("REGAUTH_IMAGE", image)
        .args(["up", "-d", "--no-deps", "regauth"])
        .output()
        .expect("compose up");
    assert!(up.status.success(), "compose up regauth: {}", text(&up));

    // login.sh with the real docker CLI; COMPOSE carries the project name to the shim.
    let compose_env = format!("{} -p {}", compose.join(" "), stack.project);
    let mut login = Command::new("bash");
    login
        .arg(root.join("packaging/runner/login.sh"))
        .args([
            reg.addr.as_str(),
            "--username",
            "loginuser",
            "--password-stdin",
        ])
        .env("COMPOSE", &compose_env)
        .env("REGAUTH_IMAGE", image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().expect("spawn login.sh");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"login-s3cret\n").expect("write password");
    }
    let out = child.wait_with_output().expect("login.sh");
    assert!(
        out.status.success(),
        "login.sh {}: {}",
        reg.addr,
        text(&out)
    );
    assert!(text(&out).contains("Login Succeeded"), "{}", text(&out));

    // The entry is in the container's store, and `get` returns it to the proxy's resolver.
    let list = stack
        .command()
        .env("REGAUTH_IMAGE", image)
        .args(["exec", "-T", "regauth", "docker-credential-file", "list"])
        .output()
        .expect("compose exec list");
    assert!(list.status.success(), "list: {}", text(&list));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout)
        .unwrap_or_else(|e| panic!("list is not JSON ({e}): {}", text(&list)));
    assert_eq!(listed[reg.addr.as_str()], "loginuser", "list: {listed}");
    let mut get = stack.command();
    get.env("REGAUTH_IMAGE", image)
        .args(["exec", "-T", "regauth", "docker-credential-file", "get"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = get.spawn().expect("spawn get");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(reg.addr.as_bytes())
            .expect("write server URL");
    }
    let got = child.wait_with_output().expect("get");
    assert!(got.status.success(), "get: {}", text(&got));
    let creds: serde_json::Value = serde_json::from_slice(&got.stdout).expect("get JSON");
    assert_eq!(creds["Username"], "loginuser");
    assert_eq!(creds["Secret"], "login-s3cret");
    // Nothing was written to the invoking user's docker config by login.sh.
    let home_cfg = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"));
    if let Some(cfg) = home_cfg.filter(|p| p.exists()) {
        let s = std::fs::read_to_string(&cfg).unwrap_or_default();
        assert!(
            !s.contains(&reg.addr),
            "{} gained an entry for {}",
            cfg.display(),
            reg.addr
        );
    }
}

fn pull_through_containerised_proxy(image: &str, cleanup: &mut DockerCleanup) {
    use base64::Engine as _;
    if !common::require_peers(&["docker-registry", "skopeo", "htpasswd"]) {
        return;
    }
    let reg = common::Registry::start_htpasswd("pkguser", "pkg-s3cret");
    let work = tempfile::tempdir().expect("tempdir");
    let img = common::busybox_image(work.path(), "v1");
    common::push_image(
        &img,
        &reg,
        "team/busybox:v1",
        Some(("pkguser", "pkg-s3cret")),
    );

    // Upstream credentials for the proxy only: a docker config.json owned by the image's user.
    let cfg = work.path().join("docker");
    std::fs::create_dir(&cfg).expect("mkdir");
    let auth = base64::engine::general_purpose::STANDARD.encode("pkguser:pkg-s3cret");
    let json = serde_json::json!({ "auths": { reg.addr.clone(): { "auth": auth } } });
    std::fs::write(cfg.join("config.json"), json.to_string()).expect("write config.json");
    for p in [cfg.clone(), cfg.join("config.json")] {
        std::os::unix::fs::chown(&p, Some(65532), Some(65532)).expect("chown to the image user");
    }

    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let name = format!("regauth-pkgtest-proxy-{}", std::process::id());
    cleanup.containers.push(name.clone());
    let health_url = format!("REGAUTH_HEALTHCHECK_URL=http://{listen}/healthz");
    let mount = format!("{}:/etc/regauth/docker:ro", cfg.display());
    let upstream = format!("local=http://{}", reg.addr);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "--health-interval",
        "1s",
        "-e",
        &health_url,
        "-v",
        &mount,
        image,
        "proxy",
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--cache-dir",
        "/var/cache/regauth",
    ]);
    common::wait_for_tcp(&listen, Duration::from_secs(60));

    // /healthz from the host, with the project's own probe.
    let h = Command::new(common::bin("regauth"))
        .args(["healthcheck", &format!("http://{listen}/healthz")])
        .output()
        .expect("regauth healthcheck");
    assert!(h.status.success(), "/healthz from the host: {}", text(&h));
    // The image's HEALTHCHECK turns the container healthy (a wait, not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", &name]);
        if s == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline && s != "unhealthy",
            "container health {s}; logs:\n{}",
            text(&docker(&["logs", &name]))
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // dockerd pulls by the path-prefix name; it has no credentials for the registry, the proxy does.
    let pulled = format!("{listen}/local/team/busybox:v1");
    cleanup.images.push(pulled.clone());
    let before = reg.request_count("/v2/team/busybox/manifests/");
    let out = docker(&["pull", &pulled]);
    assert!(
        out.status.success(),
        "docker pull {pulled} through the proxy failed: {}\nproxy logs:\n{}",
        text(&out),
        text(&docker(&["logs", &name]))
    );
    let digests = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &pulled,
    ]);
    assert!(
        digests.contains(&format!("@{}", img.manifest_digest)),
        "pulled image digest {digests} != pushed {}",
        img.manifest_digest
    );
    assert!(
        reg.request_count("/v2/team/busybox/manifests/") > before,
        "the registry never saw the proxy's manifest request"
    );
}

// ---------------------------------------------------------------------------------------------------
// The .deb
// ---------------------------------------------------------------------------------------------------

fn newest_deb(dir: &Path) -> Option<PathBuf> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop()
}

#[test]
fn deb_package_contents() {
    if !slow_tests() {
        eprintln!(
            "SKIP deb_package_contents: set REGAUTH_SLOW_TESTS=1 (release build + cargo deb)"
        );
        return;
    }
    if !common::require_peers(&["bash", "cargo", "dpkg-deb", "gzip"]) {
        return;
    }
    let root = common::repo_root();
    let out = Command::new("bash")
        .arg(root.join("packaging/deb/build.sh"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run packaging/deb/build.sh");
    assert!(out.status.success(), "deb build failed:\n{}", text(&out));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let deb = newest_deb(&target.join("debian")).expect("a .deb in target/debian");
    let listing = common::run_checked(Command::new("dpkg-deb").arg("-c").arg(&deb), "dpkg-deb -c");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    println!("{}:\n{listing}", deb.display());
    let has = |p: &str| {
        listing
            .lines()
            .any(|l| l.ends_with(&format!(" .{p}")) || l.contains(&format!(" .{p} ->")))
    };
    let mut expected: Vec<String> = vec![
        "/usr/bin/regauth".into(),
        "/usr/lib/systemd/system/regauth-proxy.service".into(),
        "/usr/share/man/man1/regauth.1.gz".into(),
        "/usr/share/man/man1/regauth-resolve.1.gz".into(),
        "/usr/share/man/man1/docker-credential-file.1.gz".into(),
        "/usr/share/bash-completion/completions/regauth".into(),
        "/usr/share/zsh/vendor-completions/_regauth".into(),
        "/usr/share/fish/vendor_completions.d/regauth.fish".into(),
        "/usr/share/doc/regauth/copyright".into(),
        "/etc/regauth/proxy.env".into(),
    ];
    for h in workspace_helpers() {
        expected.push(format!("/usr/bin/{h}"));
    }
    let missing: Vec<&String> = expected.iter().filter(|p| !has(p)).collect();
    // No man page for a helper the package does not ship.
    for l in listing
        .lines()
        .filter(|l| l.contains("/man1/docker-credential-"))
    {
        let page = l.rsplit('/').next().unwrap_or("");
        let helper = page.trim_end_matches(".1.gz");
        assert!(
            has(&format!("/usr/bin/{helper}")),
            "man page without binary: {l}"
        );
    }
    assert!(
        missing.is_empty(),
        "missing from {}: {missing:?}\n{listing}",
        deb.display()
    );
    for l in listing
        .lines()
        .filter(|l| l.contains(" ./usr/bin/") && !l.ends_with('/'))
    {
        assert!(
            l.starts_with("-rwxr-xr-x 0/0") || l.starts_with("-rwxr-xr-x root/root"),
            "binary mode/owner: {l}"
        );
    }

    let info = common::run_checked(Command::new("dpkg-deb").arg("-I").arg(&deb), "dpkg-deb -I");
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("Package: regauth"), "{info}");
    assert!(
        info.contains("Depends:") && info.contains("libc6"),
        "shlibs depends: {info}"
    );
    assert!(
        info.contains("conffiles"),
        "proxy.env is a conffile: {info}"
    );

    // The packaged binary runs and its man page is a real roff page.
    let x = tempfile::tempdir().expect("tempdir");
    common::run_checked(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()),
        "dpkg-deb -x",
    );
    let v = common::run_checked(
        Command::new(x.path().join("usr/bin/regauth")).arg("--version"),
        "regauth --version",
    );
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("regauth "));
    let man = common::run_checked(
        Command::new("gzip")
            .arg("-dc")
            .arg(x.path().join("usr/share/man/man1/regauth.1.gz")),
        "gzip -dc regauth.1.gz",
    );
    assert!(
        String::from_utf8_lossy(&man.stdout).contains(".TH regauth 1"),
        "roff header"
    );
}

/// The runner README's per-project set-up, as documented: its `.gitlab-ci.yml`
/// `DOCKER_AUTH_CONFIG` (job token keyed by the proxy's host) resolves, the way GitLab Runner
/// reads it (`regauth resolve --profile gitlab`), to `gitlab-ci-token` and the job's token for an
/// image named through the proxy; a `--pass-through` proxy then pulls the job's own project with
/// it and refuses another project's.
#[test]
fn runner_readme_per_project_job_token_setup_works() {
    if !common::require_peers(&["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let readme = std::fs::read_to_string(common::repo_root().join("packaging/runner/README.md"))
        .expect("read packaging/runner/README.md");
    let section = readme
        .split("## Shared runners")
        .nth(1)
        .expect("README has the shared-runner section");
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("DOCKER_AUTH_CONFIG:"))
        .expect("the section shows DOCKER_AUTH_CONFIG");
    let json = line
        .split_once('\'')
        .and_then(|(_, r)| r.rsplit_once('\''))
        .map(|(j, _)| j)
        .expect("DOCKER_AUTH_CONFIG is a single-quoted JSON string");
    assert!(json.contains("$CI_JOB_TOKEN") && json.contains("regauth:5000"));
    assert!(
        section.contains("--pass-through"),
        "the section turns pass-through on"
    );

    let token = "job-token-Pq27zz";
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, format!("gitlab-ci-token:{token}\n")).unwrap();
    let grants = dir.path().join("grants.json");
    std::fs::write(&grants, r#"{"gitlab-ci-token": ["team-a/*"]}"#).unwrap();
    let reg = common::Registry::start_token_tenants("admin", "admin-Pw", &users, &grants);
    let img = common::busybox_image_unique(&dir.path().join("img"), "latest", "per-project");
    common::push_image(&img, &reg, "team-a/app:1.0", Some(("admin", "admin-Pw")));
    common::push_image(&img, &reg, "team-b/app:1.0", Some(("admin", "admin-Pw")));
    let up = format!("gl={}", reg.url());
    let proxy = proxy_util::Proxy::start(
        &serde_json::json!({}),
        &["--upstream", &up, "--pass-through"],
    );

    // What the job's DOCKER_AUTH_CONFIG gives for its image, after GitLab expanded the variable.
    let dac = json
        .replace("$CI_JOB_TOKEN", token)
        .replace("regauth:5000", &proxy.addr);
    let image = format!("{}/gl/team-a/app:1.0", proxy.addr);
    let cfg = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin("regauth"))
        .env_clear()
        .env("PATH", common::path_with_bins())
        .env("HOME", cfg.path())
        .env("REGAUTH_CONFIG_DIR", cfg.path())
        .env("DOCKER_AUTH_CONFIG", &dac)
        .args(["resolve", "--profile", "gitlab", "--show-secret", &image])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(v["username"], "gitlab-ci-token", "{v}");
    assert_eq!(v["secret"], token, "{v}");

    let job = format!("gitlab-ci-token:{token}");
    let get = |repo: &str| {
        let url = proxy.url(&format!("/v2/gl/{repo}/manifests/1.0"));
        proxy_util::curl_code(&url, &["-u", &job])
    };
    assert_eq!(get("team-a/app"), "200", "{}", proxy.log_text());
    let other = get("team-b/app");
    assert!(other == "401" || other == "403", "{other}");
    assert!(
        !proxy.log_text().contains(token),
        "the job token is never logged"
    );
}
