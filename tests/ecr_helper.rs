//! `docker-credential-ecr` against moto's ECR endpoint: API calls counted at moto prove the cache,
//! the expiry refresh, the stale fallback, the error policy and the concurrency lock.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NOT_FOUND: &str = "credentials not found in native keychain";
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// What moto answers for account 123456789012 (decoded `AWS:<this>`).
const MOTO_TOKEN: &str = "123456789012-auth-token";
/// moto's access log line for every API call (ECR and STS are all `POST /`).
const API_CALL: &str = "\"POST /";

struct Sandbox {
    dir: tempfile::TempDir,
    endpoint: String,
    extra: Vec<(String, String)>,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn new(endpoint: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Sandbox {
            dir,
            endpoint: endpoint.to_owned(),
            extra: Vec::new(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn cache_file(&self) -> PathBuf {
        self.cache_dir().join("cache.json")
    }

    fn command(&self, action: &str, extra: &[(&str, &str)]) -> Command {
        let mut c = Command::new(common::bin("docker-credential-ecr"));
        c.arg(action)
            .env_clear()
            .env("PATH", common::path_with_bins())
            .env("HOME", self.dir.path().join("home"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("aws-credentials"),
            )
            .env("REGAUTH_ECR_CACHE_DIR", self.cache_dir())
            .env("REGAUTH_CONFIG_DIR", self.dir.path().join("config"));
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        c
    }

    fn run(&self, action: &str, input: &str, extra: &[(&str, &str)]) -> Out {
        // A helper that exits before reading stdin shows up in the assertions on its output.
        output_with_input(self.command(action, extra), input)
    }

    fn cache_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.cache_file()).unwrap()).unwrap()
    }

    /// Moves every cached token's fetch time to the epoch: past its half-life, still present.
    fn age_cache(&self) {
        let mut v = self.cache_json();
        for e in v["entries"].as_object_mut().unwrap().values_mut() {
            e["fetched_at"] = serde_json::json!(1);
        }
        std::fs::write(self.cache_file(), serde_json::to_vec(&v).unwrap()).unwrap();
    }
}

fn expect_token(o: &Out, server: &str) {
    assert_eq!(o.code, 0, "stdout={} stderr={}", o.stdout, o.stderr);
    let want = format!(
        "{{\"ServerURL\":\"{server}\",\"Username\":\"AWS\",\"Secret\":\"{MOTO_TOKEN}\"}}\n"
    );
    assert_eq!(o.stdout, want, "stderr={}", o.stderr);
}

fn expect_not_found(o: &Out) {
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (1, format!("{NOT_FOUND}\n").as_str()),
        "stderr={}",
        o.stderr
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn cache_refresh_stale_fallback_and_error_policy() {
    if !common::require_peers(&[".venv-moto/bin/moto_server"]) {
        return;
    }
    let moto = common::Moto::start();
    let sb = Sandbox::new(&moto.endpoint);

    // A non-ECR host: not found, and AWS is never asked.
    expect_not_found(&sb.run("get", "registry.example.com:5000\n", &[]));
    expect_not_found(&sb.run("get", "https://public.ecr.aws\n", &[]));
    assert_eq!(moto.request_count(API_CALL), 0);

    // Cold cache: one API call; warm: none.
    expect_token(&sb.run("get", HOST, &[]), HOST);
    assert_eq!(moto.request_count(API_CALL), 1);
    let url = format!("https://{HOST}/v2/");
    expect_token(&sb.run("get", &url, &[]), &url);
    assert_eq!(
        moto.request_count(API_CALL),
        1,
        "second get must hit the cache"
    );
    assert_eq!(mode(&sb.cache_file()), 0o600);
    let raw = std::fs::read_to_string(sb.cache_file()).unwrap();
    assert!(
        !raw.contains("testing"),
        "no AWS key material in the cache file"
    );

    // list = the cached registries.
    let l = sb.run("list", "unused", &[]);
    assert_eq!(l.code, 0, "{}", l.stdout);
    assert_eq!(
        serde_json::from_str::<BTreeMap<String, String>>(&l.stdout).unwrap(),
        BTreeMap::from([(format!("https://{HOST}"), "AWS".to_owned())])
    );

    // Past its half-life → refreshed (one more call), and the refresh is cached again.
    sb.age_cache();
    expect_token(&sb.run("get", HOST, &[]), HOST);
    assert_eq!(moto.request_count(API_CALL), 2);
    expect_token(&sb.run("get", HOST, &[]), HOST);
    assert_eq!(moto.request_count(API_CALL), 2);

    // REGAUTH_ECR_MAX_TOKEN_AGE=0 makes every token stale at once (moto's expiry is in 2015).
    expect_token(
        &sb.run("get", HOST, &[("REGAUTH_ECR_MAX_TOKEN_AGE", "0")]),
        HOST,
    );
    assert_eq!(moto.request_count(API_CALL), 3);

    // A different account is a different cache entry.
    let other = "210987654321.dkr.ecr.us-east-1.amazonaws.com";
    let o = sb.run("get", other, &[]);
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert!(o.stdout.contains("210987654321-auth-token"), "{}", o.stdout);
    assert_eq!(moto.request_count(API_CALL), 4);

    // AWS goes away: a stale cached token is still served, with a warning on stderr.
    sb.age_cache();
    drop(moto);
    let o = sb.run("get", HOST, &[]);
    expect_token(&o, HOST);
    assert!(
        o.stderr.contains("WARN") && o.stderr.contains("using the cached token"),
        "stderr={}",
        o.stderr
    );
    assert!(!o.stderr.contains(MOTO_TOKEN), "no token on stderr");

    // Nothing cached and AWS down: not-found (ecr-login style), or an error when strict.
    let uncached = "111122223333.dkr.ecr.us-east-1.amazonaws.com";
    let o = sb.run("get", uncached, &[]);
    expect_not_found(&o);
    assert!(o.stderr.contains("111122223333"), "stderr={}", o.stderr);
    let o = sb.run("get", uncached, &[("REGAUTH_ECR_STRICT", "1")]);
    assert_eq!(o.code, 1);
    assert_ne!(o.stdout.trim(), NOT_FOUND);
    assert!(
        o.stdout.contains("GetAuthorizationToken") && o.stdout.contains("111122223333"),
        "{}",
        o.stdout
    );
}

#[test]
fn missing_credentials_are_not_found_or_strict_error() {
    if !common::require_peers(&[".venv-moto/bin/moto_server"]) {
        return;
    }
    let moto = common::Moto::start();
    let sb = Sandbox::new(&moto.endpoint);
    let strip = |c: &mut Command| {
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
    };
    let mut c = sb.command("get", &[]);
    strip(&mut c);
    let o = output_with_input(c, HOST);
    expect_not_found(&o);
    let mut c = sb.command("get", &[("REGAUTH_ECR_STRICT", "1")]);
    strip(&mut c);
    let o = output_with_input(c, HOST);
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.to_lowercase().contains("credentials"),
        "strict error names the credential problem: {}",
        o.stdout
    );
    assert_eq!(moto.request_count(API_CALL), 0);
}

fn output_with_input(mut c: Command, input: &str) -> Out {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn store_and_erase_are_not_implemented_unless_ignored() {
    if !common::require_peers(&[".venv-moto/bin/moto_server"]) {
        return;
    }
    let moto = common::Moto::start();
    let sb = Sandbox::new(&moto.endpoint);
    let store_in = format!("{{\"ServerURL\":\"{HOST}\",\"Username\":\"AWS\",\"Secret\":\"x\"}}");
    let o = sb.run("store", &store_in, &[]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.starts_with("not implemented"), "{}", o.stdout);
    let o = sb.run("erase", HOST, &[]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.starts_with("not implemented"), "{}", o.stdout);
    let ignore = [("AWS_ECR_IGNORE_CREDS_STORAGE", "true")];
    let o = sb.run("store", &store_in, &ignore);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{}", o.stderr);
    let o = sb.run("erase", HOST, &ignore);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{}", o.stderr);
    // Only the exact value "true" switches it (as in ecr-login).
    let o = sb.run("erase", HOST, &[("AWS_ECR_IGNORE_CREDS_STORAGE", "1")]);
    assert_eq!(o.code, 1);
    assert_eq!(moto.request_count(API_CALL), 0);
    assert!(!sb.cache_file().exists(), "store never writes the cache");
}

#[test]
fn twenty_concurrent_cold_gets_make_one_api_call() {
    if !common::require_peers(&[".venv-moto/bin/moto_server"]) {
        return;
    }
    let moto = common::Moto::start();
    let sb = Sandbox::new(&moto.endpoint);
    let children: Vec<_> = (0..20)
        .map(|_| {
            let mut child = sb
                .command("get", &[])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child.stdin.take().unwrap().write_all(HOST.as_bytes());
            child
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        expect_token(
            &Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            HOST,
        );
    }
    let calls = moto.request_count(API_CALL);
    eprintln!("20 concurrent cold gets → {calls} GetAuthorizationToken call(s) at moto");
    assert_eq!(calls, 1, "the cache lock lets one process refresh");
    assert_eq!(mode(&sb.cache_file()), 0o600);
    let v = sb.cache_json();
    assert_eq!(v["entries"].as_object().unwrap().len(), 1, "{v}");
    let stray: Vec<_> = std::fs::read_dir(sb.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "cache.json" && n != "cache.lock")
        .collect();
    assert!(stray.is_empty(), "no temp files left: {stray:?}");
}

#[test]
fn assumed_role_profile_from_ecr_json_hits_the_cache_across_runs() {
    if !common::require_peers(&[".venv-moto/bin/moto_server"]) {
        return;
    }
    let moto = common::Moto::start();
    let sb = Sandbox::new(&moto.endpoint);
    // The registry maps to profile "deploy", which assumes a role (STS at moto) from "base".
    std::fs::write(
        sb.dir.path().join("aws-config"),
        "[profile base]\nregion = us-east-1\n\n[profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/deploy\nsource_profile = base\nregion = us-east-1\n",
    )
    .unwrap();
    std::fs::write(
        sb.dir.path().join("aws-credentials"),
        "[base]\naws_access_key_id = basekey\naws_secret_access_key = basesecret\n",
    )
    .unwrap();
    std::fs::create_dir_all(sb.dir.path().join("config")).unwrap();
    std::fs::write(
        sb.dir.path().join("config/ecr.json"),
        format!("{{\"registries\":{{\"{HOST}\":{{\"profile\":\"deploy\"}}}}}}"),
    )
    .unwrap();
    let mut c = sb.command("get", &[]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    expect_token(&output_with_input(c, HOST), HOST);
    let first = moto.request_count(API_CALL);
    assert_eq!(first, 2, "AssumeRole + GetAuthorizationToken");
    // A second process gets a new temporary key from STS — but the cache key is the profile,
    // so nothing is called at all.
    let mut c = sb.command("get", &[]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    expect_token(&output_with_input(c, HOST), HOST);
    assert_eq!(moto.request_count(API_CALL), first);
    // A broken ecr.json is named in the (strict) error.
    std::fs::write(sb.dir.path().join("config/ecr.json"), "{\"registries\":[").unwrap();
    let o = sb.run("get", HOST, &[("REGAUTH_ECR_STRICT", "1")]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("ecr.json"), "{}", o.stdout);
}
