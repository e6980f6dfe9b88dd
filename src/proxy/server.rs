//! Step 9: sockets, TLS, connections and shutdown.
//!
//! Owns: [`ProxyConfig`] → a running server: opening the cache, loading htpasswd/policy/TLS, the
//! listen-address rule (a non-loopback address needs `--htpasswd` or `--allow-anonymous`,
//! because the proxy lends the host's registry credentials to whoever can reach it), the accept
//! loop (hyper 1 + hyper-util `auto`: HTTP/1.1 and h2 on one port, h2 via ALPN under TLS) and
//! graceful shutdown on SIGTERM/SIGINT (stop accepting, let requests in flight finish for up to
//! 30 s; blob downloads already running keep their verify-then-rename rule, so a cut leaves only
//! temp files, removed at the next start).
//!
//! Does not own: request logic ([`super::serve`]).

use super::cache::Cache;
use super::client_auth::ClientAuth;
use super::fetch::{Fetcher, UpstreamClient};
use super::metrics::Metrics;
use super::policy::Policy;
use super::route::{Routes, Upstream};
use super::serve::{ProxyState, handle};
use super::upstream_auth::Authorizer;
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
}

/// Start-up failures, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {0}: a non-loopback address exposes this host's registry credentials to the network; pass --htpasswd FILE (client authentication) or --allow-anonymous"
    )]
    OpenListen(SocketAddr),
    #[error("{0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the shared state (also used by tests of the library).
pub fn build_state(cfg: &ProxyConfig) -> Result<Arc<ProxyState>, ServerError> {
    let c = |e: String| ServerError::Config(e);
    let mut aliases = Vec::new();
    for (name, url) in &cfg.upstreams {
        aliases.push(Upstream::from_url(name, url).map_err(c)?);
    }
    let default = Upstream::from_url("default", &cfg.default_upstream).map_err(c)?;
    let cache = Cache::open(&cfg.cache_dir).map_err(|e| c(e.to_string()))?;
    let policy = match &cfg.policy {
        Some(p) => Policy::load(p).map_err(|e| c(e.to_string()))?,
        None => Policy::default(),
    };
    let client_auth = match &cfg.htpasswd {
        Some(p) => Some(Arc::new(ClientAuth::load(p).map_err(|e| c(e.to_string()))?)),
        None => None,
    };
    let fetcher = Fetcher::new(cfg.upstream_ca.as_deref()).map_err(c)?;
    let client = Arc::new(UpstreamClient {
        fetcher,
        creds: Arc::new(CredStore::new(cfg.resolver.clone())),
        auth: Authorizer::default(),
    });
    Ok(Arc::new(ProxyState {
        routes: Routes { aliases, default },
        client,
        cache,
        flights: Arc::new(Flights::default()),
        policy,
        metrics: Arc::new(Metrics::default()),
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

/// Runs until SIGTERM/SIGINT.
pub async fn run(cfg: ProxyConfig) -> Result<(), ServerError> {
    if !cfg.listen.ip().is_loopback() && cfg.htpasswd.is_none() && !cfg.allow_anonymous {
        return Err(ServerError::OpenListen(cfg.listen));
    }
    let tls = match &cfg.tls {
        TlsSetting::Off => None,
        TlsSetting::Files { cert, key } => Some(
            super::tls::server_config(cert, key).map_err(|e| ServerError::Config(e.to_string()))?,
        ),
        TlsSetting::Generate(dir) => {
            let (cert, key) =
                super::tls::generate(dir).map_err(|e| ServerError::Config(e.to_string()))?;
            tracing::info!(ca = %dir.join("ca.pem").display(), "TLS certificate ready; clients should trust ca.pem");
            Some(
                super::tls::server_config(&cert, &key)
                    .map_err(|e| ServerError::Config(e.to_string()))?,
            )
        }
    };
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
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down: no new connections, finishing requests in flight");
                break;
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(st, req).await) }
                });
                match &acceptor {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                        let fut = graceful.watch(conn);
                        tokio::spawn(async move {
                            if let Err(e) = fut.await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Some(acc) => {
                        let acc = acc.clone();
                        let builder = builder.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let tls = match tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                }
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after 30 s; exiting anyway");
    }
    Ok(())
}
