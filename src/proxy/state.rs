//! What every request step shares.
//!
//! Owns: [`ProxyState`] — routes, the upstream client, the cache, the download table, the
//! policy, the counters, client auth and the tag TTL. It sits below the handlers: they import it,
//! nothing it imports imports them.
//!
//! Does not own: building it from flags ([`super::server::build_state`]).

use super::access::Access;
use super::cache::Cache;
use super::client_auth::{ClientAuth, Door};
use super::limits::{BodyBudget, FailureLimiter, Limits};
use super::metrics::Metrics;
use super::peer::Peers;
use super::policy::Policy;
use super::reach::ReachSources;
use super::route::Routes;
use super::upstream::UpstreamClient;
use super::verify::{FlightCtx, Flights};
use std::sync::Arc;
use std::time::Duration;

/// Everything a request handler needs.
pub struct ProxyState {
    pub routes: Routes,
    /// Rebuilds `routes.reach` from the credential sources when a denied registry may have been
    /// added to them since (a `docker login` after start-up).
    pub reach_sources: Arc<ReachSources>,
    pub client: Arc<UpstreamClient>,
    pub cache: Cache,
    pub flights: Arc<Flights>,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    pub client_auth: Option<Arc<ClientAuth>>,
    /// Which identity may pull what, with whose credentials (`--access`, `--pass-through`).
    pub access: Access,
    /// Who passes the door besides htpasswd users.
    pub door: Door,
    /// How long a tag resolution is used without asking the upstream.
    pub tag_ttl: Duration,
    /// The bounds, and the shared budget and limiter that enforce some of them.
    pub limits: Limits,
    pub budget: BodyBudget,
    pub auth_failures: FailureLimiter,
    /// `Host` values a loopback listener answers to (DNS rebinding); `None` on other binds.
    pub hosts: Option<Vec<String>>,
    /// The fleet (`--peer`), if any: blob owners, peer health, the peer secret.
    pub peers: Option<Arc<Peers>>,
}

impl ProxyState {
    /// What a blob download task takes with it.
    pub fn flight_ctx(&self) -> FlightCtx {
        FlightCtx {
            client: self.client.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            peers: self.peers.clone(),
        }
    }
}
