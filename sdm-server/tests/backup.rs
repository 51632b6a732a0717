//! `sdm-server backup`: a copy of a SQLite installation's database taken while the control
//! plane serves and writes, restored into a new data directory with the installation's keys,
//! serves the tokens, grants and stored credentials that existed at the backup and nothing made
//! after it. A backup never overwrites a file and leaves nothing behind when it fails.
//!
//! docs/OPERATIONS.md ("Backup") names these tests.

mod common;
mod processes;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sdm_core::{ErrorKind, Session};
use sdm_testkit::EchoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use processes::{control_plane, spawn, spawn_control_plane};

const KEYS: [&str; 5] = ["ca.pem", "ca.key", "lease.key", "ssh_ca.key", "secret.key"];

fn run_backup(data: &Path, to: &Path) -> (i32, String, String) {
    let mut proc = spawn(
        "backup",
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ],
        &[],
    );
    let (code, stderr) = proc.wait_exit();
    let stdout = if code == 0 {
        proc.first_stdout_line()
    } else {
        String::new()
    };
    (code, stdout, stderr)
}

async fn echo_through(session: &Session, resource: &str) {
    let tunnel = session.connect(resource).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_serving_restores_the_tokens_it_saw_and_none_made_after() {
    let mut cp = control_plane().await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, None).await;
    let (before, session) = cp.session("before", &["echo"]).await;
    echo_through(&session, "echo").await;

    // The control plane keeps writing (new accounts, the session's lease) during the backup.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let admin = sdm_core::admin::AdminClient::new(&cp.admin_token).unwrap();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut made = 0;
            while writing.load(Ordering::Relaxed) && made < 500 {
                admin
                    .create_service_account(&format!("busy-{made}"))
                    .await
                    .unwrap();
                made += 1;
            }
            made
        })
    };
    let data = cp.dir.path().join("data");
    let saved = tempfile::tempdir().unwrap();
    let backup_file = saved.path().join("sdm-backup.db");
    let (code, stdout, stderr) = tokio::task::block_in_place(|| run_backup(&data, &backup_file));
    writing.store(false, Ordering::Relaxed);
    let made = writer.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("backed up "), "{stdout}");
    assert!(stderr.contains("the backup holds no keys"), "{stderr}");
    assert!(made > 0, "nothing was written during the backup");
    let mode = std::fs::metadata(&backup_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let left: Vec<_> = std::fs::read_dir(saved.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["sdm-backup.db"], "the backup left other files");

    let (after, _) = cp.session("after", &["echo"]).await;
    session.logout().await.unwrap();
    cp.proc.kill();

    // Restore: a new data directory with the installation's keys and the backup as sdm.db,
    // served at the same address (the tokens name it).
    let restored = tempfile::tempdir().unwrap();
    let restored_data = restored.path().join("data");
    std::fs::create_dir(&restored_data).unwrap();
    std::fs::set_permissions(&restored_data, std::fs::Permissions::from_mode(0o700)).unwrap();
    for key in KEYS {
        std::fs::copy(data.join(key), restored_data.join(key)).unwrap();
    }
    std::fs::copy(&backup_file, restored_data.join("sdm.db")).unwrap();
    let mut server = spawn_control_plane(&restored_data, &cp.api_addr.to_string());
    server.wait_for("sdm-server is running");

    // The token of before the backup logs in and reaches its resource (the stored resource
    // and grant came back); the token made after it does not exist here.
    let session = Session::login(&before).await.unwrap();
    echo_through(&session, "echo").await;
    let refused = Session::login(&after).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unauthenticated, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_never_overwrites_and_leaves_nothing_when_it_fails() {
    let cp = control_plane().await;
    let data = cp.dir.path().join("data");
    let dir = tempfile::tempdir().unwrap();

    let existing = dir.path().join("existing.db");
    std::fs::write(&existing, b"precious").unwrap();
    let (code, _, stderr) = tokio::task::block_in_place(|| run_backup(&data, &existing));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");

    let nowhere = dir.path().join("missing-dir/backup.db");
    let (code, _, stderr) = tokio::task::block_in_place(|| run_backup(&data, &nowhere));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let to = dir.path().join("from-nothing.db");
    let (code, _, stderr) = tokio::task::block_in_place(|| run_backup(empty.path(), &to));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert!(stderr.contains("pg_dump"), "{stderr}");

    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["existing.db"], "a failed backup left files behind");
}
