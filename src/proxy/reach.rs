//! Reach: which registries the proxy may talk to, and which network addresses.
//!
//! Owns: the canonical name of a registry ([`Registry`]: one spelling per registry, used by
//! routing, credentials, the policy, the cache and the metrics), the allowlist ([`Reach`], closed
//! by default: only what the operator configured or named in the credential sources), and the
//! address rules for redirects and DNS answers ([`is_internal`], [`GuardedResolver`]).
//!
//! Why it exists: the proxy holds every registry credential of a runner host and CI jobs can
//! reach it. Without an allowlist, `?ns=` or a host path prefix turn it into an open HTTP fetcher
//! (cloud metadata through a redirect, a port scanner through connect errors, the dind API of the
//! compose stack). The decision is made here, *before* any connection.
//!
//! Why canonical names: a policy that matches spellings is bypassed by another spelling of the same
//! registry (`host:05443`, `host:443` vs `host`, `index.docker.io` vs `docker.io`). Everything that
//! compares registries compares [`Registry`] values.
//!
//! Does not own: choosing the upstream of a request ([`super::route`]) or sending it
//! ([`super::fetch`], which asks [`Reach`] and uses [`GuardedResolver`] for redirect hops).

use crate::config::keys::{DOCKER_HUB_DOMAIN, is_docker_hub};
use crate::resolve::Resolver;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Why a registry name or pattern was refused. Messages quote the input: names are not secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    #[error("{0:?} is not a registry host[:port]")]
    BadRegistry(String),
    #[error("{0:?} has a port that is not a number from 1 to 65535")]
    BadPort(String),
    #[error(
        "{0:?} is not a registry pattern (host, host:port, host:*, *.domain, *.domain:port); a bare '*' is refused"
    )]
    BadPattern(String),
}

/// A registry's canonical `host[:port]`: host lower-cased, a trailing `.` dropped, IPv6 in
/// brackets in its shortest form, the port as a plain number and left out when it is 443, Docker
/// Hub's aliases folded into `docker.io`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registry {
    host: String,
    port: Option<u16>,
}

impl Registry {
    /// Parses `host[:port]`, `[v6][:port]`, or a URL / config key (`https://host:port/v1/`,
    /// `host:port/team`): only the host and port are kept.
    pub fn parse(s: &str) -> Result<Registry, ReachError> {
        let authority = authority_of(s);
        let (host, port) = split_host_port(authority).ok_or_else(|| bad(s))?;
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(|| ReachError::BadPort(s.to_owned()))?),
        };
        let host = canonical_host(host).ok_or_else(|| bad(s))?;
        Ok(Registry::from_parts(host, port))
    }

    fn from_parts(host: String, port: Option<u16>) -> Registry {
        let port = port.filter(|p| *p != 443);
        if is_docker_hub(&host) && port.is_none() {
            return Registry {
                host: DOCKER_HUB_DOMAIN.to_owned(),
                port: None,
            };
        }
        Registry { host, port }
    }

    /// The host (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, `None` for the default (443).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// True for Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.host == DOCKER_HUB_DOMAIN && self.port.is_none()
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = self.host.contains(':');
        match (v6, self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (false, None) => f.write_str(&self.host),
        }
    }
}

fn bad(s: &str) -> ReachError {
    ReachError::BadRegistry(s.to_owned())
}

/// The authority of a URL or config key: scheme, userinfo and path dropped.
fn authority_of(s: &str) -> &str {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// `host[:port]` or `[v6][:port]` → (host, port text).
fn split_host_port(a: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        return match tail {
            "" => Some((h, None)),
            t => Some((h, Some(t.strip_prefix(':')?))),
        };
    }
    match a.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => None, // unbracketed IPv6
        Some((h, p)) => Some((h, Some(p))),
        None => Some((a, None)),
    }
}

/// Digits only, leading zeros allowed (they are folded away), 1..=65535.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u32>()
        .ok()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

/// Lower-cased DNS name (trailing dot dropped) or IP literal in its canonical text form.
fn canonical_host(h: &str) -> Option<String> {
    if let Ok(v6) = h.parse::<Ipv6Addr>() {
        return Some(v6.to_string());
    }
    let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    if h.parse::<Ipv4Addr>().is_ok() {
        return Some(h);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (h.len() <= 253 && h.split('.').all(label_ok)).then_some(h)
}

/// Which hosts a pattern matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name *below* `example.com`, not `example.com` itself.
    Below(String),
}

/// Which ports a pattern matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortPattern {
    /// No port written: the default port only (443).
    Default,
    Exact(u16),
    /// `:*`.
    Any,
}

/// One `--allow-registry` pattern: `host`, `host:port`, `host:*`, `*.domain`, `*.domain:port`,
/// `*.domain:*`. A pattern without a port allows only the default port, so `registry.example.com`
/// does not open `registry.example.com:22`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryPattern {
    host: HostPattern,
    port: PortPattern,
    text: String,
}

impl RegistryPattern {
    /// Parses one pattern.
    pub fn parse(s: &str) -> Result<RegistryPattern, ReachError> {
        let refuse = || ReachError::BadPattern(s.to_owned());
        let (host, port) = split_host_port(s).ok_or_else(refuse)?;
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => match parse_port(p).ok_or_else(refuse)? {
                443 => PortPattern::Default,
                n => PortPattern::Exact(n),
            },
        };
        let host = match host.strip_prefix("*.") {
            Some(domain) => HostPattern::Below(canonical_host(domain).ok_or_else(refuse)?),
            None if host.contains('*') => return Err(refuse()),
            None => {
                let reg = Registry::parse(host).map_err(|_| refuse())?;
                HostPattern::Exact(reg.host)
            }
        };
        Ok(RegistryPattern {
            host,
            port,
            text: s.to_owned(),
        })
    }

    /// True for a `*.domain` pattern (it names no one host).
    pub fn is_wildcard(&self) -> bool {
        matches!(self.host, HostPattern::Below(_))
    }

    /// True when `r` is matched.
    pub fn matches(&self, r: &Registry) -> bool {
        let host_ok = match &self.host {
            HostPattern::Exact(h) => *h == r.host,
            HostPattern::Below(d) => r
                .host
                .strip_suffix(d.as_str())
                .is_some_and(|pre| pre.len() > 1 && pre.ends_with('.')),
        };
        let port_ok = match self.port {
            PortPattern::Default => r.port.is_none(),
            PortPattern::Exact(p) => r.port == Some(p),
            PortPattern::Any => true,
        };
        host_ok && port_ok
    }
}

impl fmt::Display for RegistryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where an entry of the allowlist came from (for the startup summary and `--explain`-style logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReachSource {
    /// `--upstream NAME=URL` or `--default-upstream`.
    Upstream,
    /// A key of `auths` / `credHelpers` in the Docker config the proxy resolves credentials from.
    CredentialSource,
    /// `--allow-registry`.
    Flag,
}

/// The registries the proxy may contact. Closed by default: empty allows nothing.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    registries: BTreeSet<(Registry, ReachSource)>,
    patterns: Vec<RegistryPattern>,
}

impl Reach {
    /// An allowlist that allows nothing.
    pub fn closed() -> Reach {
        Reach::default()
    }

    /// Allows one registry.
    pub fn allow(&mut self, registry: Registry, source: ReachSource) {
        self.registries.insert((registry, source));
    }

    /// Allows what a pattern matches.
    pub fn allow_pattern(&mut self, p: RegistryPattern) {
        self.patterns.push(p);
    }

    /// Allows the registry of every config key that parses as one; returns the keys that don't
    /// (the caller logs them).
    pub fn allow_keys<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut refused = Vec::new();
        for k in keys {
            match Registry::parse(k) {
                Ok(r) => self.allow(r, ReachSource::CredentialSource),
                Err(_) => refused.push(k.to_owned()),
            }
        }
        refused
    }

    /// True when the proxy may talk to `r`.
    pub fn allows(&self, r: &Registry) -> bool {
        self.registries.iter().any(|(x, _)| x == r) || self.patterns.iter().any(|p| p.matches(r))
    }

    /// The host names and IP literals this allowlist can reach (ports dropped; `*.domain` gives
    /// `domain`, which as a name constraint also covers every name below it): the scope of the
    /// CONNECT CA.
    pub fn scope_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self
            .registries
            .iter()
            .map(|(r, _)| r.host.clone())
            .collect();
        for p in &self.patterns {
            match &p.host {
                HostPattern::Exact(h) | HostPattern::Below(h) => names.insert(h.clone()),
            };
        }
        names.into_iter().collect()
    }

    /// Every entry, for the startup summary: `(text, source)`.
    pub fn entries(&self) -> Vec<(String, ReachSource)> {
        let mut v: Vec<_> = self
            .registries
            .iter()
            .map(|(r, s)| (r.to_string(), *s))
            .collect();
        v.extend(
            self.patterns
                .iter()
                .map(|p| (p.to_string(), ReachSource::Flag)),
        );
        v
    }
}

/// How often, at most, a denied registry makes the proxy read its credential sources again (a
/// `docker login` into the proxy's credential store after start-up is then picked up within this
/// time, and a client naming registries nobody allowed costs at most one helper `list` per window).
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Where the allowlist comes from: the configured upstreams, `--allow-registry` patterns and the
/// credential sources of the resolver (read again by [`ReachSources::refresh`]).
#[derive(Debug)]
pub struct ReachSources {
    resolver: Resolver,
    patterns: Vec<RegistryPattern>,
    upstreams: Vec<Registry>,
    last: std::sync::Mutex<Option<Instant>>,
}

impl ReachSources {
    pub fn new(
        resolver: Resolver,
        patterns: Vec<RegistryPattern>,
        upstreams: Vec<Registry>,
    ) -> ReachSources {
        ReachSources {
            resolver,
            patterns,
            upstreams,
            last: std::sync::Mutex::new(None),
        }
    }

    /// Builds the allowlist now (blocking: may run each `credsStore` helper's `list` once).
    /// Returns it with warnings for the log (keys that name no registry, helpers that failed).
    pub fn build(&self) -> (Reach, Vec<String>) {
        let mut reach = Reach::closed();
        let mut warnings = Vec::new();
        for r in &self.upstreams {
            reach.allow(r.clone(), ReachSource::Upstream);
        }
        for p in &self.patterns {
            reach.allow_pattern(p.clone());
        }
        let named = self.resolver.registries_named();
        for k in reach.allow_keys(named.keys.iter().map(String::as_str)) {
            warnings.push(format!(
                "credential key {k:?} names no registry; ignored for reach"
            ));
        }
        for helper in &named.creds_stores {
            match self.resolver.helpers.list(helper) {
                Ok(listed) => {
                    reach.allow_keys(listed.keys().map(String::as_str));
                }
                Err(e) => warnings.push(format!(
                    "credsStore {helper:?}: list failed ({e}); its registries are not reachable until it works"
                )),
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
        (reach, warnings)
    }

    /// Rebuilds `into` unless that was done within [`REFRESH_EVERY`]; true when it was rebuilt.
    pub async fn refresh(self: &Arc<Self>, into: &RwLock<Reach>) -> bool {
        let recent = self
            .last
            .lock()
            .map(|l| l.is_some_and(|t| t.elapsed() < REFRESH_EVERY))
            .unwrap_or(true);
        if recent {
            return false;
        }
        let me = self.clone();
        let Ok((reach, warnings)) = tokio::task::spawn_blocking(move || me.build()).await else {
            return false;
        };
        for w in warnings {
            tracing::warn!("{w}");
        }
        *into.write().unwrap_or_else(|p| p.into_inner()) = reach;
        true
    }
}

/// Addresses a public registry never has: loopback, unspecified, link-local (cloud metadata),
/// private (RFC 1918, IPv6 ULA), shared (CGNAT), benchmarking, reserved, broadcast, multicast and
/// documentation ranges; IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4) is judged by the
/// IPv4 address inside.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 shared (CGNAT)
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24 protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // 198.18.0.0/15 benchmarking
        || a >= 240 // 240.0.0.0/4 reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) or 6to4 (`2002:AABB:CCDD::/48`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0; 5]
        && (s[5] == 0xffff || (s[5] == 0 && !ip.is_loopback() && !ip.is_unspecified()))
    {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// How a redirect hop may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// With the ordinary client (the upstream's own host, or the upstream is itself internal).
    Direct,
    /// With a client whose resolver refuses internal addresses ([`GuardedResolver`]).
    PublicOnly,
}

/// Why a redirect was not followed. Names the target host (not secret) for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectRefused {
    #[error("redirect to {to} refused: only https may leave the upstream's own scheme and host")]
    NotHttps { to: String },
    #[error("redirect to {to} refused: an internal address, and the upstream is not one")]
    Internal { to: String },
    #[error("redirect to {to} refused: no host")]
    NoHost { to: String },
}

/// The rule for following a redirect from `origin` (the upstream request's URL) to `next`:
/// only to https, or to the origin's own scheme and host; never to loopback, link-local, private
/// or unspecified addresses (nor `localhost`) unless the upstream itself is internal
/// (`origin_internal`). Names are checked after DNS by [`GuardedResolver`] ([`Hop::PublicOnly`]).
pub fn redirect_hop(
    origin: &hyper::Uri,
    next: &hyper::Uri,
    origin_internal: bool,
) -> Result<Hop, RedirectRefused> {
    let to = next.authority().map(|a| a.to_string()).unwrap_or_default();
    let Some(host) = next
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
    else {
        return Err(RedirectRefused::NoHost { to });
    };
    let same_host = origin
        .host()
        .is_some_and(|h| h.eq_ignore_ascii_case(next.host().unwrap_or_default()));
    let same_scheme = origin.scheme_str() == next.scheme_str();
    if !(next.scheme_str() == Some("https") || (same_scheme && same_host)) {
        return Err(RedirectRefused::NotHttps { to });
    }
    if same_host || origin_internal {
        return Ok(Hop::Direct);
    }
    match literal_internal(host) {
        Some(true) => Err(RedirectRefused::Internal { to }),
        Some(false) => Ok(Hop::Direct),
        None => Ok(Hop::PublicOnly),
    }
}

/// What a host says about itself without DNS: `Some(true)` for `localhost` (and `*.localhost`)
/// and internal IP literals, `Some(false)` for other IP literals, `None` for names (only DNS can
/// tell). Brackets around IPv6 are allowed.
fn literal_internal(host: &str) -> Option<bool> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(is_internal(ip));
    }
    let lower = h.to_ascii_lowercase();
    (lower == "localhost" || lower.ends_with(".localhost")).then_some(true)
}

/// True when `host` (a name or IP literal, without port) is, or resolves to, an internal address.
/// A name that does not resolve counts as not internal (the request will fail anyway).
pub async fn host_is_internal(host: &str) -> bool {
    if let Some(known) = literal_internal(host) {
        return known;
    }
    let h = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::net::lookup_host((h, 0)).await {
        Ok(mut addrs) => addrs.any(|a| is_internal(a.ip())),
        Err(_) => false,
    }
}

/// A DNS resolver for the upstream client that refuses names resolving to internal addresses
/// ([`is_internal`]), so a redirect to a public-looking name cannot reach the host's own network
/// (DNS rebinding). It checks the addresses it hands to the connector, so there is no gap between
/// check and use. IP-literal URLs never reach a resolver: the fetcher checks those itself.
#[derive(Clone, Debug, Default)]
pub struct GuardedResolver;

/// What [`GuardedResolver`] answers.
pub type GuardedAddrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = GuardedAddrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<GuardedAddrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| !is_internal(a.ip())).collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves only to internal addresses"),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

#[cfg(test)]
#[path = "reach_tests.rs"]
mod tests;
