//! The `regauth` command line as a user meets it, through the real binary: each error cause once,
//! `--explain` on failure, `DOCKER_AUTH_CONFIG` file paths, the `check` findings, `--listen`
//! forms and `--upstream` rejection at argument parsing, examples in every `--help`, man page
//! sections, `cache ls --json`, and the file helper's one-time notice. Every captured output is
//! grepped for the test secrets.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const SECRETS: &[&str] = &["hunter2-ux", "aHVudGVyMi11eA"];

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_regauth"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        p.exists(),
        "{} missing: cargo build --workspace",
        p.display()
    );
    p
}

fn run_bin(program: &Path, args: &[&str], env: &[(&str, &str)], home: &Path) -> Out {
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for s in SECRETS {
        assert!(
            !o.stdout.contains(s) && !o.stderr.contains(s),
            "secret {s} in output of {args:?}: {o:?}"
        );
    }
    o
}

fn regauth(args: &[&str], env: &[(&str, &str)], home: &Path) -> Out {
    run_bin(Path::new(env!("CARGO_BIN_EXE_regauth")), args, env, home)
}

/// No line of an error report says the same thing twice.
fn assert_no_repeat(text: &str) {
    for line in text.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        for w in parts.windows(2) {
            assert_ne!(w[0], w[1], "repeated cause in {line:?}");
        }
        for (i, p) in parts.iter().enumerate() {
            if p.len() > 12 {
                assert!(
                    !parts[i + 1..].iter().any(|q| q == p),
                    "cause {p:?} twice in {line:?}"
                );
            }
        }
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn errors_print_each_cause_once() {
    let t = tmp();
    let cfg = t.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.json"), r#"{"credsStore":"nosuch"}"#).unwrap();
    let c = cfg.to_str().unwrap();
    let o = regauth(
        &["resolve", "--config-dir", c, "reg.example:5000"],
        &[],
        t.path(),
    );
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.starts_with("error: "), "{o:?}");
    assert_eq!(o.stderr.matches("not found in PATH").count(), 1, "{o:?}");
    assert_no_repeat(&o.stderr);

    // A config file problem in `check`: the file is named once.
    std::fs::write(cfg.join("config.json"), "{bad").unwrap();
    let o = regauth(&["check", "--config-dir", c], &[], t.path());
    assert_eq!(o.code, 1, "{o:?}");
    let path = cfg.join("config.json").display().to_string();
    assert_eq!(o.stdout.matches(&path).count(), 1, "{o:?}");
    assert_no_repeat(&o.stdout);

    // Address in use: one cause, not two.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let cache = t.path().join("cache");
    let o = regauth(
        &[
            "proxy",
            "--listen",
            &addr,
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[],
        t.path(),
    );
    assert_eq!(o.code, 2, "{o:?}");
    let err: Vec<&str> = o.stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    let err = err.join("\n");
    assert!(err.contains("error: "), "{o:?}");
    assert!(err.to_lowercase().contains("in use"), "{o:?}");
    assert_eq!(err.matches("os error 98").count(), 1, "{o:?}");
}

#[test]
fn explain_also_on_failure() {
    let t = tmp();
    let cfg = t.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.json"), r#"{"credsStore":"nosuch"}"#).unwrap();
    let o = regauth(
        &[
            "resolve",
            "--explain",
            "--config-dir",
            cfg.to_str().unwrap(),
            "reg.example:5000/app",
        ],
        &[],
        t.path(),
    );
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("explain: "), "{o:?}");
    assert!(o.stderr.contains("credsStore = \"nosuch\""), "{o:?}");
    assert!(o.stderr.contains("→ failed"), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
}

#[test]
fn docker_auth_config_path_is_named() {
    let t = tmp();
    let none = t.path().join("none");
    let n = none.to_str().unwrap();
    let env = [("DOCKER_AUTH_CONFIG", "/missing/auth.json")];
    for profile in ["gitlab", "docker"] {
        let o = regauth(
            &[
                "resolve",
                "--profile",
                profile,
                "--config-dir",
                n,
                "reg.example/app",
            ],
            &env,
            t.path(),
        );
        assert_eq!(o.code, 1, "{o:?}");
        assert!(o.stderr.contains("/missing/auth.json"), "{o:?}");
        assert!(o.stderr.contains("does not exist"), "{o:?}");
        assert!(!o.stderr.contains("invalid JSON"), "{o:?}");
        let o = regauth(
            &["check", "--profile", profile, "--config-dir", n],
            &env,
            t.path(),
        );
        assert_eq!(o.code, 1, "{o:?}");
        assert!(
            o.stdout.contains("/missing/auth.json") && o.stdout.contains("does not exist"),
            "{o:?}"
        );
        assert!(!o.stdout.contains("invalid JSON"), "{o:?}");
    }
    // GitLab file-type variable: the path's file is read.
    let f = t.path().join("auth.json");
    std::fs::write(
        &f,
        r#"{"auths":{"reg.example":{"auth":"dXg6aHVudGVyMi11eA=="}}}"#,
    )
    .unwrap();
    let o = regauth(
        &[
            "resolve",
            "--profile",
            "gitlab",
            "--config-dir",
            n,
            "reg.example/app",
        ],
        &[("DOCKER_AUTH_CONFIG", f.to_str().unwrap())],
        t.path(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let j: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(j["username"], "ux", "{o:?}");
    assert_eq!(j["source"], "DOCKER_AUTH_CONFIG", "{o:?}");
}

#[test]
fn check_findings() {
    let t = tmp();
    // No config at all: say so, and where we looked.
    let none = t.path().join("none");
    let o = regauth(
        &["check", "--config-dir", none.to_str().unwrap()],
        &[],
        t.path(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.stdout.contains("ok: no findings"), "{o:?}");
    assert!(o.stdout.contains("no Docker config found"), "{o:?}");
    assert!(
        o.stdout
            .contains(&none.join("config.json").display().to_string()),
        "{o:?}"
    );

    // credsStore makes auths unused (docker profile).
    let cfg = t.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        r#"{"credsStore":"nosuch","auths":{"reg.example:5000":{"auth":"dXg6aHVudGVyMi11eA=="}}}"#,
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let o = regauth(&["check", "--config-dir", c], &[], t.path());
    assert!(
        o.stdout.contains(r#"auths["reg.example:5000"]"#)
            && o.stdout.contains("never uses")
            && o.stdout.contains("anonymous"),
        "{o:?}"
    );
    let o = regauth(&["check", "--config-dir", c, "--json"], &[], t.path());
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|f| f["level"] == "warning" && f["field"] == r#"auths["reg.example:5000"]"#),
        "{o:?}"
    );

    // An empty credHelpers value under the gitlab profile is not "path traversal".
    std::fs::write(
        cfg.join("config.json"),
        r#"{"credHelpers":{"reg.example":""}}"#,
    )
    .unwrap();
    let o = regauth(
        &["check", "--profile", "gitlab", "--config-dir", c],
        &[],
        t.path(),
    );
    assert!(o.stdout.contains("empty"), "{o:?}");
    assert!(!o.stdout.contains("path traversal"), "{o:?}");
    // …and the docker profile reads it as "use auths": no finding about it.
    let o = regauth(&["check", "--config-dir", c], &[], t.path());
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.stdout.contains("credHelpers"), "{o:?}");
}

#[test]
fn listen_forms_and_upstream_rejection() {
    let t = tmp();
    // Rejected at argument parsing: exit 2 before anything starts.
    for (args, needle) in [
        (
            vec![
                "proxy",
                "--upstream",
                "a=http://x.example",
                "--upstream",
                "a=http://y.example",
            ],
            "given twice",
        ),
        (
            vec!["proxy", "--upstream", "My.Reg=http://x.example"],
            "NAME",
        ),
        (vec!["proxy", "--upstream", "a=ftp://x.example"], "URL"),
        (vec!["proxy", "--upstream", "noequals"], "NAME=URL"),
        (
            vec!["proxy", "--listen", "example.com:5000"],
            "not an IP address",
        ),
    ] {
        let o = regauth(&args, &[], t.path());
        assert_eq!(o.code, 2, "{args:?}: {o:?}");
        assert!(
            o.stderr.contains("error:") && o.stderr.contains(needle),
            "{args:?}: {o:?}"
        );
        assert!(!o.stderr.contains("shutting down"), "never started: {o:?}");
    }
    // `:PORT` and `localhost:PORT` listen on loopback.
    for form in [":{}", "localhost:{}"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = form.replace("{}", &port.to_string());
        let cache = t.path().join(format!("cache{port}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_regauth"))
            .args([
                "proxy",
                "--listen",
                &listen,
                "--cache-dir",
                cache.to_str().unwrap(),
            ])
            .env("HOME", t.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/healthz");
        let mut healthy = false;
        for _ in 0..100 {
            let o = regauth(&["healthcheck", &url], &[], t.path());
            if o.code == 0 {
                healthy = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(healthy, "--listen {listen} serves on 127.0.0.1:{port}");
    }
}

/// The subcommands `regauth --help` lists (its "Commands:" block), without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_help_has_examples() {
    let t = tmp();
    let root = regauth(&["--help"], &[], t.path());
    assert_eq!(root.code, 0, "{root:?}");
    assert!(root.stdout.contains("Examples:"), "{root:?}");
    let subs = subcommands(&root.stdout);
    assert!(subs.len() >= 7, "{subs:?}");
    let mut checked = 0;
    for s in &subs {
        let o = regauth(&[s, "--help"], &[], t.path());
        assert!(o.stdout.contains("Examples:"), "regauth {s} --help: {o:?}");
        checked += 1;
        for sub in subcommands(&o.stdout) {
            let o = regauth(&[s, &sub, "--help"], &[], t.path());
            assert!(
                o.stdout.contains("Examples:"),
                "regauth {s} {sub} --help: {o:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
    // The global log flags.
    assert!(
        root.stdout.contains("--log-level") && root.stdout.contains("--verbose"),
        "{root:?}"
    );
}

#[test]
fn man_pages_have_the_sections_and_no_dangling_references() {
    let t = tmp();
    let out = t.path().join("man");
    let o = regauth(&["man", "--out", out.to_str().unwrap()], &[], t.path());
    assert_eq!(o.code, 0, "{o:?}");
    let pages: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(pages.len() >= 10, "{pages:?}");
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for p in &pages {
        let text = std::fs::read_to_string(p).unwrap();
        for sec in ["EXAMPLES", "EXIT STATUS", "ENVIRONMENT", "FILES"] {
            assert!(
                text.contains(&format!(".SH \"{sec}\"")),
                "{} lacks {sec}",
                p.display()
            );
        }
        assert!(text.contains("REGAUTH_LOG"), "{}", p.display());
        // Every page reference `name(1)` (roff writes '-' as '\-') names a page we wrote.
        let plain = text
            .replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fR", "");
        for (i, _) in plain.match_indices("(1)") {
            let start = plain[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .map_or(0, |s| s + 1);
            let name = &plain[start..i];
            if name.is_empty() {
                continue;
            }
            assert!(
                names.iter().any(|n| n == name),
                "{} refers to {name}(1), which was not written",
                p.display()
            );
        }
    }
}

#[test]
fn cache_ls_json_and_table() {
    let t = tmp();
    let cache = t.path().join("cache");
    // An empty cache the proxy's own code created.
    regauth::proxy::cache::Cache::open(&cache).unwrap();
    let c = cache.to_str().unwrap();
    let o = regauth(&["cache", "--cache-dir", c, "ls"], &[], t.path());
    assert_eq!(o.code, 0, "{o:?}");
    let header = o.stdout.lines().next().unwrap_or("");
    for col in ["KIND", "DIGEST", "SIZE", "AGE", "NAMES"] {
        assert!(header.contains(col), "{o:?}");
    }
    let o = regauth(&["cache", "--cache-dir", c, "ls", "--json"], &[], t.path());
    assert_eq!(o.code, 0, "{o:?}");
    for line in o.stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    let o = regauth(
        &[
            "cache",
            "--cache-dir",
            c,
            "gc",
            "--max-size",
            "0",
            "--dry-run",
        ],
        &[],
        t.path(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("would have removed 0 files"), "{o:?}");

    // A manifest known by a tag, a good blob and a damaged one, through the cache's own API.
    use regauth::proxy::cache::{Cache, TagEntry};
    use sha2::Digest;
    let hex = |b: &[u8]| format!("{:x}", sha2::Sha256::digest(b));
    use regauth::proxy::store::{ContentKind, ContentStore};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache_api = Cache::open(&cache).unwrap();
    let manifest = br#"{"schemaVersion":2}"#;
    let mhex = hex(manifest);
    rt.block_on(cache_api.put_manifest(&mhex, manifest))
        .unwrap();
    rt.block_on(cache_api.put_tag(&TagEntry {
        upstream: "private".into(),
        repo: "team/app".into(),
        tag: "1.4".into(),
        accept: "*/*".into(),
        digest: format!("sha256:{mhex}"),
        checked_at: regauth::proxy::cache::now_secs(),
    }))
    .unwrap();
    let blob = vec![7u8; 3000];
    for (content, name) in [(&blob[..], hex(&blob)), (&b"damaged"[..], hex(b"original"))] {
        rt.block_on(async {
            let store = cache_api.store();
            let mut staged = store.stage(ContentKind::Blob, &name).await.unwrap();
            staged.write(content).await.unwrap();
            store.commit(staged, None).await.unwrap();
        });
    }
    let o = regauth(&["cache", "--cache-dir", c, "ls", "--json"], &[], t.path());
    assert_eq!(o.code, 0, "{o:?}");
    let rows: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let m = rows
        .iter()
        .find(|r| r["kind"] == "manifest")
        .unwrap_or_else(|| panic!("{o:?}"));
    assert_eq!(m["digest"], format!("sha256:{mhex}"));
    assert_eq!(m["names"][0], "private/team/app:1.4", "{o:?}");
    assert_eq!(
        rows.iter().filter(|r| r["kind"] == "blob").count(),
        2,
        "{o:?}"
    );
    assert!(
        rows.iter().any(|r| r["kind"] == "tag" && r["tag"] == "1.4"),
        "{o:?}"
    );
    let o = regauth(&["cache", "--cache-dir", c, "ls"], &[], t.path());
    assert!(o.stdout.contains("2.9 KiB"), "human sizes: {o:?}");
    assert!(o.stdout.contains("private/team/app:1.4"), "{o:?}");

    // gc --dry-run lists what it would remove, as many as it counts.
    let dry = [
        "cache",
        "--cache-dir",
        c,
        "gc",
        "--max-size",
        "0",
        "--dry-run",
    ];
    let o = regauth(&dry, &[], t.path());
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.matches("would remove ").count(), 3, "{o:?}");
    assert!(o.stdout.contains("would have removed 3 files"), "{o:?}");
    assert_eq!(
        rt.block_on(Cache::existing(&cache).unwrap().list())
            .unwrap()
            .len(),
        3,
        "dry run"
    );

    // verify --repair names what it removed.
    let o = regauth(
        &["cache", "--cache-dir", c, "verify", "--repair"],
        &[],
        t.path(),
    );
    assert_eq!(o.code, 1, "{o:?}");
    let bad = format!("sha256:{}", hex(b"original"));
    assert!(o.stdout.contains(&format!("removed blob {bad}")), "{o:?}");
    assert!(o.stdout.contains("1 removed"), "{o:?}");
    let o = regauth(&["cache", "--cache-dir", c, "verify"], &[], t.path());
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn file_helper_says_where_it_created_its_store() {
    let t = tmp();
    let dir = t.path().join("regauth-cfg");
    let d = dir.to_str().unwrap();
    let helper = bin("docker-credential-file");
    let store = |url: &str| {
        let request = format!(r#"{{"ServerURL":"{url}","Username":"ux","Secret":"hunter2-ux"}}"#);
        let out = common::run_with_stdin(
            Command::new(&helper)
                .arg("store")
                .env_clear()
                .env("REGAUTH_CONFIG_DIR", d),
            request.as_bytes(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(out.stdout.is_empty(), "stdout belongs to the protocol");
        assert!(!stderr.contains("hunter2-ux"), "{stderr}");
        stderr
    };
    let first = store("reg.example:5000");
    assert!(
        first.contains(&dir.join("credentials.key").display().to_string())
            && first.contains("survives"),
        "{first}"
    );
    let second = store("reg2.example:5000");
    assert!(second.is_empty(), "said once: {second}");
}
