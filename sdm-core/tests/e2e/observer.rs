//! `TunnelObserver`: what a session's tunnels tell an application (the agent's metrics), through
//! a real gateway to an echo server and to a resource nobody listens on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sdm_core::{Resource, Session, TunnelObserver};
use sdm_testkit::{EchoServer, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Fixture, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// Writes down every call, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn of(&self, resource: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.split(' ').nth(1) == Some(resource))
            .collect()
    }
}

impl TunnelObserver for Recorder {
    fn tunnel_opened(&self, resource: &Resource) {
        self.push(format!("opened {}", resource.name));
    }

    fn tunnel_closed(&self, resource: &Resource) {
        self.push(format!("closed {}", resource.name));
    }

    fn connection_opened(&self, resource: &Resource) {
        self.push(format!("accepted {}", resource.name));
    }

    fn connection_reached(&self, resource: &Resource, took: Duration) {
        assert!(!took.is_zero());
        self.push(format!("reached {}", resource.name));
    }

    fn connection_closed(&self, resource: &Resource, sent: u64, received: u64, reached: bool) {
        self.push(format!(
            "ended {} sent={sent} received={received} reached={reached}",
            resource.name
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_hears_of_each_tunnel_once_and_of_each_connection_with_its_bytes() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    fx.tcp_resource("nowhere", free_port(), None).await;
    let token = fx.service_account("etl").await;
    for r in ["echo", "nowhere"] {
        fx.admin.grant("etl", r).await.unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    let session = Session::builder()
        .token(token)
        .observer(recorder.clone())
        .login()
        .await
        .unwrap();

    let tunnel = session.connect("echo").await.unwrap();
    let mut local = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    let out = vec![7u8; 1000];
    local.write_all(&out).await.unwrap();
    let mut back = vec![0u8; out.len()];
    local.read_exact(&mut back).await.unwrap();
    assert_eq!(back, out);
    local.shutdown().await.unwrap();
    assert_eq!(local.read(&mut [0u8; 1]).await.unwrap(), 0);
    drop(local);
    let ended = eventually(WAIT, async || recorder.of("echo").len() == 4).await;
    assert!(ended, "{:?}", recorder.events());
    assert_eq!(
        recorder.of("echo"),
        [
            "opened echo",
            "accepted echo",
            "reached echo",
            "ended echo sent=1000 received=1000 reached=true",
        ]
    );

    // The gateway cannot reach this one: the connection ends without reaching it.
    let nowhere = session.connect("nowhere").await.unwrap();
    let mut local = TcpStream::connect(nowhere.local_addr().tcp().unwrap())
        .await
        .unwrap();
    local.write_all(b"hello?").await.unwrap();
    let mut rest = Vec::new();
    let _ = local.read_to_end(&mut rest).await;
    let ended = eventually(WAIT, async || recorder.of("nowhere").len() == 3).await;
    assert!(ended, "{:?}", recorder.events());
    let events = recorder.of("nowhere");
    assert_eq!(events[..2], ["opened nowhere", "accepted nowhere"]);
    assert!(
        events[2].starts_with("ended nowhere ") && events[2].ends_with(" received=0 reached=false"),
        "{events:?}"
    );

    // Closed by its owner, then again by the logout and the drop: told once per tunnel.
    tunnel.close();
    tunnel.closed().await;
    session.logout().await.unwrap();
    drop((tunnel, nowhere));
    let closed: Vec<String> = recorder
        .events()
        .into_iter()
        .filter(|e| e.starts_with("closed "))
        .collect();
    assert_eq!(closed, ["closed echo", "closed nowhere"]);
}
