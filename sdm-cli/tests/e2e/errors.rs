//! Every exit code a user can provoke, each with one line on stderr. (Kinds the server cannot be
//! made to produce here — gateway unreachable, upstream refused, timeout, closed, internal — are
//! covered by the mapping's unit tests, and so is 15, which needs a server older than this one.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

use sdm_core::ResourceKind;

use crate::support::{Fixture, free_port};

#[test]
fn usage_errors_exit_2_and_help_and_version_exit_0() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    for args in [
        &["connect"][..],
        &["connect", "pg", "--all"],
        &["connect", "pg", "notaport"],
        &["bogus"],
        &[
            "admin",
            "servers",
            "add",
            "ftp",
            "x",
            "--hostname",
            "h",
            "--port",
            "1",
        ],
        &[
            "admin",
            "servers",
            "add",
            "tcp",
            "x",
            "--hostname",
            "h",
            "--port",
            "1",
            "--tags",
            "novalue",
        ],
    ] {
        let out = sdm.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
        assert!(out.stderr.starts_with("error: "), "{out:#?}");
    }
    let out = sdm.run(&["--version"]);
    assert_eq!(out.ok(), format!("sdm {}\n", env!("CARGO_PKG_VERSION")));
    for args in [
        &["--help"][..],
        &["login", "--help"],
        &["connect", "--help"],
        &["admin", "services", "create", "--help"],
        &["admin", "datasources", "add", "--help"],
    ] {
        let out = sdm.run(args);
        assert!(out.ok().contains("Usage: sdm"), "{args:?}: {out:#?}");
    }
    let out = sdm.run(&["completions", "bash"]);
    assert!(out.ok().contains("_sdm()"), "{out:#?}");
}

#[test]
fn not_logged_in_exits_3() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    for args in [
        &["status"][..],
        &["connect", "pg"],
        &["disconnect", "--all"],
        &["ready"],
    ] {
        let line = sdm.run(args).fails(3).to_owned();
        assert!(line.contains("run `sdm login`"), "{line}");
    }
}

#[test]
fn not_authenticated_exits_4() {
    let mut fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    let line = sdm.run(&["login"]).fails(4).to_owned();
    assert!(line.contains("no token"), "{line}");
    sdm.run(&["login", "--token", "hunter2"]).fails(4);
    let line = sdm.run(&["admin", "services", "list"]).fails(4).to_owned();
    assert!(line.contains("SDM_ADMIN_TOKEN"), "{line}");
    // A token rotated away.
    fx.block_on(fx.admin.rotate_token("etl")).unwrap();
    let line = sdm.run(&["login", "--token", &token]).fails(4).to_owned();
    assert!(!line.contains(&token));
    fx.stop_server();
}

#[test]
fn forbidden_exits_5() {
    let fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    let line = sdm
        .run_env(
            &["admin", "services", "list"],
            &[("SDM_ADMIN_TOKEN", &token)],
        )
        .fails(5)
        .to_owned();
    assert!(line.contains("admin token"), "{line}");
}

#[test]
fn not_found_6_and_ambiguous_7_name_the_candidates() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    for name in ["pg-analytics", "pg-billing", "secret-db"] {
        fx.resource(name, ResourceKind::Tcp, echo.port(), None);
    }
    let token = fx.account_with("etl", &["pg-analytics", "pg-billing"]);
    let sdm = fx.sdm();
    sdm.login(&token);
    let line = sdm.run(&["connect", "secret"]).fails(6).to_owned();
    assert!(line.contains("\"secret\""), "{line}");
    let line = sdm.run(&["connect", "pg-"]).fails(7).to_owned();
    assert!(line.contains("pg-analytics, pg-billing"), "{line}");
    // disconnect picks among the open tunnels.
    sdm.run(&["disconnect", "billing"]).fails(6);
    sdm.run(&["connect", "billing"]).ok();
    sdm.run(&["connect", "analytics"]).ok();
    sdm.run(&["disconnect", "pg"]).fails(7);
    assert_eq!(
        sdm.run(&["disconnect", "billing"]).ok(),
        "disconnected pg-billing\n"
    );
}

#[test]
fn api_unreachable_exits_8() {
    let mut fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.resource("echo", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["echo"]);
    let sdm = fx.sdm();
    let down = format!("https://127.0.0.1:{}", free_port());
    let line = sdm
        .run_env(&["login", "--token", &token], &[("SDM_API_URL", &down)])
        .fails(8)
        .to_owned();
    assert!(line.contains(&down), "{line}");
    sdm.run_env(
        &["admin", "services", "list", "--token", &fx.admin_token],
        &[("SDM_API_URL", &down)],
    )
    .fails(8);
    // A logged-in agent whose server went away: status answers from what the agent holds, says
    // the control plane cannot be reached and for how long its tunnels hold, and exits 8.
    sdm.login(&token);
    sdm.run(&["connect", "echo"]).ok();
    fx.stop_server();
    let out = sdm.run(&["status"]);
    assert_eq!(out.code, 8, "{out:#?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("echo") && l.contains(" connected ")),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains("the control plane cannot be reached")
            && out.stderr.contains("current leases for"),
        "{out:#?}"
    );
    let out = sdm.run(&["status", "--json"]);
    assert_eq!(out.code, 8, "{out:#?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["resources"][0]["status"], "connected", "{json}");
    assert!(
        json["control_plane_unreachable"]["leases_hold_for_secs"].is_u64(),
        "{json}"
    );
    sdm.run(&["connect", "x"]).fails(8);
    // Logout still stops the agent, warning that the server was not told.
    let out = sdm.run(&["logout"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stderr.starts_with("warning: "), "{out:#?}");
    assert!(sdm.agent_pid().is_none());
}

#[test]
fn port_in_use_exits_11() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    fx.resource("fixed", ResourceKind::Tcp, echo.port(), Some(port));
    fx.resource("free", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["fixed", "free"]);
    let sdm = fx.sdm();
    sdm.login(&token);
    let line = sdm.run(&["connect", "fixed"]).fails(11).to_owned();
    assert!(line.contains(&port.to_string()), "{line}");
    sdm.run(&["connect", "free", &port.to_string()]).fails(11);
    // connect --all: the free one connects, the taken one is reported; exit 11.
    let out = sdm.run(&["connect", "--all"]);
    assert_eq!(out.code, 11, "{out:#?}");
    assert!(
        out.stdout.starts_with("free connected on 127.0.0.1:"),
        "{out:#?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    assert!(
        out.stderr.starts_with("sdm: cannot connect fixed: "),
        "{out:#?}"
    );
}

#[test]
fn invalid_arguments_exit_14() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.resource("echo", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["echo"]);
    let sdm = fx.sdm();
    let admin = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    sdm.run_env(&["admin", "services", "create", "bad name"], &admin)
        .fails(14);
    let line = sdm
        .run_env(&["admin", "services", "create", "etl"], &admin)
        .fails(14)
        .to_owned();
    assert!(line.contains("etl"), "{line}");
    sdm.run_env(&["admin", "services", "suspend", "nobody"], &admin)
        .fails(14);
    // Moving an open tunnel to another port needs a disconnect first.
    sdm.login(&token);
    let out = sdm.run(&["connect", "echo", "--json"]);
    let port = out.json()["port"].as_u64().unwrap();
    let other = free_port();
    let line = sdm
        .run(&["connect", "echo", &other.to_string()])
        .fails(14)
        .to_owned();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
}

#[test]
fn a_socket_that_is_not_an_agent_exits_16() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    std::fs::create_dir_all(&sdm.home).unwrap();
    let listener = UnixListener::bind(sdm.home.join("agent.sock")).unwrap();
    let impostor = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            stream.write_all(b"{\"what\":\"is this\"}\n").unwrap();
        }
    });
    let line = sdm.run(&["status"]).fails(16).to_owned();
    assert!(line.contains("does not understand"), "{line}");
    sdm.run(&["ready"]).fails(16);
    impostor.join().unwrap();
}
