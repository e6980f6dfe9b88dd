//! The Docker config model: one parsed `config.json` (or `~/.dockercfg`, or a `DOCKER_AUTH_CONFIG`
//! value) and where it came from.
//!
//! Owns: parsing (`auths` with `auth`/`username`/`password`/`identitytoken`/`registrytoken`,
//! `credsStore`, `credHelpers`) in the three dialects the anchors use — the docker CLI's full
//! `config.json` reader, its legacy `~/.dockercfg` reader, and its strict `DOCKER_AUTH_CONFIG`
//! reader — plus locating the files ([`locations`]).
//!
//! Does not own: deciding which entry applies to a registry (that is [`crate::resolve`]), nor
//! running helpers.
//!
//! Why we parse into `serde_json::Value` and walk it by hand instead of deriving: serde's messages
//! quote the offending value ("invalid type: string \"hunter2\"…"), and the offending value is
//! often the password. Our errors name the origin and the key path, never a value.

pub mod keys;
pub mod locations;

use crate::secret::Secret;
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Where a config came from. Its `Display` is what errors and `resolve` print as `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file on disk.
    File(PathBuf),
    /// The value of an environment variable (JSON text, or a path to it).
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(name) => f.write_str(name),
        }
    }
}

/// One `auths` entry after decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthEntry {
    pub username: String,
    pub password: Secret,
    /// OAuth2 refresh token from a registry login.
    pub identity_token: Option<Secret>,
    /// Bearer token sent to the registry as is.
    pub registry_token: Option<Secret>,
}

impl AuthEntry {
    /// True when the entry carries no credential at all (what `docker login` leaves behind in
    /// `auths` when a credential store holds the secret).
    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.is_none()
            && self.registry_token.is_none()
    }
}

/// A parsed Docker config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerConfig {
    pub origin: Origin,
    /// `auths`, keyed exactly as written. Sorted, so every "first match" is deterministic where Go
    /// iterates a map at random.
    pub auths: BTreeMap<String, AuthEntry>,
    /// `credsStore`; `None` when absent or empty.
    pub creds_store: Option<String>,
    /// `credHelpers`, keyed exactly as written. An empty helper name is kept: the docker CLI reads
    /// it as "use the file store for this registry".
    pub cred_helpers: BTreeMap<String, String>,
}

/// Which reader to apply; the anchors differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// docker/cli `ConfigFile.LoadFromReader`: the `config.json` format. GitLab Runner uses it for
    /// every source, `.dockercfg` included.
    Full,
    /// docker/cli `LegacyLoadFromReader`: `~/.dockercfg`, a bare map of entries (or the older
    /// `auth = …` text form).
    Legacy,
    /// docker/cli ≥ 28.3 `DOCKER_AUTH_CONFIG`: only `{"auths":{key:{"auth":…}}}`, unknown fields
    /// rejected, exactly one JSON object.
    DockerEnv,
}

/// Why a config could not be used. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read: {cause}")]
    Io {
        origin: Origin,
        /// Printed, not returned from `source()`: each cause is shown once.
        cause: std::io::Error,
    },
    #[error("{origin}: invalid JSON at line {line} column {column} ({class})")]
    Json {
        origin: Origin,
        line: usize,
        column: usize,
        class: &'static str,
    },
    #[error("{origin}: {field}: {reason}")]
    Field {
        origin: Origin,
        /// The key path, e.g. `auths["registry.example.com:5000"].auth`.
        field: String,
        reason: String,
    },
    /// A variable holding a file path where only JSON text is read (the docker CLI's
    /// `DOCKER_AUTH_CONFIG`).
    #[error(
        "{var}: holds a file path ({}{}), not JSON text; the docker CLI reads only JSON text from it",
        path.display(), if *exists { "" } else { ", which does not exist" }
    )]
    PathNotJson {
        var: String,
        path: PathBuf,
        exists: bool,
    },
    /// A variable naming a file (a GitLab file-type variable) that cannot be read.
    #[error("{var}: names the file {}, which {}", path.display(), describe_io(cause))]
    EnvFile {
        var: String,
        path: PathBuf,
        /// Printed, not returned from `source()`: each cause is shown once.
        cause: std::io::Error,
    },
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        _ => format!("cannot be read: {e}"),
    }
}

impl ConfigError {
    /// The message without the leading origin, for callers that print the origin themselves
    /// (`check` findings, resolver warnings) — so it is not said twice.
    pub fn detail(&self) -> String {
        let full = self.to_string();
        let origin = match self {
            ConfigError::Io { origin, .. }
            | ConfigError::Json { origin, .. }
            | ConfigError::Field { origin, .. } => origin.to_string(),
            ConfigError::PathNotJson { var, .. } | ConfigError::EnvFile { var, .. } => var.clone(),
        };
        full.strip_prefix(&format!("{origin}: "))
            .map(str::to_owned)
            .unwrap_or(full)
    }
}

/// True when a `DOCKER_AUTH_CONFIG`-style value is meant as a file path rather than JSON text:
/// it does not start with `{` and is an absolute path or names an existing file. (GitLab puts a
/// file-type variable's content in a file and the variable holds that file's path.)
pub fn env_value_is_path(value: &str) -> bool {
    let v = value.trim();
    !v.starts_with('{') && (v.starts_with('/') || std::path::Path::new(v).is_file())
}

impl DockerConfig {
    /// An empty config from `origin`.
    pub fn empty(origin: Origin) -> DockerConfig {
        DockerConfig {
            origin,
            auths: BTreeMap::new(),
            creds_store: None,
            cred_helpers: BTreeMap::new(),
        }
    }

    /// Parses the value of the variable `var` (`DOCKER_AUTH_CONFIG`). A value that is a file path
    /// ([`env_value_is_path`]) is read as that file when `follow_path` (GitLab Runner: file-type
    /// variables) and is an error saying so otherwise (the docker CLI takes JSON text only) —
    /// never "invalid JSON at line 1". The origin is the variable either way.
    pub fn from_env_value(
        var: &str,
        value: &str,
        dialect: Dialect,
        follow_path: bool,
    ) -> Result<Self, ConfigError> {
        let origin = Origin::Env(var.to_owned());
        if !env_value_is_path(value) {
            return Self::parse(value.as_bytes(), origin, dialect);
        }
        let path = PathBuf::from(value.trim());
        if !follow_path {
            return Err(ConfigError::PathNotJson {
                var: var.to_owned(),
                exists: path.exists(),
                path,
            });
        }
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&bytes, origin, dialect),
            Err(cause) => Err(ConfigError::EnvFile {
                var: var.to_owned(),
                path,
                cause,
            }),
        }
    }

    /// Reads and parses a file. A missing file is `Ok(None)`.
    pub fn load_file(
        path: &std::path::Path,
        dialect: Dialect,
    ) -> Result<Option<Self>, ConfigError> {
        let origin = Origin::File(path.to_owned());
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes, origin, dialect).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(cause) => Err(ConfigError::Io { origin, cause }),
        }
    }

    /// Parses config text.
    pub fn parse(bytes: &[u8], origin: Origin, dialect: Dialect) -> Result<Self, ConfigError> {
        match dialect {
            Dialect::Full => {
                // Go's decoder treats empty input as io.EOF, which both anchors read as "no config".
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Self::empty(origin));
                }
                let v = parse_json(bytes, &origin)?;
                Self::from_full(&v, origin)
            }
            Dialect::Legacy => Self::from_legacy(bytes, origin),
            Dialect::DockerEnv => Self::from_docker_env(bytes, origin),
        }
    }

    fn from_full(v: &Value, origin: Origin) -> Result<Self, ConfigError> {
        let err = |field: &str, reason: &str| ConfigError::Field {
            origin: origin.clone(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let top = v
            .as_object()
            .ok_or_else(|| err("(top level)", "must be a JSON object"))?;
        let mut cfg = Self::empty(origin.clone());
        if let Some(auths) = field_ci(top, "auths") {
            match auths {
                Value::Null => {}
                Value::Object(m) => {
                    for (key, entry) in m {
                        cfg.auths
                            .insert(key.clone(), parse_entry(key, entry, &origin, false)?);
                    }
                }
                _ => return Err(err("auths", "must be an object of registry entries")),
            }
        }
        match field_ci(top, "credsStore") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => cfg.creds_store = (!s.is_empty()).then(|| s.clone()),
            Some(_) => return Err(err("credsStore", "must be a string (a helper name)")),
        }
        match field_ci(top, "credHelpers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (key, helper) in m {
                    let helper = helper.as_str().ok_or_else(|| {
                        err(
                            &format!("credHelpers[{key:?}]"),
                            "must be a string (a helper name)",
                        )
                    })?;
                    cfg.cred_helpers.insert(key.clone(), helper.to_owned());
                }
            }
            Some(_) => {
                return Err(err(
                    "credHelpers",
                    "must be an object of registry → helper name",
                ));
            }
        }
        Ok(cfg)
    }

    fn from_legacy(bytes: &[u8], origin: Origin) -> Result<Self, ConfigError> {
        let mut cfg = Self::empty(origin.clone());
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(bytes) {
            for (key, entry) in &m {
                cfg.auths
                    .insert(key.clone(), parse_entry(key, entry, &origin, false)?);
            }
            return Ok(cfg);
        }
        // The pre-JSON form: "auth = <base64>\nemail = <email>", for Docker Hub.
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split('\n');
        let first = lines.next().unwrap_or("");
        if lines.next().is_none() {
            return Err(ConfigError::Field {
                origin,
                field: "(file)".into(),
                reason: "the legacy auth config file is empty or not JSON".into(),
            });
        }
        let Some((_, auth)) = first.split_once(" = ") else {
            return Err(ConfigError::Field {
                origin,
                field: "(file)".into(),
                reason:
                    "invalid legacy auth config file: expected `auth = <base64>` on the first line"
                        .into(),
            });
        };
        let (username, password) = decode_auth(auth).map_err(|reason| ConfigError::Field {
            origin: origin.clone(),
            field: "auth".into(),
            reason,
        })?;
        cfg.auths.insert(
            keys::DOCKER_HUB_KEY.into(),
            AuthEntry {
                username,
                password,
                ..AuthEntry::default()
            },
        );
        Ok(cfg)
    }

    fn from_docker_env(bytes: &[u8], origin: Origin) -> Result<Self, ConfigError> {
        let err = |field: String, reason: &str| ConfigError::Field {
            origin: origin.clone(),
            field,
            reason: reason.to_owned(),
        };
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
        let v = match stream.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(json_error(&e, &origin)),
            None => return Err(err("(value)".into(), "is empty")),
        };
        if stream.next().is_some() {
            return Err(err(
                "(value)".into(),
                "does not support more than one JSON object",
            ));
        }
        let top = v
            .as_object()
            .ok_or_else(|| err("(top level)".into(), "must be a JSON object"))?;
        let mut cfg = Self::empty(origin.clone());
        for (k, val) in top {
            if k != "auths" {
                return Err(err(
                    k.clone(),
                    "unknown field (only \"auths\" is accepted here)",
                ));
            }
            let auths = val
                .as_object()
                .ok_or_else(|| err("auths".into(), "must be an object"))?;
            for (key, entry) in auths {
                cfg.auths
                    .insert(key.clone(), parse_entry(key, entry, &origin, true)?);
            }
        }
        Ok(cfg)
    }

    /// The `auths` entry whose key is exactly `key`.
    pub fn auth_exact(&self, key: &str) -> Option<(&str, &AuthEntry)> {
        self.auths.get_key_value(key).map(|(k, v)| (k.as_str(), v))
    }
}

/// Go's case-insensitive key lookup, as used when decoding the config struct.
fn field_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    crate::credhelper::protocol::field_ci(obj, name)
}

fn parse_json(bytes: &[u8], origin: &Origin) -> Result<Value, ConfigError> {
    serde_json::from_slice(bytes).map_err(|e| json_error(&e, origin))
}

fn json_error(e: &serde_json::Error, origin: &Origin) -> ConfigError {
    ConfigError::Json {
        origin: origin.clone(),
        line: e.line(),
        column: e.column(),
        class: crate::credhelper::server::json_error_class(e),
    }
}

/// One `auths` entry. `strict` is the `DOCKER_AUTH_CONFIG` dialect: only `auth`, and it must be
/// there.
fn parse_entry(
    key: &str,
    v: &Value,
    origin: &Origin,
    strict: bool,
) -> Result<AuthEntry, ConfigError> {
    let err = |field: &str, reason: String| ConfigError::Field {
        origin: origin.clone(),
        field: format!("auths[{key:?}]{field}"),
        reason,
    };
    let obj = match v {
        Value::Object(m) => m,
        Value::Null if !strict => return Ok(AuthEntry::default()),
        _ => return Err(err("", "must be an object".into())),
    };
    let get_str = |name: &str| -> Result<Option<&str>, ConfigError> {
        let found = if strict {
            obj.get(name)
        } else {
            field_ci(obj, name)
        };
        match found {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(err(&format!(".{name}"), "must be a string".into())),
        }
    };
    if strict {
        if let Some(k) = obj.keys().find(|k| k.as_str() != "auth") {
            return Err(err(
                &format!(".{k}"),
                "unknown field (DOCKER_AUTH_CONFIG entries take only \"auth\")".into(),
            ));
        }
        if get_str("auth")?.is_none() {
            return Err(err(".auth", "is missing".into()));
        }
    }
    let mut entry = AuthEntry {
        username: get_str("username")?.unwrap_or("").to_owned(),
        password: Secret::new(get_str("password")?.unwrap_or("")),
        identity_token: get_str("identitytoken")?
            .filter(|s| !s.is_empty())
            .map(Secret::new),
        registry_token: get_str("registrytoken")?
            .filter(|s| !s.is_empty())
            .map(Secret::new),
    };
    if let Some(auth) = get_str("auth")?
        && !auth.is_empty()
    {
        let (u, p) = decode_auth(auth).map_err(|reason| err(".auth", reason))?;
        entry.username = u;
        entry.password = p;
    }
    Ok(entry)
}

/// docker/cli `decodeAuth`: standard base64 with padding (CR/LF ignored, as Go's decoder does),
/// split at the first `:`, non-empty username, NULs trimmed from the password.
pub fn decode_auth(auth: &str) -> Result<(String, Secret), String> {
    let cleaned: String = auth.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|e| format!("is not valid base64 ({})", base64_error_class(&e)))?;
    let text =
        String::from_utf8(bytes).map_err(|_| "decodes to bytes that are not UTF-8".to_owned())?;
    match text.split_once(':') {
        Some((user, pass)) if !user.is_empty() => {
            Ok((user.to_owned(), Secret::new(pass.trim_matches('\0'))))
        }
        Some(_) => {
            Err("decodes to an empty username (expected base64 of `username:password`)".into())
        }
        None => Err("decodes to text without `:` (expected base64 of `username:password`)".into()),
    }
}

fn base64_error_class(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(off, _) => format!("invalid character at offset {off}"),
        base64::DecodeError::InvalidLength(n) => format!("invalid length {n}"),
        base64::DecodeError::InvalidLastSymbol(off, _) => {
            format!("invalid last symbol at offset {off}")
        }
        base64::DecodeError::InvalidPadding => "missing or invalid padding".into(),
    }
}

/// `base64(username:password)`, as `docker login` writes `auth`.
pub fn encode_auth(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_origin() -> Origin {
        Origin::Env("DOCKER_AUTH_CONFIG".into())
    }

    #[test]
    fn full_config_decodes_auth_and_plain_fields() {
        let text = r#"{"auths":{"a.example":{"auth":"dXNlcjpwYXNzAAA="},
            "b.example":{"username":"bob","password":"pw"},
            "c.example":{"identitytoken":"tok"}},
            "credsStore":"file","credHelpers":{"d.example":"ecr","e.example":""}}"#;
        let cfg = DockerConfig::parse(text.as_bytes(), env_origin(), Dialect::Full).unwrap();
        let a = &cfg.auths["a.example"];
        assert_eq!((a.username.as_str(), a.password.expose()), ("user", "pass"));
        assert_eq!(cfg.auths["b.example"].password.expose(), "pw");
        assert!(cfg.auths["c.example"].identity_token.is_some());
        assert_eq!(cfg.creds_store.as_deref(), Some("file"));
        assert_eq!(cfg.cred_helpers["e.example"], "");
    }

    #[test]
    fn errors_name_the_key_and_never_the_secret() {
        let bad = [
            r#"{"auths":{"r.example:5000":{"auth":"!!not-base64-hunter2"}}}"#,
            r#"{"auths":{"r.example:5000":{"auth":"Omh1bnRlcjI="}}}"#, // ":hunter2"
            r#"{"auths":{"r.example:5000":{"password":["hunter2"]}}}"#,
            r#"{"auths":"hunter2"}"#,
            r#"{"auths":{"r.example:5000":{"auth":"hunter2"#,
        ];
        for text in bad {
            let e = DockerConfig::parse(text.as_bytes(), env_origin(), Dialect::Full)
                .unwrap_err()
                .to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.starts_with("DOCKER_AUTH_CONFIG"), "{e}");
        }
        let e = DockerConfig::parse(bad[1].as_bytes(), env_origin(), Dialect::Full)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auths[\"r.example:5000\"].auth") && e.contains("empty username"),
            "{e}"
        );
    }

    /// docker/cli `TestGetAllCredentialsFromEnvironment` / `TestParseEnvConfig`.
    #[test]
    fn docker_env_dialect_is_strict() {
        let ok = r#"{"auths":{"env.example.test":{"auth":"ZW52X3VzZXI6ZW52X3Bhc3M="}}}"#;
        let cfg = DockerConfig::parse(ok.as_bytes(), env_origin(), Dialect::DockerEnv).unwrap();
        assert_eq!(cfg.auths["env.example.test"].username, "env_user");
        assert_eq!(cfg.auths["env.example.test"].password.expose(), "env_pass");
        let plain = r#"{"auths":{"env.example.test":{"username":"u","password":"p"}}}"#;
        let e =
            DockerConfig::parse(plain.as_bytes(), env_origin(), Dialect::DockerEnv).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let two = format!("{ok}{ok}");
        let e = DockerConfig::parse(two.as_bytes(), env_origin(), Dialect::DockerEnv).unwrap_err();
        assert!(e.to_string().contains("more than one JSON object"), "{e}");
        let e = DockerConfig::parse(br#"{"credsStore":"x"}"#, env_origin(), Dialect::DockerEnv)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn legacy_dockercfg_both_forms() {
        let json = r#"{"https://index.docker.io/v1/":{"auth":"dTpw","email":"x@y"}}"#;
        let cfg = DockerConfig::parse(json.as_bytes(), env_origin(), Dialect::Legacy).unwrap();
        assert_eq!(cfg.auths[keys::DOCKER_HUB_KEY].username, "u");
        let text = "auth = dTpw\nemail = x@y\n";
        let cfg = DockerConfig::parse(text.as_bytes(), env_origin(), Dialect::Legacy).unwrap();
        assert_eq!(cfg.auths[keys::DOCKER_HUB_KEY].password.expose(), "p");
    }

    #[test]
    fn env_value_paths_are_named_not_parsed() {
        let e = DockerConfig::from_env_value(
            "DOCKER_AUTH_CONFIG",
            "/missing/auth.json",
            Dialect::Full,
            true,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "DOCKER_AUTH_CONFIG: names the file /missing/auth.json, which does not exist"
        );
        assert_eq!(
            e.detail(),
            "names the file /missing/auth.json, which does not exist"
        );
        let e = DockerConfig::from_env_value(
            "DOCKER_AUTH_CONFIG",
            "/missing/auth.json",
            Dialect::DockerEnv,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("holds a file path") && e.contains("does not exist"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        std::fs::write(&f, r#"{"auths":{"r.example":{"auth":"dTpw"}}}"#).unwrap();
        let c = DockerConfig::from_env_value(
            "DOCKER_AUTH_CONFIG",
            f.to_str().unwrap(),
            Dialect::Full,
            true,
        )
        .unwrap();
        assert_eq!(c.auths["r.example"].username, "u");
        assert_eq!(c.origin, env_origin());
        let e = DockerConfig::from_env_value("DOCKER_AUTH_CONFIG", "{bad", Dialect::Full, true)
            .unwrap_err();
        assert_eq!(e.detail(), "invalid JSON at line 1 column 2 (syntax error)");
    }

    #[test]
    fn auth_round_trip() {
        let enc = encode_auth("my_username", "my_password");
        assert_eq!(enc, "bXlfdXNlcm5hbWU6bXlfcGFzc3dvcmQ=");
        let (u, p) = decode_auth(&enc).unwrap();
        assert_eq!((u.as_str(), p.expose()), ("my_username", "my_password"));
        assert!(
            decode_auth("bXlfdXNlcm5hbWU6bXlfcGFzc3dvcmQ").is_err(),
            "padding is required"
        );
    }
}
