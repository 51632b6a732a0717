//! The web console's Audit, Gateways and Users pages, as an admin's browser sees them: signed in
//! with the admin token (`POST /console/sign-in`, the session cookie kept), a real connection
//! through a real PostgreSQL listed with its queries, the filters and the cursor paging, the
//! built-in gateway live, and the Users page's search, paging and last login read a page at a
//! time from the API.
//!
//! Real parts: the server in-process on 127.0.0.1:0, TLS trusting only its CA, a real
//! PostgreSQL, the real client library.

mod common;
mod support;

use std::time::Duration;

use common::console::{Browser, Page};
use sdm_core::Session;
use sdm_core::admin::AuditFilter;
use sdm_proto::api::{AccountList, AuditRecord};
use sdm_testkit::{HbaAuth, PgConfig};
use support::{Installation, app_cluster, app_db_resource, eventually, pg_connect};

const PASSWORD: &str = "console-audit-secret";
/// Bound on anything expected to happen "soon" (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(60);

/// Every audit record, newest first, once `check` holds for them.
async fn records_until(
    inst: &Installation,
    check: impl Fn(&[AuditRecord]) -> bool,
) -> Vec<AuditRecord> {
    let mut seen = Vec::new();
    let arrived = eventually(WAIT, async || {
        seen = inst
            .admin
            .audit(&AuditFilter::default().limit(100))
            .await
            .unwrap()
            .records;
        check(&seen)
    })
    .await;
    assert!(arrived, "the audit records never got there: {seen:#?}");
    seen
}

/// Opens a connection through `session`'s tunnel to `resource`, runs `statements`, and closes it.
async fn connection(session: &Session, resource: &str, statements: &[&str]) {
    let tunnel = session.connect(resource).await.unwrap();
    let (client, driver) = pg_connect(&tunnel).await.unwrap();
    for statement in statements {
        client.simple_query(statement).await.unwrap();
    }
    drop(client);
    tokio::time::timeout(WAIT, driver)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_lists_real_connections_filtered_and_paged_with_their_queries() {
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let inst = Installation::start().await;
    inst.resource(app_db_resource("app-db", &pg, PASSWORD, None))
        .await;
    let etl = inst.session("etl", &["app-db"]).await;
    let reports = inst.session("reports", &["app-db"]).await;
    connection(
        &etl,
        "app-db",
        &[
            "SELECT 42 AS console_audit_marker",
            "SELECT 2 AS second_statement",
            "SELECT 3 AS third_statement",
        ],
    )
    .await;
    for i in 0..3 {
        connection(&reports, "app-db", &[&format!("SELECT {i} AS report_{i}")]).await;
    }
    let records = records_until(&inst, |r| {
        r.len() == 4 && r.iter().all(|r| r.ended_at.is_some() && r.query_count >= 1)
    })
    .await;
    let etl_record = records.iter().find(|r| r.account_name == "etl").unwrap();

    let mut browser = Browser::signed_in_at(
        &inst.data_dir(),
        inst.server.api_addr(),
        inst.server.admin_token().unwrap(),
    )
    .await;

    // Every connection, newest first, each linking to its page.
    let all = browser.get("/console/audit").await.ok();
    assert_eq!(all.count("href=\"/console/audit/"), 4, "{}", all.body);
    assert!(all.body.contains("aria-current=\"page\">Audit</a>"));
    let newest_first: Vec<usize> = records
        .iter()
        .map(|r| all.body.find(&format!("/console/audit/{}", r.id)).unwrap())
        .collect();
    assert!(newest_first.is_sorted(), "{newest_first:?}");
    // Every filter field is labelled.
    for field in ["account", "resource", "from", "until"] {
        assert!(
            all.body.contains(&format!("<label for=\"{field}\">")),
            "{field}"
        );
    }

    // The connection's page: its details and the text of its queries, in order.
    let detail = browser
        .get(&format!("/console/audit/{}", etl_record.id))
        .await
        .ok();
    assert!(detail.body.contains("etl → app-db"), "{}", detail.body);
    let marker = detail
        .body
        .find("SELECT 42 AS console_audit_marker")
        .unwrap();
    let third = detail.body.find("SELECT 3 AS third_statement").unwrap();
    assert!(marker < third);
    assert!(detail.body.contains(&etl_record.session_id.to_string()));
    // Its queries, a page at a time.
    let first = browser
        .get(&format!("/console/audit/{}?limit=2", etl_record.id))
        .await
        .ok();
    assert!(first.body.contains("console_audit_marker"));
    assert!(!first.body.contains("third_statement"));
    let next = first
        .link("Next queries")
        .expect("a link to the next queries");
    let rest = browser.get(&next).await.ok();
    assert!(rest.body.contains("third_statement"), "{}", rest.body);
    assert!(!rest.body.contains("console_audit_marker"));
    assert!(rest.link("First queries").is_some());
    // An edited address is a page that says so.
    for query in ["after=abc", "limit=0", "limit=many"] {
        let bad = browser
            .get(&format!("/console/audit/{}?{query}", etl_record.id))
            .await;
        assert_eq!(bad.status, 400, "{query}: {}", bad.body);
        assert!(bad.body.contains("Not a page of queries"), "{query}");
    }
    // A record that does not exist is a 404 page, not an empty one.
    let missing = browser
        .get("/console/audit/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);

    // Filters narrow the list.
    let by_account = browser.get("/console/audit?account=etl").await.ok();
    assert_eq!(by_account.count("href=\"/console/audit/"), 1);
    assert!(
        by_account
            .body
            .contains(&format!("/console/audit/{}", etl_record.id))
    );
    let by_resource = browser.get("/console/audit?resource=app-db").await.ok();
    assert_eq!(by_resource.count("href=\"/console/audit/"), 4);
    let started = records.iter().map(|r| r.started_at).min().unwrap();
    let after_all = sdm_proto::utc(records.iter().map(|r| r.started_at).max().unwrap() + 60);
    let future = browser
        .get(&format!(
            "/console/audit?from={}",
            after_all[..16].replace(' ', "+")
        ))
        .await
        .ok();
    assert_eq!(future.count("href=\"/console/audit/"), 0);
    assert!(future.body.contains("No connection matches."));
    // A date-time input's form, `T` between date and time, reads the same.
    let before_all = sdm_proto::utc(started - 120);
    let window = browser
        .get(&format!(
            "/console/audit?account=reports&from={}&until={}",
            before_all[..16].replace(' ', "T"),
            after_all[..16].replace(' ', "T")
        ))
        .await
        .ok();
    assert_eq!(window.count("href=\"/console/audit/"), 3);

    // Bad filter values are named beside their fields, and nothing is listed.
    let bad = browser
        .get(
            "/console/audit?account=nobody&resource=app-db&from=yesterday&until=2026-02-30+10%3A00",
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("id=\"account-error\""), "{}", bad.body);
    assert!(bad.body.contains("No account is named “nobody”."));
    assert!(!bad.body.contains("id=\"resource-error\""));
    assert!(bad.body.contains("id=\"from-error\""));
    assert!(bad.body.contains("“yesterday” is not a time"));
    assert!(bad.body.contains("id=\"until-error\""));
    assert!(
        bad.body
            .contains("aria-invalid=\"true\" aria-describedby=\"account-error\"")
    );
    assert_eq!(bad.count("href=\"/console/audit/"), 0);
    // The values typed are kept in the form.
    assert!(bad.body.contains("value=\"nobody\""));

    // Paging with the API's cursor: two, then the last one, then back to the newest.
    let first = browser
        .get("/console/audit?account=reports&limit=2")
        .await
        .ok();
    assert_eq!(first.count("href=\"/console/audit/"), 2);
    let older = first.link("Older").expect("a link to older connections");
    assert!(older.contains("account=reports"), "{older}");
    let second = browser.get(&older).await.ok();
    assert_eq!(second.count("href=\"/console/audit/"), 1, "{}", second.body);
    assert!(second.link("Older").is_none());
    let newest = second.link("Newest").expect("a link back to the newest");
    assert_eq!(
        browser
            .get(&newest)
            .await
            .ok()
            .count("href=\"/console/audit/"),
        2
    );
    let mut paged: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|p| {
            records
                .iter()
                .filter(|r| r.account_name == "reports")
                .filter(|r| p.body.contains(&format!("/console/audit/{}", r.id)))
                .map(|r| r.id.to_string())
        })
        .collect();
    paged.dedup();
    assert_eq!(paged.len(), 3, "every record on exactly one page");

    // Signed out, the page is not shown.
    let anonymous = Browser::at(&inst.data_dir(), inst.server.api_addr())
        .get("/console/audit")
        .await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.location(), Some("/console/sign-in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_page_lists_the_built_in_gateway_as_live() {
    let inst = Installation::start().await;
    let mut browser = Browser::signed_in_at(
        &inst.data_dir(),
        inst.server.api_addr(),
        inst.server.admin_token().unwrap(),
    )
    .await;
    let mut page = None;
    let live = eventually(WAIT, async || {
        let seen = browser.get("/console/gateways").await.ok();
        let live = seen.body.contains("<span class=\"live\">live</span>");
        page = Some(seen);
        live
    })
    .await;
    let page = page.unwrap();
    assert!(live, "{}", page.body);
    assert!(page.body.contains("aria-current=\"page\">Gateways</a>"));
    assert!(
        page.body
            .contains("embedded <span class=\"badge\">built in</span>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(&inst.server.gateway_addr().to_string()),
        "{}",
        page.body
    );
    // The API's default list is unchanged: standalone gateways only.
    assert!(inst.admin.list_gateways().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_page_searches_and_pages_in_the_store_and_shows_the_last_login() {
    let inst = Installation::start().await;
    let mut tokens = Vec::new();
    for i in 0..120 {
        let created = inst
            .admin
            .create_service_account(&format!("svc-{i:03}"))
            .await
            .unwrap();
        tokens.push(created.token);
    }
    // svc-007 logs in (POST /v1/login); svc-008 never does.
    let _session = Session::login(&tokens[7]).await.unwrap();

    let mut browser = Browser::signed_in_at(
        &inst.data_dir(),
        inst.server.api_addr(),
        inst.server.admin_token().unwrap(),
    )
    .await;
    let rows = |p: &Page| p.count("<tr>\n      <td><a href=\"/console/users/");

    // 120 service accounts and the admin: 50 a page.
    let first = browser.get("/console/users").await.ok();
    assert!(first.body.contains("121 accounts"), "{}", first.body);
    assert!(first.body.contains("Page 1 of 3"));
    assert_eq!(rows(&first), 50);
    assert!(first.body.contains("<th scope=\"col\">Last login</th>"));

    // A search, paged: 120 match "svc-", the second page holds svc-050 … svc-099.
    let search = browser.get("/console/users?q=svc-").await.ok();
    assert!(
        search.body.contains("120 accounts matching “svc-”"),
        "{}",
        search.body
    );
    let next = search.link("Next").expect("a Next link");
    assert_eq!(next, "/console/users?q=svc-&page=2");
    let second = browser.get(&next).await.ok();
    assert!(second.body.contains("Page 2 of 3"));
    assert_eq!(rows(&second), 50);
    assert!(second.body.contains(">svc-050</a>"));
    assert!(second.body.contains(">svc-099</a>"));
    assert!(!second.body.contains(">svc-049</a>"));
    assert!(!second.body.contains(">svc-100</a>"));
    assert_eq!(
        second.link("Previous").as_deref(),
        Some("/console/users?q=svc-&page=1")
    );
    let last = browser.get("/console/users?q=SVC-&page=3").await.ok();
    assert_eq!(rows(&last), 20);
    assert!(last.link("Next").is_none());
    // A page past the end shows the last one.
    let past = browser.get("/console/users?q=svc-&page=9").await.ok();
    assert!(past.body.contains("Page 3 of 3"));
    let narrow = browser.get("/console/users?q=svc-1").await.ok();
    assert!(narrow.body.contains("20 accounts matching “svc-1”"));
    assert!(!narrow.body.contains("Page 1"), "one page needs no pager");

    // The last login: a time for svc-007, "never" for svc-008.
    let logged_in = browser.get("/console/users?q=svc-007").await.ok();
    assert_eq!(rows(&logged_in), 1);
    let login_row = &logged_in.body[logged_in.body.find(">svc-007</a>").unwrap()..];
    let login_row = &login_row[..login_row.find("</tr>").unwrap()];
    assert!(login_row.contains(" UTC</td>\n      <td>20"), "{login_row}");
    assert!(!login_row.contains("never"), "{login_row}");
    let never = browser.get("/console/users?q=svc-008").await.ok();
    let never_row = &never.body[never.body.find(">svc-008</a>").unwrap()..];
    let never_row = &never_row[..never_row.find("</tr>").unwrap()];
    assert!(never_row.contains("<td>never</td>"), "{never_row}");

    // The API behind it: a page with the total and last logins; without parameters, every
    // account and no new fields.
    let client = common::Client::new(&inst.data_dir(), inst.server.api_addr());
    let admin = inst.server.admin_token().unwrap();
    let page: AccountList = client
        .get(
            "/v1/admin/accounts?name_contains=SVC-00&offset=5&limit=3",
            Some(admin),
        )
        .await
        .expect_ok();
    assert_eq!(page.total, Some(10));
    let names: Vec<&str> = page.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["svc-005", "svc-006", "svc-007"]);
    assert_eq!(page.accounts[0].last_login, None);
    assert!(page.accounts[2].last_login.is_some());
    let everything = client.get("/v1/admin/accounts", Some(admin)).await;
    let text = everything.text();
    let all: AccountList = everything.expect_ok();
    assert_eq!(all.accounts.len(), 121);
    assert!(
        !text.contains("\"total\"") && !text.contains("last_login"),
        "{text}"
    );
    for bad in [
        "limit=0",
        "limit=501",
        "offset=-1",
        "nme_contains=svc",
        "limit=1&limit=2",
    ] {
        client
            .get(&format!("/v1/admin/accounts?{bad}"), Some(admin))
            .await
            .expect_error(400, "invalid_argument");
    }
}
