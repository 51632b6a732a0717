//! The service-account guide, command by command.

use std::collections::BTreeMap;

use sdm_core::ResourceKind;

use crate::support::{Fixture, fill, free_port, golden, pg, psql, psql_as};

#[test]
fn the_guide_sequence_with_psql_and_ssh_through_tunnels() {
    let fx = Fixture::start();
    let (pg_port, ssh_port) = (free_port(), free_port());
    // The admin side, with the admin commands.
    let admin = fx.sdm();
    let admin_env = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    // The server trusts sdm's SSH CA, once; nothing per job goes onto it.
    let sshd = fx.sshd_trusting_the_ca();
    let pg_cluster = pg();
    admin
        .run_with(
            &[
                "admin",
                "datasources",
                "add",
                "postgres",
                "pgsql_1_31",
                "--hostname",
                "127.0.0.1",
                "--port",
                &pg_cluster.port().to_string(),
                "--database",
                "postgres",
                "--username",
                pg_cluster.superuser(),
                "--password-stdin",
                "--port-override",
                &pg_port.to_string(),
                "--tags",
                "env=test",
            ],
            &admin_env,
            Some(&format!("{}\n", pg_cluster.password())),
        )
        .ok();
    admin
        .run_env(
            &[
                "admin",
                "servers",
                "add",
                "ssh",
                "server-245a",
                "--hostname",
                "127.0.0.1",
                "--port",
                &sshd.port().to_string(),
                "--username",
                sshd.user(),
                "--certificate-authority",
                "--port-override",
                &ssh_port.to_string(),
            ],
            &admin_env,
        )
        .ok();
    let token = admin
        .run_env(&["admin", "services", "create", "etl-bot"], &admin_env)
        .ok()
        .trim()
        .to_owned();
    fx.grant("etl-bot", "pgsql_1_31");
    fx.grant("etl-bot", "server-245a");

    // The job: `SDM_ADMIN_TOKEN=<token> sdm login`, as the guide writes it.
    let job = fx.sdm();
    let out = job.run_env(&["login"], &[("SDM_ADMIN_TOKEN", &token)]);
    assert_eq!(
        out.ok(),
        format!("logged in as etl-bot (service account) at {}\n", fx.api_url)
    );
    // From here on the token is no longer in the environment.
    let ports = BTreeMap::from([
        ("pg_port", pg_port.to_string()),
        ("ssh_port", ssh_port.to_string()),
    ]);
    assert_eq!(
        job.run(&["status"]).ok(),
        fill(&golden("guide-status.txt"), &ports)
    );

    assert_eq!(
        job.run(&["connect", "pgsql"]).ok(),
        format!("connected pgsql_1_31 on 127.0.0.1:{pg_port}\n")
    );
    let (code, stdout, stderr) = psql(pg_port, "SELECT 'through ' || 'sdm'");
    assert_eq!((code, stdout.as_str()), (0, "through sdm"), "{stderr}");
    // The gateway logs in with the stored credentials: the job needs no password.
    let (code, stdout, stderr) = psql_as(pg_port, "etl", None, "SELECT current_user");
    assert_eq!(
        (code, stdout.as_str()),
        (0, pg_cluster.superuser()),
        "{stderr}"
    );

    assert_eq!(
        job.run(&["connect", "server"]).ok(),
        format!("connected server-245a on 127.0.0.1:{ssh_port}\n")
    );
    // "SSH sessions with no further configuration needed": no key, no password.
    let out = ssh_without_a_key(ssh_port, "echo hi from $(id -un)");
    assert!(
        out.status.success(),
        "ssh through the tunnel failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hi from {}\n", sshd.user())
    );
    // `sdm ssh` runs the system ssh with the gateway's host key pinned.
    let out = job.run(&["ssh", "server-245a", "echo pinned; exit 3"]);
    assert_eq!(out.code, 3, "{out:#?}");
    assert_eq!(out.stdout, "pinned\n");

    assert_eq!(
        job.run(&["status"]).ok(),
        fill(&golden("guide-status-connected.txt"), &ports)
    );

    assert_eq!(
        job.run(&["disconnect", "pgsql"]).ok(),
        "disconnected pgsql_1_31\n"
    );
    let (code, _, stderr) = psql(pg_port, "SELECT 1");
    assert_ne!(code, 0, "psql still reached the closed tunnel");
    assert!(stderr.contains("refused"), "{stderr}");

    let pid = job.agent_pid().unwrap();
    assert_eq!(
        job.run(&["logout"]).ok(),
        "logged out; the sdm agent stopped\n"
    );
    assert!(crate::support::wait_exit(
        pid,
        std::time::Duration::from_secs(20)
    ));
    // The ssh tunnel closed with the agent.
    assert!(std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_err());
    job.run(&["status"]).fails(3);
}

#[test]
fn connect_all_disconnect_all_and_fixed_ports() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let fixed = free_port();
    fx.resource("alpha", ResourceKind::Tcp, echo.port(), Some(fixed));
    fx.resource("beta", ResourceKind::Tcp, echo.port(), None);
    fx.resource("gamma", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["alpha", "beta"]);
    let sdm = fx.sdm();
    sdm.login(&token);

    let out = sdm.run(&["connect", "--all", "--json"]);
    let v = out.json();
    assert_eq!(v["failures"], serde_json::json!([]), "{out:#?}");
    let tunnels = v["tunnels"].as_array().unwrap();
    let names: Vec<&str> = tunnels
        .iter()
        .map(|t| t["resource"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(tunnels[0]["port"], fixed);
    for t in tunnels {
        let port = u16::try_from(t["port"].as_u64().unwrap()).unwrap();
        assert_eq!(echo_once(port), b"ping");
    }

    // Again: nothing new, the same tunnels.
    let again = sdm.run(&["connect", "--all"]);
    let beta_port = &tunnels[1]["port"];
    assert_eq!(
        again.ok(),
        format!("alpha connected on 127.0.0.1:{fixed}\nbeta connected on 127.0.0.1:{beta_port}\n")
    );
    // Connecting one that is open reports it.
    assert_eq!(
        sdm.run(&["connect", "alpha"]).ok(),
        format!("alpha is already connected on 127.0.0.1:{fixed}\n")
    );
    assert_eq!(
        sdm.run(&["disconnect", "--all"]).ok(),
        "disconnected alpha, beta\n"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", fixed)).is_err());
    assert_eq!(
        sdm.run(&["disconnect", "--all"]).ok(),
        "no tunnels were open\n"
    );

    // An explicit port wins over the fixed one.
    let chosen = free_port();
    assert_eq!(
        sdm.run(&["connect", "alpha", &chosen.to_string()]).ok(),
        format!("connected alpha on 127.0.0.1:{chosen}\n")
    );
    assert_eq!(echo_once(chosen), b"ping");
}

/// Sends "ping" through `port` and reads the echo.
pub fn echo_once(port: u16) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    buf.to_vec()
}

/// `ssh -p PORT USER@127.0.0.1 COMMAND` with no key, no agent and no password, as a job with
/// nothing but its sdm login runs it (the host key is not what this checks).
fn ssh_without_a_key(port: u16, command: &str) -> std::process::Output {
    std::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no"])
        .args(["-o", "PasswordAuthentication=no", "-o", "LogLevel=ERROR"])
        .arg("job@127.0.0.1")
        .arg(command)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}
