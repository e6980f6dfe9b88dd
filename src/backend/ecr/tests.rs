//! Tests of the ECR backend: cache freshness, stale fallback, strictness, profile mapping and
//! identity keys, read-only store/erase. Host recognition is tested in `host_tests.rs`.
use super::cache::CacheEntry;
use super::config::{EcrConfig, EcrOptions, RegistrySettings};
use super::fetch::{Token, TokenFetcher};
use super::*;
use crate::config::locations::Env;
use crate::credhelper::{Backend, BackendError, Credentials};
use crate::secret::Secret;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn half_life_and_max_age() {
    let e = CacheEntry {
        proxy_endpoint: "x".into(),
        username: "AWS".into(),
        password: "p".into(),
        fetched_at: 1000,
        expires_at: Some(1000 + 100),
    };
    assert!(e.is_fresh(1049, 10_000));
    assert!(!e.is_fresh(1050, 10_000));
    // Past expiry (moto's 2015): the max age is the lifetime.
    let past = CacheEntry {
        expires_at: Some(10),
        ..e.clone()
    };
    assert!(past.is_fresh(1000 + 299, 600));
    assert!(!past.is_fresh(1000 + 300, 600));
    let none = CacheEntry {
        expires_at: None,
        ..e.clone()
    };
    assert!(!none.is_fresh(1000, 0));
    // Clock went backwards: refresh.
    assert!(!e.is_fresh(999, 10_000));
}

struct Counting<'a> {
    calls: &'a Cell<usize>,
    fail: bool,
}
impl TokenFetcher for Counting<'_> {
    fn fetch(&self, h: &EcrHost, _: &RegistrySettings) -> Result<Token, EcrError> {
        self.calls.set(self.calls.get() + 1);
        if self.fail {
            return Err(EcrError::Api {
                host: h.registry_id.clone(),
                region: h.region.clone(),
                detail: "down".into(),
            });
        }
        Ok(Token {
            proxy_endpoint: format!("https://{}", h.hostname()),
            username: "AWS".into(),
            password: Secret::new(format!("tok{}", self.calls.get())),
            expires_at: None,
        })
    }
}

fn opts(dir: &Path, extra: &[(&str, &str)]) -> EcrOptions {
    let mut env = Env::from_pairs([
        ("REGAUTH_ECR_CACHE_DIR", dir.join("c").to_str().unwrap()),
        ("REGAUTH_CONFIG_DIR", dir.to_str().unwrap()),
    ]);
    for (k, v) in extra {
        env.set(k, *v);
    }
    EcrOptions::from_env(&env).unwrap()
}

#[test]
fn cache_hits_then_stale_fallback_and_strictness() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Cell::new(0);
    let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    let b = EcrBackend::with_fetcher(
        opts(dir.path(), &[]),
        Counting {
            calls: &calls,
            fail: false,
        },
    );
    assert_eq!(b.get(host).unwrap().secret.expose(), "tok1");
    assert_eq!(
        b.get(&format!("https://{host}/v2/"))
            .unwrap()
            .secret
            .expose(),
        "tok1"
    );
    assert_eq!(calls.get(), 1);
    assert!(matches!(
        b.get("registry.example.com"),
        Err(BackendError::NotFound)
    ));
    assert_eq!(calls.get(), 1, "non-ECR hosts never reach AWS");
    assert_eq!(
        b.list().unwrap(),
        BTreeMap::from([(format!("https://{host}"), "AWS".to_owned())])
    );
    // Expired (max age 0) + failing API → the stale token.
    let b0 = EcrBackend::with_fetcher(
        opts(dir.path(), &[("REGAUTH_ECR_MAX_TOKEN_AGE", "0")]),
        Counting {
            calls: &calls,
            fail: true,
        },
    );
    assert_eq!(b0.get(host).unwrap().secret.expose(), "tok1");
    assert_eq!(calls.get(), 2);
    // Nothing cached + failing API: not found, or an error when strict.
    let other = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
    assert!(matches!(b0.get(other), Err(BackendError::NotFound)));
    let strict = EcrBackend::with_fetcher(
        opts(dir.path(), &[("REGAUTH_ECR_STRICT", "1")]),
        Counting {
            calls: &calls,
            fail: true,
        },
    );
    let e = strict.get(other).unwrap_err().to_string();
    assert!(e.contains("210987654321") && e.contains("down"), "{e}");
}

#[test]
fn profile_mapping_and_identity_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ecr.json"),
        r#"{"registries":{"123456789012.dkr.ecr.us-east-1.amazonaws.com":{"profile":"prod","region":"us-east-2"}}}"#,
    )
    .unwrap();
    let o = opts(dir.path(), &[("AWS_ACCESS_KEY_ID", "ASIATEMP1")]);
    let cfg = EcrConfig::load(o.config_file.as_ref().unwrap()).unwrap();
    let s = cfg.for_host("https://123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/");
    assert_eq!(
        s,
        RegistrySettings {
            profile: Some("prod".into()),
            region: Some("us-east-2".into())
        }
    );
    // The profile, not the (temporary) key, decides the identity.
    let o2 = opts(dir.path(), &[("AWS_ACCESS_KEY_ID", "ASIATEMP2")]);
    assert_eq!(o.identity(&s), o2.identity(&s));
    assert_ne!(
        o.identity(&RegistrySettings::default()),
        o2.identity(&RegistrySettings::default())
    );
    let role1 = opts(
        dir.path(),
        &[
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/a"),
            ("AWS_ACCESS_KEY_ID", "X"),
        ],
    );
    let role2 = opts(
        dir.path(),
        &[
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/a"),
            ("AWS_ACCESS_KEY_ID", "Y"),
        ],
    );
    assert_eq!(role1.identity(&s), role2.identity(&s));
    std::fs::write(
        dir.path().join("ecr.json"),
        r#"{"registries":{"h":{"profil":"x"}}}"#,
    )
    .unwrap();
    let e = EcrConfig::load(&dir.path().join("ecr.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ecr.json") && e.contains("profil"), "{e}");
}

#[test]
fn store_and_erase_are_read_only_unless_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Cell::new(0);
    let c = Credentials {
        server_url: "x".into(),
        username: "u".into(),
        secret: Secret::new("s"),
    };
    let b = EcrBackend::with_fetcher(
        opts(dir.path(), &[]),
        Counting {
            calls: &calls,
            fail: false,
        },
    );
    assert!(
        b.store(&c)
            .unwrap_err()
            .to_string()
            .starts_with("not implemented")
    );
    assert!(b.erase("x").is_err());
    let b = EcrBackend::with_fetcher(
        opts(dir.path(), &[("AWS_ECR_IGNORE_CREDS_STORAGE", "true")]),
        Counting {
            calls: &calls,
            fail: false,
        },
    );
    b.store(&c).unwrap();
    b.erase("x").unwrap();
}
