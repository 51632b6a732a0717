//! The fixture: a fresh server per test, one PostgreSQL cluster per test process.

use std::collections::BTreeMap;
use std::time::Duration;

use sdm_core::admin::{AdminClient, NewResource, ResourceDetails};
use sdm_core::{ResourceKind, Session};
use sdm_server::{RunningServer, Server};
use sdm_testkit::PgCluster;

pub struct Fixture {
    pub server: RunningServer,
    pub admin: AdminClient,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(|b| b).await
    }

    pub async fn start_with(
        configure: impl FnOnce(sdm_server::ServerBuilder) -> sdm_server::ServerBuilder,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let builder = Server::builder()
            .data_dir(dir.path().join("data"))
            .listen("127.0.0.1:0".parse().unwrap())
            .gateway_listen("127.0.0.1:0".parse().unwrap());
        let server = configure(builder).start().await.unwrap();
        let admin = AdminClient::new(server.admin_token().unwrap()).unwrap();
        Fixture {
            server,
            admin,
            _dir: dir,
        }
    }

    /// A new service account; returns its token.
    pub async fn service_account(&self, name: &str) -> String {
        self.admin.create_service_account(name).await.unwrap().token
    }

    /// A postgres resource for the shared cluster (no stored credentials: the client logs in).
    pub async fn pg_resource(&self, name: &str) -> ResourceDetails {
        let pg = pg();
        self.admin
            .create_resource(&NewResource {
                name: name.into(),
                kind: ResourceKind::Postgres,
                hostname: pg.host().into(),
                port: Some(pg.port()),
                port_override: None,
                tags: BTreeMap::from([("env".into(), "test".into())]),
                credentials: None,
                upstream_tls: None,
                databases: Vec::new(),
                replication: false,
                ssh: None,
            })
            .await
            .unwrap()
    }

    pub async fn tcp_resource(
        &self,
        name: &str,
        port: u16,
        port_override: Option<u16>,
    ) -> ResourceDetails {
        self.admin
            .create_resource(&NewResource {
                name: name.into(),
                kind: ResourceKind::Tcp,
                hostname: "127.0.0.1".into(),
                port: Some(port),
                port_override,
                tags: BTreeMap::new(),
                credentials: None,
                upstream_tls: None,
                databases: Vec::new(),
                replication: false,
                ssh: None,
            })
            .await
            .unwrap()
    }

    /// A service account granted `resources`, logged in.
    pub async fn session_with(&self, account: &str, resources: &[&str]) -> Session {
        let token = self.service_account(account).await;
        for r in resources {
            self.admin.grant(account, r).await.unwrap();
        }
        Session::login(&token).await.unwrap()
    }
}

pub fn pg() -> &'static PgCluster {
    PgCluster::shared()
        .expect("these tests need PostgreSQL's initdb/pg_ctl (apt-get install postgresql)")
}

/// A tokio-postgres client to `host:port` with the shared cluster's superuser credentials.
pub async fn pg_client(host: &str, port: u16) -> tokio_postgres::Client {
    let pg = pg();
    let config = format!(
        "host={host} port={port} user={} password={} dbname=postgres sslmode=disable connect_timeout=20",
        pg.superuser(),
        pg.password()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
