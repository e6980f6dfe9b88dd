//! STAND-IN for the shared test harness (branch `infra` owns the real one; when it lands, take
//! theirs). Implements only the parts of the contract the ecr/keyring tests use, with the same
//! signatures: require_peers, free_port, bin_dir, bin, path_with_bins, wait_for_tcp, Moto.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn require_peers(bins: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = bins
        .iter()
        .copied()
        .filter(|b| !std::env::split_paths(&path).any(|d| d.join(b).is_file()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("REGAUTH_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("missing test peers on PATH: {missing:?} (run tests/install-peers.sh)");
    }
    eprintln!("SKIP: missing test peers on PATH: {missing:?}");
    false
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .expect("bin dir")
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

pub fn path_with_bins() -> OsString {
    let mut parts = vec![bin_dir()];
    if let Some(p) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(parts).expect("PATH")
}

pub fn wait_for_tcp(addr: &str, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < timeout,
            "{addr} did not accept connections within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Moto {
    pub endpoint: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let server = root.join(".venv-moto/bin/moto_server");
        assert!(
            server.is_file(),
            "{} missing: run tests/install-peers.sh",
            server.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("moto.log");
        let port = free_port();
        let f = std::fs::File::create(&log).expect("moto log");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("starting moto_server");
        let addr = format!("127.0.0.1:{port}");
        wait_for_tcp(&addr, Duration::from_secs(60));
        Moto {
            endpoint: format!("http://{addr}"),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn request_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
