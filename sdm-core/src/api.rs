//! A small HTTPS/JSON client for the control plane: HTTP/1.1 over TLS 1.3 with the pinned CA,
//! keep-alive connections reused across calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use sdm_proto::Token;
use sdm_proto::error::ApiErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result, describe_io};
use crate::tls;

/// Responses larger than this are refused (a resource list of many thousands still fits).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Idle connections older than this are not reused (the server may have closed them).
const MAX_IDLE: Duration = Duration::from_secs(30);
const MAX_IDLE_CONNECTIONS: usize = 4;
/// How often a request answered with 429 is sent in all, and the first pause (doubled, with
/// jitter, between tries).
const BUSY_ATTEMPTS: u32 = 3;
const FIRST_BUSY_PAUSE: Duration = Duration::from_millis(500);

type Sender = SendRequest<Full<Bytes>>;

pub(crate) struct ApiClient {
    endpoint: Endpoint,
    auth: HeaderValue,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    idle: Mutex<Vec<(Instant, Sender)>>,
    timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("url", &self.endpoint.url)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client for the token's control plane (or `url_override`), authenticating with the token.
    pub(crate) fn new(
        token: &Token,
        url_override: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<ApiClient>> {
        let endpoint = Endpoint::parse(url_override.unwrap_or(&token.api_url))?;
        let server_name = tls::server_name(&endpoint.host).ok_or_else(|| {
            Error::invalid_argument(format!("invalid host in sdm API URL {}", endpoint.url))
        })?;
        let config = tls::client_config(token.ca_fingerprint, tls::ALPN_API)
            .map_err(|e| Error::internal(format!("TLS setup failed: {e}")))?;
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.encode())).map_err(|_| {
                Error::new(ErrorKind::InvalidToken, "token contains invalid characters")
            })?;
        auth.set_sensitive(true);
        Ok(Arc::new(ApiClient {
            endpoint,
            auth,
            tls: TlsConnector::from(config),
            server_name,
            idle: Mutex::new(Vec::new()),
            timeout,
        }))
    }

    /// The control plane URL in use.
    pub(crate) fn url(&self) -> &str {
        &self.endpoint.url
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.call(Method::GET, path, None, true).await?;
        decode(&self.endpoint.url, &body)
    }

    /// POST a JSON body. `idempotent` allows one transparent retry when a reused keep-alive
    /// connection turns out to be closed.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotent: bool,
    ) -> Result<T> {
        let json = serde_json::to_vec(body)
            .map_err(|e| Error::internal(format!("could not encode request: {e}")))?;
        let body = self
            .call(Method::POST, path, Some(json), idempotent)
            .await?;
        decode(&self.endpoint.url, &body)
    }

    pub(crate) async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let json = serde_json::to_vec(body)
            .map_err(|e| Error::internal(format!("could not encode request: {e}")))?;
        let body = self.call(Method::PATCH, path, Some(json), true).await?;
        decode(&self.endpoint.url, &body)
    }

    /// POST without a body, or with one, ignoring the response body.
    pub(crate) async fn post_no_content<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        let json = serde_json::to_vec(body)
            .map_err(|e| Error::internal(format!("could not encode request: {e}")))?;
        self.call(Method::POST, path, Some(json), true).await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, path, None, true).await?;
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        retry_stale: bool,
    ) -> Result<Bytes> {
        // A 429 ("too many requests") refuses nothing for good: asked again after a pause, the
        // same request may pass. A few tries, then the caller gets a retryable error.
        let mut backoff = FIRST_BUSY_PAUSE;
        for attempt in 1..=BUSY_ATTEMPTS {
            let (status, bytes) = self
                .call_once(&method, path, body.clone(), retry_stale)
                .await?;
            if status.is_success() {
                return Ok(bytes);
            }
            if status != StatusCode::TOO_MANY_REQUESTS || attempt == BUSY_ATTEMPTS {
                return Err(api_error(&self.endpoint.url, status, &bytes, attempt));
            }
            let pause = crate::tunnel::jitter(backoff);
            tracing::debug!(url = %self.endpoint.url, path, attempt, ?pause, "the sdm API answered 429; asking again");
            tokio::time::sleep(pause).await;
            backoff *= 2;
        }
        Err(Error::internal("the retry loop ended without an answer"))
    }

    /// One request, within the client's time limit: the status and body of the answer.
    async fn call_once(
        &self,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
        retry_stale: bool,
    ) -> Result<(StatusCode, Bytes)> {
        let work = async {
            let (sender, reused) = self.checkout().await?;
            match self.send(sender, method, path, body.clone()).await {
                Err(SendError::Stale(_)) if reused && retry_stale => {
                    let (sender, _) = self.connect().await.map(|s| (s, false))?;
                    self.send(sender, method, path, body)
                        .await
                        .map_err(|e| e.into_error(self))
                }
                other => other.map_err(|e| e.into_error(self)),
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the sdm API at {} did not answer within {:?}",
                        self.endpoint.url, self.timeout
                    ),
                )
            })?
    }

    async fn checkout(&self) -> Result<(Sender, bool)> {
        loop {
            let candidate = match self.idle.lock() {
                Ok(mut idle) => idle.pop(),
                Err(_) => None,
            };
            let Some((since, mut sender)) = candidate else {
                return Ok((self.connect().await?, false));
            };
            if since.elapsed() < MAX_IDLE && !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
    }

    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_CONNECTIONS
        {
            idle.push((Instant::now(), sender));
        }
    }

    async fn connect(&self) -> Result<Sender> {
        let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| self.unreachable(describe_io(&e), e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                self.unreachable(format!("TLS handshake failed: {}", describe_io(&e)), e)
            })?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.unreachable(format!("HTTP handshake failed: {e}"), e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "sdm API connection ended");
            }
        });
        Ok(sender)
    }

    async fn send(
        &self,
        mut sender: Sender,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let uri = format!("{}{}", self.endpoint.prefix, path);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(HOST, self.endpoint.authority())
            .header(AUTHORIZATION, self.auth.clone());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| SendError::Fatal(Error::internal(format!("bad request: {e}"))))?;
        let response = sender.send_request(request).await.map_err(|e| {
            if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
                SendError::Stale(e)
            } else {
                SendError::Fatal(self.unreachable(format!("request failed: {e}"), e))
            }
        })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                SendError::Fatal(self.unreachable(format!("reading the response failed: {e}"), e))
            })?
            .to_bytes();
        self.checkin(sender);
        Ok((status, bytes))
    }

    fn unreachable(
        &self,
        detail: String,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::new(
            ErrorKind::ApiUnreachable,
            format!(
                "unavailable: Unable to contact sdm API at {}: {detail}",
                self.endpoint.url
            ),
        )
        .with_source(source)
    }
}

enum SendError {
    /// The reused connection was closed before the request went out.
    Stale(hyper::Error),
    Fatal(Error),
}

impl SendError {
    fn into_error(self, client: &ApiClient) -> Error {
        match self {
            SendError::Stale(e) => client.unreachable(format!("connection closed: {e}"), e),
            SendError::Fatal(e) => e,
        }
    }
}

fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T> {
    let body = if body.is_empty() {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        Error::internal(format!(
            "the sdm API at {url} sent a response this client cannot read: {e}"
        ))
    })
}

/// The error an unsuccessful answer stands for. `attempts`: how often the request was sent.
///
/// 429 is never a refusal for good, whatever kind its body names (an older server said
/// `unauthenticated` while it throttled an address): it is `api_unreachable`, retryable. A
/// 502, 503 or 504 without an sdm error body comes from something between the client and the
/// control plane (a proxy, a load balancer) and is `api_unreachable` too.
fn api_error(url: &str, status: StatusCode, body: &[u8], attempts: u32) -> Error {
    let parsed = serde_json::from_slice::<ApiErrorBody>(body).ok();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let why = parsed.map_or_else(|| "no reason given".to_owned(), |b| b.error.message);
        return Error::new(
            ErrorKind::ApiUnreachable,
            format!(
                "unavailable: the sdm API at {url} answered 429 (too many requests) to {attempts} \
                 attempt(s): {why}. This is not a revocation: try again later (open tunnels keep \
                 their lease and go on renewing it)"
            ),
        );
    }
    match parsed {
        Some(b) => Error::new(b.error.kind(), b.error.message).with_candidates(b.error.candidates),
        None if matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) =>
        {
            Error::new(
                ErrorKind::ApiUnreachable,
                format!(
                    "unavailable: Unable to contact sdm API at {url}: something in between \
                     answered HTTP {status}; try again later"
                ),
            )
        }
        None => Error::internal(format!(
            "the sdm API at {url} answered HTTP {status} without an error description"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://127.0.0.1:8443";

    #[test]
    fn a_429_is_retryable_whatever_its_body_says() {
        // What earlier servers answered while they throttled an address.
        let old = br#"{"error":{"kind":"unauthenticated","message":"too many failed token checks from 127.0.0.1; try again in 42 s"}}"#;
        for body in [old.as_slice(), b"", b"<html>slow down</html>"] {
            let e = api_error(URL, StatusCode::TOO_MANY_REQUESTS, body, BUSY_ATTEMPTS);
            assert_eq!(e.kind(), ErrorKind::ApiUnreachable, "{e}");
            assert!(e.retryable());
            assert!(e.message().contains("not a revocation"), "{e}");
        }
        let e = api_error(URL, StatusCode::TOO_MANY_REQUESTS, old, 3);
        assert!(e.message().contains("too many failed token checks"), "{e}");
    }

    #[test]
    fn a_proxy_that_cannot_reach_the_api_is_unreachable_and_sdm_errors_keep_their_kind() {
        let e = api_error(URL, StatusCode::SERVICE_UNAVAILABLE, b"busy", 1);
        assert_eq!(e.kind(), ErrorKind::ApiUnreachable);
        let body = br#"{"error":{"kind":"unauthenticated","message":"token is not valid"}}"#;
        let e = api_error(URL, StatusCode::UNAUTHORIZED, body, 1);
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        let e = api_error(URL, StatusCode::INTERNAL_SERVER_ERROR, b"", 1);
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}
