//! TLS 1.3 server configuration for the API (ALPN `http/1.1`) and the gateways (ALPN `sdm/1`).
//!
//! Both present the chain `[leaf, CA]` from one [`LeafResolver`], whose leaf can be replaced
//! while the server runs (it is reissued daily, long before its 90 days run out). Here rather
//! than in a server crate because the control plane and the gateways both serve with it.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocol of the HTTPS API.
pub const ALPN_API: &[u8] = b"http/1.1";
/// ALPN protocol of the gateway.
pub const ALPN_GATEWAY: &[u8] = b"sdm/1";

/// A leaf certificate and its key, ready for rustls.
pub struct Leaf {
    /// `[leaf, CA]`.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Hands rustls the current leaf certificate.
pub struct LeafResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for LeafResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafResolver").finish_non_exhaustive()
    }
}

fn certified(leaf: Leaf) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let key = rustls::crypto::ring::sign::any_supported_type(&leaf.key)?;
    Ok(Arc::new(CertifiedKey::new(leaf.chain, key)))
}

impl LeafResolver {
    /// A resolver serving `leaf`.
    pub fn new(leaf: Leaf) -> Result<Arc<LeafResolver>, rustls::Error> {
        Ok(Arc::new(LeafResolver {
            current: RwLock::new(certified(leaf)?),
        }))
    }

    /// The leaf certificate served now (DER).
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.cert.first().cloned()
    }

    /// Serves `leaf` to new handshakes from now on.
    pub fn replace(&self, leaf: Leaf) -> Result<(), rustls::Error> {
        let key = certified(leaf)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A TLS 1.3-only server configuration (ring provider, AES-128-GCM first, whatever order the
/// client offers) advertising `alpn`, issuing resumption tickets so that clients resume instead
/// of doing a full handshake per connection.
///
/// Tickets are stateless (the session sealed with a key that rustls rotates every 6 hours)
/// rather than kept in a session cache: finding a session in rustls's cache scans its list of
/// keys, which with thousands of sessions cost 3 % of the gateway's CPU time when every
/// transaction opened a new connection. Resumed handshakes still run an ECDHE key exchange, so
/// traffic stays forward secret; early data is not accepted.
pub fn server_config(
    resolver: Arc<LeafResolver>,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls_provider::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![alpn.to_vec()];
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

impl Leaf {
    /// The chain as PEM certificates and the key as a PEM PKCS#8 private key, as a gateway's
    /// registration carries them.
    pub fn to_pem(&self) -> (String, String) {
        let chain = self
            .chain
            .iter()
            .map(|c| pem_encode("CERTIFICATE", c.as_ref()))
            .collect();
        (chain, pem_encode("PRIVATE KEY", self.key.secret_der()))
    }

    /// Reads what [`to_pem`](Self::to_pem) wrote; the chain must hold the leaf and the CA.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Leaf, &'static str> {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| "the certificate chain is not PEM")?;
        if chain.len() < 2 {
            return Err("the certificate chain lacks the leaf or the CA certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| "the private key is not PEM")?;
        Ok(Leaf { chain, key })
    }
}

/// `der` as a PEM block labelled `label`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
