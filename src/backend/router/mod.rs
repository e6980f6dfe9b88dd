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
//! Host patterns, tried **in file order, first match wins**, against [`crate::config::keys::registry_host`] of
//! the server URL:
//!
//! | pattern | matches |
//! |---|---|
//! | `host[:port]` (or a URL) | that registry exactly, port included; `docker.io` matches every Docker Hub spelling |
//! | `*.suffix` | any host name ending in `.suffix`, on any port |
//! | `*.suffix:port` | the same, on that port only |
//! | `ecr` | ECR and ECR Public hosts, as ecr-login recognises them ([`crate::backend::ecr::host`]) |
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
//! Files: [`config`] (the file, its rules and host patterns), this module (running a rule's
//! target), `tests.rs`.
//!
//! Does not own: any storage itself, or docker's/GitLab Runner's own resolution
//! ([`crate::resolve`]).

pub mod config;

pub use config::{Pattern, RouterConfig, RouterRule, RuleTarget};

use super::ReadOnlyPolicy;
use super::env::EnvBackend;
use super::file::FileBackend;
use super::gitlab::GitlabBackend;
use crate::config::locations::Env;
use crate::credhelper::client::HelperClient;
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use std::collections::BTreeMap;
use std::path::PathBuf;

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

    fn in_process(&self, t: &RuleTarget) -> Option<&dyn Backend> {
        match t {
            RuleTarget::File => Some(&self.file),
            RuleTarget::Env => Some(&self.env),
            RuleTarget::Gitlab => Some(&self.gitlab),
            RuleTarget::Helper(_) => None,
        }
    }

    fn helper_err(name: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::Other(format!("{HELPER}: via docker-credential-{name}: {e}"))
    }

    fn store_target(&self, action: &str) -> Result<Option<&RuleTarget>, BackendError> {
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
            RuleTarget::Helper(name) => match self.client.get(name, server_url) {
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
            RuleTarget::Helper(name) => self
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
            RuleTarget::Helper(name) => self
                .client
                .erase(name, server_url)
                .map_err(|e| Self::helper_err(name, e)),
            t => self.in_process(t).map_or(Ok(()), |b| b.erase(server_url)),
        }
    }

    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        let cfg = self.config()?;
        let mut targets: Vec<&RuleTarget> = Vec::new();
        for r in &cfg.routes {
            if !targets.contains(&&r.target) {
                targets.push(&r.target);
            }
        }
        let mut out = BTreeMap::new();
        for t in targets {
            let listed = match t {
                RuleTarget::Helper(name) => match self.client.list(name) {
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
mod tests;
