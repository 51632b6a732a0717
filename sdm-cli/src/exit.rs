//! Exit codes and the one error type of the command.
//!
//! Every failure ends as one line on stderr and one of the documented exit codes
//! (`README.md`, "Exit codes"). Codes are stable: a retired number is never reused.

use std::fmt;
use std::process::ExitCode;

use sdm_core::ErrorKind;

/// What a failure means to a script: each variant is one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// A bug or an unexpected condition (also any error kind this version does not know).
    Internal,
    /// The command line is wrong (clap's own errors use this code too).
    Usage,
    /// No agent runs, or it runs without a session: `sdm login` first.
    NotLoggedIn,
    /// The token is malformed, unknown, revoked or expired, its account suspended or deleted,
    /// or no token was given.
    NotAuthenticated,
    /// The account may not do this (a service token on an admin command).
    Forbidden,
    /// No granted resource (or open tunnel) matches the name.
    NotFound,
    /// The name matches several resources; the message lists them.
    Ambiguous,
    /// The control plane could not be reached.
    ApiUnreachable,
    /// No gateway could be reached.
    GatewayUnreachable,
    /// The gateway could not reach the resource.
    UpstreamRefused,
    /// The local port is taken.
    PortInUse,
    /// A call did not finish in time.
    Timeout,
    /// The session or tunnel was closed meanwhile.
    Closed,
    /// The server or the agent refused a value (a name taken, a bad host name, …).
    InvalidArgument,
    /// The server does not offer this feature yet.
    Unsupported,
    /// The local agent could not be started or reached, or answered something unexpected.
    Agent,
}

impl Exit {
    /// Every exit code, in code order (for the README table and its test).
    pub const ALL: [Exit; 16] = [
        Exit::Internal,
        Exit::Usage,
        Exit::NotLoggedIn,
        Exit::NotAuthenticated,
        Exit::Forbidden,
        Exit::NotFound,
        Exit::Ambiguous,
        Exit::ApiUnreachable,
        Exit::GatewayUnreachable,
        Exit::UpstreamRefused,
        Exit::PortInUse,
        Exit::Timeout,
        Exit::Closed,
        Exit::InvalidArgument,
        Exit::Unsupported,
        Exit::Agent,
    ];

    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Internal => 1,
            Exit::Usage => 2,
            Exit::NotLoggedIn => 3,
            Exit::NotAuthenticated => 4,
            Exit::Forbidden => 5,
            Exit::NotFound => 6,
            Exit::Ambiguous => 7,
            Exit::ApiUnreachable => 8,
            Exit::GatewayUnreachable => 9,
            Exit::UpstreamRefused => 10,
            Exit::PortInUse => 11,
            Exit::Timeout => 12,
            Exit::Closed => 13,
            Exit::InvalidArgument => 14,
            Exit::Unsupported => 15,
            Exit::Agent => 16,
        }
    }

    /// The exit code for an error kind of the library. Exhaustive over the kinds this version
    /// knows; a kind added later falls back to [`Exit::Internal`].
    pub fn from_kind(kind: ErrorKind) -> Exit {
        match kind {
            ErrorKind::InvalidToken | ErrorKind::Unauthenticated => Exit::NotAuthenticated,
            ErrorKind::Forbidden => Exit::Forbidden,
            ErrorKind::ResourceNotFound => Exit::NotFound,
            ErrorKind::AmbiguousResource => Exit::Ambiguous,
            ErrorKind::ApiUnreachable => Exit::ApiUnreachable,
            ErrorKind::GatewayUnreachable => Exit::GatewayUnreachable,
            ErrorKind::UpstreamRefused => Exit::UpstreamRefused,
            ErrorKind::PortInUse => Exit::PortInUse,
            ErrorKind::Timeout => Exit::Timeout,
            ErrorKind::Closed => Exit::Closed,
            ErrorKind::InvalidArgument => Exit::InvalidArgument,
            ErrorKind::Internal => Exit::Internal,
            _ => Exit::Internal,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// A failure of a command: the exit code and the one line printed on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// What happened and what to do, on one line.
    pub message: String,
}

impl CliError {
    /// An error with this exit code and message.
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
        }
    }

    /// An unexpected failure.
    pub fn internal(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Internal, message)
    }

    /// A failure talking to or starting the agent.
    pub fn agent(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Agent, message)
    }

    /// The message as one line: line breaks (which a server message should not carry, but a
    /// peer controls) become spaces, and other control characters are written out (`\x1b`).
    pub fn line(&self) -> String {
        let line = self
            .message
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        crate::render::escape(&line).into_owned()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl From<sdm_core::Error> for CliError {
    fn from(e: sdm_core::Error) -> CliError {
        // The library's messages already name the candidates of an ambiguous name.
        CliError::new(Exit::from_kind(e.kind()), e.message())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        let unique: HashSet<u8> = codes.iter().copied().collect();
        assert_eq!(unique.len(), Exit::ALL.len());
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
        assert!(!codes.contains(&0));
    }

    #[test]
    fn every_error_kind_has_its_code() {
        let expected = [
            (ErrorKind::InvalidToken, 4),
            (ErrorKind::Unauthenticated, 4),
            (ErrorKind::Forbidden, 5),
            (ErrorKind::ResourceNotFound, 6),
            (ErrorKind::AmbiguousResource, 7),
            (ErrorKind::ApiUnreachable, 8),
            (ErrorKind::GatewayUnreachable, 9),
            (ErrorKind::UpstreamRefused, 10),
            (ErrorKind::PortInUse, 11),
            (ErrorKind::Timeout, 12),
            (ErrorKind::Closed, 13),
            (ErrorKind::InvalidArgument, 14),
            (ErrorKind::Internal, 1),
        ];
        assert_eq!(
            expected.len(),
            ErrorKind::ALL.len(),
            "a new kind needs a row"
        );
        for (kind, code) in expected {
            assert_eq!(Exit::from_kind(kind).code(), code, "{kind}");
        }
    }

    #[test]
    fn messages_print_on_one_line() {
        let e = CliError::new(Exit::Internal, "first\nsecond\r\n  third ");
        assert_eq!(e.to_string(), "first second third");
    }

    #[test]
    fn help_lists_every_code() {
        for exit in Exit::ALL {
            let row = format!("\n{:>4}  ", exit.code());
            assert!(
                crate::cli::EXIT_CODES.contains(&row),
                "sdm --help lacks {exit:?}"
            );
        }
    }

    #[test]
    fn the_readme_documents_every_code() {
        let readme = include_str!("../README.md");
        for exit in Exit::ALL {
            let row = format!("| {} |", exit.code());
            assert!(readme.contains(&row), "README lacks the row for {exit:?}");
        }
    }
}
