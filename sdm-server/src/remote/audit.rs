//! [`audit_uploader`]: the standalone gateway's audit events, queued and uploaded to the
//! control plane in batches by one background task, so that recording never waits on the
//! network.
//!
//! A batch that fails to upload (the control plane unreachable or failing) is kept and sent
//! again with backoff, in order, until it is taken; meanwhile the queue reports the failure and
//! the gateway refuses connections (see [`AuditPolicy`]). Under sustained traffic a batch is
//! uploaded at most every 25 ms (see [`AuditBatches`]).

use std::time::Duration;

use sdm_proto::api::routes;
use sdm_proto::audit::AuditEvent;
use sdm_proto::gateway::{MAX_AUDIT_BODY_BYTES, MAX_AUDIT_EVENTS};
use tokio::task::JoinHandle;

use super::client::{CallError, SharedControlPlane, backoff};
use crate::gateway::{AuditBatches, AuditPolicy, AuditQueue, audit_queue};

/// Events read from the queue at once.
const READ: usize = 2048;
/// Upload bodies stay under this (the control plane accepts up to [`MAX_AUDIT_BODY_BYTES`]).
const BODY_TARGET: usize = MAX_AUDIT_BODY_BYTES / 2;
/// At shutdown, a batch that cannot be uploaded is given up after this many attempts.
const ATTEMPTS_WHILE_CLOSING: u32 = 4;
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Retries back off up to this.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// A queue for the gateway's audit events and the task that uploads them to the control plane;
/// the task ends after every queue handle is dropped and what was queued is uploaded (or, when
/// the control plane cannot be reached at shutdown, given up and counted).
pub(crate) fn audit_uploader(
    control_plane: SharedControlPlane,
    policy: AuditPolicy,
) -> (AuditQueue, JoinHandle<()>) {
    let (queue, batches) = audit_queue(policy);
    (queue, tokio::spawn(upload_loop(control_plane, batches)))
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

async fn upload_loop(control_plane: SharedControlPlane, mut batches: AuditBatches) {
    while let Some(events) = batches.next(READ).await {
        for (count, body) in bodies(events) {
            upload(&control_plane, &batches, count, body).await;
        }
    }
    batches.finish("this gateway");
}

/// Uploads one body of `count` events, retrying until the control plane takes it. Only a body
/// the control plane refuses as invalid is given up (logged and counted: retrying cannot help),
/// and, at shutdown, one it cannot be reached for.
async fn upload(
    control_plane: &SharedControlPlane,
    batches: &AuditBatches,
    count: usize,
    body: Vec<u8>,
) {
    let mut attempt = 0u32;
    loop {
        let why = match control_plane
            .post_raw(routes::GATEWAY_AUDIT, Some(body.clone()), UPLOAD_TIMEOUT)
            .await
        {
            Ok(()) => {
                batches.written();
                return;
            }
            Err(CallError::Refused {
                status, message, ..
            }) if matches!(status, 400 | 413 | 422) => {
                tracing::error!(status, %message, lost = count, "the control plane refused audit events as invalid; they are lost");
                batches.lost(count);
                return;
            }
            Err(e) => e.to_string(),
        };
        attempt = attempt.saturating_add(1);
        if batches.closing() && attempt >= ATTEMPTS_WHILE_CLOSING {
            tracing::error!(reason = %why, lost = count, "audit events could not be uploaded at shutdown; they are lost");
            batches.lost(count);
            return;
        }
        batches.failed(&format!("uploading to the control plane failed: {why}"));
        tokio::time::sleep(backoff(
            attempt - 1,
            Duration::from_millis(250),
            MAX_RETRY_WAIT,
        ))
        .await;
    }
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
