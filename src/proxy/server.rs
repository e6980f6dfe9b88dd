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
//! Does not own: request logic ([`super::handler`]).

use super::cache::{Cache, CacheError};
use super::client_auth::{ClientAuth, HtpasswdError};
use super::fetch::{Fetcher, FetcherError};
use super::handler::handle;
use super::metrics::Metrics;
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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    pub tag_ttl: Duration,
    /// Extra CA (PEM) trusted for upstreams.
    pub upstream_ca: Option<PathBuf>,
    /// `--allow-registry` patterns, on top of the upstreams and the credential sources' keys.
    pub allow_registries: Vec<String>,
    /// Credential answers kept (one per registry, or per repository under the GitLab profile).
    pub credential_cache_entries: usize,
    /// `--cache-max-size`, `--cache-min-free`, `--confirm-ttl` (the policy's pins are added).
    pub cache_limits: crate::proxy::cache::Limits,
}

/// Start-up failures, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {0}: a non-loopback address exposes this host's registry credentials to the network; pass --htpasswd FILE (client authentication) or --allow-anonymous"
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
    let cache = Cache::open(&cfg.cache_dir)?
        .with_limits(limits)
        .with_metrics(metrics.clone());
    let client_auth = match &cfg.htpasswd {
        Some(p) => Some(Arc::new(ClientAuth::load(p)?)),
        None => None,
    };
    let fetcher = Fetcher::new(cfg.upstream_ca.as_deref())?;
    let creds = CredStore::new(cfg.resolver.clone(), cfg.credential_cache_entries);
    let client = Arc::new(UpstreamClient::new(fetcher, creds, metrics.clone()));
    Ok(Arc::new(ProxyState {
        routes: Routes::new(aliases, default, reach),
        reach_sources: sources,
        client,
        cache,
        flights: Arc::new(Flights::default()),
        policy,
        metrics,
        client_auth,
        tag_ttl: cfg.tag_ttl,
    }))
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
    if !cfg.listen.ip().is_loopback() && cfg.htpasswd.is_none() && !cfg.allow_anonymous {
        return Err(ServerError::OpenListen(cfg.listen));
    }
    let tls = listener_tls(&cfg.tls)?;
    let state = build_state(&cfg)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(cfg.listen);
    announce(&state, local, &cfg, tls.is_some());
    let conns = Connections {
        acceptor: tls.map(tokio_rustls::TlsAcceptor::from),
        builder: auto::Builder::new(TokioExecutor::new()),
        graceful: hyper_util::server::graceful::GracefulShutdown::new(),
        state,
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down: no new connections, finishing requests in flight");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => conns.spawn(stream, peer),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
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

/// What each accepted connection is run with.
struct Connections {
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    state: Arc<ProxyState>,
}

impl Connections {
    /// Runs one connection (after a TLS handshake, if configured) on its own task.
    fn spawn(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let state = self.state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
        });
        let Some(acc) = self.acceptor.clone() else {
            let conn = self
                .builder
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned();
            let fut = self.graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = fut.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
            return;
        };
        let builder = self.builder.clone();
        let watcher = self.graceful.watcher();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acc.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let conn = builder
                .serve_connection(TokioIo::new(tls), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
