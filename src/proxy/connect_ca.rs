//! The local CA of CONNECT mode, and the leaf certificates it mints.
//!
//! Owns: `--ca-dir DIR` — created once (`ca.pem` public, `ca-key.pem` 0600 written atomically,
//! `ca-scope.txt` the names the CA was constrained to), then reused on every start, so clients
//! trust `DIR/ca.pem` once — and a bounded in-memory cache of rustls server configs, one per
//! intercepted host, each with a leaf minted on the fly for that host.
//!
//! Why name constraints: a CA in a client's trust store can otherwise vouch for any name (a
//! stolen `ca-key.pem` would be a key to every bank). The CA is made with permitted DNS subtrees
//! (and IP addresses) = the registries the allowlist held when it was created; IP addresses are
//! excluded entirely when none was allowed. Go (dockerd, containerd, skopeo, podman), OpenSSL and
//! webpki enforce them. A registry allowed *later* is outside the CA's scope: the proxy then
//! refuses to intercept it (logged, naming the remedy) rather than mint a leaf clients reject.
//!
//! Why the issuer is rebuilt from the key on restart (no certificate parsing): the leaves only
//! need the CA's subject and key identifier, and the subject is derived from the key itself
//! (`regauth CONNECT CA <first 8 bytes of sha256(public key)>`), unique per CA.
//!
//! Does not own: deciding what is intercepted ([`super::connect`]) or the listener's own TLS
//! ([`super::tls`]).

use super::tls::{TlsError, server_config_from};
use crate::fsutil::{ensure_private_dir, write_atomic};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a minted leaf is valid, and how long it is reused from the cache.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_REUSE: Duration = Duration::from_secs(24 * 3600);
/// The CA's validity (clients trust it once; ten years).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The CONNECT CA and its leaf cache.
pub struct ConnectCa {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: CertificateDer<'static>,
    /// Names (DNS subtrees, IP literals) the CA may vouch for; empty: unconstrained.
    scope: Vec<String>,
    leaves: Mutex<HashMap<String, (Arc<rustls::ServerConfig>, Instant)>>,
    max_leaves: usize,
}

impl std::fmt::Debug for ConnectCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectCa")
            .field("dir", &self.dir)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn file_err(p: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: p.to_owned(),
        why: why.to_string(),
    }
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Sets `p`'s validity to `now - before` … `now + after` (rcgen's date type is the `time`
/// crate's, reached through `date_time_ymd` so that crate need not be a direct dependency).
fn set_validity(
    p: &mut rcgen::CertificateParams,
    before: Duration,
    after: Duration,
) -> Result<(), TlsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TlsError::Generate("the clock is before 1970".into()))?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + now.saturating_sub(before);
    p.not_after = epoch + now.saturating_add(after);
    Ok(())
}

/// The CA's subject, derived from its key (see the module doc).
fn ca_params(key: &rcgen::KeyPair) -> Result<rcgen::CertificateParams, TlsError> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    let id = Sha256::digest(key.public_key_raw());
    let hex: String = id.iter().take(8).map(|b| format!("{b:02x}")).collect();
    p.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("regauth CONNECT CA {hex}"),
    );
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    Ok(p)
}

/// The name constraints for `scope`: DNS names as permitted subtrees; IP literals as /32 or
/// /128 permitted subnets, or every address excluded when there is none.
fn constraints(scope: &[String]) -> Option<rcgen::NameConstraints> {
    if scope.is_empty() {
        return None;
    }
    let mut permitted = Vec::new();
    let mut any_ip = false;
    for s in scope {
        match s.parse::<IpAddr>() {
            Ok(ip) => {
                any_ip = true;
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                permitted.push(rcgen::GeneralSubtree::IpAddress(
                    rcgen::CidrSubnet::from_addr_prefix(ip, bits),
                ));
            }
            Err(_) => permitted.push(rcgen::GeneralSubtree::DnsName(s.clone())),
        }
    }
    let excluded = if any_ip {
        Vec::new()
    } else {
        vec![
            rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::from_v4_prefix([0; 4], 0)),
            rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::from_addr_prefix(
                IpAddr::from([0u16; 8]),
                0,
            )),
        ]
    };
    Some(rcgen::NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    })
}

impl ConnectCa {
    /// Loads the CA in `dir`, or creates it (constrained to `scope`) when `dir/ca.pem` is absent.
    /// `max_leaves` bounds the leaf cache.
    pub fn load_or_create(
        dir: &Path,
        scope: &[String],
        max_leaves: usize,
    ) -> Result<ConnectCa, TlsError> {
        let (ca_p, key_p, scope_p) = (
            dir.join("ca.pem"),
            dir.join("ca-key.pem"),
            dir.join("ca-scope.txt"),
        );
        let (key, ca_pem, scope) = if ca_p.exists() {
            let key_pem = std::fs::read_to_string(&key_p).map_err(|e| file_err(&key_p, e))?;
            let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| file_err(&key_p, e))?;
            let ca_pem = std::fs::read_to_string(&ca_p).map_err(|e| file_err(&ca_p, e))?;
            let scope = match std::fs::read_to_string(&scope_p) {
                Ok(t) => t
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(file_err(&scope_p, e)),
            };
            (key, ca_pem, scope)
        } else {
            ensure_private_dir(dir).map_err(|e| file_err(dir, e))?;
            let key = rcgen::KeyPair::generate().map_err(gen_err)?;
            let mut params = ca_params(&key)?;
            params.name_constraints = constraints(scope);
            set_validity(&mut params, Duration::from_secs(3600), CA_VALIDITY)?;
            let cert = params.self_signed(&key).map_err(gen_err)?;
            write_atomic(&key_p, key.serialize_pem().as_bytes(), 0o600)
                .map_err(|e| file_err(&key_p, e))?;
            let mut text = scope.join("\n");
            text.push('\n');
            write_atomic(&scope_p, text.as_bytes(), 0o644).map_err(|e| file_err(&scope_p, e))?;
            // ca.pem last: its presence means the CA is complete.
            write_atomic(&ca_p, cert.pem().as_bytes(), 0o644).map_err(|e| file_err(&ca_p, e))?;
            (key, cert.pem(), scope.to_vec())
        };
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| file_err(&ca_p, e))?;
        let params = ca_params(&key)?;
        Ok(ConnectCa {
            dir: dir.to_owned(),
            issuer: rcgen::Issuer::new(params, key),
            ca_der,
            scope,
            leaves: Mutex::new(HashMap::new()),
            max_leaves: max_leaves.max(1),
        })
    }

    /// `DIR/ca.pem`, what clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// True when the CA's name constraints admit `host` (a DNS name or IP literal).
    pub fn covers(&self, host: &str) -> bool {
        if self.scope.is_empty() {
            return true;
        }
        let h = host.to_ascii_lowercase();
        if h.parse::<IpAddr>().is_ok() {
            return self.scope.contains(&h);
        }
        self.scope.iter().any(|s| {
            s.parse::<IpAddr>().is_err()
                && (h == *s
                    || h.strip_suffix(s.as_str())
                        .is_some_and(|pre| pre.ends_with('.')))
        })
    }

    /// A TLS server config presenting a leaf for `host` (cached; the second result is true when
    /// a leaf was minted now).
    pub fn server_for(&self, host: &str) -> Result<(Arc<rustls::ServerConfig>, bool), TlsError> {
        let key = host.to_ascii_lowercase();
        {
            let leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((cfg, t)) = leaves.get(&key)
                && t.elapsed() < LEAF_REUSE
            {
                return Ok((cfg.clone(), false));
            }
        }
        let cfg = self.mint(&key)?;
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if leaves.len() >= self.max_leaves && !leaves.contains_key(&key) {
            let oldest = leaves
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                leaves.remove(&k);
            }
        }
        leaves.insert(key, (cfg.clone(), Instant::now()));
        Ok((cfg, true))
    }

    fn mint(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let leaf_key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut p = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(gen_err)?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, host.to_owned());
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        set_validity(&mut p, Duration::from_secs(3600), LEAF_VALIDITY)?;
        let mut serial = [0u8; 16];
        serial.copy_from_slice(
            &Sha256::digest(
                format!("{host} {:?} {}", SystemTime::now(), std::process::id()).as_bytes(),
            )[..16],
        );
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = p.signed_by(&leaf_key, &self.issuer).map_err(gen_err)?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::try_from(leaf_key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        server_config_from(chain, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_and_scoped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ca");
        let scope = vec!["registry.example.com".to_owned(), "10.0.0.5".to_owned()];
        let a = ConnectCa::load_or_create(&dir, &scope, 2).unwrap();
        let pem = std::fs::read(dir.join("ca.pem")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(a.covers("registry.example.com"));
        assert!(a.covers("eu.registry.example.com"));
        assert!(!a.covers("evilregistry.example.com"));
        assert!(a.covers("10.0.0.5"));
        assert!(!a.covers("10.0.0.6"));
        let b = ConnectCa::load_or_create(&dir, &["other.example".to_owned()], 2).unwrap();
        assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), pem, "reused");
        assert_eq!(b.scope, scope, "the scope the CA was made with");
        let (_, minted) = b.server_for("registry.example.com").unwrap();
        assert!(minted);
        let (_, minted) = b.server_for("REGISTRY.example.com").unwrap();
        assert!(!minted, "cached");
        b.server_for("a.registry.example.com").unwrap();
        b.server_for("b.registry.example.com").unwrap();
        assert_eq!(b.leaves.lock().unwrap().len(), 2, "bounded");
    }
}
