//! What was asked, and of which upstream.
//!
//! Owns: parsing OCI distribution paths (`/v2/`, `/v2/<name>/manifests/<ref>`,
//! `/v2/<name>/blobs/<digest>`, `/v2/<name>/tags/list`, upload paths) and choosing the upstream,
//! in this order: containerd's `?ns=host[:port]` query (the spec's proxy parameter), then a first
//! path segment naming a configured alias (`/v2/myreg/team/app/...`), then a first segment that
//! looks like a host (`/v2/registry.example.com:5000/team/app/...`, the containerd
//! `override_path` / skopeo-mirror-with-path form), else the default upstream (dockerd's
//! `registry-mirrors` sends no `ns`, so "no hint" must mean Docker Hub).
//!
//! Inside an intercepted CONNECT ([`super::connect`]) the route source is the CONNECT authority
//! instead ([`Routes::route_connect`], [`ConnectTarget`]): that registry is the upstream and the
//! path's repository is its repository, no alias or host prefix looked for.
//!
//! Why OCI paths are parsed by hand here: repository names contain `/`, so the kind of request is
//! only known from the *last* `/manifests/` or `/blobs/` segment (axum's router cannot express it).
//!
//! Reach: `?ns=` and the host form name a registry, and the proxy contacts only registries its
//! allowlist ([`super::reach::Reach`]: configured upstreams, the credential sources' keys,
//! `--allow-registry`) holds. Anything else is refused here as [`RouteError::Denied`] — before any
//! connection, so a client learns nothing about hosts it may not reach. Configured upstreams are
//! matched by their canonical [`Registry`], so `host:443`, `HOST` and `host` are one upstream.
//!
//! Does not own: client authorization (the step before, [`super::client_auth`]) or credentials.

use super::reach::{Reach, Registry};
use crate::config::keys::{
    DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN, DOCKER_HUB_LEGACY_DOMAIN, is_docker_hub,
};
use crate::reference::{valid_digest, valid_domain, valid_repository};
use std::sync::{Arc, RwLock};

/// A `--upstream`/`--default-upstream` URL that cannot be an upstream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamUrlError {
    #[error("upstream {name}: {url:?} is not an http(s):// URL")]
    NotUrl { name: String, url: String },
    #[error("upstream {name}: scheme {scheme:?} is not http or https")]
    Scheme { name: String, scheme: String },
    #[error("upstream {name}: {url:?} must be a registry root like https://host[:port]")]
    NotRoot { name: String, url: String },
}

/// One upstream registry: where to send requests and which key its credentials live under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// The alias (`--upstream NAME=URL`) or the host it was reached by.
    pub name: String,
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` requests go to.
    pub authority: String,
    /// The registry host the resolver is asked about (`docker.io` for Docker Hub), as docker
    /// spells it (`host:443` stays `host:443`: the docker CLI's keys are exact).
    pub cred_host: String,
    /// The canonical registry: what the allowlist, the policy, the cache and the metrics compare.
    pub registry: Registry,
    /// A pass-through client's own credentials, used for this request instead of the proxy's
    /// (set by [`super::handler::authz::authorize`]; `None` from routing).
    pub acting: Option<ClientCreds>,
}

/// A pass-through client's own credentials, carried on the request's [`Upstream`] so that every
/// upstream request made for that client (the blob download included) uses them instead of the
/// proxy's. Compared by their fingerprint, never the secret.
#[derive(Clone, Debug)]
pub struct ClientCreds {
    pub user: String,
    pub secret: crate::secret::Secret,
    /// [`super::confirmations::fingerprint`] of the two.
    pub identity: String,
}

impl ClientCreds {
    /// `user:secret` as the client sent them (a password or job token).
    pub fn new(user: &str, secret: &crate::secret::Secret) -> ClientCreds {
        ClientCreds {
            user: user.to_owned(),
            secret: secret.clone(),
            identity: super::confirmations::fingerprint(user, secret.expose()),
        }
    }
}

impl PartialEq for ClientCreds {
    fn eq(&self, other: &ClientCreds) -> bool {
        self.identity == other.identity
    }
}

impl Eq for ClientCreds {}

impl std::hash::Hash for ClientCreds {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.identity.hash(h);
    }
}

impl Upstream {
    /// Parses `http(s)://host[:port]` (a trailing `/` is allowed, any other path is refused: the
    /// distribution API is rooted at `/v2/`).
    pub fn from_url(name: &str, url: &str) -> Result<Upstream, UpstreamUrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UpstreamUrlError::NotUrl {
                name: name.to_owned(),
                url: url.to_owned(),
            })?;
        if scheme != "http" && scheme != "https" {
            return Err(UpstreamUrlError::Scheme {
                name: name.to_owned(),
                scheme: scheme.to_owned(),
            });
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let not_root = || UpstreamUrlError::NotRoot {
            name: name.to_owned(),
            url: url.to_owned(),
        };
        if authority.is_empty() || authority.contains('/') || !valid_domain(authority) {
            return Err(not_root());
        }
        Upstream::new(name, scheme, authority).ok_or_else(not_root)
    }

    /// `None` when `authority` has no canonical registry form (a port out of range, …).
    fn new(name: &str, scheme: &str, authority: &str) -> Option<Upstream> {
        let registry = Registry::parse(authority).ok()?;
        let host = authority.to_ascii_lowercase();
        let cred_host = if is_docker_hub(&host) {
            DOCKER_HUB_DOMAIN.to_owned()
        } else {
            host.clone()
        };
        let authority = if host == DOCKER_HUB_DOMAIN || host == DOCKER_HUB_LEGACY_DOMAIN {
            DOCKER_HUB_API_HOST.to_owned()
        } else {
            host
        };
        Some(Upstream {
            name: name.to_owned(),
            scheme: scheme.to_owned(),
            authority,
            cred_host,
            registry,
            acting: None,
        })
    }

    /// `scheme://authority`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// True for Docker Hub, where one-segment names mean `library/<name>`.
    pub fn is_docker_hub(&self) -> bool {
        self.cred_host == DOCKER_HUB_DOMAIN
    }

    /// A stable key for caches and single-flight maps.
    pub fn key(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// The upstreams the proxy was configured with, and the registries it may reach.
#[derive(Clone, Debug)]
pub struct Routes {
    pub aliases: Vec<Upstream>,
    pub default: Upstream,
    /// Shared with the task that refreshes it from the credential sources.
    pub reach: Arc<RwLock<Reach>>,
}

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2/`.
    Base,
    Manifest(String),
    Blob(String),
    TagsList,
    /// Any push path (`/blobs/uploads/…`); pushing is not supported.
    Upload,
}

/// A routed request.
#[derive(Clone, Debug)]
pub struct Route {
    pub upstream: Upstream,
    /// Repository on the upstream (after alias/host stripping and Hub's `library/`).
    pub repo: String,
    pub endpoint: Endpoint,
    /// The `ns` query value, echoed as `OCI-Namespace`.
    pub ns: Option<String>,
}

impl Route {
    /// The base endpoint (`/v2/`) of `upstream`.
    fn base(upstream: Upstream, ns: Option<String>) -> Route {
        Route {
            upstream,
            repo: String::new(),
            endpoint: Endpoint::Base,
            ns,
        }
    }

    /// `endpoint` of repository `repo` on `upstream` (Docker Hub's one-segment names are
    /// `library/<repo>`); a repository that is still not valid is refused as `name`, the name
    /// the client asked for.
    fn repository(
        upstream: Upstream,
        repo: &str,
        name: &str,
        endpoint: Endpoint,
        ns: Option<String>,
    ) -> Result<Route, RouteError> {
        let repo = if upstream.is_docker_hub() && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_owned()
        };
        if !valid_repository(&repo) {
            return Err(RouteError::NameInvalid(name.to_owned()));
        }
        Ok(Route {
            upstream,
            repo,
            endpoint,
            ns,
        })
    }
}

/// What follows `/v2/` in `path` (`""` for `/v2/` and `/v2`); any other path is not the
/// distribution API.
fn v2_rest(path: &str) -> Result<&str, RouteError> {
    match path.strip_prefix("/v2/") {
        Some(rest) => Ok(rest),
        None if path == "/v2" => Ok(""),
        None => Err(RouteError::NotFound),
    }
}

/// The route source of a request that arrived inside an intercepted CONNECT
/// ([`super::connect`]): the registry named by the CONNECT authority is the upstream, no alias
/// or host prefix is looked for (no image renaming). Set only by the server, as a request
/// extension; nothing on the wire can set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTarget {
    /// The canonical registry of the CONNECT authority.
    pub authority: String,
    /// The user who authenticated the CONNECT (`Proxy-Authorization`), for the access log.
    pub user: Option<String>,
}

/// Why a path could not be routed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("not a distribution API path")]
    NotFound,
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    #[error("invalid digest {0:?}")]
    DigestInvalid(String),
    #[error("invalid tag or digest {0:?}")]
    ReferenceInvalid(String),
    #[error("invalid ns parameter {0:?}")]
    NsInvalid(String),
    /// A registry outside the allowlist (named, so the operator knows what to allow).
    #[error(
        "registry {0} is not served by this proxy (not a configured upstream, not in its credential sources, not allowed by --allow-registry)"
    )]
    Denied(String),
}

impl Routes {
    /// Routes over `aliases` and `default`; the allowlist always holds the configured upstreams.
    pub fn new(aliases: Vec<Upstream>, default: Upstream, mut reach: Reach) -> Routes {
        for u in aliases.iter().chain(std::iter::once(&default)) {
            reach.allow(u.registry.clone(), super::reach::ReachSource::Upstream);
        }
        Routes {
            aliases,
            default,
            reach: Arc::new(RwLock::new(reach)),
        }
    }

    /// True when the allowlist holds `r`.
    pub fn reaches(&self, r: &Registry) -> bool {
        // A writer that panicked left a complete value behind: keep using it.
        self.reach
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .allows(r)
    }

    /// Routes a request path and query.
    pub fn route(&self, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
        let ns = query.and_then(ns_param);
        let rest = v2_rest(path)?;
        let ns_upstream = match &ns {
            Some(n) if !valid_domain(n) => return Err(RouteError::NsInvalid(n.clone())),
            Some(n) => Some(self.by_host(n)?),
            None => None,
        };
        if rest.is_empty() {
            let upstream = ns_upstream.unwrap_or_else(|| self.default.clone());
            return Ok(Route::base(upstream, ns));
        }
        let (name, endpoint) = split_endpoint(rest)?;
        let (upstream, repo) = match ns_upstream {
            Some(u) => (u, name.to_owned()),
            None => self.choose(name)?,
        };
        Route::repository(upstream, &repo, name, endpoint, ns)
    }

    /// Routes a request that arrived inside a CONNECT to `authority`: the upstream is that
    /// registry (its configured form, if any), the path is the repository as-is. An `?ns=`
    /// naming another registry is refused.
    pub fn route_connect(
        &self,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> Result<Route, RouteError> {
        let upstream = self.by_host(authority)?;
        let ns = query.and_then(ns_param);
        if let Some(n) = &ns
            && Registry::parse(n).ok().as_ref() != Some(&upstream.registry)
        {
            return Err(RouteError::NsInvalid(n.clone()));
        }
        let rest = v2_rest(path)?;
        if rest.is_empty() {
            return Ok(Route::base(upstream, ns));
        }
        let (name, endpoint) = split_endpoint(rest)?;
        Route::repository(upstream, name, name, endpoint, ns)
    }

    /// The configured upstream for `host[:port]`, else an https upstream for it if the
    /// allowlist holds it, else [`RouteError::Denied`].
    fn by_host(&self, host: &str) -> Result<Upstream, RouteError> {
        let h = host.to_ascii_lowercase();
        let probe =
            Upstream::new(&h, "https", &h).ok_or_else(|| RouteError::NsInvalid(host.to_owned()))?;
        let configured = self
            .aliases
            .iter()
            .chain(std::iter::once(&self.default))
            .find(|u| u.registry == probe.registry);
        if let Some(u) = configured {
            return Ok(u.clone());
        }
        if self.reaches(&probe.registry) {
            Ok(probe)
        } else {
            Err(RouteError::Denied(probe.registry.to_string()))
        }
    }

    /// Alias, then host-looking first segment, then the default upstream.
    fn choose(&self, name: &str) -> Result<(Upstream, String), RouteError> {
        if let Some((first, rest)) = name.split_once('/') {
            if let Some(u) = self.aliases.iter().find(|u| u.name == first) {
                return Ok((u.clone(), rest.to_owned()));
            }
            let hostlike = first.contains('.') || first.contains(':') || first == "localhost";
            if hostlike && valid_domain(first) {
                return Ok((self.by_host(first)?, rest.to_owned()));
            }
        }
        Ok((self.default.clone(), name.to_owned()))
    }
}

/// Splits `<name>/manifests/<ref>` etc. on the last marker.
fn split_endpoint(rest: &str) -> Result<(&str, Endpoint), RouteError> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok((name, Endpoint::TagsList));
    }
    if let Some(i) = rest.find("/blobs/uploads") {
        let tail = &rest[i + "/blobs/uploads".len()..];
        if tail.is_empty() || tail.starts_with('/') {
            return Ok((&rest[..i], Endpoint::Upload));
        }
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let reference = &rest[i + "/manifests/".len()..];
        if !(valid_digest(reference) || valid_tag(reference)) {
            return Err(RouteError::ReferenceInvalid(reference.to_owned()));
        }
        return Ok((&rest[..i], Endpoint::Manifest(reference.to_owned())));
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let digest = &rest[i + "/blobs/".len()..];
        if !valid_digest(digest) {
            return Err(RouteError::DigestInvalid(digest.to_owned()));
        }
        return Ok((&rest[..i], Endpoint::Blob(digest.to_owned())));
    }
    Err(RouteError::NotFound)
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The `ns` query parameter (percent-decoding only `%3A`/`%3a`, the one escape a `host:port`
/// needs).
fn ns_param(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "ns" && !v.is_empty()).then(|| v.replace("%3A", ":").replace("%3a", ":"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn routes() -> Routes {
        let mut reach = Reach::closed();
        reach.allow(
            Registry::parse("registry.example.com:5000").unwrap(),
            crate::proxy::reach::ReachSource::CredentialSource,
        );
        Routes::new(
            vec![Upstream::from_url("myreg", "http://127.0.0.1:5001").unwrap()],
            Upstream::from_url("docker.io", "https://registry-1.docker.io").unwrap(),
            reach,
        )
    }

    #[test]
    fn hosts_outside_the_allowlist_are_denied_by_ns_and_by_prefix() {
        let r = routes();
        for (path, query) in [
            ("/v2/x/manifests/latest", Some("ns=127.0.0.1:22")),
            ("/v2/", Some("ns=169.254.169.254")),
            ("/v2/docker:2375/x/manifests/latest", None),
            ("/v2/registry.example.com/x/manifests/latest", None),
            ("/v2/registry.example.com:5001/x/manifests/latest", None),
            (
                "/v2/127.0.0.1:5002/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
                None,
            ),
        ] {
            assert!(
                matches!(r.route(path, query), Err(RouteError::Denied(_))),
                "{path} {query:?}"
            );
        }
        // Other spellings of allowed registries are the same registry.
        for q in [
            "ns=REGISTRY.example.com:05000",
            "ns=registry.example.com:5000",
        ] {
            let ok = r.route("/v2/x/manifests/latest", Some(q)).unwrap();
            assert_eq!(
                ok.upstream.registry.to_string(),
                "registry.example.com:5000"
            );
        }
        let alias = r
            .route("/v2/x/manifests/latest", Some("ns=127.0.0.1:05001"))
            .unwrap();
        assert_eq!(alias.upstream.name, "myreg");
        let err = r.route("/v2/", Some("ns=127.0.0.1:22")).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:22"), "{err}");
    }

    #[test]
    fn alias_host_ns_and_default() {
        let r = routes();
        let a = r
            .route("/v2/myreg/team/app/manifests/latest", None)
            .unwrap();
        assert_eq!(a.upstream.authority, "127.0.0.1:5001");
        assert_eq!(a.upstream.scheme, "http");
        assert_eq!(a.repo, "team/app");
        assert_eq!(a.endpoint, Endpoint::Manifest("latest".into()));

        let h = r
            .route("/v2/registry.example.com:5000/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", None)
            .unwrap();
        assert_eq!(h.upstream.authority, "registry.example.com:5000");
        assert_eq!(h.upstream.scheme, "https");
        assert_eq!(h.repo, "x");

        let n = r
            .route("/v2/team/app/manifests/v1", Some("ns=127.0.0.1%3A5001"))
            .unwrap();
        assert_eq!(
            n.upstream.name, "myreg",
            "ns matching an alias uses its scheme"
        );
        assert_eq!(n.repo, "team/app");
        assert_eq!(n.ns.as_deref(), Some("127.0.0.1:5001"));

        let d = r.route("/v2/busybox/manifests/latest", None).unwrap();
        assert_eq!(d.repo, "library/busybox");
        assert_eq!(d.upstream.cred_host, "docker.io");

        let hub = r
            .route("/v2/alpine/manifests/3", Some("ns=docker.io"))
            .unwrap();
        assert_eq!(hub.upstream.authority, "registry-1.docker.io");
        assert_eq!(hub.repo, "library/alpine");
    }

    #[test]
    fn endpoints_and_errors() {
        let r = routes();
        assert_eq!(r.route("/v2/", None).unwrap().endpoint, Endpoint::Base);
        assert_eq!(
            r.route("/v2/a/b/tags/list", None).unwrap().endpoint,
            Endpoint::TagsList
        );
        assert_eq!(
            r.route("/v2/a/blobs/uploads/", None).unwrap().endpoint,
            Endpoint::Upload
        );
        assert_eq!(
            r.route("/v2/a/manifests/bad tag", None).unwrap_err(),
            RouteError::ReferenceInvalid("bad tag".into())
        );
        assert!(matches!(
            r.route("/v2/a/blobs/sha256:zz", None),
            Err(RouteError::DigestInvalid(_))
        ));
        assert!(matches!(
            r.route("/v2/A/manifests/x", None),
            Err(RouteError::NameInvalid(_))
        ));
        assert_eq!(r.route("/other", None).unwrap_err(), RouteError::NotFound);
        // A repository literally containing "manifests" still splits on the last marker.
        let m = r.route("/v2/myreg/manifests/x/manifests/t", None).unwrap();
        assert_eq!(m.repo, "manifests/x");
    }

    #[test]
    fn connect_authority_is_the_upstream_without_renaming() {
        let r = routes();
        let c = r
            .route_connect(
                "registry.example.com:5000",
                "/v2/myreg/team/app/manifests/v1",
                None,
            )
            .unwrap();
        assert_eq!(c.upstream.registry.to_string(), "registry.example.com:5000");
        assert_eq!(
            c.repo, "myreg/team/app",
            "no alias stripping inside CONNECT"
        );
        let alias = r
            .route_connect("127.0.0.1:5001", "/v2/x/manifests/v1", None)
            .unwrap();
        assert_eq!(alias.upstream.scheme, "http", "the configured upstream");
        let hub = r
            .route_connect("registry-1.docker.io:443", "/v2/alpine/manifests/3", None)
            .unwrap();
        assert_eq!(hub.repo, "library/alpine");
        assert!(matches!(
            r.route_connect("evil.example.com:443", "/v2/x/manifests/v1", None),
            Err(RouteError::Denied(_))
        ));
        assert!(matches!(
            r.route_connect(
                "registry.example.com:5000",
                "/v2/x/manifests/v1",
                Some("ns=127.0.0.1:5001")
            ),
            Err(RouteError::NsInvalid(_))
        ));
        assert_eq!(
            r.route_connect("registry.example.com:5000", "/v2/", None)
                .unwrap()
                .endpoint,
            Endpoint::Base
        );
    }

    #[test]
    fn upstream_url_rules() {
        assert!(Upstream::from_url("x", "https://h/sub").is_err());
        assert!(Upstream::from_url("x", "ftp://h").is_err());
        let hub = Upstream::from_url("hub", "https://docker.io/").unwrap();
        assert_eq!(hub.authority, "registry-1.docker.io");
        assert_eq!(hub.cred_host, "docker.io");
    }
}

#[cfg(test)]
mod prop {
    use super::tests::routes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Whatever the path and `ns`, routing never panics and never yields an upstream outside
        /// the allowlist (the configured upstreams and the one credential-source registry).
        #[test]
        fn routing_never_leaves_the_allowlist(
            first in prop_oneof![
                Just("myreg".to_owned()),
                Just("registry.example.com:5000".to_owned()),
                Just("REGISTRY.example.com:05000".to_owned()),
                "[a-z0-9.:-]{1,30}",
                "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]{1,6})?",
                "\\PC{0,20}",
            ],
            rest in "[a-z0-9/._-]{0,40}",
            tail in prop_oneof![
                Just("/manifests/latest".to_owned()),
                Just(format!("/blobs/sha256:{}", "a".repeat(64))),
                Just("/tags/list".to_owned()),
                "\\PC{0,20}",
            ],
            ns in proptest::option::of(prop_oneof![
                "[a-z0-9.:%-]{1,30}",
                "\\PC{0,20}",
            ]),
        ) {
            let r = routes();
            let path = format!("/v2/{first}/{rest}{tail}");
            let query = ns.map(|n| format!("ns={n}"));
            if let Ok(route) = r.route(&path, query.as_deref()) {
                let allowed = ["127.0.0.1:5001", "docker.io", "registry.example.com:5000"];
                prop_assert!(
                    allowed.contains(&route.upstream.registry.to_string().as_str()),
                    "{path} {query:?} → {}", route.upstream.registry
                );
            }
        }
    }
}
