//! Logins or lease issues per second against one or more control planes, each task on its own
//! keep-alive HTTPS connection (HTTP/1.1, TLS 1.3, trusting the installation's CA).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sdm_proto::api::{LeaseRequest, LoginResponse, ResourceList, routes};
use serde_json::json;
use tokio::net::TcpStream;

use crate::{Args, Fallible, percentile, token, window};

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Conn {
    async fn open(url: &str, tls: &tokio_rustls::TlsConnector, token: &str) -> Fallible<Conn> {
        let authority = url
            .strip_prefix("https://")
            .ok_or("URLs must be https://")?;
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let tcp = TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(host.to_owned())?;
        let stream = tls.connect(name, tcp).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Conn {
            sender,
            host: authority.to_owned(),
            auth: format!("Bearer {token}"),
        })
    }

    async fn call(&mut self, method: Method, path: &str, body: Option<Vec<u8>>) -> Fallible<Bytes> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)).into());
        }
        Ok(bytes)
    }

    async fn login(&mut self) -> Fallible<LoginResponse> {
        let bytes = self
            .call(Method::POST, routes::LOGIN, Some(b"{}".to_vec()))
            .await?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

pub(crate) async fn run(args: &Args) -> Fallible<String> {
    let what = args.one("what")?.to_owned();
    if what != "logins" && what != "leases" {
        return Err("--what is logins or leases".into());
    }
    let urls: Vec<String> = args.all("url").iter().map(|u| u.to_string()).collect();
    if urls.is_empty() {
        return Err("--url is required".into());
    }
    let concurrency: usize = args.number("concurrency")?;
    let span = window(args.number("seconds")?)?;
    let token = token()?;
    let tls = connector(args.one("ca-pem")?)?;

    let deadline = Instant::now() + span;
    let mut tasks = Vec::new();
    for i in 0..concurrency.clamp(1, 256) {
        let (url, tls, token, what) = (
            urls[i % urls.len()].clone(),
            tls.clone(),
            token.clone(),
            what.clone(),
        );
        tasks.push(tokio::spawn(async move {
            worker(&url, &tls, &token, &what, deadline).await
        }));
    }
    let started = Instant::now();
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
    for task in tasks {
        match task.await {
            Ok(Ok((lat, errs, first))) => {
                latencies.extend(lat);
                errors += errs;
                first_error = first_error.or(first);
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok(json!({
        "what": what,
        "control_planes": urls.len(),
        "concurrency": concurrency,
        "seconds": seconds,
        "ok": latencies.len(),
        "errors": errors,
        "first_error": first_error,
        "per_second": latencies.len() as f64 / seconds,
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
    })
    .to_string())
}

type Outcome = (Vec<Duration>, u64, Option<String>);

async fn worker(
    url: &str,
    tls: &tokio_rustls::TlsConnector,
    token: &str,
    what: &str,
    deadline: Instant,
) -> Fallible<Outcome> {
    let mut conn = Conn::open(url, tls, token).await?;
    let mut lease_body = Vec::new();
    if what == "leases" {
        let session = conn.login().await?;
        let list: ResourceList =
            serde_json::from_slice(&conn.call(Method::GET, routes::RESOURCES, None).await?)?;
        let resource = list
            .resources
            .first()
            .ok_or("the account has no resource to lease")?;
        lease_body = serde_json::to_vec(&LeaseRequest {
            session_id: session.session_id,
            resource_id: resource.id,
        })?;
    }
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
    while Instant::now() < deadline {
        let at = Instant::now();
        let result = if what == "logins" {
            conn.login().await.map(|_| ())
        } else {
            conn.call(Method::POST, routes::LEASES, Some(lease_body.clone()))
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) => latencies.push(at.elapsed()),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
                // A broken connection is replaced; a refusal is counted and retried.
                conn = Conn::open(url, tls, token).await?;
            }
        }
    }
    Ok((latencies, errors, first_error))
}

fn connector(ca_pem: &str) -> Fallible<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
