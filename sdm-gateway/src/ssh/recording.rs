//! Recording a terminal session (a channel with a pty, when the resource asks for it) as an
//! asciicast v2 file, one line at a time into the audit trail: the header when the shell or
//! command starts, then what the terminal shows (`"o"`) and its size changes (`"r"`). Each line
//! is written before the output it holds reaches the client, so that a trail that cannot take
//! it ends the session instead of letting it go on unrecorded. Keystrokes are not recorded:
//! a terminal echoes what should be seen, and not what should not (passwords).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::json;

use super::journal::Journal;
use crate::AuditUnavailable;

/// Output is cut into events of at most this many bytes, so that every line stays small
/// (a standalone gateway uploads lines in batches of bounded size).
const MAX_EVENT_BYTES: usize = 4096;

/// The terminal a client asked for with its pty.
#[derive(Debug, Clone)]
pub(super) struct Terminal {
    pub(super) term: String,
    pub(super) width: u32,
    pub(super) height: u32,
}

/// A channel's recording, once its session starts one: shared by the handler, which starts it
/// and records size changes, and the channel's downward task, which records output.
pub(super) type Slot = Arc<Mutex<Option<Recording>>>;

/// Records `data` in the slot's recording, if there is one, once the trail has room for it.
pub(super) async fn record_output(slot: &Slot, data: &[u8]) -> Result<(), AuditUnavailable> {
    let recording = || slot.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(journal) = recording().as_ref().map(|r| r.journal.clone()) else {
        return Ok(());
    };
    journal.room_for_recording().await?;
    match recording().as_mut() {
        Some(recording) => recording.output(data),
        None => Ok(()),
    }
}

/// One channel's recording under way.
pub(super) struct Recording {
    journal: Journal,
    channel: u32,
    started: Instant,
    /// Lines written so far (the header is line 0).
    lines: u64,
    /// The start of a UTF-8 character whose rest is still to come.
    partial: Vec<u8>,
}

impl Recording {
    /// Starts a recording by writing its header; `what` names the session (`shell`, a
    /// command). An error: the header cannot be kept, and the session must not start.
    pub(super) fn start(
        journal: Journal,
        channel: u32,
        terminal: &Terminal,
        what: &str,
    ) -> Result<Recording, AuditUnavailable> {
        let header = json!({
            "version": 2,
            "width": terminal.width,
            "height": terminal.height,
            "timestamp": sdm_proto::unix_now(),
            "env": { "TERM": terminal.term },
            "title": format!("channel {channel}: {what}"),
        });
        journal.record_line(channel, 0, header.to_string())?;
        Ok(Recording {
            journal,
            channel,
            started: Instant::now(),
            lines: 1,
            partial: Vec::new(),
        })
    }

    /// Records what the terminal shows next. Bytes that are not UTF-8 are shown as U+FFFD; a
    /// character split between two messages is kept whole.
    pub(super) fn output(&mut self, data: &[u8]) -> Result<(), AuditUnavailable> {
        let mut bytes = std::mem::take(&mut self.partial);
        bytes.extend_from_slice(data);
        let text = self.decode(&bytes);
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_EVENT_BYTES);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (event, after) = rest.split_at(cut);
            self.event("o", event)?;
            rest = after;
        }
        Ok(())
    }

    /// Records that the terminal changed size.
    pub(super) fn resize(&mut self, width: u32, height: u32) -> Result<(), AuditUnavailable> {
        self.event("r", &format!("{width}x{height}"))
    }

    fn event(&mut self, code: &str, data: &str) -> Result<(), AuditUnavailable> {
        // Microseconds are what asciicast players resolve; more digits would be noise.
        let at = self.started.elapsed().as_micros() as f64 / 1e6;
        let line = json!([at, code, data]).to_string();
        self.journal.record_line(self.channel, self.lines, line)?;
        self.lines += 1;
        Ok(())
    }

    /// The text of `bytes`, leaving an incomplete last character in `partial`.
    fn decode(&mut self, bytes: &[u8]) -> String {
        let mut text = String::with_capacity(bytes.len());
        let mut rest = bytes;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Checked by from_utf8 just now.
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            self.partial = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sdm_proto::audit::AuditEvent;
    use uuid::Uuid;

    use super::*;
    use crate::AuditSink;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl AuditSink for Lines {
        fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
            if let AuditEvent::Recording(line) = event {
                self.0.lock().unwrap().push(line.line);
            }
            Ok(())
        }
    }

    fn recording() -> (Recording, Arc<Lines>) {
        let lines = Arc::new(Lines::default());
        let journal = Journal::new(lines.clone(), Uuid::nil());
        let terminal = Terminal {
            term: "xterm".into(),
            width: 80,
            height: 24,
        };
        let recording = Recording::start(journal, 3, &terminal, "shell").unwrap();
        (recording, lines)
    }

    fn events(lines: &Lines) -> Vec<(String, String)> {
        lines.0.lock().unwrap()[1..]
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v[1].as_str().unwrap().into(), v[2].as_str().unwrap().into())
            })
            .collect()
    }

    #[test]
    fn the_header_and_events_are_asciicast_v2() {
        let (mut recording, lines) = recording();
        recording.output(b"$ ls\r\n").unwrap();
        recording.resize(100, 30).unwrap();
        let header: serde_json::Value = serde_json::from_str(&lines.0.lock().unwrap()[0]).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(
            (header["width"].as_u64(), header["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert_eq!(header["env"]["TERM"], "xterm");
        assert_eq!(header["title"], "channel 3: shell");
        assert_eq!(
            events(&lines),
            [
                ("o".into(), "$ ls\r\n".into()),
                ("r".into(), "100x30".into())
            ]
        );
    }

    #[test]
    fn characters_split_at_every_byte_come_out_whole() {
        let text = "naïve ✓ 🦀 done";
        for split in 0..=text.len() {
            let (mut recording, lines) = recording();
            let (a, b) = text.as_bytes().split_at(split);
            recording.output(a).unwrap();
            recording.output(b).unwrap();
            let shown: String = events(&lines).into_iter().map(|(_, t)| t).collect();
            assert_eq!(shown, text, "split at {split}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_and_long_output_is_cut() {
        let (mut recording, lines) = recording();
        recording.output(b"a\xffb").unwrap();
        let long = "é".repeat(MAX_EVENT_BYTES);
        recording.output(long.as_bytes()).unwrap();
        let events = events(&lines);
        assert_eq!(events[0].1, "a\u{fffd}b");
        assert!(events[1..].iter().all(|(_, t)| t.len() <= MAX_EVENT_BYTES));
        let rest: String = events[1..].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(rest, long);
    }

    #[test]
    fn a_trail_that_cannot_take_a_line_is_an_error() {
        struct Full;
        impl AuditSink for Full {
            fn record(&self, _: AuditEvent) -> Result<(), AuditUnavailable> {
                Err(AuditUnavailable("the disk is full".into()))
            }
        }
        let journal = Journal::new(Arc::new(Full), Uuid::nil());
        let terminal = Terminal {
            term: "xterm".into(),
            width: 80,
            height: 24,
        };
        assert!(Recording::start(journal, 0, &terminal, "shell").is_err());
    }
}
