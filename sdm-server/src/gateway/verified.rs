//! Leases whose signature this gateway has checked, by their exact signed bytes.
//!
//! A client presents the same lease on every connection of a tunnel (its warm pool refills
//! with it), so the Ed25519 check (~70 µs of CPU) is done once per lease rather than once per
//! connection. Identical bytes verify identically under the same keys, which the gateway holds
//! for its lifetime; validity in time is still checked on every use.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sdm_proto::Lease;
use sdm_proto::lease::{LEASE_LEN, LeaseError, LeaseVerifier};

/// Distinct leases remembered; beyond this, expired ones are forgotten, then all.
const CAPACITY: usize = 4096;

pub(crate) struct VerifiedLeases {
    verifier: LeaseVerifier,
    seen: Mutex<HashMap<[u8; LEASE_LEN], Lease>>,
}

impl VerifiedLeases {
    pub(crate) fn new(verifier: LeaseVerifier) -> VerifiedLeases {
        VerifiedLeases {
            verifier,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// As [`LeaseVerifier::verify`], with the signature checked only the first time these
    /// bytes are seen.
    pub(crate) fn verify(&self, bytes: &[u8], now: i64, skew: i64) -> Result<Lease, LeaseError> {
        let Ok(key) = <[u8; LEASE_LEN]>::try_from(bytes) else {
            return self.verifier.verify(bytes, now, skew);
        };
        let known = self.lock().get(&key).cloned();
        if let Some(lease) = known {
            lease.check_validity(now, skew)?;
            return Ok(lease);
        }
        let lease = self.verifier.verify(bytes, now, skew)?;
        let mut seen = self.lock();
        if seen.len() >= CAPACITY {
            seen.retain(|_, l| l.check_validity(now, skew).is_ok());
            if seen.len() >= CAPACITY {
                seen.clear();
            }
        }
        seen.insert(key, lease.clone());
        Ok(lease)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; LEASE_LEN], Lease>> {
        // The map holds no invariant a panic could break.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use sdm_proto::lease::LeaseSigner;
    use uuid::Uuid;

    use super::*;

    fn new_signer() -> LeaseSigner {
        LeaseSigner::from_pkcs8(&LeaseSigner::generate_pkcs8().unwrap()).unwrap()
    }

    fn lease(issued_at: i64, expires_at: i64) -> Lease {
        Lease {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            resource_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            issued_at,
            expires_at,
        }
    }

    #[test]
    fn a_known_lease_is_still_checked_in_time_and_forgeries_never_enter() {
        let signer = new_signer();
        let leases = VerifiedLeases::new(LeaseVerifier::new([signer.public_key()]));
        let granted = lease(1_000, 1_100);
        let signed = signer.sign(&granted);
        assert_eq!(leases.verify(&signed, 1_050, 0), Ok(granted.clone()));
        // Remembered now, yet expiry still applies on every use.
        assert_eq!(leases.verify(&signed, 1_060, 0), Ok(granted.clone()));
        assert_eq!(
            leases.verify(&signed, 1_200, 0),
            Err(LeaseError::Expired(1_100))
        );
        assert_eq!(
            leases.verify(&signed, 900, 0),
            Err(LeaseError::NotYetValid(1_000))
        );

        let mut tampered = signed.clone();
        tampered[LEASE_LEN - 1] ^= 1;
        for _ in 0..2 {
            assert_eq!(
                leases.verify(&tampered, 1_050, 0),
                Err(LeaseError::BadSignature)
            );
        }
        assert_eq!(
            leases.verify(&signed[..10], 1_050, 0),
            Err(LeaseError::Malformed)
        );
        let stranger = new_signer().sign(&granted);
        assert_eq!(
            leases.verify(&stranger, 1_050, 0),
            Err(LeaseError::UnknownKey)
        );
    }

    #[test]
    fn a_full_cache_forgets_and_keeps_working() {
        let signer = new_signer();
        let leases = VerifiedLeases::new(LeaseVerifier::new([signer.public_key()]));
        for i in 0..(CAPACITY as i64 + 10) {
            let l = lease(0, 100 + i);
            assert_eq!(leases.verify(&signer.sign(&l), 50, 0), Ok(l));
        }
        assert!(leases.lock().len() <= CAPACITY);
    }
}
