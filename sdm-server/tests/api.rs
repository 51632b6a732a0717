//! The control plane API, end to end over HTTPS against a server started in-process.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Client, TestServer, database_contains, start_in};
use sdm_proto::api::*;
use sdm_proto::lease::LeaseVerifier;
use sdm_proto::{ResourceKind, Token, TokenKind};
use serde_json::json;
use uuid::Uuid;

const NOT_VALID: &str = "token is not valid";

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

async fn login(client: &Client, token: &str) -> common::Reply {
    client
        .post(
            routes::LOGIN,
            Some(token),
            &LoginRequest {
                labels: BTreeMap::from([("dag_id".into(), "nightly".into())]),
                client: "sdm-server tests".into(),
            },
        )
        .await
}

async fn create_resource(t: &TestServer, body: serde_json::Value) -> AdminResource {
    t.client
        .post(routes::ADMIN_RESOURCES, Some(&t.admin()), &body)
        .await
        .expect_ok()
}

async fn grant(t: &TestServer, account: &str, resource: &str) -> GrantInfo {
    t.client
        .post(
            &format!("/v1/admin/accounts/{account}/grants"),
            Some(&t.admin()),
            &CreateGrant {
                resource: resource.into(),
            },
        )
        .await
        .expect_ok()
}

async fn lease(client: &Client, token: &str, session: Uuid, resource: Uuid) -> common::Reply {
    client
        .post(
            routes::LEASES,
            Some(token),
            &LeaseRequest {
                session_id: session,
                resource_id: resource,
            },
        )
        .await
}

#[tokio::test]
async fn first_start_creates_private_state_and_an_admin_token() {
    let t = TestServer::start().await;
    let dir = t.data_dir();
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    for (file, mode) in [
        ("ca.pem", 0o644),
        ("ca.key", 0o600),
        ("lease.key", 0o600),
        ("secret.key", 0o600),
        ("ssh_ca.key", 0o600),
        ("sdm.db", 0o600),
    ] {
        let meta = std::fs::metadata(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.mode() & 0o777, mode, "{file}");
    }
    let port = t.server.api_addr().port();
    assert_ne!(port, 0);
    assert_eq!(t.server.api_url(), format!("https://127.0.0.1:{port}"));
    assert_ne!(t.server.gateway_addr().port(), 0);

    // The admin token is self-describing: it names this server and pins its CA.
    let admin = Token::parse(&t.admin()).unwrap();
    assert_eq!(admin.kind, TokenKind::Admin);
    assert_eq!(admin.api_url, t.server.api_url());
    assert_eq!(admin.ca_fingerprint, t.server.ca_fingerprint());
    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap();
    assert_eq!(sdm_proto::sha256(&ca_der), t.server.ca_fingerprint());

    let health = t.client.get(routes::HEALTH, None).await;
    assert_eq!(
        health.expect_ok::<serde_json::Value>(),
        json!({"status": "ok"})
    );
    let accounts: AccountList = t
        .client
        .get(routes::ADMIN_ACCOUNTS, Some(&t.admin()))
        .await
        .expect_ok();
    assert_eq!(accounts.accounts.len(), 1);
    assert_eq!(accounts.accounts[0].name, "admin");
    assert_eq!(accounts.accounts[0].kind, AccountKind::Admin);
    assert_eq!(accounts.accounts[0].status, AccountStatus::Active);
    // Only the hash of the admin token's secret is stored.
    assert!(!database_contains(&dir, &admin.secret));
    assert!(database_contains(&dir, &admin.secret_hash()));
    t.server.shutdown().await;
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn a_second_start_reuses_the_installation() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let fingerprint = t.server.ca_fingerprint();
    let lease_key = t.server.lease_public_key().to_vec();
    let dir = t.data_dir();
    let TestServer {
        server, dir: _tmp, ..
    } = t;
    server.shutdown().await;

    let again = start_in(&dir).await;
    assert!(
        again.admin_token().is_none(),
        "the admin token is shown once"
    );
    assert_eq!(again.ca_fingerprint(), fingerprint);
    assert_eq!(again.lease_public_key(), &lease_key[..]);
    let client = Client::new(&dir, again.api_addr());
    let accounts: AccountList = client
        .get(routes::ADMIN_ACCOUNTS, Some(&admin))
        .await
        .expect_ok();
    assert_eq!(accounts.accounts.len(), 1, "no second admin was created");
    again.shutdown().await;

    // A lost lease.key is harmless on an embedded installation: a new one replaces it.
    std::fs::remove_file(dir.join("lease.key")).unwrap();
    let renewed = start_in(&dir).await;
    assert_ne!(renewed.lease_public_key(), &lease_key[..]);
    renewed.shutdown().await;
}

#[tokio::test]
async fn a_lost_secret_key_stops_the_start_with_a_clear_error() {
    let t = TestServer::start().await;
    let dir = t.data_dir();
    let TestServer {
        server, dir: _tmp, ..
    } = t;
    server.shutdown().await;
    std::fs::remove_file(dir.join("secret.key")).unwrap();
    let err = sdm_server::Server::builder()
        .data_dir(&dir)
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("secret.key"), "{text}");
    assert!(text.contains("SDM_SECRET_KEY"), "{text}");
    assert!(
        !dir.join("secret.key").exists(),
        "no new key replaces the lost one"
    );
}

#[tokio::test]
async fn service_account_lifecycle() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let created = create_account(&t, "etl-bot", AccountKind::Service).await;
    assert_eq!(created.account.kind, AccountKind::Service);
    assert_eq!(created.account.status, AccountStatus::Active);
    let token = created.token.clone();
    let parsed = Token::parse(&token).unwrap();
    assert_eq!(parsed.kind, TokenKind::Service);
    assert_eq!(parsed.api_url, t.server.api_url());
    assert_eq!(parsed.ca_fingerprint, t.server.ca_fingerprint());

    let session: LoginResponse = login(&t.client, &token).await.expect_ok();
    assert_eq!(session.account.name, "etl-bot");
    assert_eq!(session.account.kind, AccountKind::Service);

    // The token is never shown again, and only its hash is stored.
    let listed = t.client.get(routes::ADMIN_ACCOUNTS, Some(&admin)).await;
    let accounts: AccountList = listed.expect_ok();
    let etl = accounts
        .accounts
        .iter()
        .find(|a| a.name == "etl-bot")
        .unwrap();
    assert_eq!(etl.kind, AccountKind::Service);
    let shown = t
        .client
        .get("/v1/admin/accounts/etl-bot", Some(&admin))
        .await;
    let info: AccountInfo = shown.expect_ok();
    assert_eq!(info.id, created.account.id);
    for reply in [&listed, &shown] {
        assert!(!reply.text().contains(&token));
    }
    assert!(!database_contains(&t.data_dir(), token.as_bytes()));
    assert!(!database_contains(&t.data_dir(), &parsed.secret));
    assert!(database_contains(&t.data_dir(), &parsed.secret_hash()));

    // Suspend: refused with the one message that reveals nothing; unsuspend: works again.
    let suspended: AccountInfo = t
        .client
        .post_empty("/v1/admin/accounts/etl-bot/suspend", Some(&admin))
        .await
        .expect_ok();
    assert_eq!(suspended.status, AccountStatus::Suspended);
    let msg = login(&t.client, &token)
        .await
        .expect_error(401, "unauthenticated");
    assert!(msg.contains(NOT_VALID), "{msg}");
    let unsuspended: AccountInfo = t
        .client
        .post_empty(
            &format!("/v1/admin/accounts/{}/unsuspend", created.account.id),
            Some(&admin),
        )
        .await
        .expect_ok();
    assert_eq!(unsuspended.status, AccountStatus::Active);
    login(&t.client, &token).await.expect_ok::<LoginResponse>();

    // Rotate: the old token stops working, the new one works.
    let rotated: CreatedAccount = t
        .client
        .post_empty("/v1/admin/accounts/etl-bot/tokens", Some(&admin))
        .await
        .expect_ok();
    assert_ne!(rotated.token, token);
    let msg = login(&t.client, &token)
        .await
        .expect_error(401, "unauthenticated");
    assert!(msg.contains(NOT_VALID), "{msg}");
    login(&t.client, &rotated.token)
        .await
        .expect_ok::<LoginResponse>();

    // Delete: the token stops working and the account is gone.
    let deleted = t
        .client
        .delete("/v1/admin/accounts/etl-bot", Some(&admin))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let msg = login(&t.client, &rotated.token)
        .await
        .expect_error(401, "unauthenticated");
    assert!(msg.contains(NOT_VALID), "{msg}");
    t.client
        .get("/v1/admin/accounts/etl-bot", Some(&admin))
        .await
        .expect_error(404, "invalid_argument");
    t.server.shutdown().await;
}

#[tokio::test]
async fn tokens_are_checked() {
    let t = TestServer::start().await;
    let service = create_account(&t, "etl", AccountKind::Service).await.token;

    let msg = t
        .client
        .get(routes::ADMIN_ACCOUNTS, Some(&service))
        .await
        .expect_error(403, "forbidden");
    assert!(msg.contains("admin token"), "{msg}");
    t.client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&service),
            &json!({"name": "x", "kind": "tcp", "hostname": "h", "port": 1}),
        )
        .await
        .expect_error(403, "forbidden");

    // Malformed: the parser's reason is passed on.
    let msg = t
        .client
        .get(routes::RESOURCES, Some("not-a-token"))
        .await
        .expect_error(401, "invalid_token");
    assert!(msg.contains("not an sdm token"), "{msg}");
    let truncated = &service[..service.len() - 4];
    t.client
        .get(routes::RESOURCES, Some(truncated))
        .await
        .expect_error(401, "invalid_token");
    // Well formed but unknown: the same message as revoked.
    let stranger = Token::generate(
        TokenKind::Service,
        t.server.api_url(),
        t.server.ca_fingerprint(),
    )
    .unwrap()
    .encode();
    let msg = t
        .client
        .get(routes::RESOURCES, Some(&stranger))
        .await
        .expect_error(401, "unauthenticated");
    assert!(msg.contains(NOT_VALID), "{msg}");
    // A known id with a wrong secret.
    let mut forged = Token::parse(&service).unwrap();
    forged.secret[0] ^= 1;
    t.client
        .get(routes::RESOURCES, Some(&forged.encode()))
        .await
        .expect_error(401, "unauthenticated");
    // No token, or another scheme.
    t.client
        .get(routes::RESOURCES, None)
        .await
        .expect_error(401, "unauthenticated");
    let basic = t
        .client
        .request("GET", routes::RESOURCES, None, None, Vec::new())
        .await;
    basic.expect_error(401, "unauthenticated");

    // Admin tokens may use the service routes.
    login(&t.client, &t.admin())
        .await
        .expect_ok::<LoginResponse>();
    let none: ResourceList = t
        .client
        .get(routes::RESOURCES, Some(&t.admin()))
        .await
        .expect_ok();
    assert!(none.resources.is_empty());
    t.server.shutdown().await;
}

#[tokio::test]
async fn admin_accounts_are_validated_and_the_last_admin_stays() {
    let t = TestServer::start().await;
    let admin = t.admin();
    for bad in ["", "has space", "slash/name", &"x".repeat(65)] {
        t.client
            .post(
                routes::ADMIN_ACCOUNTS,
                Some(&admin),
                &json!({ "name": bad }),
            )
            .await
            .expect_error(400, "invalid_argument");
    }
    create_account(&t, "etl", AccountKind::Service).await;
    let msg = t
        .client
        .post(
            routes::ADMIN_ACCOUNTS,
            Some(&admin),
            &json!({ "name": "etl" }),
        )
        .await
        .expect_error(409, "invalid_argument");
    assert!(
        msg.contains("etl") && msg.contains("already exists"),
        "{msg}"
    );

    let msg = t
        .client
        .delete("/v1/admin/accounts/admin", Some(&admin))
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("last active admin"), "{msg}");
    t.client
        .post_empty("/v1/admin/accounts/admin/suspend", Some(&admin))
        .await
        .expect_error(400, "invalid_argument");
    // With a second admin, the first may go.
    let second = create_account(&t, "ops", AccountKind::Admin).await;
    assert!(second.token.starts_with("sdm_adm_"));
    let gone = t
        .client
        .delete("/v1/admin/accounts/admin", Some(&second.token))
        .await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    t.client
        .get(routes::ADMIN_ACCOUNTS, Some(&admin))
        .await
        .expect_error(401, "unauthenticated");
    t.server.shutdown().await;
}

#[tokio::test]
async fn resources_grants_and_leases() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let password = "hunter2-correct-horse-battery";
    let pg = create_resource(
        &t,
        json!({
            "name": "pgsql_1_31",
            "kind": "postgres",
            "hostname": "127.0.0.1",
            "port_override": 15432,
            "tags": {"env": "prod"},
            "credentials": {"username": "app", "password": password, "database": "appdb"},
        }),
    )
    .await;
    assert_eq!(pg.port, 5432, "the kind's default port");
    assert!(pg.has_credentials);
    assert_eq!(pg.username.as_deref(), Some("app"));
    assert_eq!(pg.database.as_deref(), Some("appdb"));
    let ssh = create_resource(
        &t,
        json!({"name": "server-245a", "kind": "ssh", "hostname": "10.0.0.7",
               "ssh": {"username": "deploy", "certificate_authority": true}}),
    )
    .await;
    assert_eq!(ssh.port, 22);
    assert!(!ssh.has_credentials);
    let kafka = create_resource(
        &t,
        json!({"name": "events", "kind": "kafka", "hostname": "k", "port": 9092}),
    )
    .await;
    assert_eq!(kafka.kind, ResourceKind::Other("kafka".into()));
    t.client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &json!({"name": "raw", "kind": "tcp", "hostname": "h"}),
        )
        .await
        .expect_error(400, "invalid_argument");
    t.client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &json!({"name": "pgsql_1_31", "kind": "postgres", "hostname": "h"}),
        )
        .await
        .expect_error(409, "invalid_argument");
    t.client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &json!({"name": "x", "kind": "postgres", "hostname": ""}),
        )
        .await
        .expect_error(400, "invalid_argument");

    // The password appears in no answer and not in clear in the database.
    let all = t.client.get(routes::ADMIN_RESOURCES, Some(&admin)).await;
    let one = t
        .client
        .get("/v1/admin/resources/pgsql_1_31", Some(&admin))
        .await;
    let names: Vec<_> = all
        .expect_ok::<AdminResourceList>()
        .resources
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["events", "pgsql_1_31", "server-245a"]);
    assert_eq!(one.expect_ok::<AdminResource>(), pg);
    for reply in [&all, &one] {
        assert!(!reply.text().contains(password));
    }
    assert!(!database_contains(&t.data_dir(), password.as_bytes()));
    assert!(database_contains(&t.data_dir(), b"pgsql_1_31"));

    // Grant pg (by name) and ssh (by id) to a service account.
    let etl = create_account(&t, "etl", AccountKind::Service).await;
    let g = grant(&t, "etl", "pgsql_1_31").await;
    assert_eq!(g.resource_id, pg.id);
    assert_eq!(g.resource_name, "pgsql_1_31");
    let again = grant(&t, "etl", "pgsql_1_31").await;
    assert_eq!(again, g, "granting twice keeps the first grant");
    grant(&t, &etl.account.id.to_string(), &ssh.id.to_string()).await;
    t.client
        .post(
            "/v1/admin/accounts/etl/grants",
            Some(&admin),
            &CreateGrant {
                resource: "nope".into(),
            },
        )
        .await
        .expect_error(404, "resource_not_found");
    let grants: GrantList = t
        .client
        .get("/v1/admin/accounts/etl/grants", Some(&admin))
        .await
        .expect_ok();
    let granted: Vec<_> = grants
        .grants
        .iter()
        .map(|g| g.resource_name.as_str())
        .collect();
    assert_eq!(granted, ["pgsql_1_31", "server-245a"]);

    // The job sees exactly its grants, healthy, without addresses or credentials.
    let token = etl.token;
    let session: LoginResponse = login(&t.client, &token).await.expect_ok();
    let listed = t.client.get(routes::RESOURCES, Some(&token)).await;
    assert!(!listed.text().contains("127.0.0.1"));
    let list: ResourceList = listed.expect_ok();
    let visible: Vec<_> = list.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(visible, ["pgsql_1_31", "server-245a"]);
    let pg_info = &list.resources[0];
    assert_eq!(pg_info.kind, ResourceKind::Postgres);
    assert_eq!(pg_info.port_override, Some(15432));
    assert_eq!(pg_info.tags.get("env").map(String::as_str), Some("prod"));
    assert!(pg_info.healthy);

    // A lease for a granted resource verifies with the server's public key.
    let grant_reply: LeaseGrant = lease(&t.client, &token, session.session_id, pg.id)
        .await
        .expect_ok();
    let bytes = URL_SAFE_NO_PAD.decode(&grant_reply.lease).unwrap();
    let verifier = LeaseVerifier::new([t.server.lease_public_key().to_vec()]);
    let verified = verifier.verify(&bytes, sdm_proto::unix_now(), 0).unwrap();
    assert_eq!(verified.id, grant_reply.lease_id);
    assert_eq!(verified.account_id, etl.account.id);
    assert_eq!(verified.resource_id, pg.id);
    assert_eq!(verified.session_id, session.session_id);
    assert_eq!(grant_reply.ttl_secs, 300);
    assert_eq!(verified.expires_at - verified.issued_at, 300);
    assert_eq!(grant_reply.gateways.len(), 1);
    let gw = &grant_reply.gateways[0];
    assert_eq!(gw.address, t.server.gateway_addr().to_string());
    assert_eq!(gw.server_name, "127.0.0.1");

    // An ungranted resource does not exist as far as the job can tell.
    let msg = lease(&t.client, &token, session.session_id, kafka.id)
        .await
        .expect_error(404, "resource_not_found");
    assert!(msg.contains(&kafka.id.to_string()), "{msg}");
    lease(&t.client, &token, session.session_id, Uuid::new_v4())
        .await
        .expect_error(404, "resource_not_found");

    // Someone else's session is not usable.
    let other = create_account(&t, "other", AccountKind::Service).await;
    let other_session: LoginResponse = login(&t.client, &other.token).await.expect_ok();
    lease(&t.client, &token, other_session.session_id, pg.id)
        .await
        .expect_error(401, "unauthenticated");

    // Revoking the grant hides the resource and refuses leases.
    let revoked = t
        .client
        .delete("/v1/admin/accounts/etl/grants/pgsql_1_31", Some(&admin))
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    lease(&t.client, &token, session.session_id, pg.id)
        .await
        .expect_error(404, "resource_not_found");
    let list: ResourceList = t
        .client
        .get(routes::RESOURCES, Some(&token))
        .await
        .expect_ok();
    assert_eq!(list.resources.len(), 1);
    assert_eq!(list.resources[0].name, "server-245a");

    // Deleting a resource removes its grants.
    let deleted = t
        .client
        .delete(&format!("/v1/admin/resources/{}", ssh.id), Some(&admin))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let list: ResourceList = t
        .client
        .get(routes::RESOURCES, Some(&token))
        .await
        .expect_ok();
    assert!(list.resources.is_empty());
    t.client
        .get("/v1/admin/resources/server-245a", Some(&admin))
        .await
        .expect_error(404, "resource_not_found");

    // Logout ends the session: no more leases in it.
    grant(&t, "etl", "pgsql_1_31").await;
    let out = t
        .client
        .post(
            routes::LOGOUT,
            Some(&token),
            &LogoutRequest {
                session_id: session.session_id,
            },
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text());
    let msg = lease(&t.client, &token, session.session_id, pg.id)
        .await
        .expect_error(401, "unauthenticated");
    assert!(msg.contains("log in again"), "{msg}");
    t.server.shutdown().await;
}

async fn patch_settings(t: &TestServer, body: serde_json::Value) -> common::Reply {
    t.client
        .request(
            "PATCH",
            routes::ADMIN_SETTINGS,
            Some(&t.admin()),
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await
}

/// Every resource's (name, local port, assigned), by name.
async fn local_ports(t: &TestServer) -> Vec<(String, Option<u16>, bool)> {
    let list: AdminResourceList = t
        .client
        .get(routes::ADMIN_RESOURCES, Some(&t.admin()))
        .await
        .expect_ok();
    list.resources
        .into_iter()
        .map(|r| (r.name, r.port_override, r.port_assigned))
        .collect()
}

fn port(name: &str, port: Option<u16>, assigned: bool) -> (String, Option<u16>, bool) {
    (name.to_owned(), port, assigned)
}

#[tokio::test]
async fn port_overrides_give_every_resource_a_unique_local_port() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let settings: Settings = t
        .client
        .get(routes::ADMIN_SETTINGS, Some(&admin))
        .await
        .expect_ok();
    assert!(!settings.assign_ports);
    assert_eq!(settings.port_range.to_string(), "20000-29999");
    let tcp = |name: &str| json!({"name": name, "kind": "tcp", "hostname": "127.0.0.1", "port": 9});
    let early = create_resource(&t, tcp("early")).await;
    assert_eq!((early.port_override, early.port_assigned), (None, false));
    let mut fixed = tcp("fixed");
    fixed["port_override"] = json!(20000);
    create_resource(&t, fixed).await;

    // Bad ranges are refused and change nothing.
    for (range, status, says) in [
        (
            json!({"first": 20, "last": 10}),
            400,
            "starts after it ends",
        ),
        (json!({"first": 0, "last": 10}), 400, "starts at 0"),
        (json!({"first": 1, "last": 65536}), 422, "port_range.last"),
        (json!("20000-29999"), 422, "port_range"),
    ] {
        let message = patch_settings(&t, json!({"assign_ports": true, "port_range": range}))
            .await
            .expect_error(status, "invalid_argument");
        assert!(message.contains(says), "{message}");
    }
    // Too small a range for the resources that need a port: refused, nothing changes.
    let message = patch_settings(
        &t,
        json!({"assign_ports": true, "port_range": {"first": 20000, "last": 20000}}),
    )
    .await
    .expect_error(409, "invalid_argument");
    assert!(
        message.contains("20000-20000") && message.contains("widen the range"),
        "{message}"
    );
    let settings: Settings = t
        .client
        .get(routes::ADMIN_SETTINGS, Some(&admin))
        .await
        .expect_ok();
    assert!(!settings.assign_ports && settings.port_range.to_string() == "20000-29999");
    assert_eq!(
        local_ports(&t).await,
        [
            port("early", None, false),
            port("fixed", Some(20000), false)
        ]
    );

    // On: the existing resource gets a port around the explicit one, and so does a new one.
    let settings: Settings = patch_settings(
        &t,
        json!({"assign_ports": true, "port_range": {"first": 20000, "last": 20002}}),
    )
    .await
    .expect_ok();
    assert!(settings.assign_ports);
    assert_eq!(settings.port_range, PortRange::new(20000, 20002).unwrap());
    let late = create_resource(&t, tcp("late")).await;
    assert_eq!(
        (late.port_override, late.port_assigned),
        (Some(20002), true)
    );
    assert_eq!(
        local_ports(&t).await,
        [
            port("early", Some(20001), true),
            port("fixed", Some(20000), false),
            port("late", Some(20002), true),
        ]
    );
    // The range is full: a new resource is refused and not created.
    let message = t
        .client
        .post(routes::ADMIN_RESOURCES, Some(&admin), &tcp("full"))
        .await
        .expect_error(409, "invalid_argument");
    assert!(message.contains("no free port"), "{message}");
    // An explicit port another resource holds is refused, naming it.
    let mut thief = tcp("thief");
    thief["port_override"] = json!(20001);
    let message = t
        .client
        .post(routes::ADMIN_RESOURCES, Some(&admin), &thief)
        .await
        .expect_error(409, "invalid_argument");
    assert!(message.contains("\"early\""), "{message}");
    assert_eq!(local_ports(&t).await.len(), 3);

    // A service account sees the assigned port as its resource's fixed port.
    let bot = create_account(&t, "etl", AccountKind::Service).await;
    grant(&t, "etl", "early").await;
    let listed: ResourceList = t
        .client
        .get(routes::RESOURCES, Some(&bot.token))
        .await
        .expect_ok();
    assert_eq!(listed.resources[0].port_override, Some(20001));
    let login: LoginResponse = login(&t.client, &bot.token).await.expect_ok();
    assert!(login.settings.assign_ports);

    // Regenerating packs the assigned ports in name order; the explicit one stays.
    let deleted = t
        .client
        .delete("/v1/admin/resources/early", Some(&admin))
        .await;
    assert_eq!(deleted.status, 204);
    let _: Settings = t
        .client
        .post_empty(routes::ADMIN_REGENERATE_PORTS, Some(&admin))
        .await
        .expect_ok();
    assert_eq!(
        local_ports(&t).await,
        [
            port("fixed", Some(20000), false),
            port("late", Some(20001), true)
        ]
    );

    // Off takes back the assigned ports; regenerating then is refused.
    let settings: Settings = patch_settings(&t, json!({"assign_ports": false}))
        .await
        .expect_ok();
    assert!(!settings.assign_ports);
    assert_eq!(
        local_ports(&t).await,
        [port("fixed", Some(20000), false), port("late", None, false)]
    );
    let message = t
        .client
        .post_empty(routes::ADMIN_REGENERATE_PORTS, Some(&admin))
        .await
        .expect_error(400, "invalid_argument");
    assert!(message.contains("port overrides are off"), "{message}");
}

#[tokio::test]
async fn login_labels_are_bounded() {
    let t = TestServer::start().await;
    let token = create_account(&t, "etl", AccountKind::Service).await.token;
    let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    let msg = t
        .client
        .post(
            routes::LOGIN,
            Some(&token),
            &LoginRequest {
                labels: many,
                client: String::new(),
            },
        )
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("at most 32"), "{msg}");
    let long_value = BTreeMap::from([("task_id".to_owned(), "v".repeat(257))]);
    t.client
        .post(
            routes::LOGIN,
            Some(&token),
            &LoginRequest {
                labels: long_value,
                client: String::new(),
            },
        )
        .await
        .expect_error(400, "invalid_argument");
    // An empty body is fine: labels and client have defaults.
    t.client
        .post(routes::LOGIN, Some(&token), &json!({}))
        .await
        .expect_ok::<LoginResponse>();
    t.server.shutdown().await;
}

/// An error message that repeats no control character of the refused value.
#[track_caller]
fn assert_printable(message: &str) {
    assert_eq!(
        sdm_proto::text::find_terminal_control(message),
        None,
        "{message:?}"
    );
}

#[tokio::test]
async fn control_characters_are_refused_in_text_that_terminals_print() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let c = &t.client;
    let resource = |kind: &str, tags: serde_json::Value| json!({"name": "kafka", "kind": kind, "hostname": "127.0.0.1", "port": 9092, "tags": tags});
    // A kind that sets the window title and rings the bell.
    let msg = c
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &resource("\u{1b}]0;pwned\u{7}kafka", json!({})),
        )
        .await
        .expect_error(400, "invalid_argument");
    assert_printable(&msg);
    assert!(
        msg.contains("resource kind must not contain control characters: found U+001B"),
        "{msg}"
    );
    // A tag value that clears the screen, a key with a C1 CSI, a value with a bidi override.
    for (tags, field) in [
        (
            json!({"team": "\u{1b}[2Jdata"}),
            "the value of tag \"team\"",
        ),
        (
            json!({"\u{9b}31mteam": "data"}),
            "tag key \"\\u{9b}31mteam\"",
        ),
        (json!({"team": "\u{202e}atad"}), "the value of tag \"team\""),
    ] {
        let msg = c
            .post(
                routes::ADMIN_RESOURCES,
                Some(&admin),
                &resource("kafka", tags),
            )
            .await
            .expect_error(400, "invalid_argument");
        assert_printable(&msg);
        assert!(msg.contains(field), "{msg}");
        assert!(msg.contains("must not contain control characters"), "{msg}");
    }
    // Printable text in any script is fine; a change of tags is checked like a creation.
    let created: AdminResource = c
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &resource("kafka", json!({"équipe": "données"})),
        )
        .await
        .expect_ok();
    let msg = c
        .request(
            "PATCH",
            &format!("/v1/admin/resources/{}", created.id),
            Some(&admin),
            Some("application/json"),
            serde_json::to_vec(&json!({"tags": {"env": "prod\u{7}"}})).unwrap(),
        )
        .await
        .expect_error(400, "invalid_argument");
    assert_printable(&msg);
    assert!(msg.contains("the value of tag \"env\""), "{msg}");
    // Gateway tags.
    let msg = c
        .post(
            routes::ADMIN_GATEWAYS,
            Some(&admin),
            &json!({"name": "gw-eu", "tags": {"region": "eu\u{1b}[0m"}}),
        )
        .await
        .expect_error(400, "invalid_argument");
    assert_printable(&msg);
    assert!(msg.contains("the value of gateway tag \"region\""), "{msg}");
    // Session labels and the client string at login.
    let token = create_account(&t, "etl", AccountKind::Service).await.token;
    let msg = c
        .post(
            routes::LOGIN,
            Some(&token),
            &json!({"labels": {"dag_id": "nightly\r\u{1b}[1A"}}),
        )
        .await
        .expect_error(400, "invalid_argument");
    assert_printable(&msg);
    assert!(msg.contains("the value of label \"dag_id\""), "{msg}");
    let msg = c
        .post(
            routes::LOGIN,
            Some(&token),
            &json!({"client": "sdm\u{8}\u{8}\u{8}psql"}),
        )
        .await
        .expect_error(400, "invalid_argument");
    assert_printable(&msg);
    assert!(
        msg.contains("client must not contain control characters"),
        "{msg}"
    );
    // Nothing refused was stored.
    let list: AdminResourceList = c
        .get(routes::ADMIN_RESOURCES, Some(&admin))
        .await
        .expect_ok();
    assert_eq!(list.resources.len(), 1);
    assert_eq!(list.resources[0].tags["équipe"], "données");
    t.server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let c = &t.client;
    let json_ct = Some("application/json");

    let msg = c
        .request(
            "POST",
            routes::ADMIN_ACCOUNTS,
            Some(&admin),
            json_ct,
            b"{\"name\": ".to_vec(),
        )
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("not valid JSON"), "{msg}");
    c.request(
        "POST",
        routes::ADMIN_ACCOUNTS,
        Some(&admin),
        json_ct,
        b"{\"name\": \"etl\",}".to_vec(),
    )
    .await
    .expect_error(400, "invalid_argument");
    let msg = c
        .request(
            "POST",
            routes::ADMIN_ACCOUNTS,
            Some(&admin),
            json_ct,
            b"{\"nom\": 1}".to_vec(),
        )
        .await
        .expect_error(422, "invalid_argument");
    assert!(msg.contains("expected fields"), "{msg}");
    let msg = c
        .request(
            "POST",
            routes::ADMIN_ACCOUNTS,
            Some(&admin),
            Some("text/plain"),
            b"etl".to_vec(),
        )
        .await
        .expect_error(415, "invalid_argument");
    assert!(msg.contains("application/json"), "{msg}");
    c.request(
        "POST",
        routes::ADMIN_ACCOUNTS,
        Some(&admin),
        None,
        Vec::new(),
    )
    .await
    .expect_error(415, "invalid_argument");
    // Over the 64 KiB limit.
    let big = serde_json::to_vec(&json!({ "name": "x".repeat(70 * 1024) })).unwrap();
    let msg = c
        .request("POST", routes::ADMIN_ACCOUNTS, Some(&admin), json_ct, big)
        .await
        .expect_error(413, "invalid_argument");
    assert!(msg.contains("65536"), "{msg}");
    // Unknown routes, wrong methods and bad path parameters.
    let msg = c
        .get("/v1/nothing-here", Some(&admin))
        .await
        .expect_error(404, "invalid_argument");
    assert!(msg.contains("/v1/nothing-here"), "{msg}");
    c.get("/v2", None)
        .await
        .expect_error(404, "invalid_argument");
    // The root is the web console's address.
    assert_eq!(c.get("/", None).await.status, 303);
    c.delete(routes::LOGIN, Some(&admin))
        .await
        .expect_error(405, "invalid_argument");
    c.get("/v1/admin/accounts/%FF%FE", Some(&admin))
        .await
        .expect_error(400, "invalid_argument");

    // Still serving, and no account was created by any of it.
    c.get(routes::HEALTH, None)
        .await
        .expect_ok::<serde_json::Value>();
    let accounts: AccountList = c
        .get(routes::ADMIN_ACCOUNTS, Some(&admin))
        .await
        .expect_ok();
    assert_eq!(accounts.accounts.len(), 1);
    t.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let t = TestServer::start().await;
    let api = t.server.api_addr();
    let gateway = t.server.gateway_addr();
    t.client
        .get(routes::HEALTH, None)
        .await
        .expect_ok::<serde_json::Value>();
    t.server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(api).await.is_err());
    assert!(tokio::net::TcpStream::connect(gateway).await.is_err());
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestServer::start().await;
    let api = t.server.api_addr();
    let mut raw = t.client.connect_raw().await;
    // Headers now, body later: the request is in flight when shutdown starts.
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: sdm\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
        routes::LOGIN,
        t.admin()
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    raw.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = tokio::spawn(t.server.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(api).await.is_err(),
        "no new connections once shutdown started"
    );
    raw.write_all(b"{}").await.unwrap();
    raw.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        raw.read_to_end(&mut answer),
    )
    .await
    .unwrap()
    .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("session_id"), "{answer}");
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
}
