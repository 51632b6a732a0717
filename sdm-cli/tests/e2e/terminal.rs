//! Text from a server reaches the terminal with its control characters written out: an older
//! server accepted escape sequences in resource kinds and tags, and a hostile one may send them.

use std::collections::BTreeMap;

use sdm_core::ResourceKind;
use sdm_core::admin::NewResource;
use sdm_server::store::{SqliteStore, Store};

use crate::support::{Fixture, Out};

/// Sets the terminal's title, rings the bell, then a C1 CSI that clears the screen.
const KIND: &str = "\u{1b}]0;pwned\u{7}kafka\u{9b}2J";
const KIND_SHOWN: &str = "\\x1b]0;pwned\\x07kafka\\u{9b}2J";
/// Clears the screen; then a bidi override that shows what follows backwards.
const TAG: &str = "\u{1b}[2Jdata\u{202e}eu";
const TAG_SHOWN: &str = "team=\\x1b[2Jdata\\u{202e}eu";

/// Asserts that stdout and stderr carry no control character but line breaks.
#[track_caller]
fn assert_terminal_safe(out: &Out) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let found: Vec<char> = text
            .chars()
            .filter(|c| *c != '\n' && sdm_core::text::is_terminal_control(*c))
            .collect();
        assert!(found.is_empty(), "{stream} carries {found:?}: {out:#?}");
    }
}

#[test]
fn control_characters_a_server_sends_are_printed_escaped() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    let kafka = NewResource::new("kafka", ResourceKind::Other("kafka".into()), "127.0.0.1")
        .port(echo.port())
        .tag("team", "data");
    fx.block_on(fx.admin.create_resource(&kafka)).unwrap();
    // What an older server stored: this one refuses such text, so it is written to the store
    // directly, as that server would have.
    let store = SqliteStore::open(&fx.dir.path().join("data").join("sdm.db")).unwrap();
    fx.block_on(async {
        let mut record = store.find_resource_by_name("kafka").await.unwrap().unwrap();
        record.kind = ResourceKind::from_name(KIND);
        record.tags = BTreeMap::from([("team".to_owned(), TAG.to_owned())]);
        store.update_resource(record).await.unwrap();
    });
    drop(store);
    let token = fx.account_with("etl", &["kafka"]);
    let sdm = fx.sdm();
    assert_terminal_safe(&sdm.login(&token));

    // The status table: the unknown kind is kept, and shown escaped.
    let status = sdm.run(&["status"]);
    assert_terminal_safe(&status);
    let row = status
        .ok()
        .lines()
        .find(|l| l.starts_with("kafka"))
        .unwrap_or_else(|| panic!("no kafka row: {status:#?}"));
    assert!(row.ends_with(KIND_SHOWN), "{row:?}");
    // JSON carries the same string, escaped the JSON way.
    let json = sdm.run(&["status", "--json"]);
    assert_terminal_safe(&json);
    assert_eq!(json.json()["resources"][0]["type"], KIND);
    assert_eq!(json.json()["resources"][0]["tags"]["team"], TAG);

    // The admin tables, in text and JSON.
    let admin = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    let list = sdm.run_env(&["admin", "resources", "list"], &admin);
    assert_terminal_safe(&list);
    let text = list.ok();
    assert!(text.contains(KIND_SHOWN), "{text}");
    assert!(text.contains(TAG_SHOWN), "{text}");
    let list = sdm.run_env(&["admin", "resources", "list", "--json"], &admin);
    assert_terminal_safe(&list);
    assert_eq!(list.json()["resources"][0]["kind"], KIND);
    assert_eq!(list.json()["resources"][0]["tags"]["team"], TAG);
    sdm.run(&["logout"]).ok();
}
