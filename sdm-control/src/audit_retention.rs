//! How long the audit trail is kept: with a retention set (`--audit-retention`), connection
//! records that ended longer ago are removed with their queries, in the background and in
//! bounded batches so that a first run over a large trail never holds the store for long. Open
//! records are kept whatever their age. Without a retention, nothing is ever removed.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{Store, StoreError};

/// Records removed per store call.
const BATCH: u32 = 1000;
/// Store calls per sweep at most; what is left waits for the next sweep.
const ROUNDS: usize = 20;
/// Longest pause between sweeps.
const MAX_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How often the sweep runs: a quarter of the retention, between 1 s and an hour.
pub fn sweep_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), MAX_SWEEP_EVERY)
}

/// Removes, once, the records that ended before `now - retention`; returns how many.
pub async fn prune_once(
    store: &dyn Store,
    retention: Duration,
    now: i64,
) -> Result<u64, StoreError> {
    let keep = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let ended_before = now.saturating_sub(keep);
    let mut removed = 0;
    for _ in 0..ROUNDS {
        let n = store.prune_audit(ended_before, BATCH).await?;
        removed += n;
        if n < u64::from(BATCH) {
            break;
        }
    }
    Ok(removed)
}

/// Prunes every [`sweep_every`] until the task is dropped. Control planes sharing a store may
/// all run it: removing is idempotent.
pub async fn sweep_audit(store: Arc<dyn Store>, retention: Duration) {
    let mut interval = tokio::time::interval(sweep_every(retention));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match prune_once(store.as_ref(), retention, sdm_proto::unix_now()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                removed,
                retention_secs = retention.as_secs(),
                "removed audit records past the retention"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove audit records past the retention")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_run_at_a_quarter_of_the_retention_within_bounds() {
        assert_eq!(sweep_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            sweep_every(Duration::from_secs(40)),
            Duration::from_secs(10)
        );
        assert_eq!(
            sweep_every(Duration::from_secs(90 * 86400)),
            MAX_SWEEP_EVERY
        );
    }
}
