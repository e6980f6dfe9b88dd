//! Every failure a proxied request can meet, and the one wire shape it takes.
//!
//! Owns: [`ErrorCode`] (the OCI distribution spec's error codes, plus the two the proxy adds),
//! [`ApiError`] (status + code + message + `Retry-After` + "upstream unavailable"), the typed
//! failure enums of the request path ([`UpstreamError`], [`CredentialError`], [`RealmError`]) and
//! the `From` conversions that map each into an [`ApiError`] — one place decides what a client is
//! told, in the manner of rustls' `From<&CertificateError> for AlertDescription`.
//!
//! Why one home: the status/code pairs used to be chosen at each call site; a new failure now has
//! to pass a `match` here, where the rules (401/403/404 passed on, 5xx → 502, unreachable → stale
//! may answer) are written once.
//!
//! Does not own: building the HTTP response ([`super::response::api_error`]) or start-up errors
//! (`ServerError` in [`super::server`]).

use super::policy::PolicyDenied;
use super::route::RouteError;
use super::store::ContentKind;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use std::sync::Arc;

/// The `code` of a spec error body (`{"errors":[{"code": …}]}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The blob is not known to the registry (or this repository).
    BlobUnknown,
    /// The digest of a request is malformed.
    DigestInvalid,
    /// The manifest is not known to the registry (or this repository).
    ManifestUnknown,
    /// A manifest (or its reference) is invalid, or did not hash to what it should.
    ManifestInvalid,
    /// A repository name is invalid.
    NameInvalid,
    /// The repository is not known to the registry.
    NameUnknown,
    /// Authentication is required (of our client, or by the upstream of us).
    Unauthorized,
    /// Access is refused (upstream 403, or the digest-pin policy).
    Denied,
    /// The operation is not supported by a pull-through proxy.
    Unsupported,
    /// The upstream's rate limit.
    TooManyRequests,
    /// Not a distribution API path (not a spec code; kept for the wire compatibility it has).
    NotFound,
    /// The upstream could not be asked (not a spec code).
    Unavailable,
    /// Anything else.
    Unknown,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

impl ErrorCode {
    /// The "not known" code for a kind of content.
    pub fn unknown(kind: ContentKind) -> ErrorCode {
        match kind {
            ContentKind::Manifest => ErrorCode::ManifestUnknown,
            ContentKind::Blob => ErrorCode::BlobUnknown,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client is told about a failure.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The upstream's `Retry-After`, passed on.
    pub retry_after: Option<HeaderValue>,
    /// The upstream looked unreachable (vs. answered with an error): a stale cache may answer.
    pub unavailable: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            unavailable: false,
        }
    }

    /// Maps an upstream's error status to what our client sees: 401/403/404/429 are passed on
    /// (a revoked or deleted image must not live on), anything else becomes 502.
    pub fn from_status(
        status: StatusCode,
        headers: &HeaderMap,
        not_found: ErrorCode,
        what: &str,
    ) -> ApiError {
        let (client_status, code) = match status.as_u16() {
            401 => (status, ErrorCode::Unauthorized),
            403 => (status, ErrorCode::Denied),
            404 => (status, not_found),
            429 => (status, ErrorCode::TooManyRequests),
            _ => (StatusCode::BAD_GATEWAY, ErrorCode::Unknown),
        };
        ApiError {
            status: client_status,
            code,
            message: format!("upstream answered {status} for {what}"),
            retry_after: headers.get(header::RETRY_AFTER).cloned(),
            unavailable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// Why a client sees a generic message: an upstream failure's detail is the resolver's or a
/// helper's output, a config path, a connect error naming an internal address — none of it is
/// the client's business (a helper printing its keyfile passphrase was once echoed to an
/// anonymous client). The detail goes to the log (helper output already redacted there); the
/// client gets the spec code and one sentence per kind.
impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> ApiError {
        let (status, code, message) = match &e {
            UpstreamError::RealmRefused { .. } => (
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unauthorized,
                "the upstream's token realm was refused by the proxy",
            ),
            UpstreamError::Token { .. } => (
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unauthorized,
                "the upstream's token server refused the proxy",
            ),
            UpstreamError::Credentials(_) => (
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unauthorized,
                "the proxy has no usable credentials for this upstream (see its log)",
            ),
            UpstreamError::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::Unknown,
                "the upstream did not answer in time",
            ),
            UpstreamError::Connect { .. } => (
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unknown,
                "the upstream could not be reached",
            ),
            UpstreamError::Protocol { .. } => (
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unknown,
                "the upstream's answer was not usable",
            ),
            UpstreamError::Body(_) => (
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unknown,
                "the upstream's answer broke off",
            ),
            UpstreamError::Redirect(_) => (
                StatusCode::BAD_GATEWAY,
                ErrorCode::Denied,
                "the upstream redirected outside what this proxy may reach",
            ),
        };
        tracing::warn!(error = %e, status = status.as_u16(), "upstream request failed");
        ApiError {
            unavailable: e.is_unavailable(),
            ..ApiError::new(status, code, message)
        }
    }
}

/// A failure inside the proxy (store I/O, a lost task): the detail (paths, OS errors) goes to
/// the log, the client gets 500 `UNKNOWN` and a generic message.
pub fn internal(detail: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %detail, "internal error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unknown,
        "internal error in the proxy (see its log)",
    )
}

impl From<&RouteError> for ApiError {
    fn from(e: &RouteError) -> ApiError {
        let (status, code) = match e {
            RouteError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            RouteError::NameInvalid(_) | RouteError::NsInvalid(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::NameInvalid)
            }
            RouteError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid),
            RouteError::ReferenceInvalid(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid)
            }
            RouteError::Denied(_) => (StatusCode::FORBIDDEN, ErrorCode::Denied),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<&PolicyDenied> for ApiError {
    fn from(e: &PolicyDenied) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, e.to_string())
    }
}

/// Why an upstream exchange failed (the `kind` label of `regauth_upstream_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// TCP connection refused or reset before an answer.
    Connect,
    /// The host name did not resolve.
    Dns,
    /// No answer in time.
    Timeout,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The upstream spoke, but not the protocol (bad redirect, oversized or broken body).
    Protocol,
    /// The upstream (or its token server) refused the credentials, or wants some.
    Unauthorized,
    /// The credential lookup failed (helper, config).
    Credentials,
    /// The token realm failed the trust boundary.
    Realm,
    /// A schema1 manifest was served (not supported).
    Schema1,
    /// A redirect pointed outside what the proxy may reach.
    Redirect,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Dns => "dns",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Unauthorized => "unauthorized",
            UpstreamErrorKind::Credentials => "credentials",
            UpstreamErrorKind::Realm => "realm",
            UpstreamErrorKind::Schema1 => "schema1",
            UpstreamErrorKind::Redirect => "redirect",
        }
    }

    /// Operator wording: "connection refused", "DNS lookup failed", …
    pub fn describe(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connection refused or reset",
            UpstreamErrorKind::Dns => "DNS lookup failed",
            UpstreamErrorKind::Timeout => "timed out",
            UpstreamErrorKind::Tls => "TLS handshake failed",
            UpstreamErrorKind::Protocol => "protocol error",
            UpstreamErrorKind::Unauthorized => "refused the credentials",
            UpstreamErrorKind::Credentials => "credential lookup failed",
            UpstreamErrorKind::Realm => "token realm refused",
            UpstreamErrorKind::Schema1 => "served a schema1 manifest (unsupported)",
            UpstreamErrorKind::Redirect => "redirected outside the proxy's reach",
        }
    }
}

/// Everything that can go wrong upstream. Messages name the host, never a secret. `Clone`, so
/// one token request's failure can answer every caller that waited on it
/// ([`super::upstream_auth`]).
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection (DNS, TCP, TLS); `kind` says which.
    #[error("upstream {host}: {why}")]
    Connect {
        host: String,
        why: String,
        kind: UpstreamErrorKind,
    },
    /// Connected, but no response headers in time.
    #[error("upstream {host}: no response headers within {secs} s")]
    Timeout { host: String, secs: u64 },
    /// The challenge named a token realm we will not send credentials to.
    #[error("upstream {upstream}: token realm refused: {why}")]
    RealmRefused { upstream: String, why: RealmError },
    /// The token server said no.
    #[error("token server {realm} answered {status}")]
    Token { realm: String, status: u16 },
    /// The upstream spoke, but not the protocol (bad redirect, oversized or malformed body).
    #[error("upstream protocol error: {what}")]
    Protocol { what: String },
    /// The resolver could not say which credential to use (shared: a resolver error holds I/O
    /// errors, which cannot be cloned).
    #[error("credentials: {0}")]
    Credentials(#[source] Arc<CredentialError>),
    /// A body broke off mid-transfer.
    #[error("upstream body: {0}")]
    Body(String),
    /// A redirect the reach rules refuse ([`super::reach::redirect_hop`]).
    #[error(transparent)]
    Redirect(super::reach::RedirectRefused),
}

impl UpstreamError {
    /// Errors where the upstream could not be reached or misbehaved (stale cache may answer).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::Timeout { .. } | UpstreamError::Body(_)
        )
    }
}

impl UpstreamError {
    /// The `kind` label and operator wording for this failure.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            UpstreamError::Connect { kind, .. } => *kind,
            UpstreamError::Timeout { .. } => UpstreamErrorKind::Timeout,
            UpstreamError::RealmRefused { .. } => UpstreamErrorKind::Realm,
            UpstreamError::Token {
                status: 401 | 403, ..
            } => UpstreamErrorKind::Unauthorized,
            UpstreamError::Token { .. }
            | UpstreamError::Protocol { .. }
            | UpstreamError::Body(_) => UpstreamErrorKind::Protocol,
            UpstreamError::Credentials(_) => UpstreamErrorKind::Credentials,
            UpstreamError::Redirect(_) => UpstreamErrorKind::Redirect,
        }
    }
}

impl From<CredentialError> for UpstreamError {
    fn from(e: CredentialError) -> UpstreamError {
        UpstreamError::Credentials(Arc::new(e))
    }
}

/// Why the resolver gave no answer for an upstream host.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The blocking lookup task was cancelled or panicked.
    #[error("credential lookup for {host} did not finish: {why}")]
    Unfinished { host: String, why: String },
    /// The resolver failed (a helper error, an unreadable config).
    #[error("credential lookup for {host}: {source}")]
    Lookup {
        host: String,
        #[source]
        source: crate::resolve::ResolveError,
    },
}

/// Why a token realm fails the trust boundary (see [`super::upstream_auth`]).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RealmError {
    #[error("realm {0:?} is not an absolute URL")]
    NotAbsolute(String),
    #[error("realm {0:?} is not http(s)")]
    NotHttp(String),
    #[error("realm {0:?} has no host")]
    NoHost(String),
    #[error(
        "token realm host {realm_host} differs from upstream host {upstream_host} (IP/localhost never match another host)"
    )]
    LiteralHost {
        realm_host: String,
        upstream_host: String,
    },
    #[error("token realm host {realm_host} is not on the upstream's domain {domain}")]
    OtherDomain { realm_host: String, domain: String },
}

/// `e: cause: cause` without secrets (hyper errors carry none).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_statuses_map_to_spec_codes() {
        let h = HeaderMap::new();
        let e = ApiError::from_status(StatusCode::NOT_FOUND, &h, ErrorCode::BlobUnknown, "b");
        assert_eq!(
            (e.status, e.code, e.unavailable),
            (StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, false)
        );
        let e = ApiError::from_status(
            StatusCode::SERVICE_UNAVAILABLE,
            &h,
            ErrorCode::BlobUnknown,
            "b",
        );
        assert_eq!(
            (e.status, e.code, e.unavailable),
            (StatusCode::BAD_GATEWAY, ErrorCode::Unknown, true)
        );
        let e = ApiError::from(&RouteError::DigestInvalid("x".into()));
        assert_eq!(e.code.as_str(), "DIGEST_INVALID");
    }

    #[test]
    fn upstream_detail_never_reaches_the_client() {
        let e = ApiError::from(UpstreamError::Connect {
            host: "10.0.0.7:2375".into(),
            why: "tcp connect error: Connection refused (os error 111)".into(),
            kind: UpstreamErrorKind::Connect,
        });
        assert!(!e.message.contains("10.0.0.7") && !e.message.contains("refused"));
        let e = ApiError::from(UpstreamError::Protocol {
            what: "/etc/regauth/secret.json".into(),
        });
        assert!(!e.message.contains("/etc"), "{}", e.message);
    }
}
