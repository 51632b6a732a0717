//! The web console's Resources and Settings pages, end to end over HTTPS against a server
//! started in-process: signed in with the admin token as a browser is (a form post, the session
//! cookie kept, the CSRF field scraped from each page), every change checked through the admin
//! API, and what the pages must never show (a stored password, unescaped markup) looked for in
//! every page.

mod common;

use common::TestServer;
use common::console::Browser;
use sdm_proto::api::{
    AdminResource, AdminResourceList, CreateAccount, CreateGrant, CreatedAccount, GrantList,
    ResourceGrantList, Settings, routes,
};
use serde_json::json;

async fn resource(t: &TestServer, name: &str) -> Option<AdminResource> {
    let reply = t
        .client
        .get(&format!("/v1/admin/resources/{name}"), Some(&t.admin()))
        .await;
    (reply.status == 200).then(|| reply.json())
}

async fn resources(t: &TestServer) -> Vec<AdminResource> {
    let list: AdminResourceList = t
        .client
        .get(routes::ADMIN_RESOURCES, Some(&t.admin()))
        .await
        .expect_ok();
    list.resources
}

async fn settings(t: &TestServer) -> Settings {
    t.client
        .get(routes::ADMIN_SETTINGS, Some(&t.admin()))
        .await
        .expect_ok()
}

/// An API resource of kind tcp.
async fn tcp_resource(t: &TestServer, name: &str) -> AdminResource {
    t.client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&t.admin()),
            &json!({"name": name, "kind": "tcp", "hostname": "10.0.0.9", "port": 7000}),
        )
        .await
        .expect_ok()
}

const PASSWORD: &str = "Pw-0f-a-kind-9zQ";

fn postgres_form<'a>(name: &'a str, port: &'a str, password: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("kind", "postgres"),
        ("name", name),
        ("hostname", "db.internal"),
        ("port", port),
        ("port_override", ""),
        ("tags", "env=prod, team=data"),
        ("username", "app"),
        ("database", "appdb"),
        ("password", password),
        ("tls_mode", "disable"),
        ("ca_pem", ""),
    ]
}

#[tokio::test]
async fn a_stored_password_is_never_shown_again() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    // A refused form does not show the password it was sent with.
    let refused = browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &postgres_form("pg", "five", PASSWORD),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(!refused.body.contains(PASSWORD));
    assert!(refused.control("password").contains("value=\"\""));
    // Its other fields are kept.
    assert!(
        refused
            .control("hostname")
            .contains("value=\"db.internal\"")
    );

    let created = browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &postgres_form("pg", "5433", PASSWORD),
        )
        .await;
    created.redirects_to("/console/resources/pg");
    let stored = resource(&t, "pg").await.unwrap();
    assert!(stored.has_credentials);
    assert_eq!(stored.username.as_deref(), Some("app"));
    assert_eq!(stored.database.as_deref(), Some("appdb"));
    assert_eq!(stored.port, 5433);

    // An edit refused with a new password shows neither password.
    let other = "An0ther-secret-7q";
    let mut edit = postgres_form("pg", "x", other);
    edit.retain(|(k, _)| !matches!(*k, "kind" | "name"));
    let refused_edit = browser
        .post_from("/console/resources/pg", "/console/resources/pg", &edit)
        .await;
    assert_eq!(refused_edit.status, 400);
    assert!(refused_edit.error_beside("port").contains("is not a port"));
    let list = browser.get("/console/resources").await;
    let page = browser.get("/console/resources/pg").await;
    let new = browser.get("/console/new/resource").await;
    for (what, body) in [
        ("the refused edit", &refused_edit.body),
        ("the resource list", &list.body),
        ("the resource page", &page.body),
        ("the add form", &new.body),
    ] {
        assert!(!body.contains(PASSWORD), "{what} shows the password");
        assert!(!body.contains(other), "{what} shows the new password");
    }
    assert!(page.control("password").contains("value=\"\""));
    // The list says credentials are stored, without showing them.
    assert!(list.body.contains("stored"), "{}", list.body);
    assert!(list.body.contains("db.internal:5433"), "{}", list.body);
    assert!(list.body.contains("<span class=\"chip\">env=prod</span>"));
    // Nothing changed.
    assert_eq!(resource(&t, "pg").await.unwrap(), stored);
}

#[tokio::test]
async fn a_bad_port_is_shown_beside_the_port_field_and_nothing_is_created() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let form = |port: &'static str| {
        vec![
            ("kind", "tcp"),
            ("name", "svc"),
            ("hostname", "10.0.0.5"),
            ("port", port),
            ("tags", ""),
            ("tls_mode", "disable"),
        ]
    };
    // Not a port at all (the console's reading), 0 (the API's refusal), none for a kind
    // without a usual port (the API's refusal).
    for port in ["70000", "0", ""] {
        let page = browser
            .post_from("/console/new/resource", "/console/resources", &form(port))
            .await;
        assert_eq!(page.status, 400, "port {port:?}: {}", page.body);
        let message = page.error_beside("port");
        assert!(
            message.contains("65535") || message.contains("port"),
            "{message}"
        );
        // No other field is blamed.
        assert!(!page.body.contains("id=\"hostname-error\""));
        assert!(page.control("name").contains("value=\"svc\""));
    }
    assert!(resources(&t).await.is_empty());

    // A name taken is shown beside the name (the API's 409).
    tcp_resource(&t, "svc").await;
    let taken = browser
        .post_from("/console/new/resource", "/console/resources", &form("7"))
        .await;
    assert_eq!(taken.status, 409);
    assert!(taken.error_beside("name").contains("already exists"));

    // A form without this session's CSRF token changes nothing.
    let forged = browser
        .send(
            "POST",
            "/console/resources",
            &[("csrf", "forged"), ("kind", "tcp"), ("name", "other")],
            &[],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(resources(&t).await.len(), 1);
}

#[tokio::test]
async fn a_resource_is_edited_and_deleted_from_its_page() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &postgres_form("pg", "", PASSWORD),
        )
        .await
        .redirects_to("/console/resources/pg");
    assert_eq!(resource(&t, "pg").await.unwrap().port, 5432);

    // The page shows the form filled in; an empty password keeps the stored one.
    let page = browser.get("/console/resources/pg").await;
    assert!(page.control("hostname").contains("value=\"db.internal\""));
    let edit = [
        ("hostname", "db2.internal"),
        ("port", "6543"),
        ("port_override", "15432"),
        ("tags", "env=staging"),
        ("username", "app"),
        ("database", "appdb"),
        ("password", ""),
        ("tls_mode", "require"),
        ("ca_pem", ""),
    ];
    browser
        .post_from("/console/resources/pg", "/console/resources/pg", &edit)
        .await
        .redirects_to("/console/resources/pg");
    let edited = resource(&t, "pg").await.unwrap();
    assert_eq!(edited.hostname, "db2.internal");
    assert_eq!(edited.port, 6543);
    assert_eq!(
        (edited.port_override, edited.port_assigned),
        (Some(15432), false)
    );
    assert_eq!(edited.tags.get("env").map(String::as_str), Some("staging"));
    assert!(edited.has_credentials);
    assert_eq!(edited.upstream_tls.as_str(), "require");

    // verify-full without a CA: the API's refusal, beside the CA field.
    let mut no_ca = edit.to_vec();
    no_ca.retain(|(k, _)| *k != "tls_mode");
    no_ca.push(("tls_mode", "verify-full"));
    let refused = browser
        .post_from("/console/resources/pg", "/console/resources/pg", &no_ca)
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.error_beside("ca_pem").contains("verify-full"));

    // Clearing the port override and the credentials.
    let mut clear = edit.to_vec();
    clear.push(("clear_port_override", "on"));
    clear.push(("clear_credentials", "on"));
    browser
        .post_from("/console/resources/pg", "/console/resources/pg", &clear)
        .await
        .redirects_to("/console/resources/pg");
    let cleared = resource(&t, "pg").await.unwrap();
    assert_eq!(cleared.port_override, None);
    assert!(!cleared.has_credentials);
    assert_eq!(cleared.username, None);

    // Delete asks first, then deletes.
    let confirm = browser.get("/console/resources/pg/delete").await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains(">Delete pg</button>"),
        "{}",
        confirm.body
    );
    assert!(resource(&t, "pg").await.is_some());
    browser
        .post_from(
            "/console/resources/pg/delete",
            "/console/resources/pg/delete",
            &[],
        )
        .await
        .redirects_to("/console/resources");
    assert!(resource(&t, "pg").await.is_none());
    let gone = browser.get("/console/resources/pg").await;
    assert_eq!(gone.status, 404);
}

async fn account_grants(t: &TestServer, account: &str) -> Vec<String> {
    let list: GrantList = t
        .client
        .get(
            &format!("/v1/admin/accounts/{account}/grants"),
            Some(&t.admin()),
        )
        .await
        .expect_ok();
    list.grants.into_iter().map(|g| g.resource_name).collect()
}

#[tokio::test]
async fn grants_are_given_and_taken_back_from_the_resource_page() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let svc = tcp_resource(&t, "svc").await;
    let mut tokens = Vec::new();
    for name in ["etl", "reports"] {
        let created: CreatedAccount = t
            .client
            .post(
                routes::ADMIN_ACCOUNTS,
                Some(&t.admin()),
                &CreateAccount {
                    name: name.into(),
                    kind: sdm_proto::api::AccountKind::Service,
                },
            )
            .await
            .expect_ok();
        tokens.push(created.token);
    }
    let etl_token = tokens.swap_remove(0);
    t.client
        .post(
            "/v1/admin/accounts/reports/grants",
            Some(&t.admin()),
            &CreateGrant {
                resource: "svc".into(),
            },
        )
        .await
        .expect_ok::<serde_json::Value>();

    let page = browser.get("/console/resources/svc").await;
    // reports holds it; etl may be granted it (suggested in the grant form's list).
    assert!(page.body.contains("Revoke reports"), "{}", page.body);
    let suggested = &page.body[page
        .body
        .find("<datalist id=\"grant-accounts\">")
        .expect("the grant form suggests accounts")..];
    let suggested = &suggested[..suggested.find("</datalist>").unwrap()];
    assert!(
        suggested.contains("<option value=\"etl\"></option>"),
        "{suggested}"
    );
    assert!(!page.body.contains("<option value=\"reports\">"));

    browser
        .post_from(
            "/console/resources/svc",
            "/console/resources/svc/grants",
            &[("account", "etl")],
        )
        .await
        .redirects_to("/console/resources/svc");
    assert_eq!(account_grants(&t, "etl").await, ["svc"]);
    // The API lists both, by account name.
    let holders: ResourceGrantList = t
        .client
        .get("/v1/admin/resources/svc/grants", Some(&t.admin()))
        .await
        .expect_ok();
    let names: Vec<_> = holders
        .grants
        .iter()
        .map(|g| g.account.name.as_str())
        .collect();
    assert_eq!(names, ["etl", "reports"]);
    assert!(holders.grants.iter().all(|g| g.resource_id == svc.id));
    let unknown = t
        .client
        .get("/v1/admin/resources/nope/grants", Some(&t.admin()))
        .await
        .expect_error(404, "resource_not_found");
    assert!(unknown.contains("nope"), "{unknown}");
    // Only an admin may ask.
    t.client
        .get("/v1/admin/resources/svc/grants", Some(&etl_token))
        .await
        .expect_error(403, "forbidden");

    // An account that does not exist: the API's message beside the form.
    let refused = browser
        .post_from(
            "/console/resources/svc",
            "/console/resources/svc/grants",
            &[("account", "nobody")],
        )
        .await;
    assert_eq!(refused.status, 404);
    assert!(
        refused.body.contains("id=\"grant-error\""),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("nobody"));

    browser
        .post_from(
            "/console/resources/svc",
            "/console/resources/svc/grants/reports/revoke",
            &[],
        )
        .await
        .redirects_to("/console/resources/svc");
    assert!(account_grants(&t, "reports").await.is_empty());
    assert_eq!(account_grants(&t, "etl").await, ["svc"]);
    let page = browser.get("/console/resources/svc").await;
    assert!(!page.body.contains("Revoke reports"));
    assert!(page.body.contains("Revoke etl"));
}

#[tokio::test]
async fn settings_are_saved_ports_regenerated_and_a_too_small_range_refused() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let page = browser.get("/console/settings").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("Connect to every granted resource on login")
    );
    assert!(page.control("first_port").contains("value=\"20000\""));

    // Regenerating while ports are not assigned is refused beside the button.
    let refused = browser
        .post_from(
            "/console/settings",
            "/console/settings/regenerate-ports",
            &[],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("id=\"regenerate-error\""));

    tcp_resource(&t, "zeta").await;
    tcp_resource(&t, "alpha").await;
    let save = |first: &'static str, last: &'static str| {
        vec![
            ("auto_connect", "on"),
            ("assign_ports", "on"),
            ("first_port", first),
            ("last_port", last),
        ]
    };
    browser
        .post_from(
            "/console/settings",
            "/console/settings",
            &save("30000", "30009"),
        )
        .await
        .redirects_to("/console/settings");
    let saved = settings(&t).await;
    assert!(saved.auto_connect && saved.assign_ports);
    assert_eq!(saved.port_range.to_string(), "30000-30009");
    let port = |name: &'static str| {
        let t = &t;
        async move { resource(t, name).await.unwrap().port_override }
    };
    // Switching on assigns in name order; one created later takes the lowest free port.
    assert_eq!(port("alpha").await, Some(30000));
    assert_eq!(port("zeta").await, Some(30001));
    tcp_resource(&t, "beta").await;
    assert_eq!(port("beta").await, Some(30002));
    let page = browser.get("/console/settings").await;
    assert!(page.body.contains("<td>30002</td>"), "{}", page.body);
    assert!(page.body.contains(" checked"));

    // Regenerating assigns them all again in name order.
    browser
        .post_from(
            "/console/settings",
            "/console/settings/regenerate-ports",
            &[],
        )
        .await
        .redirects_to("/console/settings");
    assert_eq!(port("alpha").await, Some(30000));
    assert_eq!(port("beta").await, Some(30001));
    assert_eq!(port("zeta").await, Some(30002));

    // One port for three resources: refused beside the range, nothing changed.
    let small = browser
        .post_from(
            "/console/settings",
            "/console/settings",
            &save("31000", "31000"),
        )
        .await;
    assert_eq!(small.status, 409, "{}", small.body);
    let message = small.error_of(&["first_port", "last_port"], "range-error");
    assert!(message.contains("31000-31000"), "{message}");
    assert!(message.contains("widen the range"), "{message}");
    // The page shows what was posted, to correct it.
    assert!(small.control("first_port").contains("value=\"31000\""));
    assert_eq!(settings(&t).await, saved);
    // A range that starts after it ends, and text that is no port.
    for (first, last) in [("31000", "30000"), ("3l000", "31000")] {
        let bad = browser
            .post_from("/console/settings", "/console/settings", &save(first, last))
            .await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        bad.error_of(&["first_port", "last_port"], "range-error");
        assert_eq!(settings(&t).await, saved);
    }

    // Switching both off.
    browser
        .post_from(
            "/console/settings",
            "/console/settings",
            &[("first_port", "30000"), ("last_port", "30009")],
        )
        .await
        .redirects_to("/console/settings");
    let off = settings(&t).await;
    assert!(!off.auto_connect && !off.assign_ports);
    assert_eq!(port("alpha").await, None);
}

#[tokio::test]
async fn markup_in_a_tag_is_shown_as_text() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let form = [
        ("kind", "tcp"),
        ("name", "svc"),
        ("hostname", "10.0.0.5"),
        ("port", "7000"),
        ("tags", "note=<script>alert(1)</script>"),
        // No PostgreSQL fields: the script disables them for other kinds.
    ];
    browser
        .post_from("/console/new/resource", "/console/resources", &form)
        .await
        .redirects_to("/console/resources/svc");
    assert_eq!(
        resource(&t, "svc")
            .await
            .unwrap()
            .tags
            .get("note")
            .map(String::as_str),
        Some("<script>alert(1)</script>")
    );
    for path in ["/console/resources", "/console/resources/svc"] {
        let page = browser.get(path).await;
        assert!(!page.body.contains("<script>alert"), "{path}");
        // Escaped as named or as numeric character references (the templates write `&#60;`).
        let escaped = page.body.replace("&#60;", "&lt;").replace("&#62;", "&gt;");
        assert!(
            escaped.contains("note=&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {}",
            page.body
        );
    }
}

#[tokio::test]
async fn a_gateway_pin_with_commas_survives_the_edit_form() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    t.client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&t.admin()),
            &json!({"name": "svc", "kind": "tcp", "hostname": "10.0.0.9", "port": 7000,
                    "tags": {"env": "prod", "sdm.gateway": "region=eu,region=us"}}),
        )
        .await
        .expect_ok::<AdminResource>();
    let page = browser.get("/console/resources/svc").await;
    assert!(
        page.control("tags").contains("value=\"env=prod\""),
        "{}",
        page.control("tags")
    );
    assert!(
        page.control("pin")
            .contains("value=\"region=eu,region=us\"")
    );
    // Sent back as shown, with another port.
    let edit = [
        ("hostname", "10.0.0.9"),
        ("port", "7001"),
        ("port_override", ""),
        ("tags", "env=prod"),
        ("pin", "region=eu,region=us"),
    ];
    browser
        .post_from("/console/resources/svc", "/console/resources/svc", &edit)
        .await
        .redirects_to("/console/resources/svc");
    let edited = resource(&t, "svc").await.unwrap();
    assert_eq!(edited.port, 7001);
    assert_eq!(edited.tags["sdm.gateway"], "region=eu,region=us");
    assert_eq!(edited.tags["env"], "prod");
    // A pin that names no gateway tag: the API's refusal, beside the pin.
    let mut empty_pin = edit.to_vec();
    empty_pin.retain(|(k, _)| *k != "pin");
    empty_pin.push(("pin", ","));
    let refused = browser
        .post_from(
            "/console/resources/svc",
            "/console/resources/svc",
            &empty_pin,
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.error_beside("pin").contains("sdm.gateway"));
    assert_eq!(resource(&t, "svc").await.unwrap(), edited);
}
