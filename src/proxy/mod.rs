//! `regauth proxy`: a verifying pull-through auth proxy for the OCI distribution pull API.
//!
//! A request passes the steps in this order, one module each (read them in this order):
//!
//! | step | module | does |
//! |---|---|---|
//! | 1 | [`route`] | OCI path parsing; upstream by `?ns=`, alias, host prefix or default |
//! | 2 | [`client_auth`] | may this client use the proxy (bcrypt htpasswd) |
//! | 3 | [`upstream_creds`] | the resolver's credential for that upstream, cached briefly |
//! | 4 | [`upstream_auth`] | challenge → Basic or Bearer token (realm trust check, token cache) |
//! | 5 | [`fetch`] / [`verify`] | HTTP to upstreams (redirects without Authorization); verified, coalesced blob downloads |
//! | 6 | [`cache`] | content-addressed, commit-after-verify storage; tag entries; repository confirmations |
//! | 7 | [`policy`] | digest pins and digest-only registries |
//! | 8 | [`serve`] | the API endpoints, errors, Range, stale-if-error |
//! | 9 | [`server`] | sockets, TLS ([`tls`]), h1+h2, graceful shutdown; [`metrics`] |
//!
//! The guarantee the design is built around: a client never completes a download of bytes that
//! did not hash to the digest it asked for, and nothing unverified is ever stored.

pub mod cache;
pub mod client_auth;
pub mod fetch;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod reach;
pub mod route;
pub mod serve;
pub mod server;
pub mod tls;
pub mod upstream_auth;
pub mod upstream_creds;
pub mod verify;

pub use server::{ProxyConfig, TlsSetting, run};
