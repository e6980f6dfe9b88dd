//! The router config: `router.json`'s rules and what they point at.
//!
//! Owns: [`RouterConfig`] (reading and validating the file, naming the field that is wrong),
//! [`RouterRule`] (one `{"host": PATTERN, …}` entry), [`Pattern`] (host matching, with
//! [`crate::config::keys`] and [`crate::backend::ecr::host`]) and [`RuleTarget`]. Does not own:
//! running a target (see [`super::RouterBackend`]).

use super::{ROUTER_CONFIG_VAR, ROUTER_FILE, RouterError};
use crate::backend::ecr::is_ecr_host;
use crate::config::keys::{registry_host, split_host_port};
use crate::config::locations::{Env, regauth_config_dir};
use crate::credhelper::client::validate_helper_name;
use crate::credhelper::server::json_error_class;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where a route sends a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleTarget {
    File,
    Env,
    Gitlab,
    /// `docker-credential-<name>`.
    Helper(String),
}

impl std::fmt::Display for RuleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleTarget::File => f.write_str("backend file"),
            RuleTarget::Env => f.write_str("backend env"),
            RuleTarget::Gitlab => f.write_str("backend gitlab"),
            RuleTarget::Helper(n) => write!(f, "helper docker-credential-{n}"),
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
                let (name, p) = split_host_port(&host);
                let in_domain = name
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'));
                in_domain && port.as_deref().is_none_or(|want| p == Some(want))
            }
        }
    }
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterRule {
    /// The pattern as written.
    pub host: String,
    pub pattern: Pattern,
    pub target: RuleTarget,
}

/// A parsed router config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub path: PathBuf,
    pub store: Option<RuleTarget>,
    pub routes: Vec<RouterRule>,
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
            routes.push(RouterRule {
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
    pub fn route(&self, server_url: &str) -> Option<&RouterRule> {
        self.routes.iter().find(|r| r.pattern.matches(server_url))
    }
}

/// Parses a target. `helper`: `Some(true)` the value is a helper name, `Some(false)` a backend
/// name, `None` (the `store` field) a backend name or `{"helper": NAME}`.
pub(super) fn parse_target(v: &Value, helper: Option<bool>) -> Result<RuleTarget, String> {
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
        return Ok(RuleTarget::Helper(name.to_owned()));
    }
    match name {
        "file" => Ok(RuleTarget::File),
        "env" => Ok(RuleTarget::Env),
        "gitlab" => Ok(RuleTarget::Gitlab),
        other => Err(format!(
            "unknown backend {other:?} (in-process backends: file, env, gitlab; reach any other \
             helper with \"helper\": NAME)"
        )),
    }
}
