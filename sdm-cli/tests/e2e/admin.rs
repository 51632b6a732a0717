//! `sdm admin …` against a real server: tokens alone on stdout, badges, JSON, and grants as the
//! job sees them.

use crate::support::{Fixture, Sdm};

fn admin_env(fx: &Fixture) -> [(&'static str, &str); 1] {
    [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())]
}

fn admin(fx: &Fixture, sdm: &Sdm, args: &[&str]) -> crate::support::Out {
    let mut full = vec!["admin"];
    full.extend_from_slice(args);
    sdm.run_env(&full, &admin_env(fx))
}

#[test]
fn service_accounts_create_list_suspend_rotate_delete() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    let out = admin(&fx, &sdm, &["services", "create", "etl-bot"]);
    let token = out.ok().strip_suffix('\n').unwrap().to_owned();
    assert!(token.starts_with("sdm_svc_"), "{out:#?}");
    assert!(!token.contains(char::is_whitespace));
    assert!(out.stderr.contains("shown only this once"), "{out:#?}");
    assert!(!out.stderr.contains(&token), "the notice repeats the token");

    // The token printed is the account's: a job logs in with it.
    let job = fx.sdm();
    job.login(&token);
    job.run(&["logout"]).ok();

    // --token wins over the environment.
    let listed = sdm.run(&["admin", "services", "list", "--token", &fx.admin_token]);
    let text = listed.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TYPE", "STATUS", "CREATED"]
    );
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("etl-bot")[1..3], ["service", "active"]);
    assert_eq!(row("admin")[1..3], ["admin", "active"]);

    let v = admin(&fx, &sdm, &["services", "suspend", "etl-bot", "--json"]).json();
    assert_eq!(v["status"], "suspended");
    assert_eq!(v["kind"], "service");
    job.run_env(&["login"], &[("SDM_SERVICE_TOKEN", &token)])
        .fails(4);
    assert_eq!(
        admin(&fx, &sdm, &["services", "unsuspend", "etl-bot"]).ok(),
        "etl-bot: active\n"
    );
    job.login(&token);
    job.run(&["logout"]).ok();

    let out = admin(&fx, &sdm, &["services", "rotate", "etl-bot"]);
    let rotated = out.ok().trim_end().to_owned();
    assert!(
        rotated.starts_with("sdm_svc_") && rotated != token,
        "{out:#?}"
    );
    job.run_env(&["login"], &[("SDM_SERVICE_TOKEN", &token)])
        .fails(4);
    job.login(&rotated);
    job.run(&["logout"]).ok();

    let created = admin(&fx, &sdm, &["services", "create", "other", "--json"]).json();
    assert_eq!(created["account"]["name"], "other");
    assert!(created["token"].as_str().unwrap().starts_with("sdm_svc_"));

    // --admin makes an admin, whose token runs `sdm admin` in turn.
    let ops = admin(&fx, &sdm, &["services", "create", "ops", "--admin"]);
    let ops_token = ops.ok().trim_end().to_owned();
    assert!(ops_token.starts_with("sdm_adm_"), "{ops:#?}");
    assert!(ops.stderr.contains("created admin ops"), "{ops:#?}");
    let by_ops = sdm.run(&["admin", "services", "list", "--token", &ops_token]);
    assert!(by_ops.ok().contains("ops "), "{by_ops:#?}");

    assert_eq!(
        admin(&fx, &sdm, &["services", "delete", "etl-bot"]).ok(),
        "deleted account etl-bot with its tokens and grants\n"
    );
    let all = admin(&fx, &sdm, &["services", "list", "--json"]).json();
    let names: Vec<&str> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "ops", "other"]);
    job.run_env(&["login"], &[("SDM_SERVICE_TOKEN", &rotated)])
        .fails(4);
}

#[test]
fn resources_grants_and_what_the_job_sees() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    let secret = "s3cret-Passw0rd";
    let out = sdm.run_with(
        &[
            "admin",
            "datasources",
            "add",
            "postgres",
            "pg-main",
            "--hostname",
            "db.internal",
            "--port",
            "5433",
            "--database",
            "app",
            "--username",
            "app",
            "--password",
            secret,
            "--port-override",
            "15432",
            "--tags",
            "env=prod,team=data",
            "--databases",
            "reports,staging",
            "--allow-replication",
            "--json",
        ],
        &admin_env(&fx),
        None,
    );
    let pg = out.json();
    assert_eq!(pg["databases"], serde_json::json!(["reports", "staging"]));
    assert_eq!(pg["replication"], true);
    assert_eq!(
        admin(
            &fx,
            &sdm,
            &[
                "resources",
                "update",
                "pg-main",
                "--databases",
                "",
                "--replication",
                "off"
            ],
        )
        .ok(),
        "updated resource pg-main: databases app; replication refused\n"
    );
    assert_eq!(pg["name"], "pg-main");
    assert_eq!(pg["kind"], "postgres");
    assert_eq!(pg["port"], 5433);
    assert_eq!(pg["port_override"], 15432);
    assert_eq!(pg["database"], "app");
    assert_eq!(pg["has_credentials"], true);
    assert_eq!(pg["tags"]["team"], "data");
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));

    assert_eq!(
        admin(
            &fx,
            &sdm,
            &[
                "servers",
                "add",
                "ssh",
                "bastion",
                "--hostname",
                "10.0.0.5",
                "--port",
                "22",
                "--username",
                "deploy",
                "--certificate-authority"
            ]
        )
        .ok(),
        "created ssh server bastion (10.0.0.5:22)\n"
    );
    // The line ssh servers trust, and how the gateway logs in.
    let ca = admin(&fx, &sdm, &["ssh-ca", "public-key"]).ok().to_owned();
    assert!(
        ca.starts_with("ssh-ed25519 AAAA") && ca.ends_with(" sdm-ssh-ca\n"),
        "{ca}"
    );
    assert_eq!(
        admin(
            &fx,
            &sdm,
            &[
                "servers",
                "update",
                "bastion",
                "--host-key",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQvC1MkOVEB74PVl31WCUi7loOAB2JpWfNHQzNChLgV root@bastion"
            ]
        )
        .ok(),
        "updated server bastion: logs in as deploy with sdm's SSH CA; host key \
         ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQvC1MkOVEB74PVl31WCUi7loOAB2JpWfNHQzNChLgV\n"
    );
    assert_eq!(
        admin(
            &fx,
            &sdm,
            &["servers", "update", "bastion", "--forget-host-key"]
        )
        .ok(),
        "updated server bastion: logs in as deploy with sdm's SSH CA; host key recorded on the \
         next connection\n"
    );
    assert_eq!(
        admin(
            &fx,
            &sdm,
            &[
                "servers",
                "add",
                "tcp",
                "metrics",
                "--hostname",
                "127.0.0.1",
                "--port",
                "9100",
                "--port-override",
                "19100",
                "--tags",
                "env=dev"
            ]
        )
        .ok(),
        "created tcp server metrics (127.0.0.1:9100); clients listen on port 19100\n"
    );

    let listed = admin(&fx, &sdm, &["resources", "list"]);
    let text = listed.ok();
    assert!(!text.contains(secret));
    let expected_rows = [
        vec![
            "NAME",
            "TYPE",
            "HOST",
            "PORT",
            "LOCAL",
            "PORT",
            "CREDENTIALS",
            "TAGS",
        ],
        vec!["bastion", "ssh", "10.0.0.5", "22", "-", "-", "-"],
        vec![
            "metrics",
            "tcp",
            "127.0.0.1",
            "9100",
            "19100",
            "-",
            "env=dev",
        ],
        vec![
            "pg-main",
            "postgres",
            "db.internal",
            "5433",
            "15432",
            "stored",
            "(app)",
            "env=prod,team=data",
        ],
    ];
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, expected_rows, "{text}");

    // Grants as a logged-in job sees them.
    let token = admin(&fx, &sdm, &["services", "create", "etl"])
        .ok()
        .trim()
        .to_owned();
    let job = fx.sdm();
    job.login(&token);
    assert_eq!(
        job.run(&["status"]).ok(),
        "No resources are granted to etl.\n"
    );
    assert_eq!(
        admin(&fx, &sdm, &["grant", "etl", "bastion"]).ok(),
        "granted bastion to etl\n"
    );
    let grant = admin(&fx, &sdm, &["grant", "etl", "metrics", "--json"]).json();
    assert_eq!(grant["resource_name"], "metrics");
    let names = |sdm: &Sdm| -> Vec<String> {
        sdm.run(&["status", "--json"]).json()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&job), ["bastion", "metrics"]);
    assert_eq!(
        admin(&fx, &sdm, &["revoke", "etl", "bastion"]).ok(),
        "revoked bastion from etl\n"
    );
    assert_eq!(names(&job), ["metrics"]);
    assert_eq!(
        admin(&fx, &sdm, &["resources", "delete", "metrics"]).ok(),
        "deleted resource metrics and its grants\n"
    );
    assert!(names(&job).is_empty());
    let left = admin(&fx, &sdm, &["resources", "list", "--json"]).json();
    assert_eq!(left["resources"].as_array().unwrap().len(), 2);
}

#[test]
fn organisation_settings_show_and_port_overrides() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    let settings = |sdm: &Sdm, args: &[&str]| {
        let mut full = vec!["settings"];
        full.extend_from_slice(args);
        admin(&fx, sdm, &full)
    };
    let server_says = || fx.block_on(fx.admin.settings()).unwrap().auto_connect;
    const PORTS_OFF: &str = "assign local ports: off (only resources given --port-override \
                             have a local port)\n\
                             port range: 20000-29999\n";
    assert_eq!(
        settings(&sdm, &["show"]).ok(),
        format!("auto-connect on login: off\n{PORTS_OFF}")
    );

    let out = settings(&sdm, &["port-overrides", "--auto-connect", "on"]);
    assert_eq!(
        out.ok(),
        format!(
            "auto-connect on login: on (at login, every granted resource with a fixed port is \
             connected on that port)\n{PORTS_OFF}"
        )
    );
    assert_eq!(
        out.stderr,
        "agents act on the setting when they next log in (`sdm login`)\n"
    );
    assert!(server_says());
    let range = serde_json::json!({"first": 20000, "last": 29999});
    assert_eq!(
        settings(&sdm, &["show", "--json"]).json(),
        serde_json::json!({ "auto_connect": true, "assign_ports": false, "port_range": range })
    );

    let out = settings(&sdm, &["port-overrides", "--auto-connect", "off", "--json"]);
    assert_eq!(
        out.json(),
        serde_json::json!({ "auto_connect": false, "assign_ports": false, "port_range": range })
    );
    assert!(!server_says());

    // Usage errors, a service token and no token change nothing.
    for bad in [
        &["port-overrides", "--auto-connect", "maybe"][..],
        &["port-overrides"][..],
        &["port-overrides", "--range", "30000-20000"][..],
        &["port-overrides", "--range", "0-10"][..],
        &["port-overrides", "--range", "1-65536"][..],
        &["port-overrides", "--assign-ports", "yes"][..],
    ] {
        let out = settings(&sdm, bad);
        assert_eq!(out.code, 2, "{out:#?}");
    }
    let token = fx.service_account("etl");
    let args = [
        "admin",
        "settings",
        "port-overrides",
        "--auto-connect",
        "on",
        "--token",
        &token,
    ];
    sdm.run(&args).fails(5);
    sdm.run(&[
        "admin",
        "settings",
        "port-overrides",
        "--auto-connect",
        "on",
    ])
    .fails(4);
    assert!(!server_says());
}

#[test]
fn the_audit_trail_lists_a_jobs_connections() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.resource("echo", sdm_core::ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["echo"]);
    let job = fx.sdm();
    job.login(&token);
    let port = job.run(&["connect", "echo", "--json"]).json()["port"]
        .as_u64()
        .unwrap();
    assert_eq!(
        crate::workflow::echo_once(u16::try_from(port).unwrap()),
        b"ping"
    );

    // The record is complete once the connection has ended.
    let sdm = fx.sdm();
    let mut records = serde_json::Value::Null;
    let done = crate::support::eventually(std::time::Duration::from_secs(30), || {
        let page = admin(&fx, &sdm, &["audit", "--account", "etl", "--json"]).json();
        records = page["records"].clone();
        records[0]["outcome"] == "ok"
    });
    assert!(done, "no finished audit record: {records:#}");
    let record = &records[0];
    assert_eq!(record["account_name"], "etl");
    assert_eq!(record["resource_name"], "echo");
    assert_eq!(record["bytes_up"], 4);
    assert_eq!(record["bytes_down"], 4);

    let text = admin(&fx, &sdm, &["audit", "--resource", "echo", "--since", "1h"]);
    let lines: Vec<&str> = text.ok().lines().collect();
    assert!(lines[0].starts_with("STARTED  "), "{text:#?}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    // STARTED is three words (date, time, UTC), then DURATION.
    assert_eq!(row[4..], ["etl", "echo", "4", "4", "0", "ok"], "{text:#?}");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let future = (now + 3600).to_string();
    assert_eq!(
        admin(&fx, &sdm, &["audit", "--since", &future]).ok(),
        "no connections recorded\n"
    );
    assert_eq!(admin(&fx, &sdm, &["audit", "--since", "soon"]).code, 2);
}

#[test]
fn gateways_create_list_and_delete() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    let out = admin(
        &fx,
        &sdm,
        &["gateways", "create", "gw-eu-1", "--tags", "region=eu"],
    );
    let token = out.ok().strip_suffix('\n').unwrap().to_owned();
    assert!(token.starts_with("sdm_gw_"), "{out:#?}");
    assert!(out.stderr.contains("shown only this once"), "{out:#?}");
    assert!(!out.stderr.contains(&token), "the notice repeats the token");

    let row = |text: &str, name: &str| -> Option<Vec<String>> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
    };
    let text = admin(&fx, &sdm, &["gateways", "list"]).ok().to_owned();
    assert_eq!(
        text.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "ADDRESS", "TAGS", "LAST", "SEEN", "LIVE"]
    );
    assert_eq!(
        row(&text, "gw-eu-1").unwrap(),
        ["gw-eu-1", "-", "region=eu", "-", "no"],
        "{text}"
    );

    // The token printed is the gateway's: a standalone gateway registers with it.
    let spool = tempfile::tempdir().unwrap();
    let gateway = fx
        .block_on(sdm_server::remote::StandaloneGateway::start(
            sdm_server::remote::StandaloneConfig::new(&token)
                .control_planes([fx.api_url.clone()])
                .listen("127.0.0.1:0".parse().unwrap())
                .audit_spool(spool.path().join("spool")),
        ))
        .unwrap();
    let listed = admin(&fx, &sdm, &["gateways", "list", "--json"]).json();
    let entry = listed["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "gw-eu-1")
        .unwrap()
        .clone();
    assert_eq!(entry["address"], gateway.address());
    assert_eq!(entry["live"], true);
    let text = admin(&fx, &sdm, &["gateways", "list"]).ok().to_owned();
    let live = row(&text, "gw-eu-1").unwrap();
    assert_eq!(live[1], gateway.address());
    assert_eq!(live.last().unwrap(), "yes", "{text}");

    // A second gateway of the same name is refused; deleting removes it from the list.
    let dup = admin(&fx, &sdm, &["gateways", "create", "gw-eu-1"])
        .fails(14)
        .to_owned();
    assert!(dup.contains("gw-eu-1"), "{dup}");
    assert_eq!(
        admin(&fx, &sdm, &["gateways", "delete", "gw-eu-1"]).ok(),
        "deleted gateway gw-eu-1; its token is refused from now on\n"
    );
    assert!(row(admin(&fx, &sdm, &["gateways", "list"]).ok(), "gw-eu-1").is_none());
    let gone = admin(&fx, &sdm, &["gateways", "delete", "gw-eu-1"])
        .fails(14)
        .to_owned();
    assert!(gone.contains("gw-eu-1"), "{gone}");
    fx.block_on(gateway.shutdown());
}

#[test]
fn gateway_tags_may_be_bare_and_a_pin_may_list_several_selectors() {
    let fx = Fixture::start();
    let sdm = fx.sdm();
    // As `sdm-server gateway --tags` and the pinning rules take them: a bare name is a tag.
    admin(
        &fx,
        &sdm,
        &["gateways", "create", "gw-edge", "--tags", "edge,region=eu"],
    )
    .ok();
    let listed = admin(&fx, &sdm, &["gateways", "list", "--json"]).json();
    let entry = listed["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "gw-edge")
        .unwrap()
        .clone();
    assert_eq!(
        entry["tags"],
        serde_json::json!({"edge": "", "region": "eu"})
    );

    // `--tag` takes one tag whole, so a pin's selector list keeps its commas.
    let created = admin(
        &fx,
        &sdm,
        &[
            "servers",
            "add",
            "tcp",
            "pinned",
            "--hostname",
            "127.0.0.1",
            "--port",
            "9",
            "--tags",
            "env=prod",
            "--tag",
            "sdm.gateway=edge,region=us",
            "--json",
        ],
    )
    .json();
    assert_eq!(
        created["tags"],
        serde_json::json!({"env": "prod", "sdm.gateway": "edge,region=us"})
    );

    // The same tag from both flags is a mistake, not a silent overwrite.
    let twice = admin(
        &fx,
        &sdm,
        &[
            "servers",
            "add",
            "tcp",
            "twice",
            "--hostname",
            "127.0.0.1",
            "--port",
            "9",
            "--tags",
            "sdm.gateway=a",
            "--tag",
            "sdm.gateway=b",
        ],
    )
    .fails(2)
    .to_owned();
    assert!(twice.contains("\"sdm.gateway\" is given twice"), "{twice}");
    // A bare resource tag is still refused, with the reason (a usage error, from clap).
    let bare = admin(
        &fx,
        &sdm,
        &[
            "servers",
            "add",
            "tcp",
            "bare",
            "--hostname",
            "127.0.0.1",
            "--port",
            "9",
            "--tag",
            "edge",
        ],
    );
    assert_eq!(bare.code, 2, "{bare:#?}");
    assert!(
        bare.stderr.contains("\"edge\" is not key=value"),
        "{bare:#?}"
    );
}
