//! The HTTP/3 listener's certificate: the operator's PEM files, or a self-signed ECDSA P-256
//! certificate made at start, valid for less than 14 days (what browsers accept through
//! `serverCertificateHashes`) and replaced before it expires. Its SHA-256 hash is published at
//! `GET /api/transport`.

use rustls::crypto::ring::sign::any_ecdsa_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Lifetime of a generated certificate (browsers refuse hashes of certificates valid 14 days
/// or more), counted from one hour before it was made.
const GENERATED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// A generated certificate is replaced this long after it was made (well before expiry).
pub(crate) const ROTATE_AFTER: Duration = Duration::from_secs(6 * 24 * 3600);

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM files could not be read or parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// Generating or using the key failed.
    #[error("certificate: {0}")]
    Crypto(String),
}

/// The certificate in use, swappable while the listener runs.
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
    /// SHA-256 of the DER certificate when self-signed (clients pin it); `None` for operator
    /// certificates (clients verify them against their CAs).
    hash: RwLock<Option<[u8; 32]>>,
    /// Where the generated certificate's PEM is written (for native clients and tests).
    pem_path: Option<PathBuf>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("pinned", &self.hash().is_some()).finish()
    }
}

fn crypto(e: impl std::fmt::Display) -> CertError {
    CertError::Crypto(e.to_string())
}

fn generate() -> Result<(CertifiedKey, [u8; 32], String), CertError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
            .map_err(crypto)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = params.not_before + GENERATED_VALIDITY;
    params.distinguished_name.push(rcgen::DnType::CommonName, "SocketChat development certificate");
    let cert = params.self_signed(&key).map_err(crypto)?;
    let der = cert.der().clone();
    let hash: [u8; 32] = Sha256::digest(&der).into();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = any_ecdsa_type(&private).map_err(crypto)?;
    Ok((CertifiedKey::new(vec![der], signing), hash, cert.pem()))
}

impl Certificates {
    /// Loads the operator's certificate chain and key (PEM).
    pub fn from_pem(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let pem_err = |path: &Path| {
            let path = path.display().to_string();
            move |e: rustls::pki_types::pem::Error| CertError::Pem { path: path.clone(), reason: e.to_string() }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(pem_err(cert))?
            .collect::<Result<_, _>>()
            .map_err(pem_err(cert))?;
        if chain.is_empty() {
            return Err(CertError::Pem { path: cert.display().to_string(), reason: "no certificate".into() });
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&private).map_err(crypto)?;
        Ok(Self {
            current: RwLock::new(Arc::new(CertifiedKey::new(chain, signing))),
            hash: RwLock::new(None),
            pem_path: None,
        })
    }

    /// Makes a self-signed certificate and writes its PEM to `pem_path`.
    pub fn generated(pem_path: PathBuf) -> Result<Self, CertError> {
        let (key, hash, pem) = generate()?;
        write_pem(&pem_path, &pem)?;
        Ok(Self { current: RwLock::new(Arc::new(key)), hash: RwLock::new(Some(hash)), pem_path: Some(pem_path) })
    }

    /// Whether the certificate is generated here (and so must be rotated).
    pub fn is_generated(&self) -> bool {
        self.pem_path.is_some()
    }

    /// Replaces a generated certificate with a fresh one.
    pub fn rotate(&self) -> Result<(), CertError> {
        let Some(path) = &self.pem_path else { return Ok(()) };
        let (key, hash, pem) = generate()?;
        write_pem(path, &pem)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.hash.write().unwrap_or_else(|p| p.into_inner()) = Some(hash);
        tracing::info!(hash = %hex::encode(hash), "WebTransport certificate rotated");
        Ok(())
    }

    /// SHA-256 of the generated certificate, for `serverCertificateHashes`.
    pub fn hash(&self) -> Option<[u8; 32]> {
        *self.hash.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_pem(path: &Path, pem: &str) -> Result<(), CertError> {
    let io = |e: std::io::Error| CertError::Pem { path: path.display().to_string(), reason: e.to_string() };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, pem).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_are_short_lived_p256_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certificates::generated(dir.path().join("wt-cert.pem")).unwrap();
        let first = certs.hash().unwrap();
        let pem = std::fs::read(dir.path().join("wt-cert.pem")).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&der)), first, "the published hash is of the written certificate");
        certs.rotate().unwrap();
        assert_ne!(certs.hash().unwrap(), first);
        assert!(GENERATED_VALIDITY < Duration::from_secs(14 * 24 * 3600));
        assert!(ROTATE_AFTER + Duration::from_secs(24 * 3600) < GENERATED_VALIDITY);
    }

    #[test]
    fn operator_pem_files_load_and_publish_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["chat.example.com".to_owned()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let certs = Certificates::from_pem(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        assert_eq!(certs.hash(), None);
        assert!(!certs.is_generated());
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        assert!(Certificates::from_pem(&dir.path().join("empty.pem"), &dir.path().join("key.pem")).is_err());
    }
}
