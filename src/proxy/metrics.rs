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
    /// Cache entries / bytes removed by the live size bound (`--cache-max-size`).
    pub cache_evicted: AtomicU64,
    pub cache_evicted_bytes: AtomicU64,
    /// Verified content served but not kept: the disk was below `--cache-min-free`.
    pub cache_skipped_low_disk: AtomicU64,
    /// Repository confirmations older than `--confirm-ttl`, asked upstream again.
    pub confirm_expired: AtomicU64,
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
        s
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
