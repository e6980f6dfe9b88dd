//! The helper side: one [`Backend`] trait and one [`serve`] function.
//!
//! Owns: argument handling (`store|get|erase|list|version`, `-v/--version`, `-h/--help`), input
//! parsing and validation, output encoding, and the rule that every error goes to **stdout** with
//! exit status 1 — exactly what docker/docker-credential-helpers' `credentials.Serve` does.
//!
//! Does not own: storage. A backend only answers the four questions below; it never sees argv,
//! stdin or exit codes, and never prints.

use super::protocol::{
    Credentials, MISSING_SERVER_URL, MISSING_USERNAME, NOT_FOUND, go_json, join_lines,
};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// What a backend returns for `get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub secret: Secret,
}

/// A backend's failure. The `Display` text is what the helper prints on stdout, so it must name
/// what went wrong (file, variable, host) and never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Nothing stored for that server. Printed as the exact sentinel clients look for.
    #[error("{}", NOT_FOUND)]
    NotFound,
    /// `store`/`erase` on a backend that only reads (environment, job token, ECR).
    #[error("{helper} is read-only: {hint}")]
    ReadOnly { helper: String, hint: String },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

/// The four operations of a credential store — the whole seam between the protocol and storage.
pub trait Backend {
    /// Credentials for `server_url` exactly as the client spelled it (trimmed), or
    /// [`BackendError::NotFound`].
    fn get(&self, server_url: &str) -> Result<Login, BackendError>;
    /// Saves credentials. `creds` is already validated (non-empty server URL and username).
    fn store(&self, creds: &Credentials) -> Result<(), BackendError>;
    /// Removes the credentials for `server_url`. Backends differ on erasing what is not there:
    /// Go `secretservice` succeeds silently (and `docker logout` erases twice, so success avoids a
    /// spurious warning), Go `pass` fails; a backend documents which it does.
    fn erase(&self, server_url: &str) -> Result<(), BackendError>;
    /// Every stored server URL with its username.
    fn list(&self) -> Result<BTreeMap<String, String>, BackendError>;
    /// One-time notes for the person at the terminal (where a new store was created, how durable
    /// it is). [`serve_main`] prints them on stderr — never stdout, which belongs to the protocol
    /// — so backends themselves never print.
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A backend that could not be set up (bad config file, say): every action answers with that
/// error, while `--help` and `version` — which never reach a backend — still work.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl Backend for Unavailable {
    fn get(&self, _: &str) -> Result<Login, BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
    fn store(&self, _: &Credentials) -> Result<(), BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
    fn erase(&self, _: &str) -> Result<(), BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
}

/// Identity of a helper binary, used for `version`, usage and unknown-action messages.
#[derive(Clone, Copy, Debug)]
pub struct HelperInfo {
    /// The binary name, e.g. `docker-credential-file`.
    pub name: &'static str,
    /// The package, printed in parentheses by `version`.
    pub package: &'static str,
    /// The version string, e.g. `v0.1.0`.
    pub version: &'static str,
}

impl HelperInfo {
    /// A helper of this package, at this crate's version.
    pub const fn regauth(name: &'static str) -> HelperInfo {
        HelperInfo {
            name,
            package: "regauth",
            version: concat!("v", env!("CARGO_PKG_VERSION")),
        }
    }

    fn usage(&self) -> String {
        format!("Usage: {} <store|get|erase|list|version>", self.name)
    }

    fn version_line(&self) -> String {
        format!("{} ({}) {}\n", self.name, self.package, self.version)
    }
}

/// Runs one helper invocation. `args` excludes the program name. Returns the exit status.
pub fn serve(
    backend: &dyn Backend,
    info: &HelperInfo,
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let result = match args {
        [a] if a == "--version" || a == "-v" => {
            return write_out(stdout, &info.version_line(), 0);
        }
        [a] if a == "--help" || a == "-h" => {
            return write_out(stdout, &format!("{}\n", info.usage()), 0);
        }
        [action] => handle(backend, info, action, stdin),
        _ => return write_out(stdout, &format!("{}\n", info.usage()), 1),
    };
    match result {
        Ok(out) => write_out(stdout, &out, 0),
        Err(e) => write_out(stdout, &format!("{e}\n"), 1),
    }
}

/// The `main` of a helper binary: logging ([`super::logging::init_logging`]), real argv, stdin and
/// stdout; exits the process.
pub fn serve_main(backend: &dyn Backend, info: &HelperInfo) -> ! {
    super::logging::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = serve(
        backend,
        info,
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    );
    for n in backend.take_notices() {
        eprintln!("{}: {n}", info.name);
    }
    std::process::exit(code)
}

fn write_out(stdout: &mut dyn Write, text: &str, code: i32) -> i32 {
    // If stdout is gone there is nobody left to tell; the exit status still says it.
    let ok = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush());
    if ok.is_err() { 1 } else { code }
}

fn handle(
    backend: &dyn Backend,
    info: &HelperInfo,
    action: &str,
    stdin: &mut dyn Read,
) -> Result<String, BackendError> {
    let read_input = |stdin: &mut dyn Read| -> Result<String, BackendError> {
        let mut buf = Vec::new();
        stdin
            .read_to_end(&mut buf)
            .map_err(|e| BackendError::Other(format!("reading stdin: {e}")))?;
        Ok(join_lines(&buf))
    };
    match action {
        "store" => {
            let text = read_input(stdin)?;
            let creds = parse_store_input(&text)?;
            backend.store(&creds)?;
            Ok(String::new())
        }
        "get" => {
            let url = server_url_input(&read_input(stdin)?)?;
            let login = backend.get(&url)?;
            Ok(Credentials {
                server_url: url,
                username: login.username,
                secret: login.secret,
            }
            .to_go_json_line())
        }
        "erase" => {
            let url = server_url_input(&read_input(stdin)?)?;
            backend.erase(&url)?;
            Ok(String::new())
        }
        "list" => {
            let all = backend.list()?;
            let v = serde_json::Value::Object(
                all.into_iter()
                    .map(|(k, u)| (k, serde_json::Value::String(u)))
                    .collect(),
            );
            Ok(format!("{}\n", go_json(&v)))
        }
        "version" => Ok(info.version_line()),
        other => Err(BackendError::Other(format!(
            "{}: unknown action: {other}",
            info.name
        ))),
    }
}

fn server_url_input(text: &str) -> Result<String, BackendError> {
    let url = text.trim();
    if url.is_empty() {
        return Err(BackendError::Other(MISSING_SERVER_URL.into()));
    }
    Ok(url.to_owned())
}

/// Parses and validates `store` input. Error texts follow Go: empty input is `EOF`; JSON errors
/// never quote the input (it holds the secret).
fn parse_store_input(text: &str) -> Result<Credentials, BackendError> {
    if text.trim().is_empty() {
        return Err(BackendError::Other("EOF".into()));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let v: serde_json::Value = serde::Deserialize::deserialize(&mut de).map_err(|e| {
        BackendError::Other(format!(
            "invalid JSON on stdin at line {} column {}: {}",
            e.line(),
            e.column(),
            json_error_class(&e)
        ))
    })?;
    let creds = Credentials::from_json_value(&v).ok_or_else(|| {
        BackendError::Other(
            "invalid JSON on stdin: expected an object with ServerURL, Username and Secret".into(),
        )
    })?;
    if creds.server_url.is_empty() {
        return Err(BackendError::Other(MISSING_SERVER_URL.into()));
    }
    if creds.username.is_empty() {
        return Err(BackendError::Other(MISSING_USERNAME.into()));
    }
    Ok(creds)
}

/// A description of a serde_json error that cannot contain input text.
pub(crate) fn json_error_class(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected value type",
        Category::Eof => "unexpected end of input",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Mem(RefCell<BTreeMap<String, (String, Secret)>>);

    impl Backend for Mem {
        fn get(&self, url: &str) -> Result<Login, BackendError> {
            self.0
                .borrow()
                .get(url)
                .map(|(u, s)| Login {
                    username: u.clone(),
                    secret: s.clone(),
                })
                .ok_or(BackendError::NotFound)
        }
        fn store(&self, c: &Credentials) -> Result<(), BackendError> {
            self.0
                .borrow_mut()
                .insert(c.server_url.clone(), (c.username.clone(), c.secret.clone()));
            Ok(())
        }
        fn erase(&self, url: &str) -> Result<(), BackendError> {
            self.0
                .borrow_mut()
                .remove(url)
                .map(|_| ())
                .ok_or(BackendError::NotFound)
        }
        fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
            Ok(self
                .0
                .borrow()
                .iter()
                .map(|(k, (u, _))| (k.clone(), u.clone()))
                .collect())
        }
    }

    const INFO: HelperInfo = HelperInfo {
        name: "docker-credential-test",
        package: "regauth",
        version: "v0.0.1",
    };

    fn run(b: &Mem, args: &[&str], input: &str) -> (i32, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let code = serve(b, &INFO, &args, &mut input.as_bytes(), &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn round_trip_and_sentinels() {
        let b = Mem::default();
        assert_eq!(
            run(&b, &["get"], "reg.example\n"),
            (1, format!("{NOT_FOUND}\n"))
        );
        assert_eq!(
            run(
                &b,
                &["store"],
                "{\"serverurl\":\"reg.example\",\"USERNAME\":\"u\",\"Secret\":\"p\"}"
            ),
            (0, String::new())
        );
        assert_eq!(
            run(&b, &["get"], "  reg.example \n"),
            (
                0,
                "{\"ServerURL\":\"reg.example\",\"Username\":\"u\",\"Secret\":\"p\"}\n".into()
            )
        );
        assert_eq!(
            run(&b, &["list"], "unused"),
            (0, "{\"reg.example\":\"u\"}\n".into())
        );
        assert_eq!(run(&b, &["erase"], "reg.example"), (0, String::new()));
        assert_eq!(run(&b, &["list"], ""), (0, "{}\n".into()));
    }

    #[test]
    fn usage_and_errors_go_to_stdout_with_exit_1() {
        let b = Mem::default();
        let usage = "Usage: docker-credential-test <store|get|erase|list|version>\n";
        assert_eq!(run(&b, &[], ""), (1, usage.into()));
        assert_eq!(run(&b, &["get", "x"], ""), (1, usage.into()));
        assert_eq!(run(&b, &["-h"], ""), (0, usage.into()));
        assert_eq!(
            run(&b, &["bogus"], ""),
            (1, "docker-credential-test: unknown action: bogus\n".into())
        );
        assert_eq!(
            run(&b, &["--version"], ""),
            (0, "docker-credential-test (regauth) v0.0.1\n".into())
        );
        assert_eq!(
            run(&b, &["get"], " \n"),
            (1, format!("{MISSING_SERVER_URL}\n"))
        );
        assert_eq!(run(&b, &["store"], ""), (1, "EOF\n".into()));
        assert_eq!(
            run(&b, &["store"], "{\"ServerURL\":\"r\",\"Secret\":\"p\"}"),
            (1, format!("{MISSING_USERNAME}\n"))
        );
        let (code, out) = run(
            &b,
            &["store"],
            "{\"ServerURL\":\"r\",\"Secret\":\"hunter2\"",
        );
        assert_eq!(code, 1);
        assert!(!out.contains("hunter2"), "{out}");
    }
}
