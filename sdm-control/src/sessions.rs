//! How many login sessions an account may hold and how long they live ([`SessionPolicy`]):
//! the per-account limit applied at login, idle and absolute expiry (swept in the background,
//! and the maximum age also checked when a lease is asked for), and the removal of ended
//! sessions after a retention period ([`sweep_sessions`]).
//!
//! Ending a session here is a logout: the revocation epoch moves, so gateways cut the session's
//! open connections. Clients built on `sdm-core` log in again by themselves when their session
//! ended this way while their token is still valid.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{SessionExpiry, SessionRecord, Store, StoreError};

/// Default most open sessions per account.
pub const DEFAULT_MAX_SESSIONS_PER_ACCOUNT: u32 = 1000;
/// Default time without a lease after which a session ends.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default longest life of a session.
pub const DEFAULT_SESSION_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default time after which an unused web console session ends.
pub const DEFAULT_CONSOLE_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default longest life of a web console session.
pub const DEFAULT_CONSOLE_MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Default time ended sessions are kept before they are removed.
pub const DEFAULT_SESSION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest duration accepted for each setting (ten years: "never", in practice).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Sessions ended or removed per store call of a sweep.
const SWEEP_BATCH: u32 = 1000;
/// Store calls per kind per sweep at most; what is left waits for the next sweep.
const SWEEP_ROUNDS: usize = 20;
/// A session's last use is written at most this often (a lease renewal is not a write).
const TOUCH_GRANULARITY: Duration = Duration::from_secs(60);

/// The limits on login sessions (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Most open sessions per account; a login beyond it ends the account's oldest.
    pub max_per_account: u32,
    /// A session in which no lease was issued for this long, and with no connection open,
    /// ends.
    pub idle_timeout: Duration,
    /// A session ends this long after its login, whatever it does.
    pub max_age: Duration,
    /// Ended sessions are removed this long after their end.
    pub retention: Duration,
    /// A web console session not used for this long ends (checked at its next page).
    pub console_idle_timeout: Duration,
    /// A web console session ends this long after its sign-in.
    pub console_max_age: Duration,
}

impl Default for SessionPolicy {
    fn default() -> SessionPolicy {
        SessionPolicy {
            max_per_account: DEFAULT_MAX_SESSIONS_PER_ACCOUNT,
            idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            max_age: DEFAULT_SESSION_MAX_AGE,
            retention: DEFAULT_SESSION_RETENTION,
            console_idle_timeout: DEFAULT_CONSOLE_IDLE_TIMEOUT,
            console_max_age: DEFAULT_CONSOLE_MAX_AGE,
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `3600` → `"1 h"`, for messages.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

impl SessionPolicy {
    /// Why these limits cannot work with leases living `lease_ttl`, if they cannot. A session
    /// with an open tunnel asks for a lease every half lease lifetime, so an idle timeout (and a
    /// maximum age) shorter than a lease's life would end sessions that are in use.
    pub fn check(&self, lease_ttl: Duration) -> Result<(), String> {
        if self.max_per_account == 0 {
            return Err("the most sessions per account must be at least 1".into());
        }
        for (what, value) in [
            ("session idle timeout", self.idle_timeout),
            ("session maximum age", self.max_age),
        ] {
            if value < lease_ttl {
                return Err(format!(
                    "the {what} ({} s) must be at least the lease lifetime ({} s): sessions in \
                     use renew their leases only every half lifetime",
                    value.as_secs(),
                    lease_ttl.as_secs()
                ));
            }
        }
        for (what, value) in [
            ("console idle timeout", self.console_idle_timeout),
            ("console session maximum age", self.console_max_age),
        ] {
            if value.is_zero() {
                return Err(format!("the {what} must be at least 1 s"));
            }
        }
        for (what, value) in [
            ("session idle timeout", self.idle_timeout),
            ("session maximum age", self.max_age),
            ("session retention", self.retention),
            ("console idle timeout", self.console_idle_timeout),
            ("console session maximum age", self.console_max_age),
        ] {
            if value > MAX_DURATION {
                return Err(format!("the {what} must be at most 10 years"));
            }
        }
        Ok(())
    }

    /// Why `session` is past its maximum age at `now`, if it is (it is then to be ended). The
    /// idle timeout is left to the sweep, which alone sees whether a connection of the session
    /// is still open; a session that asks for a lease is not idle anyway.
    pub fn too_old(&self, session: &SessionRecord, now: i64) -> Option<String> {
        let age = now.saturating_sub(session.created_at);
        (age > secs(self.max_age)).then(|| {
            format!(
                "it lived longer than the {} a session may live",
                human(self.max_age)
            )
        })
    }

    /// Whether issuing a lease at `now` should record the session's use (at most about once a
    /// minute, and often enough that a session in use never looks idle).
    pub fn should_touch(&self, session: &SessionRecord, now: i64) -> bool {
        let every = secs(TOUCH_GRANULARITY.min(self.idle_timeout / 4));
        session
            .last_used_at
            .is_none_or(|at| now.saturating_sub(at) >= every)
    }

    /// How often the background sweep runs: a quarter of the shortest lifetime, between 1 s and
    /// 30 s.
    pub fn sweep_every(&self) -> Duration {
        (self.idle_timeout.min(self.max_age) / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    fn expiry_at(&self, now: i64) -> SessionExpiry {
        SessionExpiry {
            now,
            idle_before: now.saturating_sub(secs(self.idle_timeout)),
            created_before: now.saturating_sub(secs(self.max_age)),
        }
    }
}

/// Ends the sessions that expired and removes those ended longer ago than the retention, once;
/// returns how many of each. Bounded: at most `SWEEP_ROUNDS` batches of each kind.
pub async fn sweep_once(
    store: &dyn Store,
    policy: &SessionPolicy,
    now: i64,
) -> Result<(u64, u64), StoreError> {
    let mut ended = 0;
    for _ in 0..SWEEP_ROUNDS {
        let n = store
            .expire_sessions(policy.expiry_at(now), SWEEP_BATCH)
            .await?;
        ended += n;
        if n < u64::from(SWEEP_BATCH) {
            break;
        }
    }
    let mut removed = 0;
    let ended_before = now.saturating_sub(secs(policy.retention));
    for _ in 0..SWEEP_ROUNDS {
        let n = store.prune_sessions(ended_before, SWEEP_BATCH).await?;
        removed += n;
        if n < u64::from(SWEEP_BATCH) {
            break;
        }
    }
    Ok((ended, removed))
}

/// Sweeps every [`SessionPolicy::sweep_every`] until the task is dropped. Several control
/// planes on one store may all sweep: ending and removing are idempotent.
pub async fn sweep_sessions(store: Arc<dyn Store>, policy: SessionPolicy) {
    let mut interval = tokio::time::interval(policy.sweep_every());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match sweep_once(store.as_ref(), &policy, sdm_proto::unix_now()).await {
            Ok((0, 0)) => {}
            Ok((ended, removed)) => {
                tracing::info!(ended, removed, "expired sessions ended, old ones removed")
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep expired sessions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;

    fn session(created_at: i64, last_used_at: Option<i64>) -> SessionRecord {
        SessionRecord {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            labels: BTreeMap::new(),
            client: String::new(),
            created_at,
            ended_at: None,
            last_used_at,
        }
    }

    #[test]
    fn sessions_past_their_maximum_age_are_too_old() {
        let policy = SessionPolicy {
            max_age: Duration::from_secs(3600),
            ..SessionPolicy::default()
        };
        assert_eq!(policy.too_old(&session(1000, None), 4600), None);
        let old = policy.too_old(&session(1000, Some(4600)), 4601).unwrap();
        assert!(old.contains("longer than the 1 h"), "{old}");
        assert_eq!(
            policy.expiry_at(5000),
            SessionExpiry {
                now: 5000,
                idle_before: 5000 - 3600,
                created_before: 5000 - 3600,
            }
        );
    }

    #[test]
    fn use_is_recorded_about_once_a_minute() {
        let policy = SessionPolicy::default();
        assert!(policy.should_touch(&session(0, None), 0));
        assert!(!policy.should_touch(&session(0, Some(100)), 159));
        assert!(policy.should_touch(&session(0, Some(100)), 160));
        let short = SessionPolicy {
            idle_timeout: Duration::from_secs(8),
            ..policy
        };
        assert!(short.should_touch(&session(0, Some(100)), 102));
        assert_eq!(short.sweep_every(), Duration::from_secs(2));
        assert_eq!(policy.sweep_every(), Duration::from_secs(30));
    }

    #[test]
    fn limits_that_would_end_sessions_in_use_are_refused() {
        let ttl = Duration::from_secs(300);
        assert!(SessionPolicy::default().check(ttl).is_ok());
        let short = SessionPolicy {
            idle_timeout: Duration::from_secs(299),
            ..SessionPolicy::default()
        };
        assert!(short.check(ttl).unwrap_err().contains("lease lifetime"));
        let none = SessionPolicy {
            max_per_account: 0,
            ..SessionPolicy::default()
        };
        assert!(none.check(ttl).is_err());
        let forever = SessionPolicy {
            retention: Duration::from_secs(u64::MAX / 2),
            ..SessionPolicy::default()
        };
        assert!(forever.check(ttl).is_err());
    }
}
