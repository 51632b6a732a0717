//! The web console's pages on a large installation: "with 10,000 accounts and 100,000 audit
//! rows every page renders in under 50 ms of server time (paged, never load-all)".
//!
//! A SQLite store, set up by a first start of `sdm-server`, is filled through the store API:
//! 10,000 service accounts, 10 ended login sessions for every other one (50,000), 20 resources,
//! 100,000 connection records written in batches of 2,000 with a query each, one record with
//! 300 queries. Then `sdm-server` starts again on it in-process on 127.0.0.1:0, an admin signs
//! in at `/console/sign-in` like a browser, and each page is fetched `RUNS` times (after 3
//! warm-ups) over one kept-alive TLS connection, so a time is the server's work plus one
//! loopback round trip (an upper bound of the server time). Every request goes through the
//! real session check and the real API handlers.
//!
//! ```sh
//! cargo bench --locked -p sdm-server --bench console_pages            # RUNS=50
//! RUNS=200 cargo bench --locked -p sdm-server --bench console_pages
//! SESSIONS=1 cargo bench --locked -p sdm-server --bench console_pages  # 1 login, not 10
//! ```
//!
//! Prints one row per page: status, median, p95 and max in milliseconds, and the answer's size.
//! A page this branch does not serve (another branch adds it) shows its 404 and no times.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sdm_control::store::{
    AccountRecord, ResourceRecord, SessionRecord, SqliteStore, Store, TokenRecord,
};
use sdm_proto::ResourceKind;
use sdm_proto::api::{AccountKind, AccountStatus, TlsMode};
use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord};
use tokio::net::TcpStream;
use uuid::Uuid;

const ACCOUNTS: usize = 10_000;
/// Login sessions of every other account, unless `SESSIONS` says otherwise.
const SESSIONS_PER_ACCOUNT: usize = 10;
const RESOURCES: usize = 20;
const RECORDS: usize = 100_000;
const BATCH: usize = 2_000;
/// Queries of the one record whose page is measured.
const DETAIL_QUERIES: u64 = 300;
/// Records start this far apart, ending now.
const STEP_SECS: i64 = 7;
const WARM_UPS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();

    // A first start sets the installation up (CA, keys, the first admin); the store is filled
    // while the server is stopped, then it starts again on it.
    let start = || {
        sdm_server::Server::builder()
            .data_dir(&data)
            .listen("127.0.0.1:0".parse().unwrap())
            .gateway_listen("127.0.0.1:0".parse().unwrap())
            .start()
    };
    let first = start().await.unwrap();
    let token = first.admin_token().expect("a new admin").to_owned();
    first.shutdown().await;
    let started = Instant::now();
    let detail = fill(&data.join("sdm.db")).await;
    eprintln!(
        "filled: {ACCOUNTS} accounts, {RESOURCES} resources, {RECORDS} audit records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let server = start().await.unwrap();
    let mut browser = Browser::connect(&data, server.api_addr()).await;
    browser.sign_in(&token).await;

    let middle = ACCOUNTS / 50 / 2;
    let from = sdm_proto::utc(sdm_proto::unix_now() - 86_400)[..16].replace(' ', "+");
    let pages = [
        ("users, first page", "/console/users".to_owned()),
        (
            "users, middle page",
            format!("/console/users?page={middle}"),
        ),
        ("users, search", "/console/users?q=svc-042".to_owned()),
        ("account", "/console/users/svc-05000".to_owned()),
        ("resources", "/console/resources".to_owned()),
        ("a resource", "/console/resources/db-02".to_owned()),
        ("settings", "/console/settings".to_owned()),
        ("audit, first page", "/console/audit".to_owned()),
        (
            "audit, filtered",
            format!("/console/audit?account=svc-00042&resource=db-02&from={from}"),
        ),
        ("audit, detail", format!("/console/audit/{detail}")),
        ("gateways", "/console/gateways".to_owned()),
    ];
    println!("| page | path | status | median ms | p95 ms | max ms | bytes |");
    println!("|---|---|---|---|---|---|---|");
    for (name, path) in pages {
        let (status, bytes) = browser.get(&path).await;
        if status != 200 {
            println!("| {name} | `{path}` | {status} | – | – | – | {bytes} |");
            continue;
        }
        for _ in 1..WARM_UPS {
            browser.get(&path).await;
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let (status, _) = browser.get(&path).await;
            times.push(t.elapsed());
            assert_eq!(status, 200, "{path}");
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        println!(
            "| {name} | `{path}` | {status} | {:.2} | {:.2} | {:.2} | {bytes} |",
            ms(at(0.5)),
            ms(at(0.95)),
            ms(*times.last().unwrap()),
        );
    }
    server.shutdown().await;
}

/// Fills the store; the id of the record with [`DETAIL_QUERIES`] queries.
async fn fill(path: &Path) -> Uuid {
    let path = path.to_owned();
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .unwrap()
            .unwrap(),
    );
    let sessions: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(SESSIONS_PER_ACCOUNT);
    let now = sdm_proto::unix_now();
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    for i in 0..ACCOUNTS {
        let account = AccountRecord {
            id: Uuid::new_v4(),
            name: format!("svc-{i:05}"),
            kind: AccountKind::Service,
            status: AccountStatus::Active,
            created_at: now - 86_400 * 30,
        };
        let token = TokenRecord {
            id: Uuid::new_v4(),
            account_id: account.id,
            secret_hash: vec![7; 32],
            created_at: account.created_at,
            revoked_at: None,
        };
        store.create_account(account.clone(), token).await.unwrap();
        // Every other account logged in, several times (ended sessions wait for pruning).
        for login in 0..(sessions * usize::from(i % 2 == 0)) {
            let created_at = now - (i as i64 % 86_400) - login as i64 * 3_600;
            store
                .create_session(SessionRecord {
                    id: Uuid::new_v4(),
                    account_id: account.id,
                    labels: BTreeMap::new(),
                    client: "bench".into(),
                    created_at,
                    ended_at: Some(created_at + 60),
                    last_used_at: None,
                })
                .await
                .unwrap();
        }
        accounts.push(account);
    }
    let mut resources = Vec::with_capacity(RESOURCES);
    for i in 0..RESOURCES {
        let resource = store
            .create_resource(ResourceRecord {
                id: Uuid::new_v4(),
                name: format!("db-{i:02}"),
                kind: ResourceKind::Postgres,
                hostname: "db.internal".into(),
                port: 5432,
                port_override: None,
                port_assigned: false,
                tags: BTreeMap::from([("env".into(), "prod".into())]),
                username: None,
                database: None,
                password_sealed: None,
                tls_mode: TlsMode::Disable,
                tls_ca_pem: None,
                databases: Vec::new(),
                replication: false,
                ssh_certificate_authority: false,
                ssh_record_sessions: false,
                ssh_host_key: None,
                created_at: now - 86_400 * 30,
            })
            .await
            .unwrap();
        resources.push(resource);
    }
    let mut detail = None;
    let mut events = Vec::with_capacity(BATCH * 2);
    for i in 0..RECORDS {
        let account = &accounts[i % ACCOUNTS];
        let resource = &resources[i % RESOURCES];
        let started_at = now - (RECORDS - i) as i64 * STEP_SECS;
        let id = Uuid::new_v4();
        let queries = if i == RECORDS - 10 {
            detail = Some(id);
            DETAIL_QUERIES
        } else {
            1
        };
        events.push(AuditEvent::Started(Box::new(AuditRecord {
            id,
            account_id: account.id,
            account_name: account.name.clone(),
            resource_id: resource.id,
            resource_name: resource.name.clone(),
            gateway: "embedded".into(),
            session_id: Uuid::new_v4(),
            lease_id: Uuid::new_v4(),
            labels: BTreeMap::from([("dag_id".into(), "nightly".into())]),
            client_addr: "127.0.0.1:50000".into(),
            started_at,
            ended_at: Some(started_at + 3),
            bytes_up: 1_733,
            bytes_down: 104_857,
            outcome: "ok".into(),
            error: None,
            query_count: queries,
        })));
        for seq in 1..=queries {
            events.push(AuditEvent::Query(AuditQueryEvent {
                connection_id: id,
                seq,
                at: started_at + 1,
                text: format!("SELECT * FROM orders WHERE id = {seq} /* {i} */"),
            }));
        }
        if events.len() >= BATCH {
            store
                .write_audit(std::mem::take(&mut events).into())
                .await
                .unwrap();
        }
    }
    store.write_audit(events.into()).await.unwrap();
    detail.unwrap()
}

/// One kept-alive TLS connection to the console, with the session cookie once signed in.
struct Browser {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    cookie: Option<String>,
}

impl Browser {
    async fn connect(data: &Path, addr: SocketAddr) -> Browser {
        let ca = CertificateDer::from_pem_file(data.join("ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        Browser {
            addr,
            sender,
            cookie: None,
        }
    }

    async fn sign_in(&mut self, token: &str) {
        let request = hyper::Request::post("/console/sign-in")
            .header(hyper::header::HOST, self.addr.to_string())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(format!("token={token}"))))
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 303, "sign-in");
        let cookie = response.headers()[hyper::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        response.into_body().collect().await.unwrap();
        self.cookie = Some(cookie);
    }

    /// The page's status and size.
    async fn get(&mut self, path: &str) -> (u16, usize) {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::COOKIE, self.cookie.clone().unwrap())
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.len())
    }
}
