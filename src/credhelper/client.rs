//! The client side: runs `docker-credential-<name>` the way the docker CLI does.
//!
//! Owns: finding the binary on `PATH` (and refusing names that are not a bare file name — GitLab
//! Runner's path-traversal rule), feeding stdin, a timeout, telling "not found" (the exact
//! sentinel, exit non-zero) from real errors, and decoding answers case-insensitively.
//!
//! Does not own: deciding which helper to run (that is [`crate::resolve`]). Every invocation is
//! counted in [`invocations`], so tests can prove the resolver ran only what it needed.
//!
//! Errors carry the helper's stdout/stderr for diagnosis, but passed through [`redact_output`]
//! first: a failing helper may well have printed a secret.

use super::protocol::{Credentials, NOT_FOUND};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The prefix every helper binary carries.
pub const HELPER_PREFIX: &str = "docker-credential-";

static INVOCATIONS: AtomicU64 = AtomicU64::new(0);

/// How many helper processes this process has started so far.
pub fn invocations() -> u64 {
    INVOCATIONS.load(Ordering::Relaxed)
}

/// Why running a helper failed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "credential helper name {name:?} is not a bare file name (path traversal refused); use the suffix of docker-credential-<name>"
    )]
    PathTraversal { name: String },
    #[error(
        "credential helper name is empty; the docker CLI reads an empty credHelpers value as \"use auths for this registry\", but GitLab Runner refuses an empty name (its helper-name check fails the pull)"
    )]
    EmptyName,
    #[error("credential helper {binary} not found in PATH")]
    NotInstalled { binary: String },
    #[error("credential helper {binary} could not be started: {cause}")]
    Spawn {
        binary: String,
        /// Printed, not returned from `source()`: each cause is shown once.
        cause: std::io::Error,
    },
    #[error("credential helper {binary} {action} timed out after {secs} s", secs = .timeout.as_secs_f32())]
    Timeout {
        binary: String,
        action: String,
        timeout: Duration,
    },
    #[error(
        "credential helper {binary} {action} failed ({status}): stdout: `{stdout}`, stderr: `{stderr}`"
    )]
    Failed {
        binary: String,
        action: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error(
        "credential helper {binary} {action} printed an answer that is not the expected JSON ({len} bytes)"
    )]
    BadAnswer {
        binary: String,
        action: String,
        len: usize,
    },
}

/// Runs helpers. Cheap to clone; holds only settings.
#[derive(Clone, Debug)]
pub struct HelperClient {
    /// Search path; `None` means the process's `PATH`.
    pub path: Option<OsString>,
    /// Time allowed for one helper process.
    pub timeout: Duration,
}

impl Default for HelperClient {
    fn default() -> Self {
        HelperClient {
            path: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Checks that `name` is usable as the `<name>` of `docker-credential-<name>`: GitLab Runner's
/// rule (`filepath.Base(name) == name`) plus no empty, `.`/`..` or NUL names.
pub fn validate_helper_name(name: &str) -> Result<(), HelperError> {
    if name.is_empty() {
        return Err(HelperError::EmptyName);
    }
    let bad = name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0');
    if bad {
        Err(HelperError::PathTraversal {
            name: name.to_owned(),
        })
    } else {
        Ok(())
    }
}

impl HelperClient {
    /// Finds `docker-credential-<name>` on the search path.
    pub fn locate(&self, name: &str) -> Result<PathBuf, HelperError> {
        validate_helper_name(name)?;
        let binary = format!("{HELPER_PREFIX}{name}");
        let path = self
            .path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            // An empty PATH element means "current directory" to a shell; Go's exec refuses to run
            // from there since 1.19, and so do we.
            if dir.as_os_str().is_empty() || dir.is_relative() {
                continue;
            }
            let candidate = dir.join(&binary);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        Err(HelperError::NotInstalled { binary })
    }

    /// `get`: `Ok(None)` when the helper answers with the not-found sentinel.
    pub fn get(&self, name: &str, server_url: &str) -> Result<Option<Credentials>, HelperError> {
        let out = self.run(name, "get", server_url.as_bytes())?;
        match out {
            Outcome::NotFound => Ok(None),
            Outcome::Ok(stdout) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&stdout).map_err(|_| HelperError::BadAnswer {
                        binary: format!("{HELPER_PREFIX}{name}"),
                        action: "get".into(),
                        len: stdout.len(),
                    })?;
                let mut c = Credentials::from_json_value(&v).ok_or(HelperError::BadAnswer {
                    binary: format!("{HELPER_PREFIX}{name}"),
                    action: "get".into(),
                    len: stdout.len(),
                })?;
                // docker ignores the ServerURL a helper returns and uses the one it asked for.
                c.server_url = server_url.to_owned();
                Ok(Some(c))
            }
        }
    }

    /// `list`: server URL → username.
    pub fn list(&self, name: &str) -> Result<BTreeMap<String, String>, HelperError> {
        let binary = format!("{HELPER_PREFIX}{name}");
        let bad = |len| HelperError::BadAnswer {
            binary: binary.clone(),
            action: "list".into(),
            len,
        };
        match self.run(name, "list", b"unused")? {
            Outcome::NotFound => Ok(BTreeMap::new()),
            Outcome::Ok(stdout) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&stdout).map_err(|_| bad(stdout.len()))?;
                match v {
                    serde_json::Value::Null => Ok(BTreeMap::new()),
                    serde_json::Value::Object(m) => Ok(m
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().unwrap_or("").to_owned()))
                        .collect()),
                    _ => Err(bad(stdout.len())),
                }
            }
        }
    }

    /// `store`.
    pub fn store(&self, name: &str, creds: &Credentials) -> Result<(), HelperError> {
        let mut obj = serde_json::Map::new();
        obj.insert("ServerURL".into(), creds.server_url.clone().into());
        obj.insert("Username".into(), creds.username.clone().into());
        obj.insert("Secret".into(), creds.secret.expose().into());
        let input = serde_json::Value::Object(obj).to_string();
        self.run(name, "store", input.as_bytes()).map(|_| ())
    }

    /// `erase`.
    pub fn erase(&self, name: &str, server_url: &str) -> Result<(), HelperError> {
        self.run(name, "erase", server_url.as_bytes()).map(|_| ())
    }

    fn run(&self, name: &str, action: &str, input: &[u8]) -> Result<Outcome, HelperError> {
        let program = self.locate(name)?;
        let binary = format!("{HELPER_PREFIX}{name}");
        INVOCATIONS.fetch_add(1, Ordering::Relaxed);
        let mut child = Command::new(&program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|cause| HelperError::Spawn {
                binary: binary.clone(),
                cause,
            })?;
        // Feed stdin and drain both pipes on threads so a chatty helper cannot deadlock us.
        let mut stdin = child.stdin.take();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&input);
            }
        });
        let mut so = child.stdout.take();
        let mut se = child.stderr.take();
        let rd_out = std::thread::spawn(move || read_all(so.as_mut()));
        let rd_err = std::thread::spawn(move || read_all(se.as_mut()));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HelperError::Timeout {
                        binary,
                        action: action.into(),
                        timeout: self.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(cause) => return Err(HelperError::Spawn { binary, cause }),
            }
        };
        let _ = writer.join();
        let stdout = rd_out.join().unwrap_or_default();
        let stderr = rd_err.join().unwrap_or_default();
        if status.success() {
            return Ok(Outcome::Ok(stdout));
        }
        let text = String::from_utf8_lossy(&stdout);
        if text.trim() == NOT_FOUND {
            return Ok(Outcome::NotFound);
        }
        Err(HelperError::Failed {
            binary,
            action: action.into(),
            status: status.to_string(),
            stdout: redact_output(&text),
            stderr: redact_output(&String::from_utf8_lossy(&stderr)),
        })
    }
}

enum Outcome {
    Ok(Vec<u8>),
    NotFound,
}

fn read_all(r: Option<&mut impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    buf
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Makes helper output safe to show: a JSON answer keeps its shape with every value of a
/// secret-bearing key (`secret`, `password`, `token`, `auth`, …) replaced by `<redacted>`; any other
/// text keeps only its first line, cut at 200 characters, and is dropped entirely when it looks like
/// it carries credentials (`pass…`, `secret`, `token`, `auth`, `private`, …).
pub fn redact_output(text: &str) -> String {
    let trimmed = text.trim();
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(trimmed) {
        redact_json(&mut v);
        return v.to_string();
    }
    let first = trimmed.lines().next().unwrap_or("");
    let lower = first.to_ascii_lowercase();
    // "pass" covers password, passwd and passphrase.
    if [
        "secret", "pass", "token", "auth", "bearer", "basic ", "private",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return format!("<{} bytes withheld: may contain a secret>", trimmed.len());
    }
    let mut s: String = first.chars().take(200).collect();
    if first.chars().count() > 200 || trimmed.lines().count() > 1 {
        s.push('…');
    }
    s
}

fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                let k = k.to_ascii_lowercase();
                if [
                    "secret",
                    "password",
                    "token",
                    "auth",
                    "identitytoken",
                    "registrytoken",
                ]
                .iter()
                .any(|w| k.contains(w))
                {
                    *val = serde_json::Value::String(crate::secret::REDACTED.into());
                } else {
                    redact_json(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_must_be_bare() {
        for bad in ["", ".", "..", "../sudo", "/usr/bin/sudo", "a/b", "a\\b"] {
            assert!(validate_helper_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["ecr-login", "file", "desktop.exe", "x_y"] {
            assert!(validate_helper_name(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn redaction_hides_secrets() {
        let r = redact_output(r#"{"Username":"u","Secret":"hunter2"}"#);
        assert!(!r.contains("hunter2") && r.contains("\"u\""), "{r}");
        let r = redact_output("login failed: password hunter2 rejected");
        assert!(!r.contains("hunter2"), "{r}");
        assert_eq!(
            redact_output("exec format error\nmore"),
            "exec format error…"
        );
    }
}
