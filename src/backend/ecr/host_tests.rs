//! Tests of [`super`]: ecr-login's `TestExtractRegistry` table and near misses.

use super::host::*;

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
        match want {
            None => assert!(got.public && got.registry_id.is_empty(), "{input}: {got:?}"),
            Some((a, r, f)) => assert_eq!(
                (
                    got.registry_id.as_str(),
                    got.region.as_str(),
                    got.fips,
                    got.public
                ),
                (a, r, f, false),
                "{input}"
            ),
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
        "123456789012.dkr.ecr.-bad.amazonaws.com",
        "123456789012.dkrxecr.us-east-1.amazonaws.com",
        "210987654321.dkr.ecr.cn-north-1.on.aws.com.cn",
        "registry.example.com:5000",
        "docker.io",
        "",
    ] {
        assert_eq!(parse_ecr_host(input), None, "{input:?} must not match");
    }
}

/// What the ECR API call needs comes out of the same parse, and the host can be rebuilt.
#[test]
fn api_parts_and_hostname() {
    let h = parse_ecr_host("123456789012.dkr-ecr.us-west-2.on.aws").unwrap();
    assert!(h.dual_stack && !h.fips && !h.public);
    assert_eq!(h.hostname(), "123456789012.dkr-ecr.us-west-2.on.aws");
    let h =
        parse_ecr_host("https://123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/x").unwrap();
    assert!(h.fips && !h.dual_stack);
    assert_eq!(
        h.hostname(),
        "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"
    );
    for p in [
        "public.ecr.aws",
        "https://public.ecr.aws/foo",
        "ecr-public.aws.com",
        "https://ecr-public.aws.com",
    ] {
        let h = parse_ecr_host(p).unwrap();
        assert!(h.public && h.region == "us-east-1", "{p}");
        assert_eq!(h.dual_stack, p.contains("ecr-public"), "{p}");
        assert_eq!(h.hostname(), crate::config::keys::registry_host(p), "{p}");
    }
}
