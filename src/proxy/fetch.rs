//! Talking to upstreams over plain HTTP (the bottom layer).
//!
//! Owns: the pooled upstream client (hyper-util `client-legacy` + `hyper-rustls`, aws-lc-rs,
//! webpki roots plus the system's native roots), timeouts, following redirects, and reading
//! bounded bodies. It sends whatever `Authorization` it is handed and knows nothing of where that
//! came from: auth sits above it (`upstream_auth` → `upstream`), never the reverse.
//!
//! Why redirects are followed by hand: registries send blobs to a CDN or object store by
//! redirect (Docker Hub → Cloudflare/CloudFront, distribution → S3). The spec says clients MUST NOT
//! forward `Authorization` across host boundaries; we drop it as soon as the scheme, host or port
//! differs from the original request's, and never add it back on a later hop. And a redirect is
//! the one way an allowed upstream can point the proxy at a host nobody allowed, so each hop passes
//! [`reach::redirect_hop`] (https only off the upstream's host, no internal addresses, names
//! checked after DNS) — the cloud-metadata-through-a-redirect pattern ends here.
//!
//! Does not own: credentials, challenges, tokens or the 401 retry (the modules above it), deciding
//! what a body must hash to ([`super::verify`]) or storing it ([`super::cache`]).

use super::error::{UpstreamError, UpstreamErrorKind, error_chain};
use super::reach::{self, GuardedResolver, Hop};
use crate::secret::Secret;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for response headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;
/// Largest token response / error body read into memory.
const SMALL_BODY_LIMIT: usize = 1 << 20;

/// Why the upstream HTTP client could not be built (a bad `--upstream-ca`).
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("reading CA file {}: {source}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {}: {source}", path.display())]
    CaEntry {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {}: {source}", path.display())]
    CaCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[source] rustls::Error),
}

/// What kind of failure a client error is, from its typed causes: a `rustls::Error` is TLS, an
/// `io::Error` says refused/reset or timed out. hyper-util's resolver error has no type of its
/// own, only its `dns error` message, so that one is recognised by the message.
fn connect_kind(e: &(dyn std::error::Error + 'static)) -> UpstreamErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return UpstreamErrorKind::Tls;
        }
        if c.to_string().starts_with("dns error") {
            return UpstreamErrorKind::Dns;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some(k) = io_kind(io)
        {
            return k;
        }
        cur = c.source();
    }
    UpstreamErrorKind::Connect
}

/// An `io::Error`'s kind, looking inside wrapped ones: hyper-rustls wraps tokio-rustls'
/// `io::Error(InvalidData, rustls::Error)` in another `io::Error`, and `io::Error::source`
/// skips the wrapped error itself, so the chain alone never shows the `rustls::Error`.
fn io_kind(io: &std::io::Error) -> Option<UpstreamErrorKind> {
    use std::io::ErrorKind as Io;
    if let Some(inner) = io.get_ref() {
        if inner.is::<rustls::Error>() {
            return Some(UpstreamErrorKind::Tls);
        }
        if let Some(i) = inner.downcast_ref::<std::io::Error>()
            && let Some(k) = io_kind(i)
        {
            return Some(k);
        }
    }
    match io.kind() {
        Io::TimedOut => Some(UpstreamErrorKind::Timeout),
        Io::ConnectionRefused | Io::ConnectionReset | Io::ConnectionAborted => {
            Some(UpstreamErrorKind::Connect)
        }
        _ => None,
    }
}

type HttpsClient<R> = Client<hyper_rustls::HttpsConnector<HttpConnector<R>>, Full<Bytes>>;

/// The raw HTTP client: one pool for upstreams (and hops that stay on their host), one whose
/// resolver refuses internal addresses for redirect hops to other hosts ([`reach::redirect_hop`]).
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: HttpsClient<GaiResolver>,
    public: HttpsClient<GuardedResolver>,
}

/// A pooled client over `http` with our TLS settings.
fn client_over<R>(mut http: HttpConnector<R>, tls: rustls::ClientConfig) -> HttpsClient<R>
where
    R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = std::net::SocketAddr>,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R::Future: Send,
{
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(32)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https)
}

fn authority_of(uri: &Uri) -> (String, String) {
    (
        uri.scheme_str().unwrap_or("").to_owned(),
        uri.authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default(),
    )
}

impl Fetcher {
    /// A client trusting webpki roots, the system roots and `extra_ca` (PEM) if given.
    pub fn new(extra_ca: Option<&Path>) -> Result<Fetcher, FetcherError> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(p) = extra_ca {
            let path = || p.to_owned();
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(p).map_err(|source| {
                FetcherError::ReadCa {
                    path: path(),
                    source,
                }
            })?;
            for c in certs {
                let c = c.map_err(|source| FetcherError::CaEntry {
                    path: path(),
                    source,
                })?;
                roots.add(c).map_err(|source| FetcherError::CaCert {
                    path: path(),
                    source,
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(FetcherError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Fetcher {
            client: client_over(HttpConnector::new(), tls.clone()),
            public: client_over(HttpConnector::new_with_resolver(GuardedResolver), tls),
        })
    }

    async fn once(
        &self,
        hop: Hop,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        auth: Option<&Secret>,
        body: Bytes,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut req = Request::builder().method(method.clone()).uri(uri.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(a) = auth {
            let mut v = HeaderValue::from_str(a.expose()).map_err(|_| UpstreamError::Protocol {
                what: "credential contains characters not allowed in a header".into(),
            })?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        req = req.header(
            header::USER_AGENT,
            concat!("regauth/", env!("CARGO_PKG_VERSION")),
        );
        let req = req
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Protocol {
                what: format!("building request to {host}: {e}"),
            })?;
        let sent = match hop {
            Hop::Direct => self.client.request(req),
            Hop::PublicOnly => self.public.request(req),
        };
        match tokio::time::timeout(HEADER_TIMEOUT, sent).await {
            Err(_) => Err(UpstreamError::Timeout {
                host,
                secs: HEADER_TIMEOUT.as_secs(),
            }),
            Ok(Err(e)) => Err(UpstreamError::Connect {
                host,
                why: error_chain(&e),
                kind: connect_kind(&e),
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Sends a request, following redirects (GET/HEAD only) by [`reach::redirect_hop`]'s rule and
    /// at most [`MAX_REDIRECTS`] of them. `Authorization` is sent only to the original
    /// scheme+host+port.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        auth: Option<&Secret>,
        body: Bytes,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut uri: Uri = url.parse().map_err(|e| UpstreamError::Protocol {
            what: format!("bad URL {url:?}: {e}"),
        })?;
        let origin_uri = uri.clone();
        let origin = authority_of(&uri);
        let mut auth = auth;
        let mut hop = Hop::Direct;
        let mut origin_internal = None;
        for _ in 0..=MAX_REDIRECTS {
            if authority_of(&uri) != origin {
                auth = None;
            }
            let resp = self
                .once(hop, &method, &uri, headers, auth, body.clone())
                .await?;
            let redirect = matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308)
                && (method == Method::GET || method == Method::HEAD);
            if !redirect {
                return Ok(resp);
            }
            let loc = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| UpstreamError::Protocol {
                    what: format!("redirect from {uri} without Location"),
                })?;
            let next = resolve_location(&uri, loc)?;
            if origin_internal.is_none() && next.host() != origin_uri.host() {
                let host = origin_uri.host().unwrap_or_default();
                origin_internal = Some(reach::host_is_internal(host).await);
            }
            hop = reach::redirect_hop(&origin_uri, &next, origin_internal.unwrap_or(false))
                .map_err(|refused| {
                    tracing::warn!(from = %origin.1, "{refused}");
                    UpstreamError::Redirect(refused)
                })?;
            tracing::debug!(from = %uri.authority().map(|a| a.as_str()).unwrap_or(""), to = %next.authority().map(|a| a.as_str()).unwrap_or(""), "following upstream redirect");
            uri = next;
        }
        Err(UpstreamError::Protocol {
            what: format!("more than {MAX_REDIRECTS} redirects from {url}"),
        })
    }

    /// A small buffered exchange (token requests).
    pub async fn simple(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
        auth: Option<&Secret>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type
            && let Ok(v) = HeaderValue::from_str(ct)
        {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let resp = self.send(method, url, &h, auth, body).await?;
        let status = resp.status();
        // A token body that trickles must not hold the request (and its client) forever.
        let bytes = tokio::time::timeout(HEADER_TIMEOUT, read_small(resp.into_body()))
            .await
            .map_err(|_| UpstreamError::Timeout {
                host: url.split('/').nth(2).unwrap_or("").to_owned(),
                secs: HEADER_TIMEOUT.as_secs(),
            })??;
        Ok((status, bytes))
    }
}

/// Reads a body of at most [`SMALL_BODY_LIMIT`] bytes.
pub async fn read_small(body: Incoming) -> Result<Bytes, UpstreamError> {
    read_limited(body, SMALL_BODY_LIMIT).await
}

/// Reads a whole body, failing beyond `limit` bytes.
pub async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, UpstreamError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::Body(error_chain(&e)))?;
        if let Ok(d) = frame.into_data() {
            if buf.len() + d.len() > limit {
                return Err(UpstreamError::Protocol {
                    what: format!("response larger than {limit} bytes"),
                });
            }
            buf.extend_from_slice(&d);
        }
    }
    Ok(buf.freeze())
}

fn resolve_location(base: &Uri, loc: &str) -> Result<Uri, UpstreamError> {
    let bad = |e: String| UpstreamError::Protocol {
        what: format!("bad redirect Location {loc:?}: {e}"),
    };
    if loc.contains("://") {
        return loc
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()));
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let auth = base.authority().map(|a| a.as_str()).unwrap_or("");
    let full = if let Some(rest) = loc.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{scheme}://{auth}{loc}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{auth}{dir}{loc}")
    };
    full.parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let base: Uri = "http://a:1/v2/x/blobs/sha256:1".parse().unwrap();
        assert_eq!(
            resolve_location(&base, "/b?x=1").unwrap().to_string(),
            "http://a:1/b?x=1"
        );
        assert_eq!(
            resolve_location(&base, "http://c:2/d").unwrap().to_string(),
            "http://c:2/d"
        );
        assert_eq!(
            resolve_location(&base, "e").unwrap().to_string(),
            "http://a:1/v2/x/blobs/e"
        );
    }
}
