//! Leases: short-lived, Ed25519-signed permissions to reach one resource through a gateway.
//!
//! ```text
//! "SDL1" | key id:8 | lease id:16 | account:16 | resource:16 | session:16
//!        | issued_at:i64 | expires_at:i64 | Ed25519 signature over everything before:64
//! ```
//! 156 bytes, fixed. Gateways verify leases offline with the control plane's public key; the key
//! id (first 8 bytes of SHA-256 of the public key) lets a gateway hold several keys during a
//! rotation.

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use uuid::Uuid;

const MAGIC: &[u8; 4] = b"SDL1";
const BODY_LEN: usize = 4 + 8 + 16 * 4 + 8 + 8;
const SIG_LEN: usize = 64;
/// Size of an encoded, signed lease.
pub const LEASE_LEN: usize = BODY_LEN + SIG_LEN;

/// What a lease grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's own id (audit records carry it).
    pub id: Uuid,
    /// The service account.
    pub account_id: Uuid,
    /// The resource the account may reach.
    pub resource_id: Uuid,
    /// The login session that asked for it.
    pub session_id: Uuid,
    /// Unix seconds, control plane clock.
    pub issued_at: i64,
    /// Unix seconds, control plane clock; the gateway refuses the lease afterwards.
    pub expires_at: i64,
}

impl Lease {
    /// Whether the lease is valid at `now` (unix seconds), allowing `skew` seconds of clock
    /// difference with the control plane that signed it. Says nothing about the signature.
    pub fn check_validity(&self, now: i64, skew: i64) -> Result<(), LeaseError> {
        if now > self.expires_at.saturating_add(skew) {
            return Err(LeaseError::Expired(self.expires_at));
        }
        if self.issued_at > now.saturating_add(skew) {
            return Err(LeaseError::NotYetValid(self.issued_at));
        }
        Ok(())
    }
}

/// Why a gateway refuses a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Wrong length or magic.
    #[error("lease is malformed")]
    Malformed,
    /// Signed by a key this gateway does not know.
    #[error("lease was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify: forged or tampered.
    #[error("lease signature is invalid")]
    BadSignature,
    /// Past its expiry.
    #[error("lease expired at {0} (unix seconds)")]
    Expired(i64),
    /// Issued in the future beyond the allowed clock skew.
    #[error("lease is not valid yet (issued at {0}, unix seconds)")]
    NotYetValid(i64),
    /// The key could not be loaded or generated.
    #[error("lease signing key is unusable")]
    Key,
}

/// Signs leases; lives only in the control plane.
pub struct LeaseSigner {
    key: Ed25519KeyPair,
    key_id: [u8; 8],
}

impl std::fmt::Debug for LeaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn key_id(public_key: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    id.copy_from_slice(&crate::sha256(public_key)[..8]);
    id
}

impl LeaseSigner {
    /// A new random key in PKCS#8 form, to store in a 0600 file.
    pub fn generate_pkcs8() -> Result<Vec<u8>, LeaseError> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| LeaseError::Key)
    }

    /// Loads a key stored with [`generate_pkcs8`](Self::generate_pkcs8).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<LeaseSigner, LeaseError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| LeaseError::Key)?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(LeaseSigner { key, key_id })
    }

    /// The public key gateways verify with.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// The encoded, signed lease ([`LEASE_LEN`] bytes).
    pub fn sign(&self, lease: &Lease) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEASE_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(lease.id.as_bytes());
        out.extend_from_slice(lease.account_id.as_bytes());
        out.extend_from_slice(lease.resource_id.as_bytes());
        out.extend_from_slice(lease.session_id.as_bytes());
        out.extend_from_slice(&lease.issued_at.to_be_bytes());
        out.extend_from_slice(&lease.expires_at.to_be_bytes());
        let sig = self.key.sign(&out);
        out.extend_from_slice(sig.as_ref());
        out
    }
}

/// Verifies leases with one or more public keys; lives in every gateway.
#[derive(Clone)]
pub struct LeaseVerifier {
    keys: Vec<([u8; 8], UnparsedPublicKey<Vec<u8>>)>,
}

impl std::fmt::Debug for LeaseVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseVerifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl LeaseVerifier {
    /// A verifier trusting these Ed25519 public keys.
    pub fn new<I: IntoIterator<Item = Vec<u8>>>(public_keys: I) -> LeaseVerifier {
        LeaseVerifier {
            keys: public_keys
                .into_iter()
                .map(|k| (key_id(&k), UnparsedPublicKey::new(&signature::ED25519, k)))
                .collect(),
        }
    }

    /// Checks length, key, signature and validity at `now` (unix seconds), allowing
    /// `skew` seconds of clock difference with the control plane that signed it.
    pub fn verify(&self, bytes: &[u8], now: i64, skew: i64) -> Result<Lease, LeaseError> {
        let lease = self.verify_signature(bytes)?;
        lease.check_validity(now, skew)?;
        Ok(lease)
    }

    /// Checks length, key and signature only, not the validity period: for a control plane
    /// asked by a gateway whether a lease it admitted earlier (and may keep using for a long
    /// connection) still holds.
    pub fn verify_signature(&self, bytes: &[u8]) -> Result<Lease, LeaseError> {
        let lease = decode_unverified(bytes)?;
        let (body, sig) = bytes.split_at(BODY_LEN);
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id[..] == body[4..12])
            .ok_or(LeaseError::UnknownKey)?;
        key.1
            .verify(body, sig)
            .map_err(|_| LeaseError::BadSignature)?;
        Ok(lease)
    }
}

/// Reads a lease's fields without checking the signature (for logs and clients).
pub fn decode_unverified(bytes: &[u8]) -> Result<Lease, LeaseError> {
    if bytes.len() != LEASE_LEN || &bytes[..4] != MAGIC {
        return Err(LeaseError::Malformed);
    }
    let uuid_at = |i: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&bytes[i..i + 16]);
        Uuid::from_bytes(b)
    };
    let i64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        i64::from_be_bytes(b)
    };
    Ok(Lease {
        id: uuid_at(12),
        account_id: uuid_at(28),
        resource_id: uuid_at(44),
        session_id: uuid_at(60),
        issued_at: i64_at(76),
        expires_at: i64_at(84),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(now: i64) -> Lease {
        Lease {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            resource_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            issued_at: now,
            expires_at: now + 60,
        }
    }

    fn signer() -> LeaseSigner {
        LeaseSigner::from_pkcs8(&LeaseSigner::generate_pkcs8().unwrap()).unwrap()
    }

    #[test]
    fn signed_lease_verifies() {
        let s = signer();
        let l = lease(1000);
        let bytes = s.sign(&l);
        assert_eq!(bytes.len(), LEASE_LEN);
        let v = LeaseVerifier::new([s.public_key()]);
        assert_eq!(v.verify(&bytes, 1010, 0).unwrap(), l);
        assert_eq!(decode_unverified(&bytes).unwrap(), l);
    }

    #[test]
    fn refuses_tampered_forged_and_expired_leases() {
        let s = signer();
        let v = LeaseVerifier::new([s.public_key()]);
        let bytes = s.sign(&lease(1000));
        for i in [0, 5, 20, 50, 90, 100, LEASE_LEN - 1] {
            let mut t = bytes.clone();
            t[i] ^= 1;
            assert!(v.verify(&t, 1010, 0).is_err(), "flipped byte {i}");
        }
        let other = signer();
        assert_eq!(
            v.verify(&other.sign(&lease(1000)), 1010, 0),
            Err(LeaseError::UnknownKey)
        );
        assert_eq!(v.verify(&bytes, 1061, 0), Err(LeaseError::Expired(1060)));
        assert!(v.verify(&bytes, 1061, 60).is_ok());
        assert_eq!(
            v.verify(&bytes, 900, 60),
            Err(LeaseError::NotYetValid(1000))
        );
        assert_eq!(v.verify(&bytes[..10], 1010, 0), Err(LeaseError::Malformed));
        assert_eq!(v.verify(&[], 1010, 0), Err(LeaseError::Malformed));
        // The signature alone holds long after expiry; a tampered lease still fails.
        assert!(v.verify_signature(&bytes).is_ok());
        let mut t = bytes.clone();
        t[90] ^= 1;
        assert_eq!(v.verify_signature(&t), Err(LeaseError::BadSignature));
    }
}
