//! The installation's certificate authority: an ECDSA P-256 self-signed CA kept as `ca.pem`
//! (0644) and `ca.key` (0600), which issues the TLS leaf certificate of the API and the gateway.
//!
//! Clients pin the CA by the SHA-256 of its DER certificate, carried in every token, so the CA is
//! created once and never replaced: replacing it invalidates every token.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use sdm_proto::server_tls::Leaf;

use super::KeyError;
use super::files;

/// File name of the CA certificate in the data directory.
pub const CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in the data directory.
pub const KEY_FILE: &str = "ca.key";
/// Lifetime of an issued leaf certificate.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(3600);

/// The CA: loads or creates its files and issues leaf certificates.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    params: CertificateParams,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &hex(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CA's certificate parameters, derived from its key alone so that the issuer name of every
/// leaf matches the stored certificate's subject exactly, with no need to parse it back.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let id = hex(&sdm_proto::sha256(key.public_key_raw())[..4]);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sdm");
    dn.push(DnType::CommonName, format!("sdm CA {id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    let now = unix_now();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now.saturating_add(CA_VALIDITY);
    params
}

impl CertificateAuthority {
    /// Loads `ca.pem` and `ca.key` from `data_dir`, or creates them when both are missing and
    /// `existing_state` is false.
    pub fn load_or_create(
        data_dir: &Path,
        existing_state: bool,
    ) -> Result<CertificateAuthority, KeyError> {
        let cert_path = data_dir.join(CERT_FILE);
        let key_path = data_dir.join(KEY_FILE);
        let key_pem = files::read_secret(&key_path)?;
        let cert_pem = files::read_public(&cert_path)?;
        match (key_pem, cert_pem) {
            (Some(key_pem), Some(cert_pem)) => {
                Self::load(&key_path, &key_pem, &cert_path, &cert_pem)
            }
            (None, None) if !existing_state => Self::create(&key_path, &cert_path),
            (None, None) => Err(KeyError::Inconsistent(format!(
                "{} has no CA ({CERT_FILE}, {KEY_FILE}) but the installation's database exists; \
                 every token issued pins that CA, so a new one is not created. Restore \
                 {CERT_FILE} and {KEY_FILE} from a backup, or copy them from another control \
                 plane of this installation",
                data_dir.display()
            ))),
            (Some(_), None) | (None, Some(_)) => Err(KeyError::Inconsistent(format!(
                "{} has only one of {CERT_FILE} and {KEY_FILE}; restore the other from a backup",
                data_dir.display()
            ))),
        }
    }

    fn load(
        key_path: &Path,
        key_pem: &[u8],
        cert_path: &Path,
        cert_pem: &[u8],
    ) -> Result<CertificateAuthority, KeyError> {
        let key_text = std::str::from_utf8(key_pem).map_err(|_| KeyError::Invalid {
            path: key_path.to_owned(),
            reason: "not PEM text".into(),
        })?;
        let key = KeyPair::from_pem(key_text).map_err(|e| KeyError::Invalid {
            path: key_path.to_owned(),
            reason: format!("not a PKCS#8 private key ({e})"),
        })?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(KeyError::Invalid {
                path: key_path.to_owned(),
                reason: "not an ECDSA P-256 key".into(),
            });
        }
        let cert_der = CertificateDer::from_pem_slice(cert_pem).map_err(|e| KeyError::Invalid {
            path: cert_path.to_owned(),
            reason: format!("not a PEM certificate ({e})"),
        })?;
        // The certificate embeds the public key; checking that it does catches a mixed-up pair.
        let public = key.public_key_raw();
        if !cert_der.windows(public.len()).any(|w| w == public) {
            return Err(KeyError::Inconsistent(format!(
                "{} and {} do not belong together; restore the matching pair from a backup",
                cert_path.display(),
                key_path.display()
            )));
        }
        let params = ca_params(&key);
        let fingerprint = sdm_proto::sha256(&cert_der);
        Ok(CertificateAuthority {
            cert_der,
            key,
            params,
            fingerprint,
        })
    }

    fn create(key_path: &Path, cert_path: &Path) -> Result<CertificateAuthority, KeyError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            KeyError::Certificate {
                what: "generate the CA key",
                source,
            }
        })?;
        let params = ca_params(&key);
        let cert = params
            .self_signed(&key)
            .map_err(|source| KeyError::Certificate {
                what: "create the CA certificate",
                source,
            })?;
        files::write_new(key_path, key.serialize_pem().as_bytes(), files::SECRET_MODE)?;
        files::write_new(cert_path, cert.pem().as_bytes(), files::PUBLIC_MODE)?;
        let cert_der = cert.der().clone();
        let fingerprint = sdm_proto::sha256(&cert_der);
        tracing::info!(
            path = %cert_path.display(),
            fingerprint = %hex(&fingerprint),
            "created a new certificate authority"
        );
        Ok(CertificateAuthority {
            cert_der,
            key,
            params,
            fingerprint,
        })
    }

    /// SHA-256 of the CA certificate's DER: what tokens carry and clients pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The CA certificate (DER).
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a new P-256 leaf certificate valid for [`LEAF_VALIDITY`] for these names (DNS names
    /// or IP addresses).
    pub fn issue_leaf(&self, names: &[String]) -> Result<Leaf, KeyError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            KeyError::Certificate {
                what: "generate a TLS key",
                source,
            }
        })?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|source| KeyError::Certificate {
                what: "use these names in a TLS certificate",
                source,
            })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sdm-server");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = unix_now();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + now.saturating_sub(BACKDATE);
        params.not_after = epoch + now.saturating_add(LEAF_VALIDITY);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|source| KeyError::Certificate {
                what: "sign the TLS certificate",
                source,
            })?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn created_once_then_reloaded_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let a = CertificateAuthority::load_or_create(dir.path(), false).unwrap();
        let mode = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE), 0o644);
        let b = CertificateAuthority::load_or_create(dir.path(), true).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), sdm_proto::sha256(b.certificate_der()));
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }

    #[test]
    fn refuses_to_recreate_a_lost_ca() {
        let dir = tempfile::tempdir().unwrap();
        let err = CertificateAuthority::load_or_create(dir.path(), true).unwrap_err();
        assert!(err.to_string().contains("Restore"), "{err}");
        CertificateAuthority::load_or_create(dir.path(), false).unwrap();
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path(), true).unwrap_err();
        assert!(err.to_string().contains("only one"), "{err}");
    }

    #[test]
    fn refuses_a_mismatched_pair() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(one.path(), false).unwrap();
        CertificateAuthority::load_or_create(two.path(), false).unwrap();
        std::fs::copy(one.path().join(CERT_FILE), two.path().join(CERT_FILE)).unwrap();
        let err = CertificateAuthority::load_or_create(two.path(), true).unwrap_err();
        assert!(err.to_string().contains("do not belong together"), "{err}");
    }

    #[test]
    fn leaf_chains_to_the_stored_ca_after_a_reload() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::ServerName;
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(dir.path(), false).unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), true).unwrap();
        let leaf = ca
            .issue_leaf(&["localhost".into(), "127.0.0.1".into(), "::1".into()])
            .unwrap();
        assert_eq!(leaf.chain.len(), 2);
        assert_eq!(&leaf.chain[1], ca.certificate_der());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.certificate_der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        for name in ["localhost", "127.0.0.1", "::1"] {
            verifier
                .verify_server_cert(
                    &leaf.chain[0],
                    &leaf.chain[1..],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = verifier.verify_server_cert(
            &leaf.chain[0],
            &[],
            &ServerName::try_from("example.com").unwrap(),
            &[],
            rustls::pki_types::UnixTime::now(),
        );
        assert!(err.is_err());
    }
}
