//! The GitLab Runner profile (`helpers/docker/auth`, runner ≥ 18.11).
//!
//! Sources in order: `DOCKER_AUTH_CONFIG` (a full config; as a GitLab file-type variable the value
//! is the path of the file, which is read — see [`crate::config::env_value_is_path`]), `$HOME/.docker/config.json` else `$HOME/.dockercfg`, then the job's
//! registry credentials (`CI_REGISTRY` + `CI_REGISTRY_USER`/`CI_REGISTRY_PASSWORD` or
//! `gitlab-ci-token`/`CI_JOB_TOKEN`; `CI_DEPENDENCY_PROXY_SERVER` + its user/password).
//!
//! Inside a source every raw key maps to a registry path (`convertToRegistryPath`); `credHelpers`
//! beat `credsStore`, which beats `auths`, for the same raw key; keys are taken in sorted order.
//! Across sources the first one to claim a path wins. The image's path is looked up longest
//! prefix first, and `host:port` must match exactly. A source that fails to parse, or names a
//! helper that is missing or fails, is skipped with a warning; a helper name that is not a bare
//! file name anywhere is a hard error. See [`super`] for what "lazy" changes.

use super::{
    Credential, DOCKER_AUTH_CONFIG, Failure, Kind, Resolution, ResolveError, Resolver, SecretKind,
    credential_from_entry, credential_from_helper,
};
use crate::config::keys::{gitlab_image_path, parent_path, registry_path};
use crate::config::locations::legacy_dockercfg;
use crate::config::{Dialect, DockerConfig};
use crate::credhelper::client::{HelperError, validate_helper_name};
use crate::reference::Target;
use crate::secret::Secret;
use std::collections::BTreeMap;

/// The name job credentials are reported under.
pub const JOB_SOURCE: &str = "job";

enum Source {
    Config(DockerConfig),
    Job(Vec<(String, Credential)>),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Config(c) => c.origin.to_string(),
            Source::Job(_) => JOB_SOURCE.into(),
        }
    }
}

pub(super) fn resolve(r: &Resolver, target: &Target) -> Result<Resolution, Failure> {
    let path = match target {
        Target::Image { raw, .. } => gitlab_image_path(raw),
        Target::Host(h) => registry_path(h),
    };
    let mut res = Resolution {
        lookup: path.clone(),
        ..Resolution::default()
    };
    res.trace
        .push(format!("gitlab profile: lookup path {path:?}"));

    let mut sources = Vec::new();
    sources.extend(user_source(r, &mut res));
    sources.extend(home_source(r, &mut res));
    sources.push(job_source(r));

    // Path traversal anywhere is fatal, before anything runs (GitLab reads every source first).
    for s in &sources {
        if let Source::Config(c) = s {
            for name in c.creds_store.iter().chain(c.cred_helpers.values()) {
                if let Err(e) = validate_helper_name(name) {
                    let error = ResolveError::Helper {
                        origin: c.origin.to_string(),
                        cause: Box::new(e),
                    };
                    res.trace.push(format!(
                        "{}: helper name {name:?} refused before anything runs",
                        c.origin
                    ));
                    return Err(Failure::new(res, error));
                }
            }
        }
    }

    // GitLab runs every helper of a source, so one missing binary drops the whole source. Finding
    // a binary runs nothing, so we can match that exactly.
    let mut live = vec![true; sources.len()];
    for (i, s) in sources.iter().enumerate() {
        if let Source::Config(c) = s {
            for name in c.creds_store.iter().chain(c.cred_helpers.values()) {
                if let Err(e) = r.helpers.locate(name) {
                    skip(&mut res, &s.name(), &e.to_string());
                    live[i] = false;
                    break;
                }
            }
        }
    }

    let mut listed: Vec<Option<BTreeMap<String, String>>> = vec![None; sources.len()];
    let mut prefix = Some(path.as_str());
    while let Some(p) = prefix {
        for (i, s) in sources.iter().enumerate() {
            if !live[i] {
                continue;
            }
            match s {
                Source::Job(entries) => {
                    if let Some((url, cred)) = entries.iter().find(|(u, _)| registry_path(u) == p) {
                        res.trace
                            .push(format!("{JOB_SOURCE}: {url:?} → path {p:?} → match"));
                        return Ok(set(
                            res,
                            url,
                            JOB_SOURCE.into(),
                            Kind::Job,
                            None,
                            cred.clone(),
                        ));
                    }
                }
                Source::Config(c) => match config_candidate(r, c, p, &mut listed[i], &mut res) {
                    Ok(Some((key, kind, helper, cred))) => {
                        return Ok(set(res, &key, c.origin.to_string(), kind, helper, cred));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        skip(&mut res, &s.name(), &e.to_string());
                        live[i] = false;
                    }
                },
            }
        }
        res.trace
            .push(format!("path {p:?}: no source has credentials"));
        prefix = parent_path(p);
    }
    Ok(res)
}

type Candidate = (String, Kind, Option<String>, Credential);

/// The winning entry of one config source for exactly path `p`, running at most the helpers of
/// the keys that map to `p`.
fn config_candidate(
    r: &Resolver,
    c: &DockerConfig,
    p: &str,
    listed: &mut Option<BTreeMap<String, String>>,
    res: &mut Resolution,
) -> Result<Option<Candidate>, HelperError> {
    let src = c.origin.to_string();
    let mut keys: Vec<&str> = c
        .auths
        .keys()
        .chain(c.cred_helpers.keys())
        .map(String::as_str)
        .filter(|k| registry_path(k) == p)
        .collect();
    // Only a source with a credsStore whose keys might reach this path needs its `list`.
    if let Some(store) = &c.creds_store {
        if listed.is_none() {
            res.trace
                .push(format!("{src}: docker-credential-{store} list"));
            *listed = Some(r.helpers.list(store)?);
        }
        if let Some(l) = listed.as_ref() {
            keys.extend(
                l.keys()
                    .map(String::as_str)
                    .filter(|k| registry_path(k) == p),
            );
        }
    }
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        // For one raw key a credHelpers entry overrides the credsStore's, which overrides auths;
        // a helper's "not found" leaves no entry for that key (no fall-back to auths).
        let helper = match c.cred_helpers.get(key) {
            Some(h) => Some((h, Kind::CredHelpers, "credHelpers")),
            None => c
                .creds_store
                .as_ref()
                .filter(|_| listed.as_ref().is_some_and(|l| l.contains_key(key)))
                .map(|s| (s, Kind::CredsStore, "credsStore")),
        };
        if let Some((helper, kind, section)) = helper {
            res.trace
                .push(format!("{src}: {section} {helper:?} for {key:?} → get"));
            if let Some(cred) = r.helpers.get(helper, key)?.and_then(credential_from_helper) {
                return Ok(Some((key.into(), kind, Some(helper.clone()), cred)));
            }
            res.trace.push(format!(
                "docker-credential-{helper} get {key:?} → not found; entry ignored"
            ));
            continue;
        }
        if let Some(entry) = c.auths.get(key) {
            match credential_from_entry(entry) {
                Some(cred) => {
                    res.trace
                        .push(format!("{src}: auths[{key:?}] → path {p:?} → match"));
                    return Ok(Some((key.into(), Kind::Auths, None, cred)));
                }
                None => res
                    .trace
                    .push(format!("{src}: auths[{key:?}] is empty; ignored")),
            }
        }
    }
    Ok(None)
}

fn set(
    mut res: Resolution,
    key: &str,
    source: String,
    kind: Kind,
    helper: Option<String>,
    cred: Credential,
) -> Resolution {
    res.registry = Some(key.to_owned());
    res.source = Some(source);
    res.kind = Some(kind);
    res.helper = helper;
    res.credential = Some(cred);
    res
}

fn skip(res: &mut Resolution, source: &str, why: &str) {
    res.warnings.push(format!(
        "Failed to resolve credentials from {source}: {why}. Credentials from this source will not be used."
    ));
}

/// `DOCKER_AUTH_CONFIG`: JSON text, or a path to a file holding it (GitLab file-type variables).
fn user_source(r: &Resolver, res: &mut Resolution) -> Option<Source> {
    let Some(value) = r.env.get(DOCKER_AUTH_CONFIG) else {
        res.trace.push(format!("{DOCKER_AUTH_CONFIG}: not set"));
        return None;
    };
    if crate::config::env_value_is_path(value) {
        res.trace.push(format!(
            "{DOCKER_AUTH_CONFIG}: a file path (a GitLab file-type variable); reading {value}"
        ));
    }
    match DockerConfig::from_env_value(DOCKER_AUTH_CONFIG, value, Dialect::Full, true) {
        Ok(c) => Some(Source::Config(c)),
        Err(e) => {
            skip(res, DOCKER_AUTH_CONFIG, &e.detail());
            None
        }
    }
}

/// `$HOME/.docker/config.json` (or `--config-dir`), else `$HOME/.dockercfg` — both in the full
/// dialect, as GitLab Runner reads them.
fn home_source(r: &Resolver, res: &mut Resolution) -> Option<Source> {
    let candidates = r.config_file().into_iter().chain(legacy_dockercfg(&r.env));
    for path in candidates {
        match DockerConfig::load_file(&path, Dialect::Full) {
            Ok(Some(c)) => {
                res.trace.push(format!("{}: loaded", path.display()));
                return Some(Source::Config(c));
            }
            Ok(None) => res
                .trace
                .push(format!("{}: does not exist", path.display())),
            Err(e) => {
                skip(res, &path.display().to_string(), &e.detail());
                return None;
            }
        }
    }
    None
}

/// The job's registry credentials, from the CI variables GitLab sets.
fn job_source(r: &Resolver) -> Source {
    let e = &r.env;
    let mut out = Vec::new();
    let pw = |user: Option<&str>, pass: Option<&str>| -> Option<Credential> {
        Some(Credential {
            username: user?.to_owned(),
            secret: Secret::new(pass?),
            secret_kind: SecretKind::Password,
        })
    };
    if let Some(reg) = e.get("CI_REGISTRY") {
        let cred = pw(e.get("CI_REGISTRY_USER"), e.get("CI_REGISTRY_PASSWORD"))
            .or_else(|| pw(Some("gitlab-ci-token"), e.get("CI_JOB_TOKEN")));
        if let Some(c) = cred {
            out.push((reg.to_owned(), c));
        }
    }
    if let Some(dp) = e.get("CI_DEPENDENCY_PROXY_SERVER")
        && let Some(c) = pw(
            e.get("CI_DEPENDENCY_PROXY_USER"),
            e.get("CI_DEPENDENCY_PROXY_PASSWORD"),
        )
    {
        out.push((dp.to_owned(), c));
    }
    Source::Job(out)
}
