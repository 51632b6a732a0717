//! [`AnswerCache`]: the embedded gateway's positive answers, remembered while the store's
//! revocation epoch stays where it was.
//!
//! Every change that can take access away or change where it leads (suspensions, deletions,
//! revoked tokens and grants, ended sessions, resource updates) moves the epoch in the same
//! transaction, and an embedded SQLite store knows its epoch without a database trip
//! ([`Store::local_revocation_epoch`](crate::store::Store::local_revocation_epoch)). So a
//! remembered answer is exactly what the store would say, and the next connection after a
//! change is still decided on the new state; a new connection of a granted lease costs a hash
//! look-up instead of a trip through the blocking pool.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

use sdm_proto::gateway::GatewayUpstream as Upstream;

/// Answers remembered at most; when full, all are forgotten (they are cheap to read again).
const CAPACITY: usize = 4096;

/// Account, session and resource of a lease: everything its answer depends on.
pub(super) type Key = (Uuid, Uuid, Uuid);

#[derive(Default)]
pub(super) struct AnswerCache {
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    epoch: i64,
    answers: HashMap<Key, Upstream>,
}

impl AnswerCache {
    /// The answer for `key` remembered under `epoch`.
    pub(super) fn get(&self, epoch: i64, key: &Key) -> Option<Upstream> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.epoch != epoch {
            return None;
        }
        inner.answers.get(key).cloned()
    }

    /// Remembers `answer`, read from the store after its epoch was `epoch`. An answer read under
    /// an older epoch than the one remembered is not kept; a newer epoch forgets everything.
    pub(super) fn put(&self, epoch: i64, key: Key, answer: &Upstream) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if epoch < inner.epoch {
            return;
        }
        if epoch > inner.epoch || inner.answers.len() >= CAPACITY {
            inner.answers.clear();
            inner.epoch = epoch;
        }
        inner.answers.insert(key, answer.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sdm_proto::ResourceKind;
    use sdm_proto::api::{TlsMode, UpstreamTls};

    use super::*;

    fn upstream(port: u16) -> Upstream {
        Upstream {
            resource_name: "pg".into(),
            kind: ResourceKind::Postgres,
            host: "127.0.0.1".into(),
            port,
            credentials: None,
            upstream_tls: UpstreamTls {
                mode: TlsMode::Disable,
                ca_pem: None,
            },
            account_name: "etl".into(),
            labels: BTreeMap::new(),
            databases: Vec::new(),
            replication: false,
            ssh: None,
        }
    }

    fn key() -> Key {
        (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4())
    }

    #[test]
    fn an_answer_holds_only_under_its_epoch() {
        let cache = AnswerCache::default();
        let (a, b) = (key(), key());
        cache.put(3, a, &upstream(1));
        assert_eq!(cache.get(3, &a), Some(upstream(1)));
        assert_eq!(cache.get(3, &b), None);
        assert_eq!(cache.get(4, &a), None);
        // A newer epoch forgets the older answers; an answer read before it is not kept.
        cache.put(4, b, &upstream(2));
        cache.put(3, a, &upstream(1));
        assert_eq!(cache.get(3, &a), None);
        assert_eq!(cache.get(4, &a), None);
        assert_eq!(cache.get(4, &b), Some(upstream(2)));
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = AnswerCache::default();
        let first = key();
        cache.put(1, first, &upstream(1));
        for _ in 1..CAPACITY {
            cache.put(1, key(), &upstream(1));
        }
        assert!(cache.get(1, &first).is_some());
        let last = key();
        cache.put(1, last, &upstream(1));
        assert_eq!(cache.get(1, &first), None);
        assert!(cache.get(1, &last).is_some());
    }
}
