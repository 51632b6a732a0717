//! Test-only HTTPS client for the control plane API: hyper over tokio-rustls, trusting only the
//! CA in `<data_dir>/ca.pem`, one connection per request, every wait bounded.

#![allow(dead_code)]

pub mod console;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sdm_proto::error::ApiErrorBody;
use sdm_server::{RunningServer, Server};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The `sdm-server serve` binary on free loopback ports with its data in `data_dir`, standard
/// error piped and nothing of the caller's environment that changes what it logs or keys.
pub fn serve_command(data_dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sdm-server"));
    command
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env_remove("SDM_SECRET_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// A server started on loopback with free ports in a temporary data directory.
pub struct TestServer {
    pub server: RunningServer,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let server = start_in(&data_dir(&dir)).await;
        let client = Client::new(&data_dir(&dir), server.api_addr());
        TestServer {
            server,
            client,
            dir,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        data_dir(&self.dir)
    }

    pub fn admin(&self) -> String {
        self.server.admin_token().unwrap().to_owned()
    }
}

pub fn data_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data")
}

pub async fn start_in(data_dir: &Path) -> RunningServer {
    Server::builder()
        .data_dir(data_dir)
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// An API answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not the expected JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an error answer with this status and kind; returns its message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "body: {}",
            self.text()
        );
        let body: ApiErrorBody = self.json();
        assert_eq!(body.error.kind, kind, "message: {}", body.error.message);
        body.error.message
    }

    #[track_caller]
    pub fn expect_ok<T: DeserializeOwned>(&self) -> T {
        assert_eq!(self.status, 200, "body: {}", self.text());
        self.json()
    }
}

/// The test client.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl Client {
    /// A client for the API at `addr`, trusting only `<data_dir>/ca.pem`.
    pub fn new(data_dir: &Path, addr: SocketAddr) -> Client {
        let ca = CertificateDer::from_pem_file(data_dir.join("ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// A TLS connection to the API, for tests that write raw HTTP.
    pub async fn connect_raw(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::IpAddress(self.addr.ip().into());
        self.connector.connect(name, tcp).await.unwrap()
    }

    /// Sends one request on a new connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        self.try_request(method, path, token, content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// As [`request`](Self::request), with a connection failure returned instead of a panic:
    /// a server may answer an oversized body before reading all of it and close, so that the
    /// client's write fails instead.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        tokio::time::timeout(
            TIMEOUT,
            self.request_inner(method, path, token, content_type, body),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut headers = Vec::new();
        let bearer = token.map(|t| format!("Bearer {t}"));
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let response = self.exchange(method, path, &headers, body).await?;
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        Ok(Reply {
            status: response.status().as_u16(),
            content_type,
            body: response.into_body().to_vec(),
        })
    }

    /// One request with these headers (besides `Host`) on a new connection; the whole answer.
    pub async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<hyper::Response<Bytes>, String> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.connector.connect(name, tcp).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| format!("{method} {path} timed out"))?
            .map_err(|e| format!("request failed: {e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(TIMEOUT, body.collect())
            .await
            .map_err(|_| format!("{method} {path}: reading the answer timed out"))?
            .map_err(|e| format!("reading the answer failed: {e:?}"))?
            .to_bytes();
        Ok(hyper::Response::from_parts(parts, body))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request("GET", path, token, None, Vec::new()).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.request("DELETE", path, token, None, Vec::new()).await
    }

    pub async fn post<B: Serialize>(&self, path: &str, token: Option<&str>, body: &B) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap();
        self.request("POST", path, token, Some("application/json"), bytes)
            .await
    }

    /// A POST with an empty JSON object, for routes without a body.
    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> Reply {
        self.request("POST", path, token, None, Vec::new()).await
    }
}

/// Whether `needle` occurs in `path` or its WAL file.
pub fn database_contains(data_dir: &Path, needle: &[u8]) -> bool {
    ["sdm.db", "sdm.db-wal"].iter().any(|name| {
        std::fs::read(data_dir.join(name))
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}
