//! Credential backends: where the helpers keep or find credentials.
//!
//! Owns: one module per storage, each implementing [`crate::credhelper::Backend`]; the host
//! normalisation every backend applies to a server URL ([`registry_host`]); the shared
//! read-only rule ([`ReadOnlyPolicy`]); and helper logging ([`init_helper_logging`]). The protocol,
//! argument handling and output formats are not here (see [`crate::credhelper`]); neither is
//! deciding which registry uses which backend for docker or GitLab Runner (see [`crate::resolve`]).
//! The router ([`router`]) is the exception that proves the rule: it maps hosts to backends for
//! one `credsStore` entry, and for matching it reuses [`crate::config::keys`] and [`ecr_host`].
//!
//! | module | helper | writable |
//! |---|---|---|
//! | [`file`] | `docker-credential-file` | yes: encrypted file in the regauth config folder |
//! | [`env`] | `docker-credential-env` | no: `REGAUTH_<HOST>_USERNAME` / `_PASSWORD` |
//! | [`gitlab`] | `docker-credential-gitlab` | no: GitLab CI job variables |
//! | [`router`] | `docker-credential-regauth` | through its configured store |
//! | [`ecr_host`] | — | ECR host recognition shared by the router and the ECR backend |

pub mod ecr_host;
pub mod env;
pub mod file;
pub mod gitlab;
pub mod router;

#[cfg(feature = "ecr")]
pub mod ecr;
#[cfg(feature = "keyring")]
pub mod keyring;

use crate::config::keys::{
    DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN, DOCKER_HUB_LEGACY_DOMAIN, convert_to_hostname,
};
use crate::config::locations::Env;
use crate::credhelper::BackendError;

/// The registry `host[:port]` a server URL names, as every regauth backend compares it: docker's
/// `ConvertToHostname` (a URL keeps only `host[:port]`, anything else is cut at the first `/`),
/// the host lower-cased (DNS names are case-insensitive), and every spelling of Docker Hub
/// (`docker.io`, `index.docker.io`, `registry-1.docker.io`, `https://index.docker.io/v1/`) folded
/// to `docker.io`. The port is kept: `reg:5000` and `reg` are different registries.
pub fn registry_host(server_url: &str) -> String {
    let host = convert_to_hostname(server_url.trim()).to_ascii_lowercase();
    if host == DOCKER_HUB_DOMAIN || host == DOCKER_HUB_LEGACY_DOMAIN || host == DOCKER_HUB_API_HOST
    {
        DOCKER_HUB_DOMAIN.to_owned()
    } else {
        host
    }
}

/// What a read-only backend does on `store`/`erase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOnlyPolicy {
    /// Fail with a clear "read-only" error (the default).
    Refuse,
    /// Succeed without doing anything (`REGAUTH_IGNORE_STORE=true`, like ecr-login's
    /// `AWS_ECR_IGNORE_CREDS_STORAGE`), so `docker login` with this helper as `credsStore` works.
    Ignore,
}

/// The variable that turns `store`/`erase` on read-only helpers into no-ops.
pub const IGNORE_STORE_VAR: &str = "REGAUTH_IGNORE_STORE";

impl ReadOnlyPolicy {
    /// `Ignore` exactly when `REGAUTH_IGNORE_STORE` is `true` (as ecr-login, an exact match).
    pub fn from_env(env: &Env) -> ReadOnlyPolicy {
        if env.get(IGNORE_STORE_VAR) == Some("true") {
            ReadOnlyPolicy::Ignore
        } else {
            ReadOnlyPolicy::Refuse
        }
    }

    /// The answer to a `store`/`erase` on a read-only helper.
    pub(crate) fn apply(self, helper: &str, action: &str, hint: &str) -> Result<(), BackendError> {
        match self {
            ReadOnlyPolicy::Ignore => {
                tracing::warn!(
                    helper,
                    action,
                    "read-only helper: {action} ignored ({IGNORE_STORE_VAR}=true)"
                );
                Ok(())
            }
            ReadOnlyPolicy::Refuse => Err(BackendError::ReadOnly {
                helper: helper.to_owned(),
                hint: format!(
                    "{action} is not supported; {hint} (set {IGNORE_STORE_VAR}=true to make store and erase succeed without doing anything)"
                ),
            }),
        }
    }
}

/// Sets up logging for a helper binary: only when `REGAUTH_LOG` is set (its value is a tracing
/// filter such as `debug`), and only to stderr — stdout belongs to the protocol. Backends never log
/// a secret; the `Secret` type would redact one anyway.
pub fn init_helper_logging() {
    let Some(filter) = crate::logging::helper_filter() else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// True when helper logging is on (`REGAUTH_LOG` set).
pub fn logging_enabled() -> bool {
    std::env::var_os("REGAUTH_LOG").is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_host_folds_hub_and_keeps_port() {
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "https://registry-1.docker.io/v2/",
            "Docker.IO",
        ] {
            assert_eq!(registry_host(hub), "docker.io", "{hub}");
        }
        assert_eq!(
            registry_host("https://Registry.Example.com:5000/v2/"),
            "registry.example.com:5000"
        );
        assert_eq!(
            registry_host("registry.example.com:5000/ns/img"),
            "registry.example.com:5000"
        );
        assert_eq!(
            registry_host("gitlab.example.com:443"),
            "gitlab.example.com:443"
        );
        assert_ne!(registry_host("docker.io:443"), "docker.io");
    }
}
