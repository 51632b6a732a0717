//! The echo server and free ports.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

use sdm_testkit::{EchoServer, free_port};

#[test]
fn echo_round_trips_one_megabyte() {
    let echo = EchoServer::start().unwrap();
    assert!(echo.addr().ip().is_loopback());
    assert_eq!(echo.addr().port(), echo.port());

    let payload: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i * 31 % 251) as u8)
        .collect();
    let mut conn = TcpStream::connect(echo.addr()).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sent = payload.clone();
    // Write from another thread: the echo fills our receive buffer while we are still sending.
    let sender = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut received = Vec::new();
    conn.read_to_end(&mut received).unwrap();
    sender.join().unwrap();
    assert_eq!(received.len(), payload.len());
    assert!(received == payload, "echoed bytes differ");
}

#[test]
fn echo_serves_connections_concurrently() {
    let echo = EchoServer::start().unwrap();
    let mut a = TcpStream::connect(echo.addr()).unwrap();
    let mut b = TcpStream::connect(echo.addr()).unwrap();
    // b is answered while a stays open and idle.
    b.write_all(b"second").unwrap();
    let mut buf = [0u8; 6];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"second");
    a.write_all(b"first!").unwrap();
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"first!");
}

#[test]
fn dropping_the_server_closes_connections_and_stops_accepting() {
    let echo = EchoServer::start().unwrap();
    let addr = echo.addr();
    let mut open = TcpStream::connect(addr).unwrap();
    open.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    open.read_exact(&mut one).unwrap();

    drop(echo);
    let mut rest = Vec::new();
    match open.read_to_end(&mut rest) {
        Ok(n) => assert_eq!(n, 0, "expected EOF"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    assert_eq!(listener.local_addr().unwrap().port(), port);
}
