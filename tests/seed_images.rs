//! Every image reference of the seed document (`shared/seed/runner-host-readme.md`, the GitLab
//! Runner page a new user copies from) as one row, run through the real `regauth resolve` binary
//! in both profiles and through the proxy's routing.
//!
//! Why: the conformance tables only used images with a registry or a slash, so `ruby:2.6` — the
//! most common way to write a CI image — was read as the host `ruby:2.6` and refused (issue 8).
//! Each row names the registry key the user's config holds for it; a wrong "image or host" rule,
//! a wrong Docker Hub key or a wrong GitLab path fails the row.

use base64::Engine;
use regauth::config::keys::auth_config_key;
use regauth::proxy::route::{Endpoint, Routes, Upstream};
use regauth::reference::Reference;
use serde_json::Value;
use std::process::Command;

const HUB_KEY: &str = "https://index.docker.io/v1/";
const REG_PORT: &str = "registry.example.com:5000";
const REG: &str = "registry.example.com";
const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const DIGEST: &str = "sha256:d1dbaf9665fe8b2175198e49438092fdbcf4d8934200942b94425301b17853c7";

/// One seed image: the key both profiles must pick, the user it carries, GitLab's lookup path,
/// and the registry host and repository the proxy must route it to.
struct Row {
    image: String,
    key: &'static str,
    user: &'static str,
    gitlab_lookup: &'static str,
    host: &'static str,
    repo: &'static str,
}

fn rows() -> Vec<Row> {
    let row = |image: &str, key, user, gitlab_lookup, host, repo| Row {
        image: image.to_owned(),
        key,
        user,
        gitlab_lookup,
        host,
        repo,
    };
    vec![
        row(
            "ruby:2.6",
            HUB_KEY,
            "hubuser",
            "docker.io/ruby",
            "docker.io",
            "library/ruby",
        ),
        row(
            "postgres:11.7",
            HUB_KEY,
            "hubuser",
            "docker.io/postgres",
            "docker.io",
            "library/postgres",
        ),
        row(
            "postgresql:14.3",
            HUB_KEY,
            "hubuser",
            "docker.io/postgresql",
            "docker.io",
            "library/postgresql",
        ),
        row(
            "redis:latest",
            HUB_KEY,
            "hubuser",
            "docker.io/redis",
            "docker.io",
            "library/redis",
        ),
        row(
            "docker:20.10.16",
            HUB_KEY,
            "hubuser",
            "docker.io/docker",
            "docker.io",
            "library/docker",
        ),
        row(
            "super/sql:experimental",
            HUB_KEY,
            "hubuser",
            "docker.io/super/sql",
            "docker.io",
            "super/sql",
        ),
        row(
            "registry.example.com:5000/namespace/image:tag",
            REG_PORT,
            "portuser",
            "registry.example.com:5000/namespace/image",
            REG_PORT,
            "namespace/image",
        ),
        row(
            "registry.example.com/my/image:latest",
            REG,
            "reguser",
            "registry.example.com/my/image",
            REG,
            "my/image",
        ),
        row(
            &format!("ruby:2.6.8@{DIGEST}"),
            HUB_KEY,
            "hubuser",
            // GitLab Runner cuts the last segment at its first ':', so the digest goes with the tag.
            "docker.io/ruby",
            "docker.io",
            "library/ruby",
        ),
        row(
            &format!("{ECR}/private/image:latest"),
            ECR,
            "AWS",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/private/image",
            ECR,
            "private/image",
        ),
    ]
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A home with one `config.json` holding a key for each seed registry, as the seed doc writes them
/// (`auths`; the ECR host through `credHelpers`, answered by a tiny protocol script).
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("home/.docker");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let config = serde_json::json!({
            "auths": {
                HUB_KEY: {"auth": b64("hubuser:hubpass")},
                REG_PORT: {"auth": b64("portuser:portpass")},
                REG: {"auth": b64("reguser:regpass")},
            },
            "credHelpers": {ECR: "seedecr"},
        });
        std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
        let helper = bin.join("docker-credential-seedecr");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread -r server\ncase \"$1\" in\n  get) printf '{\"ServerURL\":\"%s\",\"Username\":\"AWS\",\"Secret\":\"ecrtoken\"}\\n' \"$server\" ;;\n  *) exit 1 ;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        World { dir }
    }

    /// `regauth` in this world only: its home and Docker config, its helper first on `PATH`.
    fn regauth(&self) -> Command {
        let root = self.dir.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regauth"));
        cmd.env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", root.join("bin").display()),
            )
            .env("HOME", root.join("home"))
            .env("DOCKER_CONFIG", root.join("home/.docker"));
        cmd
    }

    /// `regauth resolve --profile <profile> <args…>`; asserts exit 0 and returns the JSON.
    fn resolve(&self, profile: &str, args: &[&str]) -> Value {
        let out = self
            .regauth()
            .args(["resolve", "--profile", profile])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "resolve --profile {profile} {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        for secret in ["hubpass", "portpass", "regpass", "ecrtoken"] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{secret} leaked"
            );
        }
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

#[test]
fn seed_images_resolve_in_both_profiles() {
    let w = World::new();
    for r in rows() {
        let kind = if r.key == ECR { "credHelpers" } else { "auths" };
        for profile in ["docker", "gitlab"] {
            let v = w.resolve(profile, &[&r.image]);
            let what = format!("{profile} {}: {v}", r.image);
            assert_eq!(v["registry"], r.key, "{what}");
            assert_eq!(v["username"], r.user, "{what}");
            assert_eq!(v["kind"], kind, "{what}");
            let lookup = match profile {
                // The docker CLI looks a registry up by `getAuthConfigKey(domain)`.
                "docker" => auth_config_key(&Reference::parse(&r.image).unwrap().domain),
                _ => r.gitlab_lookup.to_owned(),
            };
            assert_eq!(v["lookup"], lookup, "{what}");
            // `--image` forces the same reading.
            assert_eq!(
                w.resolve(profile, &["--image", &r.image]),
                v,
                "{what} via --image"
            );
        }
    }
}

#[test]
fn hosts_stay_hosts_and_forced_forms_win() {
    let w = World::new();
    for profile in ["docker", "gitlab"] {
        let v = w.resolve(profile, &[REG_PORT]);
        assert_eq!(
            (&v["lookup"], &v["registry"], &v["username"]),
            (
                &Value::from(REG_PORT),
                &Value::from(REG_PORT),
                &Value::from("portuser")
            ),
            "{profile}: {v}"
        );
        let v = w.resolve(profile, &["--host", REG]);
        assert_eq!(v["registry"], REG, "{profile}: {v}");
    }
    // A dotless host:port is an image by docker's rule; --host makes it the host it is meant to be.
    let hub = w.resolve("docker", &["--image", "registry:5000"]);
    assert_eq!(hub["registry"], HUB_KEY, "{hub}");
    let root = w.dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_regauth"))
        .args(["resolve", "--host", "registry:5000"])
        .env_clear()
        .env("HOME", root.join("home"))
        .env("DOCKER_CONFIG", root.join("home/.docker"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), &v["lookup"], &v["registry"]),
        (Some(1), &Value::from("registry:5000"), &Value::Null),
        "{v}"
    );
    // The positional and the explicit forms exclude each other.
    let out = Command::new(env!("CARGO_BIN_EXE_regauth"))
        .args(["resolve", "--host", REG, "ruby:2.6"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{out:?}"
    );
}

/// The pull the proxy would receive for each seed image — from containerd (`?ns=<domain>`), from
/// a skopeo/containerd mirror with the host in the path, and (for Docker Hub) from dockerd's
/// `registry-mirrors` (no hint) — routes to the image's registry and repository, and the registry
/// it names has the same docker key as the resolver's answer above.
#[test]
fn seed_images_route_through_the_proxy() {
    // The proxy reaches what the credential sources name: the same keys as the config above.
    let mut reach = regauth::proxy::reach::Reach::closed();
    let refused = reach.allow_keys([HUB_KEY, REG_PORT, REG, ECR]);
    assert!(refused.is_empty(), "{refused:?}");
    let routes = Routes::new(
        vec![],
        Upstream::from_url("docker.io", "https://registry-1.docker.io").unwrap(),
        reach,
    );
    for r in rows() {
        let reference = Reference::parse(&r.image).unwrap();
        let tail = reference
            .digest
            .clone()
            .or_else(|| reference.tag.clone())
            .unwrap();
        let mut paths = vec![(
            format!("/v2/{}/manifests/{tail}", reference.path),
            Some(format!("ns={}", reference.domain.replace(':', "%3A"))),
        )];
        if reference.domain == "docker.io" {
            paths.push((format!("/v2/{}/manifests/{tail}", reference.path), None));
        } else {
            paths.push((
                format!(
                    "/v2/{}/{}/manifests/{tail}",
                    reference.domain, reference.path
                ),
                None,
            ));
        }
        for (path, query) in paths {
            let route = routes
                .route(&path, query.as_deref())
                .unwrap_or_else(|e| panic!("{} {path}?{query:?}: {e}", r.image));
            let what = format!("{} as {path}?{query:?}", r.image);
            assert_eq!(route.upstream.cred_host, r.host, "{what}");
            assert_eq!(route.repo, r.repo, "{what}");
            assert_eq!(route.endpoint, Endpoint::Manifest(tail.clone()), "{what}");
            assert_eq!(auth_config_key(&route.upstream.cred_host), r.key, "{what}");
        }
    }
}

/// `regauth check --image` reads every seed image as an image and `--host` as a host, in both
/// profiles; a malformed `--host` is an error finding that names the flag.
#[test]
fn check_reads_images_and_hosts_by_flag() {
    let w = World::new();
    for profile in ["docker", "gitlab"] {
        let mut args = vec![
            "check".to_owned(),
            "--profile".into(),
            profile.into(),
            "--json".into(),
        ];
        for r in rows() {
            args.extend(["--image".to_owned(), r.image.clone()]);
        }
        args.extend([
            "--host".to_owned(),
            REG_PORT.into(),
            "--host".into(),
            "reg.example/ns".into(),
        ]);
        let out = w.regauth().args(&args).output().unwrap();
        let findings: Vec<Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let about = |field: &str| -> Vec<&Value> {
            findings.iter().filter(|f| f["field"] == field).collect()
        };
        for r in rows() {
            let f = about(&r.image);
            assert_eq!(f.len(), 1, "{profile} {}: {findings:?}", r.image);
            assert_eq!(
                f[0]["message"],
                format!(
                    "resolves to {:?} ({})",
                    r.key,
                    if r.key == ECR { "credHelpers" } else { "auths" }
                ),
                "{profile} {}",
                r.image
            );
        }
        let f = about(REG_PORT);
        assert_eq!(
            f[0]["message"],
            format!("resolves to {REG_PORT:?} (auths)"),
            "{profile}"
        );
        let f = about("reg.example/ns");
        assert_eq!(
            (&f[0]["level"], &f[0]["source"]),
            (&Value::from("error"), &Value::from("--host")),
            "{f:?}"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "the bad --host is an error finding"
        );
    }
}
