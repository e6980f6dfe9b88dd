//! The docker CLI profile (docker/cli `GetCredentialsStore` / `GetAuthConfig`, CLI ≥ 28.3).
//!
//! Order: `DOCKER_AUTH_CONFIG` (strict dialect, exact key, a parse error is a warning) →
//! `credHelpers[key]` (an empty value opts the registry out of `credsStore`) → `credsStore` →
//! `auths` (exact key, then the first key whose `ConvertToHostname` equals the lookup key). A
//! helper's answer is final: "not found" means anonymous, not a fall-back to `auths`, because
//! docker overwrites the file-store fields with the helper's (empty) ones. At most one helper runs.

use super::{
    Credential, DOCKER_AUTH_CONFIG, Failure, Kind, Resolution, ResolveError, Resolver,
    credential_from_entry, credential_from_helper,
};
use crate::config::keys::{auth_config_key, convert_to_hostname};
use crate::config::locations::legacy_dockercfg;
use crate::config::{Dialect, DockerConfig, Origin};
use crate::reference::Target;

pub(super) fn resolve(r: &Resolver, target: &Target) -> Result<Resolution, Failure> {
    let key = auth_config_key(target.domain());
    let mut res = Resolution {
        lookup: key.clone(),
        ..Resolution::default()
    };
    res.trace.push(format!(
        "docker profile: registry {} → lookup key {key:?}",
        target.domain()
    ));

    // 1. DOCKER_AUTH_CONFIG, exact key only.
    match r.env.get(DOCKER_AUTH_CONFIG) {
        None => res.trace.push(format!("{DOCKER_AUTH_CONFIG}: not set")),
        Some(value) => match DockerConfig::from_env_value(
            DOCKER_AUTH_CONFIG,
            value,
            Dialect::DockerEnv,
            false,
        ) {
            Err(e) => {
                res.warnings.push(format!(
                    "Failed to create credential store from {DOCKER_AUTH_CONFIG}: {}; ignoring it",
                    e.detail()
                ));
            }
            Ok(cfg) => match cfg.auth_exact(&key) {
                Some((k, entry)) => {
                    res.trace
                        .push(format!("{DOCKER_AUTH_CONFIG}: auths has key {k:?} → match"));
                    return Ok(found(res, k, DOCKER_AUTH_CONFIG.into(), Kind::Auths, None, credential_from_entry(entry)));
                }
                None => res.trace.push(format!(
                    "{DOCKER_AUTH_CONFIG}: no auths key equals {key:?} (exact match only; keys: {:?})",
                    cfg.auths.keys().collect::<Vec<_>>()
                )),
            },
        },
    }

    // 2–4. The config file.
    let cfg = match load_config(r, &mut res) {
        Ok(c) => c,
        Err(e) => return Err(Failure::new(res, e)),
    };
    let source = cfg.origin.to_string();

    let helper = match cfg.cred_helpers.get(&key) {
        Some(h) if h.is_empty() => {
            res.trace.push(format!(
                "{source}: credHelpers[{key:?}] is empty → credsStore skipped, auths used"
            ));
            None
        }
        Some(h) => {
            res.trace
                .push(format!("{source}: credHelpers[{key:?}] = {h:?} → run it"));
            Some((h.clone(), Kind::CredHelpers))
        }
        None => {
            res.trace.push(format!(
                "{source}: credHelpers has no key {key:?} (exact match only)"
            ));
            match &cfg.creds_store {
                Some(s) => {
                    res.trace
                        .push(format!("{source}: credsStore = {s:?} → run it"));
                    Some((s.clone(), Kind::CredsStore))
                }
                None => {
                    res.trace.push(format!("{source}: no credsStore"));
                    None
                }
            }
        }
    };

    if let Some((name, kind)) = helper {
        let answer = match r.helpers.get(&name, &key) {
            Ok(a) => a,
            Err(e) => {
                res.trace
                    .push(format!("docker-credential-{name} get {key:?} → failed"));
                let error = ResolveError::Helper {
                    origin: source.clone(),
                    cause: Box::new(e),
                };
                return Err(Failure::new(res, error));
            }
        };
        return Ok(match answer.and_then(credential_from_helper) {
            Some(c) => {
                res.trace.push(format!(
                    "docker-credential-{name} get {key:?} → credentials"
                ));
                found(res, &key, source, kind, Some(name), Some(c))
            }
            None => {
                res.trace.push(format!(
                    "docker-credential-{name} get {key:?} → not found (docker pulls anonymously; auths is not consulted)"
                ));
                res
            }
        });
    }

    // auths: exact, then ConvertToHostname over the keys in sorted order (docker iterates a Go
    // map, so with several matching keys its pick is random; `regauth check` reports that).
    if let Some((k, entry)) = cfg.auth_exact(&key) {
        res.trace
            .push(format!("{source}: auths has key {k:?} → match"));
        return Ok(found(
            res,
            k,
            source,
            Kind::Auths,
            None,
            credential_from_entry(entry),
        ));
    }
    if let Some((k, entry)) = cfg
        .auths
        .iter()
        .find(|(k, _)| convert_to_hostname(k) == key)
    {
        res.trace.push(format!(
            "{source}: auths key {k:?} normalises to {key:?} → match"
        ));
        return Ok(found(
            res,
            k,
            source.clone(),
            Kind::Auths,
            None,
            credential_from_entry(entry),
        ));
    }
    res.trace.push(format!(
        "{source}: no auths key equals or normalises to {key:?} (keys: {:?})",
        cfg.auths.keys().collect::<Vec<_>>()
    ));
    Ok(res)
}

fn found(
    mut res: Resolution,
    key: &str,
    source: String,
    kind: Kind,
    helper: Option<String>,
    cred: Option<Credential>,
) -> Resolution {
    if cred.is_none() {
        res.trace.push(format!(
            "entry {key:?} holds no credential (an empty entry, e.g. left by docker login with a credential store) → anonymous"
        ));
        return res;
    }
    res.registry = Some(key.to_owned());
    res.source = Some(source);
    res.kind = Some(kind);
    res.helper = helper;
    res.credential = cred;
    res
}

/// `$DOCKER_CONFIG/config.json` (or `--config-dir`), else the legacy `~/.dockercfg`, else empty.
pub(super) fn load_config(
    r: &Resolver,
    res: &mut Resolution,
) -> Result<DockerConfig, ResolveError> {
    if let Some(path) = r.config_file() {
        res.trace.push(format!("{}: reading", path.display()));
        if let Some(cfg) = DockerConfig::load_file(&path, Dialect::Full)? {
            res.trace.push(format!("{}: loaded", path.display()));
            return Ok(cfg);
        }
        res.trace
            .push(format!("{}: does not exist", path.display()));
        if let Some(legacy) = legacy_dockercfg(&r.env)
            && let Some(cfg) = DockerConfig::load_file(&legacy, Dialect::Legacy)?
        {
            res.trace
                .push(format!("{}: loaded (legacy format)", legacy.display()));
            return Ok(cfg);
        }
        return Ok(DockerConfig::empty(Origin::File(path)));
    }
    Err(ResolveError::Usage(
        "no config location: neither DOCKER_CONFIG nor HOME is set (use --config-dir)".into(),
    ))
}
