//! Leases whose signature this gateway has checked, by their exact signed bytes.
//!
//! A client presents the same lease on every connection of a tunnel (its warm pool refills
//! with it), so the Ed25519 check (~70 µs of CPU) is done once per lease rather than once per
//! connection. Identical bytes verify identically under the same keys; when the keys are
//! replaced (a standalone gateway learns that its control plane's `lease.key` changed), what
//! was remembered is forgotten. Validity in time is still checked on every use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sdm_proto::Lease;
use sdm_proto::lease::{LEASE_LEN, LeaseError, LeaseVerifier};

/// Distinct leases remembered; beyond this, expired ones are forgotten, then all.
const CAPACITY: usize = 4096;

pub(crate) struct VerifiedLeases {
    state: Mutex<State>,
}

struct State {
    verifier: Arc<LeaseVerifier>,
    /// Leases that `verifier` accepted.
    seen: HashMap<[u8; LEASE_LEN], Lease>,
}

impl VerifiedLeases {
    pub(crate) fn new(verifier: LeaseVerifier) -> VerifiedLeases {
        VerifiedLeases {
            state: Mutex::new(State {
                verifier: Arc::new(verifier),
                seen: HashMap::new(),
            }),
        }
    }

    /// Checks leases against `verifier` from now on, forgetting those the old keys accepted.
    pub(crate) fn replace_keys(&self, verifier: LeaseVerifier) {
        let mut state = self.lock();
        state.verifier = Arc::new(verifier);
        state.seen.clear();
    }

    /// As [`LeaseVerifier::verify`], with the signature checked only the first time these
    /// bytes are seen.
    pub(crate) fn verify(&self, bytes: &[u8], now: i64, skew: i64) -> Result<Lease, LeaseError> {
        // Bytes of another length are malformed: the verifier says so, and nothing is kept.
        let Ok(key) = <[u8; LEASE_LEN]>::try_from(bytes) else {
            let verifier = self.lock().verifier.clone();
            return verifier.verify(bytes, now, skew);
        };
        let verifier = {
            let state = self.lock();
            if let Some(lease) = state.seen.get(&key) {
                lease.check_validity(now, skew)?;
                return Ok(lease.clone());
            }
            state.verifier.clone()
        };
        // Outside the lock: the signature check is the slow part.
        let lease = verifier.verify(bytes, now, skew)?;
        let mut state = self.lock();
        // Keys replaced meanwhile: the answer stands for this connection but is not kept.
        if Arc::ptr_eq(&state.verifier, &verifier) {
            if state.seen.len() >= CAPACITY {
                state
                    .seen
                    .retain(|_, l| l.check_validity(now, skew).is_ok());
                if state.seen.len() >= CAPACITY {
                    state.seen.clear();
                }
            }
            state.seen.insert(key, lease.clone());
        }
        Ok(lease)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state holds no invariant a panic could break.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        assert!(leases.lock().seen.len() <= CAPACITY);
    }

    #[test]
    fn replaced_keys_refuse_what_the_old_ones_signed_even_if_remembered() {
        let (old, new) = (new_signer(), new_signer());
        let leases = VerifiedLeases::new(LeaseVerifier::new([old.public_key()]));
        let granted = lease(1_000, 1_100);
        let by_old = old.sign(&granted);
        let by_new = new.sign(&granted);
        assert_eq!(leases.verify(&by_old, 1_050, 0), Ok(granted.clone()));
        assert_eq!(
            leases.verify(&by_new, 1_050, 0),
            Err(LeaseError::UnknownKey)
        );
        leases.replace_keys(LeaseVerifier::new([new.public_key()]));
        assert_eq!(
            leases.verify(&by_old, 1_050, 0),
            Err(LeaseError::UnknownKey),
            "a lease remembered under the old keys is checked again"
        );
        assert_eq!(leases.verify(&by_new, 1_050, 0), Ok(granted));
    }
}
