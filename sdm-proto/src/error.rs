//! The error kinds every sdm surface shares, and the API's error body.

use serde::{Deserialize, Serialize};

/// An error and its sources on one line, `what: why: root cause`, for messages and logs.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A socket error as a person reads it: `connection refused`, `connection reset`, … rather than
/// `Connection refused (os error 111)`; other errors by their own text.
pub fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "timed out".into(),
        K::UnexpectedEof => "connection closed unexpectedly".into(),
        K::AddrNotAvailable => "address not available".into(),
        _ => match e.get_ref() {
            Some(inner) => inner.to_string(),
            None => e.to_string(),
        },
    }
}

/// What went wrong, independent of the language a caller uses.
///
/// The numeric [`code`](ErrorKind::code) of a kind never changes and is never reused; the C
/// `sdm_status` values and Python exception classes are derived from it. New kinds may be added,
/// so matches outside this crate need a fallback arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token is not an sdm token (bad prefix, encoding or checksum).
    InvalidToken,
    /// The token is well formed but unknown, revoked, expired, or its account is suspended or deleted.
    Unauthenticated,
    /// The account may not do this (for example: use an admin endpoint, or a resource it lost).
    Forbidden,
    /// No resource of that name (or id) is visible to the account.
    ResourceNotFound,
    /// A substring matched more than one resource; the message lists the candidates.
    AmbiguousResource,
    /// The control plane could not be reached.
    ApiUnreachable,
    /// No gateway for the resource could be reached.
    GatewayUnreachable,
    /// The gateway reached no upstream service (refused, unreachable or failed to log in).
    UpstreamRefused,
    /// The requested local port is already taken.
    PortInUse,
    /// An operation did not finish within its time limit.
    Timeout,
    /// The session or tunnel was closed.
    Closed,
    /// The caller passed something unusable (empty name, bad option, malformed request).
    InvalidArgument,
    /// A bug or an unexpected condition; the message has details.
    Internal,
}

impl ErrorKind {
    /// Every kind, in code order.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::InvalidToken,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::ResourceNotFound,
        ErrorKind::AmbiguousResource,
        ErrorKind::ApiUnreachable,
        ErrorKind::GatewayUnreachable,
        ErrorKind::UpstreamRefused,
        ErrorKind::PortInUse,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::InvalidArgument,
        ErrorKind::Internal,
    ];

    /// The stable snake_case name used in JSON, logs and Python (`"invalid_token"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidToken => "invalid_token",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::ResourceNotFound => "resource_not_found",
            ErrorKind::AmbiguousResource => "ambiguous_resource",
            ErrorKind::ApiUnreachable => "api_unreachable",
            ErrorKind::GatewayUnreachable => "gateway_unreachable",
            ErrorKind::UpstreamRefused => "upstream_refused",
            ErrorKind::PortInUse => "port_in_use",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Internal => "internal",
        }
    }

    /// The stable number of this kind (1-based; 0 means success in the C ABI).
    pub fn code(self) -> u16 {
        match self {
            ErrorKind::InvalidToken => 1,
            ErrorKind::Unauthenticated => 2,
            ErrorKind::Forbidden => 3,
            ErrorKind::ResourceNotFound => 4,
            ErrorKind::AmbiguousResource => 5,
            ErrorKind::ApiUnreachable => 6,
            ErrorKind::GatewayUnreachable => 7,
            ErrorKind::UpstreamRefused => 8,
            ErrorKind::PortInUse => 9,
            ErrorKind::Timeout => 10,
            ErrorKind::Closed => 11,
            ErrorKind::InvalidArgument => 12,
            ErrorKind::Internal => 13,
        }
    }

    /// The kind with this [`code`](ErrorKind::code); unknown codes (from a newer peer) are `Internal`.
    pub fn from_code(code: u16) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .unwrap_or(ErrorKind::Internal)
    }

    /// The kind with this [`name`](ErrorKind::as_str); unknown names are `Internal`.
    pub fn from_name(name: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or(ErrorKind::Internal)
    }

    /// Whether trying the same call again later can succeed without anyone changing anything.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::ApiUnreachable
                | ErrorKind::GatewayUnreachable
                | ErrorKind::UpstreamRefused
                | ErrorKind::Timeout
        )
    }

    /// The HTTP status the control plane answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidToken | ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::ResourceNotFound => 404,
            ErrorKind::AmbiguousResource => 409,
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Timeout => 504,
            ErrorKind::ApiUnreachable
            | ErrorKind::GatewayUnreachable
            | ErrorKind::UpstreamRefused => 502,
            ErrorKind::PortInUse | ErrorKind::Closed | ErrorKind::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every API error response: `{"error": {"kind": …, "message": …}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiError,
}

/// One API error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// An [`ErrorKind`] name; unknown names from a newer server read as `internal`.
    pub kind: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// For `ambiguous_resource`: the names that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

impl ApiError {
    /// The parsed kind.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_name(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(usize::from(k.code()), i + 1);
            assert_eq!(ErrorKind::from_code(k.code()), *k);
            assert_eq!(ErrorKind::from_name(k.as_str()), *k);
        }
        assert_eq!(ErrorKind::from_code(999), ErrorKind::Internal);
        assert_eq!(ErrorKind::from_name("from_the_future"), ErrorKind::Internal);
    }

    #[test]
    fn only_transient_kinds_are_retryable() {
        assert!(ErrorKind::ApiUnreachable.retryable());
        assert!(!ErrorKind::Unauthenticated.retryable());
        assert!(!ErrorKind::AmbiguousResource.retryable());
    }
}
