//! The gitlab backend (`docker-credential-gitlab`): read-only credentials from GitLab CI job
//! variables.
//!
//! Owns: two registries a GitLab CI job knows about —
//!
//! | registry variable | username / password |
//! |---|---|
//! | `CI_REGISTRY` | `CI_REGISTRY_USER` / `CI_REGISTRY_PASSWORD`, else `gitlab-ci-token` / `CI_JOB_TOKEN` |
//! | `CI_DEPENDENCY_PROXY_SERVER` | `CI_DEPENDENCY_PROXY_USER` / `CI_DEPENDENCY_PROXY_PASSWORD`, else `gitlab-ci-token` / `CI_JOB_TOKEN` |
//!
//! A server URL matches when its [`crate::config::keys::registry_host`] equals the variable's, port included:
//! GitLab sends the dependency proxy as `gitlab.example.com:443`, and `gitlab.example.com` is then a
//! different registry (as GitLab Runner itself compares them). Nothing matching → the exact
//! not-found answer. `list` reports each configured registry whose credentials are complete.
//!
//! Does not own: writing (read-only, see [`super::ReadOnlyPolicy`]), or the job-payload credentials
//! GitLab Runner resolves itself (see [`crate::resolve`]).

use super::ReadOnlyPolicy;
use crate::config::keys::registry_host;
use crate::config::locations::Env;
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use crate::secret::Secret;
use std::collections::BTreeMap;

const HELPER: &str = "docker-credential-gitlab";
/// The username GitLab accepts with a job token.
pub const JOB_TOKEN_USER: &str = "gitlab-ci-token";

/// One registry a job knows: its server variable and its credential variables.
struct Source {
    server_var: &'static str,
    user_var: &'static str,
    pass_var: &'static str,
}

const SOURCES: [Source; 2] = [
    Source {
        server_var: "CI_REGISTRY",
        user_var: "CI_REGISTRY_USER",
        pass_var: "CI_REGISTRY_PASSWORD",
    },
    Source {
        server_var: "CI_DEPENDENCY_PROXY_SERVER",
        user_var: "CI_DEPENDENCY_PROXY_USER",
        pass_var: "CI_DEPENDENCY_PROXY_PASSWORD",
    },
];

/// Credentials from GitLab CI's predefined variables.
#[derive(Clone)]
pub struct GitlabBackend {
    env: Env,
    policy: ReadOnlyPolicy,
}

/// Shows the policy only: the environment snapshot holds job tokens.
impl std::fmt::Debug for GitlabBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitlabBackend")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GitlabBackend {
    /// A backend reading `env`; the read-only policy comes from `env` too.
    pub fn new(env: Env) -> GitlabBackend {
        let policy = ReadOnlyPolicy::from_env(&env);
        GitlabBackend { env, policy }
    }

    /// The process environment.
    pub fn from_process() -> GitlabBackend {
        GitlabBackend::new(Env::from_process())
    }

    /// The credentials of one source, if complete.
    fn login(&self, s: &Source) -> Option<Login> {
        match (self.env.get(s.user_var), self.env.get(s.pass_var)) {
            (Some(u), Some(p)) => Some(Login {
                username: u.to_owned(),
                secret: Secret::new(p),
            }),
            _ => self.env.get("CI_JOB_TOKEN").map(|t| Login {
                username: JOB_TOKEN_USER.to_owned(),
                secret: Secret::new(t),
            }),
        }
    }

    fn hint(&self) -> String {
        "credentials come from the job's CI_REGISTRY* / CI_DEPENDENCY_PROXY_* / CI_JOB_TOKEN variables".to_owned()
    }
}

impl Backend for GitlabBackend {
    fn get(&self, server_url: &str) -> Result<Login, BackendError> {
        let want = registry_host(server_url);
        for s in &SOURCES {
            let Some(server) = self.env.get(s.server_var) else {
                continue;
            };
            if registry_host(server) != want {
                continue;
            }
            tracing::debug!(
                server_url,
                source = s.server_var,
                "gitlab get: registry matches"
            );
            if let Some(login) = self.login(s) {
                return Ok(login);
            }
            return Err(BackendError::Other(format!(
                "{HELPER}: {server_url} is {} but neither {}/{} nor CI_JOB_TOKEN is set",
                s.server_var, s.user_var, s.pass_var
            )));
        }
        Err(BackendError::NotFound)
    }

    fn store(&self, _creds: &Credentials) -> Result<(), BackendError> {
        self.policy.apply(HELPER, "store", &self.hint())
    }

    fn erase(&self, _server_url: &str) -> Result<(), BackendError> {
        self.policy.apply(HELPER, "erase", &self.hint())
    }

    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        let mut out = BTreeMap::new();
        for s in &SOURCES {
            if let (Some(server), Some(login)) = (self.env.get(s.server_var), self.login(s)) {
                // The first source wins a host, as `get` answers.
                out.entry(server.to_owned()).or_insert(login.username);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(pairs: &[(&str, &str)]) -> GitlabBackend {
        GitlabBackend::new(Env::from_pairs(pairs.iter().copied()))
    }

    fn job() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CI_REGISTRY", "registry.gitlab.example.com:5050"),
            ("CI_REGISTRY_USER", "gitlab-ci-token"),
            ("CI_REGISTRY_PASSWORD", "regpass"),
            ("CI_DEPENDENCY_PROXY_SERVER", "gitlab.example.com:443"),
            ("CI_DEPENDENCY_PROXY_USER", "proxyuser"),
            ("CI_DEPENDENCY_PROXY_PASSWORD", "proxypass"),
            ("CI_JOB_TOKEN", "jobtoken"),
        ]
    }

    fn pair(l: Login) -> (String, String) {
        (l.username, l.secret.expose().to_owned())
    }

    #[test]
    fn registry_and_dependency_proxy_port_exact() {
        let b = backend(&job());
        let reg = ("gitlab-ci-token".to_owned(), "regpass".to_owned());
        let proxy = ("proxyuser".to_owned(), "proxypass".to_owned());
        assert_eq!(
            pair(b.get("registry.gitlab.example.com:5050").unwrap()),
            reg
        );
        assert_eq!(
            pair(
                b.get("https://registry.gitlab.example.com:5050/v2/")
                    .unwrap()
            ),
            reg
        );
        assert_eq!(
            pair(b.get("Registry.GitLab.example.com:5050").unwrap()),
            reg
        );
        assert_eq!(pair(b.get("gitlab.example.com:443").unwrap()), proxy);
        for miss in [
            "registry.gitlab.example.com",
            "registry.gitlab.example.com:443",
            "gitlab.example.com",
            "https://gitlab.example.com/v2/",
            "docker.io",
        ] {
            assert!(matches!(b.get(miss), Err(BackendError::NotFound)), "{miss}");
        }
    }

    #[test]
    fn job_token_fallback_and_missing() {
        let b = backend(&[("CI_REGISTRY", "reg.example"), ("CI_JOB_TOKEN", "jt")]);
        assert_eq!(
            pair(b.get("reg.example").unwrap()),
            ("gitlab-ci-token".into(), "jt".into())
        );
        let b = backend(&[("CI_REGISTRY", "reg.example"), ("CI_REGISTRY_USER", "u")]);
        let e = b.get("reg.example").unwrap_err().to_string();
        assert!(
            e.contains("CI_REGISTRY_PASSWORD") && e.contains("CI_JOB_TOKEN"),
            "{e}"
        );
        assert!(b.list().unwrap().is_empty());
        let b = backend(&[]);
        assert!(matches!(b.get("reg.example"), Err(BackendError::NotFound)));
        assert!(b.list().unwrap().is_empty());
    }

    #[test]
    fn list_and_read_only() {
        let b = backend(&job());
        let l = b.list().unwrap();
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            [
                ("gitlab.example.com:443".to_owned(), "proxyuser".to_owned()),
                (
                    "registry.gitlab.example.com:5050".to_owned(),
                    "gitlab-ci-token".to_owned()
                ),
            ]
        );
        let c = Credentials {
            server_url: "x".into(),
            username: "u".into(),
            secret: Secret::new("hunter2"),
        };
        let e = b.store(&c).unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-gitlab is read-only") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(b.erase("x").is_err());
        let mut pairs = job();
        pairs.push(("REGAUTH_IGNORE_STORE", "true"));
        let b = backend(&pairs);
        b.store(&c).unwrap();
        b.erase("x").unwrap();
    }
}
