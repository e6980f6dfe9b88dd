//! `regauth proxy`: parse flags, set up logging, run [`regauth::proxy::run`].

use super::ResolverArgs;
use anyhow::Context;
use clap::{Args, ValueEnum};
use regauth::config::locations::{Env, regauth_cache_dir};
use regauth::proxy::{ProxyConfig, TlsSetting};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Run the verifying pull-through auth proxy (OCI distribution pull API).
///
/// Clients pull without credentials; the proxy adds the host's upstream credentials (resolved
/// like the docker CLI or GitLab Runner would), verifies every manifest and blob against its
/// digest before a client can complete the download, and caches verified content.
///
/// Routing: /v2/<alias>/<repo>/…, /v2/<host[:port]>/<repo>/…, containerd's ?ns=<host>, else the
/// default upstream. Endpoints: /v2/… (pull API), /healthz, /metrics (Prometheus).
/// Log filter: REGAUTH_LOG (default "info").
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address to listen on. A non-loopback address needs --htpasswd or --allow-anonymous.
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// An upstream alias, NAME=URL (repeatable), e.g. myreg=https://registry.example.com:5000.
    #[arg(long = "upstream", value_name = "NAME=URL")]
    pub upstreams: Vec<String>,
    /// Upstream for requests with no alias, host or ns hint (dockerd registry-mirrors).
    #[arg(
        long,
        default_value = "https://registry-1.docker.io",
        value_name = "URL"
    )]
    pub default_upstream: String,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    /// Cache folder (default: $XDG_CACHE_HOME/regauth or ~/.cache/regauth).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Digest-pin policy (JSON: {"digest_only":[…],"pins":{"<upstream>/<repo>[:tag]":"sha256:…"}}).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_generate"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Create (once) a local CA and a certificate for localhost/127.0.0.1/::1 in DIR and serve TLS;
    /// clients trust DIR/ca.pem.
    #[arg(long, value_name = "DIR")]
    pub tls_generate: Option<PathBuf>,
    /// Require client authentication against this bcrypt htpasswd file (htpasswd -B).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Allow unauthenticated clients on a non-loopback address.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Seconds a tag→digest answer is used before asking the upstream again (HEAD).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub tag_ttl: u64,
    /// Extra CA certificates (PEM) to trust for upstream registries.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGAUTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

pub fn run(a: ProxyArgs) -> anyhow::Result<i32> {
    init_logging(a.log_format);
    let mut upstreams = Vec::new();
    for u in &a.upstreams {
        let (name, url) = u
            .split_once('=')
            .with_context(|| format!("--upstream {u:?}: expected NAME=URL"))?;
        if name.is_empty() || name.contains('/') || name.contains('.') || name.contains(':') {
            anyhow::bail!(
                "--upstream {u:?}: NAME must be a plain alias (no '/', '.' or ':'), so it cannot be mistaken for a host"
            );
        }
        upstreams.push((name.to_owned(), url.to_owned()));
    }
    let cache_dir = match a.cache_dir {
        Some(d) => d,
        None => regauth_cache_dir(&Env::from_process())
            .context("no --cache-dir and neither XDG_CACHE_HOME nor HOME is set")?,
    };
    let tls = match (a.tls_cert, a.tls_key, a.tls_generate) {
        (Some(cert), Some(key), _) => TlsSetting::Files { cert, key },
        (_, _, Some(dir)) => TlsSetting::Generate(dir),
        _ => TlsSetting::Off,
    };
    let cfg = ProxyConfig {
        listen: a.listen,
        upstreams,
        default_upstream: a.default_upstream,
        resolver: a.resolver.resolver(),
        cache_dir,
        policy: a.policy,
        tls,
        htpasswd: a.htpasswd,
        allow_anonymous: a.allow_anonymous,
        tag_ttl: Duration::from_secs(a.tag_ttl),
        upstream_ca: a.upstream_ca,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(regauth::proxy::run(cfg))?;
    Ok(0)
}
