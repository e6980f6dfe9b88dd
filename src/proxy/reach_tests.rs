use super::*;

fn reg(s: &str) -> String {
    Registry::parse(s).unwrap().to_string()
}

#[test]
fn one_spelling_per_registry() {
    for (input, canonical) in [
        ("Registry.Example.com", "registry.example.com"),
        ("registry.example.com.", "registry.example.com"),
        ("registry.example.com:443", "registry.example.com"),
        ("registry.example.com:05443", "registry.example.com:5443"),
        (
            "https://registry.example.com:5443/v2/",
            "registry.example.com:5443",
        ),
        (
            "registry.example.com:5000/team/app",
            "registry.example.com:5000",
        ),
        (
            "user@registry.example.com:5000",
            "registry.example.com:5000",
        ),
        ("index.docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io:443", "docker.io"),
        ("docker.io", "docker.io"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("[::1]:5000", "[::1]:5000"),
        ("[0:0::1]", "[::1]"),
        ("localhost:5000", "localhost:5000"),
    ] {
        assert_eq!(reg(input), canonical, "{input}");
    }
    assert!(Registry::parse("docker.io").unwrap().is_docker_hub());
    assert!(!Registry::parse("docker.io:5000").unwrap().is_docker_hub());
}

#[test]
fn bad_registries_refused() {
    for s in [
        "",
        "host:",
        "host:0",
        "host:65536",
        "host:99999999999",
        "host:+5",
        "a..b",
        "-a.com",
        "::1",
        "[::1",
        "ho st",
    ] {
        assert!(Registry::parse(s).is_err(), "{s:?} accepted");
    }
}

#[test]
fn patterns() {
    let p = |s| RegistryPattern::parse(s).unwrap();
    let r = |s| Registry::parse(s).unwrap();
    assert!(p("registry.example.com").matches(&r("registry.example.com:443")));
    assert!(!p("registry.example.com").matches(&r("registry.example.com:22")));
    assert!(p("registry.example.com:*").matches(&r("registry.example.com:22")));
    assert!(p("registry.example.com:5000").matches(&r("REGISTRY.example.com:05000")));
    assert!(p("*.example.com").matches(&r("a.example.com")));
    assert!(p("*.example.com").matches(&r("b.a.example.com")));
    assert!(!p("*.example.com").matches(&r("example.com")));
    assert!(!p("*.example.com").matches(&r("badexample.com")));
    assert!(!p("*.example.com").matches(&r("a.example.com:5000")));
    assert!(p("*.example.com:*").matches(&r("a.example.com:5000")));
    assert!(p("index.docker.io").matches(&r("docker.io")));
    for bad in ["*", "*:*", "a.*.com", "*example.com", "host:x", ""] {
        assert!(RegistryPattern::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn closed_by_default() {
    let mut reach = Reach::closed();
    let r = |s| Registry::parse(s).unwrap();
    assert!(!reach.allows(&r("docker.io")));
    reach.allow(r("registry-1.docker.io"), ReachSource::Upstream);
    assert!(reach.allows(&r("index.docker.io")));
    let refused = reach.allow_keys([
        "https://index.docker.io/v1/",
        "reg.example.com:5000/team",
        "bad key",
    ]);
    assert_eq!(refused, vec!["bad key".to_owned()]);
    assert!(reach.allows(&r("reg.example.com:5000")));
    assert!(!reach.allows(&r("reg.example.com")));
    assert!(!reach.allows(&r("127.0.0.1:22")));
    reach.allow_pattern(RegistryPattern::parse("*.corp.example").unwrap());
    assert!(reach.allows(&r("a.corp.example")));
}

#[test]
fn internal_addresses() {
    for ip in [
        "127.0.0.1",
        "127.8.9.1",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.255",
        "198.18.0.1",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
    ] {
        assert!(is_internal(ip.parse().unwrap()), "{ip} not internal");
    }
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "2002:0808:0808::1",
    ] {
        assert!(!is_internal(ip.parse().unwrap()), "{ip} internal");
    }
}

#[test]
fn internal_literals() {
    assert_eq!(literal_internal("127.0.0.1"), Some(true));
    assert_eq!(literal_internal("localhost"), Some(true));
    assert_eq!(literal_internal("[::1]"), Some(true));
    assert_eq!(literal_internal("registry.example.com"), None);
    assert_eq!(literal_internal("8.8.8.8"), Some(false));
}

#[tokio::test]
async fn guarded_resolver_refuses_loopback_names() {
    use tower_service::Service;
    let name = "localhost".parse().unwrap();
    let err = GuardedResolver.call(name).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("internal"), "{err}");
}

#[test]
fn redirect_rules() {
    let u = |s: &str| s.parse::<hyper::Uri>().unwrap();
    let public = u("https://registry.example.com/v2/x/blobs/sha256:00");
    // To a CDN over https: allowed, through the resolver that refuses internal answers.
    assert_eq!(
        redirect_hop(&public, &u("https://cdn.example.net/b"), false),
        Ok(Hop::PublicOnly)
    );
    // Downgrade to http on another host: refused (the cloud-metadata pattern).
    assert!(matches!(
        redirect_hop(
            &public,
            &u("http://169.254.169.254/latest/meta-data/"),
            false
        ),
        Err(RedirectRefused::NotHttps { .. })
    ));
    // https to internal literals and localhost: refused for a public upstream.
    for to in [
        "https://127.0.0.1:8443/x",
        "https://[::1]/x",
        "https://10.0.0.1/x",
        "https://localhost/x",
        "https://[::ffff:169.254.169.254]/x",
    ] {
        assert!(
            matches!(
                redirect_hop(&public, &u(to), false),
                Err(RedirectRefused::Internal { .. })
            ),
            "{to}"
        );
    }
    // https to a public literal: direct.
    assert_eq!(
        redirect_hop(&public, &u("https://8.8.8.8/x"), false),
        Ok(Hop::Direct)
    );
    // The upstream's own scheme and host (another port too): direct, also over http.
    let local = u("http://127.0.0.1:5000/v2/");
    assert_eq!(
        redirect_hop(&local, &u("http://127.0.0.1:5001/b"), true),
        Ok(Hop::Direct)
    );
    // An internal upstream may redirect to internal https hosts, never to http elsewhere.
    assert_eq!(
        redirect_hop(&local, &u("https://10.0.0.5/b"), true),
        Ok(Hop::Direct)
    );
    assert!(matches!(
        redirect_hop(&local, &u("http://10.0.0.5/b"), true),
        Err(RedirectRefused::NotHttps { .. })
    ));
}

#[tokio::test]
async fn internal_hosts() {
    assert!(host_is_internal("127.0.0.1").await);
    assert!(host_is_internal("[::1]").await);
    assert!(host_is_internal("localhost").await);
    assert!(!host_is_internal("8.8.8.8").await);
    assert!(!host_is_internal("no-such-host.invalid").await);
}
