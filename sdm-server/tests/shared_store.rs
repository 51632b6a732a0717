//! Several control planes on one PostgreSQL database, sharing their key files: one
//! installation, whichever process a client or an admin talks to.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use sdm_core::Session;
use sdm_core::admin::{AdminClient, NewResource};
use sdm_proto::ResourceKind;
use sdm_server::{RunningServer, Server, ServerError};
use sdm_testkit::{EchoServer, PgCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY_FILES: [&str; 5] = ["ca.pem", "ca.key", "lease.key", "ssh_ca.key", "secret.key"];
const WAIT: Duration = Duration::from_secs(10);

/// A new database in this test process's PostgreSQL cluster; its URL.
async fn fresh_database() -> String {
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap()
        .unwrap();
    let name = format!("sdm_{}", uuid::Uuid::new_v4().simple());
    pg.psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    pg.url(&name)
}

fn copy_keys(from: &Path, to: &Path) {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(to)
        .unwrap();
    for file in KEY_FILES {
        // std::fs::copy keeps the 0600 mode.
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

async fn start(dir: &Path, url: &str, gateway: &str) -> Result<RunningServer, ServerError> {
    Server::builder()
        .data_dir(dir)
        .database_url(url)
        .gateway_name(gateway)
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
}

async fn login(token: &str, server: &RunningServer) -> Session {
    Session::builder()
        .token(token)
        .api_url(server.api_url())
        .login()
        .await
        .unwrap()
}

async fn echo_through(session: &Session) -> TcpStream {
    let tunnel = session.connect("echo").await.unwrap();
    let mut stream = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"ping");
    // The tunnel object may go: the accepted connection lives on its own.
    std::mem::forget(tunnel);
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_database_are_one_installation() {
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = start(&dir_a, &url, "gw-a").await.unwrap();
    let admin_token = a.admin_token().unwrap().to_owned();
    copy_keys(&dir_a, &dir_b);
    let b = start(&dir_b, &url, "gw-b").await.unwrap();
    assert_eq!(b.admin_token(), None, "the installation exists already");
    assert_eq!(a.ca_fingerprint(), b.ca_fingerprint());

    // The admin token issued by A administers through B, and the other way round.
    let admin_a = AdminClient::with_api_url(&admin_token, Some(a.api_url())).unwrap();
    let admin_b = AdminClient::with_api_url(&admin_token, Some(b.api_url())).unwrap();
    let echo = EchoServer::start().unwrap();
    admin_a
        .create_resource(
            &NewResource::new("echo", ResourceKind::Tcp, "127.0.0.1").port(echo.port()),
        )
        .await
        .unwrap();
    let etl = admin_b.create_service_account("etl").await.unwrap().token;
    admin_b.grant("etl", "echo").await.unwrap();
    let names =
        |list: Vec<sdm_core::admin::Account>| list.into_iter().map(|a| a.name).collect::<Vec<_>>();
    assert_eq!(
        names(admin_a.list_accounts().await.unwrap()),
        names(admin_b.list_accounts().await.unwrap())
    );
    assert_eq!(
        names(admin_a.list_accounts().await.unwrap()),
        ["admin", "etl"]
    );

    // A token created on B logs in on both; leases signed by either are accepted by the
    // gateways of both (they share lease.key), whichever the client is sent to.
    let on_a = login(&etl, &a).await;
    let on_b = login(&etl, &b).await;
    let listed: Vec<String> = on_a
        .list_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(listed, ["echo"]);
    let mut open_via_a = echo_through(&on_a).await;
    let _open_via_b = echo_through(&on_b).await;
    // Leases carry a random first gateway: over a few connections each session uses both
    // gateways with leases its own control plane signed, which works because both sign with
    // the same lease.key.
    assert_eq!(a.lease_public_key(), b.lease_public_key());
    for session in [&on_a, &on_b] {
        for _ in 0..4 {
            let stream = session.dial("echo").await;
            assert!(stream.is_ok(), "{stream:?}");
        }
    }

    // Suspending through B closes the connection opened through A within the bound.
    admin_b.suspend_account("etl").await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(WAIT, open_via_a.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the connection opened through A stayed open: {closed:?}"
    );
    let refused = Session::builder()
        .token(&etl)
        .api_url(a.api_url())
        .login()
        .await;
    assert!(refused.is_err(), "a suspended account logged in through A");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_planes_starting_at_once_on_a_new_database_make_one_admin() {
    // Keys made once (by a throwaway SQLite installation) and copied to both, as an operator
    // would before starting a fleet.
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed");
    Server::builder()
        .data_dir(&seed)
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
        .shutdown()
        .await;
    let url = fresh_database().await;
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    copy_keys(&seed, &dir_a);
    copy_keys(&seed, &dir_b);
    let (a, b) = tokio::join!(start(&dir_a, &url, "gw-a"), start(&dir_b, &url, "gw-b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let tokens: Vec<&str> = [a.admin_token(), b.admin_token()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(tokens.len(), 1, "exactly one first admin token is shown");
    for server in [&a, &b] {
        let admin = AdminClient::with_api_url(tokens[0], Some(server.api_url())).unwrap();
        let accounts = admin.list_accounts().await.unwrap();
        assert_eq!(accounts.len(), 1, "{accounts:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_with_other_keys_is_refused() {
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let dir_a = dir.path().join("a");
    let a = start(&dir_a, &url, "gw-a").await.unwrap();

    // No keys at all: the CA is not made anew for an installation that exists.
    let err = start(&dir.path().join("empty"), &url, "gw-x")
        .await
        .unwrap_err();
    let text = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(text.contains("no CA"), "{text}");

    // The same CA but another secret.key: stored passwords could not be opened.
    let other = dir.path().join("other-secret");
    copy_keys(&dir_a, &other);
    std::fs::remove_file(other.join("secret.key")).unwrap();
    let seed = dir.path().join("seed");
    Server::builder()
        .data_dir(&seed)
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
        .shutdown()
        .await;
    std::fs::copy(seed.join("secret.key"), other.join("secret.key")).unwrap();
    let err = start(&other, &url, "gw-y").await.unwrap_err();
    assert!(matches!(err, ServerError::SecretKeyMismatch), "{err:?}");

    // The same CA and secret.key but another lease.key: its leases would be refused elsewhere.
    let other_lease = dir.path().join("other-lease");
    copy_keys(&dir_a, &other_lease);
    std::fs::copy(seed.join("lease.key"), other_lease.join("lease.key")).unwrap();
    let err = start(&other_lease, &url, "gw-w").await.unwrap_err();
    assert!(matches!(err, ServerError::LeaseKeyMismatch), "{err:?}");
    assert!(err.to_string().contains("copy lease.key"), "{err}");

    // ... or another ssh_ca.key: servers would refuse its certificates, clients its host keys.
    let other_ssh_ca = dir.path().join("other-ssh-ca");
    copy_keys(&dir_a, &other_ssh_ca);
    std::fs::copy(seed.join("ssh_ca.key"), other_ssh_ca.join("ssh_ca.key")).unwrap();
    let err = start(&other_ssh_ca, &url, "gw-s").await.unwrap_err();
    assert!(matches!(err, ServerError::SshCaMismatch), "{err:?}");
    assert!(err.to_string().contains("copy ssh_ca.key"), "{err}");

    // A bad URL is a configuration error that does not show the password.
    let err = start(
        &dir_a,
        "postgres://sdm:hunter2@127.0.0.1:notaport/sdm",
        "gw-z",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServerError::Config(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    a.shutdown().await;
}
