//! The commands' side of the agent protocol: a blocking client over the Unix socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sdm_core::ErrorKind;

use crate::exit::{CliError, Exit};
use crate::home::Home;
use crate::protocol::{
    BAD_REQUEST, ErrorReply, MAX_LINE, NOT_LOGGED_IN, PROTOCOL_VERSION, Reply, Request, RequestLine,
};

/// How long a quick request (ping) may take.
pub const QUICK: Duration = Duration::from_secs(10);
/// How long a request that calls the control plane may take (its own calls time out at 30 s;
/// `connect --all` connects in parallel).
pub const SLOW: Duration = Duration::from_secs(120);

/// A connection to the running agent.
#[derive(Debug)]
pub struct AgentClient {
    reader: BufReader<UnixStream>,
}

impl AgentClient {
    /// Connects to the agent, or `Ok(None)` when none runs (no socket, or a stale one).
    pub fn try_connect(home: &Home) -> Result<Option<AgentClient>, CliError> {
        let path = home.socket();
        match UnixStream::connect(&path) {
            Ok(stream) => Ok(Some(AgentClient {
                reader: BufReader::new(stream),
            })),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(CliError::agent(format!(
                "cannot reach the sdm agent at {}: {e}",
                path.display()
            ))),
        }
    }

    /// Connects to the agent; no agent is [`Exit::NotLoggedIn`].
    pub fn connect(home: &Home) -> Result<AgentClient, CliError> {
        AgentClient::try_connect(home)?.ok_or_else(|| not_running(home))
    }

    /// Sends `request` and reads its reply, within `timeout`. An error reply becomes the
    /// matching [`CliError`].
    pub fn request(&mut self, request: Request, timeout: Duration) -> Result<Reply, CliError> {
        let line = serde_json::to_string(&RequestLine {
            v: PROTOCOL_VERSION,
            request,
        })
        .map_err(|e| CliError::internal(format!("cannot encode a request: {e}")))?;
        let stream = self.reader.get_mut();
        stream
            .set_write_timeout(Some(timeout))
            .and_then(|()| stream.write_all(line.as_bytes()))
            .and_then(|()| stream.write_all(b"\n"))
            .and_then(|()| stream.flush())
            .map_err(|e| CliError::agent(format!("cannot send a request to the sdm agent: {e}")))?;
        let reply = self.read_line(timeout)?;
        let reply: Reply = serde_json::from_str(&reply).map_err(|e| {
            CliError::agent(format!(
                "the sdm agent answered something this sdm does not understand ({e}); \
                 restart it with `sdm logout` and `sdm login`"
            ))
        })?;
        match reply {
            Reply::Error(e) => Err(error_from_reply(&e)),
            other => Ok(other),
        }
    }

    /// Waits (at most `timeout`) until the agent closes the connection: after a logout, that
    /// is when it has let go of everything.
    pub fn wait_closed(mut self, timeout: Duration) -> Result<(), CliError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CliError::agent(
                    "the sdm agent did not stop in time after logging out",
                ));
            }
            self.reader
                .get_mut()
                .set_read_timeout(Some(left))
                .map_err(|e| CliError::agent(format!("socket error: {e}")))?;
            match self.reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {}
                // A reset means the agent is gone too.
                Err(_) => return Ok(()),
            }
        }
    }

    fn read_line(&mut self, timeout: Duration) -> Result<String, CliError> {
        self.reader
            .get_mut()
            .set_read_timeout(Some(timeout))
            .map_err(|e| CliError::agent(format!("socket error: {e}")))?;
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| {
                if is_timeout(&e) {
                    CliError::new(
                        Exit::Timeout,
                        format!(
                            "the sdm agent did not answer within {} s",
                            timeout.as_secs()
                        ),
                    )
                } else {
                    CliError::agent(format!("lost the connection to the sdm agent: {e}"))
                }
            })?;
        if read == 0 || line.last() != Some(&b'\n') {
            return Err(CliError::agent(
                "the sdm agent closed the connection without answering; see SDM_HOME/agent.log",
            ));
        }
        String::from_utf8(line)
            .map_err(|_| CliError::agent("the sdm agent answered with invalid UTF-8"))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// "Not logged in" because no agent runs for `home`.
pub fn not_running(home: &Home) -> CliError {
    CliError::new(
        Exit::NotLoggedIn,
        format!(
            "not logged in: no sdm agent is running for {}; run `sdm login`",
            home.dir().display()
        ),
    )
}

/// The [`CliError`] for an error reply of the agent.
pub fn error_from_reply(e: &ErrorReply) -> CliError {
    let exit = match e.kind.as_str() {
        NOT_LOGGED_IN => Exit::NotLoggedIn,
        BAD_REQUEST => Exit::Agent,
        kind => Exit::from_kind(ErrorKind::from_name(kind)),
    };
    CliError::new(exit, e.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_map_to_exit_codes() {
        let cases = [
            (NOT_LOGGED_IN, Exit::NotLoggedIn),
            (BAD_REQUEST, Exit::Agent),
            ("ambiguous_resource", Exit::Ambiguous),
            ("port_in_use", Exit::PortInUse),
            ("from_a_newer_agent", Exit::Internal),
        ];
        for (kind, exit) in cases {
            let e = error_from_reply(&ErrorReply::new(kind, "m"));
            assert_eq!(e.exit, exit, "{kind}");
        }
    }
}
