//! Counters for `/metrics` (Prometheus text exposition format 0.0.4).
//!
//! Owns: a fixed set of process-wide counters and their text rendering. Labels are only fixed
//! words (endpoint kinds) — never repository names, hosts or users, so scraping `/metrics`
//! reveals nothing about what was pulled. Hand-written exposition is a few lines; no crate needed.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_manifest: AtomicU64,
    pub requests_blob: AtomicU64,
    pub requests_other: AtomicU64,
    pub cache_hits_manifest: AtomicU64,
    pub cache_hits_blob: AtomicU64,
    pub cache_misses_manifest: AtomicU64,
    pub cache_misses_blob: AtomicU64,
    pub upstream_requests: AtomicU64,
    pub upstream_blob_fetches: AtomicU64,
    pub upstream_bytes: AtomicU64,
    pub coalesced_waiters: AtomicU64,
    pub verification_failures: AtomicU64,
    pub stale_served: AtomicU64,
    pub policy_denied: AtomicU64,
    pub unauthorized: AtomicU64,
    // Limits that tripped (`regauth_proxy_limit_trips_total{limit=…}`; see `super::limits`).
    pub header_timeouts: AtomicU64,
    pub idle_closed: AtomicU64,
    pub connections_refused: AtomicU64,
    pub accept_errors: AtomicU64,
    pub body_too_large: AtomicU64,
    pub budget_busy: AtomicU64,
    pub body_read_timeouts: AtomicU64,
    pub download_deadline: AtomicU64,
    pub download_too_slow: AtomicU64,
    pub host_rejected: AtomicU64,
    pub auth_rate_limited: AtomicU64,
}

/// Adds one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

fn counter(s: &mut String, name: &str, help: &str, rows: &[(&str, &AtomicU64)]) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in rows {
        let _ = writeln!(s, "{name}{labels} {}", v.load(Relaxed));
    }
}

impl Metrics {
    /// The exposition text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_requests(&mut s);
        self.render_upstream(&mut s);
        self.render_limits(&mut s);
        s
    }

    /// Which bound of `super::limits` refused or ended something.
    fn render_limits(&self, s: &mut String) {
        counter(
            s,
            "regauth_proxy_limit_trips_total",
            "Connections, requests and downloads ended or refused by a limit.",
            &[
                ("{limit=\"header_read_timeout\"}", &self.header_timeouts),
                ("{limit=\"idle_timeout\"}", &self.idle_closed),
                ("{limit=\"max_connections\"}", &self.connections_refused),
                ("{limit=\"accept_error\"}", &self.accept_errors),
                ("{limit=\"max_manifest_size\"}", &self.body_too_large),
                ("{limit=\"buffer_budget\"}", &self.budget_busy),
                ("{limit=\"body_read_timeout\"}", &self.body_read_timeouts),
                ("{limit=\"download_deadline\"}", &self.download_deadline),
                ("{limit=\"download_min_rate\"}", &self.download_too_slow),
                ("{limit=\"host\"}", &self.host_rejected),
                ("{limit=\"auth_failures\"}", &self.auth_rate_limited),
            ],
        );
    }

    /// What clients asked and how the cache answered.
    fn render_requests(&self, s: &mut String) {
        counter(
            s,
            "regauth_proxy_requests_total",
            "Client requests by endpoint.",
            &[
                ("{endpoint=\"manifest\"}", &self.requests_manifest),
                ("{endpoint=\"blob\"}", &self.requests_blob),
                ("{endpoint=\"other\"}", &self.requests_other),
            ],
        );
        counter(
            s,
            "regauth_proxy_cache_hits_total",
            "Requests answered from the cache.",
            &[
                ("{kind=\"manifest\"}", &self.cache_hits_manifest),
                ("{kind=\"blob\"}", &self.cache_hits_blob),
            ],
        );
        counter(
            s,
            "regauth_proxy_cache_misses_total",
            "Requests that needed the upstream.",
            &[
                ("{kind=\"manifest\"}", &self.cache_misses_manifest),
                ("{kind=\"blob\"}", &self.cache_misses_blob),
            ],
        );
    }

    /// What was asked of upstreams, and what was refused or served stale.
    fn render_upstream(&self, s: &mut String) {
        let single: [(&str, &str, &AtomicU64); 8] = [
            (
                "regauth_proxy_upstream_requests_total",
                "Requests sent upstream (registry API).",
                &self.upstream_requests,
            ),
            (
                "regauth_proxy_upstream_blob_fetches_total",
                "Blob downloads started upstream.",
                &self.upstream_blob_fetches,
            ),
            (
                "regauth_proxy_upstream_bytes_total",
                "Blob and manifest bytes received from upstreams.",
                &self.upstream_bytes,
            ),
            (
                "regauth_proxy_coalesced_waiters_total",
                "Blob requests that joined a download already in flight.",
                &self.coalesced_waiters,
            ),
            (
                "regauth_proxy_verification_failures_total",
                "Upstream content that failed digest or length verification.",
                &self.verification_failures,
            ),
            (
                "regauth_proxy_stale_served_total",
                "Tag lookups answered from a stale cache entry because the upstream failed.",
                &self.stale_served,
            ),
            (
                "regauth_proxy_policy_denied_total",
                "Requests refused by the digest-pin policy.",
                &self.policy_denied,
            ),
            (
                "regauth_proxy_unauthorized_total",
                "Client requests refused by --htpasswd.",
                &self.unauthorized,
            ),
        ];
        for (name, help, v) in single {
            counter(s, name, help, &[("", v)]);
        }
    }
}
