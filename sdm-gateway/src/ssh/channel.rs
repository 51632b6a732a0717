//! One channel carried through the gateway: the client's channel and the resource's, joined.
//! Data, extended data (stderr), end of file and close pass each way, in order, each direction
//! in its own task so that one side's full window never stops the other; exit status and
//! signals come back to the client; the resource's answers to requests go to the client-side
//! handler, which asked them (see `client_side`). When both directions are done, the channel's
//! end is written to the audit trail.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client, server};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::journal::Journal;
use super::recording::{self, Slot, Terminal};

/// A connection's backlog each way.
#[derive(Clone, Default)]
pub(super) struct Backlogs {
    /// From the client, not yet sent to the resource.
    pub(super) upward: Arc<Backlog>,
    /// From the resource, not yet sent to the client.
    pub(super) downward: Arc<Backlog>,
}

/// The client-side handler's hold on a joined channel: where to send the client's requests,
/// and the resource's answers to them, in order.
pub(super) struct Joined {
    pub(super) resource: Arc<ChannelWriteHalf<client::Msg>>,
    pub(super) answers: mpsc::Receiver<bool>,
    /// The terminal the client asked for, if it did.
    pub(super) terminal: Option<Terminal>,
    /// The session's recording, once one started.
    pub(super) recording: Slot,
}

/// What the client is told when its terminal's output cannot be recorded.
const NOT_RECORDED: &[u8] =
    b"\r\nsdm: the audit trail cannot record this session, so it is closed\r\n";

/// Joins `client_channel` (accepted from the client) and `resource_channel` (opened on the
/// resource), and carries them until both are closed.
pub(super) fn join(
    client_channel: Channel<server::Msg>,
    client: server::Handle,
    resource_channel: Channel<client::Msg>,
    backlogs: &Backlogs,
    journal: Journal,
) -> Joined {
    let id = client_channel.id();
    let (from_client, to_client) = client_channel.split();
    let (from_resource, to_resource) = resource_channel.split();
    let mut from_client = queued(from_client, backlogs.upward.clone());
    let mut from_resource = queued(from_resource, backlogs.downward.clone());
    let to_resource = Arc::new(to_resource);
    // Answers are rare (one per request) and always awaited; room for a few never blocks.
    let (answer, answers) = mpsc::channel(8);
    let recording = Slot::default();
    let output_recording = recording.clone();

    let upward = {
        let to_resource = to_resource.clone();
        async move {
            let mut bytes = 0u64;
            // Each message's room in the queue is given back once it is sent on.
            while let Some((message, _room)) = from_client.recv().await {
                let sent = match message {
                    ChannelMsg::Data { data } => {
                        bytes += data.len() as u64;
                        to_resource.data_bytes(data).await
                    }
                    ChannelMsg::ExtendedData { data, ext } => {
                        bytes += data.len() as u64;
                        to_resource.extended_data_bytes(ext, data).await
                    }
                    ChannelMsg::Eof => to_resource.eof().await,
                    ChannelMsg::Close => break,
                    // Requests are answered by the handler (in order with the rest of the
                    // session), not here.
                    _ => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
            let _ = to_resource.close().await;
            bytes
        }
    };

    let downward = async move {
        let mut bytes = 0u64;
        let mut exit = None;
        while let Some((message, _room)) = from_resource.recv().await {
            if let ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } = &message {
                // Recorded before the client sees it; if it cannot be, the client does not.
                if let Err(why) = recording::record_output(&output_recording, data).await {
                    tracing::warn!(reason = %why, "a recorded ssh session was closed: the audit trail cannot record it");
                    exit = Some(format!(
                        "closed: its recording could not be written ({why})"
                    ));
                    let _ = to_client.extended_data_bytes(1, NOT_RECORDED).await;
                    break;
                }
            }
            let sent = match message {
                ChannelMsg::Data { data } => {
                    bytes += data.len() as u64;
                    to_client.data_bytes(data).await.is_ok()
                }
                ChannelMsg::ExtendedData { data, ext } => {
                    bytes += data.len() as u64;
                    to_client.extended_data_bytes(ext, data).await.is_ok()
                }
                ChannelMsg::Eof => to_client.eof().await.is_ok(),
                ChannelMsg::ExitStatus { exit_status } => {
                    exit = Some(format!("exit status {exit_status}"));
                    to_client.exit_status(exit_status).await.is_ok()
                }
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                } => {
                    exit = Some(format!("killed by signal {signal_name:?}"));
                    client
                        .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                        .await
                        .is_ok()
                }
                ChannelMsg::Success => answer.try_send(true).is_ok(),
                ChannelMsg::Failure => answer.try_send(false).is_ok(),
                ChannelMsg::Close => break,
                _ => true,
            };
            if !sent {
                break;
            }
        }
        let _ = to_client.close().await;
        (bytes, exit)
    };

    journal.opened();
    tokio::spawn(async move {
        let upward = tokio::spawn(upward);
        let (down, exit) = downward.await;
        let up = upward.await.unwrap_or_default();
        let exit = exit.unwrap_or_else(|| "no exit status".into());
        let _ = journal.write(format!(
            "channel {id} closed: {exit}; {up} bytes from the client, {down} bytes to it"
        ));
        journal.closed();
    });
    Joined {
        resource: to_resource,
        answers,
        terminal: None,
        recording,
    }
}

/// The window each session grants its peer for a channel when nothing is waiting (russh's
/// default, OpenSSH's too).
pub(super) const WINDOW: u32 = 2 * 1024 * 1024;
/// The least window granted while the other side lags: enough to keep the sender going (russh
/// grants window only as packets arrive), too little to pile up.
const TRICKLE: u32 = 1024;
/// Bytes one direction of a connection may hold before its session stops reading: a last
/// bound, reached only when a sender keeps going against [`TRICKLE`] for a long while.
const QUEUED_BYTES: usize = 4 * WINDOW as usize;

/// Bytes of one direction of a connection taken from one session and not yet given to the
/// other.
///
/// russh grants its peer more window as packets arrive, not as they are sent on, and a
/// session stops reading altogether while a channel's packets wait for room. A relay that let
/// packets wait there would stall for good once both directions are busy (`cat` echoing a
/// stream back: see `a_stream_echoed_back_while_it_is_sent_does_not_stall…`). So packets are
/// taken at once into a queue, and the window each session grants next is what a full window
/// leaves after this backlog (`Handler::adjust_window`): the peer sends no faster than the
/// other side takes, and both sessions keep reading, hearing the window the other side grants.
#[derive(Default)]
pub(super) struct Backlog(AtomicUsize);

impl Backlog {
    /// The window to grant next.
    pub(super) fn window(&self) -> u32 {
        let held = u32::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        WINDOW.saturating_sub(held).max(TRICKLE)
    }
}

/// A message in the queue, holding its place in the backlog until it is sent on or dropped.
struct Held {
    backlog: Arc<Backlog>,
    size: usize,
    _room: Option<OwnedSemaphorePermit>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.backlog.0.fetch_sub(self.size, Ordering::Relaxed);
    }
}

/// A channel's messages as they arrive, each holding its place in the backlog.
type Queue = mpsc::UnboundedReceiver<(ChannelMsg, Held)>;

fn queued(mut from: ChannelReadHalf, backlog: Arc<Backlog>) -> Queue {
    let (queue, queued) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(QUEUED_BYTES));
    tokio::spawn(async move {
        while let Some(message) = from.wait().await {
            let size = match &message {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    data.len().min(QUEUED_BYTES)
                }
                _ => 0,
            };
            let room = match u32::try_from(size) {
                Ok(0) | Err(_) => None,
                Ok(size) => match room.clone().acquire_many_owned(size).await {
                    Ok(room) => Some(room),
                    Err(_) => break,
                },
            };
            backlog.0.fetch_add(size, Ordering::Relaxed);
            let held = Held {
                backlog: backlog.clone(),
                size,
                _room: room,
            };
            if queue.send((message, held)).is_err() {
                break;
            }
        }
    });
    queued
}

/// How the audit trail names a channel.
pub(super) fn named(id: ChannelId, what: &str) -> String {
    format!("channel {id}: {what}")
}
