//! One request to one control plane: the pinned-CA reqwest client, its pool, the token, the
//! size limit and the time limit. The retry policies ([`ApiClient`](crate::ApiClient),
//! [`Failover`](crate::Failover)) are built on it.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use sdm_proto::Token;
use sdm_proto::addr::HttpsUrl;
use sdm_proto::error::{ApiError, ApiErrorBody};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

// ALPN protocol of the control plane API.
use sdm_proto::server_tls::ALPN_API as ALPN;

/// How a client connects and what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Answers longer than this are refused ([`Error::TooLarge`]).
    pub max_response_bytes: usize,
    /// Idle keep-alive connections kept per control plane.
    pub max_idle_connections: usize,
    /// An idle connection older than this is closed, not reused (the control plane closes its
    /// side at 45 s).
    pub idle_timeout: Duration,
    /// TCP and TLS to one control plane, when shorter than the time allowed for the call.
    pub connect_timeout: Option<Duration>,
    /// TLS resumption tickets kept, so that a new connection resumes instead of doing a full
    /// handshake.
    pub tls_sessions: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_response_bytes: 4 * 1024 * 1024,
            max_idle_connections: 4,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: None,
            tls_sessions: 256,
        }
    }
}

impl Options {
    /// Sets [`max_response_bytes`](Options::max_response_bytes).
    pub fn max_response_bytes(mut self, bytes: usize) -> Options {
        self.max_response_bytes = bytes;
        self
    }

    /// Sets [`max_idle_connections`](Options::max_idle_connections).
    pub fn max_idle_connections(mut self, n: usize) -> Options {
        self.max_idle_connections = n;
        self
    }

    /// Sets [`idle_timeout`](Options::idle_timeout).
    pub fn idle_timeout(mut self, d: Duration) -> Options {
        self.idle_timeout = d;
        self
    }

    /// Sets [`connect_timeout`](Options::connect_timeout).
    pub fn connect_timeout(mut self, d: Duration) -> Options {
        self.connect_timeout = Some(d);
        self
    }

    /// Sets [`tls_sessions`](Options::tls_sessions).
    pub fn tls_sessions(mut self, n: usize) -> Options {
        self.tls_sessions = n;
        self
    }
}

/// One control plane URL, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// As given, without a trailing `/` (for messages).
    pub(crate) url: String,
    /// `https://host:port/prefix`, to which paths are appended.
    base: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint> {
        let parsed = HttpsUrl::parse(url).map_err(|why| Error::Url {
            url: url.to_owned(),
            why,
        })?;
        if sdm_proto::pinned_ca::server_name(&parsed.host).is_none()
            || reqwest::Url::parse(&parsed.base()).is_err()
        {
            return Err(Error::InvalidHost {
                url: url.to_owned(),
            });
        }
        Ok(Endpoint {
            url: url.trim_end_matches('/').to_owned(),
            base: parsed.base(),
        })
    }
}

/// A control plane's answer: its status and body (at most the size limit).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The sdm error body, if the answer is one.
    pub(crate) fn api_error(&self) -> Option<ApiError> {
        serde_json::from_slice::<ApiErrorBody>(&self.body)
            .ok()
            .map(|b| b.error)
    }
}

/// Reads a successful answer's JSON; an empty body reads as `null` (for `()` and `Option`).
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    let body = if body.is_empty() {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
}

/// The pinned-CA HTTP client with the token: one pool for all calls.
#[derive(Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    auth: HeaderValue,
    limit: usize,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(token: &Token, options: &Options) -> Result<Transport> {
        let tls =
            sdm_proto::pinned_ca::client_config(token.ca_fingerprint, ALPN, options.tls_sessions)
                .map_err(Error::Tls)?;
        let mut builder = reqwest::Client::builder()
            // The configuration keeps its pinned-CA verifier, ALPN and resumption cache; the
            // cache is shared by every connection this client opens.
            .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(options.max_idle_connections)
            .pool_idle_timeout(options.idle_timeout);
        if let Some(d) = options.connect_timeout {
            builder = builder.connect_timeout(d);
        }
        let http = builder.build().map_err(Error::Setup)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.encode()))
            .map_err(|_| Error::Token)?;
        auth.set_sensitive(true);
        Ok(Transport {
            http,
            auth,
            limit: options.max_response_bytes,
        })
    }

    /// Sends one request and reads the whole answer, within `timeout`.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Answer> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", endpoint.base))
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let unreachable = |source: reqwest::Error| Error::Unreachable {
            url: endpoint.url.clone(),
            detail: describe(&source),
            source,
        };
        let too_large = || Error::TooLarge {
            url: endpoint.url.clone(),
            limit: self.limit,
        };
        let exchange = async {
            let mut response = request.send().await.map_err(unreachable)?;
            let status = response.status().as_u16();
            if response
                .content_length()
                .is_some_and(|n| n > self.limit as u64)
            {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
                if body.len() + chunk.len() > self.limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                body: Bytes::from(body),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                url: endpoint.url.clone(),
                after: timeout,
            })?
    }
}

/// What failed, as a person reads it: the socket error (`connection refused`), the TLS error,
/// or else the innermost cause.
fn describe(error: &reqwest::Error) -> String {
    let mut io = None;
    let mut innermost: &(dyn std::error::Error + 'static) = error;
    let mut next = Some(innermost);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return format!("TLS handshake failed: {tls}");
        }
        innermost = e;
        next = match e.downcast_ref::<std::io::Error>() {
            // An io::Error's source() skips the error it wraps (often another io::Error, or
            // the TLS error): go into it.
            Some(wrapper) => {
                io = Some(wrapper);
                match wrapper.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => std::error::Error::source(wrapper),
                }
            }
            None => e.source(),
        };
    }
    let what = match io {
        Some(e) => sdm_proto::error::describe_io(e),
        None => innermost.to_string(),
    };
    if error.is_connect() || error.is_timeout() {
        what
    } else if error.is_body() {
        format!("reading the response failed: {what}")
    } else {
        format!("request failed: {what}")
    }
}
