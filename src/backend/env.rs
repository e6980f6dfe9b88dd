//! The env backend (`docker-credential-env`): read-only credentials from environment variables.
//!
//! Owns: the naming rule — `REGAUTH_<HOST>_USERNAME` and `REGAUTH_<HOST>_PASSWORD`, where `<HOST>`
//! is [`crate::config::keys::registry_host`] of the server URL (so `https://reg.example.com:5000/v2/` and
//! `reg.example.com:5000` are one registry, every Docker Hub spelling is `docker.io`) upper-cased
//! with every character other than `A–Z`/`0–9` replaced by `_`:
//!
//! | server URL | variables |
//! |---|---|
//! | `registry.example.com:5000` | `REGAUTH_REGISTRY_EXAMPLE_COM_5000_USERNAME` / `_PASSWORD` |
//! | `https://index.docker.io/v1/`, `docker.io`, `registry-1.docker.io` | `REGAUTH_DOCKER_IO_…` |
//!
//! The port is part of the name (`reg:5000` ≠ `reg`). No variables → the exact not-found answer,
//! never empty credentials. `list` reports every complete pair; its server URL is
//! `REGAUTH_<HOST>_SERVER` when that is set (and names the same `<HOST>`), else a best guess
//! (`_` → `.`, a final all-digit part → `:port`, `DOCKER_IO` → `https://index.docker.io/v1/`) — either
//! way `get` of the listed URL answers from the same variables.
//!
//! Does not own: writing. `store`/`erase` fail with a read-only error, or do nothing when
//! `REGAUTH_IGNORE_STORE=true` ([`super::ReadOnlyPolicy`]).

use super::ReadOnlyPolicy;
use crate::config::keys::DOCKER_HUB_KEY;
use crate::config::keys::registry_host;
use crate::config::locations::Env;
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use crate::secret::Secret;
use std::collections::BTreeMap;

const PREFIX: &str = "REGAUTH_";
const USER_SUFFIX: &str = "_USERNAME";
const PASS_SUFFIX: &str = "_PASSWORD";
const SERVER_SUFFIX: &str = "_SERVER";
const HELPER: &str = "docker-credential-env";

/// Credentials from `REGAUTH_<HOST>_USERNAME` / `_PASSWORD`.
#[derive(Clone)]
pub struct EnvBackend {
    env: Env,
    policy: ReadOnlyPolicy,
}

/// The `<HOST>` part of the variable names for a server URL.
pub fn host_var_part(server_url: &str) -> String {
    registry_host(server_url)
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The username and password variable names for a server URL.
pub fn var_names(server_url: &str) -> (String, String) {
    let h = host_var_part(server_url);
    (
        format!("{PREFIX}{h}{USER_SUFFIX}"),
        format!("{PREFIX}{h}{PASS_SUFFIX}"),
    )
}

/// Shows the policy only: the environment snapshot holds passwords.
impl std::fmt::Debug for EnvBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvBackend")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl EnvBackend {
    /// A backend reading `env`; the read-only policy comes from `env` too.
    pub fn new(env: Env) -> EnvBackend {
        let policy = ReadOnlyPolicy::from_env(&env);
        EnvBackend { env, policy }
    }

    /// The process environment.
    pub fn from_process() -> EnvBackend {
        EnvBackend::new(Env::from_process())
    }

    fn lookup(&self, host_part: &str) -> Result<Option<Login>, BackendError> {
        let user_var = format!("{PREFIX}{host_part}{USER_SUFFIX}");
        let pass_var = format!("{PREFIX}{host_part}{PASS_SUFFIX}");
        match (self.env.get(&user_var), self.env.get(&pass_var)) {
            (Some(u), Some(p)) => Ok(Some(Login {
                username: u.to_owned(),
                secret: Secret::new(p),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(BackendError::Other(format!(
                "{HELPER}: {user_var} is set but {pass_var} is not (set both, or neither)"
            ))),
            (None, Some(_)) => Err(BackendError::Other(format!(
                "{HELPER}: {pass_var} is set but {user_var} is not (set both, or neither)"
            ))),
        }
    }
}

/// The server URL `list` shows for a `<HOST>` part when no `_SERVER` variable says it.
fn guess_server(host_part: &str) -> String {
    if host_part == "DOCKER_IO" {
        return DOCKER_HUB_KEY.to_owned();
    }
    let lower = host_part.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('_').collect();
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let is_ipv4 = parts.len() == 4 && parts.iter().all(|p| all_digits(p));
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() && all_digits(last) && !is_ipv4 => {
            format!("{}:{last}", rest.join("."))
        }
        _ => parts.join("."),
    }
}

impl Backend for EnvBackend {
    fn get(&self, server_url: &str) -> Result<Login, BackendError> {
        let part = host_var_part(server_url);
        tracing::debug!(server_url, vars = %format!("{PREFIX}{part}{USER_SUFFIX}"), "env get");
        self.lookup(&part)?.ok_or(BackendError::NotFound)
    }

    fn store(&self, creds: &Credentials) -> Result<(), BackendError> {
        let (u, p) = var_names(&creds.server_url);
        self.policy.apply(
            HELPER,
            "store",
            &format!("set {u} and {p} in the environment instead"),
        )
    }

    fn erase(&self, server_url: &str) -> Result<(), BackendError> {
        let (u, p) = var_names(server_url);
        self.policy.apply(
            HELPER,
            "erase",
            &format!("unset {u} and {p} in the environment instead"),
        )
    }

    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        let mut out = BTreeMap::new();
        for (name, _) in self.env.iter() {
            let Some(part) = name
                .strip_prefix(PREFIX)
                .and_then(|n| n.strip_suffix(USER_SUFFIX))
            else {
                continue;
            };
            if part.is_empty() {
                continue;
            }
            // Only complete pairs: a listed key must never fail `get`.
            let Ok(Some(login)) = self.lookup(part) else {
                continue;
            };
            let server = self
                .env
                .get(&format!("{PREFIX}{part}{SERVER_SUFFIX}"))
                .filter(|s| host_var_part(s) == part)
                .map(str::to_owned)
                .unwrap_or_else(|| guess_server(part));
            out.insert(server, login.username);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(pairs: &[(&str, &str)]) -> EnvBackend {
        EnvBackend::new(Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn naming_rule_table() {
        let table = [
            ("registry.example.com:5000", "REGISTRY_EXAMPLE_COM_5000"),
            (
                "https://registry.example.com:5000/v2/",
                "REGISTRY_EXAMPLE_COM_5000",
            ),
            (
                "http://Registry.Example.com:5000",
                "REGISTRY_EXAMPLE_COM_5000",
            ),
            ("registry.example.com", "REGISTRY_EXAMPLE_COM"),
            ("registry.example.com/ns/image", "REGISTRY_EXAMPLE_COM"),
            ("my-registry.example.com", "MY_REGISTRY_EXAMPLE_COM"),
            ("127.0.0.1:5000", "127_0_0_1_5000"),
            ("[::1]:5000", "___1__5000"),
            ("docker.io", "DOCKER_IO"),
            ("index.docker.io", "DOCKER_IO"),
            ("registry-1.docker.io", "DOCKER_IO"),
            ("https://index.docker.io/v1/", "DOCKER_IO"),
            ("gitlab.example.com:443", "GITLAB_EXAMPLE_COM_443"),
        ];
        for (url, want) in table {
            assert_eq!(host_var_part(url), want, "{url}");
        }
        assert_eq!(
            var_names("registry.example.com:5000"),
            (
                "REGAUTH_REGISTRY_EXAMPLE_COM_5000_USERNAME".into(),
                "REGAUTH_REGISTRY_EXAMPLE_COM_5000_PASSWORD".into()
            )
        );
    }

    #[test]
    fn get_hub_spellings_and_port_exactness() {
        let b = backend(&[
            ("REGAUTH_DOCKER_IO_USERNAME", "hubuser"),
            ("REGAUTH_DOCKER_IO_PASSWORD", "hubpass"),
            ("REGAUTH_REG_EXAMPLE_COM_5000_USERNAME", "u5000"),
            ("REGAUTH_REG_EXAMPLE_COM_5000_PASSWORD", "p5000"),
        ]);
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            let l = b.get(hub).unwrap();
            assert_eq!(
                (l.username.as_str(), l.secret.expose()),
                ("hubuser", "hubpass")
            );
        }
        let l = b.get("https://reg.example.com:5000/v2/").unwrap();
        assert_eq!((l.username.as_str(), l.secret.expose()), ("u5000", "p5000"));
        assert!(matches!(
            b.get("reg.example.com"),
            Err(BackendError::NotFound)
        ));
        assert!(matches!(
            b.get("reg.example.com:5001"),
            Err(BackendError::NotFound)
        ));
    }

    #[test]
    fn half_set_pairs_are_errors_naming_the_variable_not_the_secret() {
        let b = backend(&[("REGAUTH_REG_PASSWORD", "hunter2")]);
        let e = b.get("reg").unwrap_err().to_string();
        assert!(
            e.contains("REGAUTH_REG_USERNAME") && !e.contains("hunter2"),
            "{e}"
        );
        // An empty value counts as unset.
        let b = backend(&[("REGAUTH_REG_USERNAME", "u"), ("REGAUTH_REG_PASSWORD", "")]);
        assert!(
            b.get("reg")
                .unwrap_err()
                .to_string()
                .contains("REGAUTH_REG_PASSWORD")
        );
        assert!(b.list().unwrap().is_empty());
    }

    #[test]
    fn debug_shows_no_environment() {
        let b = backend(&[("REGAUTH_R_PASSWORD", "hunter2")]);
        assert!(!format!("{b:?}").contains("hunter2"));
        let r = crate::backend::router::RouterBackend::with_config(
            Env::from_pairs([("REGAUTH_R_PASSWORD", "hunter2")]),
            Err(crate::backend::router::RouterError::NoDir),
        );
        assert!(!format!("{r:?}").contains("hunter2"));
        let g = crate::backend::gitlab::GitlabBackend::new(Env::from_pairs([(
            "CI_JOB_TOKEN",
            "hunter2",
        )]));
        assert!(!format!("{g:?}").contains("hunter2"));
    }

    #[test]
    fn read_only_unless_ignored() {
        let c = Credentials {
            server_url: "reg:5000".into(),
            username: "u".into(),
            secret: Secret::new("hunter2"),
        };
        let b = backend(&[]);
        let e = b.store(&c).unwrap_err();
        assert!(matches!(e, BackendError::ReadOnly { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("read-only") && msg.contains("REGAUTH_REG_5000_USERNAME"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"));
        assert!(matches!(
            b.erase("reg:5000"),
            Err(BackendError::ReadOnly { .. })
        ));
        let b = backend(&[("REGAUTH_IGNORE_STORE", "true")]);
        b.store(&c).unwrap();
        b.erase("reg:5000").unwrap();
        // Exact match, as ecr-login's AWS_ECR_IGNORE_CREDS_STORAGE.
        let b = backend(&[("REGAUTH_IGNORE_STORE", "1")]);
        assert!(b.store(&c).is_err());
    }

    #[test]
    fn list_round_trips_through_get() {
        let b = backend(&[
            ("REGAUTH_DOCKER_IO_USERNAME", "hub"),
            ("REGAUTH_DOCKER_IO_PASSWORD", "x"),
            ("REGAUTH_REGISTRY_EXAMPLE_COM_5000_USERNAME", "a"),
            ("REGAUTH_REGISTRY_EXAMPLE_COM_5000_PASSWORD", "x"),
            ("REGAUTH_127_0_0_1_5000_USERNAME", "b"),
            ("REGAUTH_127_0_0_1_5000_PASSWORD", "x"),
            ("REGAUTH_10_0_0_1_USERNAME", "c"),
            ("REGAUTH_10_0_0_1_PASSWORD", "x"),
            ("REGAUTH_MY_REG_EXAMPLE_USERNAME", "d"),
            ("REGAUTH_MY_REG_EXAMPLE_PASSWORD", "x"),
            ("REGAUTH_MY_REG_EXAMPLE_SERVER", "my-reg.example"),
            ("REGAUTH_HALF_USERNAME", "e"),
            ("REGAUTH_IGNORE_STORE", "true"),
            ("REGAUTH_LOG", "debug"),
        ]);
        let list = b.list().unwrap();
        let want: BTreeMap<String, String> = [
            ("https://index.docker.io/v1/", "hub"),
            ("registry.example.com:5000", "a"),
            ("127.0.0.1:5000", "b"),
            ("10.0.0.1", "c"),
            ("my-reg.example", "d"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(list, want);
        for (server, user) in &list {
            assert_eq!(&b.get(server).unwrap().username, user, "{server}");
        }
        // A _SERVER naming another host is ignored rather than listing a key `get` cannot answer.
        let b = backend(&[
            ("REGAUTH_A_EXAMPLE_USERNAME", "u"),
            ("REGAUTH_A_EXAMPLE_PASSWORD", "p"),
            ("REGAUTH_A_EXAMPLE_SERVER", "b.example"),
        ]);
        assert_eq!(b.list().unwrap().keys().collect::<Vec<_>>(), ["a.example"]);
    }
}
