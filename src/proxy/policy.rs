//! The digest-pin policy (`--policy FILE`).
//!
//! Owns: loading the policy and deciding whether a manifest request may be answered. Two rules:
//! * `pins`: `"<upstream>/<repo>:<tag>": "sha256:…"` — that tag must resolve to that digest;
//!   `"<upstream>/<repo>": "sha256:…"` — every tag of the repository must. `<upstream>` is the
//!   alias, the upstream's host[:port], or `docker.io` for Docker Hub (`docker.io/library/alpine`).
//! * `digest_only`: `["<upstream>", …]` — tags are refused for that registry; clients must pull
//!   by digest (the containerd "a mirror may not resolve" idea, enforced at the proxy).
//!
//! Why at the proxy: a CI host pulls whatever a tag points at *now*; a pin turns a silently moved
//! tag (compromised upstream, mistaken push) into a clear `403 DENIED` naming both digests, before
//! any of the new content is served. Pins apply to tag resolution; a request by digest names its
//! content already.
//!
//! Example:
//! ```json
//! {"digest_only": ["prod-registry.example.com"],
//!  "pins": {"myreg/team/app:1.4": "sha256:<64 hex>", "docker.io/library/alpine": "sha256:<64 hex>"}}
//! ```

use super::reach::Registry;
use super::route::Upstream;
use std::collections::BTreeMap;
use std::path::Path;

/// The policy file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub digest_only: Vec<String>,
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
}

/// Policy file problems.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading policy {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy {path}: {why}")]
    Invalid { path: String, why: String },
}

/// A request the policy refuses (→ `403 DENIED`, naming what to pull instead).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyDenied {
    /// The registry accepts digest references only.
    #[error(
        "policy: registry {registry} accepts digest references only; pull {repo}@sha256:… instead of :{tag}"
    )]
    DigestOnly {
        registry: String,
        repo: String,
        tag: String,
    },
    /// The tag resolved to a digest other than its pin.
    #[error(
        "policy: {key} is pinned to {want}, but the upstream now serves {digest} for tag {tag}"
    )]
    Pinned {
        key: String,
        want: String,
        digest: String,
        tag: String,
    },
}

/// True when a policy's registry spelling (an alias, or any spelling of a registry) names `up`.
/// Registries are compared canonically ([`super::reach::Registry`]): `host:05443`, `HOST:5443`
/// and `host:5443` are one registry, and so are `host:443` and `host`, so no spelling slips past.
fn names_upstream(spec: &str, up: &Upstream) -> bool {
    spec == up.name || Registry::parse(spec).is_ok_and(|r| r == up.registry)
}

/// A pin key split: `<registry>/<repo>[:<tag>]`.
fn split_pin_key(key: &str) -> Option<(&str, &str, Option<&str>)> {
    let (registry, rest) = key.split_once('/')?;
    let last = rest.rsplit('/').next().unwrap_or(rest);
    match last.rsplit_once(':') {
        Some((_, tag)) => Some((registry, &rest[..rest.len() - tag.len() - 1], Some(tag))),
        None => Some((registry, rest, None)),
    }
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: p.clone(),
            source,
        })?;
        let pol: Policy = serde_json::from_slice(&bytes).map_err(|e| PolicyError::Invalid {
            path: p.clone(),
            why: e.to_string(),
        })?;
        for (k, v) in &pol.pins {
            if split_pin_key(k).is_none() {
                return Err(PolicyError::Invalid {
                    path: p,
                    why: format!(
                        "pin {k:?}: the key must be <registry or alias>/<repository>[:<tag>]"
                    ),
                });
            }
            let hex = v.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(PolicyError::Invalid {
                    path: p,
                    why: format!("pin {k:?}: {v:?} is not a sha256:<64 hex> digest"),
                });
            }
        }
        Ok(pol)
    }

    /// Refuses tags for a digest-only upstream.
    pub fn check_tag_allowed(
        &self,
        up: &Upstream,
        repo: &str,
        tag: &str,
    ) -> Result<(), PolicyDenied> {
        if let Some(n) = self.digest_only.iter().find(|d| names_upstream(d, up)) {
            return Err(PolicyDenied::DigestOnly {
                registry: n.to_owned(),
                repo: repo.to_owned(),
                tag: tag.to_owned(),
            });
        }
        Ok(())
    }

    /// Every pinned digest (kept by the cache's eviction).
    pub fn pinned_digests(&self) -> impl Iterator<Item = String> + '_ {
        self.pins.values().cloned()
    }

    /// Refuses a tag that resolved to a digest other than its pin.
    pub fn check_pin(
        &self,
        up: &Upstream,
        repo: &str,
        tag: &str,
        digest: &str,
    ) -> Result<(), PolicyDenied> {
        for (key, want) in &self.pins {
            let Some((spec, pin_repo, pin_tag)) = split_pin_key(key) else {
                continue;
            };
            let applies =
                pin_repo == repo && pin_tag.is_none_or(|t| t == tag) && names_upstream(spec, up);
            if applies && want != digest {
                return Err(PolicyDenied::Pinned {
                    key: key.clone(),
                    want: want.clone(),
                    digest: digest.to_owned(),
                    tag: tag.to_owned(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_digest_only() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let pol: Policy = serde_json::from_str(&format!(
            r#"{{"digest_only":["prod.example.com"],"pins":{{"myreg/team/app:1":"{a}","docker.io/library/alpine":"{a}"}}}}"#
        ))
        .unwrap();
        let my = Upstream::from_url("myreg", "http://127.0.0.1:5001").unwrap();
        assert!(pol.check_pin(&my, "team/app", "1", &a).is_ok());
        assert!(pol.check_pin(&my, "team/app", "1", &b).is_err());
        assert!(
            pol.check_pin(&my, "team/app", "2", &b).is_ok(),
            "other tag not pinned"
        );
        let hub = Upstream::from_url("hub", "https://registry-1.docker.io").unwrap();
        assert!(
            pol.check_pin(&hub, "library/alpine", "3", &b).is_err(),
            "repo pin"
        );
        let prod = Upstream::from_url("p", "https://prod.example.com").unwrap();
        assert!(pol.check_tag_allowed(&prod, "x", "latest").is_err());
        assert!(pol.check_tag_allowed(&my, "x", "latest").is_ok());
    }

    #[test]
    fn other_spellings_of_a_registry_do_not_bypass_the_policy() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let pol: Policy = serde_json::from_str(&format!(
            r#"{{"digest_only":["prod.example.com:5443"],"pins":{{"reg.example.com/team/app:1":"{a}"}}}}"#
        ))
        .unwrap();
        for url in [
            "https://prod.example.com:05443",
            "https://PROD.example.com:5443",
        ] {
            let up = Upstream::from_url("alias", url).unwrap();
            assert!(pol.check_tag_allowed(&up, "x", "latest").is_err(), "{url}");
        }
        for url in ["https://reg.example.com:443", "https://REG.example.com"] {
            let up = Upstream::from_url("alias", url).unwrap();
            assert!(pol.check_pin(&up, "team/app", "1", &b).is_err(), "{url}");
        }
        let other = Upstream::from_url("alias", "https://reg.example.com:5000").unwrap();
        assert!(pol.check_pin(&other, "team/app", "1", &b).is_ok());
        assert_eq!(
            split_pin_key("h:5000/team/app:1.4"),
            Some(("h:5000", "team/app", Some("1.4")))
        );
        assert_eq!(
            split_pin_key("h:5000/team/app"),
            Some(("h:5000", "team/app", None))
        );
    }
}
