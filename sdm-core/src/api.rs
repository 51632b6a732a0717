//! The control plane API: `sdm-api-client`'s [`ApiClient`] with the client library's limits, and
//! the one place where its errors become [`Error`]s.

use std::sync::Arc;
use std::time::Duration;

use sdm_api_client::Options;
use sdm_proto::Token;
use sdm_proto::error::ApiError;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// Responses larger than this are refused (a resource list of many thousands still fits).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Idle connections older than this are not reused (the server may have closed them).
const MAX_IDLE: Duration = Duration::from_secs(30);
const MAX_IDLE_CONNECTIONS: usize = 4;
/// Resumption tickets kept for the API's connections.
const TLS_SESSIONS: usize = 1024;

/// The client of one control plane, answering with [`Error`]s.
#[derive(Debug)]
pub(crate) struct ApiClient(sdm_api_client::ApiClient);

impl ApiClient {
    /// A client for the token's control plane (or `url_override`), authenticating with the
    /// token; `timeout` bounds each call.
    pub(crate) fn new(
        token: &Token,
        url_override: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<ApiClient>> {
        let options = Options::default()
            .max_response_bytes(MAX_RESPONSE_BYTES)
            .idle_timeout(MAX_IDLE)
            .max_idle_connections(MAX_IDLE_CONNECTIONS)
            .tls_sessions(TLS_SESSIONS);
        let url = url_override.unwrap_or(&token.api_url);
        let client = sdm_api_client::ApiClient::new(url, token, timeout, &options)?;
        Ok(Arc::new(ApiClient(client)))
    }

    /// The control plane URL in use.
    pub(crate) fn url(&self) -> &str {
        self.0.url()
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.0.get(path).await?)
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        Ok(self.0.post(path, body).await?)
    }

    pub(crate) async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        Ok(self.0.patch(path, body).await?)
    }

    /// POST with a body, ignoring the response body.
    pub(crate) async fn post_no_content<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        Ok(self.0.post_no_content(path, body).await?)
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        Ok(self.0.delete(path).await?)
    }
}

impl From<sdm_api_client::Error> for Error {
    fn from(e: sdm_api_client::Error) -> Error {
        use sdm_api_client::Error as E;
        match e {
            E::Url { url, why } => Error::invalid_argument(format!(
                "invalid sdm API URL {url:?}: it {why} (expected https://host:port)"
            )),
            E::InvalidHost { url } => {
                Error::invalid_argument(format!("invalid host in sdm API URL {url}"))
            }
            E::Token => Error::new(ErrorKind::InvalidToken, "token contains invalid characters"),
            E::Unreachable {
                url,
                detail,
                source,
            } => Error::new(
                ErrorKind::ApiUnreachable,
                format!("unavailable: Unable to contact sdm API at {url}: {detail}"),
            )
            .with_source(source),
            E::Timeout { url, after } => Error::new(
                ErrorKind::Timeout,
                format!("the sdm API at {url} did not answer within {after:?}"),
            ),
            E::TooLarge { url, limit } => Error::new(
                ErrorKind::ApiUnreachable,
                format!(
                    "unavailable: Unable to contact sdm API at {url}: reading the response \
                     failed: it is larger than {limit} bytes"
                ),
            ),
            E::Answered {
                url,
                status,
                error,
                attempts,
            } => answered(&url, status, error, attempts),
            E::Undecodable { url, source } => Error::internal(format!(
                "the sdm API at {url} sent a response this client cannot read: {source}"
            )),
            other => Error::internal(sdm_proto::error::one_line(&other)),
        }
    }
}

/// The error an unsuccessful answer stands for. `attempts`: how often the request was sent.
///
/// 429 is never a refusal for good, whatever kind its body names (an older server said
/// `unauthenticated` while it throttled an address): it is `api_unreachable`, retryable. A
/// 502, 503 or 504 without an sdm error body comes from something between the client and the
/// control plane (a proxy, a load balancer) and is `api_unreachable` too.
fn answered(url: &str, status: u16, body: Option<ApiError>, attempts: u32) -> Error {
    if status == 429 {
        let why = body.map_or_else(|| "no reason given".to_owned(), |b| b.message);
        return Error::new(
            ErrorKind::ApiUnreachable,
            format!(
                "unavailable: the sdm API at {url} answered 429 (too many requests) to {attempts} \
                 attempt(s): {why}. This is not a revocation: try again later (open tunnels keep \
                 their lease and go on renewing it)"
            ),
        );
    }
    match body {
        Some(b) => Error::new(b.kind(), b.message).with_candidates(b.candidates),
        None if matches!(status, 502..=504) => Error::new(
            ErrorKind::ApiUnreachable,
            format!(
                "unavailable: Unable to contact sdm API at {url}: something in between \
                 answered HTTP {status}; try again later"
            ),
        ),
        None => Error::internal(format!(
            "the sdm API at {url} answered HTTP {status} without an error description"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://127.0.0.1:8443";
    const BUSY_ATTEMPTS: u32 = sdm_api_client::BUSY_ATTEMPTS;

    fn api_error(url: &str, status: u16, body: &[u8], attempts: u32) -> Error {
        let body = serde_json::from_slice::<sdm_proto::error::ApiErrorBody>(body)
            .ok()
            .map(|b| b.error);
        answered(url, status, body, attempts)
    }

    #[test]
    fn a_429_is_retryable_whatever_its_body_says() {
        // What earlier servers answered while they throttled an address.
        let old = br#"{"error":{"kind":"unauthenticated","message":"too many failed token checks from 127.0.0.1; try again in 42 s"}}"#;
        for body in [old.as_slice(), b"", b"<html>slow down</html>"] {
            let e = api_error(URL, 429, body, BUSY_ATTEMPTS);
            assert_eq!(e.kind(), ErrorKind::ApiUnreachable, "{e}");
            assert!(e.retryable());
            assert!(e.message().contains("not a revocation"), "{e}");
        }
        let e = api_error(URL, 429, old, 3);
        assert!(e.message().contains("too many failed token checks"), "{e}");
    }

    #[test]
    fn a_proxy_that_cannot_reach_the_api_is_unreachable_and_sdm_errors_keep_their_kind() {
        let e = api_error(URL, 503, b"busy", 1);
        assert_eq!(e.kind(), ErrorKind::ApiUnreachable);
        let body = br#"{"error":{"kind":"unauthenticated","message":"token is not valid"}}"#;
        let e = api_error(URL, 401, body, 1);
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        let e = api_error(URL, 500, b"", 1);
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}
