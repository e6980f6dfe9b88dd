//! Sockets, TLS, connections and shutdown.
//!
//! Owns: [`ProxyConfig`] → a running server: opening the cache, loading htpasswd/policy/TLS, the
//! listen-address rule (a non-loopback address needs `--htpasswd` or `--allow-anonymous`,
//! because the proxy lends the host's registry credentials to whoever can reach it), the accept
//! loop (hyper 1 + hyper-util `auto`: HTTP/1.1 and h2 on one port, h2 via ALPN under TLS) and
//! graceful shutdown on SIGTERM/SIGINT (stop accepting, let requests in flight finish for up to
//! 30 s; blob downloads already running keep their verify-then-rename rule, so a cut leaves only
//! temp files, removed at the next start).
//!
//! Does not own: request logic ([`super::handler`]).

use super::cache::{Cache, CacheError};
use super::client_auth::{ClientAuth, HtpasswdError};
use super::fetch::{Fetcher, FetcherError};
use super::handler::handle;
use super::metrics::Metrics;
use super::policy::{Policy, PolicyError};
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
    let policy = match &cfg.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let metrics = Arc::new(Metrics::default());
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
    let creds = CredStore::new(cfg.resolver.clone());
    let client = Arc::new(UpstreamClient::new(fetcher, creds, metrics.clone()));
    Ok(Arc::new(ProxyState {
        routes: Routes { aliases, default },
        client,
        cache,
        flights: Arc::new(Flights::default()),
        policy,
        metrics,
        client_auth,
        tag_ttl: cfg.tag_ttl,
    }))
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
    tracing::info!(
        listen = %local,
        tls = tls.is_some(),
        client_auth = cfg.htpasswd.is_some(),
        cache = %cfg.cache_dir.display(),
        default_upstream = %state.routes.default.base_url(),
        upstreams = state.routes.aliases.len(),
        "regauth proxy ready"
    );
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
    if tokio::time::timeout(Duration::from_secs(30), conns.graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after 30 s; exiting anyway");
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
