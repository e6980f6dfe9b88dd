//! Where configs live, and the process environment they are read from.
//!
//! Owns: [`Env`], a snapshot of environment variables that every reader takes instead of calling
//! `std::env` itself (so tests and the proxy can hand in their own); the docker CLI's and GitLab
//! Runner's config-file locations; and regauth's own folders — one rule for every regauth binary:
//! `$REGAUTH_CONFIG_DIR`, else `$XDG_CONFIG_HOME/regauth`, else `~/.config/regauth` (and the same
//! shape under `XDG_CACHE_HOME`/`~/.cache` for the proxy cache).
//!
//! Does not own: parsing (see [`super`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A snapshot of environment variables. Its `Debug` lists variable *names* only: values include
/// passwords (`CI_REGISTRY_PASSWORD`, `REGAUTH_*_PASSWORD`, `DOCKER_AUTH_CONFIG`).
#[derive(Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Env {
    /// The current process's environment (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Env {
        Env(std::env::vars().collect())
    }

    /// An environment made of exactly these pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    /// A variable's value; unset and empty are both `None`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Sets a variable (used by tests and by `--config-dir`).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_owned(), value.into());
    }

    /// Removes a variable.
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// All variables, for backends that scan by prefix.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `$HOME`.
    pub fn home(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from)
    }
}

/// The docker CLI's config folder: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn docker_config_dir(env: &Env) -> Option<PathBuf> {
    env.get("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env.home().map(|h| h.join(".docker")))
}

/// The legacy `~/.dockercfg`.
pub fn legacy_dockercfg(env: &Env) -> Option<PathBuf> {
    env.home().map(|h| h.join(".dockercfg"))
}

/// regauth's config folder (see the module docs for the rule).
pub fn regauth_config_dir(env: &Env) -> Option<PathBuf> {
    env.get("REGAUTH_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            env.get("XDG_CONFIG_HOME")
                .map(|d| PathBuf::from(d).join("regauth"))
        })
        .or_else(|| env.home().map(|h| h.join(".config").join("regauth")))
}

/// regauth's cache folder: `$XDG_CACHE_HOME/regauth`, else `~/.cache/regauth`.
pub fn regauth_cache_dir(env: &Env) -> Option<PathBuf> {
    env.get("XDG_CACHE_HOME")
        .map(|d| PathBuf::from(d).join("regauth"))
        .or_else(|| env.home().map(|h| h.join(".cache").join("regauth")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_rules() {
        let env = Env::from_pairs([("HOME", "/h")]);
        assert_eq!(
            docker_config_dir(&env).unwrap(),
            PathBuf::from("/h/.docker")
        );
        assert_eq!(
            regauth_config_dir(&env).unwrap(),
            PathBuf::from("/h/.config/regauth")
        );
        let env = Env::from_pairs([
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/x"),
            ("DOCKER_CONFIG", "/d"),
        ]);
        assert_eq!(docker_config_dir(&env).unwrap(), PathBuf::from("/d"));
        assert_eq!(
            regauth_config_dir(&env).unwrap(),
            PathBuf::from("/x/regauth")
        );
        let env = Env::from_pairs([
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/x"),
            ("REGAUTH_CONFIG_DIR", "/r"),
        ]);
        assert_eq!(regauth_config_dir(&env).unwrap(), PathBuf::from("/r"));
        assert_eq!(Env::from_pairs([("A", "")]).get("A"), None);
        let dbg = format!(
            "{:?}",
            Env::from_pairs([("CI_REGISTRY_PASSWORD", "hunter2")])
        );
        assert!(
            dbg.contains("CI_REGISTRY_PASSWORD") && !dbg.contains("hunter2"),
            "{dbg}"
        );
    }
}
