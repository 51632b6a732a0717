//! [`audit_uploader`]: the standalone gateway's audit events, queued and uploaded to the
//! control plane in batches by the gateway's writing task (see [`spawn_audit_writer`]), so that
//! recording never waits on the network.
//!
//! A batch that fails to upload (the control plane unreachable or failing) is kept durably in
//! the gateway's [`Spool`], and so is every batch after it until the spool is empty again: the
//! [`drain`] task uploads spooled batches in order, as soon as a control plane takes them. Only
//! when a batch can be neither uploaded nor spooled (the spool is full or its disk fails) does
//! the queue report the failure, and the gateway refuses connections (see [`AuditPolicy`]). A
//! body the control plane refuses as invalid (400, 413, 422) is given up, logged and counted:
//! sending it again cannot help.

use std::sync::Arc;
use std::time::Duration;

use sdm_gateway::{AuditPolicy, AuditQueue, AuditWriter, Retry, WriteError, spawn_audit_writer};
use sdm_proto::api::routes;
use sdm_proto::audit::AuditEvent;
use sdm_proto::gateway::{MAX_AUDIT_BODY_BYTES, MAX_AUDIT_EVENTS};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::client::{CallError, SharedControlPlane};
use super::spool::{Spool, SpoolError};

/// Upload bodies stay under this (the control plane accepts up to [`MAX_AUDIT_BODY_BYTES`]).
const BODY_TARGET: usize = MAX_AUDIT_BODY_BYTES / 2;
/// A spooled batch's upload (nothing waits on it).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// A batch's first upload: short, since the batch is spooled when it fails.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses between attempts to upload spooled batches while no control plane takes them.
const FIRST_DRAIN_WAIT: Duration = Duration::from_millis(250);
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(5);

/// A queue for the gateway's audit events and the task that uploads them to the control plane
/// (spooling what cannot be uploaded now); the task ends after every queue handle is dropped
/// and what was queued is uploaded or spooled.
pub(crate) fn audit_uploader(
    control_plane: SharedControlPlane,
    policy: AuditPolicy,
    spool: Arc<Spool>,
    spooled: Arc<Notify>,
    metrics: sdm_gateway::GatewayMetrics,
) -> (AuditQueue, JoinHandle<()>) {
    spawn_audit_writer(
        Uploader {
            control_plane,
            spool,
            spooled,
        },
        policy,
        metrics,
    )
}

/// Uploads each batch as one body, or spools it.
struct Uploader {
    control_plane: SharedControlPlane,
    spool: Arc<Spool>,
    /// Wakes the drain task.
    spooled: Arc<Notify>,
}

impl AuditWriter for Uploader {
    type Batch = Vec<u8>;

    const RETRY: Retry = Retry {
        first_wait: Duration::from_millis(250),
        max_wait: Duration::from_secs(5),
        attempts_while_closing: 4,
    };

    fn prepare(&self, events: Vec<AuditEvent>) -> Vec<(usize, Vec<u8>)> {
        bodies(events)
    }

    async fn write(&self, body: &Vec<u8>) -> Result<(), WriteError> {
        // Straight to the control plane while nothing waits before this batch.
        let why = if self.spool.is_empty() {
            match upload(&self.control_plane, body, DIRECT_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(WriteError::Invalid(why)) => return Err(WriteError::Invalid(why)),
                Err(WriteError::Failed(why)) => why,
            }
        } else {
            "earlier batches are still spooled".to_owned()
        };
        let spool = self.spool.clone();
        let batch = body.clone();
        let kept = tokio::task::spawn_blocking(move || spool.push(&batch))
            .await
            .unwrap_or_else(|e| {
                Err(SpoolError::Unsafe {
                    dir: "(spool)".into(),
                    why: format!("the spooling thread failed: {e}"),
                })
            });
        match kept {
            Ok(()) => {
                if self.spool.usage().0 == 1 {
                    tracing::warn!(reason = %why, "the audit trail cannot be uploaded now; spooling it on disk until a control plane takes it");
                }
                self.spooled.notify_one();
                Ok(())
            }
            Err(e) => Err(WriteError::Failed(format!("{why}, and {e}"))),
        }
    }
}

/// Uploads one body.
async fn upload(
    control_plane: &SharedControlPlane,
    body: &[u8],
    timeout: Duration,
) -> Result<(), WriteError> {
    match control_plane
        .post_raw(routes::GATEWAY_AUDIT, Some(body.to_vec()), timeout)
        .await
    {
        Ok(()) => Ok(()),
        Err(CallError::Refused {
            status, message, ..
        }) if matches!(status, 400 | 413 | 422) => Err(WriteError::Invalid(format!(
            "the control plane refused them as invalid (HTTP {status}): {message}"
        ))),
        Err(e) => Err(WriteError::Failed(format!(
            "uploading to the control plane failed: {e}"
        ))),
    }
}

/// Uploads the spooled batches, oldest first, removing each once taken. Returns when the spool
/// is empty, or with the reason when a batch could not be uploaded (it stays spooled).
pub(crate) async fn upload_spooled(
    control_plane: &SharedControlPlane,
    spool: &Arc<Spool>,
) -> Result<(), String> {
    loop {
        let next = {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.oldest())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        let Some((seq, body)) = next else {
            return Ok(());
        };
        match upload(control_plane, &body, UPLOAD_TIMEOUT).await {
            Ok(()) => {}
            Err(WriteError::Invalid(why)) => {
                tracing::error!(reason = %why, batch = seq, "a spooled audit batch was refused as invalid; it is lost");
            }
            Err(WriteError::Failed(why)) => return Err(why),
        }
        spool.remove(seq).map_err(|e| e.to_string())?;
        if spool.is_empty() {
            tracing::info!("the spooled audit trail is uploaded");
        }
    }
}

/// Uploads spooled batches whenever there are some, retrying with backoff while no control
/// plane takes them, until `stop` is set; then makes one last bounded attempt (what stays is
/// uploaded at the next start).
pub(crate) async fn drain(
    control_plane: SharedControlPlane,
    spool: Arc<Spool>,
    spooled: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let wait = match upload_spooled(&control_plane, &spool).await {
            Ok(()) => {
                failures = 0;
                None
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(reason = %why, "spooled audit events cannot be uploaded yet; retrying");
                }
                Some(sdm_proto::backoff::jittered(
                    failures - 1,
                    FIRST_DRAIN_WAIT,
                    MAX_DRAIN_WAIT,
                ))
            }
        };
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => {}
            _ = spooled.notified() => {}
            _ = async { match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            } } => {}
        }
    }
    let (batches, bytes) = spool.usage();
    if batches > 0 {
        tracing::warn!(
            batches,
            bytes,
            "audit batches stay in the spool; they are uploaded when the gateway starts again"
        );
    }
}

/// Splits events into upload bodies of at most [`MAX_AUDIT_EVENTS`] events and about
/// [`BODY_TARGET`] bytes (one event alone may be larger, up to the query text limit).
fn bodies(events: Vec<AuditEvent>) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    let flush = |parts: &mut Vec<Vec<u8>>, size: &mut usize, out: &mut Vec<(usize, Vec<u8>)>| {
        if parts.is_empty() {
            return;
        }
        let mut body = Vec::with_capacity(*size + 16);
        body.extend_from_slice(b"{\"events\":[");
        body.extend_from_slice(&parts.join(&b","[..]));
        body.extend_from_slice(b"]}");
        out.push((parts.len(), body));
        parts.clear();
        *size = 0;
    };
    for event in events {
        let Ok(json) = serde_json::to_vec(&event) else {
            continue;
        };
        if !parts.is_empty() && (size + json.len() > BODY_TARGET || parts.len() >= MAX_AUDIT_EVENTS)
        {
            flush(&mut parts, &mut size, &mut out);
        }
        size += json.len() + 1;
        parts.push(json);
    }
    flush(&mut parts, &mut size, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use sdm_proto::audit::AuditQueryEvent;
    use sdm_proto::gateway::AuditUpload;

    use super::*;

    #[test]
    fn large_batches_are_split_into_bounded_bodies() {
        let id = Uuid::new_v4();
        let events: Vec<AuditEvent> = (0..200u64)
            .map(|seq| {
                AuditEvent::Query(AuditQueryEvent {
                    connection_id: id,
                    seq,
                    at: 1,
                    text: "x".repeat(8 * 1024),
                })
            })
            .collect();
        let bodies = bodies(events);
        assert!(bodies.len() > 1);
        assert_eq!(bodies.iter().map(|(n, _)| n).sum::<usize>(), 200);
        for (_, body) in &bodies {
            assert!(body.len() <= MAX_AUDIT_BODY_BYTES);
            let parsed: AuditUpload = serde_json::from_slice(body).unwrap();
            assert!(parsed.events.len() <= MAX_AUDIT_EVENTS);
        }
    }
}
