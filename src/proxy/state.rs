//! What every request step shares.
//!
//! Owns: [`ProxyState`] — routes, the upstream client, the cache, the download table, the
//! manifest fetch table ([`ManifestFlights`], with its key and shared result), the policy, the
//! counters, client auth and the tag TTL. It sits below the handlers: they import it, nothing it
//! imports imports them.
//!
//! Does not own: building it from flags ([`super::server::build_state`]).

use super::access::Access;
use super::cache::Cache;
use super::client_auth::{ClientAuth, Door};
use super::error::ApiError;
use super::limits::{BodyBudget, BudgetPermit, FailureLimiter, Limits};
use super::metrics::Metrics;
use super::peer::Peers;
use super::policy::Policy;
use super::reach::ReachSources;
use super::route::Routes;
use super::single_flight::SingleFlight;
use super::upstream::UpstreamClient;
use super::verify::{FlightCtx, Flights};
use bytes::Bytes;
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
    /// Manifest fetches running now, shared by the requests that ask for the same one.
    pub manifest_flights: ManifestFlights,
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

/// A manifest fetched from upstream, verified and stored ([`super::handler::manifest`]).
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub body: Bytes,
    pub media_type: String,
    /// `sha256:<hex>` of `body`.
    pub digest: String,
    /// Its share of the buffer budget, held until the last response body with it is gone
    /// ([`super::handler::hold`]).
    pub permit: Arc<BudgetPermit>,
}

/// What makes two manifest fetches the same one: the upstream, the repository, the reference,
/// the `Accept` sent and whose credentials go with it (another identity may get another answer,
/// a 401 above all, so its fetch is its own).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ManifestKey {
    pub upstream: String,
    pub repo: String,
    pub reference: String,
    pub accept: Vec<u8>,
    pub identity: String,
}

/// Running manifest fetches ([`super::single_flight`]).
pub type ManifestFlights = SingleFlight<ManifestKey, Result<FetchedManifest, ApiError>>;
