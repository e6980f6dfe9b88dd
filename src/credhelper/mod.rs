//! The docker credential-helper protocol, both sides.
//!
//! Owns: the wire format that `docker-credential-<name>` binaries speak (one action argument, input
//! on stdin, JSON or an error line on stdout, exit 0/1), byte for byte as
//! docker/docker-credential-helpers does it; the [`Backend`] seam every regauth helper implements;
//! [`serve`], the one entry point of every helper binary, with its one logging set-up
//! ([`logging::init_logging`]); and [`client`], which runs helpers for the resolver, the router and
//! the proxy.
//!
//! Does not own: where credentials are kept (that is [`crate::backend`]), nor which helper applies to
//! which registry (that is [`crate::resolve`]).
//!
//! Why byte-exact: clients detect "no credentials" by comparing the whole of stdout with
//! [`NOT_FOUND`]; one extra word turns an anonymous pull into a hard error. And Go's JSON encoder
//! escapes `<`, `>` and `&`, so even `{"Username":"<token>"}` differs unless we do the same.

pub mod client;
pub mod logging;
pub mod protocol;
pub mod server;

pub use logging::init_logging;
pub use protocol::{Credentials, NOT_FOUND};
pub use server::{Backend, BackendError, HelperInfo, Login, Unavailable, serve, serve_main};
