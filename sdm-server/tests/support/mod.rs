//! An installation for end-to-end tests through the real client library: a server on
//! 127.0.0.1:0 in a temporary data dir, with an admin client.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use sdm_core::Session;
use sdm_core::admin::{AdminClient, NewResource, ResourceDetails};
use sdm_server::{RunningServer, Server, ServerBuilder};

pub struct Installation {
    pub server: RunningServer,
    pub admin: AdminClient,
    pub dir: tempfile::TempDir,
}

impl Installation {
    pub async fn start() -> Installation {
        Installation::start_with(|b| b).await
    }

    pub async fn start_with(
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> Installation {
        let dir = tempfile::tempdir().unwrap();
        let builder = Server::builder()
            .data_dir(dir.path().join("data"))
            .listen("127.0.0.1:0".parse().unwrap())
            .gateway_listen("127.0.0.1:0".parse().unwrap());
        let server = configure(builder).start().await.unwrap();
        let admin = AdminClient::new(server.admin_token().unwrap()).unwrap();
        Installation { server, admin, dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn resource(&self, resource: NewResource) -> ResourceDetails {
        self.admin.create_resource(&resource).await.unwrap()
    }

    /// A service account granted `resources`, logged in.
    pub async fn session(&self, account: &str, resources: &[&str]) -> Session {
        let token = self
            .admin
            .create_service_account(account)
            .await
            .unwrap()
            .token;
        for r in resources {
            self.admin.grant(account, r).await.unwrap();
        }
        Session::login(&token).await.unwrap()
    }
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
