//! The router backend (`docker-credential-regauth`): one `credsStore: regauth` entry instead of a
//! wall of `credHelpers` lines.
//!
//! Owns: the router config — `router.json` in the regauth config folder, or the file named by
//! `$REGAUTH_ROUTER_CONFIG`:
//!
//! ```json
//! {"store": "file",
//!  "routes": [{"host": "registry.example.com:5000", "backend": "file"},
//!             {"host": "*.example.org", "backend": "env"},
//!             {"host": "ecr", "helper": "ecr"},
//!             {"host": "*", "backend": "file"}]}
//! ```
//!
//! Host patterns, tried **in file order, first match wins**, against [`super::registry_host`] of
//! the server URL:
//!
//! | pattern | matches |
//! |---|---|
//! | `host[:port]` (or a URL) | that registry exactly, port included; `docker.io` matches every Docker Hub spelling |
//! | `*.suffix` | any host name ending in `.suffix`, on any port |
//! | `*.suffix:port` | the same, on that port only |
//! | `ecr` | ECR and ECR Public hosts, as ecr-login recognises them ([`super::ecr_host`]) |
//! | `*` | everything |
//!
//! A route's target is an in-process backend (`"backend"`: `file`, `env`, `gitlab`) or another
//! helper (`"helper": NAME` runs `docker-credential-NAME` through
//! [`crate::credhelper::client::HelperClient`]; that is how keyring and ecr are reached). `get`
//! runs only the matching route (no match → not found). `list` merges every target's list, keeping
//! only entries that route back to the target that listed them (so `get` of a listed key never
//! asks someone else); a failing helper's list is skipped (noted on stderr when `REGAUTH_LOG` is
//! set). `store`/`erase` go to `"store"` (a backend name, or `{"helper": NAME}`); without one they
//! fail read-only, or do nothing under `REGAUTH_IGNORE_STORE=true`.
//!
//! Does not own: any storage itself, or docker's/GitLab Runner's own resolution
//! ([`crate::resolve`]).

use super::ecr_host::is_ecr_host;
use super::env::EnvBackend;
use super::file::FileBackend;
use super::gitlab::GitlabBackend;
use super::{ReadOnlyPolicy, registry_host};
use crate::config::locations::{Env, regauth_config_dir};
use crate::credhelper::client::{HelperClient, validate_helper_name};
use crate::credhelper::server::json_error_class;
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The router config's file name in the regauth config folder.
pub const ROUTER_FILE: &str = "router.json";
/// The variable naming another router config file.
pub const ROUTER_CONFIG_VAR: &str = "REGAUTH_ROUTER_CONFIG";
const HELPER: &str = "docker-credential-regauth";

/// Why the router config could not be used. Messages name the file and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error(
        "{HELPER}: no router config: set {ROUTER_CONFIG_VAR}, REGAUTH_CONFIG_DIR, XDG_CONFIG_HOME or HOME"
    )]
    NoDir,
    #[error(
        "{HELPER}: router config {} not found: create it (e.g. {{\"store\":\"file\",\"routes\":[{{\"host\":\"*\",\"backend\":\"file\"}}]}}) or set {ROUTER_CONFIG_VAR}",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("{HELPER}: router config {}: cannot read: {why}", path.display())]
    Read { path: PathBuf, why: String },
    #[error("{HELPER}: router config {}: {field}: {why}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        why: String,
    },
}

/// Where a route sends a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    File,
    Env,
    Gitlab,
    /// `docker-credential-<name>`.
    Helper(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File => f.write_str("backend file"),
            Target::Env => f.write_str("backend env"),
            Target::Gitlab => f.write_str("backend gitlab"),
            Target::Helper(n) => write!(f, "helper docker-credential-{n}"),
        }
    }
}

/// A host pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `*`.
    Any,
    /// `ecr`.
    Ecr,
    /// `*.suffix[:port]` (suffix lower-case, without the leading `.`).
    Suffix {
        suffix: String,
        port: Option<String>,
    },
    /// `host[:port]`, normalised with [`registry_host`].
    Exact(String),
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty host pattern".into());
        }
        if t == "*" {
            return Ok(Pattern::Any);
        }
        if t.eq_ignore_ascii_case("ecr") {
            return Ok(Pattern::Ecr);
        }
        if let Some(rest) = t.strip_prefix("*.") {
            let (suffix, port) = match rest.rsplit_once(':') {
                Some((s, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    (s, Some(p.to_owned()))
                }
                Some(_) => return Err(format!("{t:?}: the port after ':' must be digits")),
                None => (rest, None),
            };
            if suffix.is_empty() || suffix.contains(['*', '/']) || suffix.starts_with('.') {
                return Err(format!(
                    "{t:?}: a wildcard pattern is `*.domain` or `*.domain:port`"
                ));
            }
            return Ok(Pattern::Suffix {
                suffix: suffix.to_ascii_lowercase(),
                port,
            });
        }
        if t.contains('*') {
            return Err(format!(
                "{t:?}: `*` is allowed only alone or as a leading `*.`"
            ));
        }
        let host = registry_host(t);
        if host.is_empty() {
            return Err(format!("{t:?}: no host in pattern"));
        }
        Ok(Pattern::Exact(host))
    }

    /// Whether a server URL matches.
    pub fn matches(&self, server_url: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Ecr => is_ecr_host(server_url),
            Pattern::Exact(h) => registry_host(server_url) == *h,
            Pattern::Suffix { suffix, port } => {
                let host = registry_host(server_url);
                let (name, p) = split_port(&host);
                let in_domain = name
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'));
                in_domain && port.as_deref().is_none_or(|want| p == Some(want))
            }
        }
    }
}

/// `host:port` → (`host`, `Some(port)`); bracketed IPv6 kept whole.
fn split_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.rsplit_once("]:") {
            Some((h, p)) => (&host[..h.len() + 1], Some(p)),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The pattern as written.
    pub host: String,
    pub pattern: Pattern,
    pub target: Target,
}

/// A parsed router config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub path: PathBuf,
    pub store: Option<Target>,
    pub routes: Vec<Route>,
}

impl RouterConfig {
    /// The config file for `env`: `$REGAUTH_ROUTER_CONFIG`, else `router.json` in the regauth
    /// config folder.
    pub fn path_for(env: &Env) -> Result<PathBuf, RouterError> {
        env.get(ROUTER_CONFIG_VAR)
            .map(PathBuf::from)
            .or_else(|| regauth_config_dir(env).map(|d| d.join(ROUTER_FILE)))
            .ok_or(RouterError::NoDir)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<RouterConfig, RouterError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RouterError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(e) => {
                return Err(RouterError::Read {
                    path: path.to_owned(),
                    why: e.to_string(),
                });
            }
        };
        RouterConfig::parse(path, &text)
    }

    /// Parses config text; `path` only labels errors.
    pub fn parse(path: &Path, text: &[u8]) -> Result<RouterConfig, RouterError> {
        let invalid = |field: &str, why: String| RouterError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            why,
        };
        let v: Value = serde_json::from_slice(text).map_err(|e| {
            invalid(
                "(file)",
                format!(
                    "invalid JSON at line {} column {}: {}",
                    e.line(),
                    e.column(),
                    json_error_class(&e)
                ),
            )
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| invalid("(file)", "expected a JSON object".into()))?;
        for k in obj.keys() {
            if k != "store" && k != "routes" {
                return Err(invalid(
                    k,
                    "unknown field (expected \"store\" and \"routes\")".into(),
                ));
            }
        }
        let store = match obj.get("store") {
            None | Some(Value::Null) => None,
            Some(s) => Some(parse_target(s, None).map_err(|why| invalid("store", why))?),
        };
        let routes_v = obj
            .get("routes")
            .ok_or_else(|| {
                invalid(
                    "routes",
                    "missing (a list of {\"host\":…,\"backend\"|\"helper\":…})".into(),
                )
            })?
            .as_array()
            .ok_or_else(|| invalid("routes", "must be a list".into()))?;
        let mut routes = Vec::with_capacity(routes_v.len());
        for (i, r) in routes_v.iter().enumerate() {
            let field = |f: &str| format!("routes[{i}]{f}");
            let ro = r
                .as_object()
                .ok_or_else(|| invalid(&field(""), "must be an object".into()))?;
            for k in ro.keys() {
                if !["host", "backend", "helper"].contains(&k.as_str()) {
                    return Err(invalid(
                        &field(&format!(".{k}")),
                        "unknown field (expected \"host\" and \"backend\" or \"helper\")".into(),
                    ));
                }
            }
            let host = ro
                .get("host")
                .ok_or_else(|| invalid(&field(".host"), "missing".into()))?
                .as_str()
                .ok_or_else(|| invalid(&field(".host"), "must be a string".into()))?;
            let pattern = Pattern::parse(host).map_err(|why| invalid(&field(".host"), why))?;
            let target =
                match (ro.get("backend"), ro.get("helper")) {
                    (Some(b), None) => parse_target(b, Some(false))
                        .map_err(|why| invalid(&field(".backend"), why))?,
                    (None, Some(h)) => parse_target(h, Some(true))
                        .map_err(|why| invalid(&field(".helper"), why))?,
                    _ => {
                        return Err(invalid(
                            &field(""),
                            "needs exactly one of \"backend\" or \"helper\"".into(),
                        ));
                    }
                };
            routes.push(Route {
                host: host.to_owned(),
                pattern,
                target,
            });
        }
        Ok(RouterConfig {
            path: path.to_owned(),
            store,
            routes,
        })
    }

    /// The first route matching a server URL.
    pub fn route(&self, server_url: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.pattern.matches(server_url))
    }
}

/// Parses a target. `helper`: `Some(true)` the value is a helper name, `Some(false)` a backend
/// name, `None` (the `store` field) a backend name or `{"helper": NAME}`.
fn parse_target(v: &Value, helper: Option<bool>) -> Result<Target, String> {
    let (name, is_helper) = match (v, helper) {
        (Value::String(s), Some(h)) => (s.as_str(), h),
        (Value::String(s), None) => (s.as_str(), false),
        (Value::Object(o), None) => {
            let h = o
                .get("helper")
                .and_then(Value::as_str)
                .filter(|_| o.len() == 1)
                .ok_or("must be a backend name or {\"helper\": NAME}")?;
            (h, true)
        }
        _ => return Err("must be a string".into()),
    };
    if is_helper {
        validate_helper_name(name).map_err(|e| e.to_string())?;
        if name == "regauth" {
            return Err("\"regauth\" is this router itself; routing to it would loop".into());
        }
        return Ok(Target::Helper(name.to_owned()));
    }
    match name {
        "file" => Ok(Target::File),
        "env" => Ok(Target::Env),
        "gitlab" => Ok(Target::Gitlab),
        other => Err(format!(
            "unknown backend {other:?} (in-process backends: file, env, gitlab; reach any other \
             helper with \"helper\": NAME)"
        )),
    }
}

/// The router.
#[derive(Debug)]
pub struct RouterBackend {
    config: Result<RouterConfig, RouterError>,
    file: FileBackend,
    env: EnvBackend,
    gitlab: GitlabBackend,
    client: HelperClient,
    policy: ReadOnlyPolicy,
}

impl RouterBackend {
    /// A router for `env`, reading its config file now. A bad config does not fail here (so
    /// `version` and `--help` work); every request then answers with the config error.
    pub fn new(env: Env) -> RouterBackend {
        let config = RouterConfig::path_for(&env).and_then(|p| RouterConfig::load(&p));
        RouterBackend::with_config(env, config)
    }

    /// A router with a given config (tests, or a caller that parsed it already).
    pub fn with_config(env: Env, config: Result<RouterConfig, RouterError>) -> RouterBackend {
        RouterBackend {
            config,
            file: FileBackend::new(&env),
            env: EnvBackend::new(env.clone()),
            gitlab: GitlabBackend::new(env.clone()),
            policy: ReadOnlyPolicy::from_env(&env),
            client: HelperClient {
                path: env.get("PATH").map(Into::into),
                ..HelperClient::default()
            },
        }
    }

    /// The process environment.
    pub fn from_process() -> RouterBackend {
        RouterBackend::new(Env::from_process())
    }

    fn config(&self) -> Result<&RouterConfig, BackendError> {
        self.config
            .as_ref()
            .map_err(|e| BackendError::Other(e.to_string()))
    }

    fn in_process(&self, t: &Target) -> Option<&dyn Backend> {
        match t {
            Target::File => Some(&self.file),
            Target::Env => Some(&self.env),
            Target::Gitlab => Some(&self.gitlab),
            Target::Helper(_) => None,
        }
    }

    fn helper_err(name: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::Other(format!("{HELPER}: via docker-credential-{name}: {e}"))
    }

    fn store_target(&self, action: &str) -> Result<Option<&Target>, BackendError> {
        let cfg = self.config()?;
        match &cfg.store {
            Some(t) => Ok(Some(t)),
            None => {
                let hint = format!(
                    "{} has no \"store\" field, so {action} has nowhere to go (add e.g. \"store\": \"file\")",
                    cfg.path.display()
                );
                self.policy.apply(HELPER, action, &hint).map(|_| None)
            }
        }
    }
}

impl Backend for RouterBackend {
    fn get(&self, server_url: &str) -> Result<Login, BackendError> {
        let cfg = self.config()?;
        let Some(route) = cfg.route(server_url) else {
            tracing::debug!(server_url, "router: no route matches");
            return Err(BackendError::NotFound);
        };
        tracing::debug!(server_url, route = %route.host, target = %route.target, "router get");
        match &route.target {
            Target::Helper(name) => match self.client.get(name, server_url) {
                Ok(Some(c)) => Ok(Login {
                    username: c.username,
                    secret: c.secret,
                }),
                Ok(None) => Err(BackendError::NotFound),
                Err(e) => Err(Self::helper_err(name, e)),
            },
            t => self
                .in_process(t)
                .map_or(Err(BackendError::NotFound), |b| b.get(server_url)),
        }
    }

    fn store(&self, creds: &Credentials) -> Result<(), BackendError> {
        let Some(target) = self.store_target("store")? else {
            return Ok(());
        };
        tracing::debug!(server_url = %creds.server_url, target = %target, "router store");
        if let Ok(cfg) = self.config()
            && cfg
                .route(&creds.server_url)
                .is_none_or(|r| &r.target != target)
        {
            tracing::warn!(
                server_url = %creds.server_url,
                "router store: {} does not route this registry to the store ({target}); get will not find what is stored now",
                cfg.path.display()
            );
        }
        match target {
            Target::Helper(name) => self
                .client
                .store(name, creds)
                .map_err(|e| Self::helper_err(name, e)),
            t => self.in_process(t).map_or(Ok(()), |b| b.store(creds)),
        }
    }

    fn erase(&self, server_url: &str) -> Result<(), BackendError> {
        let Some(target) = self.store_target("erase")? else {
            return Ok(());
        };
        tracing::debug!(server_url, target = %target, "router erase");
        match target {
            Target::Helper(name) => self
                .client
                .erase(name, server_url)
                .map_err(|e| Self::helper_err(name, e)),
            t => self.in_process(t).map_or(Ok(()), |b| b.erase(server_url)),
        }
    }

    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        let cfg = self.config()?;
        let mut targets: Vec<&Target> = Vec::new();
        for r in &cfg.routes {
            if !targets.contains(&&r.target) {
                targets.push(&r.target);
            }
        }
        let mut out = BTreeMap::new();
        for t in targets {
            let listed = match t {
                Target::Helper(name) => match self.client.list(name) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!("router list: skipping docker-credential-{name}: {e}");
                        continue;
                    }
                },
                t => match self.in_process(t) {
                    Some(b) => b.list()?,
                    None => continue,
                },
            };
            for (server, user) in listed {
                // Keep only what `get` would route back to this target.
                if cfg.route(&server).is_some_and(|r| &r.target == t) {
                    out.entry(server).or_insert(user);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<RouterConfig, RouterError> {
        RouterConfig::parse(Path::new("/etc/regauth/router.json"), json.as_bytes())
    }

    const EXAMPLE: &str = r#"{"store":"file","routes":[
        {"host":"registry.example.com:5000","backend":"file"},
        {"host":"*.example.org","backend":"env"},
        {"host":"*.example.net:5000","backend":"gitlab"},
        {"host":"docker.io","helper":"hub"},
        {"host":"ecr","helper":"ecr"},
        {"host":"*","backend":"file"}]}"#;

    #[test]
    fn matching_table() {
        let c = cfg(EXAMPLE).unwrap();
        let file = Target::File;
        let env = Target::Env;
        let gl = Target::Gitlab;
        let hub = Target::Helper("hub".into());
        let ecr = Target::Helper("ecr".into());
        let table: &[(&str, &Target)] = &[
            ("registry.example.com:5000", &file),
            ("https://registry.example.com:5000/v2/", &file),
            ("a.example.org", &env),
            ("a.b.example.org:8443", &env),
            ("https://A.Example.Org/v2/", &env),
            ("example.org", &file),    // the bare domain is not *.example.org
            ("badexample.org", &file), // nor is a name that merely ends alike
            ("a.example.org.evil.com", &file),
            ("x.example.net:5000", &gl),
            ("x.example.net", &file), // port-exact wildcard
            ("x.example.net:5001", &file),
            ("docker.io", &hub),
            ("index.docker.io", &hub),
            ("registry-1.docker.io", &hub),
            ("https://index.docker.io/v1/", &hub),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", &ecr),
            (
                "https://123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/v2/x",
                &ecr,
            ),
            ("123456789012.dkr-ecr.us-west-2.on.aws", &ecr),
            ("210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn", &ecr),
            ("123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov", &ecr),
            ("public.ecr.aws", &ecr),
            ("ecr-public.aws.com", &ecr),
            (
                "123456789012.dkr.ecr.us-west-2.amazonaws.com.fake.example.com",
                &file,
            ),
            ("public.ecr.aws.fake.example.com", &file),
            ("not.ecr.io", &file),
            ("registry.example.com", &file),
        ];
        for (url, want) in table {
            assert_eq!(&c.route(url).unwrap().target, *want, "{url}");
        }
        let no_catch_all = cfg(r#"{"routes":[{"host":"reg:5000","backend":"file"}]}"#).unwrap();
        assert!(no_catch_all.route("reg").is_none());
        assert!(no_catch_all.route("reg:5000").is_some());
    }

    #[test]
    fn config_errors_name_file_and_field() {
        let cases = [
            ("{", "(file)", "invalid JSON"),
            ("[]", "(file)", "expected a JSON object"),
            (r#"{"routes":[]"#, "(file)", "invalid JSON"),
            (r#"{"store":"file"}"#, "routes", "missing"),
            (r#"{"route":[]}"#, "route", "unknown field"),
            (r#"{"routes":{}}"#, "routes", "must be a list"),
            (
                r#"{"routes":[{"backend":"file"}]}"#,
                "routes[0].host",
                "missing",
            ),
            (r#"{"routes":[{"host":"a"}]}"#, "routes[0]", "exactly one"),
            (
                r#"{"routes":[{"host":"a","backend":"file","helper":"x"}]}"#,
                "routes[0]",
                "exactly one",
            ),
            (
                r#"{"routes":[{"host":"*","backend":"keyring"}]}"#,
                "routes[0].backend",
                "unknown backend \"keyring\"",
            ),
            (
                r#"{"routes":[{"host":"*","helper":"../bin/sh"}]}"#,
                "routes[0].helper",
                "path traversal",
            ),
            (
                r#"{"routes":[{"host":"*","helper":"regauth"}]}"#,
                "routes[0].helper",
                "loop",
            ),
            (
                r#"{"routes":[{"host":"a.*.com","backend":"env"}]}"#,
                "routes[0].host",
                "`*`",
            ),
            (
                r#"{"routes":[{"host":"*.","backend":"env"}]}"#,
                "routes[0].host",
                "wildcard",
            ),
            (
                r#"{"routes":[{"host":"*.x:ab","backend":"env"}]}"#,
                "routes[0].host",
                "port",
            ),
            (
                r#"{"routes":[{"host":"","backend":"env"}]}"#,
                "routes[0].host",
                "empty",
            ),
            (
                r#"{"routes":[{"host":"a","backend":"env","bogus":1}]}"#,
                "routes[0].bogus",
                "unknown field",
            ),
            (
                r#"{"store":"nope","routes":[]}"#,
                "store",
                "unknown backend",
            ),
            (
                r#"{"store":{"helper":"a/b"},"routes":[]}"#,
                "store",
                "path traversal",
            ),
        ];
        for (json, field, why) in cases {
            let e = cfg(json).unwrap_err().to_string();
            assert!(
                e.contains("/etc/regauth/router.json")
                    && e.contains(&format!(": {field}: "))
                    && e.contains(why),
                "{json}: {e}"
            );
        }
        let ok = cfg(r#"{"store":{"helper":"keyring"},"routes":[]}"#).unwrap();
        assert_eq!(ok.store, Some(Target::Helper("keyring".into())));
        let e = RouterConfig::load(Path::new("/nonexistent/router.json")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/router.json not found"),
            "{e}"
        );
    }

    #[test]
    fn in_process_routing_and_filtered_list() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([
            ("REGAUTH_CONFIG_DIR", dir.path().to_str().unwrap()),
            ("REGAUTH_A_EXAMPLE_ORG_USERNAME", "envuser"),
            ("REGAUTH_A_EXAMPLE_ORG_PASSWORD", "envpass"),
            // Present in env but routed to file: must not be listed.
            ("REGAUTH_REG_EXAMPLE_COM_5000_USERNAME", "shadow"),
            ("REGAUTH_REG_EXAMPLE_COM_5000_PASSWORD", "shadow"),
            ("PATH", "/nonexistent"),
        ]);
        let config = cfg(r#"{"store":"file","routes":[
            {"host":"*.example.org","backend":"env"},
            {"host":"ecr","helper":"not-installed"},
            {"host":"*","backend":"file"}]}"#);
        let r = RouterBackend::with_config(env, config);
        let c = Credentials {
            server_url: "reg.example.com:5000".into(),
            username: "fileuser".into(),
            secret: crate::secret::Secret::new("filepass"),
        };
        r.store(&c).unwrap();
        assert_eq!(r.get("reg.example.com:5000").unwrap().username, "fileuser");
        assert_eq!(r.get("a.example.org").unwrap().secret.expose(), "envpass");
        assert!(matches!(
            r.get("b.example.org"),
            Err(BackendError::NotFound)
        ));
        // The helper is missing: a clear error for get, skipped in list.
        let e = r.get("public.ecr.aws").unwrap_err().to_string();
        assert!(e.contains("docker-credential-not-installed"), "{e}");
        let list = r.list().unwrap();
        assert_eq!(
            list.into_iter().collect::<Vec<_>>(),
            [
                ("a.example.org".to_owned(), "envuser".to_owned()),
                ("reg.example.com:5000".to_owned(), "fileuser".to_owned()),
            ]
        );
        r.erase("reg.example.com:5000").unwrap();
        assert!(matches!(
            r.get("reg.example.com:5000"),
            Err(BackendError::NotFound)
        ));
    }

    #[test]
    fn no_store_is_read_only_and_bad_config_answers_every_request() {
        let env = Env::from_pairs([("PATH", "/nonexistent")]);
        let r = RouterBackend::with_config(env, cfg(r#"{"routes":[]}"#));
        let c = Credentials {
            server_url: "x".into(),
            username: "u".into(),
            secret: crate::secret::Secret::new("hunter2"),
        };
        let e = r.store(&c).unwrap_err().to_string();
        assert!(
            e.contains("no \"store\" field") && !e.contains("hunter2"),
            "{e}"
        );
        let env = Env::from_pairs([("REGAUTH_IGNORE_STORE", "true")]);
        let r = RouterBackend::with_config(env, cfg(r#"{"routes":[]}"#));
        r.store(&c).unwrap();
        let r = RouterBackend::with_config(Env::default(), cfg(r#"{"routes":"#));
        for e in [
            r.get("x").unwrap_err(),
            r.list().unwrap_err(),
            r.erase("x").unwrap_err(),
        ] {
            assert!(
                e.to_string().contains("router.json: (file): invalid JSON"),
                "{e}"
            );
        }
    }
}
