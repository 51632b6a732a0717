//! Tunnels to a real PostgreSQL: drivers, psql, concurrency, large results, lifecycle.

use std::time::Duration;

use sdm_core::{ConnectOptions, ConnectionState, ErrorKind, ResourceKind, Session};
use sdm_testkit::{EchoServer, free_port};

use crate::common::{Fixture, eventually, pg, pg_client};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_list_connect_and_query() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.pg_resource("pgsql_1_31").await;
    fx.tcp_resource("server-245a", echo.port(), None).await;
    fx.pg_resource("payroll").await; // exists, but not granted
    let session = fx
        .session_with("etl-bot", &["pgsql_1_31", "server-245a"])
        .await;
    assert_eq!(session.account().name, "etl-bot");

    let resources = session.list_resources().await.unwrap();
    let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["pgsql_1_31", "server-245a"]);
    assert_eq!(resources[0].kind, ResourceKind::Postgres);
    assert_eq!(
        resources[0].tags.get("env").map(String::as_str),
        Some("test")
    );
    assert_eq!(resources[1].kind, ResourceKind::Tcp);

    let tunnel = session.connect("pgsql").await.unwrap();
    assert_eq!(tunnel.resource().name, "pgsql_1_31");
    assert!(tunnel.local_addr().tcp().unwrap().ip().is_loopback());
    assert!(tunnel.is_open());

    let client = pg_client(&tunnel.host().unwrap(), tunnel.port().unwrap()).await;
    let row = client
        .query_one("SELECT current_user::text, 40 + 2, version()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), pg().superuser());
    assert_eq!(row.get::<_, i32>(1), 42);
    assert!(row.get::<_, String>(2).starts_with("PostgreSQL"));

    let status = session.status().await.unwrap();
    let pgsql = &status.resources[0];
    assert!(
        matches!(&pgsql.state, ConnectionState::Connected { local_addr, .. } if local_addr == tunnel.local_addr())
    );
    assert!(!status.resources[1].is_connected());
    let table = status.to_string();
    assert!(table.contains("DATASOURCE NAME"), "{table}");
    assert!(
        table.contains(&format!(
            "pgsql_1_31          connected         {:<10}postgres",
            tunnel.port().unwrap()
        )),
        "{table}"
    );
    assert!(
        table.contains("server-245a         not connected     -         tcp"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_binary_queries_through_the_tunnel() {
    let fx = Fixture::start().await;
    fx.pg_resource("warehouse").await;
    let session = fx.session_with("bi-extract", &["warehouse"]).await;
    let tunnel = session.connect("ware").await.unwrap();
    let (host, port) = (tunnel.host().unwrap(), tunnel.port().unwrap());
    let out = tokio::task::spawn_blocking(move || {
        let pg = pg();
        std::process::Command::new(pg.bin("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                &host,
                "-p",
                &port.to_string(),
                "-U",
                pg.superuser(),
                "-d",
                "postgres",
            ])
            .args([
                "-c",
                "SELECT 'through-' || 'sdm', count(*) FROM generate_series(1, 1000)",
            ])
            .env("PGPASSWORD", pg.password())
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "20")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through-sdm|1000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_share_one_tunnel() {
    let fx = Fixture::start().await;
    fx.pg_resource("pgsql").await;
    let session = fx.session_with("etl", &["pgsql"]).await;
    let tunnel = session.connect("pgsql").await.unwrap();
    let mut tasks = Vec::new();
    for worker in 0..8i32 {
        let (host, port) = (tunnel.host().unwrap(), tunnel.port().unwrap());
        tasks.push(tokio::spawn(async move {
            let client = pg_client(&host, port).await;
            let mut sum = 0i64;
            for i in 0..25i32 {
                let row = client
                    .query_one("SELECT $1::int * 1000 + $2::int", &[&worker, &i])
                    .await
                    .unwrap();
                sum += i64::from(row.get::<_, i32>(0));
            }
            sum
        }));
    }
    for (worker, task) in tasks.into_iter().enumerate() {
        let expected: i64 = (0..25).map(|i| worker as i64 * 1000 + i).sum();
        assert_eq!(task.await.unwrap(), expected);
    }
}

/// Connections one after another reuse the tunnel's warm gateway connections (framed streams)
/// instead of a new gateway connection each; every stream still carries only its own bytes, ends
/// both ways, and has its own audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_connections_one_after_another_reuse_gateway_connections() {
    use std::collections::HashSet;

    use sdm_core::admin::AuditFilter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    fx.pg_resource("pgsql").await;
    let session = fx.session_with("etl", &["echo", "pgsql"]).await;
    let echo_tunnel = session.connect("echo").await.unwrap();
    let pg_tunnel = session.connect("pgsql").await.unwrap();
    let idle = async |tunnel: &sdm_core::Tunnel| {
        assert!(
            eventually(WAIT, async || tunnel.active_connections() == 0).await,
            "a connection was still carried"
        );
    };

    for round in 0..10u8 {
        let mut s = tokio::net::TcpStream::connect(echo_tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap();
        let payload = vec![round; 1000 + usize::from(round)];
        s.write_all(&payload).await.unwrap();
        // Half-close: the echo service sees the end, answers it, and closes its side.
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert!(back == payload, "round {round} got other bytes");
        drop(s);
        idle(&echo_tunnel).await;
    }
    for round in 0..5i32 {
        let client = pg_client(&pg_tunnel.host().unwrap(), pg_tunnel.port().unwrap()).await;
        let row = client
            .query_one("SELECT $1::int + 1", &[&round])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), round + 1);
        drop(client);
        idle(&pg_tunnel).await;
    }

    let records = async |resource: &str, count: usize| {
        let mut records = Vec::new();
        let ended = eventually(WAIT, async || {
            records = fx
                .admin
                .audit(&AuditFilter::default().resource(resource))
                .await
                .unwrap()
                .records;
            records.len() == count && records.iter().all(|r| r.ended_at.is_some())
        })
        .await;
        assert!(ended, "{records:#?}");
        records
    };
    let echoed = records("echo", 10).await;
    let mut sizes: Vec<(u64, u64)> = echoed.iter().map(|r| (r.bytes_up, r.bytes_down)).collect();
    sizes.sort();
    let expected: Vec<(u64, u64)> = (1000..1010).map(|n| (n, n)).collect();
    assert_eq!(sizes, expected);
    assert!(echoed.iter().all(|r| r.outcome == "ok"), "{echoed:#?}");
    let queried = records("pgsql", 5).await;
    assert!(
        queried
            .iter()
            .all(|r| r.outcome == "ok" && r.query_count == 1),
        "{queried:#?}"
    );
    // Two warm connections carry them all; a slow first refill may add a cold one or two.
    for (resource, records) in [("echo", &echoed), ("pgsql", &queried)] {
        let addresses: HashSet<&str> = records.iter().map(|r| r.client_addr.as_str()).collect();
        assert!(
            addresses.len() * 2 <= records.len(),
            "{resource}: {} streams came over {} gateway connections",
            records.len(),
            addresses.len()
        );
    }
}

/// A resource that speaks first (like SSH or MySQL servers) through warm and reused gateway
/// connections: the OPEN that the client library holds back for the first bytes goes out when
/// the local client only reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_speak_first_are_reached_through_warm_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let greeter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = greeter.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = greeter.accept().await {
            tokio::spawn(async move {
                socket.write_all(b"hello\n").await?;
                let mut name = [0u8; 3];
                socket.read_exact(&mut name).await?;
                socket.write_all(&name).await?;
                socket.shutdown().await
            });
        }
    });
    let fx = Fixture::start().await;
    fx.tcp_resource("greeter", port, None).await;
    let session = fx.session_with("etl", &["greeter"]).await;
    let tunnel = session.connect("greeter").await.unwrap();
    for round in 0..4 {
        let mut s = tokio::net::TcpStream::connect(tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap();
        let mut greeting = [0u8; 6];
        tokio::time::timeout(WAIT, s.read_exact(&mut greeting))
            .await
            .expect("the server's greeting arrived")
            .unwrap();
        assert_eq!(&greeting, b"hello\n", "round {round}");
        s.write_all(b"etl").await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"etl", "round {round}");
        drop(s);
        assert!(eventually(WAIT, async || tunnel.active_connections() == 0).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_arrives_intact() {
    let fx = Fixture::start().await;
    fx.pg_resource("pgsql").await;
    let session = fx.session_with("etl", &["pgsql"]).await;
    let tunnel = session.connect("pgsql").await.unwrap();
    let client = pg_client(&tunnel.host().unwrap(), tunnel.port().unwrap()).await;
    // 48 rows of 1 MB each, every row a different letter: order and content are both checked.
    let rows = client
        .query(
            "SELECT i, repeat(chr(65 + i % 26), 1000000) FROM generate_series(0, 47) AS i ORDER BY i",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 48);
    for (i, row) in rows.iter().enumerate() {
        let text: &str = row.get(1);
        let letter = char::from(b'A' + (i % 26) as u8);
        assert_eq!(text.len(), 1_000_000, "row {i}");
        assert!(text.chars().all(|c| c == letter), "row {i} corrupted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_releases_the_port_and_it_can_be_reused() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let session = fx.session_with("etl", &["echo"]).await;
    let port = free_port();
    let tunnel = session
        .connect_with("echo", ConnectOptions::default().port(port))
        .await
        .unwrap();
    assert_eq!(tunnel.port().unwrap(), port);
    assert_eq!(echo_once(tunnel.local_addr().tcp().unwrap()).await, b"ping");
    tunnel.close();
    tunnel.closed().await;
    assert!(!tunnel.is_open());
    assert!(tunnel.close_reason().is_none());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    assert!(!session.status().await.unwrap().resources[0].is_connected());

    // Dropping closes too, and the same port is free again.
    let again = session
        .connect_with("echo", ConnectOptions::default().port(port))
        .await
        .unwrap();
    assert_eq!(echo_once(again.local_addr().tcp().unwrap()).await, b"ping");
    drop(again);
    assert!(
        eventually(Duration::from_secs(10), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_logout_close_tunnels() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo-a", echo.port(), None).await;
    fx.tcp_resource("echo-b", echo.port(), None).await;
    let session = fx.session_with("etl", &["echo-a", "echo-b"]).await;
    let a = session.connect("echo-a").await.unwrap();
    let b = session.connect("echo-b").await.unwrap();
    session.disconnect("echo-a").await.unwrap();
    assert!(!a.is_open());
    assert!(b.is_open());
    assert_eq!(
        session
            .disconnect("nothing-like-this")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::ResourceNotFound
    );
    session.logout().await.unwrap();
    assert!(!b.is_open());
    assert_eq!(
        session.list_resources().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_override_is_used_and_a_taken_port_is_port_in_use() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    let fixed = free_port();
    fx.tcp_resource("fixed-port", echo.port(), Some(fixed))
        .await;
    let session = fx.session_with("etl", &["fixed-port"]).await;
    let tunnel = session.connect("fixed").await.unwrap();
    assert_eq!(tunnel.port().unwrap(), fixed);
    let status = session.status().await.unwrap();
    assert_eq!(status.resources[0].port(), Some(fixed));

    // The port is now taken (by the first tunnel): a second one cannot listen there.
    let err = session.connect("fixed").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PortInUse);
    assert!(err.message().contains(&fixed.to_string()), "{err}");
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = other.local_addr().unwrap().port();
    let err = session
        .connect_with("fixed", ConnectOptions::default().port(taken))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PortInUse);
    assert!(!err.retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_options_and_no_warm_connections() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let token = fx.service_account("airflow").await;
    fx.admin.grant("airflow", "echo").await.unwrap();
    let session = Session::builder()
        .token(&token)
        .api_url(fx.server.api_url())
        .labels([("dag_id", "nightly_etl"), ("task_id", "extract")])
        .timeout(Duration::from_secs(20))
        .warm_connections(0)
        .login()
        .await
        .unwrap();
    let tunnel = session.connect("echo").await.unwrap();
    for _ in 0..5 {
        assert_eq!(echo_once(tunnel.local_addr().tcp().unwrap()).await, b"ping");
    }
}

pub async fn echo_once(addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    buf.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_settings_reach_the_client_at_login() {
    let fx = Fixture::start().await;
    let token = fx.service_account("etl").await;
    assert!(!fx.admin.settings().await.unwrap().auto_connect);
    assert!(
        !Session::login(&token)
            .await
            .unwrap()
            .settings()
            .auto_connect
    );
    assert!(fx.admin.set_auto_connect(true).await.unwrap().auto_connect);
    assert!(
        Session::login(&token)
            .await
            .unwrap()
            .settings()
            .auto_connect
    );
    // Service tokens cannot change them.
    let err = sdm_core::admin::AdminClient::new(&token).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
}

/// Port overrides through the admin SDK: switching on gives resources ports a job sees and
/// connects on; bad ranges and full ranges are `InvalidArgument` that change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_ports_reach_the_job_and_bad_ranges_are_refused() {
    use sdm_core::admin::{PortRange, SettingsChanges};

    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let session = fx.session_with("etl", &["echo"]).await;
    assert_eq!(
        session.list_resources().await.unwrap()[0].port_override,
        None
    );

    let first = free_port();
    let range = PortRange::new(first, first).unwrap();
    let settings = fx
        .admin
        .update_settings(&SettingsChanges {
            assign_ports: Some(true),
            port_range: Some(range),
            ..SettingsChanges::default()
        })
        .await
        .unwrap();
    assert!(settings.assign_ports);
    assert_eq!(settings.port_range, range);
    let listed = session.list_resources().await.unwrap();
    assert_eq!(listed[0].port_override, Some(first));
    let tunnel = session.connect("echo").await.unwrap();
    assert_eq!(tunnel.port().unwrap(), first);
    tunnel.close();

    // The one port is taken: a new resource is refused with a message that says what to do.
    let err = fx
        .admin
        .create_resource(
            &sdm_core::admin::NewResource::new("full", ResourceKind::Tcp, "127.0.0.1").port(9),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("widen the range"), "{err}");
    // The SDK sends a range as given; the server refuses one that starts after it ends.
    let err = fx
        .admin
        .update_settings(&SettingsChanges {
            port_range: Some(PortRange {
                first: 30,
                last: 20,
            }),
            ..SettingsChanges::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("starts after it ends"), "{err}");
    assert_eq!(fx.admin.settings().await.unwrap().port_range, range);
    assert_eq!(fx.admin.regenerate_ports().await.unwrap().port_range, range);
}
