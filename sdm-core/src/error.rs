//! The one error type of the client library.

use std::fmt;

pub use sdm_proto::ErrorKind;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An sdm error: a [`kind`](Error::kind) to branch on, a message for people, and the
/// underlying cause (if any) as [`source`](std::error::Error::source).
///
/// Messages say what failed and what to do, e.g. (kind `api_unreachable`)
/// `Unable to contact sdm API at https://127.0.0.1:8443: connection refused`.
#[derive(thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    message: String,
    candidates: Vec<String>,
    #[source]
    source: Option<Source>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with this message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            candidates: Vec::new(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Error {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_candidates(mut self, candidates: Vec<String>) -> Error {
        self.candidates = candidates;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the cause chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    /// Whether this answer takes access away for good (token or account refused, grant or
    /// resource gone, session ended), as opposed to a failure to ask (unreachable, throttled,
    /// a server error): only such an answer closes a tunnel.
    pub(crate) fn ends_access(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unauthenticated
                | ErrorKind::InvalidToken
                | ErrorKind::Forbidden
                | ErrorKind::ResourceNotFound
                | ErrorKind::Closed
        )
    }

    /// For [`ErrorKind::AmbiguousResource`]: the resource names that matched.
    pub fn candidates(&self) -> &[String] {
        &self.candidates
    }

    pub(crate) fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn closed(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Closed, message)
    }

    /// A copy without the source (sources are not `Clone`); used to report one failure to many.
    pub(crate) fn detached(&self) -> Error {
        Error {
            kind: self.kind,
            message: self.message.clone(),
            candidates: self.candidates.clone(),
            source: None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if !self.candidates.is_empty() {
            d.field("candidates", &self.candidates);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

/// A short, human description of an I/O failure ("connection refused", "timed out").
pub(crate) use sdm_proto::error::describe_io;
