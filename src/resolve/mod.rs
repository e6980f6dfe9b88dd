//! The resolver: which credentials apply to an image or registry, and why.
//!
//! Owns: the two resolution profiles — [`Profile::Docker`] (the docker CLI's order) and
//! [`Profile::Gitlab`] (GitLab Runner's `helpers/docker/auth`) — behind one [`Resolver`], used by
//! the `regauth resolve` CLI, the router helper and the proxy alike. Each answer is a
//! [`Resolution`]: the credential, where it came from (`registry` key as written, `source`,
//! `kind`, `helper`), every step consulted ([`Resolution::trace`]) and warnings.
//!
//! Does not own: parsing configs ([`crate::config`]) or running helpers
//! ([`crate::credhelper::client`]).
//!
//! Why lazy: both anchors can run helpers for registries that are not being pulled — GitLab Runner
//! runs every `credHelpers` entry and `list`s plus `get`s the whole `credsStore` on every image
//! pull. We compute the same winner from the keys alone and run only the helpers that can be it
//! (at most one `list` and, normally, one `get` per source). The one deliberate difference: a
//! helper for an unrelated registry that *fails at run time* would make GitLab Runner drop the
//! whole source; we never run it, so we never see that failure. Missing helper binaries and
//! path-traversal names are still detected without running anything, so those cases match.

mod docker;
mod gitlab;

use crate::config::ConfigError;
use crate::config::locations::Env;
use crate::credhelper::client::{HelperClient, HelperError};
use crate::reference::Target;
use crate::secret::Secret;
use std::path::PathBuf;

/// Which tool's rules to follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// The docker CLI: `DOCKER_AUTH_CONFIG` (exact key) → `credHelpers` → `credsStore` → `auths`.
    #[default]
    Docker,
    /// GitLab Runner: `DOCKER_AUTH_CONFIG` → `~/.docker/config.json` or `~/.dockercfg` → job
    /// credentials; first source wins per registry path; longest path prefix.
    Gitlab,
}

/// Which part of a config answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Auths,
    CredsStore,
    CredHelpers,
    Job,
}

impl Kind {
    /// The name printed in `resolve` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Auths => "auths",
            Kind::CredsStore => "credsStore",
            Kind::CredHelpers => "credHelpers",
            Kind::Job => "job",
        }
    }
}

/// What the secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A password (Basic auth, or the password grant of a token server).
    Password,
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    IdentityToken,
    /// A bearer token sent to the registry as is (`registrytoken`).
    RegistryToken,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::IdentityToken => "identitytoken",
            SecretKind::RegistryToken => "registrytoken",
        }
    }
}

/// A usable credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: Secret,
    pub secret_kind: SecretKind,
}

/// The answer for one image or host.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// The matched key as written in the config, or the job credential URL.
    pub registry: Option<String>,
    /// `DOCKER_AUTH_CONFIG`, the config file path, or `job`.
    pub source: Option<String>,
    pub kind: Option<Kind>,
    /// The helper that answered (the `<name>` of `docker-credential-<name>`).
    pub helper: Option<String>,
    pub credential: Option<Credential>,
    /// The registry path that was looked up (GitLab profile) or the config key (docker profile).
    pub lookup: String,
    /// Every source and key consulted, and why it did or did not match.
    pub trace: Vec<String>,
    /// Problems that did not stop resolution (a skipped source, an ignored variable).
    pub warnings: Vec<String>,
}

/// Why resolution could not produce an answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{origin}: {cause}")]
    Helper {
        /// Which config named the helper.
        origin: String,
        /// Printed, not returned from `source()`: each cause is shown once.
        cause: Box<HelperError>,
    },
    #[error("{0}")]
    Usage(String),
}

/// A failed resolution with what was consulted before it failed, so `--explain` can still
/// explain.
#[derive(Debug)]
pub struct Failure {
    pub error: Box<ResolveError>,
    /// The steps up to the failure (see [`Resolution::trace`]).
    pub trace: Vec<String>,
    pub warnings: Vec<String>,
}

impl Failure {
    fn new(res: Resolution, error: ResolveError) -> Failure {
        Failure {
            error: Box::new(error),
            trace: res.trace,
            warnings: res.warnings,
        }
    }
}

/// What [`Resolver::registries_named`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedRegistries {
    /// Registry keys as written (`https://index.docker.io/v1/`, `host:port/team`, …).
    pub keys: Vec<String>,
    /// `credsStore` helper names (their `list` names more registries).
    pub creds_stores: Vec<String>,
}

/// One resolver for every caller. Holds settings only; reads configs on each call, so edits to
/// `config.json` apply without a restart.
#[derive(Clone, Debug)]
pub struct Resolver {
    pub profile: Profile,
    pub env: Env,
    /// Replaces `$DOCKER_CONFIG` (docker profile) or `$HOME/.docker` (GitLab profile).
    pub config_dir: Option<PathBuf>,
    pub helpers: HelperClient,
}

impl Resolver {
    /// A resolver over the process environment.
    pub fn new(profile: Profile) -> Resolver {
        Resolver {
            profile,
            env: Env::from_process(),
            config_dir: None,
            helpers: HelperClient::default(),
        }
    }

    /// Resolves credentials for an image or a registry host.
    pub fn resolve(&self, target: &Target) -> Result<Resolution, ResolveError> {
        self.resolve_explained(target).map_err(|f| *f.error)
    }

    /// [`Resolver::resolve`], keeping the trace and warnings when it fails.
    pub fn resolve_explained(&self, target: &Target) -> Result<Resolution, Failure> {
        match self.profile {
            Profile::Docker => docker::resolve(self, target),
            Profile::Gitlab => gitlab::resolve(self, target),
        }
    }

    /// Resolves by registry `host[:port]` (what the proxy and the router know).
    pub fn resolve_host(&self, host: &str) -> Result<Resolution, ResolveError> {
        self.resolve(&Target::Host(host.to_owned()))
    }

    /// Every registry the credential sources of this profile name, without running a helper:
    /// the `auths` and `credHelpers` keys of `DOCKER_AUTH_CONFIG` and the config file (or
    /// `~/.dockercfg`), the GitLab job's `CI_REGISTRY` / `CI_DEPENDENCY_PROXY_SERVER` (GitLab
    /// profile), and the `credsStore` helpers whose `list` would name more. Sources that do not
    /// parse are skipped (resolution reports them). The proxy's reach allowlist is built from this.
    pub fn registries_named(&self) -> NamedRegistries {
        use crate::config::{Dialect, DockerConfig};
        let mut out = NamedRegistries::default();
        let mut configs = Vec::new();
        if let Some(value) = self.env.get(DOCKER_AUTH_CONFIG) {
            let (dialect, follow) = match self.profile {
                Profile::Docker => (Dialect::DockerEnv, false),
                Profile::Gitlab => (Dialect::Full, true),
            };
            if let Ok(c) = DockerConfig::from_env_value(DOCKER_AUTH_CONFIG, value, dialect, follow)
            {
                configs.push(c);
            }
        }
        let legacy = crate::config::locations::legacy_dockercfg(&self.env);
        for path in self.config_file().into_iter().chain(legacy) {
            let dialect = match (self.profile, path.ends_with(".dockercfg")) {
                (Profile::Docker, true) => Dialect::Legacy,
                _ => Dialect::Full,
            };
            if let Ok(Some(c)) = DockerConfig::load_file(&path, dialect) {
                configs.push(c);
                break;
            }
        }
        for c in configs {
            out.keys.extend(c.auths.into_keys());
            out.keys.extend(c.cred_helpers.into_keys());
            out.creds_stores.extend(c.creds_store);
        }
        if self.profile == Profile::Gitlab {
            for var in ["CI_REGISTRY", "CI_DEPENDENCY_PROXY_SERVER"] {
                out.keys.extend(self.env.get(var).map(str::to_owned));
            }
        }
        out.creds_stores.dedup();
        out
    }

    /// The `config.json` this profile reads (the GitLab profile falls back to `~/.dockercfg`
    /// separately).
    pub fn config_file(&self) -> Option<PathBuf> {
        match (&self.config_dir, self.profile) {
            (Some(d), _) => Some(d.join("config.json")),
            (None, Profile::Docker) => crate::config::locations::docker_config_dir(&self.env)
                .map(|d| d.join("config.json")),
            (None, Profile::Gitlab) => self
                .env
                .home()
                .map(|h| h.join(".docker").join("config.json")),
        }
    }
}

/// Turns a protocol answer into a credential (`<token>` user → identity token).
fn credential_from_helper(c: crate::credhelper::Credentials) -> Option<Credential> {
    if c.username.is_empty() && c.secret.is_empty() {
        return None;
    }
    let identity = c.is_identity_token();
    Some(Credential {
        username: if identity { String::new() } else { c.username },
        secret: c.secret,
        secret_kind: if identity {
            SecretKind::IdentityToken
        } else {
            SecretKind::Password
        },
    })
}

/// Turns an `auths` entry into a credential: identity token first, then password, then registry
/// token — the order the daemon uses them.
fn credential_from_entry(e: &crate::config::AuthEntry) -> Option<Credential> {
    if let Some(t) = &e.identity_token {
        return Some(Credential {
            username: e.username.clone(),
            secret: t.clone(),
            secret_kind: SecretKind::IdentityToken,
        });
    }
    if !e.username.is_empty() || !e.password.is_empty() {
        return Some(Credential {
            username: e.username.clone(),
            secret: e.password.clone(),
            secret_kind: SecretKind::Password,
        });
    }
    e.registry_token.as_ref().map(|t| Credential {
        username: String::new(),
        secret: t.clone(),
        secret_kind: SecretKind::RegistryToken,
    })
}

/// The name `DOCKER_AUTH_CONFIG` sources are reported under.
pub const DOCKER_AUTH_CONFIG: &str = "DOCKER_AUTH_CONFIG";
