//! Shared integration-test harness: real peers on loopback, started and torn down per test.
//!
//! Owns: finding peers (`require_peers`), free ports, the workspace binaries under test (`bin`,
//! `path_with_bins`), CNCF registries (`docker-registry serve`) with no auth, htpasswd (bcrypt, Basic)
//! or token auth (`tests/peers/tokenserver.py`), optionally over TLS from a fresh test CA, a deterministic single-layer busybox OCI image
//! (`busybox_image`) pushed with skopeo (`push_image`; `pushed_image` builds one in a layout of its
//! own and pushes it with the registry's credentials), and moto's ECR endpoint (`Moto`).
//! Does not own: the product code (tests drive it through its binaries or the library), peer installation
//! (`tests/install-peers.sh`) or which peers a test needs (each test calls `require_peers` first).
//!
//! Every peer runs with its own temporary directory (config, storage, logs), binds 127.0.0.1 on a free
//! port, and is killed (kill + wait) when its handle is dropped, including when a test panics.
//! Logs stay readable while a test runs: `Registry::log_path`, `Registry::token_log`, `Moto::log_path`;
//! `REGAUTH_KEEP_PEER_DIRS=1` keeps the directories after the test for reading post mortem.
//!
//! Usage from a test file (`tests/foo.rs`):
//! ```ignore
//! mod common;
//! #[test]
//! fn pulls() {
//!     if !common::require_peers(&["docker-registry", "skopeo", "htpasswd"]) { return; }
//!     let reg = common::Registry::start_htpasswd("alice", "s3cret");
//!     let dir = tempfile::tempdir().unwrap();
//!     let img = common::busybox_image(dir.path(), "latest");
//!     common::push_image(&img, &reg, "test/busybox:latest", Some(("alice", "s3cret")));
//! }
//! ```

// Each integration test binary compiles this module on its own and uses only part of it; without this
// allow, every test binary would warn (and `clippy -D warnings` fail) about the helpers it does not call.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a peer may take to answer after it was spawned (the machine is shared and busy).
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(30);
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------------
// Peers, paths, ports
// ---------------------------------------------------------------------------------------------------

/// True when every peer in `bins` is available. A name without `/` is looked up on `PATH`; a name with
/// `/` is a file path, relative to the repository root (e.g. `.venv-moto/bin/moto_server`).
/// If something is missing: panics when `REGAUTH_REQUIRE_PEERS=1` (set by tests/run.sh and CI),
/// otherwise prints `SKIP` to stderr and returns false, and the caller returns early.
pub fn require_peers(bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins
        .iter()
        .copied()
        .filter(|b| !peer_available(b))
        .collect();
    report_missing(&missing)
}

/// Like [`require_peers`] for a running Docker Engine: `docker info` must succeed.
pub fn require_docker_daemon() -> bool {
    if !require_peers(&["docker"]) {
        return false;
    }
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        true
    } else {
        report_missing(&["docker daemon (`docker info` failed)"])
    }
}

fn peers_required() -> bool {
    std::env::var("REGAUTH_REQUIRE_PEERS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn report_missing(missing: &[&str]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if peers_required() {
        panic!(
            "REGAUTH_REQUIRE_PEERS=1 but test peers are missing: {} (run `bash tests/install-peers.sh`)",
            missing.join(", ")
        );
    }
    eprintln!(
        "SKIP {test}: missing test peers: {} (run `bash tests/install-peers.sh`)",
        missing.join(", ")
    );
    false
}

fn peer_available(name: &str) -> bool {
    if name.contains('/') {
        let p = Path::new(name);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            repo_root().join(p)
        };
        return is_executable(&p);
    }
    which(name).is_some()
}

/// The first executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The repository (workspace) root: the nearest ancestor of this crate's manifest dir that holds
/// `tests/peers/tokenserver.py` (so helper crates that include this module find it too).
pub fn repo_root() -> PathBuf {
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|d| d.join("tests/peers/tokenserver.py").is_file())
        .unwrap_or(&start)
        .to_path_buf()
}

/// The moto venv's interpreter (`.venv-moto/bin/python`, made by tests/install-peers.sh).
pub fn venv_python() -> PathBuf {
    let p = repo_root().join(".venv-moto/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `bash tests/install-peers.sh`",
        p.display()
    );
    p
}

/// A per-peer temporary directory (`prefix` + random). With `REGAUTH_KEEP_PEER_DIRS=1` it is kept after the
/// test (its path is printed) so configs and logs can be read post mortem.
fn peer_tempdir(prefix: &str) -> tempfile::TempDir {
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("create {prefix}* tempdir: {e}"));
    if std::env::var_os("REGAUTH_KEEP_PEER_DIRS").is_some_and(|v| v == "1") {
        tmp.disable_cleanup(true);
        eprintln!("REGAUTH_KEEP_PEER_DIRS: keeping {}", tmp.path().display());
    }
    tmp
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out before.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0 to find a free port");
        let mut g = given.lock().unwrap_or_else(|e| e.into_inner());
        if g.insert(port) {
            return port;
        }
    }
    panic!("no fresh free port on 127.0.0.1 after 100 tries");
}

/// The directory with the workspace's debug binaries (`regauth`, `docker-credential-*`): the parent of
/// the test executable's `deps/` directory, so it follows `CARGO_TARGET_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(dir) = deps.parent()
    {
        return dir.to_path_buf();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug")
}

/// `bin_dir().join(name)`; panics with a clear message if it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace` first (tests/run.sh does)",
        p.display()
    );
    p
}

/// `PATH` with [`bin_dir`] first, so peers (skopeo, docker) find our `docker-credential-*` helpers.
pub fn path_with_bins() -> OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(bin_dir()).chain(std::env::split_paths(&rest));
    std::env::join_paths(dirs).expect("PATH entries contain no ':'")
}

/// Waits until something accepts TCP connections on `addr` ("127.0.0.1:PORT"); panics after `timeout`.
pub fn wait_for_tcp(addr: &str, timeout: Duration) {
    let sa: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&sa, Duration::from_millis(500)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listening on {addr} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `GET <path>` over HTTP/1.0, returning the status code, or None if there is no HTTP answer yet.
/// Only a readiness probe for peers: tests that check behaviour use real clients.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let sa: SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    let line = std::str::from_utf8(&head).ok()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// Runs a peer (`"$@"`) under bash and kills it (SIGKILL, then reaps it) as soon as its stdin reaches EOF,
/// that is when the harness closes the pipe or when the test process dies in any way, even SIGKILL or a
/// peer kept in a `static`. Exits with the peer's status if the peer exits first.
const WATCHDOG: &str = r#""$@" </dev/null &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    read -r -t 1 _
    rc=$?
    if [ "$rc" -le 128 ]; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        exit 0
    fi
done
wait "$pid"
"#;

/// A spawned peer process (under [`WATCHDOG`]); killed and reaped on drop.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` (program, args, env changes and current dir are kept) under the watchdog, with
    /// stdout+stderr appended to `log`.
    fn spawn(name: &'static str, cmd: Command, log: &Path) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log file handle");
        let mut w = Command::new("bash");
        w.arg("-c")
            .arg(WATCHDOG)
            .arg("regauth-test-watchdog")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            w.current_dir(d);
        }
        w.stdin(Stdio::piped()).stdout(out).stderr(err);
        let child = w.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {name} ({:?}) under bash: {e}",
                cmd.get_program()
            )
        });
        Proc {
            name,
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Panics with the peer's log if it has exited.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            panic!(
                "{} exited early ({status}); log {}:\n{log}\n(missing peer? run `bash tests/install-peers.sh`)",
                self.name,
                self.log.display()
            );
        }
    }

    /// Waits until `addr` answers HTTP on `path` (any status), checking that the process is alive.
    fn wait_http(&mut self, addr: &str, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if http_status(addr, path).is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "{} gave no HTTP answer on {addr}{path} after {timeout:?}; log:\n{log}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the peer and waits until it is gone (its port is free again when this returns).
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        drop(child.stdin.take()); // EOF: the watchdog kills and reaps the peer, then exits
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The watchdog is stuck: kill it (the peer may then outlive us; say so).
        eprintln!(
            "warning: {} watchdog did not exit in 10 s; killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn count_lines(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------------

/// How a [`Registry`] authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    /// bcrypt htpasswd, `Basic realm="regauth-test"`.
    Htpasswd {
        user: String,
        pass: String,
    },
    /// Bearer tokens from `tests/peers/tokenserver.py`, which accepts `user:pass` (every action) and gives
    /// anonymous clients `pull` if `anonymous_pull`, else a token without access (so the registry says 401).
    Token {
        user: String,
        pass: String,
        anonymous_pull: bool,
    },
}

/// A CNCF registry (`docker-registry serve`) on 127.0.0.1 with filesystem storage and deletes enabled.
pub struct Registry {
    /// "127.0.0.1:PORT"
    pub addr: String,
    /// Filesystem storage root (survives `stop`/`restart`).
    pub data_dir: std::path::PathBuf,
    /// The instance's own directory: config.yml, registry.log, htpasswd, token/ (all removed on drop).
    pub dir: PathBuf,
    pub auth: RegistryAuth,
    /// Token auth only: the realm clients are sent to, e.g. "http://127.0.0.1:PORT/token".
    pub token_realm: Option<String>,
    /// Token auth only: one line per token request (`GET status=200 user=alice scopes=… granted=…`).
    pub token_log: Option<PathBuf>,
    /// TLS only: the test CA that signed the registry's certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// TLS only: a directory holding the CA as `ca.crt` (skopeo `--cert-dir`, docker `certs.d` layout).
    pub cert_dir: Option<PathBuf>,
    // Field order matters for drop: processes die before their directory is removed.
    registry: Proc,
    token_server: Option<Proc>,
    _tmp: tempfile::TempDir,
}

/// `service` and `issuer` the token registry and token server agree on.
pub const TOKEN_SERVICE: &str = "test-registry";
pub const TOKEN_ISSUER: &str = "test-issuer";

impl Registry {
    pub fn start_anonymous() -> Registry {
        Registry::start(RegistryAuth::Anonymous)
    }

    /// bcrypt htpasswd (`htpasswd -Bbn`), Basic auth.
    pub fn start_htpasswd(user: &str, pass: &str) -> Registry {
        Registry::start(RegistryAuth::Htpasswd {
            user: user.into(),
            pass: pass.into(),
        })
    }

    /// Token auth: also starts tests/peers/tokenserver.py with a fresh signing key. Anonymous clients
    /// may pull (like a public repository on Docker Hub); `user:pass` may do anything.
    pub fn start_token(user: &str, pass: &str) -> Registry {
        Registry::start(RegistryAuth::Token {
            user: user.into(),
            pass: pass.into(),
            anonymous_pull: true,
        })
    }

    /// Token auth where anonymous clients get no access at all (a private repository).
    pub fn start_token_private(user: &str, pass: &str) -> Registry {
        Registry::start(RegistryAuth::Token {
            user: user.into(),
            pass: pass.into(),
            anonymous_pull: false,
        })
    }

    /// A registry with `auth` over plain HTTP.
    pub fn start(auth: RegistryAuth) -> Registry {
        Registry::start_with(auth, false)
    }

    /// A registry with `auth` over HTTPS, with a leaf certificate (localhost, 127.0.0.1) from a fresh
    /// test CA: `ca_cert` is the CA, `cert_dir` holds it as `ca.crt` for skopeo's `--cert-dir`.
    pub fn start_tls(auth: RegistryAuth) -> Registry {
        Registry::start_with(auth, true)
    }

    pub fn start_with(auth: RegistryAuth, tls: bool) -> Registry {
        Registry::start_inner(auth, tls, "both", &[])
    }

    /// Token auth (anonymous clients get nothing) whose token server answers with only one of the
    /// two fields the spec allows: `fields` is `"token"` or `"access_token"` (`tokenserver.py --fields`).
    pub fn start_token_private_fields(user: &str, pass: &str, fields: &str) -> Registry {
        let auth = RegistryAuth::Token {
            user: user.into(),
            pass: pass.into(),
            anonymous_pull: false,
        };
        Registry::start_inner(auth, false, fields, &[])
    }

    /// Token auth for tenants: `user:pass` may do anything (pushes), anonymous clients nothing,
    /// the users of `users_file` (`name:password` lines) only what `grants_file` grants them
    /// (`{"alice": ["team-a/*"]}`, re-read on every token request: rewrite it to revoke).
    pub fn start_token_tenants(
        user: &str,
        pass: &str,
        users_file: &Path,
        grants_file: &Path,
    ) -> Registry {
        let auth = RegistryAuth::Token {
            user: user.into(),
            pass: pass.into(),
            anonymous_pull: false,
        };
        let extra = [
            "--users-file".to_owned(),
            users_file.display().to_string(),
            "--grants-file".to_owned(),
            grants_file.display().to_string(),
        ];
        Registry::start_inner(auth, false, "both", &extra)
    }

    fn start_inner(
        auth: RegistryAuth,
        tls: bool,
        token_fields: &str,
        extra_token_args: &[String],
    ) -> Registry {
        let tmp = peer_tempdir("regauth-registry-");
        let dir = tmp.path().to_path_buf();
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir).expect("create registry data dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");

        let mut token_server = None;
        let mut token_realm = None;
        let mut token_log = None;
        let auth_yaml = match &auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Htpasswd { user, pass } => {
                let out = run_checked(
                    Command::new("htpasswd").args(["-Bbn", user, pass]),
                    "htpasswd -Bbn",
                );
                let htpasswd = dir.join("htpasswd");
                fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: regauth-test\n    path: '{}'\n",
                    htpasswd.display()
                )
            }
            RegistryAuth::Token {
                user,
                pass,
                anonymous_pull,
            } => {
                let tdir = dir.join("token");
                let script = repo_root().join("tests/peers/tokenserver.py");
                run_checked(
                    Command::new(venv_python())
                        .arg(&script)
                        .arg("keygen")
                        .arg("--out-dir")
                        .arg(&tdir),
                    "tokenserver.py keygen",
                );
                let tport = free_port();
                let taddr = format!("127.0.0.1:{tport}");
                let log = tdir.join("requests.log");
                let mut cmd = Command::new(venv_python());
                cmd.arg(&script)
                    .args([
                        "serve",
                        "--port",
                        &tport.to_string(),
                        "--service",
                        TOKEN_SERVICE,
                        "--issuer",
                        TOKEN_ISSUER,
                    ])
                    .arg("--key")
                    .arg(tdir.join("signer.key"))
                    .arg("--cert")
                    .arg(tdir.join("signer.crt"))
                    .arg("--user")
                    .arg(format!("{user}:{pass}"))
                    .arg("--log")
                    .arg(&log)
                    .args(["--anonymous", if *anonymous_pull { "pull" } else { "none" }])
                    .args(["--fields", token_fields])
                    .args(extra_token_args);
                let mut p = Proc::spawn("tokenserver.py", cmd, &tdir.join("server.log"));
                p.wait_http(&taddr, "/healthz", REGISTRY_START_TIMEOUT);
                let realm = format!("http://{taddr}/token");
                let yaml = format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: '{}'\n",
                    tdir.join("signer.crt").display()
                );
                token_server = Some(p);
                token_realm = Some(realm);
                token_log = Some(log);
                yaml
            }
        };

        let (tls_yaml, ca_cert, cert_dir) = if tls {
            let (ca, certs_d, cert, key) = make_tls_certs(&dir.join("tls"));
            let yaml = format!(
                "  tls:\n    certificate: '{}'\n    key: '{}'\n",
                cert.display(),
                key.display()
            );
            (yaml, Some(ca), Some(certs_d))
        } else {
            (String::new(), None, None)
        };

        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: '{data}'\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: regauth-test-http-secret\n\
             {tls_yaml}\
             {auth_yaml}",
            data = data_dir.display(),
        );
        fs::write(dir.join("config.yml"), config).expect("write registry config.yml");

        let registry = Registry::spawn_registry(&dir, &addr);
        Registry {
            addr,
            data_dir,
            dir,
            auth,
            token_realm,
            token_log,
            ca_cert,
            cert_dir,
            registry,
            token_server,
            _tmp: tmp,
        }
    }

    fn spawn_registry(dir: &Path, addr: &str) -> Proc {
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(dir.join("config.yml"));
        let mut p = Proc::spawn("docker-registry", cmd, &dir.join("registry.log"));
        p.wait_http(addr, "/v2/", REGISTRY_START_TIMEOUT);
        p
    }

    /// "http://127.0.0.1:PORT", or "https://…" for a TLS registry.
    pub fn url(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Kills the registry (the token server, if any, keeps running). Port and storage stay.
    pub fn stop(&mut self) {
        self.registry.kill();
    }

    /// Starts the registry again on the same port with the same storage and config.
    pub fn restart(&mut self) {
        self.registry.kill();
        self.registry = Registry::spawn_registry(&self.dir, &self.addr);
    }

    /// The registry's stdout+stderr (access log and app log).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// Lines of the registry log containing `needle`, e.g. `"GET /v2/test/busybox/blobs/"`.
    pub fn request_count(&self, needle: &str) -> usize {
        count_lines(&self.log_path(), needle)
    }

    /// Token auth only: token requests whose log line contains `needle` (`""` counts all of them).
    pub fn token_request_count(&self, needle: &str) -> usize {
        self.token_log
            .as_deref()
            .map_or(0, |p| count_lines(p, needle))
    }

    /// The credentials the registry accepts, if any.
    pub fn creds(&self) -> Option<(&str, &str)> {
        match &self.auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Htpasswd { user, pass } | RegistryAuth::Token { user, pass, .. } => {
                Some((user, pass))
            }
        }
    }
}

/// Makes a P-256 test CA and a leaf certificate for `localhost` / `127.0.0.1` (CA:FALSE, serverAuth: webpki
/// rejects a CA certificate used as a server's own) in `dir`. Returns (ca.pem, certs.d dir, cert, key).
fn make_tls_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    fs::create_dir_all(dir).expect("create tls dir");
    let openssl = |args: &[&str], what: &str| {
        run_checked(Command::new("openssl").args(args).current_dir(dir), what);
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "30",
                "-subj",
                "/CN=regauth-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
        "openssl req (test CA)",
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
        "openssl req (leaf CSR)",
    );
    fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,DNS:registry.regauth.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write leaf.ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
        "openssl x509 (sign leaf)",
    );
    let certs_d = dir.join("certs.d");
    fs::create_dir_all(&certs_d).expect("create certs.d");
    fs::copy(dir.join("ca.pem"), certs_d.join("ca.crt")).expect("copy ca.crt");
    (
        dir.join("ca.pem"),
        certs_d,
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

// ---------------------------------------------------------------------------------------------------
// Test image
// ---------------------------------------------------------------------------------------------------

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A single-image OCI layout on disk and the digests ("sha256:<hex>") of its parts.
pub struct TestImage {
    pub layout: std::path::PathBuf,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    /// [`pushed_image`] only: the temporary layout directory, removed with the image.
    owned_layout: Option<tempfile::TempDir>,
}

impl TestImage {
    /// Path of a blob in the layout (`blobs/sha256/<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.layout.join("blobs/sha256").join(hex)
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let p = self.blob_path(digest);
        fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.blob(&self.manifest_digest)
    }

    /// An `org.opencontainers.image.ref.name` in `index.json` that points at this manifest (the first one;
    /// the image is deterministic, so every tag in the layout names the same manifest).
    pub fn tag(&self) -> String {
        let index = read_json(&self.layout.join("index.json"));
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["digest"] == self.manifest_digest.as_str())
            .and_then(|m| m["annotations"][REF_NAME].as_str())
            .unwrap_or_else(|| {
                panic!(
                    "{} has no ref name for {}",
                    self.layout.display(),
                    self.manifest_digest
                )
            })
            .to_string()
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn read_json(p: &Path) -> serde_json::Value {
    let text = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

/// Writes `bytes` as a blob into `layout` and returns its digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let p = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    digest
}

/// Builds (in `dir`, which becomes the OCI layout) a deterministic one-layer linux/amd64 image: `/bin/busybox`
/// from busybox-static plus `/bin/sh -> busybox`, `Cmd ["/bin/sh"]`, `Env PATH=/bin`. The same busybox
/// binary always gives the same digests. Calling it again with another tag adds that tag to the layout.
/// Run commands in containers as `sh -c '…'` or `/bin/busybox <applet> …` (there are no other applet links).
pub fn busybox_image(dir: &std::path::Path, tag: &str) -> TestImage {
    build_busybox_image(dir, tag, None)
}

/// Like [`busybox_image`] with one more file in the layer, `/regauth-test-marker` holding `marker`: layer,
/// config and manifest digests are then unique to `marker`, so a test that counts blob fetches (or
/// dockerd's own layer cache) cannot be satisfied by another test's pull of the plain image.
pub fn busybox_image_unique(dir: &std::path::Path, tag: &str, marker: &str) -> TestImage {
    build_busybox_image(dir, tag, Some(marker))
}

fn build_busybox_image(dir: &std::path::Path, tag: &str, marker: Option<&str>) -> TestImage {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox missing: install busybox-static (tests/install-peers.sh)"
    );
    let work = tempfile::Builder::new()
        .prefix("regauth-image-")
        .tempdir()
        .expect("create image build dir");
    let rootfs = work.path().join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).expect("create rootfs/bin");
    fs::copy(busybox, bin.join("busybox")).expect("copy /bin/busybox");
    fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    symlink("busybox", bin.join("sh")).expect("symlink bin/sh");
    if let Some(m) = marker {
        let p = rootfs.join("regauth-test-marker");
        fs::write(&p, m).expect("write marker file");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod marker");
    }
    for d in [&rootfs, &bin] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod rootfs dir");
    }

    let tar = work.path().join("layer.tar");
    run_checked(
        Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=2020-01-01 00:00:00Z",
                "--format=gnu",
            ])
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        "tar (layer)",
    );
    let gz = run_checked(
        Command::new("gzip").args(["-n", "-9", "-c"]).arg(&tar),
        "gzip -n (layer)",
    )
    .stdout;
    let tar_bytes = fs::read(&tar).expect("read layer.tar");

    fs::create_dir_all(dir.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("create {}/blobs: {e}", dir.display()));
    let diff_id = sha256_digest(&tar_bytes);
    let layer_digest = put_blob(dir, &gz);

    let config = serde_json::json!({
        "created": "2020-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": "2020-01-01T00:00:00Z", "created_by": "regauth test harness: busybox-static" }],
    });
    let config_bytes = serde_json::to_vec(&config).expect("serialize config");
    let config_digest = put_blob(dir, &config_bytes);

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len() },
        "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": gz.len() }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("serialize manifest");
    let manifest_digest = put_blob(dir, &manifest_bytes);

    // index.json: keep other tags already in this layout, (re)point `tag` at this manifest.
    let index_path = dir.join("index.json");
    let mut manifests: Vec<serde_json::Value> = if index_path.exists() {
        read_json(&index_path)["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    manifests.retain(|m| m["annotations"][REF_NAME] != tag);
    manifests.push(serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest_bytes.len(),
        "annotations": { REF_NAME: tag },
    }));
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    fs::write(
        &index_path,
        serde_json::to_vec(&index).expect("serialize index"),
    )
    .expect("write index.json");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");

    TestImage {
        layout: dir.to_path_buf(),
        manifest_digest,
        config_digest,
        layer_digests: vec![layer_digest],
        owned_layout: None,
    }
}

/// A busybox image in a temporary layout of its own (removed when the image is dropped), pushed to
/// `reg` as `repo_tag` with the registry's own credentials ([`Registry::creds`]). `marker`: see
/// [`busybox_image_unique`]; `None` is the plain, deterministic image.
pub fn pushed_image(reg: &Registry, repo_tag: &str, marker: Option<&str>) -> TestImage {
    let dir = tempfile::tempdir().expect("create image layout dir");
    let mut img = build_busybox_image(dir.path(), "latest", marker);
    img.owned_layout = Some(dir);
    push_image(&img, reg, repo_tag, reg.creds());
    img
}

/// Pushes `img` to `reg` as `repo_tag` ("test/busybox:latest") with skopeo; panics with skopeo's output on failure.
pub fn push_image(img: &TestImage, reg: &Registry, repo_tag: &str, creds: Option<(&str, &str)>) {
    if let Err(e) = try_push_image(img, reg, repo_tag, creds) {
        panic!("{e}");
    }
}

/// Like [`push_image`] but returns skopeo's output as the error (for tests that expect a refusal).
pub fn try_push_image(
    img: &TestImage,
    reg: &Registry,
    repo_tag: &str,
    creds: Option<(&str, &str)>,
) -> Result<(), String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    match creds {
        Some((u, p)) => cmd.arg("--dest-creds").arg(format!("{u}:{p}")),
        None => cmd.arg("--dest-no-creds"),
    };
    cmd.arg(format!("oci:{}:{}", img.layout.display(), img.tag()))
        .arg(format!("docker://{}/{repo_tag}", reg.addr));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run skopeo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "skopeo copy to {}/{repo_tag} failed ({}):\n{}",
            reg.addr,
            out.status,
            output_text(&out)
        ))
    }
}

/// Runs `cmd` to completion; panics with its output if it cannot start or exits non-zero.
pub fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert_success(&out, what);
    out
}

/// Runs `cmd` (stdin closed) to completion: (exit ok, stdout then stderr). Panics only when it
/// cannot start; a failure is the caller's to judge (some tests expect one).
pub fn run_text(cmd: &mut Command, what: &str) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    (out.status.success(), output_text(&out))
}

/// Starts `cmd` with stdout and stderr captured and `input` on its stdin, then closed (a
/// credential helper's request, a `--password-stdin`). A child that exits without reading it all
/// is not an error here: its exit status and output say what happened. [`run_with_stdin`] waits.
pub fn spawn_with_stdin(cmd: &mut Command, input: &[u8]) -> Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    child
}

/// [`spawn_with_stdin`], waited for.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    spawn_with_stdin(cmd, input)
        .wait_with_output()
        .expect("wait for the child")
}

/// A finished process's stdout then stderr, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Panics with the exit status, stdout and stderr unless `out` is a success.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        output_text(out)
    );
}

// ---------------------------------------------------------------------------------------------------
// moto (ECR)
// ---------------------------------------------------------------------------------------------------

/// moto_server from `.venv-moto` on 127.0.0.1, its access log (stderr) captured to a file.
/// Always give AWS clients `AWS_EC2_METADATA_DISABLED=true` (see [`Moto::aws_env`]).
pub struct Moto {
    /// "http://127.0.0.1:PORT"
    pub endpoint: String,
    pub addr: String,
    proc: Proc,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

/// moto's server app, one request at a time (werkzeug without threads; HTTP/1.0, so no
/// connection is held open between requests).
const MOTO_SERIAL: &str = "import sys\nfrom werkzeug.serving import run_simple\nfrom moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app\nrun_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False, request_handler=MotoRequestHandler)\n";

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(false)
    }

    /// moto serving one request at a time: its conditional writes (`If-None-Match: *`) are a
    /// check-then-write that threads can interleave under load (two winners of 16 racing
    /// writers, seen here); serialized, the check and the write are atomic as on real S3.
    pub fn start_serial() -> Moto {
        Moto::start_with(true)
    }

    fn start_with(serial: bool) -> Moto {
        let server = repo_root().join(".venv-moto/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: run `bash tests/install-peers.sh`",
            server.display()
        );
        let tmp = peer_tempdir("regauth-moto-");
        let log = tmp.path().join("moto.log");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = if serial {
            let mut c = Command::new(venv_python());
            c.args(["-c", MOTO_SERIAL, &port.to_string()]);
            c
        } else {
            let mut c = Command::new(&server);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        };
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        let mut proc = Proc::spawn("moto_server", cmd, &log);
        proc.wait_http(&addr, "/moto-api/", MOTO_START_TIMEOUT);
        Moto {
            endpoint: format!("http://{addr}"),
            addr,
            proc,
            log,
            _tmp: tmp,
        }
    }

    /// Access-log lines containing `needle`. moto logs `"POST / HTTP/1.1" 200` for every ECR API call
    /// (the action is in a header, not the path), so `request_count("POST / ")` counts ECR calls.
    pub fn request_count(&self, needle: &str) -> usize {
        count_lines(&self.log, needle)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Environment for an AWS SDK client talking to this moto: endpoint, region, dummy keys, IMDS off.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------------
// S3 (moto's S3 API, for `regauth proxy --store`)
// ---------------------------------------------------------------------------------------------------

/// An S3 server on a free loopback port (moto's server, which honours `If-None-Match: *` on PUT and
/// on CompleteMultipartUpload, and `If-Match`) with one bucket created, killed on drop.
pub struct S3Server {
    pub moto: Moto,
    pub bucket: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> S3Server {
        S3Server::with(Moto::start(), bucket)
    }

    /// On a moto that serves one request at a time ([`Moto::start_serial`]): for tests that
    /// count the winners of racing conditional writes.
    pub fn start_serial(bucket: &str) -> S3Server {
        S3Server::with(Moto::start_serial(), bucket)
    }

    fn with(moto: Moto, bucket: &str) -> S3Server {
        let s = S3Server {
            moto,
            bucket: bucket.to_owned(),
        };
        s.create_bucket(bucket);
        s
    }

    /// `PUT /<bucket>` (moto does not check signatures, so curl needs none).
    pub fn create_bucket(&self, bucket: &str) {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .arg(format!("{}/{bucket}", self.moto.endpoint))
            .output()
            .expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(code, "200", "create bucket {bucket}: {out:?}");
    }

    /// Environment for `regauth proxy --store` / `regauth cache --store` against `endpoint`
    /// (this server, or a relay in front of it).
    pub fn env_for(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        let mut e = self.moto.aws_env();
        for (k, v) in e.iter_mut() {
            if *k == "AWS_ENDPOINT_URL" {
                *v = endpoint.to_owned();
            }
        }
        e.push(("AWS_ALLOW_HTTP", "true".into()));
        e
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_for(&self.moto.endpoint)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

// ---------------------------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------------------------

/// dockerd's own containerd socket (Docker Engine with its managed containerd).
pub const DOCKERD_CONTAINERD_SOCK: &str = "/run/docker/containerd/containerd.sock";

/// A containerd to drive with `ctr --address`: dockerd's own when its socket exists (and
/// `REGAUTH_OWN_CONTAINERD` is not `1`), otherwise a harness peer: `containerd` (Debian `containerd`) with
/// its own config, root, state and socket in a temporary directory, the CRI plugin off and the `native`
/// snapshotter (works on any filesystem, also inside a container), killed on drop.
pub struct Containerd {
    /// The gRPC socket for `ctr --address`.
    pub address: PathBuf,
    /// The snapshotter `ctr images pull --snapshotter` should use (None: containerd's default).
    pub snapshotter: Option<&'static str>,
    proc: Option<Proc>,
    _tmp: Option<tempfile::TempDir>,
}

impl Containerd {
    /// dockerd's containerd if there is one, else a fresh harness containerd; panics if neither can be had.
    pub fn get() -> Containerd {
        let own = std::env::var_os("REGAUTH_OWN_CONTAINERD").is_some_and(|v| v == "1");
        if !own && Path::new(DOCKERD_CONTAINERD_SOCK).exists() {
            return Containerd {
                address: DOCKERD_CONTAINERD_SOCK.into(),
                snapshotter: None,
                proc: None,
                _tmp: None,
            };
        }
        Containerd::start()
    }

    /// Starts a harness containerd (needs root, as containerd does); panics with its log if it does not
    /// come up.
    pub fn start() -> Containerd {
        let tmp = peer_tempdir("regauth-ctrd-");
        let d = tmp.path();
        let address = d.join("c.sock");
        let config = d.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = address.display(),
            ),
        )
        .expect("write containerd config.toml");
        let log = d.join("containerd.log");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config);
        let mut proc = Proc::spawn("containerd", cmd, &log);
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        loop {
            proc.assert_running();
            let ready = address.exists()
                && Command::new("ctr")
                    .arg("--address")
                    .arg(&address)
                    .arg("version")
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                let text = fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "containerd did not answer on {} in time; log:\n{text}",
                    address.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Containerd {
            address,
            snapshotter: Some("native"),
            proc: Some(proc),
            _tmp: Some(tmp),
        }
    }

    /// True when this is a harness peer (not dockerd's containerd).
    pub fn is_own(&self) -> bool {
        self.proc.is_some()
    }
}

/// `ctr --address <address> -n <ns> <args>` with `env` (and no `NO_PROXY`, so `HTTPS_PROXY` in
/// `env` is used for every host): (exit ok, output).
pub fn ctr(address: &Path, ns: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("ctr");
    cmd.env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(env.iter().copied())
        .arg("--address")
        .arg(address)
        .args(["-n", ns])
        .args(args);
    run_text(&mut cmd, "ctr")
}

/// A test's own containerd namespace (`ctr` address, name): on drop, everything the test put
/// into it (images, snapshots, leases, content) is removed, then the namespace.
pub struct CtrNamespace(pub PathBuf, pub String);

impl Drop for CtrNamespace {
    fn drop(&mut self) {
        let ns = self.1.as_str();
        let ctr = |ns: &str, args: &[&str]| ctr(&self.0, ns, &[], args);
        let list = |args: &[&str]| -> Vec<String> {
            let (_, out) = ctr(ns, args);
            out.lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect()
        };
        for i in list(&["images", "ls", "-q"]) {
            let _ = ctr(ns, &["images", "rm", &i]);
        }
        for _ in 0..5 {
            let snaps: Vec<String> = list(&["snapshots", "ls"])
                .iter()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect();
            if snaps.is_empty() {
                break;
            }
            for s in snaps {
                let _ = ctr(ns, &["snapshots", "rm", &s]);
            }
        }
        for l in list(&["leases", "ls", "-q"]) {
            let _ = ctr(ns, &["leases", "rm", &l]);
        }
        for c in list(&["content", "ls", "-q"]) {
            let _ = ctr(ns, &["content", "rm", &c]);
        }
        let _ = ctr("default", &["namespaces", "rm", ns]);
    }
}

/// Adds to the OCI layout `dir` an image index (`application/vnd.oci.image.index.v1+json`) over
/// `images`, each with its platform (`os`, `architecture`), tagged `tag`; returns the index digest.
/// The images must already be in `dir` (e.g. [`busybox_image_unique`] with distinct markers).
/// Push it with [`push_index`] (skopeo `--all`).
pub fn add_oci_index(dir: &Path, tag: &str, images: &[(&TestImage, &str, &str)]) -> String {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(img, os, arch)| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": img.manifest_digest,
                "size": img.manifest_bytes().len(),
                "platform": { "os": os, "architecture": arch },
            })
        })
        .collect();
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&index).expect("serialize image index");
    let digest = put_blob(dir, &bytes);
    let index_path = dir.join("index.json");
    let mut layout = read_json(&index_path);
    let list = layout["manifests"]
        .as_array_mut()
        .expect("index.json has manifests");
    list.retain(|m| m["annotations"][REF_NAME] != tag);
    list.push(serde_json::json!({
        "mediaType": OCI_INDEX,
        "digest": digest,
        "size": bytes.len(),
        "annotations": { REF_NAME: tag },
    }));
    fs::write(
        &index_path,
        serde_json::to_vec(&layout).expect("serialize index.json"),
    )
    .expect("write index.json");
    digest
}

/// Pushes the image index tagged `tag` in layout `dir` with every platform (`skopeo copy --all`) to an
/// anonymous-push registry as `repo_tag`.
pub fn push_index(dir: &Path, tag: &str, reg: &Registry, repo_tag: &str) {
    run_checked(
        Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--dest-no-creds",
            ])
            .arg(format!("oci:{}:{tag}", dir.display()))
            .arg(format!("docker://{}/{repo_tag}", reg.addr)),
        "skopeo copy --all (image index)",
    );
}
