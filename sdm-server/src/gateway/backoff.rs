//! [`backoff`]: how long to wait before trying again, for the gateway's retrying loops (audit
//! writes here; registration and heartbeats of a standalone gateway in `remote`). It lives with
//! the gateway, which retries without any control plane of its own.

use std::time::Duration;

/// A random fraction in `[0, 1)` for jittered backoff.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    f64::from(u32::from_be_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// Doubling backoff from `base` up to `max`, with jitter, for attempt `n` (from 0).
pub(crate) fn backoff(n: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << n.min(16)).min(max);
    exp.mul_f64(0.5 + jitter() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for n in 0..40 {
            let d = backoff(n, base, max);
            assert!(d <= max, "{n}: {d:?}");
            assert!(d >= base / 2, "{n}: {d:?}");
        }
        assert!(backoff(10, base, max) >= Duration::from_millis(2500));
    }
}
