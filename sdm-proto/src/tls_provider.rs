//! The cryptography of every sdm TLS endpoint (clients, gateways, the API): ring, with
//! TLS13_AES_128_GCM_SHA256 preferred.
//!
//! rustls lists AES-256-GCM with SHA-384 first. Two things make the 128-bit suite cheaper: AES-128
//! runs 10 rounds per block instead of 14 (bulk transfers spend most of their TLS time in
//! AES-GCM), and x86 processors have instructions for SHA-256 but not for SHA-384, while every
//! handshake, resumed ones included, hashes its transcript and derives its keys with the suite's
//! hash (SHA-512's block function was 4 % of both the client's and the gateway's CPU time with a
//! new connection per transaction). AES-128-GCM is the suite RFC 8446 requires of every TLS 1.3
//! implementation. The other two suites stay enabled, after it.

use std::sync::Arc;

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;

/// The ring provider with TLS13_AES_128_GCM_SHA256 moved to the front.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // Stable: the others keep their order.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_comes_first_and_nothing_is_dropped() {
        let suites: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
        assert!(suites.contains(&CipherSuite::TLS13_AES_256_GCM_SHA384));
    }
}
