//! `sdm admin audit replay ID`: a recorded terminal session played back as it was shown, with
//! its timing (pauses shortened to `--idle-limit`), or printed as its asciicast v2 file
//! (`--cast`). The pages are fetched as the playback goes, so a long recording starts at once.

use std::io::Write;
use std::time::Duration;

use sdm_core::admin::AdminClient;

use crate::cli::ReplayArgs;
use crate::exit::{CliError, Exit};
use crate::render::print_json;

pub(crate) async fn replay(
    client: &AdminClient,
    args: ReplayArgs,
    json: bool,
) -> Result<(), CliError> {
    let mut player = Player {
        speed: args.speed,
        idle_limit: args.idle_limit,
        at: 0.0,
    };
    let mut channel = args.channel;
    let mut after = None;
    let mut all = Vec::new();
    loop {
        let page = client.audit_recording(&args.id, channel, after).await?;
        if page.channel.is_none() {
            return Err(CliError::new(
                Exit::NotFound,
                format!(
                    "connection {} has no recorded terminal session (recording is set per ssh \
                     resource: `sdm admin servers update NAME --record-sessions`)",
                    args.id
                ),
            ));
        }
        channel = page.channel;
        for line in page.lines {
            if json {
                all.push(line);
            } else if args.cast {
                if !write(format!("{line}\n").as_bytes()) {
                    return Ok(());
                }
            } else if !player.play(&line).await? {
                return Ok(());
            }
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if json {
        return print_json(&serde_json::json!({ "channel": channel, "lines": all }));
    }
    Ok(())
}

/// Plays events as they come, at the recorded pace.
struct Player {
    speed: f64,
    idle_limit: f64,
    /// The time of the last event played, in the recording.
    at: f64,
}

impl Player {
    /// Plays one line of the file (the header is skipped); false when stdout is gone.
    async fn play(&mut self, line: &str) -> Result<bool, CliError> {
        let Ok(serde_json::Value::Array(event)) = serde_json::from_str(line) else {
            return Ok(true); // the header, an object
        };
        let (Some(at), Some(code), Some(data)) = (
            event.first().and_then(serde_json::Value::as_f64),
            event.get(1).and_then(serde_json::Value::as_str),
            event.get(2).and_then(serde_json::Value::as_str),
        ) else {
            return Err(CliError::new(
                Exit::InvalidArgument,
                "the recording holds an event that is not [time, code, data]",
            ));
        };
        let pause = (at - self.at).clamp(0.0, self.idle_limit) / self.speed;
        self.at = at;
        if pause > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        }
        // Output only: a size change is the viewer's terminal's business.
        Ok(code != "o" || write(data.as_bytes()))
    }
}

/// Writes to stdout as it is; false when nobody reads it any more.
fn write(bytes: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).is_ok()
}
