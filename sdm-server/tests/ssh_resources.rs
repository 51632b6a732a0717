//! ssh resources through the admin API, end to end over HTTPS against an in-process server:
//! their settings are checked, their private key never comes back, clients learn the host key
//! to pin, and gateways record the server's host key once.

mod common;

use std::collections::BTreeMap;

use common::{TestServer, database_contains};
use sdm_proto::api::*;
use sdm_proto::gateway::{CreateGateway, CreatedGateway, RecordHostKey};
use serde_json::json;

/// A throwaway key made for this test with `ssh-keygen -t ed25519 -N ''`.
const LOGIN_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCELwtTJDlRAe+D1Zd9VglIu5aDgAdiaVnzR0MzQoS4FQAAAIi2g6U+toOl
PgAAAAtzc2gtZWQyNTUxOQAAACCELwtTJDlRAe+D1Zd9VglIu5aDgAdiaVnzR0MzQoS4FQ
AAAEBtk9DNuutT71yrC3MV4WZgsxEw6KKRCBFz5dBbFXwymYQvC1MkOVEB74PVl31WCUi7
loOAB2JpWfNHQzNChLgVAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";
/// Its public key line.
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQvC1MkOVEB74PVl31WCUi7loOAB2JpWfNHQzNChLgV";
/// A key encrypted with a passphrase (`ssh-keygen -t ed25519 -N secret`).
const ENCRYPTED_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABApjdpAwA
3/ocCZxEUb4WjNAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIHoGvZIpxzLq37/p
vplqmvkR9cw0ptZaBGyt4yrMzg3lAAAAkFI1UqqnV1z0qLfRcp8RYZFlnJ59Z7xORrrx/K
uxus1URqkHwKocp/mX1k+GKu465pdjDzhozMCbT8VUM20Kf8sXQARIODVTNl64t0hg2JsO
V+DEI5SQaDfqcByT/NCrSYciYKht9N4tgTavTttSKpdch33tTlqTyL5GzGvRNaoA5MvcZR
LUqqFDjRQugoINpw==
-----END OPENSSH PRIVATE KEY-----
";
/// A line of the login key's body: it must never appear in an answer or in the database.
const KEY_BODY: &str = "PgAAAAtzc2gtZWQyNTUxOQAAACCELwtTJDlRAe+D1Zd9VglIu5aDgAdiaVnzR0MzQoS4FQ";

trait NoContent {
    fn expect_no_content(&self);
}

impl NoContent for common::Reply {
    fn expect_no_content(&self) {
        assert_eq!(self.status, 204, "body: {}", self.text());
    }
}

async fn refused(t: &TestServer, body: serde_json::Value) -> String {
    t.client
        .post(routes::ADMIN_RESOURCES, Some(&t.admin()), &body)
        .await
        .expect_error(400, "invalid_argument")
}

fn ssh(name: &str, settings: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "kind": "ssh", "hostname": "10.0.0.5", "ssh": settings})
}

#[tokio::test]
async fn ssh_settings_are_checked_and_the_private_key_never_comes_back() {
    let t = TestServer::start().await;
    let admin = t.admin();
    for (body, expected) in [
        (
            ssh("a", json!({"username": "deploy", "private_key": "hunter2"})),
            "not an OpenSSH private key",
        ),
        (
            ssh(
                "a",
                json!({"username": "deploy", "private_key": ENCRYPTED_KEY}),
            ),
            "encrypted with a passphrase",
        ),
        (
            ssh(
                "a",
                json!({"username": "deploy", "private_key": LOGIN_KEY, "certificate_authority": true}),
            ),
            "not both",
        ),
        (
            ssh("a", json!({"username": "deploy"})),
            "give ssh.private_key",
        ),
        (
            ssh("a", json!({"private_key": LOGIN_KEY})),
            "ssh.username is required",
        ),
        (
            ssh(
                "a",
                json!({"username": "deploy", "certificate_authority": true, "host_key": "10.0.0.5 AAAA"}),
            ),
            "ssh.host_key",
        ),
        (
            json!({"name": "a", "kind": "ssh", "hostname": "10.0.0.5"}),
            "needs ssh settings",
        ),
        (
            json!({"name": "a", "kind": "tcp", "hostname": "h", "port": 9,
                   "ssh": {"username": "deploy", "private_key": LOGIN_KEY}}),
            "ssh settings are for resources of kind ssh, not tcp",
        ),
        (
            json!({"name": "a", "kind": "ssh", "hostname": "h",
                   "credentials": {"username": "deploy", "password": "pw"},
                   "ssh": {"username": "deploy", "certificate_authority": true}}),
            "not with credentials",
        ),
    ] {
        let message = refused(&t, body.clone()).await;
        assert!(message.contains(expected), "{body}: {message}");
        assert!(!message.contains(KEY_BODY), "{message}");
    }

    // A stored key: sealed, reported only as present.
    let created = t
        .client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &ssh(
                "web",
                json!({"username": "deploy", "private_key": LOGIN_KEY,
                       "host_key": format!("{HOST_KEY} root@web")}),
            ),
        )
        .await;
    assert!(!created.text().contains(KEY_BODY));
    let created: AdminResource = created.expect_ok();
    assert_eq!(created.port, 22);
    assert!(created.has_credentials);
    assert_eq!(created.username.as_deref(), Some("deploy"));
    assert_eq!(
        created.ssh,
        Some(SshSettings {
            username: "deploy".into(),
            private_key: None,
            certificate_authority: false,
            host_key: Some(HOST_KEY.into()),
            record_sessions: Some(false),
        })
    );
    for path in [
        routes::ADMIN_RESOURCES.to_string(),
        format!("{}/web", routes::ADMIN_RESOURCES),
    ] {
        let text = t.client.get(&path, Some(&admin)).await.text();
        assert!(
            text.contains("deploy") && !text.contains(KEY_BODY),
            "{text}"
        );
    }
    assert!(!database_contains(&t.data_dir(), KEY_BODY.as_bytes()));

    // Switch to sdm's CA, then forget the host key: the rest stays.
    let path = format!("{}/web", routes::ADMIN_RESOURCES);
    let updated: AdminResource = t
        .client
        .request(
            "PATCH",
            &path,
            Some(&admin),
            Some("application/json"),
            serde_json::to_vec(&json!({"ssh": {"certificate_authority": true}})).unwrap(),
        )
        .await
        .expect_ok();
    let settings = updated.ssh.unwrap();
    assert!(settings.certificate_authority);
    assert_eq!(settings.username, "deploy");
    assert_eq!(settings.host_key.as_deref(), Some(HOST_KEY));
    assert!(!updated.has_credentials);
    let updated: AdminResource = t
        .client
        .request(
            "PATCH",
            &path,
            Some(&admin),
            Some("application/json"),
            serde_json::to_vec(&json!({"clear_ssh_host_key": true})).unwrap(),
        )
        .await
        .expect_ok();
    assert_eq!(updated.ssh.unwrap().host_key, None);
    // Passwords and ssh settings stay on their own kinds.
    t.client
        .request(
            "PATCH",
            &path,
            Some(&admin),
            Some("application/json"),
            serde_json::to_vec(&json!({"credentials": {"username": "u", "password": "p"}}))
                .unwrap(),
        )
        .await
        .expect_error(400, "invalid_argument");

    let ca: SshCertificateAuthority = t
        .client
        .get(routes::ADMIN_SSH_CA, Some(&admin))
        .await
        .expect_ok();
    assert!(
        ca.public_key.starts_with("ssh-ed25519 AAAA"),
        "{}",
        ca.public_key
    );
    assert!(ca.public_key.ends_with(" sdm-ssh-ca"), "{}", ca.public_key);
    let key_file = std::fs::read_to_string(t.data_dir().join("ssh_ca.key")).unwrap();
    assert!(key_file.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
}

#[tokio::test]
async fn clients_learn_the_host_key_to_pin_and_gateways_record_the_servers_once() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let web: AdminResource = t
        .client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &ssh(
                "web",
                json!({"username": "deploy", "certificate_authority": true}),
            ),
        )
        .await
        .expect_ok();
    let _tcp: AdminResource = t
        .client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &json!({"name": "echo", "kind": "tcp", "hostname": "h", "port": 9}),
        )
        .await
        .expect_ok();
    let account: CreatedAccount = t
        .client
        .post(
            routes::ADMIN_ACCOUNTS,
            Some(&admin),
            &CreateAccount {
                name: "etl".into(),
                kind: AccountKind::Service,
            },
        )
        .await
        .expect_ok();
    for resource in ["web", "echo"] {
        let _: GrantInfo = t
            .client
            .post(
                "/v1/admin/accounts/etl/grants",
                Some(&admin),
                &CreateGrant {
                    resource: resource.into(),
                },
            )
            .await
            .expect_ok();
    }
    let listed: ResourceList = t
        .client
        .get(routes::RESOURCES, Some(&account.token))
        .await
        .expect_ok();
    let pinned: BTreeMap<&str, Option<&str>> = listed
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.ssh_host_key.as_deref()))
        .collect();
    let host_key = pinned["web"].unwrap();
    assert!(host_key.starts_with("ssh-ed25519 AAAA"), "{host_key}");
    assert_eq!(pinned["echo"], None);
    // Asked again, the same (the key is derived, not made at random per answer).
    let again: ResourceList = t
        .client
        .get(routes::RESOURCES, Some(&account.token))
        .await
        .expect_ok();
    assert_eq!(again, listed);

    // A standalone gateway records the host key the server presented on its first connection.
    let gateway: CreatedGateway = t
        .client
        .post(
            routes::ADMIN_GATEWAYS,
            Some(&admin),
            &CreateGateway {
                name: "gw".into(),
                tags: BTreeMap::new(),
            },
        )
        .await
        .expect_ok();
    let session: LoginResponse = t
        .client
        .post(
            routes::LOGIN,
            Some(&account.token),
            &LoginRequest::default(),
        )
        .await
        .expect_ok();
    let grant: LeaseGrant = t
        .client
        .post(
            routes::LEASES,
            Some(&account.token),
            &LeaseRequest {
                session_id: session.session_id,
                resource_id: web.id,
            },
        )
        .await
        .expect_ok();
    let record = |host_key: &str| RecordHostKey {
        lease: grant.lease.clone(),
        host_key: host_key.into(),
    };
    t.client
        .post(
            routes::GATEWAY_SSH_HOST_KEY,
            Some(&gateway.token),
            &record(&format!("{HOST_KEY} root@web")),
        )
        .await
        .expect_no_content();
    t.client
        .post(
            routes::GATEWAY_SSH_HOST_KEY,
            Some(&gateway.token),
            &record(HOST_KEY),
        )
        .await
        .expect_no_content();
    let message = t
        .client
        .post(
            routes::GATEWAY_SSH_HOST_KEY,
            Some(&gateway.token),
            &record(host_key),
        )
        .await
        .expect_error(409, "upstream_refused");
    assert!(
        message.contains("host key of ssh resource web changed"),
        "{message}"
    );
    let stored: AdminResource = t
        .client
        .get(&format!("{}/web", routes::ADMIN_RESOURCES), Some(&admin))
        .await
        .expect_ok();
    assert_eq!(stored.ssh.unwrap().host_key.as_deref(), Some(HOST_KEY));
    // Only gateways, and only with a lease this control plane signed.
    t.client
        .post(
            routes::GATEWAY_SSH_HOST_KEY,
            Some(&admin),
            &record(HOST_KEY),
        )
        .await
        .expect_error(403, "forbidden");
    let forged = RecordHostKey {
        lease: "A".repeat(200),
        host_key: HOST_KEY.into(),
    };
    t.client
        .post(routes::GATEWAY_SSH_HOST_KEY, Some(&gateway.token), &forged)
        .await
        .expect_error(403, "unauthenticated");
}
