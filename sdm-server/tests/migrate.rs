//! `sdm-server migrate`: an installation populated through the real API on SQLite moves to
//! PostgreSQL and keeps working there with the same key files: old tokens log in, the stored
//! password still opens (credential injection against a real PostgreSQL), grants and the audit
//! trail are there.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sdm_core::Session;
use sdm_core::admin::{AdminClient, AuditFilter, Credentials, NewResource};
use sdm_proto::ResourceKind;
use sdm_server::{RunningServer, Server};
use sdm_testkit::PgCluster;

const WAIT: Duration = Duration::from_secs(15);

async fn cluster() -> &'static PgCluster {
    tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap()
        .unwrap()
}

/// Runs `sdm-server migrate` with `args`, with no database URL in its environment.
async fn migrate(args: Vec<String>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sdm-server"));
    command
        .arg("migrate")
        .args(args)
        .env_remove("SDM_DATABASE_URL")
        .env_remove("RUST_LOG");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn start(data_dir: &Path, database_url: Option<&str>) -> RunningServer {
    let mut builder = Server::builder()
        .data_dir(data_dir)
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap());
    if let Some(url) = database_url {
        builder = builder.database_url(url);
    }
    builder.start().await.unwrap()
}

/// Through the tunnel as a user that does not exist, without a password: the gateway logs in
/// with the stored credentials, to the stored database (none is named). Returns `current_user`.
async fn query_through(session: &Session, sql: &[&str]) -> String {
    let tunnel = session.connect("app-db").await.unwrap();
    let config = format!(
        "host={} port={} user=anything sslmode=disable connect_timeout=20",
        tunnel.host().unwrap(),
        tunnel.port().unwrap()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    for statement in sql {
        client.simple_query(statement).await.unwrap();
    }
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    let _ = tokio::time::timeout(WAIT, connection).await;
    tunnel.close();
    user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_installation_moves_to_postgres_and_keeps_working() {
    let pg = cluster().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let role = format!("app_{}", &suffix[..12]);
    let password = format!("pw-{suffix}");
    let app_db = format!("appdb_{}", &suffix[..12]);
    pg.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
    )
    .unwrap();
    pg.psql(
        "postgres",
        &format!("CREATE DATABASE {app_db} OWNER {role}"),
    )
    .unwrap();

    // --- The SQLite installation, populated through the API and used through a tunnel. ---
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sqlite = start(&data, None).await;
    let admin_token = sqlite.admin_token().unwrap().to_owned();
    let admin = AdminClient::new(&admin_token).unwrap();
    admin
        .create_resource(
            &NewResource::new("app-db", ResourceKind::Postgres, pg.host())
                .port(pg.port())
                .credentials(Credentials {
                    username: role.clone(),
                    password: password.clone(),
                    database: Some(app_db.clone()),
                }),
        )
        .await
        .unwrap();
    admin
        .create_resource(
            &NewResource::new("ssh-box", ResourceKind::Ssh, "127.0.0.1")
                .port(22)
                .ssh(sdm_core::admin::SshSettings {
                    username: "deploy".into(),
                    certificate_authority: true,
                    ..Default::default()
                }),
        )
        .await
        .unwrap();
    let etl_token = admin.create_service_account("etl").await.unwrap().token;
    admin.grant("etl", "app-db").await.unwrap();
    admin.create_service_account("bi").await.unwrap();
    admin.grant("bi", "app-db").await.unwrap();
    admin.grant("bi", "ssh-box").await.unwrap();
    admin.suspend_account("bi").await.unwrap();
    let old_token = admin.create_service_account("rotated").await.unwrap().token;
    let new_token = admin.rotate_token("rotated").await.unwrap().token;

    let session = Session::builder()
        .token(&etl_token)
        .labels([("dag_id", "nightly")])
        .login()
        .await
        .unwrap();
    let user = query_through(
        &session,
        &[
            "CREATE TABLE moved (n int)",
            "INSERT INTO moved VALUES (42)",
        ],
    )
    .await;
    assert_eq!(user, role);
    // Wait until the audit trail holds the ended connection and its queries.
    let deadline = tokio::time::Instant::now() + WAIT;
    let record = loop {
        let list = admin
            .audit(&AuditFilter::default().account("etl"))
            .await
            .unwrap();
        if let Some(r) = list.records.first()
            && r.ended_at.is_some()
            && r.query_count >= 3
        {
            break r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ended audit record: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let queries_before = admin
        .audit_queries(&record.id.to_string(), 0)
        .await
        .unwrap()
        .queries;
    assert!(
        queries_before
            .iter()
            .any(|q| q.text.contains("INSERT INTO moved")),
        "{queries_before:?}"
    );
    let accounts_before = admin.list_accounts().await.unwrap();
    session.logout().await.unwrap();
    sqlite.shutdown().await;

    // --- Migrate with the command, into a new database. ---
    let store_db = format!("sdm_{}", &suffix[..12]);
    pg.psql("postgres", &format!("CREATE DATABASE {store_db}"))
        .unwrap();
    let url = pg.url(&store_db);
    let from = format!("sqlite:{}", data.display());
    let out = migrate(vec![
        "--from".into(),
        from.clone(),
        "--to".into(),
        url.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for part in [
        "copied 4 accounts, 5 tokens, 2 resources, 3 grants, 1 sessions, 1 gateways, 3 settings, 1 audited connections, 3 audited queries, 0 recording lines from",
        "audited connections",
        &format!(
            "to postgres://{}@127.0.0.1:{}/{store_db}",
            pg.superuser(),
            pg.port()
        ),
    ] {
        assert!(report.contains(part), "{part:?} not in {report}");
    }
    assert!(!text(&out).contains(pg.password()), "{}", text(&out));

    // A second run finds the data and refuses, saying how to go on; --force replaces it.
    let out = migrate(vec![
        "--from".into(),
        from.clone(),
        "--to".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already holds sdm data (4 accounts") && stderr.contains("--force"),
        "{stderr}"
    );
    let out = migrate(vec![
        "--from".into(),
        from,
        "--to".into(),
        url.clone(),
        "--force".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));

    // --- The same data dir's keys, the state in PostgreSQL. ---
    let server = start(&data, Some(&url)).await;
    assert_eq!(
        server.admin_token(),
        None,
        "the installation exists already"
    );
    let admin = AdminClient::with_api_url(&admin_token, Some(server.api_url())).unwrap();
    assert_eq!(admin.list_accounts().await.unwrap(), accounts_before);
    let grants: Vec<String> = admin
        .list_grants("bi")
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.resource_name)
        .collect();
    assert_eq!(grants.len(), 2, "{grants:?}");
    let moved = admin
        .audit(&AuditFilter::default().account("etl"))
        .await
        .unwrap();
    assert_eq!(moved.records.first(), Some(&record));
    let queries_after = admin
        .audit_queries(&record.id.to_string(), 0)
        .await
        .unwrap()
        .queries;
    assert_eq!(queries_after, queries_before);

    // Old tokens log in (the rotated one stays revoked); the stored password still opens.
    let login = |token: String| {
        let url = server.api_url().to_owned();
        async move { Session::builder().token(token).api_url(url).login().await }
    };
    assert!(login(old_token).await.is_err(), "a revoked token logged in");
    login(new_token).await.unwrap();
    assert!(login(String::new()).await.is_err());
    let session = login(etl_token).await.unwrap();
    let user = query_through(&session, &["INSERT INTO moved VALUES (43)"]).await;
    assert_eq!(user, role);
    let count = pg.psql(&app_db, "SELECT count(*) FROM moved").unwrap();
    assert_eq!(count, "2");
    server.shutdown().await;
}
