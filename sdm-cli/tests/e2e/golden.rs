//! Golden tests: the status table and the JSON shapes scripts rely on (`tests/golden/`).

use std::collections::BTreeMap;

use sdm_core::ResourceKind;

use crate::support::{Fixture, fill, free_port, golden, redact};

/// Values that change from run to run.
const VOLATILE: [&str; 7] = [
    "id",
    "pid",
    "started_at",
    "logged_in_at",
    "version",
    "home",
    // Derived from the installation's SSH CA, new in every test.
    "ssh_host_key",
];

#[test]
fn status_table_and_json() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let (pg_port, warehouse_port, bastion_port) = (free_port(), free_port(), free_port());
    // Three classes of kinds, fixed and free ports, tags; one resource not granted.
    fx.resource(
        "pgsql_1_31",
        ResourceKind::Postgres,
        echo.port(),
        Some(pg_port),
    );
    fx.resource("warehouse", ResourceKind::Postgres, echo.port(), None);
    fx.resource(
        "bastion",
        ResourceKind::Ssh,
        echo.port(),
        Some(bastion_port),
    );
    fx.resource("metrics-tcp", ResourceKind::Tcp, echo.port(), None);
    fx.resource("not-granted", ResourceKind::Redis, echo.port(), None);
    let r = sdm_core::admin::NewResource::new(
        "kafka",
        ResourceKind::Other("kafka".into()),
        "127.0.0.1",
    )
    .port(echo.port())
    .tag("env", "prod")
    .tag("team", "data");
    fx.block_on(fx.admin.create_resource(&r)).unwrap();
    let token = fx.account_with(
        "etl-bot",
        &["pgsql_1_31", "warehouse", "bastion", "metrics-tcp", "kafka"],
    );
    let sdm = fx.sdm();
    sdm.login(&token);
    // The agent renders the table itself (it alone knows what auto-connect opened); with
    // nothing auto-connected it is the library's, character for character.
    let library = fx.block_on(async {
        let session = sdm_core::Session::login(&token).await.unwrap();
        let table = session.status().await.unwrap().to_string();
        session.logout().await.unwrap();
        table
    });
    assert_eq!(sdm.run(&["status"]).ok(), library);
    sdm.run(&["connect", "warehouse", &warehouse_port.to_string()])
        .ok();
    sdm.run(&["connect", "bastion"]).ok();

    let values = BTreeMap::from([
        ("pg_port", pg_port.to_string()),
        ("warehouse_port", warehouse_port.to_string()),
        ("bastion_port", bastion_port.to_string()),
        ("api_url", fx.api_url.clone()),
    ]);
    assert_eq!(
        sdm.run(&["status"]).ok(),
        fill(&golden("status.txt"), &values)
    );

    let mut json = sdm.run(&["status", "--json"]).json();
    redact(&mut json, &VOLATILE);
    let expected: serde_json::Value =
        serde_json::from_str(&fill(&golden("status.json"), &values)).unwrap();
    assert_eq!(
        json,
        expected,
        "{}",
        serde_json::to_string_pretty(&json).unwrap()
    );

    let mut ready = sdm.run(&["ready", "--json"]).json();
    redact(&mut ready, &VOLATILE);
    let expected: serde_json::Value =
        serde_json::from_str(&fill(&golden("ready.json"), &values)).unwrap();
    assert_eq!(
        ready,
        expected,
        "{}",
        serde_json::to_string_pretty(&ready).unwrap()
    );

    let connected = sdm.run(&["connect", "pgsql", "--json"]).json();
    let expected: serde_json::Value =
        serde_json::from_str(&fill(&golden("connect.json"), &values)).unwrap();
    assert_eq!(connected, expected);
}

#[test]
fn an_account_without_grants_sees_a_sentence() {
    let fx = Fixture::start();
    let token = fx.service_account("lonely");
    let sdm = fx.sdm();
    sdm.login(&token);
    assert_eq!(
        sdm.run(&["status"]).ok(),
        "No resources are granted to lonely.\n"
    );
    assert_eq!(
        sdm.run(&["status", "--json"]).json()["resources"],
        serde_json::json!([])
    );
    assert_eq!(
        sdm.run(&["connect", "--all"]).ok(),
        "no resources are granted to this account\n"
    );
}
