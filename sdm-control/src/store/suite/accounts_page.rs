//! The store suite's check of the account pages the admin list reads: search, offset and limit
//! in name order, the count matching, and each account's newest login.

use sdm_proto::api::AccountKind;

use super::{Fixture, session, with_account};
use crate::store::{AccountQuery, SessionRecord};

pub(crate) async fn account_pages_search_count_and_show_the_last_login(f: &Fixture) {
    let store = f.a.as_ref();
    let mut names: Vec<String> = (0..25).map(|i| format!("etl-{i:02}")).collect();
    names.extend([
        "Reports-A".to_owned(),
        "reports_b".to_owned(),
        "admin".to_owned(),
    ]);
    for name in &names {
        let kind = if name == "admin" {
            AccountKind::Admin
        } else {
            AccountKind::Service
        };
        with_account(store, name, kind).await;
    }
    names.sort_unstable();

    // Without a search: every account, a page at a time, in name order, from either handle.
    let page = |name_contains: Option<&str>, offset: u64, limit: u32| AccountQuery {
        name_contains: name_contains.map(str::to_owned),
        offset,
        limit,
    };
    let first = store.page_accounts(page(None, 0, 10)).await.unwrap();
    assert_eq!(first.total, 28);
    let listed: Vec<&str> = first
        .accounts
        .iter()
        .map(|a| a.account.name.as_str())
        .collect();
    assert_eq!(listed, names[..10]);
    let last = f.b.page_accounts(page(None, 20, 10)).await.unwrap();
    assert_eq!(last.total, 28);
    let listed: Vec<&str> = last
        .accounts
        .iter()
        .map(|a| a.account.name.as_str())
        .collect();
    assert_eq!(listed, names[20..]);
    assert!(
        store
            .page_accounts(page(None, 28, 10))
            .await
            .unwrap()
            .accounts
            .is_empty()
    );
    // An empty search is no search.
    assert_eq!(
        store
            .page_accounts(page(Some(""), 0, 1))
            .await
            .unwrap()
            .total,
        28
    );

    // A search ignores ASCII case and treats `_` and `%` as themselves.
    let reports = store
        .page_accounts(page(Some("REPORTS"), 0, 10))
        .await
        .unwrap();
    assert_eq!(reports.total, 2);
    let listed: Vec<&str> = reports
        .accounts
        .iter()
        .map(|a| a.account.name.as_str())
        .collect();
    assert_eq!(listed, ["Reports-A", "reports_b"]);
    let underscore = store.page_accounts(page(Some("_"), 0, 10)).await.unwrap();
    assert_eq!(underscore.total, 1);
    assert_eq!(underscore.accounts[0].account.name, "reports_b");
    assert_eq!(
        store
            .page_accounts(page(Some("%"), 0, 10))
            .await
            .unwrap()
            .total,
        0
    );
    let etl1 = store
        .page_accounts(page(Some("etl-1"), 5, 3))
        .await
        .unwrap();
    assert_eq!(etl1.total, 10);
    let listed: Vec<&str> = etl1
        .accounts
        .iter()
        .map(|a| a.account.name.as_str())
        .collect();
    assert_eq!(listed, ["etl-15", "etl-16", "etl-17"]);

    // The last login is the newest session's creation, open or ended; none: never.
    let etl = store.find_account_by_name("etl-00").await.unwrap().unwrap();
    let at = |created_at: i64, ended_at: Option<i64>| SessionRecord {
        created_at,
        ended_at,
        ..session(etl.id)
    };
    store.create_session(at(500, None)).await.unwrap();
    store.create_session(at(900, Some(950))).await.unwrap();
    store.create_session(at(700, None)).await.unwrap();
    let other = store.find_account_by_name("etl-01").await.unwrap().unwrap();
    store
        .create_session(SessionRecord {
            created_at: 2000,
            ..session(other.id)
        })
        .await
        .unwrap();
    let logins = f.b.page_accounts(page(Some("etl-0"), 0, 3)).await.unwrap();
    let logins: Vec<(&str, Option<i64>)> = logins
        .accounts
        .iter()
        .map(|a| (a.account.name.as_str(), a.last_login))
        .collect();
    assert_eq!(
        logins,
        [
            ("etl-00", Some(900)),
            ("etl-01", Some(2000)),
            ("etl-02", None)
        ]
    );
}
