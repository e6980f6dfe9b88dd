//! One `GetAuthorizationToken` call: the [`TokenFetcher`] seam and its aws-sdk-ecr implementation.
//!
//! Owns: building the SDK client for a registry (region, FIPS, dual-stack, profile, timeouts) and
//! decoding the token. Does not own: caching (see [`super::cache`]) or AWS credentials and request
//! signing (aws-config and aws-sdk-ecr).

use super::config::RegistrySettings;
use super::{EcrError, EcrHost};
use crate::secret::Secret;
use base64::Engine;
use std::time::Duration;

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
                    .unwrap_or_else(|| format!("https://{}", host.hostname())),
                username: user.to_owned(),
                password: Secret::new(pass),
                expires_at: data.expires_at().and_then(|d| u64::try_from(d.secs()).ok()),
            })
        })
    }
}
