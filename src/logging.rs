//! The log filter every regauth binary uses (`regauth` and the `docker-credential-*` helpers).
//!
//! Owns: turning `-v`/`-q`/`--log-level` and `REGAUTH_LOG` into one `tracing` filter. A bare
//! level (`debug`) applies to regauth's own targets only (`regauth`, `docker_credential*`) while
//! everything else stays at `warn` — `debug` on hyper, rustls and the AWS SDK buries the lines an
//! operator wants. A full filter (anything with `=` or `,`, e.g. `debug,hyper=info`) is used as
//! written, for whoever does want the libraries' logs.
//!
//! Does not own: where logs go or their format (each binary sets up its subscriber).

use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter.
pub const LOG_ENV: &str = "REGAUTH_LOG";

/// Target prefixes that are regauth's own: the library and every helper binary.
const OWN_TARGETS: &[&str] = &["regauth", "docker_credential"];

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// The filter directives for `spec`: a bare level is scoped to regauth's own targets, anything
/// else is returned as written.
pub fn directives(spec: &str) -> String {
    let spec = spec.trim();
    let lower = spec.to_ascii_lowercase();
    match LEVELS.iter().position(|l| *l == lower) {
        // More verbose than warn: only for our targets.
        Some(i) if i > 2 => {
            let mut d = String::from("warn");
            for t in OWN_TARGETS {
                d.push_str(&format!(",{t}={lower}"));
            }
            d
        }
        Some(_) => lower,
        None => spec.to_owned(),
    }
}

/// The log filter: `cli_level` (from `--log-level`, `-v`, `-q`) wins, else `REGAUTH_LOG`, else
/// `default_level`. With an unusable value, the filter for `default_level` comes back together
/// with a warning to print.
pub fn filter(
    cli_level: Option<&str>,
    env_value: Option<&str>,
    default_level: &str,
) -> (EnvFilter, Option<String>) {
    let fallback = || EnvFilter::new(directives(default_level));
    let (what, spec) = match (
        cli_level,
        env_value.map(str::trim).filter(|v| !v.is_empty()),
    ) {
        (Some(l), _) => ("--log-level", l),
        (None, Some(v)) => (LOG_ENV, v),
        (None, None) => return (fallback(), None),
    };
    match EnvFilter::try_new(directives(spec)) {
        Ok(f) => (f, None),
        Err(e) => (
            fallback(),
            Some(format!(
                "ignoring {what} {spec:?} ({e}); using {default_level:?}"
            )),
        ),
    }
}

/// [`filter`] over the process environment, for the helpers (which log only when `REGAUTH_LOG`
/// is set): `None` when it is unset or empty.
pub fn helper_filter() -> Option<EnvFilter> {
    let v = std::env::var(LOG_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())?;
    let (f, warning) = filter(None, Some(&v), "info");
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_levels_are_scoped_to_our_targets() {
        assert_eq!(
            directives("debug"),
            "warn,regauth=debug,docker_credential=debug"
        );
        assert_eq!(
            directives("INFO"),
            "warn,regauth=info,docker_credential=info"
        );
        assert_eq!(directives("warn"), "warn");
        assert_eq!(directives("error"), "error");
        assert_eq!(directives("debug,hyper=info"), "debug,hyper=info");
        assert_eq!(directives("regauth::proxy=trace"), "regauth::proxy=trace");
        assert!(filter(None, Some("debug"), "info").1.is_none());
        assert!(filter(None, Some("regauth=notalevel"), "info").1.is_some());
        assert!(
            filter(Some("trace"), Some("regauth=notalevel"), "info")
                .1
                .is_none()
        );
        assert!(filter(Some("regauth=notalevel"), None, "info").1.is_some());
    }
}
