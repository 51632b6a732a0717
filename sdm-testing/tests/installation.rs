//! sdm-testing against a real PostgreSQL (sdm-testkit's throwaway cluster, password
//! authentication) and a real echo server.

use sdm_core::Session;
use sdm_testing::{Installation, Upstream};
use sdm_testkit::{EchoServer, HbaAuth, PgCluster, PgConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn upstream(pg: &PgCluster) -> Upstream {
    Upstream::Postgres {
        host: pg.host().into(),
        port: pg.port(),
        database: "postgres".into(),
        user: pg.superuser().into(),
        password: pg.password().into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_reaches_the_database_without_a_password() {
    let pg = PgCluster::start(PgConfig::default().auth(HbaAuth::Scram)).unwrap();
    let installation = Installation::start("pgsql", upstream(&pg)).await.unwrap();
    let token = installation.new_token().await.unwrap();
    let session = Session::login(&token).await.unwrap();
    let tunnel = session.connect("pgsql").await.unwrap();
    let addr = tunnel.local_addr().tcp().expect("a TCP tunnel");
    let config = format!(
        "host={} port={} user=anyone dbname=postgres",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client.query_one("select 6 * 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // The gateway logged in as the stored user, not as the name the client gave.
    let row = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), pg.superuser());
    drop(client);
    tunnel.close();
    session.logout().await.unwrap();
    installation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_accounts_and_grants_are_optional() {
    let echo = EchoServer::start().unwrap();
    let upstream = Upstream::Tcp {
        host: "127.0.0.1".into(),
        port: echo.port(),
    };
    let installation = Installation::start("echo", upstream).await.unwrap();
    let first = Session::login(&installation.new_token().await.unwrap())
        .await
        .unwrap();
    let second = Session::login(&installation.new_token().await.unwrap())
        .await
        .unwrap();
    assert_ne!(first.account().name, second.account().name);
    let names: Vec<String> = first
        .list_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["echo"]);
    let ungranted = Session::login(&installation.new_token_without_grant().await.unwrap())
        .await
        .unwrap();
    assert!(ungranted.list_resources().await.unwrap().is_empty());
    installation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_upstream_passes_bytes_through() {
    let echo = EchoServer::start().unwrap();
    let upstream = Upstream::Tcp {
        host: "127.0.0.1".into(),
        port: echo.port(),
    };
    let installation = Installation::start("echo", upstream).await.unwrap();
    let session = Session::login(&installation.new_token().await.unwrap())
        .await
        .unwrap();
    let tunnel = session.connect("echo").await.unwrap();
    let mut stream =
        tokio::net::TcpStream::connect(tunnel.local_addr().tcp().expect("a TCP tunnel"))
            .await
            .unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"ping");
    installation.shutdown().await;
}
