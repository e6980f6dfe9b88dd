//! `docker-credential-keyring` against real keyrings: gnome-keyring (Secret Service) under
//! `dbus-run-session`, and the kernel keyutils store under `keyctl session -`.
//!
//! Both need every helper call inside one session, so each test starts a small shell "runner"
//! inside the session and sends it one command per line; the runner answers with the exit code,
//! having written stdout/stderr to files.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const NOT_FOUND: &str = "credentials not found in native keychain";

const RUNNER: &str = r#"
n=0
echo ready
while IFS= read -r line; do
  n=$((n+1))
  # line: <input file> [VAR=value ...] <program> <action>
  set -- $line
  in=$1; shift
  env "$@" < "$in" > "$OUT/$n.stdout" 2> "$OUT/$n.stderr"
  echo "$?"
done
"#;

struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
    n: usize,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Session {
    /// Starts the runner as `wrapper… sh -c <prelude; runner>` with HOME etc. in a temp dir.
    fn start(wrapper: &[&str], prelude: &str, env: &[(&str, &str)]) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let run = dir.path().join("run");
        let out = dir.path().join("out");
        for d in [&home, &run, &out] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let script = format!("{prelude}\n{RUNNER}");
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..])
            .args(["sh", "-c", &script])
            .env_clear()
            .env("PATH", common::path_with_bins())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &run)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("OUT", &out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "session did not start");
        Session {
            child,
            stdin,
            stdout,
            dir,
            n: 0,
        }
    }

    fn exec(&mut self, program: &str, action: &str, input: &str, env: &[(&str, &str)]) -> Out {
        self.n += 1;
        let inp = self.dir.path().join(format!("in{}", self.n));
        std::fs::write(&inp, input).unwrap();
        let mut line = format!("{}", inp.display());
        for (k, v) in env {
            line.push_str(&format!(" {k}={v}"));
        }
        line.push_str(&format!(" {program} {action}\n"));
        self.stdin
            .as_mut()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        let mut ans = String::new();
        self.stdout.read_line(&mut ans).unwrap();
        let code: i32 = ans
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("runner answered {ans:?}"));
        let out = self.dir.path().join("out");
        Out {
            code,
            stdout: std::fs::read_to_string(out.join(format!("{}.stdout", self.n))).unwrap(),
            stderr: std::fs::read_to_string(out.join(format!("{}.stderr", self.n))).unwrap(),
        }
    }

    fn ours(&mut self, action: &str, input: &str) -> Out {
        let helper = common::bin("docker-credential-keyring");
        self.exec(helper.to_str().unwrap(), action, input, &[])
    }

    fn ours_env(&mut self, action: &str, input: &str, env: &[(&str, &str)]) -> Out {
        let helper = common::bin("docker-credential-keyring");
        self.exec(helper.to_str().unwrap(), action, input, env)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // EOF ends the runner, which ends the session (dbus-run-session stops its bus).
        self.stdin.take();
        let _ = self.child.wait();
    }
}

fn store_json(url: &str, user: &str, secret: &str) -> String {
    serde_json::json!({"ServerURL": url, "Username": user, "Secret": secret}).to_string()
}

fn get_json(url: &str, user: &str, secret: &str) -> String {
    let q = |v: &str| serde_json::to_string(v).unwrap();
    format!(
        "{{\"ServerURL\":{},\"Username\":{},\"Secret\":{}}}\n",
        q(url),
        q(user),
        q(secret)
    )
    .replace('<', "\\u003c")
    .replace('>', "\\u003e")
}

fn ok(o: &Out) {
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "stderr={}", o.stderr);
}

fn not_found(o: &Out) {
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (1, format!("{NOT_FOUND}\n").as_str()),
        "stderr={}",
        o.stderr
    );
}

fn list(s: &mut Session) -> BTreeMap<String, String> {
    let o = s.ours("list", "unused");
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    serde_json::from_str(&o.stdout).unwrap()
}

fn big_secret() -> String {
    (0..10_240)
        .map(|i| (b'A' + (i % 26) as u8) as char)
        .collect()
}

/// The common round trip; `tag` keeps server URLs unique (keyutils shares the user's persistent
/// keyring between sessions).
fn round_trip(s: &mut Session, tag: &str) {
    let url = format!("https://{tag}.reg.example:5000");
    let tok = format!("{tag}.tok.example");
    not_found(&s.ours("get", &url));
    not_found(&s.ours("erase", &url));
    assert!(!list(s).contains_key(&url));

    ok(&s.ours("store", &store_json(&url, "alice", "s3cret")));
    let o = s.ours("get", &format!("  {url}\n"));
    assert_eq!(
        (o.code, o.stdout.clone()),
        (0, get_json(&url, "alice", "s3cret")),
        "{}",
        o.stderr
    );
    // Overwrite, plus an identity token entry.
    ok(&s.ours("store", &store_json(&url, "bob", "n3w")));
    ok(&s.ours("store", &store_json(&tok, "<token>", "refresh")));
    let o = s.ours("get", &url);
    assert_eq!(o.stdout, get_json(&url, "bob", "n3w"));
    let l = list(s);
    assert_eq!(l.get(&url).map(String::as_str), Some("bob"));
    assert_eq!(l.get(&tok).map(String::as_str), Some("<token>"));

    // 10 KB secret, forced through the chunking path (wincred's limit).
    let big_url = format!("{tag}.big.example");
    let big = big_secret();
    ok(&s.ours_env(
        "store",
        &store_json(&big_url, "AWS", &big),
        &[("REGAUTH_KEYRING_CHUNK_BYTES", "2560")],
    ));
    let o = s.ours("get", &big_url);
    assert_eq!(
        o.stdout,
        get_json(&big_url, "AWS", &big),
        "stderr={}",
        o.stderr
    );
    // And the unchunked path for the same size.
    ok(&s.ours("store", &store_json(&big_url, "AWS", &big)));
    assert_eq!(
        s.ours("get", &big_url).stdout,
        get_json(&big_url, "AWS", &big)
    );

    for u in [&url, &tok, &big_url] {
        ok(&s.ours("erase", u));
        not_found(&s.ours("get", u));
        assert!(!list(s).contains_key(u.as_str()));
    }
    not_found(&s.ours("erase", &url));
}

const GNOME_PRELUDE: &str =
    "printf 'regauth-test' | gnome-keyring-daemon --unlock --components=secrets >/dev/null";

#[test]
fn secret_service_round_trip_and_coexistence_with_go_helper() {
    if !common::require_peers(&[
        "dbus-run-session",
        "gnome-keyring-daemon",
        "secret-tool",
        "docker-credential-secretservice",
    ]) {
        return;
    }
    let mut s = Session::start(&["dbus-run-session", "--"], GNOME_PRELUDE, &[]);
    let tag = format!("ss{}", std::process::id());
    round_trip(&mut s, &tag);

    // Proof the data lives in gnome-keyring: secret-tool finds our item, and the 10 KB secret
    // spans several Secret Service items when chunked.
    let url = format!("{tag}.proof.example");
    ok(&s.ours_env(
        "store",
        &store_json(&url, "u", &big_secret()),
        &[("REGAUTH_KEYRING_CHUNK_BYTES", "2560")],
    ));
    let o = s.exec_args(
        "secret-tool",
        &[
            "lookup",
            "service",
            "regauth-docker-credentials#4",
            "username",
            &url,
        ],
    );
    assert_eq!(o.code, 0, "5th chunk item exists: {}", o.stderr);
    assert!(
        o.stdout.starts_with("regauth:4/"),
        "{}",
        &o.stdout[..o.stdout.len().min(20)]
    );
    ok(&s.ours("erase", &url));
    let o = s.exec_args(
        "secret-tool",
        &[
            "lookup",
            "service",
            "regauth-docker-credentials#4",
            "username",
            &url,
        ],
    );
    assert_ne!(o.code, 0, "erase removed the chunk items");

    // Docker's Go helper (libsecret, schema io.docker.Credentials) in the same keyring.
    let go = "docker-credential-secretservice";
    let ours_url = format!("{tag}.ours.example");
    let go_url = format!("{tag}.go.example");
    ok(&s.ours("store", &store_json(&ours_url, "rust", "r-secret")));
    ok(&s.exec(go, "store", &store_json(&go_url, "golang", "g-secret"), &[]));
    let o = s.exec(go, "get", &go_url, &[]);
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert!(o.stdout.contains("\"Secret\":\"g-secret\""), "{}", o.stdout);
    // Different schemas: neither reads the other's item, both keep their own.
    not_found(&s.ours("get", &go_url));
    assert_eq!(s.exec(go, "get", &ours_url, &[]).code, 1);
    assert_eq!(
        s.ours("get", &ours_url).stdout,
        get_json(&ours_url, "rust", "r-secret")
    );
    let go_list = s.exec(go, "list", "", &[]);
    assert!(
        go_list.stdout.contains(&go_url) && !go_list.stdout.contains(&ours_url),
        "{}",
        go_list.stdout
    );
    assert!(!list(&mut s).contains_key(&go_url));
    ok(&s.ours("erase", &ours_url));
    ok(&s.exec(go, "erase", &go_url, &[]));
}

impl Session {
    /// Runs an arbitrary program with arguments (no stdin).
    fn exec_args(&mut self, program: &str, args: &[&str]) -> Out {
        // The runner splits on spaces; wrap the call in a tiny script file instead.
        let script = self.dir.path().join(format!("cmd{}.sh", self.n + 1));
        let quoted: Vec<String> = std::iter::once(program)
            .chain(args.iter().copied())
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        std::fs::write(&script, format!("exec {}\n", quoted.join(" "))).unwrap();
        self.exec("sh", script.to_str().unwrap(), "", &[])
    }
}

#[test]
fn keyutils_round_trip_in_a_fresh_session_keyring() {
    if !common::require_peers(&["keyctl"]) {
        return;
    }
    // No D-Bus session: the helper must pick keyutils on its own.
    let mut s = Session::start(&["keyctl", "session", "-"], ":", &[]);
    let tag = format!("ku{}", std::process::id());
    // The fall-back is said once, on stderr, when the first entry goes in: it is lost at reboot.
    let (n1, n2) = (format!("{tag}.n1.example"), format!("{tag}.n2.example"));
    let first = s.ours("store", &store_json(&n1, "u", "p"));
    ok(&first);
    assert!(
        first.stderr.contains("lost at reboot") && first.stderr.contains("docker-credential-file"),
        "{}",
        first.stderr
    );
    let second = s.ours("store", &store_json(&n2, "u", "p"));
    ok(&second);
    assert!(
        !second.stderr.contains("lost at reboot"),
        "said once: {}",
        second.stderr
    );
    ok(&s.ours("erase", &n1));
    ok(&s.ours("erase", &n2));
    round_trip(&mut s, &tag);
    // Forcing the store gives the same answers.
    let url = format!("{tag}.forced.example");
    ok(&s.ours_env(
        "store",
        &store_json(&url, "u", "p"),
        &[("REGAUTH_KEYRING_STORE", "keyutils")],
    ));
    let o = s.exec_args(
        "keyctl",
        &[
            "search",
            "@s",
            "user",
            &format!("keyring:{url}@regauth-docker-credentials"),
        ],
    );
    assert_eq!(o.code, 0, "the key is in the session keyring: {}", o.stderr);
    ok(&s.ours("erase", &url));
    // Asking for Secret Service without a bus is a clear error, not a hang or a secret.
    let o = s.ours_env("list", "", &[("REGAUTH_KEYRING_STORE", "secret-service")]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("Secret Service"), "{}", o.stdout);
    let o = s.ours_env("list", "", &[("REGAUTH_KEYRING_STORE", "bogus")]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("REGAUTH_KEYRING_STORE"), "{}", o.stdout);
}

#[test]
fn help_and_version_need_no_keyring() {
    let helper = common::bin("docker-credential-keyring");
    let o = Command::new(&helper)
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("docker-credential-keyring (regauth) v")
    );
}
