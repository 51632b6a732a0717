//! How every sdm client trusts an installation: TLS 1.3 only, trusting exactly the CA whose
//! SHA-256 fingerprint the token carries. Jobs (through `sdm-core`) and standalone gateways
//! (talking to their control plane) use the same rule, so it lives here, behind the `tls`
//! feature.
//!
//! Servers send their chain as `[leaf, CA]`. The client picks the CA certificate out of the
//! chain by fingerprint and then verifies the leaf against it with webpki as usual (signature,
//! validity, name). A chain without the pinned CA is refused, so a token only ever talks to its
//! own installation.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// The webpki verifier for the CA found in the first chain; every later chain must carry
    /// the same CA. Only a cache, so a poisoned lock is simply taken over.
    verifier: Mutex<Option<Arc<WebPkiServerVerifier>>>,
}

impl PinnedCa {
    fn verifier_for(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| crate::sha256(c.as_ref()) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's certificate is not issued by the CA this token trusts \
                     (another installation, or an interception attempt)"
                        .into(),
                )
            })?;
        let mut cached = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = cached.as_ref() {
            return Ok(v.clone());
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| {
            rustls::Error::General(format!("the pinned CA certificate is unusable: {e}"))
        })?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("certificate verifier: {e}")))?;
        *cached = Some(verifier.clone());
        Ok(verifier)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier_for(intermediates)?.verify_server_cert(
            end_entity,
            &[],
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used by sdm".into()))
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

/// A client configuration that trusts only the CA with `ca_fingerprint`, speaks `alpn` and
/// remembers up to `sessions` tickets for resumption.
///
/// Share one configuration across connections: it holds the session cache that lets later
/// connections resume instead of doing a full handshake.
pub fn client_config(
    ca_fingerprint: [u8; 32],
    alpn: &[u8],
    sessions: usize,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = crate::tls_provider::provider();
    let verifier = Arc::new(PinnedCa {
        fingerprint: ca_fingerprint,
        provider: provider.clone(),
        verifier: Mutex::new(None),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(sessions);
    Ok(Arc::new(config))
}

/// The TLS server name for `host` (a DNS name or an IP address, brackets allowed).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).ok()
}
