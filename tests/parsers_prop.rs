//! Property tests: the parsers that read outside input never panic, and what they accept
//! round-trips. Covers Docker config parsing in all three dialects, `auth` decoding, image
//! references, command-line targets and the key normalisers.

use proptest::prelude::*;
use regauth::config::keys::{convert_to_hostname, gitlab_image_path, registry_path};
use regauth::config::{Dialect, DockerConfig, Origin, decode_auth, encode_auth};
use regauth::reference::{Reference, Target};

fn origin() -> Origin {
    Origin::Env("TEST".into())
}

/// JSON-ish text built from config vocabulary, so the parser's deeper paths are reached.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "auths",
        "credsStore",
        "credHelpers",
        "auth",
        "username",
        "password",
        "identitytoken",
        "registrytoken",
        "reg.example:5000",
        "https://index.docker.io/v1/",
        "",
        "x",
    ]);
    let scalar = prop_oneof![
        Just("null".to_owned()),
        Just("1".to_owned()),
        Just("true".to_owned()),
        "[a-zA-Z0-9+/=:]{0,16}".prop_map(|s| format!("\"{s}\"")),
    ];
    let leaf = (key.clone(), scalar).prop_map(|(k, v)| format!("\"{k}\":{v}"));
    let inner = prop::collection::vec(leaf, 0..4).prop_map(|v| format!("{{{}}}", v.join(",")));
    let entry = (key.clone(), inner).prop_map(|(k, v)| format!("\"{k}\":{v}"));
    let mid = prop::collection::vec(entry, 0..4).prop_map(|v| format!("{{{}}}", v.join(",")));
    (prop::collection::vec((key, mid), 0..4), any::<bool>()).prop_map(|(v, truncate)| {
        let s = format!(
            "{{{}}}",
            v.into_iter()
                .map(|(k, m)| format!("\"{k}\":{m}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        if truncate {
            s[..s.len() / 2].to_owned()
        } else {
            s
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn config_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), text in config_text()) {
        for d in [Dialect::Full, Dialect::Legacy, Dialect::DockerEnv] {
            let _ = DockerConfig::parse(&bytes, origin(), d);
            let _ = DockerConfig::parse(text.as_bytes(), origin(), d);
        }
    }

    #[test]
    fn config_errors_never_echo_values(secret in "[a-z]{12}") {
        // The secret sits where a string is not allowed, and as undecodable base64.
        for text in [
            format!(r#"{{"auths":{{"r":{{"password":["{secret}"]}}}}}}"#),
            format!(r#"{{"auths":{{"r":{{"auth":"!{secret}"}}}}}}"#),
            format!(r#"{{"auths":"{secret}"}}"#),
            format!(r#"{{"credsStore":{{"{secret}":1}}}}"#),
        ] {
            let e = DockerConfig::parse(text.as_bytes(), origin(), Dialect::Full).unwrap_err().to_string();
            prop_assert!(!e.contains(&secret), "{}", e);
        }
    }

    #[test]
    fn auth_round_trips(user in "[^:\\x00]{1,20}", pass in "[^\\x00]{0,20}") {
        let (u, p) = decode_auth(&encode_auth(&user, &pass)).unwrap();
        prop_assert_eq!(u, user);
        prop_assert_eq!(p.expose(), pass.as_str());
    }

    #[test]
    fn auth_decoding_never_panics(s in "\\PC{0,40}") {
        let _ = decode_auth(&s);
    }

    #[test]
    fn references_never_panic(s in "\\PC{0,80}") {
        let _ = Reference::parse(&s);
        let _ = Target::parse(&s);
        let _ = convert_to_hostname(&s);
        let _ = registry_path(&s);
        let _ = gitlab_image_path(&s);
    }

    #[test]
    fn valid_references_round_trip(
        host in prop::sample::select(vec!["", "reg.example/", "reg.example:5000/", "localhost:1/", "[::1]:5/"]),
        path in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
        tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
    ) {
        let s = format!("{host}{path}{}", tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default());
        let r = Reference::parse(&s).unwrap();
        let again = Reference::parse(&r.to_string()).unwrap();
        prop_assert_eq!(r, again);
    }
}
