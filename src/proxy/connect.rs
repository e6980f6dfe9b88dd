//! CONNECT mode (`--connect`): the proxy as the HTTP forward proxy of `HTTPS_PROXY`.
//!
//! Owns: answering a `CONNECT host:port` on the listener — client authentication by
//! `Proxy-Authorization` (Basic, the same `--htpasswd`; 407 with `Proxy-Authenticate`), then one
//! of three outcomes decided *before* any connection:
//!
//! | target | answer |
//! |---|---|
//! | a registry in the allowlist ([`super::reach::Reach`]) | 200, TLS terminated with a leaf for that host ([`super::connect_ca`]), the inner HTTP/1.1 or h2 requests served by the same pipeline ([`super::handler::handle`]) with the CONNECT authority as the route source ([`super::route::ConnectTarget`]) |
//! | a `--connect-tunnel` pattern | 200, bytes spliced unchanged to `host:port` (connected first: a failure is a 502) |
//! | anything else | 403, nothing contacted |
//!
//! Bounds: at most `max_connections` CONNECT sessions at once (their own count: an upgraded
//! connection leaves the listener's); the inner TLS handshake within the header-read timeout;
//! inner connections keep the listener's header-read and idle timeouts; a tunnel ends after
//! `--connect-tunnel-idle-timeout` without a byte either way, or after the download deadline in
//! all; the leaf cache holds at most `--connect-max-leaves` hosts. Sessions are counted in
//! `regauth_connect_sessions_total{outcome}` (never a host name in a label).
//!
//! Why a client authenticated at CONNECT is authenticated inside: clients send
//! `Proxy-Authorization` only on the CONNECT (Go takes it from `HTTPS_PROXY=http://user:pass@…`),
//! and the `Authorization` they send inside is meant for the registry. The user is carried to the
//! access log of every inner request.
//!
//! Does not own: the CA ([`super::connect_ca`]), routing ([`super::route`]) or the listener
//! ([`super::server`]).

use super::activity::{Activity, Heard, LastHeard, Running, watchdog};
use super::client_auth;
use super::connect_ca::ConnectCa;
use super::error::ErrorCode;
use super::reach::{Reach, ReachError, Registry, RegistryPattern, is_internal};
use super::response::{self, Body, empty};
use super::route::ConnectTarget;
use super::state::ProxyState;
use super::tls::TlsError;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

/// What `--connect` was told.
#[derive(Clone, Debug)]
pub struct ConnectSettings {
    /// `--ca-dir`.
    pub ca_dir: PathBuf,
    /// `--connect-tunnel` patterns (the allowlist's grammar).
    pub tunnels: Vec<String>,
    /// `--connect-max-leaves`.
    pub max_leaves: usize,
    /// `--connect-tunnel-idle-timeout`.
    pub tunnel_idle_timeout: Duration,
}

impl ConnectSettings {
    pub const DEFAULT_MAX_LEAVES: usize = 1024;
    pub const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(300);
}

/// Why CONNECT mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("--connect-tunnel: {0}")]
    Tunnel(#[from] ReachError),
    #[error("--ca-dir: {0}")]
    Ca(#[from] TlsError),
}

/// CONNECT mode, ready to answer.
pub struct ConnectMode {
    ca: ConnectCa,
    tunnels: Vec<RegistryPattern>,
    builder: auto::Builder<TokioExecutor>,
    sessions: Arc<Semaphore>,
    tunnel_idle: Duration,
}

impl ConnectMode {
    /// Loads or creates the CA (constrained to what `reach` allows now).
    pub fn new(
        s: &ConnectSettings,
        reach: &Reach,
        builder: auto::Builder<TokioExecutor>,
        max_sessions: usize,
    ) -> Result<ConnectMode, ConnectError> {
        let tunnels = s
            .tunnels
            .iter()
            .map(|p| RegistryPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let ca = ConnectCa::load_or_create(&s.ca_dir, &reach.scope_names(), s.max_leaves)?;
        tracing::info!(ca = %ca.ca_path().display(), tunnels = tunnels.len(), "CONNECT mode on: clients set HTTPS_PROXY to this listener and trust the CA");
        Ok(ConnectMode {
            ca,
            tunnels,
            builder,
            sessions: Arc::new(Semaphore::new(max_sessions.max(1))),
            tunnel_idle: s.tunnel_idle_timeout,
        })
    }
}

fn refuse(status: StatusCode, msg: &str) -> Response<Body> {
    response::error(status, ErrorCode::Denied, msg)
}

/// 405 when CONNECT mode is off.
pub fn disabled() -> Response<Body> {
    refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        "CONNECT is not enabled on this proxy (regauth proxy --connect)",
    )
}

/// Who authenticated a CONNECT: the user name, `None` without `--htpasswd`.
struct ProxyUser(Option<String>);

/// `Proxy-Authorization` against `--htpasswd`: `Ok(user)` or the answer (407, or 429 once the
/// client's address used up its failures).
async fn authenticate(
    state: &ProxyState,
    peer: SocketAddr,
    req: &Request<hyper::body::Incoming>,
) -> Result<ProxyUser, Response<Body>> {
    let Some(ca) = &state.client_auth else {
        return Ok(ProxyUser(None));
    };
    let value = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let user = value
        .as_deref()
        .and_then(client_auth::decode_basic)
        .map(|(u, _)| u);
    if value.as_deref().and_then(|v| ca.cached(v)) == Some(true) {
        return Ok(ProxyUser(user));
    }
    if state.auth_failures.blocked(peer.ip()) {
        state.metrics.limit_tripped("auth_failures");
        return Err(response::error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            "too many failed authentication attempts; try again later",
        ));
    }
    let (ca, v) = (ca.clone(), value.clone());
    let ok = tokio::task::spawn_blocking(move || ca.check(v.as_deref()))
        .await
        .unwrap_or(false);
    if ok {
        return Ok(ProxyUser(user));
    }
    if value.is_some() {
        state.auth_failures.failed(peer.ip());
    }
    state.metrics.client_unauthorized();
    let mut r = response::error(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        ErrorCode::Unauthorized,
        "proxy authentication required",
    );
    r.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"regauth\""),
    );
    Err(r)
}

/// True when the allowlist holds `r`, looking in the credential sources again once (a
/// `docker login` since the last look) before saying no.
async fn reaches(state: &ProxyState, r: &Registry) -> bool {
    if state.routes.reaches(r) {
        return true;
    }
    state.reach_sources.refresh(&state.routes.reach).await && state.routes.reaches(r)
}

/// What a CONNECT asked for, once authenticated and parsed.
struct Asked {
    registry: Registry,
    /// The name the client asked for (the leaf must carry it, and a tunnel connects to it): not
    /// the canonical registry, which folds `registry-1.docker.io` into `docker.io`.
    host: String,
    port: u16,
    /// The user of `Proxy-Authorization`, when `--htpasswd` is set.
    user: Option<String>,
}

impl Asked {
    /// The CONNECT's authority; `None` when it names no registry-like `host[:port]`.
    fn of(req: &Request<hyper::body::Incoming>, user: Option<String>) -> Option<Asked> {
        let registry = Registry::parse(req.uri().authority()?.as_str()).ok()?;
        let host = req
            .uri()
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        Some(Asked {
            registry,
            host,
            port: req.uri().port_u16().unwrap_or(443),
            user,
        })
    }
}

/// Answers one CONNECT request (see the module doc).
pub async fn answer(
    state: Arc<ProxyState>,
    mode: Arc<ConnectMode>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let m = state.metrics.clone();
    let user = match authenticate(&state, peer, &req).await {
        Ok(u) => u.0,
        Err(r) => {
            m.connect_session("unauthorized");
            return r;
        }
    };
    let Some(asked) = Asked::of(&req, user) else {
        m.connect_session("refused");
        return refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let intercept = reaches(&state, &asked.registry).await;
    let tunnel = !intercept && mode.tunnels.iter().any(|p| p.matches(&asked.registry));
    if !intercept && !tunnel {
        m.connect_session("refused");
        tracing::warn!(%peer, registry = %asked.registry, "CONNECT refused: not a registry in the proxy's reach nor a --connect-tunnel");
        return refuse(
            StatusCode::FORBIDDEN,
            "this proxy does not connect to that host",
        );
    }
    if intercept && !mode.ca.covers(&asked.host) {
        m.connect_session("refused");
        tracing::warn!(registry = %asked.registry, ca = %mode.ca.ca_path().display(), "CONNECT refused: the registry was allowed after the CONNECT CA was made, and the CA's name constraints exclude it; remove the --ca-dir to make a new CA (clients must then trust the new ca.pem)");
        return refuse(
            StatusCode::FORBIDDEN,
            "this proxy's CA does not cover that host",
        );
    }
    let Ok(permit) = mode.sessions.clone().try_acquire_owned() else {
        m.limit_tripped("max_connections");
        m.connect_session("failed");
        return response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyRequests,
            "too many CONNECT sessions; try again",
        );
    };
    if tunnel {
        open_tunnel(state, mode, peer, req, asked, permit).await
    } else {
        open_intercept(state, mode, peer, req, asked, permit)
    }
}

/// Connects to the tunnel's target, then answers 200 and splices once the client upgrades.
async fn open_tunnel(
    state: Arc<ProxyState>,
    mode: Arc<ConnectMode>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
    asked: Asked,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response<Body> {
    let m = state.metrics.clone();
    let wildcard = mode
        .tunnels
        .iter()
        .any(|p| p.matches(&asked.registry) && p.is_wildcard());
    let timeout = state.limits.header_read_timeout;
    let target = match connect_target(&asked.host, asked.port, wildcard, timeout).await {
        Ok(t) => t,
        Err(why) => {
            m.connect_session("failed");
            tracing::warn!(registry = %asked.registry, "CONNECT tunnel: {why}");
            return refuse(StatusCode::BAD_GATEWAY, "the tunnel target did not answer");
        }
    };
    m.connect_session("tunnelled");
    let (idle, deadline) = (mode.tunnel_idle, state.limits.download_deadline);
    answer_then(m, peer, req, permit, move |up| {
        splice(TokioIo::new(up), target, idle, deadline)
    })
}

/// Mints (or reuses) the leaf, then answers 200 and serves the inner connection once the
/// client upgrades.
fn open_intercept(
    state: Arc<ProxyState>,
    mode: Arc<ConnectMode>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
    asked: Asked,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response<Body> {
    let m = &state.metrics;
    let tls = match mode.ca.server_for(&asked.host) {
        Ok((cfg, minted)) => {
            if minted {
                m.connect_leaf_minted();
            }
            cfg
        }
        Err(e) => {
            m.connect_session("failed");
            tracing::warn!(registry = %asked.registry, error = %e, "CONNECT: minting a leaf failed");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "certificate error");
        }
    };
    m.connect_session("intercepted");
    let target = ConnectTarget {
        authority: asked.registry.to_string(),
        user: asked.user,
    };
    let metrics = state.metrics.clone();
    answer_then(metrics, peer, req, permit, move |up| {
        intercept_session(state, mode, peer, up, tls, target)
    })
}

/// Answers the CONNECT with 200; once the client upgrades, `session` runs on the upgraded
/// connection in a task of its own, counted as an active session and holding `permit` (the
/// session bound) until it ends.
fn answer_then<S, F>(
    metrics: Arc<super::metrics::Metrics>,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
    permit: tokio::sync::OwnedSemaphorePermit,
    session: S,
) -> Response<Body>
where
    S: FnOnce(hyper::upgrade::Upgraded) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let _permit = permit;
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                metrics.connect_active(1);
                session(up).await;
                metrics.connect_active(-1);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(empty())
}

/// The TLS handshake with the minted leaf, then the inner requests through the pipeline.
async fn intercept_session(
    state: Arc<ProxyState>,
    mode: Arc<ConnectMode>,
    peer: SocketAddr,
    up: hyper::upgrade::Upgraded,
    tls: Arc<rustls::ServerConfig>,
    target: ConnectTarget,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let limits = state.limits.clone();
    let stream = match tokio::time::timeout(
        limits.header_read_timeout,
        acceptor.accept(TokioIo::new(up)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, registry = %target.authority, error = %e, "CONNECT: client TLS handshake failed (does it trust the CA?)");
            return;
        }
        Err(_) => {
            state.metrics.limit_tripped("header_read_timeout");
            return;
        }
    };
    let activity = Activity::new();
    let seen = activity.clone();
    let st = state.clone();
    let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let state = st.clone();
        let running = Running::new(&seen);
        req.extensions_mut().insert(target.clone());
        async move {
            let r = super::handler::handle(state, peer, req).await;
            Ok::<_, std::convert::Infallible>(super::handler::hold(r, running))
        }
    });
    let dog = watchdog(activity, limits, state.metrics.clone());
    let conn = mode.builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "CONNECT inner connection ended with an error");
        },
        () = dog => tracing::debug!(%peer, "CONNECT inner connection closed: header-read or idle timeout"),
    }
}

/// Connects to a tunnel's target within `timeout`. A wildcard pattern admits only public
/// addresses (a `*.example.com` name must not lead into the host's own network); an exact
/// pattern is the operator's explicit choice and connects to what the name resolves to.
async fn connect_target(
    host: &str,
    port: u16,
    wildcard: bool,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, TunnelError> {
    let host_port = format!("{host}:{port}");
    let lookup = tokio::net::lookup_host((host, port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(a)) => a.filter(|a| !wildcard || !is_internal(a.ip())).collect(),
        Ok(Err(e)) => return Err(TunnelError::Resolve(host_port, e.to_string())),
        Err(_) => return Err(TunnelError::Resolve(host_port, "timed out".into())),
    };
    if addrs.is_empty() {
        return Err(TunnelError::NoAddress(host_port));
    }
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addrs[..])).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(TunnelError::Connect(host_port, e.to_string())),
        Err(_) => Err(TunnelError::Connect(host_port, "timed out".into())),
    }
}

/// Why a tunnel's target could not be reached (for the log; the client gets a generic 502).
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("resolving {0}: {1}")]
    Resolve(String, String),
    #[error(
        "{0} has no address this proxy may connect to (a *.domain tunnel never reaches internal addresses)"
    )]
    NoAddress(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, String),
}

/// Copies both ways until either side closes, nothing moved for `idle`, or `deadline` passed.
async fn splice<A>(client: A, target: tokio::net::TcpStream, idle: Duration, deadline: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
{
    let heard = LastHeard::new();
    let start = heard.start;
    let mut a = Heard {
        inner: client,
        on: heard.clone(),
    };
    let mut b = Heard {
        inner: target,
        on: heard.clone(),
    };
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if heard.quiet() >= idle || start.elapsed() >= deadline {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {},
        () = watch => tracing::debug!("CONNECT tunnel closed: idle or deadline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn docker_hub_leaf_names_the_host_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let mut reach = Reach::closed();
        reach.allow(
            Registry::parse("registry-1.docker.io").unwrap(),
            super::super::reach::ReachSource::Upstream,
        );
        assert_eq!(reach.scope_names(), vec!["docker.io".to_owned()]);
        let ca = ConnectCa::load_or_create(&d.path().join("ca"), &reach.scope_names(), 4).unwrap();
        assert!(ca.covers("registry-1.docker.io"));
        assert!(!ca.covers("example.com"));
    }

    #[tokio::test]
    async fn wildcard_tunnels_never_reach_internal_addresses() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Duration::from_secs(5);
        let err = connect_target("localhost", port, true, t)
            .await
            .unwrap_err();
        assert!(matches!(err, TunnelError::NoAddress(_)), "{err}");
        assert!(connect_target("127.0.0.1", port, true, t).await.is_err());
        // An exact pattern is the operator's explicit choice.
        assert!(connect_target("127.0.0.1", port, false, t).await.is_ok());
    }
}
