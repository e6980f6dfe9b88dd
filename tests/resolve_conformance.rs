//! Conformance of `regauth resolve` with its two anchors, run as a real process against real
//! helper processes (small shell scripts that speak the protocol, like GitLab Runner's own
//! `testdata/docker-credential-bin.sh`).
//!
//! The GitLab cases are GitLab Runner's `TestGetConfigForImage` and
//! `TestCredsForImagesWithDifferentPaths` tables; the docker cases follow docker/cli's
//! `GetAuthConfig` order and its config tests. Every case also checks that no secret reaches
//! stdout or stderr unless `--show-secret` is given, and counts helper processes.

mod common;

use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SECRETS: &[&str] = &[
    "test_password_1",
    "test_password_2",
    "test_password_3",
    "script_password_1",
    "hunter2",
];

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

struct World {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        for d in ["bin", "home", "home/.docker"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut w = World {
            dir,
            env: Vec::new(),
        };
        w.helper(
            "bin.sh",
            r#"case "$1" in
  get) printf '{"username":"script_user_1","secret":"script_password_1","serveraddress":"https://registry2.domain.tld:5005/v1/"}\n' ;;
  list) printf '{"https://registry2.domain.tld:5005/v1/":"script_user_1"}\n' ;;
  *) exit 1 ;;
esac"#,
        );
        w
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> PathBuf {
        self.root().join("helpers.log")
    }

    /// Installs `docker-credential-<name>`; every run appends "<name> <action> <stdin>" to the log.
    fn helper(&mut self, name: &str, body: &str) {
        let p = self
            .root()
            .join("bin")
            .join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\ninput=$(cat)\necho \"{name} $1 $input\" >> '{}'\n{body}\n",
            self.log().display()
        );
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.root().join(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn setenv(&mut self, k: &str, v: &str) {
        self.env.push((k.into(), v.into()));
    }

    fn helper_runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn run(&self, args: &[&str]) -> Out {
        let path = format!("{}:/usr/bin:/bin", self.root().join("bin").display());
        let out = Command::new(env!("CARGO_BIN_EXE_regauth"))
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.root().join("home"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let o = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if !args.contains(&"--show-secret") {
            for s in SECRETS {
                assert!(
                    !o.stdout.contains(s) && !o.stderr.contains(s),
                    "secret {s} leaked for {args:?}:\n{}\n{}",
                    o.stdout,
                    o.stderr
                );
            }
        }
        o
    }

    fn resolve(&self, profile: &str, target: &str) -> Out {
        self.run(&["resolve", "--profile", profile, "--explain", target])
    }
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts a match: exit 0 and the given fields.
    fn matched(&self, source: &str, registry: &str, kind: &str, username: &str) {
        let j = self.json();
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(j["source"], source, "{self:?}");
        assert_eq!(j["registry"], registry, "{self:?}");
        assert_eq!(j["kind"], kind, "{self:?}");
        assert_eq!(j["username"], username, "{self:?}");
        assert_eq!(j["secret"], "<redacted>", "{self:?}");
    }

    /// Asserts "no credentials": exit 1 and the null object.
    fn none(&self) {
        let j = self.json();
        assert_eq!(self.code, 1, "{self:?}");
        for k in ["registry", "source", "kind", "helper", "username", "secret"] {
            assert!(
                j.get(k).is_some_and(Value::is_null),
                "{k} should be null: {self:?}"
            );
        }
    }
}

fn gitlab_file() -> String {
    format!(
        r#"{{"auths":{{"https://registry.domain.tld:5005/v1/":{{"auth":"{}"}},"registry2.domain.tld:5005":{{"auth":"{}"}}}}}}"#,
        b64("test_user_1:test_password_1"),
        b64("test_user_2:test_password_2")
    )
}

fn gitlab_env() -> String {
    format!(
        r#"{{"auths":{{"https://registry.domain.tld:5005/v1/":{{"auth":"{}"}}}}}}"#,
        b64("test_user_1:test_password_1")
    )
}

const IMG1: &str = "registry.domain.tld:5005/image/name:version";
const IMG2: &str = "registry2.domain.tld:5005/image/name:version";
const IMGGL: &str = "registry.gitlab.tld:1234/image/name:version";
const TRAV: &str = "../../../../../../usr/bin/sudo";

fn with_job(w: &mut World) {
    w.setenv("CI_REGISTRY", "registry.gitlab.tld:1234");
    w.setenv("CI_REGISTRY_USER", "test_user_3");
    w.setenv("CI_REGISTRY_PASSWORD", "test_password_3");
}

/// GitLab Runner `TestGetConfigForImage`, row by row.
#[test]
fn gitlab_get_config_for_image() {
    let dockercfg = |w: &World, extra: &str| -> String {
        let mut v: Value = serde_json::from_str(&gitlab_file()).unwrap();
        if !extra.is_empty() {
            let e: Value = serde_json::from_str(extra).unwrap();
            for (k, x) in e.as_object().unwrap() {
                v[k] = x.clone();
            }
        }
        w.file("home/.dockercfg", &v.to_string())
            .display()
            .to_string()
    };

    // registry1 / registry2 from file only
    let w = World::new();
    let f = dockercfg(&w, "");
    w.resolve("gitlab", IMG1).matched(
        &f,
        "https://registry.domain.tld:5005/v1/",
        "auths",
        "test_user_1",
    );
    w.resolve("gitlab", IMG2)
        .matched(&f, "registry2.domain.tld:5005", "auths", "test_user_2");
    // missing credentials, file only
    w.resolve("gitlab", IMGGL).none();

    // path traversal in the file's credsStore / credHelpers: hard error
    for extra in [
        format!(r#"{{"credsStore":"{TRAV}"}}"#),
        format!(r#"{{"credHelpers":{{"{IMG2}":"{TRAV}"}}}}"#),
    ] {
        let w = World::new();
        dockercfg(&w, &extra);
        let o = w.resolve("gitlab", IMG2);
        assert_eq!(o.code, 2, "{o:?}");
        assert!(o.stderr.contains("path traversal"), "{o:?}");
    }

    // no file and gitlab credentials; both file and gitlab credentials
    let mut w = World::new();
    with_job(&mut w);
    w.resolve("gitlab", IMGGL)
        .matched("job", "registry.gitlab.tld:1234", "job", "test_user_3");
    dockercfg(&w, "");
    w.resolve("gitlab", IMGGL)
        .matched("job", "registry.gitlab.tld:1234", "job", "test_user_3");

    // DOCKER_AUTH_CONFIG only, and overriding the home dir
    let mut w = World::new();
    w.setenv("DOCKER_AUTH_CONFIG", &gitlab_env());
    w.resolve("gitlab", IMG1).matched(
        "DOCKER_AUTH_CONFIG",
        "https://registry.domain.tld:5005/v1/",
        "auths",
        "test_user_1",
    );
    dockercfg(&w, "");
    w.resolve("gitlab", IMG1).matched(
        "DOCKER_AUTH_CONFIG",
        "https://registry.domain.tld:5005/v1/",
        "auths",
        "test_user_1",
    );

    // DOCKER_AUTH_CONFIG overrides credential store: one list and one get
    let mut w = World::new();
    w.setenv("DOCKER_AUTH_CONFIG", r#"{"credsStore":"bin.sh"}"#);
    let o = w.resolve("gitlab", IMG2);
    o.matched(
        "DOCKER_AUTH_CONFIG",
        "https://registry2.domain.tld:5005/v1/",
        "credsStore",
        "script_user_1",
    );
    assert_eq!(o.json()["helper"], "bin.sh");
    let runs = w.helper_runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].starts_with("bin.sh list")
            && runs[1].starts_with("bin.sh get https://registry2.domain.tld:5005/v1/"),
        "{runs:?}"
    );
    let o = w.run(&["resolve", "--profile", "gitlab", "--show-secret", IMG2]);
    assert_eq!(o.json()["secret"], "script_password_1");

    // DOCKER_AUTH_CONFIG overrides credential helper path
    let mut w = World::new();
    w.setenv(
        "DOCKER_AUTH_CONFIG",
        &format!(r#"{{"credHelpers":{{"{IMG2}":"bin.sh"}}}}"#),
    );
    let o = w.resolve("gitlab", IMG2);
    o.matched("DOCKER_AUTH_CONFIG", IMG2, "credHelpers", "script_user_1");
    assert_eq!(o.json()["lookup"], "registry2.domain.tld:5005/image/name");

    // path traversal in DOCKER_AUTH_CONFIG: hard error, no fallback to the file, even with a valid entry
    for (env, img, with_file) in [
        (format!(r#"{{"credsStore":"{TRAV}"}}"#), IMG2, false),
        (
            format!(r#"{{"credHelpers":{{"registry2.domain.tld:5005":"{TRAV}"}}}}"#),
            IMG2,
            false,
        ),
        (
            format!(r#"{{"credHelpers":{{"registry.domain.tld:5005":"{TRAV}"}}}}"#),
            IMG1,
            true,
        ),
        (
            format!(
                r#"{{"credHelpers":{{"registry.domain.tld:5006":"{TRAV}","registry2.domain.tld:5005":"bin.sh"}}}}"#
            ),
            IMG2,
            false,
        ),
    ] {
        let mut w = World::new();
        if with_file {
            dockercfg(&w, "");
        }
        w.setenv("DOCKER_AUTH_CONFIG", &env);
        let o = w.resolve("gitlab", img);
        assert_eq!(o.code, 2, "{env}: {o:?}");
        assert!(o.stderr.contains("path traversal"), "{o:?}");
        assert!(
            w.helper_runs().is_empty(),
            "nothing may run before the traversal check"
        );
    }

    // missing credsStore / credHelpers binary: one warning naming the source and the helper
    for env in [
        r#"{"credsStore":"nonexistent-helper"}"#.to_owned(),
        r#"{"credHelpers":{"https://registry.domain.tld:5005/v1/":"nonexistent-helper"}}"#
            .to_owned(),
    ] {
        let mut w = World::new();
        w.setenv("DOCKER_AUTH_CONFIG", &env);
        let o = w.resolve("gitlab", IMG1);
        o.none();
        let warnings: Vec<&str> = o
            .stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .collect();
        assert_eq!(warnings.len(), 1, "{o:?}");
        assert!(
            warnings[0].contains("DOCKER_AUTH_CONFIG")
                && warnings[0].contains("nonexistent-helper"),
            "{o:?}"
        );
    }
}

/// GitLab Runner `TestCredsForImagesWithDifferentPaths`.
#[test]
fn gitlab_different_paths() {
    let env = format!(
        r#"{{"auths":{{"registry.local":{{"auth":"{}"}},"registry.local/ns":{{"auth":"{}"}},"registry.local/ns/some/image":{{"auth":"{}"}}}}}}"#,
        b64("u1:hunter2"),
        b64("u2:hunter2"),
        b64("u3:hunter2")
    );
    let mut w = World::new();
    w.setenv("DOCKER_AUTH_CONFIG", &env);
    let want = [
        ("registry.local/foo/image:3", Some("u1")),
        ("registry.local/ns/image:5", Some("u2")),
        ("registry.local/ns/some/image:l", Some("u3")),
        ("no_auth_configured/image:l", None),
    ];
    for (img, user) in want {
        let o = w.resolve("gitlab", img);
        match user {
            Some(u) => assert_eq!(
                (o.code, o.json()["username"].as_str()),
                (0, Some(u)),
                "{img}: {o:?}"
            ),
            None => o.none(),
        }
    }
    // Same path from a later source: the first source wins.
    w.setenv("CI_REGISTRY", "registry.local/ns");
    w.setenv("CI_REGISTRY_USER", "job-cred-user");
    w.setenv("CI_REGISTRY_PASSWORD", "hunter2");
    w.resolve("gitlab", "registry.local/ns/blipp/image:foo")
        .matched("DOCKER_AUTH_CONFIG", "registry.local/ns", "auths", "u2");
    // A longer path from a later source beats a shorter one from an earlier source.
    let mut w2 = World::new();
    w2.setenv("DOCKER_AUTH_CONFIG", &env);
    w2.setenv("CI_REGISTRY", "registry.local/ns/blipp");
    w2.setenv("CI_REGISTRY_USER", "job-cred-user");
    w2.setenv("CI_REGISTRY_PASSWORD", "hunter2");
    w2.resolve("gitlab", "registry.local/ns/blipp/image:bar")
        .matched("job", "registry.local/ns/blipp", "job", "job-cred-user");
}

/// GitLab: `host:port` must match exactly; the dependency proxy comes with `:443`.
#[test]
fn gitlab_port_is_exact() {
    let mut w = World::new();
    w.setenv("CI_DEPENDENCY_PROXY_SERVER", "gitlab.example.com:443");
    w.setenv("CI_DEPENDENCY_PROXY_USER", "dp");
    w.setenv("CI_DEPENDENCY_PROXY_PASSWORD", "hunter2");
    w.resolve(
        "gitlab",
        "gitlab.example.com:443/group/dependency_proxy/containers/alpine:3",
    )
    .matched("job", "gitlab.example.com:443", "job", "dp");
    w.resolve(
        "gitlab",
        "gitlab.example.com/group/dependency_proxy/containers/alpine:3",
    )
    .none();
}

/// The docker CLI's order and key rules.
#[test]
fn docker_profile_order() {
    let mut w = World::new();
    let cfg = w
        .root()
        .join("home/.docker/config.json")
        .display()
        .to_string();
    w.helper(
        "store",
        r#"case "$1" in get) case "$input" in reg.example:5000) printf '{"ServerURL":"x","Username":"store_user","Secret":"hunter2"}\n';; *) echo "credentials not found in native keychain"; exit 1;; esac;; list) echo '{}';; esac"#,
    );
    w.helper(
        "pinned",
        r#"printf '{"ServerURL":"x","Username":"<token>","Secret":"hunter2"}\n'"#,
    );
    w.file(
        "home/.docker/config.json",
        &format!(
            r#"{{"auths":{{"https://legacy.example:6000/v1/":{{"auth":"{a}"}},"optout.example":{{"auth":"{b}"}},"reg.example:5000":{{"auth":"{c}"}},"docker.io":{{"auth":"{a}"}}}},
               "credsStore":"store","credHelpers":{{"optout.example":"","pinned.example":"pinned","docker.io":"pinned"}}}}"#,
            a = b64("legacy_user:hunter2"),
            b = b64("optout_user:hunter2"),
            c = b64("file_user:hunter2"),
        ),
    );
    // credsStore answers for reg.example:5000 (auths entry ignored)
    w.resolve("docker", "reg.example:5000/a/b:1").matched(
        &cfg,
        "reg.example:5000",
        "credsStore",
        "store_user",
    );
    // credsStore not found → anonymous; auths is not consulted
    w.resolve("docker", "legacy.example:6000/a").none();
    // empty credHelpers value opts out of credsStore: auths used, no helper run
    let before = w.helper_runs().len();
    w.resolve("docker", "optout.example/x")
        .matched(&cfg, "optout.example", "auths", "optout_user");
    assert_eq!(
        w.helper_runs().len(),
        before,
        "opt-out must not run any helper"
    );
    // credHelpers exact key; <token> user is an identity token
    let o = w.resolve("docker", "pinned.example/x");
    o.matched(&cfg, "pinned.example", "credHelpers", "");
    assert_eq!(o.json()["secret_kind"], "identitytoken");
    // Docker Hub is looked up as https://index.docker.io/v1/: a "docker.io" credHelpers key never
    // matches, so the credsStore answers (not found here).
    let o = w.resolve("docker", "ubuntu");
    o.none();
    assert_eq!(o.json()["lookup"], "https://index.docker.io/v1/");

    // Without credsStore, a legacy https://host/v1/ auths key matches via ConvertToHostname.
    let w = World::new();
    w.file(
        "home/.docker/config.json",
        &format!(
            r#"{{"auths":{{"https://legacy.example:6000/v1/":{{"auth":"{}"}}}}}}"#,
            b64("legacy_user:hunter2")
        ),
    );
    let cfg = w
        .root()
        .join("home/.docker/config.json")
        .display()
        .to_string();
    w.resolve("docker", "legacy.example:6000/a").matched(
        &cfg,
        "https://legacy.example:6000/v1/",
        "auths",
        "legacy_user",
    );
    // the port matters
    w.resolve("docker", "legacy.example/a").none();
}

#[test]
fn docker_auth_config_env() {
    let mut w = World::new();
    let cfg = w.file(
        "home/.docker/config.json",
        &format!(
            r#"{{"auths":{{"env.example.test":{{"auth":"{}"}}}}}}"#,
            b64("file_user:hunter2")
        ),
    );
    w.setenv(
        "DOCKER_AUTH_CONFIG",
        &format!(
            r#"{{"auths":{{"env.example.test":{{"auth":"{}"}}}}}}"#,
            b64("env_user:hunter2")
        ),
    );
    w.resolve("docker", "env.example.test/x").matched(
        "DOCKER_AUTH_CONFIG",
        "env.example.test",
        "auths",
        "env_user",
    );
    // username/password fields are not accepted by the docker CLI here: warning, fallback
    let mut w2 = World::new();
    let cfg = w2.file(
        "home/.docker/config.json",
        &std::fs::read_to_string(&cfg).unwrap(),
    );
    w2.setenv(
        "DOCKER_AUTH_CONFIG",
        r#"{"auths":{"env.example.test":{"username":"u","password":"hunter2"}}}"#,
    );
    let o = w2.resolve("docker", "env.example.test/x");
    o.matched(
        &cfg.display().to_string(),
        "env.example.test",
        "auths",
        "file_user",
    );
    assert!(
        o.stderr
            .contains("warning: Failed to create credential store from DOCKER_AUTH_CONFIG"),
        "{o:?}"
    );
    // --config-dir replaces DOCKER_CONFIG
    let other = w2.root().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("config.json"),
        format!(
            r#"{{"auths":{{"env.example.test":{{"auth":"{}"}}}}}}"#,
            b64("dir_user:hunter2")
        ),
    )
    .unwrap();
    let mut w3 = World::new();
    w3.setenv("DOCKER_CONFIG", "/nonexistent");
    let o = w3.run(&[
        "resolve",
        "--config-dir",
        other.to_str().unwrap(),
        "env.example.test/x",
    ]);
    assert_eq!(o.json()["username"], "dir_user", "{o:?}");
}

/// The brief: 20 credHelpers entries, one helper process — in both profiles.
#[test]
fn twenty_cred_helpers_run_one_helper() {
    let mut w = World::new();
    w.helper(
        "count",
        r#"printf '{"ServerURL":"","Username":"counted","Secret":"hunter2"}\n'"#,
    );
    let helpers: Vec<String> = (0..20)
        .map(|i| format!(r#""reg{i}.example:5000":"count""#))
        .collect();
    w.file(
        "home/.docker/config.json",
        &format!(r#"{{"credHelpers":{{{}}}}}"#, helpers.join(",")),
    );
    for profile in ["docker", "gitlab"] {
        let before = w.helper_runs().len();
        let o = w.resolve(profile, "reg7.example:5000/team/app:1");
        assert_eq!(o.json()["username"], "counted", "{o:?}");
        let runs = &w.helper_runs()[before..];
        assert_eq!(runs.len(), 1, "{profile}: {runs:?}");
        assert!(
            runs[0].starts_with("count get reg7.example:5000"),
            "{runs:?}"
        );
    }
}

#[test]
fn helper_errors_are_reported_without_secrets() {
    let mut w = World::new();
    w.helper("broken", r#"printf '{"Username":"u","Secret":"hunter2"}\n'; echo "password hunter2 rejected" >&2; exit 3"#);
    w.file(
        "home/.docker/config.json",
        r#"{"credHelpers":{"reg.example":"broken"}}"#,
    );
    let o = w.resolve("docker", "reg.example/x");
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("docker-credential-broken"), "{o:?}");
    // the gitlab profile skips the source with a warning instead
    let o = w.resolve("gitlab", "reg.example/x");
    o.none();
    assert!(
        o.stderr.contains("warning:") && o.stderr.contains("docker-credential-broken"),
        "{o:?}"
    );
}

#[test]
fn bad_config_names_file_and_key() {
    let w = World::new();
    let cfg = w.file(
        "home/.docker/config.json",
        r#"{"auths":{"reg.example:5000":{"auth":"aHVudGVyMg=="}}}"#, // "hunter2", no colon
    );
    let o = w.resolve("docker", "reg.example:5000/x");
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr.contains(&cfg.display().to_string())
            && o.stderr.contains(r#"auths["reg.example:5000"].auth"#),
        "{o:?}"
    );
    assert_eq!(
        o.stderr
            .lines()
            .filter(|l| !l.starts_with("explain:"))
            .count(),
        1,
        "one-line error (after the --explain steps): {o:?}"
    );
    let o = w.run(&["resolve", "Bad/Image"]);
    assert_eq!(o.code, 2, "{o:?}");
    let o = w.run(&["check"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stdout.contains("error:") && o.stdout.contains("auths[\"reg.example:5000\"].auth"),
        "{o:?}"
    );
}

#[test]
fn check_reports_keys_that_never_match() {
    let mut w = World::new();
    w.helper("ok", "exit 0");
    w.file(
        "home/.docker/config.json",
        r#"{"credHelpers":{"docker.io":"ok","https://reg.example":"ok","reg2.example":"missing","x.example":"../x"},
            "auths":{"reg.example:5000":{"auth":"dTpodW50ZXIy"}}}"#,
    );
    let o = w.run(&["check", "--image", "reg.example/app:1"]);
    assert_eq!(o.code, 1, "{o:?}");
    for needle in [
        r#"credHelpers["docker.io"]: never matches"#,
        r#"credHelpers["https://reg.example"]: never matches"#,
        "docker-credential-missing not found in PATH",
        "path traversal",
        "host:port must match exactly",
    ] {
        assert!(
            o.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            o.stdout
        );
    }
    assert!(
        w.helper_runs().is_empty(),
        "check runs no helper for config findings: {:?}",
        w.helper_runs()
    );
}

#[test]
fn auth_config_toml_round_trips() {
    let mut auth_config = Command::new(env!("CARGO_BIN_EXE_regauth"));
    auth_config.args([
        "auth-config",
        "--registry",
        "registry.example.com:5000",
        "--registry",
        "docker.io",
        "--username",
        "my_username",
        "--password-stdin",
        "--toml",
    ]);
    let out = common::run_with_stdin(&mut auth_config, b"my\"pa\\ss\n");
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let doc: toml::Table = toml::from_str(&line).unwrap();
    let env = doc["environment"].as_array().unwrap()[0].as_str().unwrap();
    let json = env.strip_prefix("DOCKER_AUTH_CONFIG=").unwrap();
    let v: Value = serde_json::from_str(json).unwrap();
    let expect = b64("my_username:my\"pa\\ss");
    assert_eq!(
        v["auths"]["registry.example.com:5000"]["auth"],
        expect.as_str()
    );
    assert_eq!(
        v["auths"]["https://index.docker.io/v1/"]["auth"],
        expect.as_str()
    );

    // And the result resolves, in both profiles, to the same user.
    let mut w = World::new();
    w.setenv("DOCKER_AUTH_CONFIG", json);
    for p in ["docker", "gitlab"] {
        let o = w.resolve(p, "registry.example.com:5000/private/image:latest");
        assert_eq!(o.json()["username"], "my_username", "{p}: {o:?}");
    }
    // A bad registry is a usage error.
    let o = w.run(&[
        "auth-config",
        "--registry",
        "not a host",
        "--username",
        "u",
        "--password-stdin",
    ]);
    assert_eq!(o.code, 2, "{o:?}");
}

/// `--explain` prints, on stderr, every source consulted in order and why it did or did not match; the
/// JSON on stdout is unchanged by it, and no secret appears in either.
#[test]
fn explain_names_every_source_consulted_and_why() {
    let w = World::new();
    let cfg = w.file(
        "home/.docker/config.json",
        &format!(
            r#"{{"auths":{{"other.example":{{"auth":"{}"}}}}}}"#,
            b64("test_user_1:test_password_1")
        ),
    );
    let cfg = cfg.display().to_string();
    let o = w.resolve("docker", "other.example/a:1");
    o.matched(&cfg, "other.example", "auths", "test_user_1");
    let lines: Vec<&str> = o.stderr.lines().collect();
    let expect = [
        "explain: docker profile: registry other.example → lookup key \"other.example\""
            .to_string(),
        "explain: DOCKER_AUTH_CONFIG: not set".to_string(),
        format!("explain: {cfg}: reading"),
        format!("explain: {cfg}: loaded"),
        format!("explain: {cfg}: credHelpers has no key \"other.example\" (exact match only)"),
        format!("explain: {cfg}: no credsStore"),
        format!("explain: {cfg}: auths has key \"other.example\" → match"),
    ];
    assert_eq!(lines, expect, "{o:?}");
    // Same JSON without --explain, and nothing on stderr.
    let plain = w.run(&["resolve", "--profile", "docker", "other.example/a:1"]);
    assert_eq!(plain.stdout, o.stdout);
    assert_eq!(plain.stderr, "", "{plain:?}");

    // No match: the last line says why (the keys that were there).
    let o = w.resolve("docker", "none.example/a:1");
    o.none();
    assert_eq!(
        o.stderr.lines().last(),
        Some(
            format!(
                "explain: {cfg}: no auths key equals or normalises to \"none.example\" (keys: [\"other.example\"])"
            )
            .as_str()
        ),
        "{o:?}"
    );
}

/// GitLab file-type variable: `DOCKER_AUTH_CONFIG` holds a path to the JSON, not the JSON.
#[test]
fn gitlab_docker_auth_config_as_a_file_path() {
    let mut w = World::new();
    let f = w.file("dac.json", &gitlab_env());
    let f = f.display().to_string();
    w.setenv("DOCKER_AUTH_CONFIG", &f);
    let o = w.resolve("gitlab", IMG1);
    o.matched(
        "DOCKER_AUTH_CONFIG",
        "https://registry.domain.tld:5005/v1/",
        "auths",
        "test_user_1",
    );
    assert!(
        o.stderr.contains(&format!(
            "explain: DOCKER_AUTH_CONFIG: a file path (a GitLab file-type variable); reading {f}"
        )),
        "{o:?}"
    );
    // A path to a file that is not JSON: a warning naming the source, and no credentials from it.
    let bad = w.file("bad.json", "not json");
    w.env.retain(|(k, _)| k != "DOCKER_AUTH_CONFIG");
    w.setenv("DOCKER_AUTH_CONFIG", &bad.display().to_string());
    let o = w.resolve("gitlab", IMG1);
    o.none();
    assert!(o.stderr.contains("DOCKER_AUTH_CONFIG"), "{o:?}");
}
