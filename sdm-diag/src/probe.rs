//! The client half: one GET to a diagnostics listener, for a container's health check
//! (`sdm-server probe`, `sdm probe`), where the image holds no curl or shell.
//!
//! Plain HTTP/1.0 over std's blocking sockets, as the listener serves it: one request, the
//! answer read to its end (at most 64 KiB), the status line judged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The most of an answer read; a `/readyz` body is a few lines.
const MAX_ANSWER: u64 = 64 * 1024;

/// Why a probe failed; the message names the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The target is not `[http://]HOST:PORT[/PATH]`.
    #[error("{0:?} is not a diagnostics address: give HOST:PORT or http://HOST:PORT/PATH")]
    BadUrl(String),
    /// Nothing answered, or the answer was cut short or not HTTP.
    #[error("cannot probe {url}: {why}")]
    Unreachable {
        /// What was probed.
        url: String,
        /// Why it failed.
        why: String,
    },
    /// The listener answered with a status other than 200.
    #[error("{url} answered {status}: {body}")]
    NotReady {
        /// What was probed.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body, trimmed (for `/readyz`, the failing checks).
        body: String,
    },
}

/// Sends `GET` to `target` (`HOST:PORT` probes `/readyz`; `http://HOST:PORT/PATH` any path)
/// within `timeout`; the body on a 200.
pub fn probe(target: &str, timeout: Duration) -> Result<String, ProbeError> {
    let (authority, path) = split(target)?;
    let url = format!("http://{authority}{path}");
    let unreachable = |why: String| ProbeError::Unreachable {
        url: url.clone(),
        why,
    };
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    let mut last = String::from("the host name resolves to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = sdm_proto::error::describe_io(&e),
        }
    }
    let mut stream = stream.ok_or_else(|| unreachable(last))?;
    let io = |e: std::io::Error| unreachable(sdm_proto::error::describe_io(&e));
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1."))
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| unreachable("the answer is not HTTP".into()))?;
    let body = body.trim().to_owned();
    if status == 200 {
        Ok(body)
    } else {
        Err(ProbeError::NotReady { url, status, body })
    }
}

/// `(HOST:PORT, /PATH)` of a target.
fn split(target: &str) -> Result<(&str, &str), ProbeError> {
    let bad = || ProbeError::BadUrl(target.to_owned());
    let rest = match target.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err(bad()),
        None => target,
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/readyz"),
    };
    // A port is required (the listener has no default port), and the path must be plain.
    let port_given = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_given || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    Ok((authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_port_and_default_to_readyz() {
        assert_eq!(
            split("127.0.0.1:9090").unwrap(),
            ("127.0.0.1:9090", "/readyz")
        );
        assert_eq!(
            split("http://[::1]:9090/livez").unwrap(),
            ("[::1]:9090", "/livez")
        );
        for bad in [
            "127.0.0.1",
            "https://127.0.0.1:9090/",
            ":9090",
            "h:1/a b",
            "h:99999",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    /// A listener on loopback that answers one connection with `answer`, then closes.
    fn answering(answer: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(answer);
        });
        addr
    }

    #[test]
    fn a_503_names_its_checks_and_garbage_or_silence_is_no_answer() {
        let wait = Duration::from_secs(10);
        let addr = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        assert_eq!(probe(&addr, wait).unwrap(), "ok");
        let addr = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\nlogin: not logged in\n");
        let err = probe(&addr, wait).unwrap_err();
        assert!(
            matches!(&err, ProbeError::NotReady { status: 503, body, .. } if body == "login: not logged in"),
            "{err}"
        );
        for garbage in [&b"\x16\x03\x01 not http at all"[..], b"", b"HTTP/1.1 2"] {
            let addr = answering(garbage);
            let err = probe(&addr, wait).unwrap_err();
            assert!(err.to_string().contains("the answer is not HTTP"), "{err}");
        }
    }
}
