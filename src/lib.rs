//! # regauth — safe, fast registry access for CI runner hosts
//!
//! This crate-level doc is the architecture map. Keep it true when things move.
//!
//! ```text
//!            ┌──────────────── config ────────────────┐
//!  files/env │ DockerConfig (auths, credsStore,        │      reference: image refs, Target
//!  ─────────►│ credHelpers) + keys (normalisation)     │◄──── (image or host)
//!            └───────────────┬────────────────────────┘
//!                            ▼
//!   cli (resolve, check) ─► resolve::Resolver (Profile::Docker | Profile::Gitlab) ◄─ proxy::upstream_creds
//!                            │  runs only the helpers that can match, via
//!                            ▼
//!            credhelper::client ──exec──► docker-credential-<name> (ours or anyone's)
//!                                              │
//!            credhelper::server::serve ◄── helpers/* thin mains, each one backend::*
//!                                              (backend::router reaches others via credhelper::client)
//!
//!   client ─► proxy ([`proxy`] holds the step table of a request)
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`secret`] | the redacting [`secret::Secret`] type |
//! | [`config`] | parsing Docker configs; [`config::keys`] normalisation; [`config::locations`] folders and [`config::locations::Env`] |
//! | [`reference`] | docker's image-reference grammar; telling an image from a host |
//! | [`credhelper`] | the helper protocol: [`credhelper::Backend`] + [`credhelper::serve`] (helper side), [`credhelper::client`] (caller side) |
//! | [`resolve`] | the one resolver, two profiles, with explanations |
//! | [`fsutil`] | atomic 0600 writes, private folders, file locks |
//! | [`report`] | error chains shown with each cause once (cargo's `error:`/`Caused by:`) |
//! | [`logging`] | the one log filter (`-v`/`-q`/`--log-level`, `REGAUTH_LOG`) for every binary |
//! | [`backend`] | the helpers' storage: encrypted `file`, read-only `env` and `gitlab`, the `router`, `ecr` (its `host` module, the one ECR host model, always built; with feature `ecr`: token cache, AWS SDK) and `keyring` (feature `keyring`: OS keyrings) |
//! | [`proxy`] | `regauth proxy`: the verifying pull-through auth proxy; the request's step table lives in its docs |
//! | [`proxy::server`] | listener, TLS ([`proxy::tls`]), h1+h2, graceful shutdown |
//! | [`proxy::handler`] | dispatch and the resources: [`proxy::handler::manifest`] (by digest, by tag: fresh, revalidate, stale), [`proxy::handler::blob`], [`proxy::handler::tags`], [`proxy::handler::authz`] (per-repository confirmation) |
//! | [`proxy::state`] | what every step shares |
//! | [`proxy::peer`] | fleet members (`--peer`): HRW owner of a digest, peer health, the signed peer requests; [`proxy::handler::peer`] serves them |
//! | [`proxy::client_auth`] | client authorization (bcrypt htpasswd) |
//! | [`proxy::route`] | OCI path parsing and upstream choice (`?ns=`, alias, host prefix, default); refuses registries outside the reach |
//! | [`proxy::reach`] | canonical registry names, the closed-by-default allowlist, redirect and DNS address rules |
//! | [`proxy::limits`] | every resource bound with its default; the buffered-body budget; the auth failure limiter |
//! | [`proxy::policy`] | digest pins / digest-only registries → 403 DENIED |
//! | [`proxy::cache`] | the cache: content via [`proxy::store`], tag TTL entries, repo confirmations; `regauth cache` |
//! | [`proxy::store`] | the storage seam ([`proxy::store::ContentStore`]: stage, commit after verify, open, list, remove) and its implementations: the filesystem, and a bucket on `object_store` (`--store s3://…`, [`proxy::store::object`]) |
//! | [`proxy::upstream`] | one authorized upstream request: credentials + authorizer + fetcher, the 401 retry, the request counter |
//! | [`proxy::upstream_creds`] | resolver → credentials per registry (per repository under the GitLab profile), bounded cache, one lookup per registry at a time |
//! | [`proxy::upstream_auth`] | realm trust boundary, Basic/Bearer/OAuth2 tokens, token cache ([`proxy::challenge`] parses `WWW-Authenticate`) |
//! | [`proxy::fetch`] | plain upstream HTTP; redirects never carry Authorization across hosts; imports no auth |
//! | [`proxy::verify`] | single-flight blob downloads, streaming SHA-256, last byte held until verified |
//! | [`proxy::response`] | bodies, spec errors, headers, Range, the one body streamer |
//! | [`proxy::error`] | [`proxy::error::ErrorCode`], [`proxy::error::ApiError`] and the typed failures that map into it |
//! | [`proxy::metrics`] | `/metrics` counters |
//!
//! The `regauth` binary (`src/main.rs`, `src/cli/`) is the edge: it parses arguments, turns library
//! errors into messages with context, and prints. Secrets cross into output only through
//! [`secret::Secret::expose`], and only where the user asked (`--show-secret`, a helper's `get`).

#![forbid(unsafe_code)]

pub mod backend;
pub mod check;
pub mod config;
pub mod credhelper;
pub mod fsutil;
pub mod logging;
pub mod proxy;
pub mod reference;
pub mod report;
pub mod resolve;
pub mod secret;
