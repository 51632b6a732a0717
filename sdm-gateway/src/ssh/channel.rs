//! One channel carried through the gateway: the client's channel and the resource's, joined.
//! Data, extended data (stderr), end of file and close pass each way, in order, each direction
//! in its own task so that one side's full window never stops the other; exit status and
//! signals come back to the client; the resource's answers to requests go to the client-side
//! handler, which asked them (see `client_side`). When both directions are done, the channel's
//! end is written to the audit trail.

use std::sync::Arc;

use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, client, server};
use tokio::sync::mpsc;

use super::journal::Journal;

/// The client-side handler's hold on a joined channel: where to send the client's requests,
/// and the resource's answers to them, in order.
pub(super) struct Joined {
    pub(super) resource: Arc<ChannelWriteHalf<client::Msg>>,
    pub(super) answers: mpsc::Receiver<bool>,
}

/// Joins `client_channel` (accepted from the client) and `resource_channel` (opened on the
/// resource), and carries them until both are closed.
pub(super) fn join(
    client_channel: Channel<server::Msg>,
    client: server::Handle,
    resource_channel: Channel<client::Msg>,
    journal: Journal,
) -> Joined {
    let id = client_channel.id();
    let (mut from_client, to_client) = client_channel.split();
    let (mut from_resource, to_resource) = resource_channel.split();
    let to_resource = Arc::new(to_resource);
    // Answers are rare (one per request) and always awaited; room for a few never blocks.
    let (answer, answers) = mpsc::channel(8);

    let upward = {
        let to_resource = to_resource.clone();
        async move {
            let mut bytes = 0u64;
            while let Some(message) = from_client.wait().await {
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
        while let Some(message) = from_resource.wait().await {
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

    tokio::spawn(async move {
        let upward = tokio::spawn(upward);
        let (down, exit) = downward.await;
        let up = upward.await.unwrap_or_default();
        let exit = exit.unwrap_or_else(|| "no exit status".into());
        let _ = journal.write(format!(
            "channel {id} closed: {exit}; {up} bytes from the client, {down} bytes to it"
        ));
    });
    Joined {
        resource: to_resource,
        answers,
    }
}

/// How the audit trail names a channel.
pub(super) fn named(id: ChannelId, what: &str) -> String {
    format!("channel {id}: {what}")
}
