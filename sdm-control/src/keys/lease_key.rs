//! The Ed25519 key that signs leases, stored as `lease.key`.
//!
//! Losing it is harmless: a new one is generated and only the leases in flight (minutes long)
//! stop verifying; clients renew them.

use std::path::Path;

use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use sdm_proto::lease::LeaseSigner;

use super::KeyError;
use super::files;

/// File name in the data directory.
pub const FILE: &str = "lease.key";

/// Loads `path`, or creates it with a new key.
pub fn load_or_create(path: &Path) -> Result<LeaseSigner, KeyError> {
    let invalid = |reason: &str| KeyError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(pem) = files::read_secret(path)? {
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| {
            invalid("not a PKCS#8 PEM private key; move it away to create a new one")
        })?;
        return LeaseSigner::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|_| invalid("not an Ed25519 key; move it away to create a new one"));
    }
    let der = LeaseSigner::generate_pkcs8().map_err(|_| KeyError::Random)?;
    let signer = LeaseSigner::from_pkcs8(&der).map_err(|_| KeyError::Random)?;
    files::write_new(
        path,
        files::pem_encode("PRIVATE KEY", &der).as_bytes(),
        files::SECRET_MODE,
    )?;
    tracing::info!(path = %path.display(), "created a new lease-signing key");
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        std::fs::remove_file(&path).unwrap();
        files::write_new(&path, b"garbage", files::SECRET_MODE).unwrap();
        assert!(
            load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("PKCS#8")
        );
    }
}
