//! Failed token checks are counted per source address and per token id, so that nobody can
//! hammer the API (and its database) with guesses, and so that no limit can be turned against a
//! client whose token is valid:
//!
//! * A source that failed [`MAX_SOURCE_FAILURES`] checks within a [`WINDOW`] is *throttled*
//!   until the window ends. From it, a token that does not parse, or whose id the store does
//!   not know, is refused at once with 429; a token whose id exists is still checked (one
//!   indexed look-up and a constant-time hash compare: what every request costs), so a valid
//!   token is never refused because others on its address (or behind its NAT) failed.
//! * A token id that failed [`MAX_TOKEN_FAILURES`] checks within a window (its secret being
//!   guessed, say) has its further failures answered with 429 until the window ends; the
//!   right secret still passes.
//!
//! Successful checks cost nothing here.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The client address of an API connection (set per connection by the server).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Failed checks allowed per source and window.
pub(crate) const MAX_SOURCE_FAILURES: u32 = 60;
/// Failed checks allowed per token id and window.
pub(crate) const MAX_TOKEN_FAILURES: u32 = 10;
/// The window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Keys remembered at most per counter; beyond it, expired windows are forgotten first.
const MAX_KEYS: usize = 100_000;

/// The failed checks of sources and of token ids.
pub(crate) struct LoginThrottle {
    sources: Failures<IpAddr>,
    tokens: Failures<Uuid>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            sources: Failures::new(MAX_SOURCE_FAILURES),
            tokens: Failures::new(MAX_TOKEN_FAILURES),
        }
    }
}

impl LoginThrottle {
    /// `Some(wait)` while `ip` is throttled: only tokens whose id exists are checked from it.
    pub(crate) fn source_wait(&self, ip: IpAddr) -> Option<Duration> {
        self.sources.wait(&ip)
    }

    /// `Some(wait)` while failed checks of token `id` are answered with 429.
    pub(crate) fn token_wait(&self, id: Uuid) -> Option<Duration> {
        self.tokens.wait(&id)
    }

    /// Counts a failed check from `ip`; returns the source's failures in its window.
    pub(crate) fn source_failed(&self, ip: IpAddr) -> u32 {
        self.sources.failed(ip)
    }

    /// Counts a failed check of the existing token `id`; returns its failures in its window.
    pub(crate) fn token_failed(&self, id: Uuid) -> u32 {
        self.tokens.failed(id)
    }
}

/// Failures per key within a window that starts at the key's first failure.
struct Failures<K> {
    limit: u32,
    windows: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Eq + Hash + Copy> Failures<K> {
    fn new(limit: u32) -> Self {
        Failures {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn wait(&self, key: &K) -> Option<Duration> {
        let windows = self.windows.lock().ok()?;
        match windows.get(key) {
            Some((since, failures)) if *failures >= self.limit && since.elapsed() < WINDOW => {
                Some(WINDOW.saturating_sub(since.elapsed()))
            }
            _ => None,
        }
    }

    fn failed(&self, key: K) -> u32 {
        let Ok(mut windows) = self.windows.lock() else {
            return 0;
        };
        if windows.len() >= MAX_KEYS {
            windows.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = windows.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_throttled_after_its_limit_and_only_that_source() {
        let t = LoginThrottle::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..MAX_SOURCE_FAILURES {
            assert!(t.source_wait(a).is_none());
            t.source_failed(a);
        }
        let wait = t.source_wait(a).unwrap();
        assert!(wait <= WINDOW && wait > Duration::ZERO);
        assert!(t.source_wait(b).is_none());
    }

    #[test]
    fn a_token_id_has_its_own_limit() {
        let t = LoginThrottle::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..MAX_TOKEN_FAILURES {
            assert!(t.token_wait(a).is_none());
            t.token_failed(a);
        }
        assert!(t.token_wait(a).is_some());
        assert!(t.token_wait(b).is_none());
    }
}
