//! Failed token checks are limited per source address, so that nobody can hammer the API (and
//! its database) with guesses. Once a source has failed too often within a window, every token
//! check from it is refused until the window ends; successful checks cost nothing here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The client address of an API connection (set per connection by the server).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Failed checks allowed per source and window.
pub(crate) const MAX_FAILURES: u32 = 60;
/// The window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Sources remembered at most; beyond it, expired windows are forgotten first.
const MAX_SOURCES: usize = 100_000;

#[derive(Default)]
pub(crate) struct LoginThrottle {
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginThrottle {
    /// `Err(wait)` when `ip` must wait before its next token check.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Ok(sources) = self.sources.lock() else {
            return Ok(());
        };
        match sources.get(&ip) {
            Some((since, failures)) if *failures >= MAX_FAILURES && since.elapsed() < WINDOW => {
                Err(WINDOW.saturating_sub(since.elapsed()))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed check; returns the failures of `ip` in the current window.
    pub(crate) fn failed(&self, ip: IpAddr) -> u32 {
        let Ok(mut sources) = self.sources.lock() else {
            return 0;
        };
        if sources.len() >= MAX_SOURCES {
            sources.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = sources.entry(ip).or_insert((Instant::now(), 0));
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
    fn blocks_after_the_limit_and_only_that_source() {
        let t = LoginThrottle::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(t.check(a).is_ok());
            t.failed(a);
        }
        let wait = t.check(a).unwrap_err();
        assert!(wait <= WINDOW && wait > Duration::ZERO);
        assert!(t.check(b).is_ok());
    }
}
