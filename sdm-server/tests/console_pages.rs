//! The web console's Resources and Settings pages, end to end over HTTPS against a server
//! started in-process: signed in with the admin token as a browser is (a form post, the session
//! cookie kept, the CSRF field scraped from each page), every change checked through the admin
//! API, and what the pages must never show (a stored password, unescaped markup) looked for in
//! every page.

mod common;

use std::net::SocketAddr;

use common::{Client, TestServer};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sdm_proto::api::{
    AdminResource, AdminResourceList, CreateAccount, CreateGrant, CreatedAccount, GrantList,
    ResourceGrantList, Settings, routes,
};
use serde_json::json;

const COOKIE: &str = "__Host-sdm-console";

/// A page as the browser got it.
struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Page {
    /// The `csrf` hidden field of the page's forms.
    #[track_caller]
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let at = self.body.find(marker).expect("the page has a csrf field") + marker.len();
        let end = self.body[at..].find('"').unwrap();
        self.body[at..at + end].to_owned()
    }

    #[track_caller]
    fn redirects_to(&self, to: &str) {
        assert_eq!(self.status, 303, "{}", self.body);
        assert_eq!(self.location.as_deref(), Some(to));
    }

    /// The message beside `field` (`<p id="{field}-error" role="alert">`), asserting that the
    /// field is marked invalid and points at it.
    #[track_caller]
    fn error_beside(&self, field: &str) -> String {
        self.error_of(&[field], &format!("{field}-error"))
    }

    /// The alert `id`, asserting that each of `controls` is marked invalid and points at it.
    #[track_caller]
    fn error_of(&self, controls: &[&str], id: &str) -> String {
        let open = format!("<p id=\"{id}\" class=\"error\" role=\"alert\">");
        let at = self
            .body
            .find(&open)
            .unwrap_or_else(|| panic!("no alert {id}: {}", self.body))
            + open.len();
        let end = self.body[at..].find("</p>").unwrap();
        for control in controls {
            let tag = self.control(control);
            assert!(tag.contains("aria-invalid=\"true\""), "{tag}");
            assert!(
                tag.contains("aria-describedby=\"") && tag.contains(id),
                "{tag}"
            );
        }
        self.body[at..at + end].to_owned()
    }

    /// The opening tag of the control with id `id`.
    #[track_caller]
    fn control(&self, id: &str) -> &str {
        let at = self
            .body
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no control {id}"));
        let start = self.body[..at].rfind('<').unwrap();
        let end = at + self.body[at..].find('>').unwrap();
        &self.body[start..=end]
    }
}

/// `fields` as `application/x-www-form-urlencoded`, every byte but the unreserved ones
/// percent-encoded.
fn form_body(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A browser signed in to the console.
struct Browser {
    client: Client,
    addr: SocketAddr,
    cookie: String,
}

impl Browser {
    async fn sign_in(t: &TestServer) -> Browser {
        let mut browser = Browser {
            client: t.client.clone(),
            addr: t.server.api_addr(),
            cookie: String::new(),
        };
        let (page, cookie) = browser
            .send("POST", "/console/sign-in", Some(&[("token", &t.admin())]))
            .await;
        page.redirects_to("/console/users");
        browser.cookie = cookie.expect("sign-in sets the session cookie");
        browser
    }

    /// One request as a browser sends it from the console's own pages; the page and the new
    /// session cookie, if one was set.
    async fn send(
        &self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> (Page, Option<String>) {
        let tls = self.client.connect_raw().await;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::ORIGIN, format!("https://{}", self.addr))
            .header("sec-fetch-site", "same-origin");
        if !self.cookie.is_empty() {
            request = request.header(hyper::header::COOKIE, format!("{COOKIE}={}", self.cookie));
        }
        let body = match form {
            Some(fields) => {
                request = request.header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                );
                form_body(fields)
            }
            None => String::new(),
        };
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sender.send_request(request),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
        .unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(hyper::header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let cookie = response
            .headers()
            .get_all(hyper::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.strip_prefix(&format!("{COOKIE}=")))
            .map(str::to_owned)
            .find(|v| !v.is_empty());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let page = Page {
            status,
            location,
            body: String::from_utf8(body.to_vec()).unwrap(),
        };
        (page, cookie)
    }

    async fn get(&self, path: &str) -> Page {
        self.send("GET", path, None).await.0
    }

    /// Posts `fields` with the CSRF token of the page at `from`.
    async fn post(&self, from: &str, to: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.send("POST", to, Some(&all)).await.0
    }
}

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
    let browser = Browser::sign_in(&t).await;
    // A refused form does not show the password it was sent with.
    let refused = browser
        .post(
            "/console/resources/new",
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
        .post(
            "/console/resources/new",
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
        .post("/console/resources/pg", "/console/resources/pg", &edit)
        .await;
    assert_eq!(refused_edit.status, 400);
    assert!(refused_edit.error_beside("port").contains("is not a port"));
    let list = browser.get("/console/resources").await;
    let page = browser.get("/console/resources/pg").await;
    let new = browser.get("/console/resources/new").await;
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
    let browser = Browser::sign_in(&t).await;
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
            .post("/console/resources/new", "/console/resources", &form(port))
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
        .post("/console/resources/new", "/console/resources", &form("7"))
        .await;
    assert_eq!(taken.status, 409);
    assert!(taken.error_beside("name").contains("already exists"));

    // A form without this session's CSRF token changes nothing.
    let (forged, _) = browser
        .send(
            "POST",
            "/console/resources",
            Some(&[("csrf", "forged"), ("kind", "tcp"), ("name", "other")]),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(resources(&t).await.len(), 1);
}

#[tokio::test]
async fn a_resource_is_edited_and_deleted_from_its_page() {
    let t = TestServer::start().await;
    let browser = Browser::sign_in(&t).await;
    browser
        .post(
            "/console/resources/new",
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
        .post("/console/resources/pg", "/console/resources/pg", &edit)
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
        .post("/console/resources/pg", "/console/resources/pg", &no_ca)
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.error_beside("ca_pem").contains("verify-full"));

    // Clearing the port override and the credentials.
    let mut clear = edit.to_vec();
    clear.push(("clear_port_override", "on"));
    clear.push(("clear_credentials", "on"));
    browser
        .post("/console/resources/pg", "/console/resources/pg", &clear)
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
        .post(
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
    let browser = Browser::sign_in(&t).await;
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
    // reports holds it; etl may be granted it.
    assert!(page.body.contains("Revoke reports"), "{}", page.body);
    assert!(page.body.contains("<option value=\"etl\">etl</option>"));
    assert!(!page.body.contains("<option value=\"reports\">"));

    browser
        .post(
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
        .post(
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
        .post(
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
    let browser = Browser::sign_in(&t).await;
    let page = browser.get("/console/settings").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("Connect to every granted resource on login")
    );
    assert!(page.control("first_port").contains("value=\"20000\""));

    // Regenerating while ports are not assigned is refused beside the button.
    let refused = browser
        .post(
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
        .post(
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
        .post(
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
        .post(
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
            .post("/console/settings", "/console/settings", &save(first, last))
            .await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        bad.error_of(&["first_port", "last_port"], "range-error");
        assert_eq!(settings(&t).await, saved);
    }

    // Switching both off.
    browser
        .post(
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
    let browser = Browser::sign_in(&t).await;
    let form = [
        ("kind", "tcp"),
        ("name", "svc"),
        ("hostname", "10.0.0.5"),
        ("port", "7000"),
        ("tags", "note=<script>alert(1)</script>"),
        // No PostgreSQL fields: the script disables them for other kinds.
    ];
    browser
        .post("/console/resources/new", "/console/resources", &form)
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
    let browser = Browser::sign_in(&t).await;
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
        .post("/console/resources/svc", "/console/resources/svc", &edit)
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
        .post(
            "/console/resources/svc",
            "/console/resources/svc",
            &empty_pin,
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.error_beside("pin").contains("sdm.gateway"));
    assert_eq!(resource(&t, "svc").await.unwrap(), edited);
}
