//! A job's first query, timed from the start: `Session::login(token)` → `connect("pg")` →
//! tokio-postgres connects through the tunnel → the first row of `SELECT 1`. Every iteration is
//! a new session, as a new job process would make: a new API client (no pooled connection, no
//! TLS session to resume), a new lease, a new tunnel.
//!
//! An in-process `sdm-server` on 127.0.0.1 and a throwaway PostgreSQL cluster (the machine's
//! `initdb`/`pg_ctl`, as the tests use). Not criterion: the run prints the samples' median,
//! p10 and p90 as one JSON line, so that two builds (e.g. two API clients) can be run in turns
//! by a script and compared within one run — see docs/BENCHMARKS.md.
//!
//! `cargo bench -p sdm-core --bench first_row`; `FIRST_ROW_ITERS` (default 40) and
//! `FIRST_ROW_WARMUP` (default 5) change the counts, `FIRST_ROW_LABEL` names the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sdm_core::admin::{AdminClient, NewResource};
use sdm_core::{ResourceKind, Session};
use sdm_server::Server;
use sdm_testkit::{PgCluster, PgConfig};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn first_row(token: &str, pg: &PgCluster) -> Duration {
    let start = Instant::now();
    let session = Session::login(token).await.expect("login");
    let tunnel = session.connect("pg").await.expect("connect");
    let config = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=postgres sslmode=disable \
         connect_timeout=20",
        tunnel.port().unwrap(),
        pg.superuser(),
        pg.password()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .expect("postgres through the tunnel");
    let task = tokio::spawn(connection);
    let row = client.query_one("SELECT 1", &[]).await.expect("query");
    let elapsed = start.elapsed();
    assert_eq!(row.get::<_, i32>(0), 1);
    drop(client);
    let _ = task.await;
    tunnel.close();
    session.logout().await.expect("logout");
    elapsed
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let iters = env_count("FIRST_ROW_ITERS", 40).max(1);
    let warmup = env_count("FIRST_ROW_WARMUP", 5);
    let label = std::env::var("FIRST_ROW_LABEL").unwrap_or_else(|_| "sdm-core".into());
    let pg = PgCluster::start(PgConfig::new()).expect("PostgreSQL (initdb/pg_ctl)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let samples = rt.block_on(async {
        let server = Server::builder()
            .data_dir(dir.path().join("data"))
            .listen("127.0.0.1:0".parse().expect("addr"))
            .gateway_listen("127.0.0.1:0".parse().expect("addr"))
            .start()
            .await
            .expect("server");
        let admin = AdminClient::new(server.admin_token().expect("token")).expect("admin");
        admin
            .create_resource(&NewResource {
                name: "pg".into(),
                kind: ResourceKind::Postgres,
                hostname: pg.host().into(),
                port: Some(pg.port()),
                port_override: None,
                tags: BTreeMap::new(),
                credentials: None,
                upstream_tls: None,
                databases: Vec::new(),
                replication: false,
                ssh: None,
            })
            .await
            .expect("resource");
        let token = admin
            .create_service_account("bench")
            .await
            .expect("account")
            .token;
        admin.grant("bench", "pg").await.expect("grant");
        for _ in 0..warmup {
            first_row(&token, &pg).await;
        }
        let mut samples = Vec::with_capacity(iters);
        for _ in 0..iters {
            samples.push(first_row(&token, &pg).await.as_secs_f64() * 1000.0);
        }
        drop(server);
        samples
    });
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let ms: Vec<String> = samples.iter().map(|s| format!("{s:.3}")).collect();
    println!(
        "{{\"bench\":\"first_row\",\"label\":{label:?},\"n\":{},\"median_ms\":{:.3},\"p10_ms\":{:.3},\"p90_ms\":{:.3},\"samples_ms\":[{}]}}",
        samples.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.1),
        percentile(&sorted, 0.9),
        ms.join(",")
    );
}
