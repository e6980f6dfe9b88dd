//! `regauth proxy`: parse flags, set up logging, run [`regauth::proxy::run`].
//!
//! Owns: the `--listen` forms and the `--upstream NAME=URL` grammar, both checked at argument
//! parsing so a typo never reaches the running proxy.
//!
//! `--listen` takes `HOST:PORT`, `[V6]:PORT`, `localhost:PORT` and `:PORT`. Unlike Go (and so
//! docker and kubectl's `--address`), where `:PORT` means every interface, here `:PORT` is
//! `127.0.0.1:PORT`: the proxy hands out the host's registry credentials, its default is
//! loopback-only and a non-loopback address needs `--htpasswd` or `--allow-anonymous`, so a
//! shorthand must never widen who can reach it. Every interface is spelled `0.0.0.0:PORT` or
//! `[::]:PORT`. `localhost` is `127.0.0.1` (RFC 6761), not a DNS lookup; other host names are
//! refused, as they can resolve to several addresses.

use super::ResolverArgs;
use anyhow::Context;
use clap::{Args, ValueEnum};
use regauth::config::locations::{Env, regauth_cache_dir};
use regauth::proxy::cache::StoreConfig;
use regauth::proxy::limits::Limits;
use regauth::proxy::store::object::StoreUrl;
use regauth::proxy::{ProxyConfig, TlsSetting};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

pub const EXAMPLES: &str = r#"Examples:
  # Loopback only, for dockerd's registry-mirrors on the same host (":5000" = 127.0.0.1:5000)
  regauth proxy --listen :5000 --upstream private=https://registry.example.com:5000

  # A runner sidecar (docker compose: gitlab-runner + dind + regauth), clients authenticated
  regauth proxy --listen 0.0.0.0:5000 --htpasswd /etc/regauth/htpasswd \
    --upstream private=https://registry.example.com:5000 --profile gitlab

  # ECR through the host's credHelpers ({"credHelpers": {"<account>.dkr.ecr.<region>.amazonaws.com": "ecr"}})
  regauth proxy --upstream ecr=https://123456789012.dkr.ecr.eu-west-1.amazonaws.com

  # A fleet member: verified content in a shared bucket, a 20G local tier in front, the bucket
  # kept under 2T by one elected sweeper (AWS_ENDPOINT_URL, AWS_REGION, credentials from the env)
  regauth proxy --store s3://ci-cache/regauth --store-max-size 2T --cache-max-size 20G

  # Then pull through it
  docker pull 127.0.0.1:5000/private/namespace/image:tag

  # CONNECT mode: any allowlisted registry through HTTPS_PROXY, no image renaming
  regauth proxy --listen :5000 --connect --ca-dir /var/lib/regauth/connect-ca \
    --connect-tunnel github.com
  HTTPS_PROXY=http://127.0.0.1:5000 SSL_CERT_FILE=/var/lib/regauth/connect-ca/ca.pem \
    skopeo copy docker://registry.example.com/team/app:1 oci:/tmp/app:1

  # A shared runner: each job pulls with its own job token (DOCKER_AUTH_CONFIG keyed by the proxy)
  regauth proxy --listen 0.0.0.0:5000 --pass-through --upstream gl=https://registry.gitlab.example.com
  # in the job: echo "$CI_JOB_TOKEN" | docker login -u gitlab-ci-token --password-stdin proxy:5000

  # Tenants: htpasswd users and job tokens, each limited to its repositories (see docs/proxy.md)
  regauth proxy --listen 0.0.0.0:5000 --htpasswd /etc/regauth/htpasswd --access /etc/regauth/access.toml
  # access.toml:
  #   [[access]]
  #   identity = "u1"                                   # an --htpasswd user ("pass-through", "anonymous")
  #   repositories = ["registry.example.com/team-a/*"]  # canonical registry, then a path glob
  #   credentials = "proxy"                             # or "client" (pass-through only)

Exit status: 0 after a clean shutdown, 2 when it cannot start (bad flags, address in use, bad
TLS/policy/htpasswd files)."#;

/// Run the verifying pull-through auth proxy (OCI distribution pull API).
///
/// Clients pull without credentials; the proxy adds the host's upstream credentials (resolved
/// like the docker CLI or GitLab Runner would), verifies every manifest and blob against its
/// digest before a client can complete the download, and caches verified content.
///
/// Routing: /v2/<alias>/<repo>/…, /v2/<host[:port]>/<repo>/…, containerd's ?ns=<host>, else the
/// default upstream. Endpoints: /v2/… (pull API), /healthz, /metrics (Prometheus).
/// Log filter: --log-level, -v/-q, else REGAUTH_LOG (default "info").
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address to listen on: HOST:PORT, [V6]:PORT, localhost:PORT or :PORT (= 127.0.0.1:PORT;
    /// every interface is 0.0.0.0:PORT). A non-loopback address needs --htpasswd or
    /// --allow-anonymous.
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// An upstream alias, NAME=URL (repeatable), e.g. myreg=https://registry.example.com:5000.
    /// NAME is lowercase letters, digits, '-' and '_' (it is the first path segment of a pull).
    #[arg(long = "upstream", value_name = "NAME=URL", value_parser = parse_upstream)]
    pub upstreams: Vec<UpstreamArg>,
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
    /// Use a client's own registry credentials upstream for its requests, instead of the
    /// proxy's: Basic credentials whose user is not in --htpasswd (after `docker login <proxy>`,
    /// or a job's DOCKER_AUTH_CONFIG keyed by the proxy's host, e.g.
    /// gitlab-ci-token:$CI_JOB_TOKEN) go to every upstream for that client; clients without
    /// credentials get 401. The upstream decides what each client may pull.
    #[arg(long)]
    pub pass_through: bool,
    /// Access rules (TOML, or JSON for *.json): which identity (htpasswd user, "pass-through",
    /// "anonymous") may pull which canonical registry/repository patterns, with whose credentials
    /// ("proxy" or "client"). Without it every admitted client may pull everything (single-tenant).
    #[arg(long, value_name = "FILE")]
    pub access: Option<PathBuf>,
    /// Seconds an upstream's confirmation (these credentials may pull this digest from this
    /// repository) serves cached content before the upstream is asked again (one HEAD): how long
    /// a revoked grant upstream can take to apply. While the upstream is unreachable a
    /// confirmation up to an hour old still serves.
    #[arg(long, default_value_t = regauth::proxy::confirmations::DEFAULT_AUTHZ_TTL.as_secs(), value_name = "SECS")]
    pub authz_ttl: u64,
    /// Seconds a tag→digest answer is used before asking the upstream again (HEAD).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub tag_ttl: u64,
    /// Extra CA certificates (PEM) to trust for upstream registries.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Also reach registries matching PATTERN (repeatable): host, host:port, host:* (any port),
    /// *.domain, *.domain:port. Without it the proxy contacts only its upstreams and the
    /// registries its credential sources name (auths/credHelpers keys, credsStore entries);
    /// `?ns=` or a host prefix naming anything else is refused with 403 before any connection.
    #[arg(long = "allow-registry", value_name = "PATTERN")]
    pub allow_registries: Vec<String>,
    /// Credential answers kept in memory (one per registry; per repository with --profile gitlab).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub credential_cache_entries: usize,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Bound the cache while serving: least recently used entries are evicted to stay at most
    /// SIZE (e.g. 20G, 500M); entries being read or downloaded, and policy pins, are kept.
    #[arg(long, value_name = "SIZE", value_parser = super::cache::parse_size)]
    pub cache_max_size: Option<u64>,
    /// Keep verified content (blobs, manifests, tag entries) in a bucket shared by a fleet of
    /// proxies: s3://BUCKET[/PREFIX], configured from the standard AWS environment
    /// (AWS_ENDPOINT_URL, AWS_REGION, the credentials chain, AWS_ALLOW_HTTP=true for a loopback
    /// http endpoint). Content is uploaded only after its digest matched, with a conditional
    /// create. --cache-dir keeps staging and confirmations; with --cache-max-size it is also a
    /// local tier in front of the bucket. See docs/fleet.md.
    #[arg(long, value_name = "URL", value_parser = parse_store)]
    pub store: Option<StoreUrl>,
    /// Bound the bucket (--store) fleet-wide: one member at a time, elected by a lease object in
    /// the bucket, evicts least recently used content to stay at most SIZE.
    #[arg(long, value_name = "SIZE", requires = "store", value_parser = super::cache::parse_size)]
    pub store_max_size: Option<u64>,
    /// Seconds between sweeps of the bucket (--store-max-size); also how often a hit refreshes
    /// an entry's access record, and how recently used content is never evicted.
    #[arg(long, default_value_t = 60, value_name = "SECS", requires = "store")]
    pub store_sweep_interval: u64,
    /// Stop caching (pulls still stream, verified) when the cache's file system has less than
    /// SIZE free; 0 turns the guard off.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = super::cache::parse_size)]
    pub cache_min_free: u64,
    /// Seconds the cache's origin record (this registry served these bytes and they verified) is
    /// kept; after it, cached bytes are served for that registry only once it serves them again.
    /// Who may have them is --authz-ttl's.
    #[arg(long, default_value_t = 86_400, value_name = "SECS")]
    pub confirm_ttl: u64,
    /// CONNECT mode: also be the HTTP forward proxy of HTTPS_PROXY (dockerd, containerd, skopeo,
    /// podman) on the same listener. A CONNECT to a registry in the allowlist is intercepted
    /// with a leaf from the CA in --ca-dir and served like any pull (credentials, verification,
    /// cache; no image renaming); --connect-tunnel hosts are tunnelled unchanged; anything else
    /// gets 403. Example: regauth proxy --connect --ca-dir /var/lib/regauth/ca, then
    /// HTTPS_PROXY=http://127.0.0.1:5000 and trust /var/lib/regauth/ca/ca.pem.
    #[arg(long, requires = "ca_dir")]
    pub connect: bool,
    /// The CONNECT CA's folder: created once (ca.pem public, ca-key.pem 0600, name-constrained
    /// to the registries allowed at creation), reused on restart. Clients trust DIR/ca.pem.
    #[arg(long, value_name = "DIR", requires = "connect")]
    pub ca_dir: Option<PathBuf>,
    /// With --connect, tunnel CONNECTs to hosts matching PATTERN unchanged (repeatable; the
    /// --allow-registry grammar: host, host:port, host:*, *.domain[:port]), e.g.
    /// --connect-tunnel github.com --connect-tunnel '*.githubusercontent.com'. A *.domain
    /// pattern never connects to internal addresses.
    #[arg(long = "connect-tunnel", value_name = "PATTERN", requires = "connect")]
    pub connect_tunnels: Vec<String>,
    /// With --connect, leaf certificates kept in memory (one per intercepted host).
    #[arg(long, value_name = "N", default_value_t = regauth::proxy::connect::ConnectSettings::DEFAULT_MAX_LEAVES)]
    pub connect_max_leaves: usize,
    /// With --connect, seconds a tunnel may go without a byte either way before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = regauth::proxy::connect::ConnectSettings::DEFAULT_TUNNEL_IDLE.as_secs())]
    pub connect_tunnel_idle_timeout: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub peers: PeerArgs,
}

/// Fleet mode: members that fetch each blob from upstream once for all (see docs/fleet.md).
#[derive(Args, Debug)]
#[command(next_help_heading = "Fleet peers (cross-node single-flight; docs/fleet.md)")]
pub struct PeerArgs {
    /// A fleet member's URL (repeatable; list every member, this one included, the same on all),
    /// e.g. --peer http://runner1:5000 --peer http://runner2:5000 --peer http://runner3:5000.
    /// Each blob digest gets one owner by rendezvous hashing over the healthy members; a cold
    /// blob on another member streams from the owner (verified again here), so a layer comes
    /// from upstream once for the fleet. Needs --advertise and --peer-secret-file.
    #[arg(long = "peer", value_name = "URL", requires_all = ["advertise", "peer_secret_file"])]
    pub peers: Vec<String>,
    /// Which --peer URL is this member, e.g. --advertise http://runner1:5000.
    #[arg(long, value_name = "URL", requires = "peers")]
    pub advertise: Option<String>,
    /// The secret the members share (mode 0600, at least 16 bytes; e.g. `openssl rand -hex 32 >
    /// /etc/regauth/peer.secret && chmod 600 /etc/regauth/peer.secret`). Peer requests carry an
    /// HMAC-SHA256 of method, path and time under it, never the secret itself.
    #[arg(long, value_name = "FILE", requires = "peers")]
    pub peer_secret_file: Option<PathBuf>,
}

/// The bounds of `regauth::proxy::limits::Limits`, one flag each (defaults = `Limits::default()`).
#[derive(Args, Debug)]
#[command(next_help_heading = "Limits (see the security model in docs/proxy.md)")]
pub struct LimitArgs {
    /// Seconds a client has to send a request's headers (slowloris); also the TLS handshake.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().header_read_timeout.as_secs())]
    pub header_read_timeout: u64,
    /// Seconds a connection with no request running and no I/O is kept open.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().idle_timeout.as_secs())]
    pub idle_timeout: u64,
    /// Open client connections at most (also kept below the descriptor limit); more are closed.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Largest manifest or tag list read from an upstream (bytes; K/M/G or KiB/MiB/GiB suffix).
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_size)]
    pub max_manifest_size: usize,
    /// Memory for all buffered manifests and tag lists together (bytes; suffixes as above).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub buffer_budget: usize,
    /// Seconds a buffered upstream body (manifest, tag list) may take to arrive.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().body_read_timeout.as_secs())]
    pub body_read_timeout: u64,
    /// Seconds a blob download may take in all, whether or not a client still waits.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().download_deadline.as_secs())]
    pub download_deadline: u64,
    /// A blob download slower than this (bytes/s, averaged over --rate-window) is aborted.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = parse_size)]
    pub download_min_rate: usize,
    /// Seconds over which --download-min-rate is averaged.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().rate_window.as_secs())]
    pub rate_window: u64,
    /// Failed client authentications per client address and window before 429 (no bcrypt run).
    #[arg(long, value_name = "N", default_value_t = Limits::default().auth_failures)]
    pub auth_failures: u32,
    /// Seconds of the --auth-failures window.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().auth_failure_window.as_secs())]
    pub auth_failure_window: u64,
    /// Seconds a bcrypt verdict is remembered (keyed by a SHA-256 of the Authorization value).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().auth_cache_ttl.as_secs())]
    pub auth_cache_ttl: u64,
    /// A further name clients use for a loopback listener (repeatable); other Host values get 421
    /// (DNS rebinding). The listen address and localhost are always accepted.
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        let secs = Duration::from_secs;
        Limits {
            header_read_timeout: secs(self.header_read_timeout.max(1)),
            idle_timeout: secs(self.idle_timeout.max(1)),
            max_connections: self.max_connections.max(1),
            max_manifest_bytes: self.max_manifest_size,
            buffer_budget_bytes: self.buffer_budget.max(self.max_manifest_size),
            body_read_timeout: secs(self.body_read_timeout.max(1)),
            download_deadline: secs(self.download_deadline.max(1)),
            download_min_rate: self.download_min_rate as u64,
            rate_window: secs(self.rate_window.max(1)),
            auth_failures: self.auth_failures.max(1),
            auth_failure_window: secs(self.auth_failure_window),
            auth_cache_ttl: secs(self.auth_cache_ttl),
            ..Limits::default()
        }
    }
}

/// A byte size as `usize` (the grammar of [`super::cache::parse_size`]).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let n = super::cache::parse_size(s)?;
    usize::try_from(n).map_err(|_| format!("{s:?}: too large"))
}

/// One `--upstream NAME=URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamArg {
    pub name: String,
    pub url: String,
}

/// `--listen`: see the module docs for the forms and why `:PORT` is loopback.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:PORT, [V6]:PORT or :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    match host {
        "" | "localhost" => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        h => Err(format!(
            "{s:?}: {h:?} is not an IP address; give one (0.0.0.0:{port} for every interface, \
             :{port} for loopback)"
        )),
    }
}

/// `--upstream NAME=URL`: NAME a plain lowercase path segment, URL http(s)://host[:port].
pub fn parse_upstream(s: &str) -> Result<UpstreamArg, String> {
    let (name, url) = s.split_once('=').ok_or_else(|| {
        format!("{s:?}: expected NAME=URL, e.g. myreg=https://registry.example.com")
    })?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !name_ok {
        return Err(format!(
            "{s:?}: NAME {name:?} must be lowercase letters, digits, '-' or '_' (no '.', ':' or \
             '/', so it cannot be mistaken for a registry host)"
        ));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| format!("{s:?}: {url:?} is not a URL"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let path_ok = matches!(uri.path(), "" | "/");
    if !scheme_ok || uri.host().is_none_or(str::is_empty) || !path_ok || uri.query().is_some() {
        return Err(format!(
            "{s:?}: URL must be http(s)://HOST[:PORT] with no path, e.g. https://registry.example.com:5000"
        ));
    }
    Ok(UpstreamArg {
        name: name.to_owned(),
        url: url.to_owned(),
    })
}

/// Checks across flags that clap cannot express: every alias once.
pub fn validate(a: &ProxyArgs) -> Result<(), String> {
    let mut seen = std::collections::BTreeMap::new();
    for u in &a.upstreams {
        if let Some(prev) = seen.insert(u.name.as_str(), u.url.as_str()) {
            return Err(format!(
                "--upstream alias {:?} given twice ({prev} and {}); each alias names one upstream",
                u.name, u.url
            ));
        }
    }
    Ok(())
}

/// `--store`: `s3://BUCKET[/PREFIX]`.
pub fn parse_store(s: &str) -> Result<StoreUrl, String> {
    StoreUrl::parse(s).map_err(|e| e.to_string())
}

pub fn run(a: ProxyArgs, log_level: Option<&str>) -> anyhow::Result<i32> {
    super::init_logging(log_level, "info", matches!(a.log_format, LogFormat::Json));
    validate(&a).map_err(anyhow::Error::msg)?;
    let upstreams = a
        .upstreams
        .iter()
        .map(|u| (u.name.clone(), u.url.clone()))
        .collect();
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
        access: a.access,
        pass_through: a.pass_through,
        authz_ttl: Duration::from_secs(a.authz_ttl),
        tag_ttl: Duration::from_secs(a.tag_ttl),
        upstream_ca: a.upstream_ca,
        allow_registries: a.allow_registries,
        credential_cache_entries: a.credential_cache_entries,
        cache_limits: regauth::proxy::cache::Limits {
            max_size: a.cache_max_size,
            min_free: a.cache_min_free,
            confirm_ttl: Duration::from_secs(a.confirm_ttl),
            keep: Default::default(),
        },
        limits: a.limits.limits(),
        server_names: a.limits.server_names,
        peers: regauth::proxy::peer::PeerConfig {
            peers: a.peers.peers,
            advertise: a.peers.advertise,
            secret_file: a.peers.peer_secret_file,
        },
        connect: match (a.connect, a.ca_dir) {
            (true, Some(ca_dir)) => Some(regauth::proxy::connect::ConnectSettings {
                ca_dir,
                tunnels: a.connect_tunnels,
                max_leaves: a.connect_max_leaves.max(1),
                tunnel_idle_timeout: Duration::from_secs(a.connect_tunnel_idle_timeout.max(1)),
            }),
            _ => None,
        },
        store: a.store.map(|url| StoreConfig {
            url,
            max_size: a.store_max_size,
            sweep_interval: Duration::from_secs(a.store_sweep_interval.max(1)),
            local_tier: a.cache_max_size.is_some(),
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(regauth::proxy::run(cfg))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen(":5000").unwrap(),
            "127.0.0.1:5000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("localhost:5001").unwrap(),
            "127.0.0.1:5001".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:5000").unwrap(),
            "0.0.0.0:5000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:5000").unwrap(),
            "[::1]:5000".parse().unwrap()
        );
        assert!(parse_listen("example.com:5000").is_err());
        assert!(parse_listen("5000").is_err());
        assert!(parse_listen(":99999").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn upstream_grammar() {
        assert_eq!(
            parse_upstream("my-reg=https://r.example:5000")
                .unwrap()
                .name,
            "my-reg"
        );
        for bad in [
            "noequals",
            "=https://r.example",
            "My=https://r.example",
            "a.b=https://r.example",
            "a=ftp://r.example",
            "a=https://",
            "a=https://r.example/v2/",
            "a=not a url",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
