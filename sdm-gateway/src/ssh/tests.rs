//! The SSH handler between the real OpenSSH client (`ssh`, `scp`, `sftp`) and a real `sshd`:
//! each test puts the gateway's SSH side on a loopback port, as the gateway does behind a
//! verified lease, and drives it as a job would.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sdm_proto::audit::AuditEvent;
use sdm_proto::gateway::SshUpstream;
use sdm_proto::{ErrorKind, Lease, ResourceKind};
use sdm_testkit::sshd::{KeyPair, Sshd, SshdConfig, keygen};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{SshConnection, serve};
use crate::finished::Finished;
use crate::{AuditSink, AuditUnavailable, Denied, Directory, Upstream};

/// Audit lines as the trail would keep them, and recording lines (channel, seq, line).
#[derive(Default)]
struct Lines {
    queries: Mutex<Vec<String>>,
    recorded: Mutex<Vec<(u32, u64, String)>>,
    /// Set: a trail that cannot be written.
    failing: AtomicBool,
    /// While above 0, asking for room for a recording says no (and counts down).
    no_room: AtomicU32,
}

impl AuditSink for Lines {
    fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditUnavailable("the disk is full".into()));
        }
        match event {
            AuditEvent::Query(q) => self.queries.lock().unwrap().push(q.text),
            AuditEvent::Recording(l) => self
                .recorded
                .lock()
                .unwrap()
                .push((l.channel, l.seq, l.line)),
            _ => {}
        }
        Ok(())
    }

    fn has_room_for_bulk(&self) -> bool {
        self.no_room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
    }
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }

    /// The recording lines written so far, in order.
    fn recorded(&self) -> Vec<(u32, u64, String)> {
        self.recorded.lock().unwrap().clone()
    }
}

/// Records first host keys as the control plane does (compare-and-set).
#[derive(Default)]
struct Keys(Mutex<Option<String>>);

#[async_trait::async_trait]
impl Directory for Keys {
    async fn authorize(&self, _: &Lease, _: &[u8]) -> Result<Upstream, Denied> {
        unreachable!("the SSH handler is given its upstream")
    }
    async fn revocation_epoch(&self) -> Option<i64> {
        None
    }
    async fn record_host_key(&self, _: &Lease, _: &[u8], key: &str) -> Result<(), Denied> {
        let mut recorded = self.0.lock().unwrap();
        match recorded.as_deref() {
            Some(k) if k != key => Err(Denied {
                kind: ErrorKind::UpstreamRefused,
                message: "another key was recorded".into(),
            }),
            _ => {
                *recorded = Some(key.to_string());
                Ok(())
            }
        }
    }
}

/// The gateway's SSH side on a loopback port, in front of one resource.
struct Gateway {
    port: u16,
    dir: tempfile::TempDir,
    lines: Arc<Lines>,
    keys: Arc<Keys>,
    finished: mpsc::UnboundedReceiver<Finished>,
    stop: watch::Sender<Option<Denied>>,
}

fn upstream(sshd: &Sshd, login: &KeyPair, host_key: &KeyPair, known: Vec<String>) -> Upstream {
    Upstream {
        resource_name: "web-1".into(),
        kind: ResourceKind::Ssh,
        host: "127.0.0.1".into(),
        port: sshd.port(),
        credentials: Some(sdm_proto::api::Credentials {
            username: sshd.user().into(),
            password: String::new(),
            database: None,
        }),
        upstream_tls: Default::default(),
        account_name: "etl-bot".into(),
        labels: Default::default(),
        databases: Vec::new(),
        replication: false,
        ssh: Some(SshUpstream {
            host_key: host_key.private.clone(),
            known_host_keys: known,
            private_key: login.private.clone(),
            certificate: None,
            certificate_valid_before: None,
            record_sessions: false,
        }),
    }
}

impl Gateway {
    async fn start(upstream: Upstream, host_key: &KeyPair) -> Gateway {
        Gateway::start_with(upstream, host_key, Duration::from_secs(20)).await
    }

    async fn start_with(upstream: Upstream, host_key: &KeyPair, handshake: Duration) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_key.public),
        )
        .unwrap();
        let lines = Arc::new(Lines::default());
        let keys = Arc::new(Keys::default());
        let (done, finished) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(None::<Denied>);
        let (sink, directory) = (lines.clone(), keys.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let connection = SshConnection {
                    upstream: upstream.clone(),
                    directory: directory.clone(),
                    lease: lease(),
                    lease_bytes: Vec::new(),
                    audit: sink.clone(),
                    connection_id: Uuid::new_v4(),
                    handshake_timeout: handshake,
                };
                let mut stopped = stopped.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let stop = async move {
                        let why = stopped.wait_for(Option::is_some).await.unwrap();
                        why.clone().unwrap()
                    };
                    let _ = done.send(serve(&mut socket, connection, stop).await);
                });
            }
        });
        Gateway {
            port,
            dir,
            lines,
            keys,
            finished,
            stop,
        }
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The OpenSSH client options a job uses against the tunnel: no key, no password, the
    /// gateway's host key pinned.
    fn options(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        let port_flag = if program == "ssh" { "-p" } else { "-P" };
        command
            .arg(port_flag)
            .arg(self.port.to_string())
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args([
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PasswordAuthentication=no",
            ])
            .args(["-o", "LogLevel=ERROR"])
            .env_remove("SSH_AUTH_SOCK")
            .kill_on_drop(true);
        command
    }

    async fn ssh(&self, args: &[&str]) -> Output {
        let mut command = self.options("ssh");
        command.arg("anyuser@127.0.0.1").args(args);
        bounded(command).await
    }

    async fn next_finished(&mut self) -> Finished {
        tokio::time::timeout(Duration::from_secs(30), self.finished.recv())
            .await
            .expect("the connection did not end")
            .unwrap()
    }
}

async fn bounded(mut command: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the OpenSSH client did not finish")
        .unwrap()
}

fn lease() -> Lease {
    Lease {
        id: Uuid::new_v4(),
        account_id: Uuid::new_v4(),
        resource_id: Uuid::new_v4(),
        session_id: Uuid::new_v4(),
        issued_at: 0,
        expires_at: i64::MAX,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server that lets in `login`, and the gateway's own host key.
fn server_for(login: &KeyPair) -> (Sshd, KeyPair) {
    let sshd = Sshd::start(&SshdConfig {
        authorized_keys: vec![login.public.clone()],
        ..Default::default()
    })
    .unwrap();
    (sshd, keygen("ed25519").unwrap())
}

#[tokio::test]
async fn a_command_runs_with_no_key_its_exit_status_returns_and_the_audit_names_it() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let mut gateway = Gateway::start(up, &host_key).await;

    let out = gateway
        .ssh(&["echo hello from $(whoami); echo oops >&2; exit 3"])
        .await;
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("hello from {}\n", sshd.user()));
    assert_eq!(text(&out.stderr), "oops\n");

    let finished = gateway.next_finished().await;
    assert_eq!(finished.failure, None);
    assert!(finished.up > 0 && finished.down > 0);
    let lines = gateway.lines.all();
    let channel = lines[0].split(':').next().unwrap();
    assert_eq!(
        lines[0],
        format!("{channel}: exec echo hello from $(whoami); echo oops >&2; exit 3")
    );
    assert!(
        lines[1].starts_with(&format!("{channel} closed: exit status 3;")),
        "{lines:?}"
    );
    assert_eq!(finished.queries, 2);
}

#[tokio::test]
async fn the_first_host_key_is_recorded_and_a_changed_one_is_refused_naming_the_resource() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);

    // None recorded: the server's key is recorded, and the command runs.
    let up = upstream(&sshd, &login, &host_key, Vec::new());
    let gateway = Gateway::start(up, &host_key).await;
    let out = gateway.ssh(&["true"]).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let recorded = gateway.keys.0.lock().unwrap().clone();
    assert_eq!(recorded.as_deref(), Some(sshd.host_key()));

    // Another key recorded: refused, with the reason on the client's screen.
    let other = keygen("ed25519").unwrap();
    let up = upstream(&sshd, &login, &host_key, vec![other.public.clone()]);
    let mut gateway = Gateway::start(up, &host_key).await;
    let out = gateway.ssh(&["echo must-not-run"]).await;
    assert_eq!(out.status.code(), Some(255));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("resource \"web-1\": its host key changed"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("must-not-run"));
    let finished = gateway.next_finished().await;
    let (kind, message) = finished.failure.unwrap();
    assert_eq!(kind, ErrorKind::UpstreamRefused);
    assert!(message.contains("host key changed"), "{message}");
}

#[tokio::test]
async fn a_login_the_server_refuses_is_told_to_the_client_and_the_gateway_keeps_serving() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let stranger = keygen("ed25519").unwrap();
    let up = upstream(&sshd, &stranger, &host_key, vec![sshd.host_key().into()]);
    let mut gateway = Gateway::start(up, &host_key).await;
    for _ in 0..2 {
        let out = gateway.ssh(&["true"]).await;
        assert_eq!(out.status.code(), Some(255));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "resource \"web-1\": the server refused user \"{}\" with the stored key",
                sshd.user()
            )),
            "{stderr}"
        );
        let (kind, _) = gateway.next_finished().await.failure.unwrap();
        assert_eq!(kind, ErrorKind::UpstreamRefused);
    }
}

#[tokio::test]
async fn a_certificate_from_the_ca_the_server_trusts_logs_in() {
    let ca = keygen("ed25519").unwrap();
    let sshd = Sshd::start(&SshdConfig {
        trusted_user_ca_keys: vec![ca.public.clone()],
        ..Default::default()
    })
    .unwrap();
    let host_key = keygen("ed25519").unwrap();
    let login = keygen("ed25519").unwrap();
    let certificate = sign(&ca, &login, sshd.user());
    let mut up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    up.ssh.as_mut().unwrap().certificate = Some(certificate);
    let gateway = Gateway::start(up.clone(), &host_key).await;
    let out = gateway.ssh(&["echo certified"]).await;
    assert_eq!(
        text(&out.stdout),
        "certified\n",
        "stderr: {}",
        text(&out.stderr)
    );

    // Without the certificate the same key is not let in, and the message says what to check.
    up.ssh.as_mut().unwrap().certificate =
        Some(sign(&keygen("ed25519").unwrap(), &login, sshd.user()));
    let gateway = Gateway::start(up, &host_key).await;
    let out = gateway.ssh(&["true"]).await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("TrustedUserCAKeys"),
        "{}",
        text(&out.stderr)
    );
}

/// A user certificate made by `ssh-keygen -s`, as an OpenSSH line.
fn sign(ca: &KeyPair, login: &KeyPair, principal: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca");
    write_private(&ca_path, &ca.private);
    let key = dir.path().join("login.pub");
    std::fs::write(&key, &login.public).unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca_path)
        .args(["-I", "test", "-n", principal, "-V", "-1m:+10m"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(dir.path().join("login-cert.pub"))
        .unwrap()
        .trim()
        .to_string()
}

fn write_private(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test]
async fn files_cross_both_ways_by_scp_and_sftp_intact() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let gateway = Gateway::start(up, &host_key).await;
    let work = tempfile::tempdir().unwrap();
    let sent = work.path().join("sent.bin");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&sent, &data).unwrap();
    let remote = tempfile::tempdir().unwrap();
    let there = remote.path().join("there.bin");

    // scp over the SFTP protocol (OpenSSH's default), then the legacy protocol (an exec of
    // `scp -t`), each way.
    for legacy in [false, true] {
        let mut up = gateway.options("scp");
        if legacy {
            up.arg("-O");
        }
        up.arg(&sent)
            .arg(format!("anyuser@127.0.0.1:{}", there.display()));
        let out = bounded(up).await;
        assert!(out.status.success(), "scp up: {}", text(&out.stderr));
        assert!(std::fs::read(&there).unwrap() == data);

        let back = work.path().join(format!("back-{legacy}.bin"));
        let mut down = gateway.options("scp");
        if legacy {
            down.arg("-O");
        }
        down.arg(format!("anyuser@127.0.0.1:{}", there.display()))
            .arg(&back);
        let out = bounded(down).await;
        assert!(out.status.success(), "scp down: {}", text(&out.stderr));
        assert!(std::fs::read(&back).unwrap() == data);
        std::fs::remove_file(&there).unwrap();
    }

    // An sftp batch.
    let batch = work.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nrename {} {}\nls {}\n",
            sent.display(),
            there.display(),
            there.display(),
            remote.path().join("renamed.bin").display(),
            remote.path().display()
        ),
    )
    .unwrap();
    let mut sftp = gateway.options("sftp");
    sftp.arg("-b").arg(&batch).arg("anyuser@127.0.0.1");
    let out = bounded(sftp).await;
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert!(std::fs::read(remote.path().join("renamed.bin")).unwrap() == data);

    let lines = gateway.lines.all();
    assert!(
        lines.iter().any(|l| l.ends_with(": subsystem sftp")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(": exec scp -t ")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn forwarding_to_a_port_behind_the_server_works_and_remote_forwarding_is_refused() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let gateway = Gateway::start(up, &host_key).await;

    // `-W` carries stdin to a port the server reaches: a direct-tcpip channel, as `-L` opens.
    let mut command = gateway.options("ssh");
    command
        .arg("-W")
        .arg(format!("127.0.0.1:{}", echo.port()))
        .arg("anyuser@127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    let mut stdout = child.stdout.take().unwrap();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"ping through the tunnel");
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;

    // `-R` is refused; without ExitOnForwardFailure the session goes on.
    let out = gateway
        .ssh(&[
            "-R",
            "0:127.0.0.1:1",
            "-o",
            "ExitOnForwardFailure=no",
            "echo still here",
        ])
        .await;
    assert_eq!(
        text(&out.stdout),
        "still here\n",
        "stderr: {}",
        text(&out.stderr)
    );
    let out = gateway
        .ssh(&[
            "-R",
            "0:127.0.0.1:1",
            "-o",
            "ExitOnForwardFailure=yes",
            "echo must-not-run",
        ])
        .await;
    assert_ne!(out.status.code(), Some(0));
    let lines = gateway.lines.all();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("direct-tcpip to 127.0.0.1:{}", echo.port()))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("refused: remote forwarding")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn revoking_access_mid_session_disconnects_the_client_with_the_reason() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let mut gateway = Gateway::start(up, &host_key).await;
    let mut command = gateway.options("ssh");
    command
        .arg("anyuser@127.0.0.1")
        .arg("echo started; sleep 60")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(30), stdout.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"started\n");

    gateway.stop.send_replace(Some(Denied {
        kind: ErrorKind::Unauthenticated,
        message: "account etl-bot was suspended".into(),
    }));
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("account etl-bot was suspended"),
        "{}",
        text(&out.stderr)
    );
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::Unauthenticated);
}

#[tokio::test]
async fn garbage_and_a_stalled_handshake_are_dropped_and_the_gateway_keeps_serving() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let mut gateway = Gateway::start_with(up, &host_key, Duration::from_secs(2)).await;
    use tokio::io::AsyncWriteExt;

    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::InvalidArgument);

    let _stalled = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap();
    let (kind, message) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::Timeout, "{message}");

    let out = gateway.ssh(&["echo fine"]).await;
    assert_eq!(text(&out.stdout), "fine\n", "stderr: {}", text(&out.stderr));
}

#[tokio::test]
async fn a_stream_echoed_back_while_it_is_sent_does_not_stall_and_a_pty_is_a_terminal() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let gateway = Gateway::start(up, &host_key).await;

    // Both directions full at once: 64 MiB through `cat` and straight back.
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.bin");
    let data: Vec<u8> = (0..64 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    std::fs::write(&input, &data).unwrap();
    let mut command = gateway.options("ssh");
    command
        .arg("anyuser@127.0.0.1")
        .arg("cat")
        .stdin(std::fs::File::open(&input).unwrap());
    let out = bounded(command).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(out.stdout == data, "{} bytes came back", out.stdout.len());

    // `-tt`: the command runs on a terminal of the size and type asked for.
    let out = gateway
        .ssh(&[
            "-tt",
            "-o",
            "SetEnv=TERM=vt220",
            "tty; stty size; echo $TERM",
        ])
        .await;
    let shown = text(&out.stdout);
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
}

#[tokio::test]
async fn rsync_mirrors_a_tree_through_the_gateway() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let gateway = Gateway::start(up, &host_key).await;
    let source = tempfile::tempdir().unwrap();
    for i in 0..20u32 {
        let dir = source.path().join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let body: Vec<u8> = (0..(i + 1) * 10_000).map(|b| (b ^ i) as u8).collect();
        std::fs::write(dir.join(format!("f{i}")), body).unwrap();
    }
    let target = tempfile::tempdir().unwrap();
    // rsync runs ssh itself: the same options, as one `-e` command line.
    let ssh = format!(
        "ssh -p {} -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} \
         -o PubkeyAuthentication=no -o PasswordAuthentication=no",
        gateway.port,
        gateway.known_hosts().display()
    );
    let mut rsync = tokio::process::Command::new("rsync");
    rsync
        .args(["-a", "--checksum", "-e", &ssh])
        .arg(format!("{}/", source.path().display()))
        .arg(format!("anyuser@127.0.0.1:{}/", target.path().display()));
    let out = bounded(rsync).await;
    assert!(out.status.success(), "rsync: {}", text(&out.stderr));
    let diff = std::process::Command::new("diff")
        .arg("-r")
        .arg(source.path())
        .arg(target.path())
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}", text(&diff.stdout));
    let lines = gateway.lines.all();
    assert!(
        lines.iter().any(|l| l.contains(": exec rsync --server")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn agent_forwarding_is_refused_and_the_session_goes_on() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let gateway = Gateway::start(up, &host_key).await;
    // A real agent holding a key, forwarded with -A.
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = work.path().join("id");
    write_private(&key, &keygen("ed25519").unwrap().private);
    let added = std::process::Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added.stderr));

    let mut command = gateway.options("ssh");
    command
        .arg("-A")
        .arg("anyuser@127.0.0.1")
        .arg("echo agent=${SSH_AUTH_SOCK:-none}")
        .env("SSH_AUTH_SOCK", &socket);
    let out = bounded(command).await;
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "agent=none\n");
    let lines = gateway.lines.all();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(": refused: agent forwarding")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_named_in_the_disconnect() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let mut up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    drop(sshd);
    // Nothing listens there any more.
    up.port = sdm_testkit::free_port();
    let mut gateway = Gateway::start(up.clone(), &host_key).await;
    let out = gateway.ssh(&["true"]).await;
    assert_eq!(out.status.code(), Some(255));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "resource \"web-1\": cannot connect to 127.0.0.1:{}",
            up.port
        )),
        "{stderr}"
    );
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::UpstreamRefused);
}

#[tokio::test]
async fn a_command_the_audit_trail_cannot_record_does_not_run() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    let gateway = Gateway::start(up, &host_key).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    gateway.lines.failing.store(true, Ordering::SeqCst);
    let out = gateway.ssh(&[&format!("touch {}", marker.display())]).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("exec request failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !marker.exists(),
        "the command ran although it was not recorded"
    );

    // Once the trail takes lines again, the same command runs.
    gateway.lines.failing.store(false, Ordering::SeqCst);
    let out = gateway.ssh(&[&format!("touch {}", marker.display())]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(marker.exists());
}

/// What a recording shows: its header and the text of its output events, in order.
fn played(lines: &[(u32, u64, String)]) -> (serde_json::Value, String) {
    let header = serde_json::from_str(&lines[0].2).unwrap();
    let mut shown = String::new();
    for (i, (_, seq, line)) in lines.iter().enumerate().skip(1) {
        assert_eq!(*seq, i as u64, "lines are numbered in order");
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event[1] == "o" {
            shown.push_str(event[2].as_str().unwrap());
        }
    }
    (header, shown)
}

/// Reads `from` until `text` has been seen (bounded: 30 s).
async fn read_until(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    seen: &mut Vec<u8>,
    text: &str,
) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(seen).contains(text) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, from.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{text:?} not seen in {:?}", text_of(seen)))
            .unwrap();
        assert!(n > 0, "ended before {text:?}: {:?}", text_of(seen));
        seen.extend_from_slice(&buf[..n]);
    }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_terminal_session_is_recorded_as_asciicast_and_a_plain_command_is_not() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let mut up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    up.ssh.as_mut().unwrap().record_sessions = true;
    let gateway = Gateway::start(up, &host_key).await;

    // Without a terminal nothing is recorded (scp, rsync, commands of scripts).
    let out = gateway.ssh(&["echo plain"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(gateway.lines.recorded().is_empty());
    let audit = gateway.lines.all();
    assert!(audit[0].ends_with(": exec echo plain"), "{audit:?}");

    // An interactive shell on a terminal, typed into as a person would.
    let mut command = gateway.options("ssh");
    command
        .args(["-tt", "anyuser@127.0.0.1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut ssh = command.spawn().unwrap();
    let mut stdin = ssh.stdin.take().unwrap();
    let mut stdout = ssh.stdout.take().unwrap();
    let mut seen = Vec::new();
    use tokio::io::AsyncWriteExt;
    stdin
        .write_all("echo \"sum $((6*7)) ünïcode\"\nexit 3\n".as_bytes())
        .await
        .unwrap();
    read_until(&mut stdout, &mut seen, "sum 42 ünïcode").await;
    let status = tokio::time::timeout(Duration::from_secs(30), ssh.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3));

    let recorded = gateway.lines.recorded();
    let (header, shown) = played(&recorded);
    assert_eq!(header["version"], 2);
    assert!(header["width"].as_u64().is_some(), "{header}");
    assert!(shown.contains("sum 42 ünïcode"), "{shown:?}");
    let audit = gateway.lines.all();
    let shell = audit
        .iter()
        .find(|line| line.ends_with(": shell, recorded"))
        .unwrap_or_else(|| panic!("{audit:?}"));
    let channel = format!("channel {}:", recorded[0].0);
    assert!(shell.starts_with(&channel), "{shell} is not {channel}");
    assert!(recorded.iter().all(|(c, _, _)| *c == recorded[0].0));
}

#[tokio::test]
async fn a_terminal_whose_output_cannot_be_recorded_is_closed_before_it_shows_it() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let mut up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    up.ssh.as_mut().unwrap().record_sessions = true;
    let gateway = Gateway::start(up, &host_key).await;

    let mut command = gateway.options("ssh");
    command
        .args(["-tt", "anyuser@127.0.0.1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut ssh = command.spawn().unwrap();
    let mut stdin = ssh.stdin.take().unwrap();
    let mut stdout = ssh.stdout.take().unwrap();
    let mut seen = Vec::new();
    use tokio::io::AsyncWriteExt;
    stdin.write_all(b"echo first-$((1+1))\n").await.unwrap();
    read_until(&mut stdout, &mut seen, "first-2").await;

    // The trail fails: what the terminal shows next must not reach the client unrecorded.
    gateway.lines.failing.store(true, Ordering::SeqCst);
    stdin.write_all(b"echo second-$((2+2))\n").await.unwrap();
    let mut rest = Vec::new();
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(30), stdout.read_to_end(&mut rest))
        .await
        .expect("the session was not closed")
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), ssh.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let shown = text_of(&[seen, rest].concat());
    assert!(!shown.contains("second"), "shown unrecorded: {shown:?}");
    let told = format!("{shown}{}", text(&output.stderr));
    assert!(
        told.contains("the audit trail cannot record this session"),
        "{told:?}"
    );
    assert_ne!(output.status.code(), Some(0));
    let (_, recorded) = played(&gateway.lines.recorded());
    assert!(recorded.contains("first-2"), "{recorded:?}");
    assert!(!recorded.contains("second"), "{recorded:?}");
}

#[tokio::test]
async fn a_terminal_session_the_trail_cannot_start_recording_does_not_start() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let mut up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    up.ssh.as_mut().unwrap().record_sessions = true;
    let gateway = Gateway::start(up, &host_key).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    gateway.lines.failing.store(true, Ordering::SeqCst);
    let out = gateway
        .ssh(&["-tt", &format!("touch {}", marker.display())])
        .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        !marker.exists(),
        "the command ran although it was not recorded"
    );
    assert!(gateway.lines.recorded().is_empty());
}

#[tokio::test]
async fn a_recorded_terminal_waits_for_room_in_the_trail_instead_of_failing() {
    let login = keygen("ed25519").unwrap();
    let (sshd, host_key) = server_for(&login);
    let mut up = upstream(&sshd, &login, &host_key, vec![sshd.host_key().into()]);
    up.ssh.as_mut().unwrap().record_sessions = true;
    let gateway = Gateway::start(up, &host_key).await;
    // The trail says "no room" 100 times (about a second of waiting) before it has some.
    gateway.lines.no_room.store(100, Ordering::SeqCst);
    let out = gateway.ssh(&["-tt", "seq 1 3000; exit 5"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("2999\r\n3000"), "{shown:?}");
    assert_eq!(
        gateway.lines.no_room.load(Ordering::SeqCst),
        0,
        "it did not wait"
    );
    let (_, recorded) = played(&gateway.lines.recorded());
    assert!(recorded.contains("2999\r\n3000"), "{recorded:?}");
}
