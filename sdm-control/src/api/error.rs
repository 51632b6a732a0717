//! [`ApiError`]: every failure of the API as `(status, {"error": {"kind", "message"}})`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sdm_proto::ErrorKind;
use sdm_proto::error::{ApiError as WireError, ApiErrorBody};

use crate::store::StoreError;

/// An API failure: status, error kind and a message for a person.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
    /// Seconds for a `Retry-After` header (429 answers).
    retry_after: Option<u64>,
    /// The request field that caused it, when one did (the console shows the message beside
    /// that field; not sent on the wire).
    field: Option<&'static str>,
}

/// The message of every failed token check, whichever check failed.
pub(crate) const TOKEN_NOT_VALID: &str = "token is not valid: it was revoked, or its account was \
     deleted or suspended; ask an admin for a new token";

impl ApiError {
    /// An error answered with the kind's usual status.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind,
            message: message.into(),
            retry_after: None,
            field: None,
        }
    }

    /// The same error with another status.
    pub(crate) fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// The same error, telling the client to retry after `secs` seconds (`Retry-After`).
    pub(crate) fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// The same error, caused by the request field `field` (`"port"`, `"tags"`, …).
    pub(crate) fn in_field(mut self, field: &'static str) -> ApiError {
        self.field = Some(field);
        self
    }

    /// The request field that caused it, when one did.
    pub(crate) fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// The error kind.
    pub(crate) fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for a person (the console shows it beside the form).
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// `invalid_argument`, 400.
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidArgument, message)
    }

    /// `unauthenticated`, 401.
    pub(crate) fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Unauthenticated, message)
    }

    /// An unexpected failure: logged with its source chain, answered without details.
    pub(crate) fn internal(context: &str, error: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "{context}");
        ApiError::new(
            ErrorKind::Internal,
            "internal error in the sdm control plane; the server log has the details",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict { .. } => {
                ApiError::invalid(e.to_string()).with_status(StatusCode::CONFLICT)
            }
            StoreError::LastAdmin => ApiError::invalid(e.to_string()),
            // Refused by the state of other resources, not by the request's form.
            StoreError::PortTaken { .. } | StoreError::PortsExhausted { .. } => {
                ApiError::invalid(e.to_string()).with_status(StatusCode::CONFLICT)
            }
            StoreError::NotFound(what) => ApiError::invalid(format!(
                "the {what} was deleted while this request ran; try again"
            ))
            .with_status(StatusCode::NOT_FOUND),
            // The store is down or failing: a passing condition, so retryable (503), never a
            // refusal; clients keep their tunnels on the current lease and ask again.
            StoreError::Backend { .. } => {
                ApiError::internal("a database operation failed", &e);
                ApiError::new(
                    ErrorKind::ApiUnreachable,
                    "the sdm control plane cannot use its database right now; try again shortly",
                )
                .with_status(StatusCode::SERVICE_UNAVAILABLE)
                .with_retry_after(1)
            }
            _ => ApiError::internal("a database operation failed", &e),
        }
    }
}

/// The JSON error response.
pub(crate) fn error_response(status: StatusCode, kind: ErrorKind, message: String) -> Response {
    let body = ApiErrorBody {
        error: WireError {
            kind: kind.as_str().to_owned(),
            message,
            candidates: Vec::new(),
        },
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status, self.kind, self.message);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_store_is_a_retryable_503_and_other_store_errors_are_not() {
        let down = ApiError::from(StoreError::backend(
            "read the session",
            std::io::Error::other("connection refused"),
        ));
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(down.kind().retryable());
        assert_eq!(down.retry_after, Some(1));
        assert!(!down.message().contains("connection refused"));
        let conflict = ApiError::from(StoreError::Conflict {
            entity: "an account",
            name: "etl".into(),
        });
        assert_eq!(conflict.status, StatusCode::CONFLICT);
        assert!(!conflict.kind().retryable());
    }
}
