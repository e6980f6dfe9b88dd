//! The one logging set-up of every helper binary.
//!
//! Owns: [`init_logging`], called by [`super::serve_main`] so no helper can forget it and every
//! helper's `main` stays one line. Does not own: what is logged (the backends decide) or the
//! `regauth` binary's own logging (see `src/cli`).
//!
//! Why stderr only: stdout belongs to the protocol; one stray line there breaks docker's parsing.
//! Why silent by default: docker runs helpers on every pull and shows their stderr to users, so a
//! helper only speaks when asked (`REGAUTH_LOG=<tracing filter>`, e.g. `debug`). The one exception
//! is the ECR backend's warnings (stale token served, AWS failure answered as not-found): ecr-login
//! always prints those, users rely on them to see why a pull went anonymous, so they stay on.
//! Backends never log a secret; the `Secret` type would redact one anyway.

/// What is logged when `REGAUTH_LOG` is unset: the ECR backend's warnings, nothing else.
pub const DEFAULT_FILTER: &str = "off,regauth::backend::ecr=warn";

/// Installs the helper's tracing subscriber (stderr, no colours, no module path) with the one
/// filter rule of [`crate::logging`] (a bare level scoped to regauth's targets). Safe to call
/// twice: the second call does nothing.
pub fn init_logging() {
    let filter = crate::logging::helper_filter()
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
