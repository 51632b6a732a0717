//! Jittered exponential backoff: how long to wait before retry `n`, so that many clients that
//! failed together do not retry together.

use std::time::Duration;

/// The pause before retry `attempt` (0 for the first): `base` doubled per attempt up to `max`,
/// times a factor in [0.5, 1.5) taken from `unit` (a number in [0, 1); see [`random_unit`]),
/// and never more than `max`. The average pause is the doubled value; none is shorter than
/// half of it.
pub fn delay(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let nominal = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 0.5 + unit;
    nominal.mul_f64(factor).min(max)
}

/// [`delay`] with a fresh random `unit`.
pub fn jittered(attempt: u32, base: Duration, max: Duration) -> Duration {
    delay(attempt, base, max, random_unit())
}

/// A random number in [0, 1) from the operating system's generator (0.5 if it fails, which
/// only loses the jitter).
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => f64::from(u32::from_be_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn doubles_then_stops_at_the_cap() {
        assert_eq!(delay(0, BASE, MAX, 0.5), BASE);
        assert_eq!(delay(3, BASE, MAX, 0.5), BASE * 8);
        assert_eq!(delay(40, BASE, MAX, 0.5), MAX);
        assert_eq!(delay(40, BASE, MAX, 0.0), MAX / 2);
    }

    #[test]
    fn the_jitter_stays_within_half_and_the_cap() {
        for attempt in 0..40 {
            for unit in [0.0, 0.25, 0.5, 0.999_999, 7.0, -3.0, f64::NAN] {
                let nominal = BASE.saturating_mul(1 << attempt.min(16)).min(MAX);
                let d = delay(attempt, BASE, MAX, unit);
                assert!(d >= nominal / 2 && d <= MAX, "{attempt} {unit}: {d:?}");
            }
        }
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }
}
