//! The blocking facade, used from threads without a runtime (as C and Python do).

use std::io::{Read, Write};

use sdm_core::{ErrorKind, blocking};

use crate::common::Fixture;

#[test]
fn blocking_session_connects_and_dials() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let (fx, token) = rt.block_on(async {
        let fx = Fixture::start().await;
        fx.tcp_resource("echo", echo.port(), None).await;
        let token = fx.service_account("cron").await;
        fx.admin.grant("cron", "echo").await.unwrap();
        (fx, token)
    });

    let session = blocking::Session::login(&token).unwrap();
    let names: Vec<String> = session
        .list_resources()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["echo"]);
    let tunnel = session.connect("echo").unwrap();
    let mut tcp = std::net::TcpStream::connect(tunnel.local_addr().tcp().unwrap()).unwrap();
    tcp.write_all(b"blocking").unwrap();
    let mut buf = [0u8; 8];
    tcp.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"blocking");

    let mut dialed = session.dial("echo").unwrap();
    dialed.write_all(b"socketpair").unwrap();
    let mut buf = [0u8; 10];
    dialed.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"socketpair");

    assert!(session.status().unwrap().resources[0].is_connected());
    blocking::close_tunnel(&tunnel).unwrap();
    assert!(!session.status().unwrap().resources[0].is_connected());
    session.logout().unwrap();
    rt.block_on(fx.server.shutdown());
}

#[tokio::test]
async fn blocking_calls_inside_a_runtime_are_refused_not_deadlocked() {
    let err = blocking::Session::login("sdm_svc_whatever").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("async"), "{err}");
}
