//! Credential backends: where the helpers keep or find credentials.
//!
//! Owns: one module per storage, each implementing [`crate::credhelper::Backend`], and the shared
//! read-only rule ([`ReadOnlyPolicy`]). Every backend compares server URLs with
//! [`crate::config::keys::registry_host`], the one normalisation (Docker Hub folded, port kept).
//! The protocol, argument handling, logging set-up and output formats are not here (see
//! [`crate::credhelper`]); neither is deciding which registry uses which backend for docker or
//! GitLab Runner (see [`crate::resolve`]). The router ([`router`]) is the exception that proves the
//! rule: it maps hosts to backends for one `credsStore` entry, and for matching it reuses
//! [`crate::config::keys`] and [`ecr::host`].
//!
//! | module | helper | writable |
//! |---|---|---|
//! | [`file`] | `docker-credential-file` | yes: encrypted file in the regauth config folder |
//! | [`env`] | `docker-credential-env` | no: `REGAUTH_<HOST>_USERNAME` / `_PASSWORD` |
//! | [`gitlab`] | `docker-credential-gitlab` | no: GitLab CI job variables |
//! | [`router`] | `docker-credential-regauth` | through its configured store |
//! | [`ecr`] | `docker-credential-ecr` (feature `ecr`) | no: ECR tokens; [`ecr::host`] (always built) is the one ECR host model |
//! | `keyring` | `docker-credential-keyring` (feature `keyring`) | yes: the OS keyring |

pub mod ecr;
pub mod env;
pub mod file;
pub mod gitlab;
pub mod router;

#[cfg(feature = "keyring")]
pub mod keyring;

use crate::config::locations::Env;
use crate::credhelper::BackendError;

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
