//! [`ControlPlane`]: the standalone gateway's HTTPS client for the `/v1/gateway/…` routes, over
//! one or more control plane URLs.
//!
//! Every request carries the gateway token. Keep-alive connections are reused per control
//! plane. When a control plane cannot be reached, times out or answers with a server error (or
//! rate-limits this gateway), the next URL is tried, and the one that answered is used first
//! from then on. A client error (4xx) is an answer, not a failure of the control plane, and is
//! returned as it is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use sdm_proto::error::ApiErrorBody;
use sdm_proto::pinned_ca;
use sdm_proto::{ErrorKind, Token};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Answers larger than this are refused.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// An idle connection older than this is not reused (the control plane closes them at 45 s).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per control plane.
const MAX_IDLE_CONNECTIONS: usize = 16;
/// TLS resumption tickets kept (a few per control plane URL suffice).
const TLS_SESSIONS: usize = 256;
/// TCP and TLS to one control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the token is refused, calls are not made again for this long: a gateway whose identity
/// was deleted must not keep failing token checks every second, which would get its address
/// (and any other gateway or job behind it) rate-limited by the control plane.
const REFUSED_PAUSE: Duration = Duration::from_secs(30);

type Sender = SendRequest<Full<Bytes>>;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
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

/// One control plane URL.
struct Endpoint {
    url: String,
    host: String,
    port: u16,
    prefix: String,
    server_name: ServerName<'static>,
    idle: Mutex<Vec<(Instant, Sender)>>,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, String> {
        let bad =
            |why: &str| format!("control plane URL {url:?} {why}; give it as https://host:port");
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("is not https"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(bad("has user information, a query or a fragment"));
        }
        let (host, port) =
            crate::server::split_host_port(authority, true).map_err(|why| bad(&why))?;
        let server_name =
            pinned_ca::server_name(&host).ok_or_else(|| bad("has an invalid host"))?;
        Ok(Endpoint {
            url: url.trim_end_matches('/').to_owned(),
            host,
            port: port.unwrap_or(443),
            prefix: path.trim_end_matches('/').to_owned(),
            server_name,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What one attempt at one control plane gave.
enum Attempt {
    Answer(StatusCode, Bytes),
    /// The connection failed; `stale` when a reused connection turned out closed before the
    /// request went out (worth one retry on a fresh connection).
    Failed {
        why: String,
        stale: bool,
    },
}

/// The control planes a gateway talks to.
pub(crate) struct ControlPlane {
    endpoints: Vec<Endpoint>,
    /// The endpoint to try first (the last one that answered).
    current: AtomicUsize,
    auth: HeaderValue,
    tls: TlsConnector,
    /// Set when a control plane refused the token: no call before then.
    refused: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field(
                "urls",
                &self.endpoints.iter().map(|e| &e.url).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// A client for these control plane URLs (tried in order), authenticating with `token`.
    pub(crate) fn new(urls: &[String], token: &Token) -> Result<ControlPlane, String> {
        if urls.is_empty() {
            return Err("no control plane URL given".into());
        }
        let endpoints = urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let config = pinned_ca::client_config(
            token.ca_fingerprint,
            crate::keys::tls::ALPN_API,
            TLS_SESSIONS,
        )
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.encode()))
            .map_err(|_| "the gateway token contains invalid characters".to_owned())?;
        auth.set_sensitive(true);
        Ok(ControlPlane {
            endpoints,
            current: AtomicUsize::new(0),
            auth,
            tls: TlsConnector::from(config),
            refused: Mutex::new(None),
        })
    }

    /// The URL tried first now.
    pub(crate) fn current_url(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i].url
    }

    /// `GET path` → JSON.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let body = self.call(Method::GET, path, None, timeout).await?;
        decode(&body)
    }

    /// `POST path` with a JSON body → JSON.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| CallError::Unavailable(format!("cannot encode the request: {e}")))?;
        let body = self.call(Method::POST, path, Some(json), timeout).await?;
        decode(&body)
    }

    /// `POST path` with an already encoded JSON body (or none), ignoring the answer's body.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        json: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(), CallError> {
        self.call(Method::POST, path, json, timeout).await?;
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
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
            let attempt =
                tokio::time::timeout(timeout, self.attempt(endpoint, &method, path, body.clone()))
                    .await
                    .unwrap_or_else(|_| Attempt::Failed {
                        why: format!("no answer within {timeout:?}"),
                        stale: false,
                    });
            match attempt {
                Attempt::Answer(status, bytes) if status.is_success() => {
                    if step > 0 {
                        tracing::info!(url = %endpoint.url, "using another control plane");
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(bytes);
                }
                Attempt::Answer(status, bytes)
                    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS =>
                {
                    let (kind, message) = error_of(status, &bytes);
                    if status == StatusCode::UNAUTHORIZED {
                        tracing::error!(url = %endpoint.url, %message, "the control plane refused this gateway's token; asking again in {} s", REFUSED_PAUSE.as_secs());
                        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some((Instant::now() + REFUSED_PAUSE, message.clone()));
                    }
                    return Err(CallError::Refused {
                        status: status.as_u16(),
                        kind,
                        message,
                    });
                }
                Attempt::Answer(status, bytes) => {
                    let (_, message) = error_of(status, &bytes);
                    failures.push(format!("{}: HTTP {status}: {message}", endpoint.url));
                }
                Attempt::Failed { why, .. } => failures.push(format!("{}: {why}", endpoint.url)),
            }
        }
        Err(CallError::Unavailable(failures.join("; ")))
    }

    async fn attempt(
        &self,
        endpoint: &Endpoint,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Attempt {
        let (sender, reused) = match self.checkout(endpoint).await {
            Ok(pair) => pair,
            Err(why) => return Attempt::Failed { why, stale: false },
        };
        match self
            .send(endpoint, sender, method, path, body.clone())
            .await
        {
            Attempt::Failed { stale: true, .. } if reused => match self.connect(endpoint).await {
                Ok(sender) => self.send(endpoint, sender, method, path, body).await,
                Err(why) => Attempt::Failed { why, stale: false },
            },
            other => other,
        }
    }

    async fn checkout(&self, endpoint: &Endpoint) -> Result<(Sender, bool), String> {
        loop {
            let candidate = endpoint
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some((since, mut sender)) = candidate else {
                return Ok((self.connect(endpoint).await?, false));
            };
            if since.elapsed() < MAX_IDLE && !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Sender, String> {
        let work = async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let tls = self
                .tls
                .connect(endpoint.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let (sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP handshake failed: {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "control plane connection ended");
                }
            });
            Ok(sender)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        mut sender: Sender,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Attempt {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", endpoint.prefix))
            .header(HOST, endpoint.authority())
            .header(AUTHORIZATION, self.auth.clone());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = match builder.body(Full::new(Bytes::from(body.unwrap_or_default()))) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Failed {
                    why: format!("bad request: {e}"),
                    stale: false,
                };
            }
        };
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Failed {
                    stale: e.is_canceled() || e.is_closed() || e.is_incomplete_message(),
                    why: format!("request failed: {e}"),
                };
            }
        };
        let status = response.status();
        match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(collected) => {
                if !sender.is_closed() {
                    let mut idle = endpoint.idle.lock().unwrap_or_else(PoisonError::into_inner);
                    if idle.len() < MAX_IDLE_CONNECTIONS {
                        idle.push((Instant::now(), sender));
                    }
                }
                Attempt::Answer(status, collected.to_bytes())
            }
            Err(e) => Attempt::Failed {
                why: format!("reading the answer failed: {e}"),
                stale: false,
            },
        }
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    let body = if body.is_empty() {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        CallError::Unavailable(format!(
            "the control plane sent an answer this gateway cannot read (a version mismatch?): {e}"
        ))
    })
}

fn error_of(status: StatusCode, body: &[u8]) -> (ErrorKind, String) {
    match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(b) => (b.error.kind(), b.error.message),
        Err(_) => (
            ErrorKind::Internal,
            format!("HTTP {status} without an error description"),
        ),
    }
}

/// Shared between the gateway's parts.
pub(crate) type SharedControlPlane = Arc<ControlPlane>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("https://cp.example.com:8443/sdm/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("cp.example.com", 8443, "/sdm")
        );
        assert_eq!(e.authority(), "cp.example.com:8443");
        let e = Endpoint::parse("https://[::1]:9").unwrap();
        assert_eq!(e.authority(), "[::1]:9");
        assert_eq!(Endpoint::parse("https://x").unwrap().port, 443);
        for bad in ["http://x:1", "https://", "https://u@x:1", "https://x:1/?q"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
