//! TLS to a PostgreSQL server in libpq's terms, for both sides of sdm that reach one: the
//! gateway (a resource's upstream TLS) and the control plane (its PostgreSQL store's
//! `sslmode`). One rule, so that `require` and `verify-full` mean the same in both places.
//!
//! - `require`: encrypted; the handshake's signatures are checked, but not who the certificate
//!   belongs to (libpq's meaning: it stops a passive eavesdropper, not an impostor);
//! - `verify-full`: encrypted, and the certificate's chain checked against the given CA and its
//!   name against the host connected to.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::api::TlsMode;

/// Why a TLS configuration cannot be built; the caller names whose CA it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfigError {
    /// `verify-full` without a CA to verify against.
    NoCa,
    /// The CA's PEM text holds no certificate, or one that cannot be parsed or used.
    BadCa(String),
    /// The TLS library refused the settings.
    Tls(String),
}

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsConfigError::NoCa => f.write_str("verify-full needs a CA certificate"),
            TlsConfigError::BadCa(why) => write!(f, "the CA certificate is unusable: {why}"),
            TlsConfigError::Tls(why) => write!(f, "TLS settings: {why}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// The client configuration for `mode` (`Disable` gets `require`'s: the caller decides
/// whether to use TLS at all). `ca_pem` holds one or more PEM certificates.
pub fn client_config(
    mode: TlsMode,
    ca_pem: Option<&str>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = crate::tls_provider::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Tls(e.to_string()))?;
    let config = match mode {
        TlsMode::VerifyFull => {
            let pem = ca_pem.ok_or(TlsConfigError::NoCa)?;
            builder
                .with_root_certificates(roots(pem)?)
                .with_no_client_auth()
        }
        TlsMode::Require | TlsMode::Disable => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly { provider }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn roots(pem: &str) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::BadCa(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    Ok(roots)
}

/// `require`: the handshake's signatures are checked, the certificate's owner is not.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_needs_a_ca_with_a_certificate_in_it() {
        assert_eq!(
            client_config(TlsMode::VerifyFull, None).err(),
            Some(TlsConfigError::NoCa)
        );
        let err = client_config(TlsMode::VerifyFull, Some("not a certificate")).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(client_config(TlsMode::Require, None).is_ok());
    }
}
