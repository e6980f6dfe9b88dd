//! What `/metrics` reports, on the `prometheus-client` crate (OpenMetrics text exposition).
//!
//! Owns: [`Metrics`] — the registry and every metric family, and the small API the request path
//! calls (`request`, `upstream_request`, `upstream_error`, `cache_hit`, `limit_tripped`, …). The
//! list of metrics with their labels, and what to alert on, is `docs/metrics.md`; keep the two in
//! step.
//!
//! Why labels are closed sets: a label value that a client can choose (a repository, a `?ns=`
//! host, a user name) lets anyone grow the series without bound and tells a scraper what was
//! pulled. So `route` is one of [`RouteKind`]'s words, `upstream` is a configured alias, the
//! configured default's registry host or a well-known public registry ([`KNOWN_REGISTRIES`]) —
//! anything else is `other` — and `kind`/`limit` are fixed words chosen by the code.
//!
//! Why a crate: exposition has escaping, `_total`/`_bucket` suffixes and `# EOF` rules that the
//! crate gets right; the brief forbids hand-formatted exposition.
//!
//! Does not own: deciding what happened (the handlers, [`super::upstream`], [`super::verify`]
//! call in) or the access log ([`super::handler`]).

pub use super::error::UpstreamErrorKind;
use super::route::Upstream;
use super::store::ContentKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Public registries that may appear as an `upstream` label even when reached by `?ns=`/host.
pub const KNOWN_REGISTRIES: &[&str] = &[
    "docker.io",
    "ghcr.io",
    "quay.io",
    "gcr.io",
    "registry.k8s.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "registry.gitlab.com",
    "nvcr.io",
];

/// The `route` label: what kind of request a client made (never which repository).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Base,
    Manifest,
    Blob,
    Tags,
    Upload,
    Healthz,
    Metrics,
    Other,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Base => "base",
            RouteKind::Manifest => "manifest",
            RouteKind::Blob => "blob",
            RouteKind::Tags => "tags",
            RouteKind::Upload => "upload",
            RouteKind::Healthz => "healthz",
            RouteKind::Metrics => "metrics",
            RouteKind::Other => "other",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamStatus {
    upstream: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamKind {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Every `outcome` of a CONNECT session (`regauth_connect_sessions_total`); never a host name.
pub const CONNECT_OUTCOMES: [&str; 5] = [
    "intercepted",
    "tunnelled",
    "refused",
    "unauthorized",
    "failed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOpOutcome {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOp {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Every `reason` of `regauth_access_denied_total`, present at zero from the start.
pub const DENIAL_REASONS: [&str; 3] = ["access_rules", "anonymous", "upstream"];

/// Every `limit` label value (the bounds of `super::limits`), present at zero from the start.
pub const LIMITS: [&str; 11] = [
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
    "accept_error",
    "max_manifest_size",
    "buffer_budget",
    "body_read_timeout",
    "download_deadline",
    "download_min_rate",
    "host",
    "auth_failures",
];

fn duration_histogram() -> Histogram {
    // 5 ms … ~82 s: a cached manifest to a cold multi-GB layer.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    /// `up.key()` of each configured upstream → its label.
    configured: HashMap<String, String>,
    requests: Family<RouteStatus, Counter>,
    duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    served_bytes: Family<RouteLabel, Counter>,
    upstream_requests: Family<UpstreamStatus, Counter>,
    upstream_errors: Family<UpstreamKind, Counter>,
    upstream_bytes: Family<UpstreamLabel, Counter>,
    upstream_blob_fetches: Family<UpstreamLabel, Counter>,
    cache_hits: Family<KindLabel, Counter>,
    cache_misses: Family<KindLabel, Counter>,
    verification_failures: Family<KindLabel, Counter>,
    limit_trips: Family<LimitLabel, Counter>,
    coalesced: Counter,
    stale_served: Counter,
    revalidated: Counter,
    policy_denied: Counter,
    client_unauthorized: Counter,
    cache_evicted: Counter,
    cache_evicted_bytes: Counter,
    cache_skipped_low_disk: Counter,
    confirm_expired: Counter,
    /// Fleet peers ([`super::peer`]).
    peers: PeerMetrics,
    connect_sessions: Family<OutcomeLabel, Counter>,
    connect_active: prometheus_client::metrics::gauge::Gauge,
    connect_leaves: Counter,
    store_requests: Family<StoreOpOutcome, Counter>,
    store_duration: Family<StoreOp, Histogram, fn() -> Histogram>,
    store_sweeps: Counter,
    access_denied: Family<ReasonLabel, Counter>,
}

/// The fleet-peer families: what this member asked its peers, what it served them, and each
/// peer's health. The `peer` label is a configured `--peer` URL (a closed set).
#[derive(Default)]
struct PeerMetrics {
    asked: Family<OutcomeLabel, Counter>,
    served: Family<OutcomeLabel, Counter>,
    fallbacks: Counter,
    owner_misses: Counter,
    healthy: Family<PeerLabel, prometheus_client::metrics::gauge::Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

/// `outcome` of a blob this member asked a peer for.
pub const PEER_ASKED: &[&str] = &["ok", "not_cached", "failed", "bad_digest"];
/// `outcome` of a peer request this member answered.
pub const PEER_SERVED: &[&str] = &[
    "ok",
    "not_found",
    "unauthorized",
    "replayed",
    "replay_cache_full",
    "refused",
    "error",
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(&[], None)
    }
}

impl Metrics {
    /// The metrics for a proxy with these aliases and this default upstream (their names are
    /// the only upstream labels besides [`KNOWN_REGISTRIES`] and `other`).
    pub fn new(aliases: &[Upstream], default: Option<&Upstream>) -> Metrics {
        let mut configured = HashMap::new();
        if let Some(d) = default {
            configured.insert(d.key(), d.cred_host.clone());
        }
        for a in aliases {
            configured.insert(a.key(), a.name.clone());
        }
        let mut m = Metrics {
            registry: Registry::with_prefix("regauth"),
            configured,
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            served_bytes: Family::default(),
            upstream_requests: Family::default(),
            upstream_errors: Family::default(),
            upstream_bytes: Family::default(),
            upstream_blob_fetches: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            verification_failures: Family::default(),
            limit_trips: Family::default(),
            coalesced: Counter::default(),
            stale_served: Counter::default(),
            revalidated: Counter::default(),
            cache_evicted: Counter::default(),
            cache_evicted_bytes: Counter::default(),
            cache_skipped_low_disk: Counter::default(),
            confirm_expired: Counter::default(),
            access_denied: Family::default(),
            policy_denied: Counter::default(),
            client_unauthorized: Counter::default(),
            peers: PeerMetrics::default(),
            connect_sessions: Family::default(),
            connect_active: Default::default(),
            connect_leaves: Counter::default(),
            store_requests: Family::default(),
            store_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            store_sweeps: Counter::default(),
        };
        m.register();
        m.zero_series();
        m
    }

    /// Series that exist from the start, so `rate()` and ratios have a zero to start from (a
    /// family prints nothing until a label set is used).
    fn zero_series(&self) {
        for outcome in PEER_ASKED {
            drop(self.peers.asked.get_or_create(&OutcomeLabel { outcome }));
        }
        for outcome in PEER_SERVED {
            drop(self.peers.served.get_or_create(&OutcomeLabel { outcome }));
        }
        for kind in [ContentKind::Manifest, ContentKind::Blob] {
            let kind = kind.as_str();
            drop(self.cache_hits.get_or_create(&KindLabel { kind }));
            drop(self.cache_misses.get_or_create(&KindLabel { kind }));
            drop(
                self.verification_failures
                    .get_or_create(&KindLabel { kind }),
            );
        }
        for limit in LIMITS {
            drop(self.limit_trips.get_or_create(&LimitLabel { limit }));
        }
        for outcome in CONNECT_OUTCOMES {
            drop(
                self.connect_sessions
                    .get_or_create(&OutcomeLabel { outcome }),
            );
        }
        for reason in DENIAL_REASONS {
            drop(self.access_denied.get_or_create(&ReasonLabel { reason }));
        }
    }

    fn register(&mut self) {
        self.register_requests();
        self.register_upstream();
        self.register_cache();
        self.register_peers();
        self.register_connect();
        self.register_store();
    }

    fn register_peers(&mut self) {
        let (r, p) = (&mut self.registry, &self.peers);
        r.register(
            "peer_fetches",
            "Blobs this member asked a fleet peer for, by outcome (ok, not_cached, failed, bad_digest)",
            p.asked.clone(),
        );
        r.register(
            "peer_served",
            "Peer requests this member answered, by outcome (ok, not_found, unauthorized, replayed, replay_cache_full, refused, error)",
            p.served.clone(),
        );
        r.register(
            "peer_fallbacks",
            "Blob downloads that moved on to the next source (member or upstream) after one failed",
            p.fallbacks.clone(),
        );
        r.register(
            "peer_owner_misses",
            "Blobs this member owned (or fetched for a peer) that no member had cached: fetched upstream",
            p.owner_misses.clone(),
        );
        r.register(
            "peer_healthy",
            "1 when this member considers the fleet peer healthy, else 0",
            p.healthy.clone(),
        );
    }

    fn register_connect(&mut self) {
        let r = &mut self.registry;
        r.register(
            "connect_sessions",
            "CONNECT requests (--connect) by outcome: intercepted, tunnelled, refused, unauthorized, failed",
            self.connect_sessions.clone(),
        );
        r.register(
            "connect_active",
            "CONNECT sessions (intercepted or tunnelled) open now",
            self.connect_active.clone(),
        );
        r.register(
            "connect_leaves_minted",
            "Leaf certificates minted by the CONNECT CA (the leaf cache missed)",
            self.connect_leaves.clone(),
        );
    }

    fn register_store(&mut self) {
        let r = &mut self.registry;
        r.register(
            "store_requests",
            "Object store (--store) requests by operation and outcome (ok, not_found, conflict, error)",
            self.store_requests.clone(),
        );
        r.register(
            "store_request_duration_seconds",
            "Object store (--store) request latency by operation (retries included)",
            self.store_duration.clone(),
        );
        r.register(
            "store_sweeps",
            "Eviction sweeps of the bucket run by this member while it held the sweeper lease",
            self.store_sweeps.clone(),
        );
    }

    fn register_requests(&mut self) {
        let r = &mut self.registry;
        r.register(
            "requests",
            "Client requests by route kind and response status",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the response head, by route kind",
            self.duration.clone(),
        );
        r.register(
            "served_bytes",
            "Body bytes announced to clients (Content-Length of GET answers), by route kind",
            self.served_bytes.clone(),
        );
        r.register(
            "access_denied",
            "Repository requests refused to a client, by reason (access_rules, anonymous, upstream)",
            self.access_denied.clone(),
        );
        r.register(
            "limit_trips",
            "Times a configured limit stopped a client or upstream, by limit",
            self.limit_trips.clone(),
        );
        r.register(
            "policy_denied",
            "Requests refused by the digest-pin policy",
            self.policy_denied.clone(),
        );
        r.register(
            "client_unauthorized",
            "Client requests refused by --htpasswd",
            self.client_unauthorized.clone(),
        );
    }

    fn register_upstream(&mut self) {
        let r = &mut self.registry;
        r.register(
            "upstream_requests",
            "Registry API requests sent upstream, by upstream and final status (or error)",
            self.upstream_requests.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream failures by upstream and kind (connect, dns, timeout, tls, protocol, unauthorized, credentials, realm, schema1, redirect)",
            self.upstream_errors.clone(),
        );
        r.register(
            "upstream_received_bytes",
            "Blob and manifest bytes received from upstreams",
            self.upstream_bytes.clone(),
        );
        r.register(
            "upstream_blob_fetches",
            "Blob downloads started upstream",
            self.upstream_blob_fetches.clone(),
        );
    }

    fn register_cache(&mut self) {
        let r = &mut self.registry;
        r.register(
            "cache_hits",
            "Requests answered from the cache, by content kind",
            self.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Requests that needed the upstream, by content kind",
            self.cache_misses.clone(),
        );
        r.register(
            "verification_failures",
            "Upstream content that failed digest or length verification, by content kind",
            self.verification_failures.clone(),
        );
        r.register(
            "coalesced",
            "Blob requests that joined a download already in flight",
            self.coalesced.clone(),
        );
        r.register(
            "stale_served",
            "Tag lookups answered from a stale cache entry because the upstream failed",
            self.stale_served.clone(),
        );
        r.register(
            "cache_evicted",
            "Cache entries removed by the live size bound (--cache-max-size)",
            self.cache_evicted.clone(),
        );
        r.register(
            "cache_evicted_bytes",
            "Bytes freed by the live size bound (--cache-max-size)",
            self.cache_evicted_bytes.clone(),
        );
        r.register(
            "cache_skipped_low_disk",
            "Verified blobs served but not kept because free disk was below --cache-min-free",
            self.cache_skipped_low_disk.clone(),
        );
        r.register(
            "confirm_expired",
            "Repository confirmations older than --confirm-ttl, asked upstream again",
            self.confirm_expired.clone(),
        );
        r.register(
            "revalidated",
            "Cached tags confirmed unchanged by a HEAD upstream",
            self.revalidated.clone(),
        );
    }

    /// The exposition text (OpenMetrics, ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// The bounded `upstream` label for `up`.
    pub fn upstream_label(&self, up: &Upstream) -> String {
        if let Some(l) = self.configured.get(&up.key()) {
            return l.clone();
        }
        if KNOWN_REGISTRIES.contains(&up.cred_host.as_str()) {
            return up.cred_host.clone();
        }
        "other".to_owned()
    }

    /// One client request answered.
    pub fn request(&self, route: RouteKind, status: u16, took: Duration, bytes: u64) {
        let r = route.as_str();
        self.requests
            .get_or_create(&RouteStatus {
                route: r,
                status: status.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabel { route: r })
            .observe(took.as_secs_f64());
        if bytes > 0 {
            self.served_bytes
                .get_or_create(&RouteLabel { route: r })
                .inc_by(bytes);
        }
    }

    /// One upstream exchange ended: `Ok(status)` or an error.
    pub fn upstream_request(&self, up: &Upstream, status: Result<u16, UpstreamErrorKind>) {
        let status = match status {
            Ok(s) => s.to_string(),
            Err(_) => "error".to_owned(),
        };
        let upstream = self.upstream_label(up);
        self.upstream_requests
            .get_or_create(&UpstreamStatus { upstream, status })
            .inc();
    }

    /// An upstream failure of `kind`.
    pub fn upstream_error(&self, up: &Upstream, kind: UpstreamErrorKind) {
        let upstream = self.upstream_label(up);
        self.upstream_errors
            .get_or_create(&UpstreamKind {
                upstream,
                kind: kind.as_str(),
            })
            .inc();
    }

    /// `n` bytes received from `up`.
    pub fn upstream_bytes(&self, up: &Upstream, n: u64) {
        let upstream = self.upstream_label(up);
        self.upstream_bytes
            .get_or_create(&UpstreamLabel { upstream })
            .inc_by(n);
    }

    /// A blob download started at `up`.
    pub fn blob_fetch(&self, up: &Upstream) {
        let upstream = self.upstream_label(up);
        self.upstream_blob_fetches
            .get_or_create(&UpstreamLabel { upstream })
            .inc();
    }

    pub fn cache_hit(&self, kind: ContentKind) {
        let kind = kind.as_str();
        self.cache_hits.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn cache_miss(&self, kind: ContentKind) {
        let kind = kind.as_str();
        self.cache_misses.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn verification_failure(&self, kind: ContentKind) {
        let kind = kind.as_str();
        self.verification_failures
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// A limit stopped something; `limit` is a fixed word (`header_read_timeout`,
    /// `max_connections`, `download_deadline`, …), never outside input.
    /// Counts one trip of `limit` (one of [`LIMITS`]).
    pub fn limit_tripped(&self, limit: &'static str) {
        debug_assert!(LIMITS.contains(&limit), "unknown limit {limit}");
        self.limit_trips.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Counts a peer fetch by `outcome` (one of [`PEER_ASKED`]).
    pub fn peer_asked(&self, outcome: &'static str) {
        debug_assert!(PEER_ASKED.contains(&outcome), "unknown outcome {outcome}");
        self.peers
            .asked
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts an answered peer request by `outcome` (one of [`PEER_SERVED`]).
    pub fn peer_served(&self, outcome: &'static str) {
        debug_assert!(PEER_SERVED.contains(&outcome), "unknown outcome {outcome}");
        self.peers
            .served
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn peer_fallback(&self) {
        self.peers.fallbacks.inc();
    }

    pub fn peer_owner_miss(&self) {
        self.peers.owner_misses.inc();
    }

    /// Sets the health gauge of `peer` (a configured `--peer` URL).
    pub fn peer_health(&self, peer: &str, healthy: bool) {
        let l = PeerLabel {
            peer: peer.to_owned(),
        };
        self.peers.healthy.get_or_create(&l).set(i64::from(healthy));
    }

    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    pub fn stale_served(&self) {
        self.stale_served.inc();
    }

    pub fn cache_evicted(&self, entries: u64, bytes: u64) {
        self.cache_evicted.inc_by(entries);
        self.cache_evicted_bytes.inc_by(bytes);
    }

    pub fn cache_skipped_low_disk(&self) {
        self.cache_skipped_low_disk.inc();
    }

    /// A repository request refused by the access rules (`access_rules`), for want of
    /// credentials (`anonymous`) or by the upstream for this client's credentials (`upstream`).
    /// No names: the reason is one of these words.
    pub fn access_denied(&self, reason: &'static str) {
        self.access_denied
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn confirm_expired(&self) {
        self.confirm_expired.inc();
    }

    pub fn revalidated(&self) {
        self.revalidated.inc();
    }

    pub fn policy_denied(&self) {
        self.policy_denied.inc();
    }

    pub fn client_unauthorized(&self) {
        self.client_unauthorized.inc();
    }

    /// Counts one CONNECT request by `outcome` (one of [`CONNECT_OUTCOMES`]).
    pub fn connect_session(&self, outcome: &'static str) {
        debug_assert!(
            CONNECT_OUTCOMES.contains(&outcome),
            "unknown outcome {outcome}"
        );
        self.connect_sessions
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A CONNECT session opened (`+1`) or ended (`-1`).
    pub fn connect_active(&self, delta: i64) {
        self.connect_active.inc_by(delta);
    }

    pub fn connect_leaf_minted(&self) {
        self.connect_leaves.inc();
    }

    /// One object store request (`op`, `outcome` are words chosen by the store code).
    pub fn store_request(&self, op: &'static str, outcome: &'static str, took: Duration) {
        self.store_requests
            .get_or_create(&StoreOpOutcome { op, outcome })
            .inc();
        self.store_duration
            .get_or_create(&StoreOp { op })
            .observe(took.as_secs_f64());
    }

    pub fn store_sweep(&self) {
        self.store_sweeps.inc();
    }
}

impl super::store::StoreObserver for Metrics {
    fn request(&self, op: &'static str, outcome: &'static str, took: Duration) {
        self.store_request(op, outcome, took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_names_follow_conventions() {
        let alias = Upstream::from_url("mine", "http://127.0.0.1:5000").unwrap();
        let default = Upstream::from_url("default", "https://registry-1.docker.io").unwrap();
        let m = Metrics::new(std::slice::from_ref(&alias), Some(&default));
        assert_eq!(m.upstream_label(&alias), "mine");
        assert_eq!(m.upstream_label(&default), "docker.io");
        let ghcr = Upstream::from_url("ghcr.io", "https://ghcr.io").unwrap();
        assert_eq!(m.upstream_label(&ghcr), "ghcr.io");
        let evil = Upstream::from_url("evil.example", "https://evil.example").unwrap();
        assert_eq!(m.upstream_label(&evil), "other");

        m.request(RouteKind::Blob, 200, Duration::from_millis(3), 10);
        m.upstream_request(&evil, Err(UpstreamErrorKind::Dns));
        m.upstream_error(&evil, UpstreamErrorKind::Dns);
        m.cache_hit(ContentKind::Blob);
        m.limit_tripped("header_read_timeout");
        let text = m.render();
        for want in [
            "regauth_requests_total{route=\"blob\",status=\"200\"} 1",
            "regauth_request_duration_seconds_bucket{le=\"0.005\",route=\"blob\"} 1",
            "regauth_served_bytes_total{route=\"blob\"} 10",
            "regauth_upstream_requests_total{upstream=\"other\",status=\"error\"} 1",
            "regauth_upstream_errors_total{upstream=\"other\",kind=\"dns\"} 1",
            "regauth_cache_hits_total{kind=\"blob\"} 1",
            "regauth_limit_trips_total{limit=\"header_read_timeout\"} 1",
            "regauth_coalesced_total 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(!text.contains("evil"), "{text}");
    }
}
