//! What a listener does between `accept` and serving a connection: it caps the connections one
//! source holds at once, so that one client address cannot take every slot of a listener, and
//! it pauses after a failed `accept` (out of file descriptors, most often) instead of spinning
//! or giving up.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The source a connection is counted against: its IPv4 address, or the /64 network of its
/// IPv6 address (one host usually holds a whole /64). IPv4-mapped IPv6 addresses count as
/// their IPv4 address.
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

/// The connections each source holds on one listener, at most `per_source` each.
pub(crate) struct SourceLimit {
    /// Which listener, for the log (`"API"`).
    what: &'static str,
    /// The setting that raises the limit, for the log.
    setting: &'static str,
    per_source: usize,
    /// Only sources that hold a connection, so bounded by the listener's own cap.
    sources: Mutex<HashMap<IpAddr, Held>>,
}

#[derive(Default)]
struct Held {
    open: usize,
    /// Connections refused since the source last held none.
    refused: u64,
}

impl SourceLimit {
    /// A limit of `per_source` connections per source (at least 1), raised by `setting`.
    pub(crate) fn new(
        what: &'static str,
        setting: &'static str,
        per_source: usize,
    ) -> Arc<SourceLimit> {
        Arc::new(SourceLimit {
            what,
            setting,
            per_source: per_source.max(1),
            sources: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `peer`, held until the slot is dropped; `None` when the
    /// source already holds `per_source` connections (the caller closes the connection).
    /// Refusals are logged, the first of a run and then at powers of two.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<SourceSlot> {
        let source = source_of(peer);
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let held = sources.entry(source).or_default();
        if held.open >= self.per_source {
            held.refused = held.refused.saturating_add(1);
            if held.refused.is_power_of_two() {
                tracing::warn!(
                    source = %source,
                    refused = held.refused,
                    "refusing {} connections from {source}: it already holds {}, the most one \
                     source may hold at once (if many clients share this address, behind NAT or \
                     a proxy, raise {})",
                    self.what,
                    self.per_source,
                    self.setting
                );
            }
            return None;
        }
        held.open += 1;
        Some(SourceSlot {
            limit: self.clone(),
            source,
        })
    }

    /// The connections `peer`'s source holds now.
    #[cfg(test)]
    fn held(&self, peer: IpAddr) -> usize {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.get(&source_of(peer)).map_or(0, |h| h.open)
    }
}

/// One connection's place in its source's count; given back when dropped.
pub(crate) struct SourceSlot {
    limit: Arc<SourceLimit>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut sources = self
            .limit
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = sources.get_mut(&self.source) {
            held.open = held.open.saturating_sub(1);
            if held.open == 0 {
                if held.refused > 0 {
                    tracing::info!(
                        source = %self.source,
                        refused = held.refused,
                        "{} connections from {} are accepted again",
                        self.limit.what,
                        self.source
                    );
                }
                sources.remove(&self.source);
            }
        }
    }
}

/// Failed `accept` calls of one listener: how long to pause before the next, and a log that
/// says what is wrong without a line per failure.
pub(crate) struct AcceptFailures {
    what: &'static str,
    /// Failures since the last accepted connection.
    failed: u64,
    since: Option<Instant>,
}

impl AcceptFailures {
    /// The pause after a failure. Out of descriptors, `accept` fails at once for as long as the
    /// pending connection stays queued; this keeps that from spinning while connections that
    /// close give descriptors back.
    pub(crate) const PAUSE: Duration = Duration::from_millis(100);

    pub(crate) fn new(what: &'static str) -> AcceptFailures {
        AcceptFailures {
            what,
            failed: 0,
            since: None,
        }
    }

    /// Records a failure; returns how long to pause before accepting again. Logged the first
    /// time of a run and then at powers of two.
    pub(crate) fn failed(&mut self, error: &io::Error) -> Duration {
        self.failed = self.failed.saturating_add(1);
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.failed.is_power_of_two() {
            let out_of_descriptors =
                matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
            let advice = if out_of_descriptors {
                "; out of file descriptors: connections are left in the listen backlog until \
                 open ones close (raise the open-file limit, e.g. LimitNOFILE= in a systemd unit)"
            } else {
                ""
            };
            tracing::warn!(
                error = %error,
                failures = self.failed,
                for_secs = since.elapsed().as_secs(),
                "accepting {} connections fails: {error}{advice}; trying again every {} ms",
                self.what,
                Self::PAUSE.as_millis()
            );
        }
        Self::PAUSE
    }

    /// Records an accepted connection, logging the end of a run of failures.
    pub(crate) fn accepted(&mut self) {
        if self.failed > 0 {
            tracing::info!(
                failures = self.failed,
                "accepting {} connections again after {} failed attempts",
                self.what,
                self.failed
            );
            self.failed = 0;
            self.since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_addresses_and_ipv6_networks() {
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(source_of(v4), v4);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_of(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(other));
        assert_eq!(source_of(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn each_source_holds_at_most_its_share_and_gets_slots_back() {
        let limit = SourceLimit::new("API", "the limit", 2);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limit.admit(one).unwrap();
        let _second = limit.admit(one).unwrap();
        assert!(limit.admit(one).is_none());
        assert!(limit.admit(one).is_none());
        // Another source is not affected.
        let _other = limit.admit(two).unwrap();
        assert_eq!(limit.held(one), 2);
        drop(first);
        assert_eq!(limit.held(one), 1);
        let _again = limit.admit(one).unwrap();
        assert!(limit.admit(one).is_none());
    }

    #[test]
    fn sources_that_hold_nothing_are_forgotten() {
        let limit = SourceLimit::new("API", "the limit", 1);
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(limit.admit(ip).unwrap());
        }
        let sources = limit.sources.lock().unwrap();
        assert!(sources.is_empty());
    }

    #[test]
    fn accept_failures_pause_and_reset() {
        let mut failures = AcceptFailures::new("API");
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        for _ in 0..5 {
            assert_eq!(failures.failed(&emfile), AcceptFailures::PAUSE);
        }
        assert_eq!(failures.failed, 5);
        failures.accepted();
        assert_eq!(failures.failed, 0);
        assert!(failures.since.is_none());
    }
}
