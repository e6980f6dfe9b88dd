use super::*;
use crate::proxy::route::Upstream;

fn store(profile: Profile, config: &str, capacity: usize) -> (tempfile::TempDir, Arc<CredStore>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let mut r = Resolver::new(profile);
    r.env = crate::config::locations::Env::from_pairs([("HOME", "/nonexistent")]);
    r.config_dir = Some(dir.path().to_owned());
    (dir, Arc::new(CredStore::new(r, capacity)))
}

#[tokio::test]
async fn docker_hub_upstream_uses_the_hub_key() {
    let (_d, store) = store(
        Profile::Docker,
        r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
        16,
    );
    for url in [
        "https://registry-1.docker.io",
        "https://docker.io",
        "https://index.docker.io",
    ] {
        let up = Upstream::from_url("hub", url).unwrap();
        let c = store.get(&up.cred_host, "library/alpine").await.unwrap();
        let cred = c.credential.as_ref().expect("hub credential");
        assert_eq!(cred.username, "u");
        // user + a 16-hex-digit hash of the secret, never the secret itself.
        assert!(
            c.identity.starts_with("u#") && c.identity.len() == 2 + 16,
            "{}",
            c.identity
        );
        assert!(
            c.source
                .as_deref()
                .is_some_and(|s| s.ends_with("config.json"))
        );
    }
    let other = store.get("127.0.0.1:5999", "x").await.unwrap();
    assert!(other.credential.is_none());
    assert_eq!(other.identity, "anonymous");
    assert_eq!(other.source, None);
}

#[tokio::test]
async fn gitlab_profile_matches_the_repository_path() {
    // dTpw = u:p
    let (_d, store) = store(
        Profile::Gitlab,
        r#"{"auths":{"127.0.0.1:5000/team":{"auth":"dTpw"}}}"#,
        16,
    );
    let team = store.get("127.0.0.1:5000", "team/app").await.unwrap();
    assert_eq!(
        team.credential.as_ref().map(|c| c.username.as_str()),
        Some("u")
    );
    let other = store.get("127.0.0.1:5000", "other/app").await.unwrap();
    assert!(
        other.credential.is_none(),
        "other/app must not get team's key"
    );
    // The docker profile asks by host only, and the docker CLI reduces keys to their host
    // (ConvertToHostname): there the key applies to every repository of the host.
    let (_d2, docker) = store_docker();
    for repo in ["team/app", "other/app"] {
        let d = docker.get("127.0.0.1:5000", repo).await.unwrap();
        assert!(d.credential.is_some(), "{repo}");
    }
}

fn store_docker() -> (tempfile::TempDir, Arc<CredStore>) {
    store(
        Profile::Docker,
        r#"{"auths":{"127.0.0.1:5000/team":{"auth":"dTpw"}}}"#,
        16,
    )
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let (_d, store) = store(Profile::Gitlab, r#"{"auths":{}}"#, 8);
    for i in 0..50 {
        store
            .get("127.0.0.1:5000", &format!("team/app{i}"))
            .await
            .unwrap();
    }
    assert!(relock(&store.cache).len() <= 8);
    assert_eq!(relock(&store.running).len(), 1, "one gate per host");
}
