//! [`Failover`]: several control planes, as a standalone gateway uses them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use sdm_proto::{ErrorKind, Token};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api_client::encode;
use crate::error::Error;
use crate::transport::{Answer, Endpoint, Options, Transport, decode};

/// After the token is refused, calls are not made again for this long: a gateway whose identity
/// was deleted must not keep failing token checks every second, which would get its address
/// (and any other gateway or job behind it) rate-limited by the control plane.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(30);

/// Why a [`Failover`] call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// A control plane answered with a client error (its verdict, e.g. a refused token).
    Refused {
        /// HTTP status.
        status: u16,
        /// The error kind it named.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
    /// No control plane could answer; the text says what happened at each.
    Unavailable(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused {
                status,
                kind,
                message,
            } => write!(
                f,
                "the control plane refused the request (HTTP {status}, {kind}): {message}"
            ),
            CallError::Unavailable(why) => write!(f, "no control plane answered: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A client of one or more control planes (tried in order), authenticating with a token.
///
/// When a control plane cannot be reached, times out, answers with a server error or
/// rate-limits (429), the next URL is tried, and the one that answered is used first from then
/// on. A client error (4xx) is an answer, not a failure of the control plane, and is returned
/// as it is; after a 401 no call is made for [`REFUSED_PAUSE`].
#[derive(Debug)]
pub struct Failover {
    transport: Transport,
    endpoints: Vec<Endpoint>,
    /// The endpoint to try first (the last one that answered).
    current: AtomicUsize,
    /// Set when a control plane refused the token: no call before then.
    refused: Mutex<Option<(Instant, String)>>,
}

impl Failover {
    /// A client for these control plane URLs.
    pub fn new(urls: &[String], token: &Token, options: &Options) -> Result<Failover, Error> {
        if urls.is_empty() {
            return Err(Error::NoUrl);
        }
        let endpoints = urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Failover {
            transport: Transport::new(token, options)?,
            endpoints,
            current: AtomicUsize::new(0),
            refused: Mutex::new(None),
        })
    }

    /// The URL tried first now.
    pub fn current_url(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i].url
    }

    /// `GET path` → JSON.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let body = self.call(Method::GET, path, None, timeout).await?;
        decode_answer(&body)
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let json =
            encode(body).map_err(|e| CallError::Unavailable(sdm_proto::error::one_line(&e)))?;
        let body = self.call(Method::POST, path, Some(json), timeout).await?;
        decode_answer(&body)
    }

    /// `POST path` with an already encoded JSON body (or none), ignoring the answer's body.
    pub async fn post_raw(
        &self,
        path: &str,
        json: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(), CallError> {
        self.call(Method::POST, path, json.map(Bytes::from), timeout)
            .await?;
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        if let Some((until, message)) = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && Instant::now() < *until
        {
            return Err(CallError::Refused {
                status: 401,
                kind: ErrorKind::Unauthenticated,
                message: message.clone(),
            });
        }
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for step in 0..n {
            let i = (first + step) % n;
            let endpoint = &self.endpoints[i];
            let answer = self
                .transport
                .send(endpoint, method.clone(), path, body.clone(), timeout)
                .await;
            match answer {
                Ok(answer) if answer.is_success() => {
                    if step > 0 {
                        tracing::info!(url = %endpoint.url, "using another control plane");
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(answer.body);
                }
                Ok(answer) if (400..500).contains(&answer.status) && answer.status != 429 => {
                    let (kind, message) = verdict(&answer);
                    if answer.status == 401 {
                        tracing::error!(url = %endpoint.url, %message, "the control plane refused this gateway's token; asking again in {} s", REFUSED_PAUSE.as_secs());
                        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some((Instant::now() + REFUSED_PAUSE, message.clone()));
                    }
                    return Err(CallError::Refused {
                        status: answer.status,
                        kind,
                        message,
                    });
                }
                Ok(answer) => {
                    let (_, message) = verdict(&answer);
                    failures.push(format!(
                        "{}: HTTP {}: {message}",
                        endpoint.url, answer.status
                    ));
                }
                Err(Error::Unreachable { detail, .. }) => {
                    failures.push(format!("{}: {detail}", endpoint.url));
                }
                Err(Error::Timeout { after, .. }) => {
                    failures.push(format!("{}: no answer within {after:?}", endpoint.url));
                }
                Err(e) => failures.push(sdm_proto::error::one_line(&e)),
            }
        }
        Err(CallError::Unavailable(failures.join("; ")))
    }
}

/// The kind and message an unsuccessful answer names.
fn verdict(answer: &Answer) -> (ErrorKind, String) {
    match answer.api_error() {
        Some(e) => (e.kind(), e.message),
        None => (
            ErrorKind::Internal,
            format!("HTTP {} without an error description", answer.status),
        ),
    }
}

fn decode_answer<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    decode(body).map_err(|e| {
        CallError::Unavailable(format!(
            "the control plane sent an answer this gateway cannot read (a version mismatch?): {e}"
        ))
    })
}
