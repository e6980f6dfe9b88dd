//! Recognising Amazon ECR registry hosts, exactly as `docker-credential-ecr-login` does.
//!
//! Owns: [`parse_ecr_host`] / [`is_ecr_host`], a small hand-written parser equivalent to
//! ecr-login's `ExtractRegistry` (`ecr-login/api/client.go`, v0.12.0): the input loses a leading
//! `https://`, is parsed as a URL, and its host name (port and path dropped) must be either an ECR
//! Public host (`public.ecr.aws`, dual-stack `ecr-public.aws.com`) or match
//!
//! ```text
//! ^(\d{12})\.dkr[\.\-]ecr(\-fips)?\.([a-zA-Z0-9][a-zA-Z0-9-_]*)\.(amazonaws\.(?:com(?:\.cn)?|eu)|
//!   on\.(?:aws|amazonwebservices\.com\.cn)|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$
//! ```
//!
//! — commercial, FIPS, China, dual-stack (`dkr-ecr[-fips].<region>.on.aws`), EUSC, ISO/ISOB/ISOF
//! and ADC-E partitions. Matching is case-sensitive, like the Go regex.
//!
//! This is the one ECR host model: the router's `"ecr"` host pattern and the ECR backend both use
//! [`EcrHost`], so they agree on what an ECR host is and the backend gets what its API call needs
//! (account, region, FIPS, dual-stack) from the same parse. Always built: the router needs it
//! without the `ecr` feature.
//!
//! Does not own: talking to AWS (the rest of [`super`]) or routing (see [`crate::backend::router`]).

use crate::config::keys::split_host_port;

/// An ECR registry host, private or public, as [`parse_ecr_host`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrHost {
    /// The 12-digit account (registry) id; empty for ECR Public.
    pub registry_id: String,
    /// The region label, e.g. `us-east-1` (`us-east-1` for ECR Public, where its API lives).
    pub region: String,
    /// A `-fips` endpoint.
    pub fips: bool,
    /// A dual-stack endpoint (`dkr-ecr….on.aws`, `ecr-public.aws.com`).
    pub dual_stack: bool,
    /// The partition domain, e.g. `amazonaws.com`, `amazonaws.com.cn`, `on.aws`; empty for ECR
    /// Public.
    pub domain: String,
    /// ECR Public (`public.ecr.aws`, `ecr-public.aws.com`).
    pub public: bool,
}

impl EcrHost {
    /// The registry's host name, rebuilt from its parts (`<id>.dkr.ecr.<region>.amazonaws.com`,
    /// `<id>.dkr-ecr.<region>.on.aws` for dual-stack).
    pub fn hostname(&self) -> String {
        if self.public {
            let h = if self.dual_stack {
                ECR_PUBLIC_DUAL_STACK_HOST
            } else {
                ECR_PUBLIC_HOST
            };
            return h.to_owned();
        }
        let (sep, fips) = (
            if self.dual_stack { '-' } else { '.' },
            if self.fips { "-fips" } else { "" },
        );
        format!(
            "{}.dkr{sep}ecr{fips}.{}.{}",
            self.registry_id, self.region, self.domain
        )
    }
}

/// The ECR Public host.
pub const ECR_PUBLIC_HOST: &str = "public.ecr.aws";
/// The ECR Public dual-stack host.
pub const ECR_PUBLIC_DUAL_STACK_HOST: &str = "ecr-public.aws.com";

/// Partition domains accepted after the region label.
const DOMAINS: [&str; 9] = [
    "amazonaws.com",
    "amazonaws.com.cn",
    "amazonaws.eu",
    "on.aws",
    "on.amazonwebservices.com.cn",
    "sc2s.sgov.gov",
    "c2s.ic.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

/// `true` when `server_url` (a bare host, `host:port`, or an `https://` URL with a path) names an
/// ECR or ECR Public registry.
pub fn is_ecr_host(server_url: &str) -> bool {
    parse_ecr_host(server_url).is_some()
}

/// Parses `server_url` as ecr-login's `ExtractRegistry` does; `None` when it is not ECR.
pub fn parse_ecr_host(server_url: &str) -> Option<EcrHost> {
    let host = url_hostname(server_url.strip_prefix("https://").unwrap_or(server_url))?;
    if host == ECR_PUBLIC_HOST || host == ECR_PUBLIC_DUAL_STACK_HOST {
        return Some(EcrHost {
            registry_id: String::new(),
            region: "us-east-1".into(),
            fips: false,
            dual_stack: host == ECR_PUBLIC_DUAL_STACK_HOST,
            domain: String::new(),
            public: true,
        });
    }
    parse_private(host)
}

/// The host name (no port, no brackets) of `https://<input>` as Go's `url.Parse(...).Hostname()`
/// gives it, for the inputs that matter here: `None` for a non-numeric port (Go refuses the URL).
fn url_hostname(input: &str) -> Option<&str> {
    let end = input.find(['/', '?', '#']).unwrap_or(input.len());
    match split_host_port(&input[..end]) {
        (_, Some(port)) if !port.bytes().all(|b| b.is_ascii_digit()) => None,
        (host, _) => Some(host),
    }
}

fn parse_private(host: &str) -> Option<EcrHost> {
    // (\d{12})\.
    let (account, rest) = host.split_at_checked(12)?;
    if !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest.strip_prefix('.')?;
    // dkr[\.\-]ecr(\-fips)?\.
    let rest = rest
        .strip_prefix("dkr.ecr")
        .or_else(|| rest.strip_prefix("dkr-ecr"))?;
    let (fips, rest) = match rest.strip_prefix("-fips") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.strip_prefix('.')?;
    // ([a-zA-Z0-9][a-zA-Z0-9-_]*)\.
    let (region, domain) = rest.split_once('.')?;
    let mut chars = region.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || !DOMAINS.contains(&domain)
    {
        return None;
    }
    Some(EcrHost {
        registry_id: account.to_owned(),
        region: region.to_owned(),
        fips,
        // The dual-stack partitions are the `on.…` domains (`dkr-ecr.<region>.on.aws`).
        dual_stack: domain.starts_with("on."),
        domain: domain.to_owned(),
        public: false,
    })
}
