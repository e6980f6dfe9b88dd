//! Sockets, TLS, connections and shutdown.
//!
//! Owns: [`ProxyConfig`] → a running server: opening the cache, loading htpasswd/policy/TLS, the
//! listen-address rule (a non-loopback address needs `--htpasswd` or `--allow-anonymous`,
//! because the proxy lends the host's registry credentials to whoever can reach it), the accept
//! loop (hyper 1 + hyper-util `auto`: HTTP/1.1 and h2 on one port, h2 via ALPN under TLS) and
//! graceful shutdown on SIGTERM/SIGINT (stop accepting, let requests in flight finish for up to
//! 30 s, said in the log — a second Ctrl-C exits at once; blob downloads already running keep their verify-then-rename rule, so a cut leaves only
//! temp files, removed at the next start).
//!
//! Connection hygiene (see [`super::limits`]): hyper's h1 header-read timeout runs on a
//! `TokioTimer`; a per-connection watchdog closes a connection that sent nothing within the
//! header-read timeout (the h1/h2 sniffing of `auto` waits forever otherwise) or that had no
//! request running (a response body still being sent counts) for the idle timeout; h2 pings
//! find dead peers. At most
//! `max_connections` (further capped below the process's descriptor limit, so client
//! connections can never starve the cache and upstreams of descriptors) run at once; more are
//! closed at once, counted, and logged once per burst. An accept error (EMFILE, ENFILE, …) never
//! ends the loop: it is logged once per burst and the loop backs off a few milliseconds.
//!
//! A `CONNECT` request is handed to [`super::connect`] (`--connect`; 405 without it); connections
//! are served with hyper's upgrades on so that its `200` can become a tunnel.
//!
//! Does not own: request logic ([`super::handler`]) or CONNECT mode ([`super::connect`]).

use super::access::{Access, AccessError};
use super::activity::{Activity, Heard, Running, watchdog};
use super::cache::{Cache, CacheError};
use super::client_auth::{ClientAuth, Door, HtpasswdError};
use super::fetch::{Fetcher, FetcherError};
use super::handler::handle;
use super::limits::Limits;
use super::limits::{BodyBudget, FailureLimiter};
use super::metrics::Metrics;
use super::peer::Peers;
use super::policy::{Policy, PolicyError};
use super::reach::{Reach, ReachError, ReachSources, RegistryPattern};
use super::route::{Routes, Upstream, UpstreamUrlError};
use super::state::ProxyState;
use super::tls::TlsError;
use super::upstream::UpstreamClient;
use super::upstream_creds::CredStore;
use super::verify::Flights;
use crate::resolve::Resolver;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long requests in flight may finish after a shutdown signal (a second Ctrl-C cuts it).
const GRACE: Duration = Duration::from_secs(30);

/// TLS choice for the listener.
#[derive(Clone, Debug)]
pub enum TlsSetting {
    Off,
    Files { cert: PathBuf, key: PathBuf },
    Generate(PathBuf),
}

/// Everything `regauth proxy` was told.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// `(alias, URL)` pairs.
    pub upstreams: Vec<(String, String)>,
    pub default_upstream: String,
    pub resolver: Resolver,
    pub cache_dir: PathBuf,
    pub policy: Option<PathBuf>,
    pub tls: TlsSetting,
    pub htpasswd: Option<PathBuf>,
    pub allow_anonymous: bool,
    /// `--access`: which identity may pull what, with whose credentials.
    pub access: Option<PathBuf>,
    /// `--pass-through`: clients' own registry credentials are used upstream for them.
    pub pass_through: bool,
    /// `--authz-ttl`: how long an upstream's confirmation serves cached content.
    pub authz_ttl: Duration,
    pub tag_ttl: Duration,
    /// Extra CA (PEM) trusted for upstreams.
    pub upstream_ca: Option<PathBuf>,
    /// `--allow-registry` patterns, on top of the upstreams and the credential sources' keys.
    pub allow_registries: Vec<String>,
    /// Credential answers kept (one per registry, or per repository under the GitLab profile).
    pub credential_cache_entries: usize,
    /// `--cache-max-size`, `--cache-min-free`, `--confirm-ttl` (the policy's pins are added).
    pub cache_limits: crate::proxy::cache::Limits,
    /// Every bound on what clients and upstreams can make the proxy spend.
    pub limits: Limits,
    /// Extra names a loopback listener answers to in `Host` (`--server-name`).
    pub server_names: Vec<String>,
    /// Fleet peers (`--peer`, `--advertise`, `--peer-secret-file`).
    pub peers: crate::proxy::peer::PeerConfig,
    /// `--connect`: CONNECT mode (HTTPS_PROXY), off when `None`.
    pub connect: Option<super::connect::ConnectSettings>,
    /// `--store URL`: content in a bucket shared by a fleet (the cache folder keeps staging).
    pub store: Option<crate::proxy::cache::StoreConfig>,
}

/// Start-up failures, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {0}: a non-loopback address exposes this host's registry credentials to the network; pass --htpasswd FILE (client authentication), --pass-through, --access FILE or --allow-anonymous"
    )]
    OpenListen(SocketAddr),
    #[error(transparent)]
    Upstream(#[from] UpstreamUrlError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    UpstreamCa(#[from] FetcherError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--allow-registry: {0}")]
    Reach(#[from] ReachError),
    #[error(
        "the credential configuration has errors (see `regauth check`):\n  {}",
        .0.join("\n  ")
    )]
    Credentials(Vec<String>),
    #[error(transparent)]
    Peer(#[from] crate::proxy::peer::PeerError),
    #[error(transparent)]
    Connect(#[from] super::connect::ConnectError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the shared state (also used by tests of the library).
pub fn build_state(cfg: &ProxyConfig) -> Result<Arc<ProxyState>, ServerError> {
    let mut aliases = Vec::new();
    for (name, url) in &cfg.upstreams {
        aliases.push(Upstream::from_url(name, url)?);
    }
    let default = Upstream::from_url("default", &cfg.default_upstream)?;
    check_credentials(&cfg.resolver)?;
    let (sources, reach) = reach_of(cfg, &aliases, &default)?;
    let policy = match &cfg.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let metrics = Arc::new(Metrics::new(&aliases, Some(&default)));
    let mut limits = cfg.cache_limits.clone();
    limits.keep.extend(policy.pinned_digests());
    let cache = match &cfg.store {
        Some(s) => Cache::open_with_store(&cfg.cache_dir, s.clone())?,
        None => Cache::open(&cfg.cache_dir)?,
    };
    let cache = cache.with_limits(limits).with_metrics(metrics.clone());
    let client_auth = match &cfg.htpasswd {
        Some(p) => Some(Arc::new(ClientAuth::load(p, cfg.limits.auth_cache_ttl)?)),
        None => None,
    };
    let (access, door) = access_of(cfg)?;
    let fetcher = Fetcher::new(cfg.upstream_ca.as_deref())?;
    // The peer client trusts what upstreams are trusted with (--upstream-ca covers a fleet CA).
    let peers = Peers::from_config(&cfg.peers, fetcher.clone(), metrics.clone())?;
    let creds = CredStore::new(cfg.resolver.clone(), cfg.credential_cache_entries);
    let client = UpstreamClient::new(fetcher, creds, metrics.clone()).with_authz_ttl(cfg.authz_ttl);
    let client = Arc::new(client);
    Ok(Arc::new(ProxyState {
        routes: Routes::new(aliases, default, reach),
        reach_sources: sources,
        client,
        cache,
        flights: Arc::new(Flights::default()),
        manifest_flights: Default::default(),
        policy,
        metrics,
        client_auth,
        access,
        door,
        tag_ttl: cfg.tag_ttl,
        budget: BodyBudget::new(cfg.limits.buffer_budget_bytes),
        auth_failures: FailureLimiter::new(
            cfg.limits.auth_failures,
            cfg.limits.auth_failure_window,
        ),
        hosts: allowed_hosts(cfg.listen, &cfg.server_names),
        limits: cfg.limits.clone(),
        peers,
    }))
}

/// The access rules and the door: without `--access`, every admitted client may pull everything
/// (single-tenant), and anonymous clients are admitted unless `--htpasswd` or `--pass-through`
/// asks for credentials; with it, only what the file's entries name.
fn access_of(cfg: &ProxyConfig) -> Result<(Access, Door), ServerError> {
    let mut access = match &cfg.access {
        Some(p) => Access::load(p)?,
        None => Access::open(),
    };
    if cfg.pass_through {
        access = access.with_pass_through();
    }
    let anonymous = match &cfg.access {
        Some(_) => access.anonymous(),
        None => cfg.htpasswd.is_none() && !cfg.pass_through,
    };
    let door = Door {
        pass_through: access.pass_through(),
        anonymous,
    };
    Ok((access, door))
}

/// The allowlist's sources and its first build (warnings logged).
fn reach_of(
    cfg: &ProxyConfig,
    aliases: &[Upstream],
    default: &Upstream,
) -> Result<(Arc<ReachSources>, Reach), ServerError> {
    let patterns = cfg
        .allow_registries
        .iter()
        .map(|p| RegistryPattern::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let configured = aliases.iter().chain([default]).map(|u| u.registry.clone());
    let sources = Arc::new(ReachSources::new(
        cfg.resolver.clone(),
        patterns,
        configured.collect(),
    ));
    let (reach, warnings) = sources.build();
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok((sources, reach))
}

/// `regauth check`'s findings on the credential sources: errors (a config that does not parse, a
/// helper that is not installed or has an unsafe name) refuse the start — otherwise every pull
/// would fail later with a 502 that names none of this — and warnings are logged.
fn check_credentials(resolver: &Resolver) -> Result<(), ServerError> {
    let mut errors = Vec::new();
    for f in crate::check::check(resolver, &[], &[]) {
        let mut line: Vec<&str> = [f.source.as_str(), f.field.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        line.push(&f.message);
        let line = line.join(": ");
        match f.level {
            crate::check::Level::Error => errors.push(line),
            crate::check::Level::Warning => tracing::warn!("{line}"),
            crate::check::Level::Info => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServerError::Credentials(errors))
    }
}

/// The start-up summary: where the proxy serves, what it reaches and with which credentials.
/// The credential lookups run after start (they may run helpers) and are logged as they finish.
fn announce(state: &Arc<ProxyState>, local: SocketAddr, cfg: &ProxyConfig, tls: bool) {
    let routes = &state.routes;
    tracing::info!(
        listen = %local,
        tls,
        client_auth = cfg.htpasswd.is_some(),
        profile = ?cfg.resolver.profile,
        cache = %cfg.cache_dir.display(),
        store = %cfg.store.as_ref().map(|s| s.url.to_string()).unwrap_or_else(|| "none".into()),
        policy = %cfg.policy.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
        "regauth proxy ready on {}://{local}/v2/",
        if tls { "https" } else { "http" }
    );
    let reach = routes.reach.read().unwrap_or_else(|p| p.into_inner());
    let allowed: Vec<String> = reach.entries().into_iter().map(|(e, _)| e).collect();
    tracing::info!(registries = %allowed.join(" "), "reach: only these registries are contacted (add more with --allow-registry)");
    drop(reach);
    for up in routes.aliases.iter().chain([&routes.default]) {
        let (state, up) = (state.clone(), up.clone());
        tokio::spawn(async move {
            let who = match state.client.creds(&up, "").await {
                Ok(c) => match (&c.credential, &c.source) {
                    (Some(cred), Some(src)) => format!("user {:?} from {src}", cred.username),
                    (Some(cred), None) => format!("user {:?}", cred.username),
                    (None, _) => "anonymous (no credentials found)".to_owned(),
                },
                Err(e) => format!("lookup failed: {e}"),
            };
            tracing::info!(upstream = %up.name, url = %up.base_url(), registry = %up.registry, credentials = %who, "upstream");
        });
    }
}

/// The `Host` values a loopback listener answers to: its address, `localhost` (each with and
/// without the port) and the `--server-name`s. `None` (no check) on a non-loopback bind, where
/// client authentication is the boundary and the names clients use are not known.
pub fn allowed_hosts(listen: SocketAddr, names: &[String]) -> Option<Vec<String>> {
    if !listen.ip().is_loopback() {
        return None;
    }
    let port = listen.port();
    let ip = match listen.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let mut hosts = Vec::new();
    for h in [ip.as_str(), "localhost"]
        .into_iter()
        .chain(names.iter().map(String::as_str))
    {
        let h = h.to_ascii_lowercase();
        hosts.push(format!("{h}:{port}"));
        hosts.push(h);
    }
    Some(hosts)
}

/// Open descriptors this process may have (the soft `RLIMIT_NOFILE`), from `/proc/self/limits`.
fn descriptor_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `max_connections`, capped so client connections leave a quarter of the descriptors (at least
/// 64) to the cache, upstream connections and credential helpers.
fn connection_cap(max: usize) -> usize {
    match descriptor_limit() {
        Some(fds) => max.min(fds.saturating_sub((fds / 4).max(64)).max(1)),
        None => max,
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// The listener's TLS config, if any.
fn listener_tls(setting: &TlsSetting) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
    Ok(match setting {
        TlsSetting::Off => None,
        TlsSetting::Files { cert, key } => Some(super::tls::server_config(cert, key)?),
        TlsSetting::Generate(dir) => {
            let (cert, key) = super::tls::generate(dir)?;
            tracing::info!(ca = %dir.join("ca.pem").display(), "TLS certificate ready; clients should trust ca.pem");
            Some(super::tls::server_config(&cert, &key)?)
        }
    })
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(cfg: ProxyConfig) -> Result<(), ServerError> {
    // Clients identified (htpasswd, pass-through) or access rules given: the operator decided who.
    let decided = cfg.htpasswd.is_some() || cfg.pass_through || cfg.access.is_some();
    if !cfg.listen.ip().is_loopback() && !decided && !cfg.allow_anonymous {
        return Err(ServerError::OpenListen(cfg.listen));
    }
    let tls = listener_tls(&cfg.tls)?;
    let state = build_state(&cfg)?;
    if let Some(p) = &state.peers {
        p.spawn_probes();
    }
    state.cache.spawn_sweeper();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(cfg.listen);
    announce(&state, local, &cfg, tls.is_some());
    let limits = state.limits.clone();
    let cap = connection_cap(limits.max_connections);
    tracing::info!(
        max_connections = cap,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        idle_timeout_s = limits.idle_timeout.as_secs(),
        "connection limits"
    );
    let builder = http_builder(&limits);
    let connect = connect_mode(&cfg, &state, &builder, cap)?;
    let conns = Connections {
        acceptor: tls.map(tokio_rustls::TlsAcceptor::from),
        builder,
        connect,
        graceful: hyper_util::server::graceful::GracefulShutdown::new(),
        slots: Arc::new(Semaphore::new(cap)),
        over_cap: Burst::default(),
        accept_errors: Burst::default(),
        state,
    };
    conns.accept_until_shutdown(&listener).await;
    drop(listener);
    tracing::info!(
        "waiting up to {} s for requests in flight; press Ctrl-C again to exit now",
        GRACE.as_secs()
    );
    tokio::select! {
        done = tokio::time::timeout(GRACE, conns.graceful.shutdown()) => if done.is_err() {
            tracing::warn!("requests still running after {} s; exiting anyway", GRACE.as_secs());
        },
        _ = tokio::signal::ctrl_c() => tracing::warn!("second interrupt: exiting now, requests in flight are cut"),
    }
    Ok(())
}

/// `--connect`: the CONNECT mode over the reach as it is at start (the CA is scoped to it).
fn connect_mode(
    cfg: &ProxyConfig,
    state: &ProxyState,
    builder: &auto::Builder<TokioExecutor>,
    cap: usize,
) -> Result<Option<Arc<super::connect::ConnectMode>>, ServerError> {
    let Some(c) = &cfg.connect else {
        return Ok(None);
    };
    let reach = state
        .routes
        .reach
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mode = super::connect::ConnectMode::new(c, &reach, builder.clone(), cap)?;
    Ok(Some(Arc::new(mode)))
}

/// h1 + h2 with the listener's timeouts: hyper's header-read timer (it needs a timer to run at
/// all), and h2 keep-alive pings that find dead peers.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 3)
        .keep_alive_timeout(limits.header_read_timeout)
        .max_concurrent_streams(256);
    builder
}

/// Logs once per burst: `first` is true for the first event after a quiet second.
#[derive(Default)]
struct Burst {
    last: std::sync::Mutex<Option<Instant>>,
}

impl Burst {
    fn first(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let first = last.is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        *last = Some(Instant::now());
        first
    }
}

/// What each accepted connection is run with.
struct Connections {
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    /// `--connect`; `None`: CONNECT gets 405.
    connect: Option<Arc<super::connect::ConnectMode>>,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    /// One permit per open client connection.
    slots: Arc<Semaphore>,
    over_cap: Burst,
    accept_errors: Burst,
    state: Arc<ProxyState>,
}

/// A socket that records in its [`Activity`] that the client spoke.
type Watched = Heard<tokio::net::TcpStream, Arc<Activity>>;

impl Connections {
    /// Accepts until SIGTERM/SIGINT. An accept error (EMFILE, ENFILE, ECONNABORTED, …) is never
    /// fatal: logged once per burst, counted, a short back-off (the backlog waits meanwhile).
    async fn accept_until_shutdown(&self, listener: &tokio::net::TcpListener) {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down: no new connections, finishing requests in flight");
                    return;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => self.admit(stream, peer),
                    Err(e) => {
                        self.state.metrics.limit_tripped("accept_error");
                        if self.accept_errors.first() {
                            tracing::warn!(error = %e, "accept failed (descriptor limit?); backing off");
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                },
            }
        }
    }

    /// Takes a slot for the connection, or closes it at once when all are in use.
    fn admit(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => self.spawn(stream, peer, permit),
            Err(_) => {
                self.state.metrics.limit_tripped("max_connections");
                if self.over_cap.first() {
                    tracing::warn!(%peer, max_connections = self.state.limits.max_connections, "connection limit reached; closing new connections at once");
                }
                drop(stream);
            }
        }
    }

    /// Runs one connection (after a TLS handshake, if configured) on its own task.
    fn spawn(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let stream = Heard {
            inner: stream,
            on: activity.clone(),
        };
        let state = self.state.clone();
        let seen = activity.clone();
        let connect = self.connect.clone();
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let state = state.clone();
            let connect = connect.clone();
            let running = Running::new(&seen);
            async move {
                let r = if req.method() == hyper::Method::CONNECT {
                    match connect {
                        Some(mode) => super::connect::answer(state, mode, peer, req).await,
                        None => super::connect::disabled(),
                    }
                } else {
                    handle(state, peer, req).await
                };
                // Running until the response body is sent or dropped.
                Ok::<_, std::convert::Infallible>(super::handler::hold(r, running))
            }
        });
        let dog = watchdog(
            activity,
            self.state.limits.clone(),
            self.state.metrics.clone(),
        );
        let conn = ConnCtx {
            acceptor: self.acceptor.clone(),
            builder: self.builder.clone(),
            watcher: self.graceful.watcher(),
            handshake_timeout: self.state.limits.header_read_timeout,
            peer,
        };
        let metrics = self.state.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                r = conn.serve(stream, svc) => if let Err(e) = r {
                    let timeout = e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout);
                    if timeout {
                        metrics.limit_tripped("header_read_timeout");
                    }
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                () = dog => tracing::debug!(%peer, "connection closed: header-read or idle timeout"),
            }
        });
    }
}

/// What one connection task serves with.
struct ConnCtx {
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    handshake_timeout: Duration,
    peer: SocketAddr,
}

type ConnError = Box<dyn std::error::Error + Send + Sync>;

impl ConnCtx {
    /// The TLS handshake (within the header-read timeout), then HTTP until the connection ends.
    async fn serve<S>(self, stream: Watched, svc: S) -> Result<(), ConnError>
    where
        S: hyper::service::Service<
                hyper::Request<hyper::body::Incoming>,
                Response = hyper::Response<super::response::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let Some(acc) = self.acceptor else {
            let conn = self
                .builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc);
            return self.watcher.watch(conn).await;
        };
        let tls = match tokio::time::timeout(self.handshake_timeout, acc.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(tls), svc);
        self.watcher.watch(conn).await
    }
}
