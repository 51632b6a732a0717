//! ssh resources in the web console, end to end over HTTPS against a server started in-process:
//! added through the resource form with sdm's SSH CA and with a stored private key (made by
//! `ssh-keygen` for the test), their page saying how the gateway logs in, and the private key
//! never on any page, a refused form included.

mod common;

use std::process::Command;

use common::TestServer;
use common::console::{Browser, Page};
use sdm_proto::api::{AdminResource, SshCertificateAuthority, routes};
use sdm_testkit::sshd::keygen;

async fn resource(t: &TestServer, name: &str) -> AdminResource {
    t.client
        .get(&format!("/v1/admin/resources/{name}"), Some(&t.admin()))
        .await
        .expect_ok()
}

/// The add form as a browser without its script posts it: every kind's fields.
fn ssh_form<'a>(
    kind: &'a str,
    name: &'a str,
    login: &'a str,
    key: &'a str,
    host_key: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("kind", kind),
        ("name", name),
        ("hostname", "10.0.0.5"),
        ("port", ""),
        ("port_override", ""),
        ("tags", ""),
        ("pin", ""),
        ("username", ""),
        ("database", ""),
        ("password", ""),
        ("tls_mode", "disable"),
        ("ca_pem", ""),
        ("ssh_username", "deploy"),
        ("ssh_login", login),
        ("ssh_private_key", key),
        ("ssh_host_key", host_key),
    ]
}

/// The base64 lines of an OpenSSH private key, each of which must never be shown.
fn key_body(private: &str) -> Vec<String> {
    let lines: Vec<String> = private
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_owned)
        .collect();
    assert!(!lines.is_empty(), "no key body in {private}");
    lines
}

/// A key encrypted with a passphrase, made by `ssh-keygen -N secret`.
fn encrypted_key() -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    let status = Command::new("ssh-keygen")
        .args([
            "-q", "-t", "ed25519", "-N", "secret", "-C", "sdm-test", "-f",
        ])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    std::fs::read_to_string(&path).unwrap()
}

#[track_caller]
fn assert_no_key(pages: &[(&str, &Page)], secrets: &[String]) {
    for (what, page) in pages {
        for line in secrets {
            assert!(
                !page.body.contains(line.as_str()),
                "{what} shows the private key"
            );
        }
    }
}

#[tokio::test]
async fn an_ssh_resource_is_added_with_sdms_ca_and_its_page_gives_the_trusted_ca_line() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let new = browser.get("/console/new/resource").await.ok();
    // Every ssh control is labelled.
    for id in ["ssh_username", "ssh_private_key", "ssh_host_key"] {
        assert!(new.body.contains(&format!("<label for=\"{id}\">")), "{id}");
    }
    assert!(new.body.contains("<legend>Log in with</legend>"));

    browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &ssh_form("ssh", "web", "certificate_authority", "", ""),
        )
        .await
        .redirects_to("/console/resources/web");
    let stored = resource(&t, "web").await;
    let ssh = stored.ssh.unwrap();
    assert!(ssh.certificate_authority);
    assert_eq!((ssh.username.as_str(), ssh.host_key), ("deploy", None));

    let page = browser.get("/console/resources/web").await.ok();
    assert!(
        page.body
            .contains("sdm's SSH certificate authority (a certificate for each connection)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("recorded on the first connection"));
    assert!(page.body.contains("<dd>deploy</dd>"));
    let ca: SshCertificateAuthority = t
        .client
        .get(routes::ADMIN_SSH_CA, Some(&t.admin()))
        .await
        .expect_ok();
    assert!(page.body.contains("TrustedUserCAKeys"));
    assert!(
        page.body.contains(&format!(
            "<code id=\"trusted-ca-line\">{}</code>",
            ca.public_key
        )),
        "{}",
        page.body
    );
    // The edit form shows the choice stored.
    assert!(page.control("ssh_login-ca").contains("checked"));
    assert!(page.body.contains("<dd>not recorded</dd>"));
    assert!(!page.control("ssh_record_sessions").contains("checked"));

    // Ticking "Record terminal sessions" is an edit of its own, and the page says so.
    browser
        .post_from(
            "/console/resources/web",
            "/console/resources/web",
            &[
                ("hostname", "10.0.0.5"),
                ("port", "22"),
                ("port_override", ""),
                ("tags", ""),
                ("pin", ""),
                ("ssh_username", "deploy"),
                ("ssh_login", "certificate_authority"),
                ("ssh_private_key", ""),
                ("ssh_host_key", ""),
                ("ssh_record_sessions", "on"),
            ],
        )
        .await
        .redirects_to("/console/resources/web");
    let ssh = resource(&t, "web").await.ssh.unwrap();
    assert_eq!(ssh.record_sessions, Some(true));
    assert!(ssh.certificate_authority);
    let page = browser.get("/console/resources/web").await.ok();
    assert!(
        page.body
            .contains("recorded (<code>sdm admin audit replay ID</code>)")
    );
    assert!(page.control("ssh_record_sessions").contains("checked"));
}

#[tokio::test]
async fn an_ssh_resource_with_a_stored_key_never_shows_it() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let login = keygen("ed25519").unwrap();
    let server = keygen("ed25519").unwrap();
    let secrets = key_body(&login.private);

    // A refused form (a host key that is none) keeps what was typed, but the key.
    let refused = browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &ssh_form(
                "ssh",
                "box",
                "private_key",
                &login.private,
                "ssh-ed25519 nope",
            ),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused
            .error_beside("ssh_host_key")
            .contains("ssh.host_key")
    );
    assert!(refused.control("ssh_login-key").contains("checked"));

    let host_key = server.public.clone();
    browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &ssh_form("ssh", "box", "private_key", &login.private, &host_key),
        )
        .await
        .redirects_to("/console/resources/box");
    let stored = resource(&t, "box").await;
    assert!(stored.has_credentials);
    let ssh = stored.ssh.clone().unwrap();
    assert!(!ssh.certificate_authority);
    assert!(
        ssh.host_key
            .as_deref()
            .is_some_and(|k| host_key.starts_with(k))
    );

    let page = browser.get("/console/resources/box").await.ok();
    assert!(page.body.contains("a stored private key (never shown)"));
    assert!(!page.body.contains("TrustedUserCAKeys"));
    assert!(page.body.contains(ssh.host_key.as_deref().unwrap()));
    assert!(page.control("ssh_login-key").contains("checked"));
    assert!(page.body.contains("Empty keeps the stored key"));

    // An edit that leaves the key empty and forgets the host key keeps the key.
    let edited = browser
        .post_from(
            "/console/resources/box",
            "/console/resources/box",
            &[
                ("hostname", "10.0.0.5"),
                ("port", "22"),
                ("port_override", ""),
                ("tags", ""),
                ("pin", ""),
                ("ssh_username", "deploy"),
                ("ssh_login", "private_key"),
                ("ssh_private_key", ""),
                ("ssh_host_key", ""),
                ("clear_ssh_host_key", "on"),
            ],
        )
        .await;
    edited.redirects_to("/console/resources/box");
    let after = resource(&t, "box").await;
    assert!(after.has_credentials);
    let after_ssh = after.ssh.unwrap();
    assert!(!after_ssh.certificate_authority);
    assert_eq!(after_ssh.host_key, None);
    let forgotten = browser.get("/console/resources/box").await.ok();
    assert!(forgotten.body.contains("recorded on the first connection"));

    let list = browser.get("/console/resources").await.ok();
    assert_no_key(
        &[
            ("the refused form", &refused),
            ("the resource page", &page),
            ("the page after the edit", &forgotten),
            ("the resource list", &list),
        ],
        &secrets,
    );
}

#[tokio::test]
async fn a_key_the_api_refuses_is_shown_beside_the_private_key_field() {
    let t = TestServer::start().await;
    let mut browser = Browser::signed_in(&t.client, &t.admin()).await;
    let encrypted = encrypted_key();
    let refused = browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &ssh_form("ssh", "box", "private_key", &encrypted, ""),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let message = refused.error_beside("ssh_private_key");
    assert!(message.contains("passphrase"), "{message}");
    // Only the key is blamed.
    assert!(!refused.body.contains("id=\"ssh_username-error\""));

    // A key given for a tcp resource: the API's refusal, beside the key too.
    let login = keygen("ed25519").unwrap();
    let tcp = browser
        .post_from(
            "/console/new/resource",
            "/console/resources",
            &[
                ("kind", "tcp"),
                ("name", "svc"),
                ("hostname", "10.0.0.9"),
                ("port", "7000"),
                ("ssh_login", "private_key"),
                ("ssh_private_key", &login.private),
            ],
        )
        .await;
    assert_eq!(tcp.status, 400, "{}", tcp.body);
    assert!(tcp.error_beside("ssh_private_key").contains("kind ssh"));
    assert_no_key(
        &[
            ("the refused encrypted key", &refused),
            ("the refused tcp form", &tcp),
        ],
        &key_body(&encrypted)
            .into_iter()
            .chain(key_body(&login.private))
            .collect::<Vec<_>>(),
    );
    // Nothing was added.
    let list = browser.get("/console/resources").await.ok();
    assert!(!list.body.contains("/console/resources/box"));
    assert!(!list.body.contains("/console/resources/svc"));
}
