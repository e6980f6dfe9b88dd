//! `regauth check`: static findings about the effective Docker config.
//!
//! Owns: the list of things that are wrong or will surprise — no config at all (naming every
//! path looked at), parse errors (a `DOCKER_AUTH_CONFIG` file path is named as such), helper
//! names that are empty, unsafe or not installed, `auths` entries a `credsStore`/`credHelpers`
//! entry makes unused (docker then pulls anonymously when the helper has nothing), keys that can
//! never match under the chosen profile, keys that normalise to the same host, and (given images)
//! port mismatches. Runs no helper.
//!
//! Does not own: resolution itself; for "what would match this image" it asks the
//! [`crate::resolve::Resolver`] (which may then run the one helper that matches).

use crate::config::keys::{
    DOCKER_HUB_KEY, auth_config_key, convert_to_hostname, host_name, registry_path,
};
use crate::config::locations::legacy_dockercfg;
use crate::config::{Dialect, DockerConfig, Origin};
use crate::credhelper::client::validate_helper_name;
use crate::reference::Target;
use crate::resolve::{DOCKER_AUTH_CONFIG, Profile, Resolver};
use std::collections::BTreeMap;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One finding: where, what, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// The config file path or variable.
    pub source: String,
    /// The key path, e.g. `credHelpers["docker.io"]`.
    pub field: String,
    pub message: String,
}

/// Checks every config the profile reads, and optionally how each of `images` (always read as
/// image references) and `hosts` (always read as registry `host[:port]`) would resolve.
pub fn check(r: &Resolver, images: &[String], hosts: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut configs = Vec::new();

    let mut looked_at = Vec::new();
    match r.env.get(DOCKER_AUTH_CONFIG) {
        None => looked_at.push(format!("{DOCKER_AUTH_CONFIG} (not set)")),
        Some(value) => {
            let (dialect, follow_path) = match r.profile {
                Profile::Docker => (Dialect::DockerEnv, false),
                Profile::Gitlab => (Dialect::Full, true),
            };
            match DockerConfig::from_env_value(DOCKER_AUTH_CONFIG, value, dialect, follow_path) {
                Ok(c) => configs.push(c),
                Err(e) => out.push(Finding {
                    level: Level::Error,
                    source: DOCKER_AUTH_CONFIG.into(),
                    field: String::new(),
                    message: format!(
                        "{} (the {} profile ignores this source)",
                        e.detail(),
                        profile_name(r.profile)
                    ),
                }),
            }
        }
    }
    let mut file_found = false;
    let files = r.config_file().into_iter().chain(legacy_dockercfg(&r.env));
    for path in files {
        let dialect = if path.ends_with(".dockercfg") && r.profile == Profile::Docker {
            Dialect::Legacy
        } else {
            Dialect::Full
        };
        match DockerConfig::load_file(&path, dialect) {
            Ok(Some(c)) => {
                configs.push(c);
                file_found = true;
                break;
            }
            Ok(None) => looked_at.push(format!("{} (does not exist)", path.display())),
            Err(e) => {
                out.push(Finding {
                    level: Level::Error,
                    source: path.display().to_string(),
                    field: String::new(),
                    message: e.detail(),
                });
                file_found = true;
                break;
            }
        }
    }
    if configs.is_empty() && !file_found && out.is_empty() {
        out.push(Finding {
            level: Level::Warning,
            source: String::new(),
            field: String::new(),
            message: format!(
                "no Docker config found (looked at {}); every pull is anonymous",
                looked_at.join(", ")
            ),
        });
    }

    for c in &configs {
        check_config(r, c, &mut out);
    }
    for image in images {
        check_image(
            r,
            &configs,
            "--image",
            image,
            Target::image(image),
            &mut out,
        );
    }
    for host in hosts {
        check_image(r, &configs, "--host", host, Target::host(host), &mut out);
    }
    out
}

fn profile_name(p: Profile) -> &'static str {
    match p {
        Profile::Docker => "docker",
        Profile::Gitlab => "gitlab",
    }
}

fn check_config(r: &Resolver, c: &DockerConfig, out: &mut Vec<Finding>) {
    let source = c.origin.to_string();
    let mut push = |level, field: String, message: String| {
        out.push(Finding {
            level,
            source: source.clone(),
            field,
            message,
        })
    };
    let helpers = c
        .creds_store
        .iter()
        .map(|h| ("credsStore".to_owned(), h))
        .chain(
            c.cred_helpers
                .iter()
                .map(|(k, h)| (format!("credHelpers[{k:?}]"), h)),
        );
    for (field, name) in helpers {
        if name.is_empty() && r.profile == Profile::Docker {
            continue; // docker: "use the file store for this registry"
        }
        if let Err(e) = validate_helper_name(name) {
            push(Level::Error, field, e.to_string());
        } else if let Err(e) = r.helpers.locate(name) {
            push(
                Level::Error,
                field,
                format!(
                    "{e}; {}",
                    match r.profile {
                        Profile::Docker => "pulls from this registry will fail",
                        Profile::Gitlab => "GitLab Runner skips this whole source",
                    }
                ),
            );
        }
    }

    if r.profile == Profile::Docker {
        let is_env = matches!(&c.origin, Origin::Env(_));
        let maps: Vec<(&str, Vec<&String>)> = vec![
            ("credHelpers", c.cred_helpers.keys().collect()),
            (
                "auths",
                if is_env {
                    c.auths.keys().collect()
                } else {
                    Vec::new()
                },
            ),
        ];
        for (section, keys) in maps {
            for key in keys {
                if let Some(why) = docker_exact_key_problem(key) {
                    push(Level::Warning, format!("{section}[{key:?}]"), why);
                }
            }
        }
        // auths entries a helper makes unused: the docker CLI asks the helper and overwrites the
        // file store's answer with the helper's, even an empty one (then the pull is anonymous).
        for (k, entry) in &c.auths {
            if entry.is_empty() || is_env {
                continue;
            }
            let lookup = auth_config_key(&convert_to_hostname(k));
            let lookup = if k == DOCKER_HUB_KEY {
                k.clone()
            } else {
                lookup
            };
            let why = match (c.cred_helpers.get(&lookup), &c.creds_store) {
                (Some(h), _) if h.is_empty() => continue,
                (Some(h), _) => {
                    format!("credHelpers[{lookup:?}] = {h:?} answers for this registry")
                }
                (None, Some(store)) => format!(
                    "credsStore {store:?} answers for every registry without a credHelpers entry"
                ),
                (None, None) => continue,
            };
            push(
                Level::Warning,
                format!("auths[{k:?}]"),
                format!(
                    "has credentials the docker CLI never uses: {why}; if that helper has nothing for {lookup:?}, docker pulls anonymously (store them with `docker login`, or opt this registry out with \"credHelpers\": {{{lookup:?}: \"\"}})"
                ),
            );
        }
        // Several auths keys for one host: docker picks one at random.
        let mut by_host: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for k in c.auths.keys() {
            by_host.entry(convert_to_hostname(k)).or_default().push(k);
        }
        for (host, keys) in by_host {
            if keys.len() > 1 && !keys.iter().any(|k| **k == host) {
                push(
                    Level::Warning,
                    format!("auths[{:?}]", keys[0]),
                    format!(
                        "keys {keys:?} all normalise to {host:?}; the docker CLI picks one of them at random"
                    ),
                );
            }
        }
    } else {
        let mut by_path: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for k in c.auths.keys().chain(c.cred_helpers.keys()) {
            by_path.entry(registry_path(k)).or_default().push(k);
        }
        for (path, mut keys) in by_path {
            keys.sort();
            keys.dedup();
            if keys.len() > 1 {
                push(
                    Level::Info,
                    format!("auths[{:?}]", keys[0]),
                    format!(
                        "keys {keys:?} all map to path {path:?}; GitLab Runner uses {:?} (first in sorted order)",
                        keys[0]
                    ),
                );
            }
        }
    }
}

/// Why a key under `credHelpers` (or `DOCKER_AUTH_CONFIG` `auths`) can never match in the docker
/// CLI, which looks those up by exact key.
fn docker_exact_key_problem(key: &str) -> Option<String> {
    let host = convert_to_hostname(key);
    if key == DOCKER_HUB_KEY {
        return None;
    }
    if matches!(
        host.as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        return Some(format!(
            "never matches: the docker CLI looks Docker Hub up as {DOCKER_HUB_KEY:?}"
        ));
    }
    if key != host {
        return Some(format!(
            "never matches: the docker CLI looks this registry up by exact key {host:?}"
        ));
    }
    None
}

fn check_image(
    r: &Resolver,
    configs: &[DockerConfig],
    flag: &str,
    image: &str,
    parsed: Result<Target, crate::reference::ReferenceError>,
    out: &mut Vec<Finding>,
) {
    let target = match parsed {
        Ok(t) => t,
        Err(e) => {
            out.push(Finding {
                level: Level::Error,
                source: flag.into(),
                field: image.into(),
                message: e.to_string(),
            });
            return;
        }
    };
    let domain = target.domain().to_ascii_lowercase();
    let host_only = host_name(&domain);
    match r.resolve(&target) {
        Ok(res) if res.credential.is_some() => out.push(Finding {
            level: Level::Info,
            source: res.source.clone().unwrap_or_default(),
            field: image.into(),
            message: format!(
                "resolves to {:?} ({})",
                res.registry.unwrap_or_default(),
                res.kind.map(|k| k.as_str()).unwrap_or("")
            ),
        }),
        Ok(_) => {
            // Nothing matched: is there a key for the same host with another (or no) port?
            for c in configs {
                for k in c.auths.keys().chain(c.cred_helpers.keys()) {
                    let kh = convert_to_hostname(k).to_ascii_lowercase();
                    let k_host = host_name(&kh);
                    if kh != domain && k_host == host_only {
                        out.push(Finding {
                            level: Level::Warning,
                            source: c.origin.to_string(),
                            field: k.clone(),
                            message: format!("image {image} uses {domain}; this key is for {kh} — the host:port must match exactly"),
                        });
                    }
                }
            }
            out.push(Finding {
                level: Level::Info,
                source: String::new(),
                field: image.into(),
                message: "no credentials apply; the pull is anonymous".into(),
            });
        }
        Err(e) => out.push(Finding {
            level: Level::Error,
            source: String::new(),
            field: image.into(),
            message: e.to_string(),
        }),
    }
}
