//! `dial`: a connection to the resource inside the process, no listener.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Fixture, pg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_runs_over_a_dialed_stream() {
    let fx = Fixture::start().await;
    fx.pg_resource("pgsql").await;
    let session = fx.session_with("etl", &["pgsql"]).await;
    let stream = session.dial("pgsql").await.unwrap();
    let pg = pg();
    let mut config = tokio_postgres::Config::new();
    config
        .user(pg.superuser())
        .password(pg.password())
        .dbname("postgres");
    let (client, connection) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT 'dialed'::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "dialed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialed_streams_carry_bytes_both_ways() {
    let fx = Fixture::start().await;
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let session = fx.session_with("etl", &["echo"]).await;
    let mut stream = session.dial("echo").await.unwrap();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let expected = payload.clone();
    let writer = async move {
        wr.write_all(&payload).await.unwrap();
        wr.flush().await.unwrap();
    };
    let reader = async move {
        let mut got = vec![0u8; expected.len()];
        rd.read_exact(&mut got).await.unwrap();
        assert!(got == expected, "echoed bytes differ");
    };
    tokio::join!(writer, reader);
}
