//! The web console's sign-in, sessions and defences, over HTTPS against a server started
//! in-process, as a browser would send its requests (and as an attacker would not be stopped
//! by a browser). The same flows in a real Chromium: tests/console/.

mod common;

use std::time::Duration;

use common::console::{Browser, Page};
use common::{Client, TestServer};
use sdm_proto::api::*;
use sdm_server::Server;
use sdm_server::control::SessionPolicy;

async fn create_account(t: &TestServer, name: &str, kind: AccountKind) -> CreatedAccount {
    t.client
        .post(
            routes::ADMIN_ACCOUNTS,
            Some(&t.admin()),
            &CreateAccount {
                name: name.into(),
                kind,
            },
        )
        .await
        .expect_ok()
}

async fn account_names(t: &TestServer) -> Vec<String> {
    let list: AccountList = t
        .client
        .get(routes::ADMIN_ACCOUNTS, Some(&t.admin()))
        .await
        .expect_ok();
    list.accounts.into_iter().map(|a| a.name).collect()
}

#[track_caller]
fn assert_sent_to_sign_in(page: &Page, why: &str) {
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        page.location(),
        Some(format!("/console/sign-in{why}").as_str())
    );
}

#[tokio::test]
async fn signing_in_gives_a_strict_cookie_and_signing_out_ends_the_session_on_the_server() {
    let t = TestServer::start().await;
    let mut anonymous = Browser::new(&t.client);
    for root in ["/", "/console", "/console/"] {
        assert_eq!(anonymous.get(root).await.location(), Some("/console/users"));
    }
    assert_sent_to_sign_in(&anonymous.get("/console/users").await, "");
    let form = anonymous.get("/console/sign-in").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("Admin token"), "{}", form.body);

    let mut browser = Browser::new(&t.client);
    let answer = browser.sign_in(&t.admin()).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let cookie = answer.set_cookies()[0].to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(cookie.starts_with("__Host-sdm-console="), "{cookie}");
    assert!(!cookie.contains(&t.admin()), "the cookie holds the token");
    let users = browser.get("/console/users").await;
    assert_eq!(users.status, 200);
    assert!(users.body.contains("Signed in as <strong>admin</strong>"));

    // The cookie, copied before signing out, is worth nothing afterwards.
    let stolen = browser.cookies.clone();
    let out = browser.post("/console/sign-out", &[]).await;
    assert_sent_to_sign_in(&out, "?ended=signed-out");
    assert!(
        out.set_cookies()
            .iter()
            .any(|c| c.starts_with("__Host-sdm-console=;") && c.contains("Max-Age=0"))
    );
    let mut replay = Browser::new(&t.client);
    replay.cookies = stolen;
    assert_sent_to_sign_in(&replay.get("/console/users").await, "?ended=ended");
}

#[tokio::test]
async fn every_console_answer_carries_the_security_headers() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    for path in [
        "/console/sign-in",
        "/console/users",
        "/console/users/admin",
        "/console/no-such-page",
    ] {
        let page = browser.get(path).await;
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("cache-control"), Some("no-store"));
        assert!(!page.body.contains("<script>"), "{path}: inline script");
    }
    let missing = browser.get("/console/no-such-page").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(missing.body.contains("Page not found"));
    // The API's own unknown routes stay JSON.
    let api = t.client.get("/v1/no-such-route", None).await;
    api.expect_error(404, "invalid_argument");
}

#[tokio::test]
async fn a_service_token_cannot_sign_in_and_failed_sign_ins_count_against_the_api_throttle() {
    let t = TestServer::start().await;
    let job = create_account(&t, "etl", AccountKind::Service).await;
    let mut browser = Browser::new(&t.client);
    let refused = browser.sign_in(&job.token).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("service account"), "{}", refused.body);
    assert!(browser.cookies.is_empty());

    let wrong = browser.sign_in("sdm_adm_not-a-token").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("role=\"alert\""));
    // The API's limit per source (60 a minute), shared: the console's failures count, and
    // then bearer guesses from the same address are refused too.
    for _ in 0..60 {
        browser.sign_in("sdm_adm_not-a-token").await;
    }
    let throttled = browser.sign_in("sdm_adm_not-a-token").await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    t.client
        .get(routes::RESOURCES, Some("sdm_svc_not-a-token"))
        .await
        .expect_error(429, "api_unreachable");
    // A valid admin token still signs in from the throttled address.
    Browser::signed_in(&t.client, &t.admin()).await;
}

/// Form fields or headers.
type Fields<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn a_form_without_the_csrf_token_or_sent_from_another_site_changes_nothing() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let csrf = browser.csrf.clone().unwrap();
    let cases: [(&str, Fields<'_>, Fields<'_>); 5] = [
        ("no token", vec![("name", "evil-1")], vec![]),
        (
            "a made-up token",
            vec![("csrf", "AAAA"), ("name", "evil-2")],
            vec![],
        ),
        (
            "another origin",
            vec![("csrf", &csrf), ("name", "evil-3")],
            vec![("origin", "https://attacker.example")],
        ),
        (
            "a cross-site fetch",
            vec![("csrf", &csrf), ("name", "evil-4")],
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "a plain-http origin",
            vec![("csrf", &csrf), ("name", "evil-5")],
            vec![("origin", "http://127.0.0.1")],
        ),
    ];
    for (what, fields, headers) in cases {
        let page = browser
            .send("POST", "/console/users", &fields, &headers)
            .await;
        assert_eq!(page.status, 403, "{what}: {}", page.body);
        assert!(page.body.contains("Nothing was changed"), "{what}");
    }
    // Another session's token does not pass either.
    let other = Browser::signed_in(&t.client, &t.admin()).await;
    let foreign = other.csrf.clone().unwrap();
    let page = browser
        .send(
            "POST",
            "/console/users",
            &[("csrf", &foreign), ("name", "evil-6")],
            &[],
        )
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(account_names(&t).await, ["admin"]);
    // With the token, from the console itself, the same form works.
    let made = browser
        .send(
            "POST",
            "/console/users",
            &[("csrf", &csrf), ("name", "etl-bot")],
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    assert_eq!(account_names(&t).await, ["admin", "etl-bot"]);
}

#[tokio::test]
async fn a_new_token_is_shown_once_and_works() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    browser.get("/console/new/service").await;
    let made = browser.post("/console/users", &[("name", "etl-bot")]).await;
    assert_eq!(made.location(), Some("/console/users/etl-bot?created=1"));
    let shown = browser.get("/console/users/etl-bot?created=1").await;
    assert!(shown.body.contains("Service account created"));
    assert!(
        shown
            .body
            .contains("the only time the token will be visible")
    );
    let token = shown.field("token").unwrap();
    assert!(token.starts_with("sdm_svc_"), "{token}");
    // Reloading shows it no more, and the browser no longer holds it.
    let again = browser.get("/console/users/etl-bot?created=1").await;
    assert_eq!(again.status, 200);
    assert!(!again.body.contains(&token));
    assert!(!again.body.contains("Service account created"));
    assert!(!browser.cookies.contains_key("__Host-sdm-console-token"));
    // The token is a job's token.
    let login = t
        .client
        .post(
            routes::LOGIN,
            Some(&token),
            &LoginRequest {
                labels: Default::default(),
                client: "console test".into(),
            },
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text());
    // Rotating shows the new one once, and the old one stops working.
    let rotated = browser.post("/console/users/etl-bot/rotate", &[]).await;
    assert_eq!(rotated.status, 303);
    let shown = browser.get("/console/users/etl-bot").await;
    assert!(
        shown.body.contains("New token for etl-bot"),
        "{}",
        shown.body
    );
    assert!(!shown.body.contains(&token));
    t.client
        .get(routes::RESOURCES, Some(&token))
        .await
        .expect_error(401, "unauthenticated");
}

#[tokio::test]
async fn markup_in_what_a_page_echoes_is_shown_as_text() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let attack = "<script>alert(1)</script>";
    let search = browser
        .get("/console/users?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .await;
    assert_eq!(search.status, 200);
    assert!(!search.body.contains(attack));
    assert!(
        search
            .body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;")
    );
    browser.get("/console/new/service").await;
    let refused = browser.post("/console/users", &[("name", attack)]).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(!refused.body.contains(attack), "{}", refused.body);
    assert!(refused.body.contains("aria-invalid=\"true\""));
    assert_eq!(account_names(&t).await, ["admin"]);
}

#[tokio::test]
async fn suspending_deleting_or_rotating_an_admin_ends_its_console_sessions_at_once() {
    let t = TestServer::start().await;
    for (name, action) in [
        ("ops-suspended", "suspend"),
        ("ops-deleted", "delete"),
        ("ops-rotated", "rotate"),
    ] {
        let ops = create_account(&t, name, AccountKind::Admin).await;
        let mut browser = Browser::signed_in(&t.client, &ops.token).await;
        let path = format!("/v1/admin/accounts/{name}");
        let done = match action {
            "suspend" => {
                t.client
                    .post_empty(&format!("{path}/suspend"), Some(&t.admin()))
                    .await
            }
            "delete" => t.client.delete(&path, Some(&t.admin())).await,
            _ => {
                t.client
                    .post_empty(&format!("{path}/tokens"), Some(&t.admin()))
                    .await
            }
        };
        assert!(done.status < 300, "{action}: {}", done.text());
        assert_sent_to_sign_in(&browser.get("/console/users").await, "?ended=ended");
        if action == "suspend" {
            // Lifting the suspension does not bring the ended session back.
            t.client
                .post_empty(&format!("{path}/unsuspend"), Some(&t.admin()))
                .await;
            assert_sent_to_sign_in(&browser.get("/console/users").await, "");
        }
    }
}

async fn server_with(policy: SessionPolicy) -> (tempfile::TempDir, sdm_server::RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .session_policy(policy)
        .start()
        .await
        .unwrap();
    (dir, server)
}

#[tokio::test]
async fn an_idle_or_too_old_console_session_gets_the_sign_in_page() {
    for (policy, why) in [
        (
            SessionPolicy {
                console_idle_timeout: Duration::from_secs(1),
                ..SessionPolicy::default()
            },
            "idle",
        ),
        (
            SessionPolicy {
                console_max_age: Duration::from_secs(1),
                ..SessionPolicy::default()
            },
            "expired",
        ),
    ] {
        let (dir, server) = server_with(policy).await;
        let client = Client::new(&dir.path().join("data"), server.api_addr());
        let mut browser = Browser::signed_in(&client, server.admin_token().unwrap()).await;
        // Over the limit by at least a whole second, whatever the clock's second boundaries.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_sent_to_sign_in(
            &browser.get("/console/users").await,
            &format!("?ended={why}"),
        );
        let sign_in = browser.get(&format!("/console/sign-in?ended={why}")).await;
        assert!(sign_in.body.contains("signed out"), "{}", sign_in.body);
        // Signing in again works.
        Browser::signed_in(&client, server.admin_token().unwrap()).await;
    }
}
