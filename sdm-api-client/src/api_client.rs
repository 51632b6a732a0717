//! [`ApiClient`]: one control plane, as a job's session and the admin SDK use it.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use sdm_proto::Token;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::transport::{Endpoint, Options, Transport, decode};

/// How often a request answered with 429 ("too many requests") is sent in all.
pub const BUSY_ATTEMPTS: u32 = 3;
/// The pause after the first 429; it doubles (with jitter) for the next.
const FIRST_BUSY_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause after a 429.
const MAX_BUSY_PAUSE: Duration = Duration::from_secs(2);

/// A client of one control plane, authenticating with a token. Keep-alive connections and TLS
/// sessions are reused across calls; clones share them.
///
/// A call that is answered 429 is sent again after a jittered pause, up to [`BUSY_ATTEMPTS`]
/// times in all: throttling refuses nothing for good. Every other answer is final.
#[derive(Debug, Clone)]
pub struct ApiClient {
    transport: Transport,
    endpoint: Endpoint,
    timeout: Duration,
}

impl ApiClient {
    /// A client for the control plane at `url`, with `timeout` for each call (connecting,
    /// sending and reading the answer, retries after a 429 not included).
    pub fn new(
        url: &str,
        token: &Token,
        timeout: Duration,
        options: &Options,
    ) -> Result<ApiClient> {
        Ok(ApiClient {
            endpoint: Endpoint::parse(url)?,
            transport: Transport::new(token, options)?,
            timeout,
        })
    }

    /// The control plane URL.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// `GET path` → JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.call(Method::GET, path, None).await?;
        self.decode(&body)
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let body = self.call(Method::POST, path, Some(encode(body)?)).await?;
        self.decode(&body)
    }

    /// `PATCH path` with a JSON body → JSON.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let body = self.call(Method::PATCH, path, Some(encode(body)?)).await?;
        self.decode(&body)
    }

    /// `POST path` with a JSON body, ignoring the answer's body.
    pub async fn post_no_content<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        self.call(Method::POST, path, Some(encode(body)?)).await?;
        Ok(())
    }

    /// `DELETE path`, ignoring the answer's body.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, path, None).await?;
        Ok(())
    }

    /// Sends the request, again after a 429, until it is answered otherwise: the body of a
    /// successful answer.
    async fn call(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Bytes> {
        let mut attempt = 1;
        loop {
            let answer = self
                .transport
                .send(
                    &self.endpoint,
                    method.clone(),
                    path,
                    body.clone(),
                    self.timeout,
                )
                .await?;
            if answer.is_success() {
                return Ok(answer.body);
            }
            if answer.status != 429 || attempt >= BUSY_ATTEMPTS {
                return Err(Error::Answered {
                    url: self.endpoint.url.clone(),
                    status: answer.status,
                    error: answer.api_error(),
                    attempts: attempt,
                });
            }
            let pause = sdm_proto::backoff::jittered(attempt - 1, FIRST_BUSY_PAUSE, MAX_BUSY_PAUSE);
            tracing::debug!(url = %self.endpoint.url, path, attempt, ?pause, "the sdm API answered 429; asking again");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T> {
        decode(body).map_err(|source| Error::Undecodable {
            url: self.endpoint.url.clone(),
            source,
        })
    }
}

pub(crate) fn encode<B: Serialize>(body: &B) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(Error::Encode)
}
