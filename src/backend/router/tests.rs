//! Tests of the router: config parsing and its errors, pattern matching, get/store/erase/list
//! routing.
use super::*;
use std::path::Path;

fn cfg(json: &str) -> Result<RouterConfig, RouterError> {
    RouterConfig::parse(Path::new("/etc/regauth/router.json"), json.as_bytes())
}

const EXAMPLE: &str = r#"{"store":"file","routes":[
    {"host":"registry.example.com:5000","backend":"file"},
    {"host":"*.example.org","backend":"env"},
    {"host":"*.example.net:5000","backend":"gitlab"},
    {"host":"docker.io","helper":"hub"},
    {"host":"ecr","helper":"ecr"},
    {"host":"*","backend":"file"}]}"#;

#[test]
fn matching_table() {
    let c = cfg(EXAMPLE).unwrap();
    let file = RuleTarget::File;
    let env = RuleTarget::Env;
    let gl = RuleTarget::Gitlab;
    let hub = RuleTarget::Helper("hub".into());
    let ecr = RuleTarget::Helper("ecr".into());
    let table: &[(&str, &RuleTarget)] = &[
        ("registry.example.com:5000", &file),
        ("https://registry.example.com:5000/v2/", &file),
        ("a.example.org", &env),
        ("a.b.example.org:8443", &env),
        ("https://A.Example.Org/v2/", &env),
        ("example.org", &file),    // the bare domain is not *.example.org
        ("badexample.org", &file), // nor is a name that merely ends alike
        ("a.example.org.evil.com", &file),
        ("x.example.net:5000", &gl),
        ("x.example.net", &file), // port-exact wildcard
        ("x.example.net:5001", &file),
        ("docker.io", &hub),
        ("index.docker.io", &hub),
        ("registry-1.docker.io", &hub),
        ("https://index.docker.io/v1/", &hub),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com", &ecr),
        (
            "https://123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/v2/x",
            &ecr,
        ),
        ("123456789012.dkr-ecr.us-west-2.on.aws", &ecr),
        ("210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn", &ecr),
        ("123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov", &ecr),
        ("public.ecr.aws", &ecr),
        ("ecr-public.aws.com", &ecr),
        (
            "123456789012.dkr.ecr.us-west-2.amazonaws.com.fake.example.com",
            &file,
        ),
        ("public.ecr.aws.fake.example.com", &file),
        ("not.ecr.io", &file),
        ("registry.example.com", &file),
    ];
    for (url, want) in table {
        assert_eq!(&c.route(url).unwrap().target, *want, "{url}");
    }
    let no_catch_all = cfg(r#"{"routes":[{"host":"reg:5000","backend":"file"}]}"#).unwrap();
    assert!(no_catch_all.route("reg").is_none());
    assert!(no_catch_all.route("reg:5000").is_some());
}

#[test]
fn config_errors_name_file_and_field() {
    let cases = [
        ("{", "(file)", "invalid JSON"),
        ("[]", "(file)", "expected a JSON object"),
        (r#"{"routes":[]"#, "(file)", "invalid JSON"),
        (r#"{"store":"file"}"#, "routes", "missing"),
        (r#"{"route":[]}"#, "route", "unknown field"),
        (r#"{"routes":{}}"#, "routes", "must be a list"),
        (
            r#"{"routes":[{"backend":"file"}]}"#,
            "routes[0].host",
            "missing",
        ),
        (r#"{"routes":[{"host":"a"}]}"#, "routes[0]", "exactly one"),
        (
            r#"{"routes":[{"host":"a","backend":"file","helper":"x"}]}"#,
            "routes[0]",
            "exactly one",
        ),
        (
            r#"{"routes":[{"host":"*","backend":"keyring"}]}"#,
            "routes[0].backend",
            "unknown backend \"keyring\"",
        ),
        (
            r#"{"routes":[{"host":"*","helper":"../bin/sh"}]}"#,
            "routes[0].helper",
            "path traversal",
        ),
        (
            r#"{"routes":[{"host":"*","helper":"regauth"}]}"#,
            "routes[0].helper",
            "loop",
        ),
        (
            r#"{"routes":[{"host":"a.*.com","backend":"env"}]}"#,
            "routes[0].host",
            "`*`",
        ),
        (
            r#"{"routes":[{"host":"*.","backend":"env"}]}"#,
            "routes[0].host",
            "wildcard",
        ),
        (
            r#"{"routes":[{"host":"*.x:ab","backend":"env"}]}"#,
            "routes[0].host",
            "port",
        ),
        (
            r#"{"routes":[{"host":"","backend":"env"}]}"#,
            "routes[0].host",
            "empty",
        ),
        (
            r#"{"routes":[{"host":"a","backend":"env","bogus":1}]}"#,
            "routes[0].bogus",
            "unknown field",
        ),
        (
            r#"{"store":"nope","routes":[]}"#,
            "store",
            "unknown backend",
        ),
        (
            r#"{"store":{"helper":"a/b"},"routes":[]}"#,
            "store",
            "path traversal",
        ),
    ];
    for (json, field, why) in cases {
        let e = cfg(json).unwrap_err().to_string();
        assert!(
            e.contains("/etc/regauth/router.json")
                && e.contains(&format!(": {field}: "))
                && e.contains(why),
            "{json}: {e}"
        );
    }
    let ok = cfg(r#"{"store":{"helper":"keyring"},"routes":[]}"#).unwrap();
    assert_eq!(ok.store, Some(RuleTarget::Helper("keyring".into())));
    let e = RouterConfig::load(Path::new("/nonexistent/router.json")).unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent/router.json not found"),
        "{e}"
    );
}

#[test]
fn in_process_routing_and_filtered_list() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("REGAUTH_CONFIG_DIR", dir.path().to_str().unwrap()),
        ("REGAUTH_A_EXAMPLE_ORG_USERNAME", "envuser"),
        ("REGAUTH_A_EXAMPLE_ORG_PASSWORD", "envpass"),
        // Present in env but routed to file: must not be listed.
        ("REGAUTH_REG_EXAMPLE_COM_5000_USERNAME", "shadow"),
        ("REGAUTH_REG_EXAMPLE_COM_5000_PASSWORD", "shadow"),
        ("PATH", "/nonexistent"),
    ]);
    let config = cfg(r#"{"store":"file","routes":[
        {"host":"*.example.org","backend":"env"},
        {"host":"ecr","helper":"not-installed"},
        {"host":"*","backend":"file"}]}"#);
    let r = RouterBackend::with_config(env, config);
    let c = Credentials {
        server_url: "reg.example.com:5000".into(),
        username: "fileuser".into(),
        secret: crate::secret::Secret::new("filepass"),
    };
    r.store(&c).unwrap();
    assert_eq!(r.get("reg.example.com:5000").unwrap().username, "fileuser");
    assert_eq!(r.get("a.example.org").unwrap().secret.expose(), "envpass");
    assert!(matches!(
        r.get("b.example.org"),
        Err(BackendError::NotFound)
    ));
    // The helper is missing: a clear error for get, skipped in list.
    let e = r.get("public.ecr.aws").unwrap_err().to_string();
    assert!(e.contains("docker-credential-not-installed"), "{e}");
    let list = r.list().unwrap();
    assert_eq!(
        list.into_iter().collect::<Vec<_>>(),
        [
            ("a.example.org".to_owned(), "envuser".to_owned()),
            ("reg.example.com:5000".to_owned(), "fileuser".to_owned()),
        ]
    );
    r.erase("reg.example.com:5000").unwrap();
    assert!(matches!(
        r.get("reg.example.com:5000"),
        Err(BackendError::NotFound)
    ));
}

#[test]
fn no_store_is_read_only_and_bad_config_answers_every_request() {
    let env = Env::from_pairs([("PATH", "/nonexistent")]);
    let r = RouterBackend::with_config(env, cfg(r#"{"routes":[]}"#));
    let c = Credentials {
        server_url: "x".into(),
        username: "u".into(),
        secret: crate::secret::Secret::new("hunter2"),
    };
    let e = r.store(&c).unwrap_err().to_string();
    assert!(
        e.contains("no \"store\" field") && !e.contains("hunter2"),
        "{e}"
    );
    let env = Env::from_pairs([("REGAUTH_IGNORE_STORE", "true")]);
    let r = RouterBackend::with_config(env, cfg(r#"{"routes":[]}"#));
    r.store(&c).unwrap();
    let r = RouterBackend::with_config(Env::default(), cfg(r#"{"routes":"#));
    for e in [
        r.get("x").unwrap_err(),
        r.list().unwrap_err(),
        r.erase("x").unwrap_err(),
    ] {
        assert!(
            e.to_string().contains("router.json: (file): invalid JSON"),
            "{e}"
        );
    }
}
