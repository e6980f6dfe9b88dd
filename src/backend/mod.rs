//! Credential backends: where the helpers keep or find credentials.
//!
//! Owns: one module per storage, each implementing [`crate::credhelper::Backend`]. The protocol,
//! argument handling and output formats are not here (see [`crate::credhelper`]); neither is
//! deciding which registry uses which backend for docker or GitLab Runner (see [`crate::resolve`]).
//! The router ([`router`]) is the exception that proves the rule: it maps hosts to backends for
//! one `credsStore` entry, and for matching it reuses [`crate::config::keys`].

pub mod env;
pub mod file;
pub mod gitlab;
pub mod router;

#[cfg(feature = "ecr")]
pub mod ecr;
#[cfg(feature = "keyring")]
pub mod keyring;
