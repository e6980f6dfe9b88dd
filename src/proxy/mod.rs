//! `regauth proxy`: a verifying pull-through auth proxy for the OCI distribution pull API.
//!
//! A request passes these steps, in this order (this table is the one description of the flow;
//! keep it matching [`handler::handle`]):
//!
//! | step | module | does |
//! |---|---|---|
//! | 0 | [`server`] | accept: sockets, TLS ([`tls`]), h1+h2, graceful shutdown; connection watchdog ([`activity`]) |
//! | 0a | [`connect`] | `--connect`: a `CONNECT host:port` (after `Proxy-Authorization`) to an allowlisted registry is intercepted — TLS with a leaf from the local CA ([`connect_ca`]), the inner requests enter step 1 with the CONNECT authority as their route source; a `--connect-tunnel` host is spliced unchanged; anything else → 403 before any connection |
//! | 1 | [`handler`] | dispatch: `/healthz`, `/metrics` ([`metrics`]), the fleet's peer endpoint ([`handler::peer`]: signature checked by [`peer`], then steps 3–7 without client auth), then the API steps below |
//! | 2 | [`client_auth`] | who is this client: an htpasswd user (bcrypt), a pass-through identity (its own registry credentials), or anonymous |
//! | 3 | [`route`] | OCI path parsing; upstream by the CONNECT authority (inside `--connect`), else `?ns=`, alias, host prefix or default; a registry outside the allowlist ([`reach`]) → 403 before any connection |
//! | 3a | [`handler::authz::authorize`] | may this identity pull this canonical `registry/repository`, with whose credentials ([`access`], `--access`); a refusal is the same whatever is cached |
//! | 4 | [`handler::manifest`], [`handler::blob`], [`handler::tags`] | the resource: policy ([`policy`]) for tags, then the cache ([`cache`] over the [`store`] seam — the cache folder, or with `--store` a shared bucket ([`store::object`]); LRU-bounded live by `--cache-max-size`), served only from the registry it came from and when the upstream confirmed this request's credentials for the repository ([`handler::authz`], [`confirmations`], for `--authz-ttl`) |
//! | 5 | [`upstream`] | on a miss or revalidation (concurrent misses of one manifest share one fetch, [`single_flight`]): credentials ([`upstream_creds`]) → `Authorization` ([`upstream_auth`], [`challenge`]) → HTTP ([`fetch`]; redirects by [`reach`]'s rules), one retry after a 401 |
//! | 6 | [`verify`] | blobs: one coalesced download, hashed while streamed, last byte held until verified, then committed to the store; with `--peer`, its bytes come from the digest's owner member first ([`peer`]: HRW order, health, resume by `Range`), the upstream last |
//! | 7 | [`response`], [`error`] | the answer: bodies, Range, spec errors from one [`error::ApiError`] |
//!
//! Dependencies point one way, down this list's lower layers: `handler` → `response`, `upstream`,
//! `verify`, `cache` → `store`; `verify` → `peer` → `fetch`; `upstream` → `upstream_auth` → `challenge`, `fetch` → `error`.
//! [`state`] (what every step shares) sits below the handlers.
//!
//! The guarantee the design is built around: a client never completes a download of bytes that
//! did not hash to the digest it asked for, and nothing unverified is ever stored.

pub mod access;
pub mod activity;
pub mod cache;
pub mod challenge;
pub mod client_auth;
pub mod confirmations;
pub mod connect;
pub mod connect_ca;
pub mod error;
pub mod fetch;
pub mod handler;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod policy;
pub mod reach;
pub mod response;
pub mod route;
pub mod server;
pub mod single_flight;
pub mod state;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod upstream_auth;
pub mod upstream_creds;
pub mod verify;

pub use server::{ProxyConfig, TlsSetting, run};
