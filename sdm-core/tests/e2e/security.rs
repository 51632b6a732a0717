//! Local exposure and secrets: Unix-socket tunnels are private, the same-user check refuses
//! other OS users, and no token shows up in Debug output or error messages.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use sdm_core::{ConnectOptions, ErrorKind, ListenAddr, Session};
use sdm_testkit::EchoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Fixture, pg};

/// Runs `sql` with psql through the socket `.s.PGSQL.5432` in `dir`; returns what it printed.
async fn psql_in(dir: &std::path::Path, sql: &str) -> String {
    let pg = pg();
    let (host, sql) = (dir.to_str().unwrap().to_owned(), sql.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(pg.bin("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                &host,
                "-p",
                "5432",
                "-U",
                pg.superuser(),
            ])
            .args(["-d", "postgres", "-c", &sql])
            .env("PGPASSWORD", pg.password())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_tunnels_are_private_and_work_with_psql() {
    let fx = Fixture::start().await;
    fx.pg_resource("pgsql").await;
    let session = fx.session_with("etl", &["pgsql"]).await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("sockets");
    let path = dir.join(".s.PGSQL.5432");
    let tunnel = session
        .connect_with("pgsql", ConnectOptions::default().unix_socket(&path))
        .await
        .unwrap();
    assert_eq!(tunnel.local_addr(), &ListenAddr::Unix(path.clone()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&path), 0o600);

    assert_eq!(
        psql_in(&dir, "SELECT 'over a unix socket'").await,
        "over a unix socket"
    );

    // A directory others can reach is refused; closing removes the socket file.
    let open_dir = scratch.path().join("shared");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = session
        .connect_with(
            "pgsql",
            ConnectOptions::default().unix_socket(open_dir.join("s")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("0700"), "{err}");
    tunnel.close();
    tunnel.closed().await;
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_user_check_refuses_other_os_users() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let session = fx.session_with("etl", &["echo"]).await;
    let tunnel = session
        .connect_with("echo", ConnectOptions::default().same_user_only())
        .await
        .unwrap();
    // This user gets through.
    let mut mine = tokio::net::TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    mine.write_all(b"me").await.unwrap();
    let mut buf = [0u8; 2];
    mine.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"me");

    // Another user (only testable with the privilege to become one) is cut off.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("not root: the other-user half of this test needs root to switch users");
        return;
    }
    let as_nobody = async |port: u16| {
        tokio::task::spawn_blocking(move || {
            use std::os::unix::process::CommandExt;
            std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "exec 3<>/dev/tcp/127.0.0.1/{port} && printf other >&3 && timeout 10 head -c 5 <&3"
                ))
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
                .stdout
        })
        .await
        .unwrap()
    };
    // Control: without the check, the other user does get through.
    let open = session.connect("echo").await.unwrap();
    assert_eq!(as_nobody(open.port().unwrap()).await, b"other");
    let refused = as_nobody(tunnel.port().unwrap()).await;
    assert!(
        refused.is_empty(),
        "another OS user got data through: {refused:?}"
    );
    // The tunnel keeps serving its own user.
    let mut again = tokio::net::TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    again.write_all(b"ok").await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), again.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_show_in_debug_output_or_errors() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let token = fx.service_account("etl").await;
    fx.admin.grant("etl", "echo").await.unwrap();
    let secret_part = &token[token.len() - 20..];
    let builder = Session::builder().token(&token);
    let session = builder.clone().login().await.unwrap();
    let tunnel = session.connect("echo").await.unwrap();
    let admin_token = fx.server.admin_token().unwrap().to_owned();
    for shown in [
        format!("{builder:?}"),
        format!("{session:?}"),
        format!("{tunnel:?}"),
        format!("{:?}", fx.admin),
        format!("{:?}", fx.server),
        format!("{:?}", sdm_proto::Token::parse(&token).unwrap()),
    ] {
        assert!(
            !shown.contains(secret_part),
            "token in Debug output: {shown}"
        );
        assert!(
            !shown.contains(&admin_token[admin_token.len() - 20..]),
            "admin token in Debug output: {shown}"
        );
    }
    fx.admin.suspend_account("etl").await.unwrap();
    let err = Session::login(&token).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(secret_part));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_unix_socket_is_named_for_libpq_and_removed_with_its_directory() {
    let fx = Fixture::start().await;
    fx.pg_resource("pgsql").await;
    let session = fx.session_with("etl", &["pgsql"]).await;
    // SAFETY: geteuid has no preconditions.
    let base = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => std::path::PathBuf::from(runtime).join("sdm"),
        None => std::env::temp_dir().join(format!("sdm-{}", unsafe { libc::geteuid() })),
    };
    let tunnel = session
        .connect_with("pgsql", ConnectOptions::default().private_unix_socket())
        .await
        .unwrap();
    // The honest address: a path, and no TCP host or port.
    let path = tunnel.local_addr().unix_path().unwrap().to_owned();
    assert_eq!(tunnel.local_addr().tcp(), None);
    assert_eq!((tunnel.host(), tunnel.port()), (None, None));
    assert_eq!(path.file_name().unwrap(), ".s.PGSQL.5432");
    let dir = path.parent().unwrap().to_owned();
    assert_eq!(dir.parent(), Some(base.as_path()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&path)), (0o700, 0o600));
    // The status row shows the path and no port.
    let status = session.status().await.unwrap();
    let row = status
        .resources
        .iter()
        .find(|r| r.resource.name == "pgsql")
        .unwrap();
    assert!(
        matches!(&row.state, sdm_core::ConnectionState::Connected { local_addr, .. } if local_addr == &ListenAddr::Unix(path.clone()))
    );
    assert_eq!(row.port(), None);

    assert_eq!(
        psql_in(&dir, "SELECT 'private socket'").await,
        "private socket"
    );
    tunnel.close();
    tunnel.closed().await;
    assert!(!dir.exists(), "{dir:?} is left behind");
}
