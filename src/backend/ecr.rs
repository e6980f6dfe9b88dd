//! The AWS ECR backend (`docker-credential-ecr`): registry tokens from `GetAuthorizationToken`,
//! with a shared on-disk cache.
//!
//! Owns: recognising ECR hosts ([`parse_ecr_host`], the same language as amazon-ecr-credential-
//! helper's regex, written without a regex engine), per-registry AWS profile/region mapping
//! (`ecr.json` in the regauth config folder), the token cache, and the error policy.
//!
//! Does not own: AWS credentials or request signing (aws-config's standard chain — environment,
//! shared config/credentials profiles incl. `role_arn`, web identity, ECS, IMDSv2 — and aws-sdk-ecr
//! do that; `AWS_ENDPOINT_URL` is read by the SDK), nor the helper protocol.
//!
//! ## Behaviour
//! * `get` for a host that is not ECR → not found, without touching AWS.
//! * Errors (no credentials, API failure, bad `ecr.json`) are printed on stderr and answered with
//!   the not-found sentinel, like ecr-login, so docker falls back to an anonymous pull. With
//!   `REGAUTH_ECR_STRICT=1` they are reported as errors instead.
//! * `store`/`erase` → `not implemented` error, unless `AWS_ECR_IGNORE_CREDS_STORAGE=true`
//!   (then a no-op, as in ecr-login ≥ 0.9).
//! * `list` → every cached registry (`{"https://<id>.dkr.ecr.<region>.amazonaws.com":"AWS"}`).
//! * ECR Public (`public.ecr.aws`) is recognised but answered with not-found: its pulls work
//!   anonymously, and minting its tokens needs the separate ecr-public API.
//!
//! ## Cache
//! `$REGAUTH_ECR_CACHE_DIR`, else `<regauth cache dir>/ecr`: `cache.json` (0600, written with
//! [`crate::fsutil::write_atomic`]) plus `cache.lock`. A token is served from the cache while less
//! than **half** of its lifetime has passed (ecr-login's rule). Lifetime = `expiresAt − fetched`,
//! capped at `REGAUTH_ECR_MAX_TOKEN_AGE` seconds (default 12 h); when `expiresAt` is missing or
//! already past (moto always answers 2015-01-01), the cap is the lifetime. When a refresh fails, a
//! cached token is returned anyway (stale fallback) with a warning on stderr.
//! Refreshes take [`crate::fsutil::lock_exclusive`] on `cache.lock` and re-read the cache under
//! it, so N concurrent cold `get`s make one API call, not N. `AWS_ECR_DISABLE_CACHE` (any value)
//! turns the cache off.
//!
//! **Cache key** = `<region>-<registry id>-<identity>`, where identity is a SHA-256 (truncated)
//! of *who is asking*, known before any credential is resolved: `AWS_ROLE_ARN` (web identity), else
//! the AWS profile (from `ecr.json` or `AWS_PROFILE`, together with `AWS_CONFIG_FILE` /
//! `AWS_SHARED_CREDENTIALS_FILE`), else `AWS_ACCESS_KEY_ID`, else "the default chain" (instance or
//! task role). ecr-login keys by the resolved access key id, which for assumed roles is a fresh
//! temporary key on every run, so its cache never hits (ecr-login #269). Keying by the role/profile
//! hits across runs, and a cache hit costs no credential resolution at all (no STS call, no IMDS
//! probe). Different roles or accounts never share an entry.

use crate::config::locations::{Env, regauth_cache_dir, regauth_config_dir};
use crate::credhelper::{Backend, BackendError, Credentials, Login};
use crate::secret::Secret;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Username ECR tokens decode to.
pub const ECR_USERNAME: &str = "AWS";
/// Default and maximum cached-token lifetime.
pub const DEFAULT_MAX_TOKEN_AGE: u64 = 12 * 3600;
const CACHE_FILE: &str = "cache.json";
const LOCK_FILE: &str = "cache.lock";
const CACHE_VERSION: u32 = 1;

/// An ECR registry host, as [`parse_ecr_host`] understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrHost {
    /// The 12-digit account id (empty for ECR Public).
    pub registry_id: String,
    /// The AWS region (`us-east-1` for ECR Public).
    pub region: String,
    /// A `-fips` endpoint.
    pub fips: bool,
    /// A dual-stack (`dkr-ecr….on.aws`) endpoint.
    pub dual_stack: bool,
    /// ECR Public (`public.ecr.aws`, `ecr-public.aws.com`).
    pub public: bool,
}

/// Recognises an ECR registry in a server URL or host with the one matcher the router uses too
/// ([`super::ecr_host::parse_ecr_host`], ecr-login's language), and adds what the API call needs.
pub fn parse_ecr_host(server: &str) -> Option<EcrHost> {
    Some(match super::ecr_host::parse_ecr_host(server)? {
        super::ecr_host::EcrHost::Public => EcrHost {
            registry_id: String::new(),
            region: "us-east-1".into(),
            fips: false,
            dual_stack: server.contains(super::ecr_host::ECR_PUBLIC_DUAL_STACK_HOST),
            public: true,
        },
        super::ecr_host::EcrHost::Private {
            account_id,
            region,
            fips,
            domain,
        } => EcrHost {
            registry_id: account_id,
            region,
            fips,
            dual_stack: domain.starts_with("on."),
            public: false,
        },
    })
}

/// The hostname part of a server URL (no scheme, port, or path), lowercased.
fn hostname(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or("").to_ascii_lowercase()
}

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

    /// Settings for a registry host (matched on the hostname, case-insensitively, port ignored).
    pub fn for_host(&self, server: &str) -> RegistrySettings {
        let want = hostname(server);
        let want = want.split(':').next().unwrap_or("");
        self.registries
            .iter()
            .find(|(k, _)| {
                let k = hostname(k);
                k.split(':').next() == Some(want)
            })
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// ECR backend failures. None of them contains a token.
#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error("{}: {detail}", path.display())]
    Config { path: PathBuf, detail: String },
    #[error("ECR token cache {}: {detail}", path.display())]
    Cache { path: PathBuf, detail: String },
    #[error("ECR GetAuthorizationToken for {host} (region {region}): {detail}")]
    Api {
        host: String,
        region: String,
        detail: String,
    },
    #[error("{0}")]
    Other(String),
}

/// One cached token.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    pub proxy_endpoint: String,
    pub username: String,
    pub password: String,
    /// Unix seconds when the token was fetched.
    pub fetched_at: u64,
    /// Unix seconds of the API's `expiresAt`, if it sent one.
    pub expires_at: Option<u64>,
}

impl CacheEntry {
    /// The lifetime used for the half-life rule.
    fn lifetime(&self, max_age: u64) -> u64 {
        match self.expires_at {
            Some(e) if e > self.fetched_at => (e - self.fetched_at).min(max_age),
            _ => max_age,
        }
    }

    /// True while less than half the lifetime has passed.
    pub fn is_fresh(&self, now: u64, max_age: u64) -> bool {
        now >= self.fetched_at && now - self.fetched_at < self.lifetime(max_age) / 2
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    version: u32,
    entries: BTreeMap<String, CacheEntry>,
}

/// The on-disk token cache.
pub struct TokenCache {
    dir: PathBuf,
}

impl TokenCache {
    pub fn new(dir: PathBuf) -> Self {
        TokenCache { dir }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(CACHE_FILE)
    }

    fn err(&self, path: PathBuf, e: impl std::fmt::Display) -> EcrError {
        EcrError::Cache {
            path,
            detail: e.to_string(),
        }
    }

    /// All entries; a missing, unreadable-as-JSON or other-version file reads as empty (it is a
    /// cache: the next write replaces it).
    fn read(&self) -> BTreeMap<String, CacheEntry> {
        let Ok(bytes) = std::fs::read(self.file()) else {
            return BTreeMap::new();
        };
        match serde_json::from_slice::<CacheFile>(&bytes) {
            Ok(f) if f.version == CACHE_VERSION => f.entries,
            _ => BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<CacheEntry> {
        self.read().remove(key)
    }

    pub fn entries(&self) -> BTreeMap<String, CacheEntry> {
        self.read()
    }

    /// Holds the cache's exclusive lock until dropped.
    fn lock(&self) -> Result<std::fs::File, EcrError> {
        crate::fsutil::ensure_private_dir(&self.dir).map_err(|e| self.err(self.dir.clone(), e))?;
        let p = self.dir.join(LOCK_FILE);
        crate::fsutil::lock_exclusive(&p).map_err(|e| self.err(p, e))
    }

    /// Inserts an entry. The caller holds [`Self::lock`].
    fn put_locked(&self, key: &str, entry: CacheEntry) -> Result<(), EcrError> {
        let mut entries = self.read();
        entries.insert(key.to_owned(), entry);
        let f = CacheFile {
            version: CACHE_VERSION,
            entries,
        };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| self.err(self.file(), e))?;
        crate::fsutil::write_atomic(&self.file(), &bytes, 0o600)
            .map_err(|e| self.err(self.file(), e))
    }
}

/// A fetched token.
#[derive(Clone, Debug)]
pub struct Token {
    pub proxy_endpoint: String,
    pub username: String,
    pub password: Secret,
    pub expires_at: Option<u64>,
}

/// What the backend needs from AWS: one `GetAuthorizationToken`. The real one is [`SdkFetcher`].
pub trait TokenFetcher {
    fn fetch(&self, host: &EcrHost, settings: &RegistrySettings) -> Result<Token, EcrError>;
}

/// [`TokenFetcher`] through aws-config + aws-sdk-ecr.
pub struct SdkFetcher;

impl TokenFetcher for SdkFetcher {
    fn fetch(&self, host: &EcrHost, settings: &RegistrySettings) -> Result<Token, EcrError> {
        let region = settings
            .region
            .clone()
            .unwrap_or_else(|| host.region.clone());
        let api_err = |detail: String| EcrError::Api {
            host: if host.public {
                "ECR Public".into()
            } else {
                format!("registry {}", host.registry_id)
            },
            region: region.clone(),
            detail,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EcrError::Other(format!("starting the async runtime: {e}")))?;
        rt.block_on(async {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region.clone()))
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_timeout(Duration::from_secs(30))
                        .build(),
                );
            if host.fips {
                loader = loader.use_fips(true);
            }
            if host.dual_stack {
                loader = loader.use_dual_stack(true);
            }
            if let Some(p) = &settings.profile {
                loader = loader.profile_name(p);
            }
            let conf = loader.load().await;
            let client = aws_sdk_ecr::Client::new(&conf);
            // `registryIds` is deprecated (the token works for every registry the principal may
            // use) but it makes the answer's proxy endpoint name the registry asked for, as
            // ecr-login does.
            #[allow(deprecated)]
            let out = client
                .get_authorization_token()
                .registry_ids(host.registry_id.clone())
                .send()
                .await
                .map_err(|e| api_err(aws_sdk_ecr::error::DisplayErrorContext(&e).to_string()))?;
            let data = out
                .authorization_data()
                .first()
                .ok_or_else(|| api_err("the answer holds no authorization data".into()))?;
            let token = data
                .authorization_token()
                .ok_or_else(|| api_err("the answer holds no token".into()))?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .map_err(|_| api_err("the token is not base64".into()))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| api_err("the decoded token is not UTF-8".into()))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| api_err("the decoded token has no user:password form".into()))?;
            Ok(Token {
                proxy_endpoint: data
                    .proxy_endpoint()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("https://{}", hostname_of(host))),
                username: user.to_owned(),
                password: Secret::new(pass),
                expires_at: data.expires_at().and_then(|d| u64::try_from(d.secs()).ok()),
            })
        })
    }
}

fn hostname_of(h: &EcrHost) -> String {
    format!("{}.dkr.ecr.{}.amazonaws.com", h.registry_id, h.region)
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
                eprintln!("docker-credential-ecr: warning: {e}; fetching without the cache");
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
                    eprintln!("docker-credential-ecr: warning: {e}");
                }
                Ok(Some(login(&entry)))
            }
            Err(err) => match stale {
                Some(e) => {
                    eprintln!(
                        "docker-credential-ecr: warning: {err}; using the cached token from {} s ago",
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
            eprintln!(
                "docker-credential-ecr: ignoring store/erase (AWS_ECR_IGNORE_CREDS_STORAGE=true)"
            );
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
                eprintln!(
                    "docker-credential-ecr: {e} (answering not-found; REGAUTH_ECR_STRICT=1 reports it)"
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn ecr_login_positive_hosts() {
        let cases: &[(&str, &str, &str, bool)] = &[
            (
                "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/blah/blah",
                "123456789012",
                "us-east-1",
                false,
            ),
            (
                "123456789012.dkr.ecr.us-west-2.amazonaws.com",
                "123456789012",
                "us-west-2",
                false,
            ),
            (
                "123456789012.dkr-ecr.us-west-2.on.aws",
                "123456789012",
                "us-west-2",
                false,
            ),
            (
                "123456789012.dkr-ecr-fips.us-west-2.on.aws",
                "123456789012",
                "us-west-2",
                true,
            ),
            (
                "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/foo",
                "210987654321",
                "cn-north-1",
                false,
            ),
            (
                "210987654321.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
                "210987654321",
                "cn-north-1",
                false,
            ),
            (
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
                "123456789012",
                "us-iso-east-1",
                false,
            ),
            (
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
                "123456789012",
                "us-isob-east-1",
                false,
            ),
            (
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
                "123456789012",
                "eu-isoe-west-1",
                false,
            ),
            (
                "123456789012.dkr.ecr.us-isof-east-1.csp.hci.ic.gov",
                "123456789012",
                "us-isof-east-1",
                false,
            ),
            (
                "123456789012.dkr-ecr.us-gov-east-1.on.aws",
                "123456789012",
                "us-gov-east-1",
                false,
            ),
            (
                "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
                "123456789012",
                "us-gov-west-1",
                true,
            ),
            (
                "123456789012.dkr-ecr-fips.us-gov-east-1.on.aws",
                "123456789012",
                "us-gov-east-1",
                true,
            ),
            (
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
                "123456789012",
                "eusc-de-east-1",
                false,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
                "123456789012",
                "us-east-1",
                false,
            ),
        ];
        for (input, id, region, fips) in cases {
            let h = parse_ecr_host(input).unwrap_or_else(|| panic!("{input} should match"));
            assert_eq!(
                (&*h.registry_id, &*h.region, h.fips, h.public),
                (*id, *region, *fips, false),
                "{input}"
            );
        }
        assert!(
            parse_ecr_host("123456789012.dkr-ecr.us-west-2.on.aws")
                .unwrap()
                .dual_stack
        );
        for p in [
            "public.ecr.aws",
            "https://public.ecr.aws/foo",
            "ecr-public.aws.com",
            "https://ecr-public.aws.com",
        ] {
            assert!(parse_ecr_host(p).unwrap().public, "{p}");
        }
    }

    #[test]
    fn ecr_login_negative_hosts() {
        for n in [
            ".dkr.ecr.not-real.amazonaws.com",
            "not.ecr.io",
            "https://123456789012.dkr.ecr.us-west-2.amazonaws.com.fake.example.com",
            "https://123456789012.dkr.ecr.us-west-2.amazonaws.com.fake.example.com/v2/foo",
            "123456789012.dkr.ecr-fips.us-west-2.amazonaws.com.fake.example.com",
            "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn.fake.example.com.cn",
            "210987654321.dkr.ecr.cn-north-1.on.aws.com.cn",
            "public.ecr.aws.fake.example.com",
            "https://public.ecr.aws.fake.example.com",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.-bad.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.dkrxecr.us-east-1.amazonaws.com",
            "",
        ] {
            assert_eq!(parse_ecr_host(n), None, "{n}");
        }
    }

    #[test]
    fn half_life_and_max_age() {
        let e = CacheEntry {
            proxy_endpoint: "x".into(),
            username: "AWS".into(),
            password: "p".into(),
            fetched_at: 1000,
            expires_at: Some(1000 + 100),
        };
        assert!(e.is_fresh(1049, 10_000));
        assert!(!e.is_fresh(1050, 10_000));
        // Past expiry (moto's 2015): the max age is the lifetime.
        let past = CacheEntry {
            expires_at: Some(10),
            ..e.clone()
        };
        assert!(past.is_fresh(1000 + 299, 600));
        assert!(!past.is_fresh(1000 + 300, 600));
        let none = CacheEntry {
            expires_at: None,
            ..e.clone()
        };
        assert!(!none.is_fresh(1000, 0));
        // Clock went backwards: refresh.
        assert!(!e.is_fresh(999, 10_000));
    }

    struct Counting<'a> {
        calls: &'a Cell<usize>,
        fail: bool,
    }
    impl TokenFetcher for Counting<'_> {
        fn fetch(&self, h: &EcrHost, _: &RegistrySettings) -> Result<Token, EcrError> {
            self.calls.set(self.calls.get() + 1);
            if self.fail {
                return Err(EcrError::Api {
                    host: h.registry_id.clone(),
                    region: h.region.clone(),
                    detail: "down".into(),
                });
            }
            Ok(Token {
                proxy_endpoint: format!("https://{}", hostname_of(h)),
                username: "AWS".into(),
                password: Secret::new(format!("tok{}", self.calls.get())),
                expires_at: None,
            })
        }
    }

    fn opts(dir: &Path, extra: &[(&str, &str)]) -> EcrOptions {
        let mut env = Env::from_pairs([
            ("REGAUTH_ECR_CACHE_DIR", dir.join("c").to_str().unwrap()),
            ("REGAUTH_CONFIG_DIR", dir.to_str().unwrap()),
        ]);
        for (k, v) in extra {
            env.set(k, *v);
        }
        EcrOptions::from_env(&env).unwrap()
    }

    #[test]
    fn cache_hits_then_stale_fallback_and_strictness() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Cell::new(0);
        let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let b = EcrBackend::with_fetcher(
            opts(dir.path(), &[]),
            Counting {
                calls: &calls,
                fail: false,
            },
        );
        assert_eq!(b.get(host).unwrap().secret.expose(), "tok1");
        assert_eq!(
            b.get(&format!("https://{host}/v2/"))
                .unwrap()
                .secret
                .expose(),
            "tok1"
        );
        assert_eq!(calls.get(), 1);
        assert!(matches!(
            b.get("registry.example.com"),
            Err(BackendError::NotFound)
        ));
        assert_eq!(calls.get(), 1, "non-ECR hosts never reach AWS");
        assert_eq!(
            b.list().unwrap(),
            BTreeMap::from([(format!("https://{host}"), "AWS".to_owned())])
        );
        // Expired (max age 0) + failing API → the stale token.
        let b0 = EcrBackend::with_fetcher(
            opts(dir.path(), &[("REGAUTH_ECR_MAX_TOKEN_AGE", "0")]),
            Counting {
                calls: &calls,
                fail: true,
            },
        );
        assert_eq!(b0.get(host).unwrap().secret.expose(), "tok1");
        assert_eq!(calls.get(), 2);
        // Nothing cached + failing API: not found, or an error when strict.
        let other = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
        assert!(matches!(b0.get(other), Err(BackendError::NotFound)));
        let strict = EcrBackend::with_fetcher(
            opts(dir.path(), &[("REGAUTH_ECR_STRICT", "1")]),
            Counting {
                calls: &calls,
                fail: true,
            },
        );
        let e = strict.get(other).unwrap_err().to_string();
        assert!(e.contains("210987654321") && e.contains("down"), "{e}");
    }

    #[test]
    fn profile_mapping_and_identity_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ecr.json"),
            r#"{"registries":{"123456789012.dkr.ecr.us-east-1.amazonaws.com":{"profile":"prod","region":"us-east-2"}}}"#,
        )
        .unwrap();
        let o = opts(dir.path(), &[("AWS_ACCESS_KEY_ID", "ASIATEMP1")]);
        let cfg = EcrConfig::load(o.config_file.as_ref().unwrap()).unwrap();
        let s = cfg.for_host("https://123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/");
        assert_eq!(
            s,
            RegistrySettings {
                profile: Some("prod".into()),
                region: Some("us-east-2".into())
            }
        );
        // The profile, not the (temporary) key, decides the identity.
        let o2 = opts(dir.path(), &[("AWS_ACCESS_KEY_ID", "ASIATEMP2")]);
        assert_eq!(o.identity(&s), o2.identity(&s));
        assert_ne!(
            o.identity(&RegistrySettings::default()),
            o2.identity(&RegistrySettings::default())
        );
        let role1 = opts(
            dir.path(),
            &[
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/a"),
                ("AWS_ACCESS_KEY_ID", "X"),
            ],
        );
        let role2 = opts(
            dir.path(),
            &[
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/a"),
                ("AWS_ACCESS_KEY_ID", "Y"),
            ],
        );
        assert_eq!(role1.identity(&s), role2.identity(&s));
        std::fs::write(
            dir.path().join("ecr.json"),
            r#"{"registries":{"h":{"profil":"x"}}}"#,
        )
        .unwrap();
        let e = EcrConfig::load(&dir.path().join("ecr.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ecr.json") && e.contains("profil"), "{e}");
    }

    #[test]
    fn store_and_erase_are_read_only_unless_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Cell::new(0);
        let c = Credentials {
            server_url: "x".into(),
            username: "u".into(),
            secret: Secret::new("s"),
        };
        let b = EcrBackend::with_fetcher(
            opts(dir.path(), &[]),
            Counting {
                calls: &calls,
                fail: false,
            },
        );
        assert!(
            b.store(&c)
                .unwrap_err()
                .to_string()
                .starts_with("not implemented")
        );
        assert!(b.erase("x").is_err());
        let b = EcrBackend::with_fetcher(
            opts(dir.path(), &[("AWS_ECR_IGNORE_CREDS_STORAGE", "true")]),
            Counting {
                calls: &calls,
                fail: false,
            },
        );
        b.store(&c).unwrap();
        b.erase("x").unwrap();
    }
}
