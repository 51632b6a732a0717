//! A JSON body extractor whose every rejection is an API error body
//! (`{"error":{"kind":"invalid_argument",…}}`), never axum's plain text.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body of type `T`.
pub(crate) struct Json<T>(pub T);

fn rejection_message(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "the request body must be JSON, sent with Content-Type: application/json".into()
        }
        JsonRejection::JsonSyntaxError(_) => {
            format!(
                "the request body is not valid JSON: {}",
                rejection.body_text()
            )
        }
        JsonRejection::JsonDataError(_) => format!(
            "the request body does not have the expected fields: {}",
            rejection.body_text()
        ),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the limit of {} bytes",
            sdm_proto::api::MAX_BODY_BYTES
        ),
        _ => format!(
            "the request body could not be read: {}",
            rejection.body_text()
        ),
    }
}

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => {
                Err(ApiError::invalid(rejection_message(&rejection))
                    .with_status(rejection.status()))
            }
        }
    }
}
