//! An installation for end-to-end tests through the real client library: a server on
//! 127.0.0.1:0 in a temporary data dir, with an admin client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sdm_core::admin::{AdminClient, Credentials, NewResource, ResourceDetails};
use sdm_core::{ResourceKind, Session, Tunnel};
use sdm_server::{RunningServer, Server, ServerBuilder};
use sdm_testkit::{PgCluster, PgConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Installation {
    pub server: RunningServer,
    pub admin: AdminClient,
    pub dir: tempfile::TempDir,
}

impl Installation {
    pub async fn start() -> Installation {
        Installation::start_with(|b| b).await
    }

    pub async fn start_with(
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> Installation {
        let dir = tempfile::tempdir().unwrap();
        let builder = Server::builder()
            .data_dir(dir.path().join("data"))
            .listen("127.0.0.1:0".parse().unwrap())
            .gateway_listen("127.0.0.1:0".parse().unwrap());
        let server = configure(builder).start().await.unwrap();
        let admin = AdminClient::new(server.admin_token().unwrap()).unwrap();
        Installation { server, admin, dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn resource(&self, resource: NewResource) -> ResourceDetails {
        self.admin.create_resource(&resource).await.unwrap()
    }

    /// A service account granted `resources`, logged in.
    pub async fn session(&self, account: &str, resources: &[&str]) -> Session {
        let token = self
            .admin
            .create_service_account(account)
            .await
            .unwrap()
            .token;
        for r in resources {
            self.admin.grant(account, r).await.unwrap();
        }
        Session::login(&token).await.unwrap()
    }
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

/// Whether `s` still carries an echo.
pub async fn echoes_on(s: &mut TcpStream) -> bool {
    let attempt = async {
        s.write_all(b"ping").await.ok()?;
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.ok()?;
        (&back == b"ping").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), attempt).await,
        Ok(Some(()))
    )
}

/// A cluster started with `config` (off the async runtime), with role `app` (password
/// `password`) owning database `app` and the databases in `more`.
pub async fn app_cluster(config: PgConfig, password: &str, more: &[&str]) -> PgCluster {
    let password = password.to_owned();
    let more: Vec<String> = more.iter().map(|d| (*d).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let pg = PgCluster::start(config).unwrap();
        pg.psql(
            "postgres",
            &format!("CREATE ROLE app LOGIN PASSWORD '{password}'"),
        )
        .unwrap();
        for db in std::iter::once("app").chain(more.iter().map(String::as_str)) {
            pg.psql("postgres", &format!("CREATE DATABASE {db} OWNER app"))
                .unwrap();
        }
        pg
    })
    .await
    .unwrap()
}

/// A PostgreSQL resource `name` for database `app` of `pg` (an [`app_cluster`]), whose gateway
/// logs in as role `app` with `password`; pinned to gateways by `pin` (`"dc=db"`) if given.
pub fn app_db_resource(
    name: &str,
    pg: &PgCluster,
    password: &str,
    pin: Option<&str>,
) -> NewResource {
    let mut resource = NewResource::new(name, ResourceKind::Postgres, pg.host())
        .port(pg.port())
        .credentials(Credentials {
            username: "app".into(),
            password: password.into(),
            database: Some("app".into()),
        });
    if let Some(pin) = pin {
        resource = resource.tag("sdm.gateway", pin);
    }
    resource
}

/// A tokio-postgres connection through `tunnel` to database `app`, as a user that does not
/// exist and without a password (the gateway logs in), and the task driving it.
pub async fn pg_connect(
    tunnel: &Tunnel,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let config = format!(
        "host={} port={} user=anything dbname=app sslmode=disable connect_timeout=20",
        tunnel.host().unwrap(),
        tunnel.port().unwrap()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    Ok((client, tokio::spawn(connection)))
}

/// A TLS 1.3 client trusting only the CA in `data_dir` (the installation's `ca.pem`), offering
/// `alpn` (`b"http/1.1"` for the API, `b"sdm/1"` for a gateway).
pub fn ca_connector(data_dir: &Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = CertificateDer::from_pem_file(data_dir.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A new CA and a server certificate naming `names`, and `pg` switched to TLS with them; the
/// CA's PEM certificate.
pub fn enable_tls(pg: &PgCluster, names: &[&str]) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let params = CertificateParams::new(names).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    // The server reads its files as the cluster's owner, and refuses a key others can read.
    let dir = pg.data_dir();
    let owner = std::fs::metadata(dir).unwrap();
    for (name, contents) in [
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    pg.psql("postgres", "ALTER SYSTEM SET ssl = on").unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    // The postmaster rereads its configuration in its own time; new sessions show when.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg.psql("postgres", "SHOW ssl").unwrap().trim() != "on" {
        assert!(std::time::Instant::now() < deadline, "ssl = on never took");
        std::thread::sleep(Duration::from_millis(50));
    }
    ca.pem()
}
