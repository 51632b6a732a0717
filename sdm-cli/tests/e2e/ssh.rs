//! SSH servers through sdm, end to end: a real `sdm-server` (control plane and gateway), the
//! `sdm` command and a real OpenSSH `sshd` and client. The job holds no key: the gateway logs in
//! with the key the admin stored or with a certificate from sdm's CA.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use sdm_testkit::sshd::{Sshd, SshdConfig, keygen};

use crate::support::{Fixture, Sdm, eventually};

/// A real sshd that lets in one key, and that key's private half in a file (as an admin
/// hands it to `--key-file`).
fn sshd_with_a_login_key() -> (Sshd, tempfile::NamedTempFile) {
    let login = keygen("ed25519").unwrap();
    let sshd = Sshd::start(&SshdConfig {
        authorized_keys: vec![login.public.clone()],
        ..Default::default()
    })
    .unwrap();
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), &login.private).unwrap();
    (sshd, key_file)
}

/// `servers add ssh web` as an admin runs it, with `extra` login options.
fn add_web(fx: &Fixture, sshd: &Sshd, extra: &[&str]) {
    let port = sshd.port().to_string();
    let mut args = vec![
        "admin",
        "servers",
        "add",
        "ssh",
        "web",
        "--hostname",
        "127.0.0.1",
        "--port",
        &port,
        "--username",
        sshd.user(),
    ];
    args.extend_from_slice(extra);
    fx.sdm()
        .run_env(&args, &[("SDM_ADMIN_TOKEN", fx.admin_token.as_str())])
        .ok();
}

fn job(fx: &Fixture) -> Sdm {
    let token = fx.account_with("etl", &["web"]);
    let job = fx.sdm();
    job.login(&token);
    job
}

#[test]
fn a_stored_key_logs_in_ssh_config_pins_the_gateway_and_the_audit_names_the_command() {
    let fx = Fixture::start();
    let (sshd, key_file) = sshd_with_a_login_key();
    add_web(
        &fx,
        &sshd,
        &[
            "--key-file",
            key_file.path().to_str().unwrap(),
            "--host-key",
            sshd.host_key(),
        ],
    );
    let job = job(&fx);
    let port = job.run(&["connect", "web", "--json"]).json()["port"]
        .as_u64()
        .unwrap()
        .to_string();

    // `sdm ssh-config` pins the gateway's host key for the resource; plain OpenSSH then needs
    // no other option, and checks the key strictly.
    let config = job.run(&["ssh-config"]).ok().to_owned();
    assert!(config.contains(&format!("Port {port}")), "{config}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &config).unwrap();
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(file.path())
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "PubkeyAuthentication=no", "-o", "LogLevel=ERROR"])
        .args(["sdm-web", "echo via ssh-config; exit 7"])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via ssh-config\n");

    // The key `sdm status --json` shows is the one the tunnel presents.
    let status = job.run(&["status", "--json"]).json();
    let shown = status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web")
        .and_then(|r| r["ssh_host_key"].as_str())
        .expect("no ssh_host_key for web")
        .to_owned();
    let scanned = std::process::Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port, "127.0.0.1"])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&scanned.stdout);
    assert!(scanned.contains(&shown), "{scanned} does not hold {shown}");

    assert!(
        eventually(Duration::from_secs(20), || fx
            .audit_lines("web")
            .iter()
            .any(|l| l.ends_with(": exec echo via ssh-config; exit 7"))),
        "{:?}",
        fx.audit_lines("web")
    );
}

#[test]
fn a_certificate_names_the_account_and_suspension_ends_the_session_with_the_reason() {
    let fx = Fixture::start();
    let sshd = fx.sshd_trusting_the_ca();
    add_web(&fx, &sshd, &["--certificate-authority"]);
    let job = job(&fx);

    let mut child = job
        .command(["ssh", "web", "echo up; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "up\n");
    // sshd logged the certificate's key id: account, resource and lease.
    assert!(
        sshd.log().contains("sdm:account=etl:resource=web"),
        "{}",
        sshd.log()
    );

    fx.block_on(fx.admin.suspend_account("etl")).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("suspended"), "{stderr}");
}

#[test]
fn a_server_whose_host_key_changed_is_refused_and_the_job_is_told() {
    let fx = Fixture::start();
    let (sshd, key_file) = sshd_with_a_login_key();
    let other = keygen("ed25519").unwrap();
    add_web(
        &fx,
        &sshd,
        &[
            "--key-file",
            key_file.path().to_str().unwrap(),
            "--host-key",
            &other.public,
        ],
    );
    let job = job(&fx);
    let out = job.run(&["ssh", "web", "echo must-not-run"]);
    assert_eq!(out.code, 255, "{out:#?}");
    assert!(!out.stdout.contains("must-not-run"));
    assert!(
        out.stderr.contains("resource \"web\"") && out.stderr.contains("host key changed"),
        "{}",
        out.stderr
    );
}

/// A terminal session through the tunnel: OpenSSH with `-tt` (a pty, as a person's shell has)
/// running `command`; the gateway's host key is not what this test is about.
fn terminal_session(port: &str, command: &str) -> std::process::Output {
    std::process::Command::new("ssh")
        .args(["-tt", "-p", port, "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "PubkeyAuthentication=no", "-o", "LogLevel=ERROR"])
        .args(["anyuser@127.0.0.1", command])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The id of the audit record of `web` whose lines include one ending with `suffix`.
fn record_with_line(fx: &Fixture, suffix: &str) -> Option<String> {
    fx.audit_by_connection("web")
        .into_iter()
        .find(|(_, lines)| lines.iter().any(|l| l.ends_with(suffix)))
        .map(|(id, _)| id)
}

#[test]
fn a_recorded_terminal_session_replays_and_recording_can_be_turned_off() {
    let fx = Fixture::start();
    let sshd = fx.sshd_trusting_the_ca();
    add_web(
        &fx,
        &sshd,
        &["--certificate-authority", "--record-sessions"],
    );
    let admin = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    let job = job(&fx);
    let port = job.run(&["connect", "web", "--json"]).json()["port"]
        .as_u64()
        .unwrap()
        .to_string();

    let out = terminal_session(&port, "printf 'answer %s\\n' $((6*7)); exit 4");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let mut id = None;
    assert!(eventually(Duration::from_secs(20), || {
        id = record_with_line(&fx, ", recorded");
        id.is_some()
    }));
    let id = id.unwrap();

    // Played back as it was shown (fast), and as the asciicast file a player reads. The
    // command's line is written when it starts; its output follows in the gateway's next
    // audit batches (at most 100 ms apart under traffic), so wait for it.
    let mut played = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = fx
                .sdm()
                .run_env(&["admin", "audit", "replay", &id, "--speed", "50"], &admin);
            played = out.stdout;
            out.code == 0 && played.contains("answer 42")
        }),
        "{played:?}"
    );
    let cast = fx
        .sdm()
        .run_env(&["admin", "audit", "replay", &id, "--cast"], &admin)
        .ok()
        .to_owned();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{cast}");
    assert!(
        lines.any(|l| l.contains("\"o\"") && l.contains("answer 42")),
        "{cast}"
    );

    // A connection with no terminal has nothing to replay, and says so.
    let plain = std::process::Command::new("ssh")
        .args([
            "-p",
            &port,
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["anyuser@127.0.0.1", "echo no-terminal"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(plain.status.success());
    let mut plain_id = None;
    assert!(eventually(Duration::from_secs(20), || {
        plain_id = record_with_line(&fx, ": exec echo no-terminal");
        plain_id.is_some()
    }));
    let out = fx
        .sdm()
        .run_env(&["admin", "audit", "replay", &plain_id.unwrap()], &admin);
    assert!(
        out.stderr.contains("no recorded terminal session"),
        "{out:#?}"
    );
    assert_eq!(out.code, 6, "not found");

    // Turned off, a terminal session leaves its line but no recording.
    fx.sdm()
        .run_env(
            &[
                "admin",
                "servers",
                "update",
                "web",
                "--record-sessions=false",
            ],
            &admin,
        )
        .ok();
    let out = terminal_session(&port, "echo unrecorded-now");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut off_id = None;
    assert!(eventually(Duration::from_secs(20), || {
        off_id = record_with_line(&fx, ": exec echo unrecorded-now");
        off_id.is_some()
    }));
    let recording = fx
        .block_on(fx.admin.audit_recording(&off_id.unwrap(), None, None))
        .unwrap();
    assert_eq!(recording.channel, None);
}
