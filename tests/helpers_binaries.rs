//! Our helper binaries driven as docker drives them (argv action, stdin, stdout, exit status):
//! env/gitlab/router behaviour end to end, the file store under 50 concurrent `store` processes,
//! `--help`/`version` on every helper, and logging that stays on stderr without secrets.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const NOT_FOUND: &str = "credentials not found in native keychain\n";
const HELPERS: [&str; 4] = [
    "docker-credential-env",
    "docker-credential-file",
    "docker-credential-gitlab",
    "docker-credential-regauth",
];

/// Runs a helper with exactly `env` (plus PATH with our binaries).
fn helper(name: &str, action: &str, stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(common::bin(name));
    c.env_clear()
        .env("PATH", common::path_with_bins())
        .arg(action)
        .envs(env.iter().copied());
    common::run_with_stdin(&mut c, stdin.as_bytes())
}

fn out(o: &Output) -> (i32, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn store_json(url: &str, user: &str, secret: &str) -> String {
    serde_json::json!({"ServerURL": url, "Username": user, "Secret": secret}).to_string()
}

/// The exact `get` answer (Go's field order; test values need no escaping).
fn get_json(url: &str, user: &str, secret: &str) -> String {
    format!("{{\"ServerURL\":\"{url}\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}\n")
}

#[test]
fn every_helper_has_help_and_version() {
    for name in HELPERS {
        let usage = format!("Usage: {name} <store|get|erase|list|version>\n");
        assert_eq!(
            out(&helper(name, "--help", "", &[])),
            (0, usage.clone()),
            "{name}"
        );
        assert_eq!(
            out(&helper(name, "-h", "", &[])),
            (0, usage.clone()),
            "{name}"
        );
        let version = format!("{name} (regauth) v{}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(
            out(&helper(name, "version", "", &[])),
            (0, version.clone()),
            "{name}"
        );
        assert_eq!(
            out(&helper(name, "--version", "", &[])),
            (0, version),
            "{name}"
        );
        assert_eq!(
            out(&helper(name, "bogus", "", &[])),
            (1, format!("{name}: unknown action: bogus\n")),
            "{name}"
        );
    }
}

#[test]
fn env_helper_binary() {
    let env = [
        ("REGAUTH_REGISTRY_EXAMPLE_COM_5000_USERNAME", "u5000"),
        ("REGAUTH_REGISTRY_EXAMPLE_COM_5000_PASSWORD", "p<5000>"),
        ("REGAUTH_DOCKER_IO_USERNAME", "hub"),
        ("REGAUTH_DOCKER_IO_PASSWORD", "hubpass"),
    ];
    let h = "docker-credential-env";
    assert_eq!(
        out(&helper(h, "get", "https://registry.example.com:5000/v2/\n", &env)),
        (
            0,
            "{\"ServerURL\":\"https://registry.example.com:5000/v2/\",\"Username\":\"u5000\",\"Secret\":\"p\\u003c5000\\u003e\"}\n"
                .into()
        )
    );
    for hub in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
    ] {
        assert_eq!(
            out(&helper(h, "get", hub, &env)),
            (0, get_json(hub, "hub", "hubpass"))
        );
    }
    // Port-exact, and never empty credentials with exit 0.
    for miss in [
        "registry.example.com",
        "registry.example.com:5001",
        "other.example",
    ] {
        assert_eq!(
            out(&helper(h, "get", miss, &env)),
            (1, NOT_FOUND.into()),
            "{miss}"
        );
    }
    assert_eq!(
        out(&helper(h, "list", "unused", &env)),
        (
            0,
            "{\"https://index.docker.io/v1/\":\"hub\",\"registry.example.com:5000\":\"u5000\"}\n"
                .into()
        )
    );
    let o = helper(h, "store", &store_json("reg", "u", "hunter2"), &env);
    let (code, text) = out(&o);
    assert_eq!(code, 1);
    assert!(
        text.starts_with("docker-credential-env is read-only: store is not supported")
            && text.contains("REGAUTH_REG_USERNAME")
            && !text.contains("hunter2"),
        "{text}"
    );
    assert_eq!(out(&helper(h, "erase", "reg", &env)).0, 1);
    let ignore = [("REGAUTH_IGNORE_STORE", "true")];
    assert_eq!(
        out(&helper(h, "store", &store_json("reg", "u", "p"), &ignore)),
        (0, String::new())
    );
    assert_eq!(out(&helper(h, "erase", "reg", &ignore)), (0, String::new()));
}

#[test]
fn gitlab_helper_binary() {
    let env = [
        ("CI_REGISTRY", "registry.gitlab.example.com"),
        ("CI_REGISTRY_USER", "gitlab-ci-token"),
        ("CI_REGISTRY_PASSWORD", "job-token-1"),
        ("CI_DEPENDENCY_PROXY_SERVER", "gitlab.example.com:443"),
        ("CI_DEPENDENCY_PROXY_USER", "gitlab-ci-token"),
        ("CI_DEPENDENCY_PROXY_PASSWORD", "job-token-2"),
    ];
    let h = "docker-credential-gitlab";
    assert_eq!(
        out(&helper(h, "get", "registry.gitlab.example.com", &env)),
        (
            0,
            get_json(
                "registry.gitlab.example.com",
                "gitlab-ci-token",
                "job-token-1"
            )
        )
    );
    assert_eq!(
        out(&helper(h, "get", "gitlab.example.com:443", &env)),
        (
            0,
            get_json("gitlab.example.com:443", "gitlab-ci-token", "job-token-2")
        )
    );
    for miss in ["gitlab.example.com", "registry.gitlab.example.com:5050"] {
        assert_eq!(
            out(&helper(h, "get", miss, &env)),
            (1, NOT_FOUND.into()),
            "{miss}"
        );
    }
    assert_eq!(
        out(&helper(h, "list", "", &env)),
        (
            0,
            "{\"gitlab.example.com:443\":\"gitlab-ci-token\",\"registry.gitlab.example.com\":\"gitlab-ci-token\"}\n"
                .into()
        )
    );
    let (code, text) = out(&helper(h, "store", &store_json("x", "u", "hunter2"), &env));
    assert_eq!(code, 1);
    assert!(text.contains("docker-credential-gitlab is read-only") && !text.contains("hunter2"));
    assert_eq!(out(&helper(h, "list", "", &[])), (0, "{}\n".into()));
}

#[test]
fn router_binary_routes_in_process_and_via_helpers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    std::fs::write(
        tmp.path().join("router.json"),
        r#"{"store":"file","routes":[
            {"host":"registry.example.com:5000","backend":"file"},
            {"host":"*.example.org","backend":"env"},
            {"host":"*.via-helper.test","helper":"env"},
            {"host":"registry.gitlab.example.com","backend":"gitlab"},
            {"host":"broken.test","helper":"not-installed-anywhere"},
            {"host":"ecr","helper":"not-installed-ecr"}]}"#,
    )
    .unwrap();
    let env = [
        ("REGAUTH_CONFIG_DIR", dir),
        ("REGAUTH_A_EXAMPLE_ORG_USERNAME", "org-user"),
        ("REGAUTH_A_EXAMPLE_ORG_PASSWORD", "org-pass"),
        ("REGAUTH_X_VIA_HELPER_TEST_USERNAME", "exec-user"),
        ("REGAUTH_X_VIA_HELPER_TEST_PASSWORD", "exec-pass"),
        ("REGAUTH_X_VIA_HELPER_TEST_SERVER", "x.via-helper.test"),
        ("CI_REGISTRY", "registry.gitlab.example.com"),
        ("CI_JOB_TOKEN", "jt"),
    ];
    let h = "docker-credential-regauth";
    assert_eq!(
        out(&helper(
            h,
            "store",
            &store_json("registry.example.com:5000", "file-user", "file-pass"),
            &env
        )),
        (0, String::new())
    );
    assert_eq!(
        out(&helper(h, "get", "registry.example.com:5000", &env)),
        (
            0,
            get_json("registry.example.com:5000", "file-user", "file-pass")
        )
    );
    // The file helper sees what the router stored: same folder, same store.
    assert_eq!(
        out(&helper(
            "docker-credential-file",
            "get",
            "registry.example.com:5000",
            &env
        )),
        (
            0,
            get_json("registry.example.com:5000", "file-user", "file-pass")
        )
    );
    assert_eq!(
        out(&helper(h, "get", "a.example.org", &env)),
        (0, get_json("a.example.org", "org-user", "org-pass"))
    );
    assert_eq!(
        out(&helper(h, "get", "x.via-helper.test", &env)),
        (0, get_json("x.via-helper.test", "exec-user", "exec-pass"))
    );
    assert_eq!(
        out(&helper(h, "get", "registry.gitlab.example.com", &env)),
        (
            0,
            get_json("registry.gitlab.example.com", "gitlab-ci-token", "jt")
        )
    );
    assert_eq!(
        out(&helper(h, "get", "nowhere.test", &env)),
        (1, NOT_FOUND.into())
    );
    let (code, text) = out(&helper(h, "get", "broken.test", &env));
    assert_eq!(code, 1);
    assert!(
        text.contains("docker-credential-not-installed-anywhere not found in PATH"),
        "{text}"
    );

    // list merges in-process and exec'd lists; missing helpers are skipped quietly…
    let o = helper(h, "list", "unused", &env);
    let list: BTreeMap<String, String> = serde_json::from_slice(&o.stdout).unwrap();
    let want: BTreeMap<String, String> = [
        ("a.example.org", "org-user"),
        ("registry.example.com:5000", "file-user"),
        ("registry.gitlab.example.com", "gitlab-ci-token"),
        ("x.via-helper.test", "exec-user"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!((o.status.code(), list), (Some(0), want));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // …and noted on stderr when REGAUTH_LOG is set, without changing stdout.
    let mut logged = env.to_vec();
    logged.push(("REGAUTH_LOG", "info"));
    let o2 = helper(h, "list", "unused", &logged);
    assert_eq!(o2.stdout, o.stdout);
    let err = String::from_utf8_lossy(&o2.stderr);
    assert!(err.contains("not-installed-anywhere"), "{err}");

    assert_eq!(
        out(&helper(h, "erase", "registry.example.com:5000", &env)),
        (0, String::new())
    );
    assert_eq!(
        out(&helper(h, "get", "registry.example.com:5000", &env)),
        (1, NOT_FOUND.into())
    );
}

#[test]
fn router_config_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let h = "docker-credential-regauth";
    let (code, text) = out(&helper(h, "get", "x", &[("REGAUTH_CONFIG_DIR", dir)]));
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!("{dir}/router.json not found")),
        "{text}"
    );
    // version/help work without a config.
    assert_eq!(
        out(&helper(h, "version", "", &[("REGAUTH_CONFIG_DIR", dir)])).0,
        0
    );
    let other = tmp.path().join("other.json");
    std::fs::write(&other, r#"{"routes":[{"host":"*","backend":"keyring"}]}"#).unwrap();
    let (code, text) = out(&helper(
        h,
        "get",
        "x",
        &[("REGAUTH_ROUTER_CONFIG", other.to_str().unwrap())],
    ));
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!(
            "{}: routes[0].backend: unknown backend \"keyring\"",
            other.display()
        )),
        "{text}"
    );
}

#[test]
fn file_store_survives_50_concurrent_store_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let dir_s = dir.to_str().unwrap().to_owned();
    let bin = common::bin("docker-credential-file");
    let children: Vec<_> = (0..50)
        .map(|i| {
            let input = store_json(
                &format!("reg{i}.example:{}", 5000 + i),
                &format!("user{i}"),
                &format!("pass{i}"),
            );
            let mut store = Command::new(&bin);
            store
                .arg("store")
                .env_clear()
                .env("REGAUTH_CONFIG_DIR", &dir_s);
            common::spawn_with_stdin(&mut store, input.as_bytes())
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let env = [("REGAUTH_CONFIG_DIR", dir_s.as_str())];
    let o = helper("docker-credential-file", "list", "", &env);
    let list: BTreeMap<String, String> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.len(), 50, "{list:?}");
    for i in 0..50 {
        let url = format!("reg{i}.example:{}", 5000 + i);
        assert_eq!(list.get(&url), Some(&format!("user{i}")));
        assert_eq!(
            out(&helper("docker-credential-file", "get", &url, &env)),
            (0, get_json(&url, &format!("user{i}"), &format!("pass{i}")))
        );
    }
    // Only the store, its key and its lock; no temp files left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".credentials.lock", "credentials.enc", "credentials.key"]
    );
}

#[test]
fn file_helper_errors_and_logging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let h = "docker-credential-file";
    let env = [("REGAUTH_CONFIG_DIR", dir), ("REGAUTH_LOG", "debug")];
    let o = helper(
        h,
        "store",
        &store_json("reg:5000", "logged-user", "hunter2-log"),
        &env,
    );
    assert_eq!(out(&o), (0, String::new()));
    let o = helper(h, "get", "reg:5000", &env);
    assert_eq!(
        out(&o),
        (0, get_json("reg:5000", "logged-user", "hunter2-log"))
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("file get"), "logs expected on stderr: {err}");
    assert!(!err.contains("hunter2-log"), "{err}");
    // Without REGAUTH_LOG: silent stderr.
    let o = helper(h, "get", "reg:5000", &[("REGAUTH_CONFIG_DIR", dir)]);
    assert!(o.stderr.is_empty());

    let store = Path::new(dir).join("credentials.enc");
    let mut data = std::fs::read(&store).unwrap();
    let n = data.len() - 3;
    data[n] ^= 0x40;
    std::fs::write(&store, &data).unwrap();
    let (code, text) = out(&helper(
        h,
        "get",
        "reg:5000",
        &[("REGAUTH_CONFIG_DIR", dir)],
    ));
    assert_eq!(code, 1);
    assert!(
        text.contains(&store.display().to_string()) && text.contains("cannot be decrypted"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
}

/// GitLab Runner's way of using a `credsStore` (`list`, then `get` for listed keys, port-exact
/// paths), through the project's gitlab-profile resolver: one `credsStore: regauth` serves the env
/// route and the dependency proxy (`:443`) route, and `gitlab.example.com` without the port gets
/// nothing.
#[test]
fn router_as_gitlab_runner_creds_store() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        tmp.path().join("router.json"),
        r#"{"store":"file","routes":[
            {"host":"*.example.org","backend":"env"},
            {"host":"gitlab.example.com:443","backend":"gitlab"},
            {"host":"*","backend":"file"}]}"#,
    )
    .unwrap();
    let resolve = |image: &str| {
        let o = Command::new(common::bin("regauth"))
            .env_clear()
            .env("PATH", common::path_with_bins())
            .env("HOME", &home)
            .env("REGAUTH_CONFIG_DIR", tmp.path())
            .env("REGAUTH_A_EXAMPLE_ORG_USERNAME", "org-user")
            .env("REGAUTH_A_EXAMPLE_ORG_PASSWORD", "org-pass")
            .env("CI_DEPENDENCY_PROXY_SERVER", "gitlab.example.com:443")
            .env("CI_JOB_TOKEN", "job-token")
            .env("DOCKER_AUTH_CONFIG", r#"{"credsStore":"regauth"}"#)
            .args(["resolve", "--profile", "gitlab", "--show-secret", image])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
        (
            v["username"].clone(),
            v["secret"].clone(),
            v["registry"].clone(),
        )
    };
    assert_eq!(
        resolve("a.example.org/ns/img:1"),
        ("org-user".into(), "org-pass".into(), "a.example.org".into())
    );
    assert_eq!(
        resolve("gitlab.example.com:443/grp/dependency_proxy/containers/alpine:3"),
        (
            "gitlab-ci-token".into(),
            "job-token".into(),
            "gitlab.example.com:443".into()
        )
    );
    let none = serde_json::Value::Null;
    assert_eq!(
        resolve("gitlab.example.com/grp/img:1"),
        (none.clone(), none.clone(), none)
    );
}

/// Every router action through another helper process (`store`/`erase` to `{"helper": NAME}`,
/// `get`/`list` via a `helper` route) — how keyring and ecr are reached.
#[test]
fn router_store_get_list_erase_via_helper_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    std::fs::write(
        tmp.path().join("router.json"),
        r#"{"store":{"helper":"file"},"routes":[{"host":"*","helper":"file"}]}"#,
    )
    .unwrap();
    let env = [("REGAUTH_CONFIG_DIR", dir)];
    let h = "docker-credential-regauth";
    let url = "https://index.docker.io/v1/";
    assert_eq!(
        out(&helper(
            h,
            "store",
            &store_json(url, "<token>", "refresh&token"),
            &env
        )),
        (0, String::new())
    );
    let want = format!(
        "{{\"ServerURL\":\"{url}\",\"Username\":\"\\u003ctoken\\u003e\",\"Secret\":\"refresh\\u0026token\"}}\n"
    );
    assert_eq!(out(&helper(h, "get", url, &env)), (0, want.clone()));
    assert_eq!(
        out(&helper("docker-credential-file", "get", url, &env)),
        (0, want)
    );
    assert_eq!(
        out(&helper(h, "list", "", &env)),
        (0, format!("{{\"{url}\":\"\\u003ctoken\\u003e\"}}\n"))
    );
    assert_eq!(out(&helper(h, "erase", url, &env)), (0, String::new()));
    assert_eq!(out(&helper(h, "get", url, &env)), (1, NOT_FOUND.into()));
    assert_eq!(out(&helper(h, "list", "", &env)), (0, "{}\n".into()));
}
