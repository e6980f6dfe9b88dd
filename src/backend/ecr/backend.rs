//! [`EcrBackend`]: the credential-helper [`Backend`] over the token cache and the fetcher.
//!
//! Owns: the lookup order (not ECR → not found; fresh cache hit; lock, re-check, fetch; stale
//! fallback) and the error policy (not-found unless `REGAUTH_ECR_STRICT`). Its warnings go through
//! `tracing` and are on by default (see [`crate::credhelper::logging`]), as ecr-login prints them.

use super::cache::{CacheEntry, TokenCache};
use super::config::{EcrConfig, EcrOptions, RegistrySettings};
use super::fetch::{SdkFetcher, TokenFetcher};
use super::{EcrError, parse_ecr_host};
use crate::config::locations::Env;
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The ECR backend.
pub struct EcrBackend<F = SdkFetcher> {
    opts: EcrOptions,
    fetcher: F,
}

impl EcrBackend<SdkFetcher> {
    /// The backend the helper binary uses.
    pub fn from_env(env: &Env) -> Result<Self, EcrError> {
        Ok(EcrBackend {
            opts: EcrOptions::from_env(env)?,
            fetcher: SdkFetcher,
        })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn login(e: &CacheEntry) -> Login {
    Login {
        username: e.username.clone(),
        secret: Secret::new(e.password.clone()),
    }
}

impl<F: TokenFetcher> EcrBackend<F> {
    pub fn with_fetcher(opts: EcrOptions, fetcher: F) -> Self {
        EcrBackend { opts, fetcher }
    }

    fn cache(&self) -> Option<TokenCache> {
        self.opts.cache_dir.clone().map(TokenCache::new)
    }

    /// The full lookup; `Ok(None)` = not an ECR registry we answer for.
    pub fn lookup(&self, server_url: &str) -> Result<Option<Login>, EcrError> {
        let Some(host) = parse_ecr_host(server_url) else {
            return Ok(None);
        };
        if host.public {
            return Ok(None);
        }
        let settings = match &self.opts.config_file {
            Some(p) => EcrConfig::load(p)?.for_host(server_url),
            None => RegistrySettings::default(),
        };
        let region = settings.region.as_deref().unwrap_or(&host.region);
        let key = format!(
            "{region}-{}-{}{}",
            host.registry_id,
            self.opts.identity(&settings),
            if host.fips { "-fips" } else { "" }
        );
        let max_age = self.opts.max_token_age;
        let Some(cache) = self.cache() else {
            let t = self.fetcher.fetch(&host, &settings)?;
            return Ok(Some(Login {
                username: t.username,
                secret: t.password,
            }));
        };
        if let Some(e) = cache.get(&key)
            && e.is_fresh(now_secs(), max_age)
        {
            return Ok(Some(login(&e)));
        }
        let _lock = match cache.lock() {
            Ok(l) => l,
            Err(e) => {
                // An unusable cache folder must not cost the user their credentials.
                tracing::warn!("ECR token cache unusable: {e}; fetching without the cache");
                let t = self.fetcher.fetch(&host, &settings)?;
                return Ok(Some(Login {
                    username: t.username,
                    secret: t.password,
                }));
            }
        };
        // Another process may have refreshed while we waited for the lock.
        let stale = cache.get(&key);
        if let Some(e) = &stale
            && e.is_fresh(now_secs(), max_age)
        {
            return Ok(Some(login(e)));
        }
        let fetched_at = now_secs();
        match self.fetcher.fetch(&host, &settings) {
            Ok(t) => {
                let entry = CacheEntry {
                    proxy_endpoint: t.proxy_endpoint,
                    username: t.username,
                    password: t.password.into_inner(),
                    fetched_at,
                    expires_at: t.expires_at,
                };
                if let Err(e) = cache.put_locked(&key, entry.clone()) {
                    tracing::warn!("ECR token cache not written: {e}");
                }
                Ok(Some(login(&entry)))
            }
            Err(err) => match stale {
                Some(e) => {
                    tracing::warn!(
                        "{err}; using the cached token from {} s ago",
                        now_secs().saturating_sub(e.fetched_at)
                    );
                    Ok(Some(login(&e)))
                }
                None => Err(err),
            },
        }
    }

    fn read_only(&self) -> Result<(), BackendError> {
        if self.opts.ignore_storage {
            tracing::warn!("ignoring store/erase (AWS_ECR_IGNORE_CREDS_STORAGE=true)");
            Ok(())
        } else {
            Err(BackendError::Other(
                "not implemented: docker-credential-ecr mints ECR tokens and stores nothing; \
                 set AWS_ECR_IGNORE_CREDS_STORAGE=true to make store/erase no-ops"
                    .into(),
            ))
        }
    }
}

impl<F: TokenFetcher> Backend for EcrBackend<F> {
    fn get(&self, server_url: &str) -> Result<Login, BackendError> {
        match self.lookup(server_url) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err(BackendError::NotFound),
            Err(e) if self.opts.strict => Err(BackendError::Other(e.to_string())),
            Err(e) => {
                tracing::warn!("{e} (answering not-found; REGAUTH_ECR_STRICT=1 reports it)");
                Err(BackendError::NotFound)
            }
        }
    }

    fn store(&self, _creds: &Credentials) -> Result<(), BackendError> {
        self.read_only()
    }

    fn erase(&self, _server_url: &str) -> Result<(), BackendError> {
        self.read_only()
    }

    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        Ok(self
            .cache()
            .map(|c| c.entries())
            .unwrap_or_default()
            .into_values()
            .map(|e| (e.proxy_endpoint, e.username))
            .collect())
    }
}
