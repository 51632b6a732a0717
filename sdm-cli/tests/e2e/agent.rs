//! The agent: outlives the command that started it, stops on logout and on signals, keeps the
//! token out of its command line and environment, one per SDM_HOME.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use sdm_core::ResourceKind;

use crate::support::{Fixture, Sdm, eventually, free_port, is_running, signal, wait_exit};
use crate::workflow::echo_once;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn the_agent_outlives_login_and_stops_on_logout() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.resource("echo", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["echo"]);
    let sdm = fx.sdm();
    let out = sdm.login(&token);
    assert!(
        out.stderr.starts_with("started the sdm agent (pid "),
        "{out:#?}"
    );

    // `sdm login` has exited; the agent it started runs on, detached.
    let pid = sdm.agent_pid().expect("agent.pid");
    assert!(is_running(pid));
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "the agent leads a session of its own"
    );
    // Field 41, the scheduling policy: the default (0). Unlike the gateway's threads the agent
    // is not SCHED_BATCH, which cost a new connection's first byte (agent/mod.rs).
    assert_eq!(
        fields[38], "0",
        "the agent keeps the default scheduling policy"
    );

    // Directory 0700, socket and pid file 0600.
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sdm.home), 0o700);
    assert_eq!(mode(&sdm.home.join("agent.sock")), 0o600);
    assert_eq!(mode(&sdm.home.join("agent.pid")), 0o600);

    let out = sdm.run(&["connect", "echo", "--json"]);
    let port = u16::try_from(out.json()["port"].as_u64().unwrap()).unwrap();
    assert_eq!(echo_once(port), b"ping");
    let ready = sdm.run(&["ready", "--json"]).json();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["agent"]["pid"], pid);
    assert_eq!(ready["agent"]["tunnels"], 1);

    assert_eq!(
        sdm.run(&["logout"]).ok(),
        "logged out; the sdm agent stopped\n"
    );
    assert!(!sdm.home.join("agent.sock").exists());
    assert!(!sdm.home.join("agent.pid").exists());
    assert!(wait_exit(pid, LIMIT), "the agent still runs after logout");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let ready = sdm.run(&["ready", "--json"]);
    assert_eq!(ready.code, 3);
    assert_eq!(ready.json()["reason"], "not_running");
    // Logging out again is fine.
    let out = sdm.run(&["logout"]);
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("not logged in"), "{out:#?}");
    // And a new login starts a new agent at once.
    sdm.login(&token);
    assert_ne!(sdm.agent_pid(), Some(pid));
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let fixed = free_port();
    fx.resource("echo", ResourceKind::Tcp, echo.port(), Some(fixed));
    let token = fx.account_with("etl", &["echo"]);
    let sdm = fx.sdm();
    sdm.login(&token);
    sdm.run(&["connect", "echo"]).ok();
    assert_eq!(echo_once(fixed), b"ping");
    let pid = sdm.agent_pid().unwrap();

    signal(pid, libc::SIGTERM);
    assert!(wait_exit(pid, LIMIT), "the agent ignored SIGTERM");
    assert!(!sdm.home.join("agent.sock").exists());
    assert!(!sdm.home.join("agent.pid").exists());
    // The port is free again, and the session was ended on the server: the old session's
    // tunnels are gone and a new agent can bind the fixed port.
    std::net::TcpListener::bind(("127.0.0.1", fixed)).unwrap();
    let log = fs::read_to_string(sdm.home.join("agent.log")).unwrap();
    assert!(log.contains("reason=Signal(\"SIGTERM\")"), "{log}");
    assert!(log.contains("logged out account=etl"), "{log}");
    sdm.run(&["status"]).fails(3);
}

#[test]
fn the_token_stays_out_of_the_agents_command_line_environment_and_files() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    sdm.run_env(
        &["login"],
        &[("SDM_SERVICE_TOKEN", &token), ("SDM_ADMIN_TOKEN", &token)],
    )
    .ok();
    let pid = sdm.agent_pid().unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let secret = token.as_bytes();
    let contains = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret);
    assert!(!contains(&cmdline), "token on the agent's command line");
    assert!(!contains(&environ), "token in the agent's environment");
    assert!(!String::from_utf8_lossy(&environ).contains("SDM_SERVICE_TOKEN"));
    for entry in fs::read_dir(&sdm.home).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(bytes) = fs::read(&path) {
            assert!(!contains(&bytes), "token written to {}", path.display());
        }
    }
    // Nor is the token printed.
    let ready = sdm.run(&["ready", "--json"]);
    assert!(!ready.stdout.contains(&token));
}

#[test]
fn logging_in_again_replaces_the_session_and_a_failed_login_keeps_it() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.resource("echo", ResourceKind::Tcp, echo.port(), None);
    let first = fx.account_with("first", &["echo"]);
    let second = fx.account_with("second", &[]);
    let sdm = fx.sdm();
    sdm.login(&first);
    let pid = sdm.agent_pid().unwrap();
    sdm.run(&["connect", "echo"]).ok();

    // A bad token: refused, the session and the agent stay.
    let out = sdm.run_env(&["login"], &[("SDM_SERVICE_TOKEN", "sdm_svc_nonsense")]);
    out.fails(4);
    let ready = sdm.run(&["ready", "--json"]).json();
    assert_eq!(ready["agent"]["session"]["account"]["name"], "first");
    assert_eq!(ready["agent"]["tunnels"], 1);

    let out = sdm.run(&["login", "--token", &second]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("replaced the session of first"),
        "{out:#?}"
    );
    assert_eq!(sdm.agent_pid(), Some(pid), "the same agent");
    let ready = sdm.run(&["ready", "--json"]).json();
    assert_eq!(ready["agent"]["session"]["account"]["name"], "second");
    assert_eq!(ready["agent"]["tunnels"], 0);
    assert_eq!(
        sdm.run(&["status"]).ok(),
        "No resources are granted to second.\n"
    );
}

#[test]
fn a_failed_first_login_leaves_no_agent_behind() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    fx.block_on(fx.admin.suspend_account("etl")).unwrap();
    let sdm = fx.sdm();
    let line = sdm
        .run_env(&["login"], &[("SDM_SERVICE_TOKEN", &token)])
        .fails(4)
        .to_owned();
    assert!(!line.contains(&token), "{line}");
    assert!(sdm.agent_pid().is_none());
    assert!(!sdm.home.join("agent.sock").exists());
    assert_eq!(
        sdm.run(&["ready", "--json"]).json()["reason"],
        "not_running"
    );
}

#[test]
fn listen_in_the_foreground_logs_in_and_stops_on_sigint() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    let mut agent = sdm
        .command(["listen"])
        .env("SDM_SERVICE_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(agent.id()).unwrap();
    assert!(
        eventually(LIMIT, || sdm.run(&["ready"]).code == 0),
        "the foreground agent never became ready"
    );
    assert_eq!(sdm.agent_pid(), Some(pid));
    // A second agent for the same SDM_HOME is refused.
    let line = sdm.run(&["listen"]).fails(16).to_owned();
    assert!(line.contains("already running"), "{line}");

    signal(pid, libc::SIGINT);
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut log = String::new();
    std::io::Read::read_to_string(agent.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("sdm agent stopped"), "{log}");
    assert!(!sdm.home.join("agent.sock").exists());
}

#[test]
fn listen_daemon_without_a_token_waits_for_login() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    let out = sdm.run(&["listen", "--daemon"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let pid = sdm.agent_pid().unwrap();
    let ready = sdm.run(&["ready", "--json"]);
    assert_eq!(ready.code, 3);
    assert_eq!(ready.json()["reason"], "not_logged_in");
    sdm.run(&["status"]).fails(3);
    // Again: the running agent is reported, not a second one started.
    let out = sdm.run(&["listen", "--daemon"]);
    assert!(out.stderr.contains("already running"), "{out:#?}");
    sdm.login(&token);
    assert_eq!(sdm.agent_pid(), Some(pid));
    sdm.run(&["ready"]).ok();
}

#[test]
fn an_agent_whose_home_is_removed_stops() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let dir = tempfile::Builder::new()
        .prefix("sdmhome")
        .tempdir()
        .unwrap();
    let sdm = Sdm::new(&dir.path().join("h"));
    sdm.login(&token);
    let pid = sdm.agent_pid().unwrap();
    let inode = fs::metadata(sdm.home.join("agent.sock")).unwrap().ino();
    assert_ne!(inode, 0);
    fs::remove_dir_all(&sdm.home).unwrap();
    assert!(wait_exit(pid, LIMIT), "the agent outlived its SDM_HOME");
}

#[test]
fn sighup_stops_the_agent_cleanly_and_ends_its_session() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    sdm.login(&token);
    let pid = sdm.agent_pid().unwrap();
    signal(pid, libc::SIGHUP);
    assert!(wait_exit(pid, LIMIT), "the agent ignored SIGHUP");
    assert!(!sdm.home.join("agent.sock").exists());
    assert!(!sdm.home.join("agent.pid").exists());
    let log = fs::read_to_string(sdm.home.join("agent.log")).unwrap();
    assert!(log.contains("reason=Signal(\"SIGHUP\")"), "{log}");
    assert!(log.contains("logged out account=etl"), "{log}");
}

#[test]
fn an_agent_log_past_1_mib_is_kept_as_agent_log_1_when_the_agent_starts() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    fs::create_dir_all(&sdm.home).unwrap();
    fs::set_permissions(&sdm.home, fs::Permissions::from_mode(0o700)).unwrap();
    let old = "an old line\n".repeat(100_000);
    fs::write(sdm.home.join("agent.log"), &old).unwrap();
    sdm.login(&token);
    assert_eq!(
        fs::read_to_string(sdm.home.join("agent.log.1")).unwrap(),
        old,
        "the previous log is kept whole"
    );
    let new = fs::read_to_string(sdm.home.join("agent.log")).unwrap();
    assert!(
        !new.contains("an old line") && new.len() < 64 * 1024,
        "{}",
        new.len()
    );
    sdm.run(&["logout"]).ok();
}

/// As root: another OS user (sdm_testkit's `sdmtest`), or `None` with a note.
fn other_user() -> Option<sdm_testkit::OsUser> {
    let user = sdm_testkit::other_os_user().unwrap();
    if user.is_none() {
        eprintln!("skipped: playing another OS user needs root");
    }
    user
}

#[test]
fn an_sdm_home_owned_by_another_user_is_refused() {
    let Some(other) = other_user() else { return };
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("theirs");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&home, Some(other.uid), Some(other.gid)).unwrap();
    let sdm = Sdm::new(&home);
    let line = sdm
        .run_env(&["login"], &[("SDM_SERVICE_TOKEN", &token)])
        .fails(2)
        .to_owned();
    assert!(line.contains("belongs to another user"), "{line}");
    assert!(
        !home.join("agent.sock").exists(),
        "no agent in their directory"
    );
}

#[test]
fn the_agent_answers_only_its_own_user_even_when_its_socket_is_opened_up() {
    let Some(other) = other_user() else { return };
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let dir = tempfile::tempdir().unwrap();
    let sdm = Sdm::new(&dir.path().join("h"));
    sdm.login(&token);
    // A mistake that opens the directory and the socket to everyone: the peer check remains.
    for path in [
        dir.path().to_path_buf(),
        sdm.home.clone(),
        sdm.home.join("agent.sock"),
    ] {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let socket = sdm.home.join("agent.sock");
    let ask = r#"{"v":1,"op":"ping"}"#;
    let script = format!(
        // The agent may close before the request is even written (a broken pipe) or after
        // (a reset): either way no answer.
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(20)\ns.connect({:?})\n\
         try:\n    s.sendall(b'{ask}\\n')\n    sys.stdout.write(s.recv(4096).decode())\n\
         except (ConnectionResetError, BrokenPipeError):\n    pass\n",
        socket.display().to_string()
    );
    let theirs = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(other.uid)
        .gid(other.gid)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(theirs.status.success(), "{theirs:?}");
    assert_eq!(
        String::from_utf8_lossy(&theirs.stdout),
        "",
        "another user got an answer"
    );
    // The owner still gets one.
    sdm.run(&["ready"]).ok();
    let log = fs::read_to_string(sdm.home.join("agent.log")).unwrap();
    assert!(
        log.contains("refused a connection from another user"),
        "{log}"
    );
    sdm.run(&["logout"]).ok();
}

/// `SDM_LOG_FORMAT=json` given to `sdm login` reaches the agent it starts: agent.log holds one
/// JSON object per line, and at trace level neither format holds the token.
#[test]
fn the_agent_logs_json_lines_without_the_token_when_asked() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.resource("echo", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["echo"]);
    for format in ["json", "text"] {
        let sdm = fx.sdm();
        sdm.run_env(
            &["login"],
            &[
                ("SDM_SERVICE_TOKEN", token.as_str()),
                ("SDM_LOG_FORMAT", format),
                ("SDM_LOG", "trace"),
            ],
        )
        .ok();
        let out = sdm.run(&["connect", "echo", "--json"]);
        let port = u16::try_from(out.json()["port"].as_u64().unwrap()).unwrap();
        assert_eq!(echo_once(port), b"ping");
        sdm.run(&["logout"]).ok();
        let log = fs::read_to_string(sdm.home.join("agent.log")).unwrap();
        assert!(
            log.contains("TRACE"),
            "no trace events in the {format} log:\n{log}"
        );
        assert!(
            !log.contains(&token),
            "the token is in the {format} agent.log"
        );
        if format == "json" {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let event: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("an agent.log line that is not JSON ({e}): {line}"));
                assert!(
                    event["timestamp"].is_string() && event["level"].is_string(),
                    "{line}"
                );
            }
        }
    }
}
