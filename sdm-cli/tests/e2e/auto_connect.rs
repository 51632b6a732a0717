//! Port overrides: with the organisation setting "connect automatically to all granted
//! resources on login" on, `sdm login` connects every granted resource that has a fixed port,
//! on that port.

use std::collections::BTreeMap;
use std::net::TcpListener;

use sdm_core::ResourceKind;
use sdm_core::admin::{Credentials, NewResource};
use serde_json::{Value, json};

use crate::support::{Fixture, fill, free_port, golden, pg, psql_as};
use crate::workflow::echo_once;

fn set_auto_connect(fx: &Fixture, on: bool) {
    let settings = fx.block_on(fx.admin.set_auto_connect(on)).unwrap();
    assert_eq!(settings.auto_connect, on);
}

/// A datasource on the shared PostgreSQL cluster, its credentials stored, on a fixed port.
fn pg_resource(fx: &Fixture, name: &str, port_override: u16) {
    let pg = pg();
    let r = NewResource::new(name, ResourceKind::Postgres, "127.0.0.1")
        .port(pg.port())
        .credentials(Credentials {
            username: pg.superuser().to_owned(),
            password: pg.password().to_owned(),
            database: Some("postgres".to_owned()),
        })
        .port_override(port_override);
    fx.block_on(fx.admin.create_resource(&r)).unwrap();
}

/// The row of `sdm status --json` for `name`.
fn row(status: &Value, name: &str) -> Value {
    status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {status:#}"))
        .clone()
}

/// The `resource` names in a JSON array of tunnels or failures.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["resource"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn login_connects_every_granted_resource_with_a_fixed_port() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let (echo_port, pg_port) = (free_port(), free_port());
    // A fixed port something else holds.
    let busy_port = free_port();
    let taken = TcpListener::bind(("127.0.0.1", busy_port)).unwrap();
    fx.resource(
        "echo-fixed",
        ResourceKind::Tcp,
        echo.port(),
        Some(echo_port),
    );
    pg_resource(&fx, "pg-fixed", pg_port);
    fx.resource("busy", ResourceKind::Tcp, echo.port(), Some(busy_port));
    fx.resource("warehouse", ResourceKind::Postgres, echo.port(), None);
    fx.resource(
        "not-granted",
        ResourceKind::Tcp,
        echo.port(),
        Some(free_port()),
    );
    let token = fx.account_with("etl", &["echo-fixed", "pg-fixed", "busy", "warehouse"]);
    set_auto_connect(&fx, true);

    // The login succeeds, says what it connected, and reports what it could not.
    let sdm = fx.sdm();
    let out = sdm.login(&token);
    assert_eq!(
        out.stdout,
        format!(
            "logged in as etl (service account) at {}\n\
             auto-connected echo-fixed on 127.0.0.1:{echo_port}\n\
             auto-connected pg-fixed on 127.0.0.1:{pg_port}\n",
            fx.api_url
        ),
        "{out:#?}"
    );
    let notices: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("started the sdm agent"))
        .collect();
    assert_eq!(notices.len(), 2, "{out:#?}");
    assert!(
        notices[0].starts_with("warning: auto-connect could not connect busy: ")
            && notices[0].contains(&format!("127.0.0.1:{busy_port}"))
            && notices[0].contains("already in use"),
        "{out:#?}"
    );
    assert_eq!(
        notices[1],
        "not auto-connected (no fixed port): warehouse; `sdm connect NAME` opens them"
    );

    // The agent's log tells it too.
    let log = std::fs::read_to_string(sdm.home.join("agent.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("auto-connect failed")
            && l.contains("resource=busy")
            && l.contains(&format!("port={busy_port}"))),
        "{log}"
    );

    // The tunnels carry traffic: the echo, and psql without a password (the gateway logs in
    // with the stored credentials).
    assert_eq!(echo_once(echo_port), b"ping");
    let (code, stdout, stderr) = psql_as(pg_port, "etl", None, "SELECT 'auto' || 'connected'");
    assert_eq!((code, stdout.as_str()), (0, "autoconnected"), "{stderr}");

    let ports = BTreeMap::from([
        ("echo_port", echo_port.to_string()),
        ("pg_port", pg_port.to_string()),
        ("busy_port", busy_port.to_string()),
    ]);
    let out = sdm.run(&["status"]);
    assert_eq!(out.ok(), fill(&golden("auto-status.txt"), &ports));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(
        lines[0].starts_with("warning: auto-connect at login could not connect busy: ")
            && lines[0].ends_with("; `sdm connect busy` tries again"),
        "{out:#?}"
    );

    let status = sdm.run(&["status", "--json"]).json();
    for name in ["echo-fixed", "pg-fixed"] {
        let r = row(&status, name);
        assert_eq!(
            (&r["status"], &r["auto"], &r["auto_error"]),
            (&json!("connected"), &json!(true), &Value::Null),
            "{r:#}"
        );
    }
    let warehouse = row(&status, "warehouse");
    assert_eq!(
        (
            &warehouse["status"],
            &warehouse["auto"],
            &warehouse["auto_error"]
        ),
        (&json!("not_connected"), &json!(false), &Value::Null)
    );
    let busy = row(&status, "busy");
    assert_eq!(busy["status"], "not_connected");
    assert_eq!(busy["auto"], false);
    assert_eq!(busy["port"], busy_port);
    assert_eq!(busy["auto_error"]["kind"], "port_in_use", "{busy:#}");
    assert_eq!(sdm.run(&["ready", "--json"]).json()["agent"]["tunnels"], 2);

    // Once the port is free, `sdm connect` opens it there, and the failure is forgotten; a
    // tunnel opened by hand is not marked auto.
    drop(taken);
    assert_eq!(
        sdm.run(&["connect", "busy"]).ok(),
        format!("connected busy on 127.0.0.1:{busy_port}\n")
    );
    let out = sdm.run(&["status", "--json"]);
    let busy = row(&out.json(), "busy");
    assert_eq!(
        (&busy["status"], &busy["auto"], &busy["auto_error"]),
        (&json!("connected"), &json!(false), &Value::Null)
    );
    assert_eq!(out.stderr, "");

    // Logging in again closes the old tunnels first, so the new session gets the same fixed
    // ports.
    let out = sdm.run_env(&["login", "--json"], &[("SDM_SERVICE_TOKEN", &token)]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("replaced the session of etl"),
        "{out:#?}"
    );
    let v = out.json();
    assert_eq!(v["session"]["account"]["name"], "etl");
    assert_eq!(v["tunnels"], 3);
    let auto = &v["auto_connect"];
    assert_eq!(auto["enabled"], true);
    assert_eq!(names(&auto["tunnels"]), ["busy", "echo-fixed", "pg-fixed"]);
    assert_eq!(
        auto["tunnels"][0]["local_address"],
        format!("127.0.0.1:{busy_port}")
    );
    assert_eq!(auto["failures"], json!([]));
    assert_eq!(auto["skipped"], json!(["warehouse"]));
    let (code, stdout, stderr) = psql_as(pg_port, "etl", None, "SELECT 1");
    assert_eq!((code, stdout.as_str()), (0, "1"), "{stderr}");
    assert_eq!(echo_once(busy_port), b"ping");
    sdm.run(&["logout"]).ok();
}

#[test]
fn with_the_setting_off_login_connects_nothing() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let fixed = free_port();
    fx.resource("echo-fixed", ResourceKind::Tcp, echo.port(), Some(fixed));
    fx.resource("echo-free", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["echo-fixed", "echo-free"]);
    // On, then off again.
    set_auto_connect(&fx, true);
    set_auto_connect(&fx, false);

    let sdm = fx.sdm();
    let out = sdm.login(&token);
    assert_eq!(
        out.stdout,
        format!("logged in as etl (service account) at {}\n", fx.api_url)
    );
    assert!(!out.stderr.contains("auto-connect"), "{out:#?}");
    let status = sdm.run(&["status", "--json"]).json();
    for name in ["echo-fixed", "echo-free"] {
        let r = row(&status, name);
        assert_eq!(
            (&r["status"], &r["auto"], &r["auto_error"]),
            (&json!("not_connected"), &json!(false), &Value::Null),
            "{r:#}"
        );
    }
    assert!(!sdm.run(&["status"]).ok().contains("(auto)"));
    let v = sdm
        .run_env(&["login", "--json"], &[("SDM_SERVICE_TOKEN", &token)])
        .json();
    assert_eq!(
        v["auto_connect"],
        json!({"enabled": false, "tunnels": [], "failures": [], "skipped": []})
    );
    assert_eq!(v["tunnels"], 0);

    // Turned on while the agent is logged in: nothing happens until the next login.
    set_auto_connect(&fx, true);
    assert_eq!(sdm.run(&["ready", "--json"]).json()["agent"]["tunnels"], 0);
    let out = sdm.login(&token);
    assert!(
        out.stdout
            .ends_with(&format!("auto-connected echo-fixed on 127.0.0.1:{fixed}\n")),
        "{out:#?}"
    );
    assert_eq!(echo_once(fixed), b"ping");
    sdm.run(&["logout"]).ok();
}

/// `count` consecutive local ports that nothing listens on now.
fn free_range(count: u16) -> (u16, u16) {
    for _ in 0..50 {
        let first = free_port();
        let Some(last) = first.checked_add(count - 1) else {
            continue;
        };
        let all_free = (first..=last).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return (first, last);
        }
    }
    panic!("no {count} consecutive free ports found");
}

/// The guide's `sdm status`: with the port-overrides setting on, every resource has a local
/// port, shown whether connected or not, and auto-connect at login covers all of them.
#[test]
fn assigned_ports_show_in_status_and_auto_connect_opens_them() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    let admin_env = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    let pg = pg();
    // A datasource that exists before the setting is switched on, without a port.
    crate::support::pg_resource(&fx, "pgsql_1_31", None);
    let (first, last) = free_range(2);
    let range = format!("{first}-{last}");

    // Switching on gives the existing resource the first port of the range.
    let out = sdm.run_env(
        &[
            "admin",
            "settings",
            "port-overrides",
            "--assign-ports",
            "on",
            "--range",
            &range,
            "--auto-connect",
            "on",
        ],
        &admin_env,
    );
    let text = out.ok();
    assert!(
        text.contains("assign local ports: on (every resource gets a unique local port")
            && text.contains(&format!("port range: {range}\n")),
        "{out:#?}"
    );
    let listed: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("RESOURCE"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        listed,
        [
            vec!["RESOURCE", "LOCAL", "PORT", "FROM"],
            vec!["pgsql_1_31", &first.to_string(), "assigned"],
        ],
        "{out:#?}"
    );

    // A datasource created now gets the next port.
    let out = sdm.run_with(
        &[
            "admin",
            "datasources",
            "add",
            "postgres",
            "reports",
            "--hostname",
            "127.0.0.1",
            "--port",
            &pg.port().to_string(),
            "--database",
            "postgres",
            "--username",
            pg.superuser(),
            "--password-stdin",
            "--json",
        ],
        &admin_env,
        Some(pg.password()),
    );
    let created = out.json();
    assert_eq!(
        (&created["port_override"], &created["port_assigned"]),
        (&json!(last), &json!(true)),
        "{out:#?}"
    );
    // The range is full now: the next one is refused, clearly, and not created.
    let out = sdm.run_with(
        &[
            "admin",
            "servers",
            "add",
            "tcp",
            "one-too-many",
            "--hostname",
            "127.0.0.1",
            "--port",
            "9",
        ],
        &admin_env,
        None,
    );
    let refusal = out.fails(14);
    assert!(
        refusal.contains(&format!(
            "port-override range {range} has no free port left"
        )) && refusal.contains("widen the range"),
        "{out:#?}"
    );
    // An explicit port another resource holds is refused, naming it.
    let out = sdm.run_env(
        &[
            "admin",
            "servers",
            "add",
            "tcp",
            "thief",
            "--hostname",
            "127.0.0.1",
            "--port",
            "9",
            "--port-override",
            &first.to_string(),
        ],
        &admin_env,
    );
    assert!(out.fails(14).contains("\"pgsql_1_31\""), "{out:#?}");
    // So is an update to it; clearing an explicit port brings back an assigned one.
    let update = |args: &[&str]| {
        let mut full = vec!["admin", "resources", "update", "reports"];
        full.extend_from_slice(args);
        sdm.run_env(&full, &admin_env)
    };
    let out = update(&["--port-override", &first.to_string()]);
    assert!(
        out.fails(14).contains(&format!(
            "local port {first} is already the port of resource \"pgsql_1_31\""
        )),
        "{out:#?}"
    );
    let outside = free_port();
    let out = update(&["--port-override", &outside.to_string()]);
    assert!(
        out.ok().ends_with(&format!("; local port {outside}\n")),
        "{out:#?}"
    );
    let out = update(&["--clear-port-override"]);
    assert!(
        out.ok()
            .ends_with(&format!("; local port {last} (assigned)\n")),
        "{out:#?}"
    );

    // A job logs in: both resources are connected on their assigned ports.
    let token = fx.account_with("etl", &["pgsql_1_31", "reports"]);
    let job = fx.sdm();
    let out = job.login(&token);
    assert_eq!(
        out.stdout,
        format!(
            "logged in as etl (service account) at {}\n\
             auto-connected pgsql_1_31 on 127.0.0.1:{first}\n\
             auto-connected reports on 127.0.0.1:{last}\n",
            fx.api_url
        ),
        "{out:#?}"
    );
    // A real query through each tunnel, without a password (the gateway logs in).
    for port in [first, last] {
        let (code, stdout, stderr) = psql_as(port, "etl", None, "SELECT 'via ' || 'sdm'");
        assert_eq!((code, stdout.as_str()), (0, "via sdm"), "{stderr}");
    }

    // `sdm status` shows the port of a resource that is not connected, as in the guide.
    job.run(&["disconnect", "pgsql_1_31"]).ok();
    let status = job.run(&["status"]);
    let lines: Vec<&str> = status.ok().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["DATASOURCE", "NAME", "STATUS", "PORT", "TYPE"],
        "{status:#?}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "pgsql_1_31",
            "not",
            "connected",
            &first.to_string(),
            "postgres"
        ],
        "{status:#?}"
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        [
            "reports",
            "connected",
            "(auto)",
            &last.to_string(),
            "postgres"
        ],
        "{status:#?}"
    );
    job.run(&["logout"]).ok();
}
