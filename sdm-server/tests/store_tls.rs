//! TLS to the PostgreSQL store (docs/OPERATIONS.md, "TLS to the PostgreSQL store"): a real
//! cluster with `ssl = on`, a control plane whose `--database-url` says
//! `sslmode=verify-full&sslrootcert=FILE`, and the impostors it must refuse.

mod support;

use std::path::Path;

use sdm_core::admin::AdminClient;
use sdm_server::{RunningServer, Server, ServerError};
use sdm_testkit::{PgCluster, PgConfig};
use support::enable_tls;

/// A cluster with database `sdm` and, when `names` is given, TLS with a certificate for them
/// (the CA's PEM returned).
async fn cluster(names: Option<&'static [&'static str]>) -> (PgCluster, Option<String>) {
    tokio::task::spawn_blocking(move || {
        let pg = PgCluster::start(PgConfig::default().database("sdm")).unwrap();
        let ca = names.map(|names| enable_tls(&pg, names));
        (pg, ca)
    })
    .await
    .unwrap()
}

async fn start(dir: &Path, url: &str) -> Result<RunningServer, ServerError> {
    Server::builder()
        .data_dir(dir)
        .database_url(url)
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
}

/// `pg`'s URL for database `sdm` with `query` appended, connecting to `host`.
fn url(pg: &PgCluster, host: &str, query: &str) -> String {
    pg.url("sdm").replace("@127.0.0.1:", &format!("@{host}:")) + query
}

fn write_ca(dir: &Path, pem: &str) -> String {
    let path = dir.join("db-ca.pem");
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

/// The TLS state of every connection the control plane holds, seen by the database.
fn store_connections_encrypted(pg: &PgCluster) -> Vec<String> {
    let out = pg
        .psql(
            "postgres",
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'sdm-server'",
        )
        .unwrap();
    out.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_full_store_is_reached_over_checked_tls_only() {
    let (pg, ca) = cluster(Some(&["127.0.0.1", "localhost"])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca.unwrap());
    let server = start(
        &dir.path().join("data"),
        &url(
            &pg,
            "127.0.0.1",
            &format!("?sslmode=verify-full&sslrootcert={ca_file}"),
        ),
    )
    .await
    .unwrap();
    // The state is there: an admin works through the API, which works through the store.
    let admin = AdminClient::new(server.admin_token().unwrap()).unwrap();
    let created = admin.create_service_account("tls-bot").await.unwrap();
    assert_eq!(created.account.name, "tls-bot");
    let encrypted = store_connections_encrypted(&pg);
    assert!(!encrypted.is_empty(), "no connection of sdm-server is seen");
    assert!(
        encrypted.iter().all(|ssl| ssl == "t"),
        "a store connection in clear text: {encrypted:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_a_misnamed_certificate_or_no_tls_is_refused_at_start() {
    // The certificate names localhost only, so 127.0.0.1 is not a name it carries.
    let (pg, ca) = cluster(Some(&["localhost"])).await;
    let (plain, _) = cluster(None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca.unwrap());
    let other_ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    };
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca_file = write_ca(other_dir.path(), &other_ca);
    let verify = |ca: &str| format!("?sslmode=verify-full&sslrootcert={ca}");
    for (url, says) in [
        // A server whose certificate another CA signed: an impostor.
        (
            url(&pg, "localhost", &verify(&other_ca_file)),
            "invalid peer certificate",
        ),
        // The right CA, but the certificate does not name the host connected to.
        (
            url(&pg, "127.0.0.1", &verify(&ca_file)),
            "invalid peer certificate: certificate not valid for name",
        ),
        // TLS demanded from a server that has none.
        (
            url(&plain, "127.0.0.1", "?sslmode=require"),
            "does not support TLS",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let err = start(data.path(), &url).await.err().unwrap_or_else(|| {
            panic!("{url}: the control plane started");
        });
        let text = sdm_proto::error::one_line(&err);
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains(pg.password()), "{text}");
    }
    // The same certificate, reached by the name it carries, is accepted; `require` takes
    // any certificate (libpq's meaning) and still encrypts. One installation: one data dir.
    let data = tempfile::tempdir().unwrap();
    for url in [
        url(&pg, "localhost", &verify(&ca_file)),
        url(&pg, "127.0.0.1", "?sslmode=require"),
    ] {
        let server = start(data.path(), &url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let encrypted = store_connections_encrypted(&pg);
        assert!(
            !encrypted.is_empty() && encrypted.iter().all(|ssl| ssl == "t"),
            "{url}: {encrypted:?}"
        );
        server.shutdown().await;
    }
}
