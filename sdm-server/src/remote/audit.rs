//! [`audit_uploader`]: the standalone gateway's audit events, queued and uploaded to the
//! control plane in batches by the gateway's writing task (see [`spawn_audit_writer`]), so that
//! recording never waits on the network.
//!
//! A batch that fails to upload (the control plane unreachable or failing) is kept and sent
//! again with backoff, in order, until it is taken; meanwhile the queue reports the failure and
//! the gateway refuses connections (see [`AuditPolicy`]). A body the control plane refuses as
//! invalid (400, 413, 422) is given up, logged and counted: sending it again cannot help.

use std::time::Duration;

use sdm_gateway::{AuditPolicy, AuditQueue, AuditWriter, Retry, WriteError, spawn_audit_writer};
use sdm_proto::api::routes;
use sdm_proto::audit::AuditEvent;
use sdm_proto::gateway::{MAX_AUDIT_BODY_BYTES, MAX_AUDIT_EVENTS};
use tokio::task::JoinHandle;

use super::client::{CallError, SharedControlPlane};

/// Upload bodies stay under this (the control plane accepts up to [`MAX_AUDIT_BODY_BYTES`]).
const BODY_TARGET: usize = MAX_AUDIT_BODY_BYTES / 2;
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// A queue for the gateway's audit events and the task that uploads them to the control plane;
/// the task ends after every queue handle is dropped and what was queued is uploaded (or, when
/// the control plane cannot be reached at shutdown, given up and counted).
pub(crate) fn audit_uploader(
    control_plane: SharedControlPlane,
    policy: AuditPolicy,
) -> (AuditQueue, JoinHandle<()>) {
    spawn_audit_writer(Uploader(control_plane), policy)
}

/// Uploads each batch as one body.
struct Uploader(SharedControlPlane);

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
        match self
            .0
            .post_raw(routes::GATEWAY_AUDIT, Some(body.clone()), UPLOAD_TIMEOUT)
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
