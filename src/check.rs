//! `regauth check`: static findings about the effective Docker config.
//!
//! Owns: the list of things that are wrong or will surprise — parse errors, helper names that are
//! unsafe or not installed, keys that can never match under the chosen profile, keys that
//! normalise to the same host, and (given images) port mismatches. Runs no helper.
//!
//! Does not own: resolution itself; for "what would match this image" it asks the
//! [`crate::resolve::Resolver`] (which may then run the one helper that matches).

use crate::config::keys::{DOCKER_HUB_KEY, convert_to_hostname, host_name, registry_path};
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

    if let Some(value) = r.env.get(DOCKER_AUTH_CONFIG) {
        let dialect = match r.profile {
            Profile::Docker => Dialect::DockerEnv,
            Profile::Gitlab => Dialect::Full,
        };
        let bytes = match r.profile {
            Profile::Gitlab if !value.trim_start().starts_with('{') => {
                std::fs::read(value).unwrap_or_else(|_| value.as_bytes().to_vec())
            }
            _ => value.as_bytes().to_vec(),
        };
        match DockerConfig::parse(&bytes, Origin::Env(DOCKER_AUTH_CONFIG.into()), dialect) {
            Ok(c) => configs.push(c),
            Err(e) => out.push(Finding {
                level: Level::Error,
                source: DOCKER_AUTH_CONFIG.into(),
                field: String::new(),
                message: format!(
                    "{e} (the {} profile ignores this source)",
                    profile_name(r.profile)
                ),
            }),
        }
    }
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
                break;
            }
            Ok(None) => {}
            Err(e) => {
                out.push(Finding {
                    level: Level::Error,
                    source: path.display().to_string(),
                    field: String::new(),
                    message: e.to_string(),
                });
                break;
            }
        }
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
