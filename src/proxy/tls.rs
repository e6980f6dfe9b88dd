//! TLS for the proxy's listener (rustls, aws-lc-rs provider only).
//!
//! Owns: loading `--tls-cert`/`--tls-key` PEM files (rustls-pki-types' PEM reader) and
//! `--tls-generate DIR`, which creates — once, then reuses — a local CA (`ca.pem`, `ca-key.pem`) and
//! a leaf certificate for `localhost`, `127.0.0.1` and `::1` signed by it (`cert.pem`, `key.pem`).
//! Clients trust `ca.pem` (e.g. `/etc/docker/certs.d/<host:port>/ca.crt`).
//!
//! Why a CA plus a leaf rather than one self-signed certificate: webpki (rustls clients, and Go
//! since 1.x for CA:TRUE end-entities) rejects a CA certificate used as the server's own
//! certificate (`CaUsedAsEndEntity`). Private keys are written 0600 via `fsutil::write_atomic`.

use crate::fsutil::{ensure_private_dir, write_atomic};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS setup problems (naming the file).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("TLS certificate generation: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A rustls server config from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ferr = |p: &Path, why: String| TlsError::File {
        path: p.to_owned(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ferr(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| ferr(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(ferr(cert, "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ferr(key, e.to_string()))?;
    server_config_from(certs, key)
}

/// A rustls server config (aws-lc-rs, safe defaults, ALPN h2 + http/1.1) from a chain and key.
pub fn server_config_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Creates (or reuses) CA + leaf in `dir`; returns (cert.pem, key.pem) paths.
pub fn generate(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_p, key_p, ca_p) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    if cert_p.exists() && key_p.exists() && ca_p.exists() {
        return Ok((cert_p, key_p));
    }
    ensure_private_dir(dir).map_err(|e| TlsError::File {
        path: dir.to_owned(),
        why: e.to_string(),
    })?;
    let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(g)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(g)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "regauth proxy local CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(g)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().map_err(g)?;
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).map_err(g)?;
    leaf.subject_alt_names.push(rcgen::SanType::IpAddress(
        "127.0.0.1"
            .parse()
            .map_err(|_| TlsError::Generate("ip".into()))?,
    ));
    leaf.subject_alt_names.push(rcgen::SanType::IpAddress(
        "::1".parse().map_err(|_| TlsError::Generate("ip".into()))?,
    ));
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "regauth proxy");
    leaf.is_ca = rcgen::IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(g)?;
    let w = |p: &Path, data: &str, mode: u32| {
        write_atomic(p, data.as_bytes(), mode).map_err(|e| TlsError::File {
            path: p.to_owned(),
            why: e.to_string(),
        })
    };
    w(&dir.join("ca-key.pem"), &ca_key_pem, 0o600)?;
    w(&ca_p, &ca_cert.pem(), 0o644)?;
    w(&key_p, &leaf_key.serialize_pem(), 0o600)?;
    w(
        &cert_p,
        &format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        0o644,
    )?;
    Ok((cert_p, key_p))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_pair_loads() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = super::generate(d.path()).unwrap();
        super::server_config(&c, &k).unwrap();
        assert!(d.path().join("ca.pem").exists());
    }
}
