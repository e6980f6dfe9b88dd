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
//! Does not own: talking to AWS (see the `ecr` backend) or routing (see [`super::router`]). Used by
//! the router's `"ecr"` host pattern and by the ECR backend, so both agree on what an ECR host is.

/// What an ECR host name says about its registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EcrHost {
    /// A private registry `<account>.dkr.ecr[-fips].<region>.<partition domain>`.
    Private {
        /// The 12-digit account (registry) id.
        account_id: String,
        /// The region label, e.g. `us-east-1`.
        region: String,
        /// `-fips` endpoint.
        fips: bool,
        /// The partition domain, e.g. `amazonaws.com`, `amazonaws.com.cn`, `on.aws`.
        domain: String,
    },
    /// ECR Public (`public.ecr.aws` or `ecr-public.aws.com`).
    Public,
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
        return Some(EcrHost::Public);
    }
    parse_private(host)
}

/// The host name (no port, no brackets) of `https://<input>` as Go's `url.Parse(...).Hostname()`
/// gives it, for the inputs that matter here.
fn url_hostname(input: &str) -> Option<&str> {
    let end = input.find(['/', '?', '#']).unwrap_or(input.len());
    let authority = &input[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    let host = match hostport.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        Some(_) => return None, // Go: invalid port
        None => hostport,
    };
    Some(host)
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
    Some(EcrHost::Private {
        account_id: account.to_owned(),
        region: region.to_owned(),
        fips,
        domain: domain.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ecr-login `TestExtractRegistry` positives (reference §4), with and without scheme and path.
    #[test]
    fn positives() {
        type Want<'a> = Option<(&'a str, &'a str, bool)>;
        let cases: [(&str, Want); 16] = [
            (
                "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/blah/blah",
                Some(("123456789012", "us-east-1", false)),
            ),
            (
                "123456789012.dkr.ecr.us-west-2.amazonaws.com",
                Some(("123456789012", "us-west-2", false)),
            ),
            (
                "123456789012.dkr-ecr.us-west-2.on.aws",
                Some(("123456789012", "us-west-2", false)),
            ),
            (
                "123456789012.dkr-ecr-fips.us-west-2.on.aws",
                Some(("123456789012", "us-west-2", true)),
            ),
            (
                "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/foo",
                Some(("210987654321", "cn-north-1", false)),
            ),
            (
                "210987654321.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
                Some(("210987654321", "cn-north-1", false)),
            ),
            (
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
                Some(("123456789012", "us-iso-east-1", false)),
            ),
            (
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
                Some(("123456789012", "us-isob-east-1", false)),
            ),
            (
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
                Some(("123456789012", "eu-isoe-west-1", false)),
            ),
            (
                "123456789012.dkr.ecr.us-isof-east-1.csp.hci.ic.gov",
                Some(("123456789012", "us-isof-east-1", false)),
            ),
            (
                "123456789012.dkr-ecr.us-gov-east-1.on.aws",
                Some(("123456789012", "us-gov-east-1", false)),
            ),
            (
                "https://123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/x",
                Some(("123456789012", "us-gov-west-1", true)),
            ),
            (
                "123456789012.dkr-ecr-fips.us-gov-east-1.on.aws",
                Some(("123456789012", "us-gov-east-1", true)),
            ),
            (
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
                Some(("123456789012", "eusc-de-east-1", false)),
            ),
            ("public.ecr.aws", None),
            ("https://ecr-public.aws.com/v2/", None),
        ];
        for (input, want) in cases {
            let got = parse_ecr_host(input).unwrap_or_else(|| panic!("{input} should match"));
            match (want, got) {
                (None, EcrHost::Public) => {}
                (
                    Some((a, r, f)),
                    EcrHost::Private {
                        account_id,
                        region,
                        fips,
                        ..
                    },
                ) => {
                    assert_eq!(
                        (account_id.as_str(), region.as_str(), fips),
                        (a, r, f),
                        "{input}"
                    );
                }
                (w, g) => panic!("{input}: want {w:?}, got {g:?}"),
            }
        }
        // A port is ignored (Go's Hostname()).
        assert!(is_ecr_host(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443"
        ));
        assert!(is_ecr_host("https://public.ecr.aws/v2/"));
    }

    /// ecr-login `TestExtractRegistry` negatives, plus near misses of each regex part.
    #[test]
    fn negatives() {
        for input in [
            ".dkr.ecr.not-real.amazonaws.com",
            "not.ecr.io",
            "https://123456789012.dkr.ecr.us-west-2.amazonaws.com.fake.example.com",
            "https://123456789012.dkr.ecr.us-west-2.amazonaws.com.fake.example.com/image:latest",
            "123456789012.dkr.ecr-fips.us-west-2.amazonaws.com.fake.example.com",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn.fake.example.com.cn",
            "123456789012.dkr-ecr.cn-north-1.on.aws.com.cn",
            "public.ecr.aws.fake.example.com",
            "https://public.ecr.aws.fake.example.com",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "12345678901a.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr_ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr-FIPS.us-east-1.amazonaws.com",
            "123456789012.DKR.ECR.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.-us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us.east.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.org",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:abc",
            "registry.example.com:5000",
            "docker.io",
            "",
        ] {
            assert_eq!(parse_ecr_host(input), None, "{input:?} must not match");
        }
    }
}
