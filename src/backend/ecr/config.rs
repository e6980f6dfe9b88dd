//! `ecr.json` (per-registry AWS profile and region) and the settings read from the environment.
//!
//! Owns: [`EcrConfig`], [`RegistrySettings`], [`EcrOptions`] and the cache-key identity (who is
//! asking; see [`super`]). Does not own: AWS credentials themselves (aws-config's chain).

use super::{DEFAULT_MAX_TOKEN_AGE, EcrError};
use crate::config::keys::{host_name, registry_host};
use crate::config::locations::{Env, regauth_cache_dir, regauth_config_dir};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Per-registry AWS settings from `ecr.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    pub profile: Option<String>,
    pub region: Option<String>,
}

/// `ecr.json`: `{"registries":{"<id>.dkr.ecr.<region>.amazonaws.com":{"profile":"x","region":"y"}}}`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcrConfig {
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
}

impl EcrConfig {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<EcrConfig, EcrError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| EcrError::Config {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EcrConfig::default()),
            Err(e) => Err(EcrError::Config {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
        }
    }

    /// Settings for a registry host (matched on the host name, case-insensitively, port ignored).
    pub fn for_host(&self, server: &str) -> RegistrySettings {
        let want = registry_host(server);
        self.registries
            .iter()
            .find(|(k, _)| host_name(&registry_host(k)) == host_name(&want))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// Settings read from the environment once per process.
#[derive(Clone, Debug)]
pub struct EcrOptions {
    pub strict: bool,
    pub ignore_storage: bool,
    /// `None` = cache disabled.
    pub cache_dir: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub max_token_age: u64,
    pub env: Env,
}

impl EcrOptions {
    pub fn from_env(env: &Env) -> Result<EcrOptions, EcrError> {
        let max_token_age = match env.get("REGAUTH_ECR_MAX_TOKEN_AGE") {
            None => DEFAULT_MAX_TOKEN_AGE,
            Some(v) => v.parse::<u64>().map_err(|_| {
                EcrError::Other(format!(
                    "invalid REGAUTH_ECR_MAX_TOKEN_AGE={v:?}: expected whole seconds"
                ))
            })?,
        };
        let cache_dir = if env.get("AWS_ECR_DISABLE_CACHE").is_some() {
            None
        } else {
            env.get("REGAUTH_ECR_CACHE_DIR")
                .map(PathBuf::from)
                .or_else(|| regauth_cache_dir(env).map(|d| d.join("ecr")))
        };
        Ok(EcrOptions {
            strict: matches!(env.get("REGAUTH_ECR_STRICT"), Some("1" | "true")),
            ignore_storage: env.get("AWS_ECR_IGNORE_CREDS_STORAGE") == Some("true"),
            cache_dir,
            config_file: regauth_config_dir(env).map(|d| d.join("ecr.json")),
            max_token_age,
            env: env.clone(),
        })
    }

    /// The cache-key identity (see the module docs); hashed, so no key id appears on disk.
    pub fn identity(&self, settings: &RegistrySettings) -> String {
        let e = &self.env;
        let who = if let Some(role) = e.get("AWS_ROLE_ARN") {
            format!("role:{role}")
        } else if let Some(p) = settings.profile.as_deref().or_else(|| e.get("AWS_PROFILE")) {
            format!(
                "profile:{p}:{}:{}",
                e.get("AWS_CONFIG_FILE").unwrap_or(""),
                e.get("AWS_SHARED_CREDENTIALS_FILE").unwrap_or("")
            )
        } else if let Some(k) = e.get("AWS_ACCESS_KEY_ID") {
            format!("key:{k}")
        } else {
            "default-chain".to_owned()
        };
        let digest = Sha256::digest(who.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}
