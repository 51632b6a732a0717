//! Bad input gets a clear error of the right kind.

use sdm_core::{ErrorKind, Session};
use sdm_proto::{Token, TokenKind};
use sdm_testkit::{EchoServer, free_port};

use crate::common::Fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_are_invalid_token() {
    for bad in [
        "",
        "hunter2",
        "sdm_svc_",
        "sdm_svc_AAAA",
        "Bearer sdm_svc_xyz",
    ] {
        let err = Session::login(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidToken, "{bad:?}: {err}");
        assert!(!err.retryable());
    }
    let fx = Fixture::start().await;
    let mut token = fx.service_account("etl").await;
    token.truncate(token.len() - 2);
    let err = Session::login(&token).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidToken);
    assert!(
        err.message().contains("truncated") || err.message().contains("malformed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_suspended_and_deleted_accounts_are_unauthenticated() {
    let fx = Fixture::start().await;
    let forged = Token::generate(
        TokenKind::Service,
        fx.server.api_url(),
        fx.server.ca_fingerprint(),
    )
    .unwrap();
    let err = Session::login(&forged.encode()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");

    let token = fx.service_account("etl").await;
    Session::login(&token).await.unwrap();
    fx.admin.suspend_account("etl").await.unwrap();
    assert_eq!(
        Session::login(&token).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
    fx.admin.unsuspend_account("etl").await.unwrap();
    Session::login(&token).await.unwrap();
    fx.admin.delete_account("etl").await.unwrap();
    let err = Session::login(&token).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(
        !err.message().contains(&token),
        "the token leaked into the message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_control_plane_is_api_unreachable_naming_the_url() {
    let fx = Fixture::start().await;
    let url = format!("https://127.0.0.1:{}", free_port());
    let token = Token::generate(TokenKind::Service, &url, fx.server.ca_fingerprint()).unwrap();
    let err = Session::login(&token.encode()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ApiUnreachable, "{err}");
    assert!(err.retryable());
    assert_eq!(
        err.message(),
        format!("unavailable: Unable to contact sdm API at {url}: connection refused")
    );

    // A server that stops: the same session's next call is unreachable too.
    let real = fx.service_account("etl").await;
    let session = Session::login(&real).await.unwrap();
    let api_url = fx.server.api_url().to_owned();
    fx.server.shutdown().await;
    let err = session.list_resources().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ApiUnreachable, "{err}");
    assert!(err.message().contains(&api_url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_ca_is_refused() {
    let fx = Fixture::start().await;
    let wrong_pin = Token::generate(TokenKind::Service, fx.server.api_url(), [9u8; 32]).unwrap();
    let err = Session::login(&wrong_pin.encode()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ApiUnreachable, "{err}");
    assert!(err.message().contains("CA this token trusts"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_and_ambiguous_names() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    for name in ["pg-analytics", "pg-billing", "secret-db"] {
        fx.tcp_resource(name, echo.port(), None).await;
    }
    let session = fx
        .session_with("etl", &["pg-analytics", "pg-billing"])
        .await;
    let names: Vec<String> = session
        .list_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["pg-analytics", "pg-billing"]);

    let err = session.connect("secret").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceNotFound, "{err}");
    let err = session.connect("secret-db").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceNotFound);

    let err = session.connect("pg-").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AmbiguousResource);
    assert_eq!(err.candidates(), ["pg-analytics", "pg-billing"]);
    assert!(err.message().contains("pg-analytics, pg-billing"), "{err}");
    // resolve() picks by the same rules without connecting.
    assert_eq!(session.resolve("billing").await.unwrap().name, "pg-billing");
    let err = session.resolve("pg-").await.unwrap_err();
    assert_eq!(err.candidates(), ["pg-analytics", "pg-billing"]);
    let err = session.resolve("secret").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceNotFound);

    // A grant removed after listing: connect no longer sees it.
    session.connect("billing").await.unwrap().close();
    fx.admin.revoke("etl", "pg-billing").await.unwrap();
    let err = session.connect("pg-billing").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceNotFound, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_upstream_refused() {
    let fx = Fixture::start().await;
    fx.tcp_resource("nothing-listens", free_port(), None).await;
    let session = fx.session_with("etl", &["nothing-listens"]).await;
    let err = session.dial("nothing").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UpstreamRefused, "{err}");
    assert!(err.message().contains("nothing-listens"), "{err}");
    assert!(err.retryable());
}
