//! skopeo (containers/image, an independent Go client of the helper protocol) with an `--authfile`
//! whose `credHelpers` name our helpers: `docker-credential-env` for one htpasswd registry,
//! `docker-credential-file` for another. The harness busybox image goes in, across and out.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn skopeo(authfile: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("skopeo");
    c.env("PATH", common::path_with_bins())
        .env_remove("REGISTRY_AUTH_FILE")
        .arg("--insecure-policy");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args)
        .arg("--authfile")
        .arg(authfile)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo")
}

fn ok(out: &Output, what: &str) {
    common::assert_success(out, what);
}

#[test]
fn skopeo_copies_through_env_and_file_helpers() {
    if !common::require_peers(&["skopeo", "docker-registry", "htpasswd", "gzip", "tar"]) {
        return;
    }
    common::bin("docker-credential-env");
    let file_helper = common::bin("docker-credential-file");
    let reg_env = common::Registry::start_htpasswd("env-user", "env-Pass-1");
    let reg_file = common::Registry::start_htpasswd("file-user", "file-Pass-2");
    let tmp = tempfile::tempdir().unwrap();
    let img = common::busybox_image(&tmp.path().join("layout"), "latest");
    let regauth_dir = tmp.path().join("regauth");

    let authfile = tmp.path().join("auth.json");
    std::fs::write(
        &authfile,
        format!(
            r#"{{"credHelpers":{{"{}":"env","{}":"file"}}}}"#,
            reg_env.addr, reg_file.addr
        ),
    )
    .unwrap();
    let host_part: String = reg_env
        .addr
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let user_var = format!("REGAUTH_{host_part}_USERNAME");
    let pass_var = format!("REGAUTH_{host_part}_PASSWORD");
    let dir = regauth_dir.to_str().unwrap();

    // Store the file registry's credentials with the helper itself, as `docker login` would.
    let mut c = Command::new(&file_helper);
    c.arg("store")
        .env("REGAUTH_CONFIG_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!(
            r#"{{"ServerURL":"{}","Username":"file-user","Secret":"file-Pass-2"}}"#,
            reg_file.addr
        )
        .as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());

    let src = format!("oci:{}:latest", img.layout.display());
    let on_env = format!("docker://{}/test/busybox:v1", reg_env.addr);
    let on_file = format!("docker://{}/test/busybox:v2", reg_file.addr);
    let vars: [(&str, &str); 3] = [
        (&user_var, "env-user"),
        (&pass_var, "env-Pass-1"),
        ("REGAUTH_CONFIG_DIR", dir),
    ];

    // Without the variables the env helper answers not-found and the registry refuses skopeo.
    let out = skopeo(
        &authfile,
        &[("REGAUTH_CONFIG_DIR", dir)],
        &["copy", "--dest-tls-verify=false", &src, &on_env],
    );
    assert!(
        !out.status.success(),
        "push without env credentials must fail"
    );

    let out = skopeo(
        &authfile,
        &vars,
        &["copy", "--dest-tls-verify=false", &src, &on_env],
    );
    ok(&out, "skopeo copy oci → env registry");
    let out = skopeo(
        &authfile,
        &vars,
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &on_env,
            &on_file,
        ],
    );
    ok(&out, "skopeo copy env registry → file registry");
    let dest = tmp.path().join("out");
    let out = skopeo(
        &authfile,
        &vars,
        &[
            "copy",
            "--src-tls-verify=false",
            &on_file,
            &format!("oci:{}:pulled", dest.display()),
        ],
    );
    ok(&out, "skopeo copy file registry → oci");
    let index = std::fs::read_to_string(dest.join("index.json")).unwrap();
    assert!(
        index.contains(&img.manifest_digest),
        "pulled manifest differs: {index}"
    );
    for d in &img.layer_digests {
        assert!(
            dest.join("blobs/sha256")
                .join(&d["sha256:".len()..])
                .is_file(),
            "layer {d} missing"
        );
    }
    let out = skopeo(
        &authfile,
        &vars,
        &["inspect", "--tls-verify=false", "--raw", &on_file],
    );
    ok(&out, "skopeo inspect");
    assert_eq!(common::sha256_digest(&out.stdout), img.manifest_digest);

    // The file registry's credentials really come from the file store: wrong store dir → refused.
    let empty = tmp.path().join("empty");
    let out = skopeo(
        &authfile,
        &[("REGAUTH_CONFIG_DIR", empty.to_str().unwrap())],
        &["inspect", "--tls-verify=false", "--raw", &on_file],
    );
    assert!(
        !out.status.success(),
        "inspect without the file store must fail"
    );
}
