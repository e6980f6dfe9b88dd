//! Helpers shared by the `proxy_*` integration tests: start the real `regauth proxy` binary on a
//! free port (killed on drop; `Proxy::for_registry`: in front of a harness registry, with its
//! credentials), read its metrics, drive skopeo through it, run `regauth cache`.
#![allow(dead_code)]

pub mod fault;

use crate::common;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proxy {
    pub addr: String,
    pub cache_dir: PathBuf,
    pub config_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    scheme: &'static str,
    /// A shell prefix run before `exec regauth proxy …` (e.g. `ulimit -n 512`).
    prefix: Option<String>,
    child: Option<Child>,
    pub tmp: tempfile::TempDir,
}

impl Proxy {
    /// `regauth proxy --listen 127.0.0.1:<free> --cache-dir <tmp>/cache --config-dir <tmp>/docker
    /// <args>`; `docker_config` is written to `<tmp>/docker/config.json`.
    pub fn start(docker_config: &serde_json::Value, args: &[&str]) -> Proxy {
        Proxy::start_env(docker_config, args, &[])
    }

    /// `regauth proxy --upstream <alias>=<reg's URL> <extra>` with the registry's own credentials
    /// ([`common::Registry::creds`]) as the proxy's Docker config (an anonymous registry: none).
    pub fn for_registry(reg: &common::Registry, alias: &str, extra: &[&str]) -> Proxy {
        let config = reg.creds().map_or_else(
            || serde_json::json!({}),
            |(user, pass)| auths_config(&reg.addr, user, pass),
        );
        let up = format!("{alias}={}", reg.url());
        let mut args = vec!["--upstream", up.as_str()];
        args.extend_from_slice(extra);
        Proxy::start(&config, &args)
    }

    /// Like [`Proxy::start`] with extra environment variables for the proxy process.
    pub fn start_env(
        docker_config: &serde_json::Value,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        let addr = format!("127.0.0.1:{}", common::free_port());
        Proxy::start_at(&addr, docker_config, args, env)
    }

    /// Like [`Proxy::start_env`] on a given `127.0.0.1:PORT` (a fleet's members know each
    /// other's addresses before they start).
    pub fn start_at(
        addr: &str,
        docker_config: &serde_json::Value,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        let tmp = tempfile::Builder::new()
            .prefix("regauth-proxy-")
            .tempdir()
            .unwrap();
        let config_dir = tmp.path().join("docker");
        fs::create_dir_all(&config_dir).unwrap();
        fs::write(
            config_dir.join("config.json"),
            serde_json::to_vec(docker_config).unwrap(),
        )
        .unwrap();
        let mut p = Proxy {
            addr: addr.to_owned(),
            cache_dir: tmp.path().join("cache"),
            config_dir,
            log: tmp.path().join("proxy.log"),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            scheme: "http",
            prefix: None,
            child: None,
            tmp,
        };
        p.spawn();
        p
    }

    /// Like [`Proxy::start_env`], the proxy started by `bash -c '<prefix>; exec regauth …'`, e.g.
    /// with `ulimit -n 512` (the pid stays the proxy's).
    pub fn start_with_prefix(
        docker_config: &serde_json::Value,
        args: &[&str],
        env: &[(&str, &str)],
        prefix: &str,
    ) -> Proxy {
        let mut a: Vec<&str> = args.to_vec();
        a.push("--x-prefix");
        a.push(prefix);
        Proxy::start_env(docker_config, &a, env)
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("proxy running")
    }

    /// Like [`Proxy::start`] for a proxy serving TLS (readiness is probed with `curl -k`).
    pub fn start_tls(docker_config: &serde_json::Value, args: &[&str]) -> Proxy {
        let mut a: Vec<&str> = args.to_vec();
        a.push("--x-tls-probe");
        Proxy::start_env(docker_config, &a, &[])
    }

    fn spawn(&mut self) {
        let tls = self.args.iter().any(|a| a == "--x-tls-probe");
        self.args.retain(|a| a != "--x-tls-probe");
        if tls {
            self.scheme = "https";
        }
        if let Some(i) = self.args.iter().position(|a| a == "--x-prefix") {
            self.prefix = self.args.get(i + 1).cloned();
            self.args.drain(i..(i + 2).min(self.args.len()));
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.prefix {
            None => Command::new(common::bin("regauth")),
            Some(p) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("{p}; exec \"$0\" \"$@\""))
                    .arg(common::bin("regauth"));
                c
            }
        };
        cmd.arg("proxy")
            .args(["--listen", &self.addr])
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(&self.args)
            .env_remove("DOCKER_AUTH_CONFIG")
            .env_remove("DOCKER_CONFIG")
            .env("REGAUTH_LOG", "debug")
            .env("PATH", common::path_with_bins())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start regauth proxy"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("regauth proxy exited ({st}):\n{}", self.log_text());
            }
            if curl_code(&self.url("/healthz"), &["-k"]) == "200" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again with the same port, cache and config.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Sends `kill -<sig>` to the proxy process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Waits up to `timeout` for the proxy to exit: its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A counter from /metrics, summed over every label set that matches: the bare name
    /// (`regauth_upstream_blob_fetches_total`) sums all of its series; with labels
    /// (`regauth_cache_hits_total{kind="blob"}`) the series must carry each pair given. A family
    /// that is registered (`# TYPE`) but has no series yet counts 0; an unknown name panics.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = curl(&["-sk", &self.url("/metrics")]);
        metric_in(&body, name).unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
    }

    /// `regauth cache verify` on this proxy's cache: (exit ok, stdout).
    pub fn cache_verify(&self) -> (bool, String) {
        let out = Command::new(common::bin("regauth"))
            .args(["cache", "verify", "--cache-dir"])
            .arg(&self.cache_dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs curl; returns (stdout first line when -w is used as the whole output, full stdout).
pub fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["--max-time", "60"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    (s.trim().to_owned(), s)
}

/// `curl -s -o /dev/null -w %{http_code} <extra> URL`: the status as curl prints it (`000`: no
/// HTTP answer).
pub fn curl_code(url: &str, extra: &[&str]) -> String {
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args).0
}

/// `curl -s -D - -o <out> URL` → (status, headers text, body bytes).
pub fn curl_get(url: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["--max-time", "60", "-s", "-D", "-", "-o"])
        .arg(&body)
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, headers, fs::read(&body).unwrap_or_default())
}

/// A registries.conf sending `upstream.invalid/*` to the proxy at `mirror` (`host:port[/path]`).
pub fn registries_conf(dir: &Path, mirror: &str) -> PathBuf {
    let p = dir.join("registries.conf");
    fs::write(
        &p,
        format!(
            "unqualified-search-registries = []\n[[registry]]\nprefix = \"upstream.invalid\"\nlocation = \"upstream.invalid\"\n[[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    p
}

/// `skopeo copy` of `upstream.invalid/<repo_tag>` through the mirror into an OCI layout; returns
/// (success, combined output).
pub fn skopeo_copy_via(mirror: &str, repo_tag: &str, dest: &Path) -> (bool, String) {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = registries_conf(conf_dir.path(), mirror);
    let mut cmd = Command::new("skopeo");
    cmd.arg("--registries-conf")
        .arg(&conf)
        .args(["--insecure-policy", "copy", "--src-no-creds"])
        .arg(format!("docker://upstream.invalid/{repo_tag}"))
        .arg(format!("oci:{}:copied", dest.display()));
    common::run_text(&mut cmd, "skopeo")
}

/// Docker config.json with `auths` for `host` = user:pass.
pub fn auths_config(host: &str, user: &str, pass: &str) -> serde_json::Value {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    serde_json::json!({"auths": {host: {"auth": auth}}})
}

/// The sum of `name` (optionally `name{k="v",…}`, matched as a subset) in exposition `text`.
pub fn metric_in(text: &str, name: &str) -> Option<u64> {
    let (base, want) = match name.split_once('{') {
        Some((b, l)) => (b, labels_of(l.trim_end_matches('}'))),
        None => (name, Vec::new()),
    };
    let family = base.strip_suffix("_total").unwrap_or(base);
    let mut found = text.lines().any(|l| {
        l.starts_with(&format!("# TYPE {family} ")) || l.starts_with(&format!("# TYPE {base} "))
    });
    let mut sum = 0u64;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = match series.split_once('{') {
            Some((n, l)) => (n, labels_of(l.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        if n != base || !want.iter().all(|w| labels.contains(w)) {
            continue;
        }
        found = true;
        sum += value.trim().parse::<f64>().ok()? as u64;
    }
    found.then_some(sum)
}

/// `k="v",k2="v2"` → pairs (values here never hold `,` or `"`).
pub fn labels_of(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// A bcrypt htpasswd file (`htpasswd -Bbn`) in `dir` with `users` (name, password).
pub fn htpasswd_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let mut ht = Vec::new();
    for (u, p) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", u, p])
            .output()
            .unwrap();
        assert!(out.status.success(), "htpasswd -Bbn {u}");
        ht.extend_from_slice(String::from_utf8_lossy(&out.stdout).trim().as_bytes());
        ht.push(b'\n');
    }
    let f = dir.join("htpasswd");
    fs::write(&f, ht).unwrap();
    f
}
