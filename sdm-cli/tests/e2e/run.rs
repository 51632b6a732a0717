//! `sdm run`: tunnels for the life of one command, against the real PostgreSQL: `psql -f` loads
//! a schema and `pg_dump` dumps it through the tunnel; the environment and `{port}`; exit
//! statuses (the command's, 127, a signal's); an unknown resource stops it before it starts;
//! signals reach the command; with an agent running, its tunnels are used and those opened
//! for the command are closed afterwards.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{Fixture, pg, pg_resource};

#[test]
fn psql_f_and_pg_dump_run_through_tunnels_that_live_as_long_as_the_command() {
    let fx = Fixture::start();
    pg_resource(&fx, "warehouse", None);
    let token = fx.account_with("etl", &["warehouse"]);
    let sdm = fx.sdm();
    let env = [("SDM_SERVICE_TOKEN", token.as_str())];
    let pg = pg();
    let psql = pg.bin("psql").display().to_string();
    let pg_dump = pg.bin("pg_dump").display().to_string();

    // psql -f through the tunnel (no agent: the command's own login). PGHOST and PGPORT are
    // set for the one postgres resource; the gateway logs in with the stored credentials.
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(
        &schema,
        "DROP TABLE IF EXISTS sdm_run_orders;\n\
         CREATE TABLE sdm_run_orders (id int PRIMARY KEY, item text NOT NULL);\n\
         INSERT INTO sdm_run_orders VALUES (1, 'first'), (2, 'second');\n",
    )
    .unwrap();
    let out = sdm.run_env(
        &[
            "run",
            "warehouse",
            "--",
            &psql,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "etl",
        ]
        .into_iter()
        .chain(["-d", "postgres", "-f", schema.to_str().unwrap()])
        .collect::<Vec<_>>(),
        &env,
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("INSERT 0 2"), "{out:#?}");

    // pg_dump of the real database, addressed with {host} and {port}.
    let out = sdm.run_env(
        &[
            "run",
            "warehouse",
            &pg_dump,
            "-h",
            "{host}",
            "-p",
            "{port}",
            "-U",
            "etl",
            "-d",
            "postgres",
            "-t",
            "sdm_run_orders",
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("CREATE TABLE public.sdm_run_orders"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1\tfirst") && out.stdout.contains("2\tsecond"),
        "{}",
        out.stdout
    );

    // The environment, and the command's exit status as sdm run's.
    let out = sdm.run_env(
        &[
            "run",
            "warehouse",
            "--",
            "sh",
            "-c",
            "echo \"$PGHOST $PGPORT $PGSSLMODE $SDM_WAREHOUSE_HOST $SDM_WAREHOUSE_PORT $SDM_WAREHOUSE_ADDR {port}\"; exit 7",
        ],
        &env,
    );
    assert_eq!(out.code, 7, "{out:#?}");
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    let port = words[1];
    assert_eq!(
        words,
        [
            "127.0.0.1",
            port,
            "disable",
            "127.0.0.1",
            port,
            &format!("127.0.0.1:{port}"),
            port
        ],
        "{out:#?}"
    );
    // The tunnel is gone with the command.
    let gone = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()));
    assert!(gone.is_err(), "the tunnel outlived the command");

    // A command that is not found: 127, with a clear message.
    let out = sdm.run_env(&["run", "warehouse", "no-such-command-sdm"], &env);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(
        out.stderr
            .contains("no-such-command-sdm: command not found"),
        "{out:#?}"
    );

    // An unknown resource: the usual error and exit code, and the command never starts.
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = sdm.run_env(&["run", "nope", "--", "sh", "-c", &touch], &env);
    assert_eq!(out.code, 6, "{out:#?}");
    assert!(out.stderr.contains("nope"), "{out:#?}");
    assert!(
        !marker.exists(),
        "the command ran despite the unknown resource"
    );
    // No token and no agent: not authenticated, nothing runs.
    let out = sdm.run(&["run", "warehouse", "--", "sh", "-c", &touch]);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(!marker.exists());
}

#[test]
fn signals_reach_the_command_and_its_status_comes_back() {
    let fx = Fixture::start();
    pg_resource(&fx, "warehouse", None);
    let token = fx.account_with("etl", &["warehouse"]);
    let sdm = fx.sdm();
    let mut child = sdm
        .command([
            "run",
            "warehouse",
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 1; done",
        ])
        .env("SDM_SERVICE_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
}

#[test]
fn with_an_agent_its_tunnels_are_used_and_only_the_new_ones_closed() {
    let fx = Fixture::start();
    pg_resource(&fx, "warehouse", None);
    pg_resource(&fx, "reports", None);
    let token = fx.account_with("etl", &["warehouse", "reports"]);
    let sdm = fx.sdm();
    sdm.login(&token);
    let open = sdm.run(&["connect", "warehouse", "--json"]).json();
    let open_port = open["port"].as_u64().unwrap().to_string();

    // Both names, no token in the environment: the agent's session serves them. Two postgres
    // resources: no PGHOST (which one would it be?), but SDM_<NAME>_PORT for each.
    let out = sdm.run(&[
        "run",
        "warehouse",
        "reports",
        "--",
        "sh",
        "-c",
        "echo \"${PGHOST:-none} $SDM_WAREHOUSE_PORT $SDM_REPORTS_PORT\"",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        (words[0], words[1]),
        ("none", open_port.as_str()),
        "{out:#?}"
    );
    assert!(words[2].parse::<u16>().is_ok(), "{out:#?}");

    // The tunnel that was open stays; the one opened for the command is closed.
    let status = sdm.run(&["status", "--json"]).json();
    let state = |name: &str| {
        status["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(state("warehouse"), "connected", "{status:#}");
    assert_eq!(state("reports"), "not_connected", "{status:#}");
}
