//! The one error type of the client.

use std::time::Duration;

use sdm_proto::addr::AddrError;
use sdm_proto::error::ApiError;

/// Why a call (or setting up the client) failed.
///
/// The transport failures ([`Unreachable`](Error::Unreachable), [`Timeout`](Error::Timeout),
/// [`TooLarge`](Error::TooLarge)) and [`Answered`](Error::Answered) carry the control plane URL;
/// callers word the message their users read from these facts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A control plane URL is not `https://host[:port][/prefix]`.
    #[error("control plane URL {url:?} {why}; give it as https://host:port")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: AddrError,
    },
    /// A control plane URL's host is neither a DNS name nor an IP address.
    #[error("control plane URL {url:?} has an invalid host")]
    InvalidHost {
        /// The URL as given.
        url: String,
    },
    /// No control plane URL was given.
    #[error("no control plane URL given")]
    NoUrl,
    /// The token cannot be sent in an HTTP header.
    #[error("the token contains invalid characters")]
    Token,
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// The request body could not be encoded as JSON.
    #[error("cannot encode the request")]
    Encode(#[source] serde_json::Error),
    /// No answer: the connection, the TLS handshake or the exchange failed.
    #[error("cannot reach the control plane at {url}: {detail}")]
    Unreachable {
        /// The control plane URL.
        url: String,
        /// What failed, for a person (`connection refused`, `TLS handshake failed: …`).
        detail: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// No complete answer within the time allowed.
    #[error("the control plane at {url} did not answer within {after:?}")]
    Timeout {
        /// The control plane URL.
        url: String,
        /// The time allowed.
        after: Duration,
    },
    /// The answer was longer than the client accepts.
    #[error("the control plane at {url} sent an answer larger than {limit} bytes")]
    TooLarge {
        /// The control plane URL.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The control plane answered, but not with success (after the retries that apply).
    #[error("the control plane at {url} answered HTTP {status}: {}", describe(error.as_ref()))]
    Answered {
        /// The control plane URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The sdm error body, if the answer had one.
        error: Option<ApiError>,
        /// How often the request was sent.
        attempts: u32,
    },
    /// A successful answer that is not the JSON expected.
    #[error(
        "the control plane at {url} sent an answer this client cannot read (a version mismatch?)"
    )]
    Undecodable {
        /// The control plane URL.
        url: String,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
}

fn describe(error: Option<&ApiError>) -> String {
    match error {
        Some(e) => format!("{}: {}", e.kind, e.message),
        None => "no error description".to_owned(),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
