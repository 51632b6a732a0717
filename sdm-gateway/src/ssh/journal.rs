//! What an SSH connection leaves in the audit trail besides its record: one line per channel
//! when it starts (the command line, the subsystem, the forwarded address), written before the
//! request is sent on, and one when it ends (exit status, bytes each way). They are the
//! connection's "queries", so every listing of a connection's statements shows them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecordingEvent};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{AuditSink, AuditUnavailable};

/// How long a recorded session waits for room in the audit trail before it is closed.
const ROOM_WAIT: Duration = Duration::from_secs(30);
/// How often it looks meanwhile.
const ROOM_POLL: Duration = Duration::from_millis(10);

/// The audit lines of one connection, numbered in the order they were written.
#[derive(Clone)]
pub(super) struct Journal {
    sink: Arc<dyn AuditSink>,
    connection_id: Uuid,
    written: Arc<AtomicU64>,
    /// Channels whose last line is still to be written.
    open: Arc<watch::Sender<usize>>,
}

impl Journal {
    pub(super) fn new(sink: Arc<dyn AuditSink>, connection_id: Uuid) -> Journal {
        Journal {
            sink,
            connection_id,
            written: Arc::default(),
            open: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Writes one line; an error means it cannot be kept, and what it describes must not happen.
    pub(super) fn write(&self, text: String) -> Result<(), AuditUnavailable> {
        let seq = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        self.sink.record(AuditEvent::Query(AuditQueryEvent {
            connection_id: self.connection_id,
            seq,
            at: sdm_proto::unix_now(),
            text,
        }))
    }

    /// Writes line `seq` of channel `channel`'s recording (see `recording`); an error means it
    /// cannot be kept, and what it shows must not reach the client.
    pub(super) fn record_line(
        &self,
        channel: u32,
        seq: u64,
        line: String,
    ) -> Result<(), AuditUnavailable> {
        self.sink.record(AuditEvent::Recording(AuditRecordingEvent {
            connection_id: self.connection_id,
            channel,
            seq,
            line,
        }))
    }

    /// Waits until the trail has room for recording lines (see
    /// [`AuditSink::has_room_for_bulk`]); an error when it has had none for [`ROOM_WAIT`].
    pub(super) async fn room_for_recording(&self) -> Result<(), AuditUnavailable> {
        let since = tokio::time::Instant::now();
        while !self.sink.has_room_for_bulk() {
            if since.elapsed() >= ROOM_WAIT {
                return Err(AuditUnavailable(format!(
                    "the audit trail has had no room for this session's recording for {ROOM_WAIT:?}"
                )));
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
        Ok(())
    }

    /// A channel opened: its last line is to come.
    pub(super) fn opened(&self) {
        self.open.send_modify(|open| *open += 1);
    }

    /// A channel's last line was written.
    pub(super) fn closed(&self) {
        self.open.send_modify(|open| *open = open.saturating_sub(1));
    }

    /// Waits until every channel has written its last line, so that the connection's end is
    /// recorded after them.
    pub(super) async fn all_closed(&self) {
        let _ = self.open.subscribe().wait_for(|open| *open == 0).await;
    }

    /// Lines written so far.
    pub(super) fn lines(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

/// A command line as the audit trail shows it: the bytes the client sent, with anything that is
/// not UTF-8 replaced (a command is bytes in SSH).
pub(super) fn command_line(command: &[u8]) -> String {
    String::from_utf8_lossy(command).into_owned()
}
