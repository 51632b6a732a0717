//! The whole sdm path on one machine, with real parts:
//!
//! 1. start `sdm-server` in-process on a temporary data dir (control plane + gateway);
//! 2. as the admin, create a service account (its token is printed once), a PostgreSQL
//!    resource (a throwaway cluster started from this machine's `initdb`/`pg_ctl`, or a TCP
//!    echo service where PostgreSQL is not installed) and grant it;
//! 3. as the job: `Session::login(token)`, `list_resources()`, the status table,
//!    `connect("pg")` (a substring of the name) and a query through the tunnel.
//!
//! Run from the workspace root: `cargo run --release --example quickstart`

use std::collections::BTreeMap;
use std::error::Error;

use sdm_core::ResourceKind;
use sdm_core::Session;
use sdm_core::admin::{AdminClient, Credentials, NewResource};
use sdm_server::Server;
use sdm_testkit::{EchoServer, PgCluster, PgConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // --- The server side: what an admin runs once. -------------------------------------------
    let data_dir = tempfile_dir()?;
    let server = Server::builder()
        .data_dir(data_dir.path().join("data"))
        .listen("127.0.0.1:0".parse()?)
        .gateway_listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    println!(
        "sdm-server running: API {}  gateway {}",
        server.api_url(),
        server.gateway_addr()
    );
    let admin_token = server
        .admin_token()
        .ok_or("a fresh data dir always yields an admin token")?
        .to_owned();
    let admin = AdminClient::new(&admin_token)?;

    let postgres = if PgCluster::available() {
        println!("starting a throwaway PostgreSQL cluster …");
        Some(tokio::task::spawn_blocking(|| PgCluster::start(PgConfig::default())).await??)
    } else {
        println!(
            "PostgreSQL (initdb/pg_ctl) is not installed: using a built-in TCP echo resource instead"
        );
        None
    };
    let echo = EchoServer::start()?;

    let account = admin.create_service_account("etl-bot").await?;
    println!(
        "\nservice account {:?} created; its token (shown only this once):\n{}\n",
        account.account.name, account.token
    );

    let database = match &postgres {
        Some(pg) => NewResource {
            name: "pgsql_quickstart".into(),
            kind: ResourceKind::Postgres,
            hostname: pg.host().into(),
            port: Some(pg.port()),
            port_override: None,
            tags: BTreeMap::from([("env".into(), "dev".into())]),
            credentials: Some(Credentials {
                username: pg.superuser().into(),
                password: pg.password().into(),
                database: Some("postgres".into()),
            }),
            upstream_tls: None,
            databases: Vec::new(),
            replication: false,
            ssh: None,
        },
        None => NewResource {
            name: "pg-echo".into(),
            kind: ResourceKind::Tcp,
            hostname: "127.0.0.1".into(),
            port: Some(echo.port()),
            port_override: None,
            tags: BTreeMap::new(),
            credentials: None,
            upstream_tls: None,
            databases: Vec::new(),
            replication: false,
            ssh: None,
        },
    };
    admin.create_resource(&database).await?;
    admin
        .create_resource(&NewResource {
            name: "server-echo".into(),
            kind: ResourceKind::Tcp,
            hostname: "127.0.0.1".into(),
            port: Some(echo.port()),
            port_override: None,
            tags: BTreeMap::new(),
            credentials: None,
            upstream_tls: None,
            databases: Vec::new(),
            replication: false,
            ssh: None,
        })
        .await?;
    admin.grant("etl-bot", &database.name).await?;
    admin.grant("etl-bot", "server-echo").await?;

    // --- The job side: everything comes from the token. --------------------------------------
    let session = Session::login(&account.token).await?;
    println!("logged in as {}", session.account().name);
    for r in session.list_resources().await? {
        println!("  granted: {} ({}, tags {:?})", r.name, r.kind, r.tags);
    }
    println!("\n{}", session.status().await?);

    let tunnel = session.connect("pg").await?;
    println!(
        "tunnel to {} listening on {}",
        tunnel.resource().name,
        tunnel.local_addr()
    );
    println!("\n{}", session.status().await?);
    // A TCP tunnel (the default; `ConnectOptions::unix_socket` gives a Unix socket instead).
    let addr = tunnel
        .local_addr()
        .tcp()
        .ok_or("the tunnel listens on a Unix socket, not a TCP port")?;

    match &postgres {
        Some(_) => {
            // No database password on the job's side: the gateway logs in with the credentials
            // the admin stored on the resource, whatever user name the job gives.
            let config = format!(
                "host={} port={} user=etl-job dbname=postgres sslmode=disable",
                addr.ip(),
                addr.port(),
            );
            let (client, connection) =
                tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let row = client
                .query_one("SELECT version(), current_user::text", &[])
                .await?;
            let (version, user): (String, String) = (row.get(0), row.get(1));
            println!(
                "SELECT version() through the tunnel (logged in as {user}, no password given):\n  {version}"
            );
        }
        None => {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(b"hello through sdm").await?;
            let mut reply = [0u8; 17];
            stream.read_exact(&mut reply).await?;
            println!(
                "echo through the tunnel: {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }

    tunnel.close();
    tunnel.closed().await;
    session.logout().await?;
    server.shutdown().await;
    println!("\ndone: tunnel closed, session logged out, server stopped");
    Ok(())
}

fn tempfile_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("sdm-quickstart-").tempdir()
}
