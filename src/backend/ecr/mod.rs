//! The AWS ECR backend (`docker-credential-ecr`): registry tokens from `GetAuthorizationToken`,
//! with a shared on-disk cache.
//!
//! Owns: the one ECR host model ([`host`]: [`EcrHost`] / [`parse_ecr_host`], the same language as
//! amazon-ecr-credential-helper's regex, written without a regex engine; always built, the router
//! uses it too) and, with the `ecr` feature, per-registry AWS profile/region mapping
//! (`ecr.json`, [`config`]), the token cache ([`cache`]), the API call ([`fetch`]) and the
//! backend with its error policy ([`backend`]).
//!
//! Does not own: AWS credentials or request signing (aws-config's standard chain — environment,
//! shared config/credentials profiles incl. `role_arn`, web identity, ECS, IMDSv2 — and aws-sdk-ecr
//! do that; `AWS_ENDPOINT_URL` is read by the SDK), nor the helper protocol.
//!
//! ## Behaviour
//! * `get` for a host that is not ECR → not found, without touching AWS.
//! * Errors (no credentials, API failure, bad `ecr.json`) are logged on stderr and answered with
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

pub mod host;

pub use host::{EcrHost, is_ecr_host, parse_ecr_host};

#[cfg(feature = "ecr")]
pub mod backend;
#[cfg(feature = "ecr")]
pub mod cache;
#[cfg(feature = "ecr")]
pub mod config;
#[cfg(feature = "ecr")]
pub mod fetch;

#[cfg(feature = "ecr")]
pub use backend::EcrBackend;
#[cfg(feature = "ecr")]
pub use cache::{CacheEntry, TokenCache};
#[cfg(feature = "ecr")]
pub use config::{EcrConfig, EcrOptions, RegistrySettings};
#[cfg(feature = "ecr")]
pub use fetch::{SdkFetcher, Token, TokenFetcher};

#[cfg(feature = "ecr")]
use std::path::PathBuf;

#[cfg(feature = "ecr")]
/// Username ECR tokens decode to.
pub const ECR_USERNAME: &str = "AWS";
#[cfg(feature = "ecr")]
/// Default and maximum cached-token lifetime.
pub const DEFAULT_MAX_TOKEN_AGE: u64 = 12 * 3600;
#[cfg(feature = "ecr")]
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

#[cfg(test)]
mod host_tests;
#[cfg(all(test, feature = "ecr"))]
mod tests;
