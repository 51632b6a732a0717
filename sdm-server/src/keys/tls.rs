//! TLS 1.3 server configuration for the API (ALPN `http/1.1`) and the gateway (ALPN `sdm/1`).
//!
//! Both present the chain `[leaf, CA]` from one [`LeafResolver`], whose leaf can be replaced
//! while the server runs (it is reissued daily, long before its 90 days run out).

use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use super::KeyError;
use super::ca::Leaf;

/// ALPN protocol of the HTTPS API.
pub const ALPN_API: &[u8] = b"http/1.1";
/// ALPN protocol of the gateway.
pub const ALPN_GATEWAY: &[u8] = b"sdm/1";
/// Sessions remembered for resumption, per listener.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// Hands rustls the current leaf certificate.
pub struct LeafResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for LeafResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafResolver").finish_non_exhaustive()
    }
}

fn certified(leaf: Leaf) -> Result<Arc<CertifiedKey>, KeyError> {
    let key = rustls::crypto::ring::sign::any_supported_type(&leaf.key).map_err(KeyError::Tls)?;
    Ok(Arc::new(CertifiedKey::new(leaf.chain, key)))
}

impl LeafResolver {
    /// A resolver serving `leaf`.
    pub fn new(leaf: Leaf) -> Result<Arc<LeafResolver>, KeyError> {
        Ok(Arc::new(LeafResolver {
            current: RwLock::new(certified(leaf)?),
        }))
    }

    /// Serves `leaf` to new handshakes from now on.
    pub fn replace(&self, leaf: Leaf) -> Result<(), KeyError> {
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

/// A TLS 1.3-only server configuration (ring provider) advertising `alpn`, with a session cache
/// so that clients resume instead of doing a full handshake per connection.
pub fn server_config(
    resolver: Arc<LeafResolver>,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, KeyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(KeyError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![alpn.to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
}
