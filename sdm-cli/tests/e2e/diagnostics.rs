//! The agent's diagnostics listener (`sdm listen --diag-listen`) as an operator's probes and
//! scraper see it, with real processes: `/readyz` before the login, logged in, with the
//! account suspended, and once the control plane is gone; `/metrics` scraped before and after a real psql query through a
//! tunnel to a real PostgreSQL, checked by Debian's `promtool check metrics`; a taken port and
//! an address off loopback refused. No answer ever carries the token.
//!
//! docs/OPERATIONS.md ("Diagnostics") names these tests beside the agent's checks and metrics.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::{Fixture, Sdm, eventually, pg_resource, psql_as};

/// Bound on each HTTP exchange with the diagnostics listener.
const HTTP_WAIT: Duration = Duration::from_secs(20);
/// Bound on a state the agent reaches on its own (a connection's end counted, a verdict about
/// the control plane renewed).
const LIMIT: Duration = Duration::from_secs(30);

/// Starts a background agent serving diagnostics on a free loopback port; its address, from
/// the agent's log.
fn agent_with_diag(sdm: &Sdm) -> SocketAddr {
    let out = sdm.run(&["listen", "--daemon", "--diag-listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let log = std::fs::read_to_string(sdm.home.join("agent.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("diagnostics listening"))
        .unwrap_or_else(|| panic!("the agent did not say where it serves diagnostics: {log}"));
    let value = line.split("diag_addr=").nth(1).unwrap();
    value.split_whitespace().next().unwrap().parse().unwrap()
}

/// `GET path` over plain HTTP/1.1: the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_WAIT).unwrap();
    s.set_read_timeout(Some(HTTP_WAIT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// One scrape: the text and every sample (`name{labels}` → value).
fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    let samples = sdm_testkit::promtool::samples(&text)
        .unwrap_or_else(|| panic!("not a Prometheus scrape:\n{text}"));
    (text, samples)
}

/// A sample's value; 0 when the scrape has none (a labelled series not created yet).
fn sample(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`; fails clearly when promtool is missing.
fn promtool_check(text: &str) {
    sdm_testkit::promtool::check_metrics(text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn readiness_names_the_missing_login_a_refused_token_and_the_lost_control_plane() {
    let mut fx = Fixture::start();
    let token = fx.service_account("etl");
    let sdm = fx.sdm();
    let diag = agent_with_diag(&sdm);
    let mut answers = Vec::new();

    assert_eq!(get(diag, "/livez"), (200, "ok\n".to_owned()));
    let before = get(diag, "/readyz");
    assert_eq!(before.0, 503, "{before:?}");
    assert!(before.1.starts_with("login: not logged in"), "{before:?}");
    answers.push(before.1);

    sdm.login(&token);
    let logged_in = get(diag, "/readyz");
    assert_eq!(logged_in, (200, "ok\n".to_owned()));

    // The account suspended: the session is refused, and the check says so.
    fx.block_on(fx.admin.suspend_account("etl")).unwrap();
    let mut answer = (0, String::new());
    let refused = eventually(LIMIT, || {
        answer = get(diag, "/readyz");
        answer.0 == 503
    });
    assert!(refused, "still ready with a suspended account: {answer:?}");
    assert!(
        answer
            .1
            .starts_with("login: the control plane refuses the token: "),
        "{answer:?}"
    );
    answers.push(answer.1.clone());
    fx.block_on(fx.admin.unsuspend_account("etl")).unwrap();
    let back = eventually(LIMIT, || get(diag, "/readyz").0 == 200);
    assert!(back, "not ready again once the account is active");

    fx.stop_server();
    let unready = eventually(LIMIT, || {
        answer = get(diag, "/readyz");
        answer.0 == 503
    });
    assert!(unready, "still ready without a control plane: {answer:?}");
    assert!(
        answer.1.starts_with("control_plane: unreachable: "),
        "the failing check is named: {answer:?}"
    );
    assert_eq!(answer.1.lines().count(), 1, "{answer:?}");
    assert_eq!(get(diag, "/livez").0, 200, "alive all the same");
    answers.push(answer.1);
    answers.push(scrape(diag).0);
    for text in answers {
        assert!(
            !text.contains(&token),
            "the token in a diagnostics answer: {text}"
        );
    }
}

#[test]
fn metrics_move_with_a_real_query_and_promtool_accepts_the_scrape() {
    let fx = Fixture::start();
    pg_resource(&fx, "pgsql", None);
    let token = fx.account_with("etl", &["pgsql"]);
    let sdm = fx.sdm();
    let diag = agent_with_diag(&sdm);
    let (_, empty) = scrape(diag);
    assert_eq!(
        sample(&empty, r#"sdm_agent_logins_total{outcome="ok"}"#),
        0.0
    );

    // A refused login, then a good one.
    sdm.run_env(&["login"], &[("SDM_SERVICE_TOKEN", "sdm_svc_nonsense")])
        .fails(4);
    sdm.login(&token);
    let out = sdm.run(&["connect", "pgsql", "--json"]);
    let port = u16::try_from(out.json()["port"].as_u64().unwrap()).unwrap();
    let (_, before) = scrape(diag);
    assert_eq!(
        sample(&before, r#"sdm_agent_logins_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &before,
            r#"sdm_agent_logins_total{outcome="invalid_token"}"#
        ),
        1.0,
        "{before:#?}"
    );
    assert_eq!(
        sample(&before, r#"sdm_agent_tunnels_open{resource="pgsql"}"#),
        1.0
    );
    // Once the tunnel is open, its resource's series are there, at 0.
    for name in [
        r#"sdm_agent_connections_total{resource="pgsql"}"#,
        r#"sdm_agent_connection_failures_total{resource="pgsql"}"#,
        r#"sdm_agent_tunnel_bytes_total{resource="pgsql",direction="up"}"#,
    ] {
        assert_eq!(before.get(name), Some(&0.0), "{name} in {before:#?}");
    }

    let (code, stdout, stderr) = psql_as(port, "etl", None, "SELECT 'through ' || 'sdm'");
    assert_eq!((code, stdout.as_str()), (0, "through sdm"), "{stderr}");

    // The connection's bytes are counted when the agent has seen it end.
    let mut after = BTreeMap::new();
    let mut text = String::new();
    let ended = eventually(LIMIT, || {
        (text, after) = scrape(diag);
        sample(&after, r#"sdm_agent_connections_open{resource="pgsql"}"#) == 0.0
            && sample(&after, r#"sdm_agent_connections_total{resource="pgsql"}"#) >= 1.0
    });
    assert!(
        ended,
        "the query's connection is still counted open: {after:#?}"
    );
    let moved = |name: &str| sample(&after, name) - sample(&before, name);
    assert_eq!(
        moved(r#"sdm_agent_connections_total{resource="pgsql"}"#),
        1.0,
        "psql made one connection"
    );
    assert_eq!(
        moved(r#"sdm_agent_connection_failures_total{resource="pgsql"}"#),
        0.0
    );
    // psql's startup and query out; PostgreSQL's authentication, parameters and row back.
    assert!(
        moved(r#"sdm_agent_tunnel_bytes_total{resource="pgsql",direction="up"}"#) > 40.0,
        "{after:#?}"
    );
    assert!(
        moved(r#"sdm_agent_tunnel_bytes_total{resource="pgsql",direction="down"}"#) > 100.0,
        "{after:#?}"
    );
    assert_eq!(moved("sdm_agent_connection_setup_seconds_count"), 1.0);
    assert!(moved("sdm_agent_connection_setup_seconds_sum") > 0.0);
    promtool_check(&text);
    assert!(!text.contains(&token), "the token in the scrape");

    // Disconnected: the tunnel is no longer counted open.
    sdm.run(&["disconnect", "pgsql"]).ok();
    let (_, closed) = scrape(diag);
    assert_eq!(
        sample(&closed, r#"sdm_agent_tunnels_open{resource="pgsql"}"#),
        0.0
    );
}

#[test]
fn a_taken_port_or_an_address_off_loopback_is_refused_with_the_address_named() {
    let fx = Fixture::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sdm = fx.sdm();

    let out = sdm.run(&["listen", "--diag-listen", &addr]);
    let line = out.fails(11);
    assert!(
        line.contains(&format!("cannot listen for diagnostics on {addr}"))
            && line.contains("choose another --diag-listen"),
        "{line}"
    );
    assert!(
        !sdm.home.exists(),
        "nothing is created before the port is refused"
    );

    // From the environment, as a service unit would set it.
    let out = sdm.run_env(&["listen"], &[("SDM_DIAG_LISTEN", &addr)]);
    assert!(out.fails(11).contains(&addr), "{out:#?}");

    // In the background: the agent exits, and the command says why.
    let out = sdm.run(&["listen", "--daemon", "--diag-listen", &addr]);
    assert_eq!(out.code, 16, "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("cannot listen for diagnostics on {addr}")),
        "{out:#?}"
    );
    assert!(sdm.agent_pid().is_none());

    let line = sdm
        .run(&["listen", "--diag-listen", "0.0.0.0:0"])
        .fails(2)
        .to_owned();
    assert!(
        line.contains("--diag-listen 0.0.0.0:0 is not a loopback address")
            && line.contains("--diag-allow-remote"),
        "{line}"
    );
    let out = sdm.run(&["listen", "--diag-allow-remote"]);
    assert_eq!(
        out.code, 2,
        "--diag-allow-remote needs --diag-listen: {out:#?}"
    );
}
