#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use sdm_core::ResourceKind;
use sdm_core::admin::{AdminClient, Credentials, NewResource};
use sdm_server::{RunningServer, Server, ServerError};

/// The database (or TCP service) an [`Installation`] gives access to: your test database.
#[derive(Clone)]
#[non_exhaustive]
pub enum Upstream {
    /// A PostgreSQL database; the gateway logs in with `user` and `password`, jobs name
    /// `database` and need no password.
    Postgres {
        /// Host name or IP address the gateway connects to.
        host: String,
        /// Its port.
        port: u16,
        /// The database jobs get when they name none.
        database: String,
        /// The user the gateway logs in as.
        user: String,
        /// Its password (stored encrypted by the server, never returned).
        password: String,
    },
    /// A TCP service, bytes passed through as they are.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Its port.
        port: u16,
    },
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Postgres {
                host,
                port,
                database,
                user,
                ..
            } => f
                .debug_struct("Postgres")
                .field("host", host)
                .field("port", port)
                .field("database", database)
                .field("user", user)
                .finish_non_exhaustive(),
            Upstream::Tcp { host, port } => f
                .debug_struct("Tcp")
                .field("host", host)
                .field("port", port)
                .finish(),
        }
    }
}

/// What went wrong starting or using an [`Installation`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The temporary directory could not be made.
    #[error("sdm-testing: cannot create a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// The server did not start.
    #[error("sdm-testing: sdm-server did not start")]
    Server(#[source] ServerError),
    /// The server did not create its first admin account (it always does in a new directory).
    #[error("sdm-testing: sdm-server gave no admin token")]
    NoAdminToken,
    /// An admin call (resource, account, grant) failed.
    #[error("sdm-testing: {what}")]
    Admin {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: sdm_core::Error,
    },
}

/// A running sdm installation with one resource, your upstream. Ends with
/// [`shutdown`](Installation::shutdown) (or, less tidily, when dropped).
pub struct Installation {
    server: RunningServer,
    admin: AdminClient,
    resource: String,
    accounts: AtomicU32,
    _dir: tempfile::TempDir,
}

impl Installation {
    /// Starts `sdm-server` in this process (loopback, free ports, a temporary data directory)
    /// and adds `upstream` as the resource `resource`.
    pub async fn start(resource: &str, upstream: Upstream) -> Result<Installation, Error> {
        let dir = tempfile::Builder::new()
            .prefix("sdm-testing-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::builder()
            .data_dir(dir.path().join("data"))
            .listen(loopback)
            .gateway_listen(loopback)
            .start()
            .await
            .map_err(Error::Server)?;
        let token = server.admin_token().ok_or(Error::NoAdminToken)?;
        let admin = AdminClient::new(token).map_err(admin_error("connect to the admin API"))?;
        admin
            .create_resource(&new_resource(resource, upstream))
            .await
            .map_err(admin_error(&format!("add the resource {resource:?}")))?;
        Ok(Installation {
            server,
            admin,
            resource: resource.to_owned(),
            accounts: AtomicU32::new(0),
            _dir: dir,
        })
    }

    /// Creates a service account (`test-1`, `test-2`, …) granted the resource; returns its
    /// token.
    pub async fn new_token(&self) -> Result<String, Error> {
        let (name, token) = self.new_account().await?;
        self.admin
            .grant(&name, &self.resource)
            .await
            .map_err(admin_error(&format!("grant {} to {name}", self.resource)))?;
        Ok(token)
    }

    /// Creates a service account granted nothing; returns its token.
    pub async fn new_token_without_grant(&self) -> Result<String, Error> {
        Ok(self.new_account().await?.1)
    }

    async fn new_account(&self) -> Result<(String, String), Error> {
        let name = format!("test-{}", self.accounts.fetch_add(1, Ordering::Relaxed) + 1);
        let created = self
            .admin
            .create_service_account(&name)
            .await
            .map_err(admin_error(&format!("create the service account {name}")))?;
        Ok((name, created.token))
    }

    /// The resource's name.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The control plane's URL (tokens carry it).
    pub fn api_url(&self) -> &str {
        self.server.api_url()
    }

    /// The admin API, for anything else a test sets up (suspensions, revocations, audit).
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// Stops the server and removes its directory.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn admin_error(what: &str) -> impl FnOnce(sdm_core::Error) -> Error + '_ {
    move |source| Error::Admin {
        what: format!("cannot {what}"),
        source,
    }
}

fn new_resource(name: &str, upstream: Upstream) -> NewResource {
    let (kind, hostname, port, credentials) = match upstream {
        Upstream::Postgres {
            host,
            port,
            database,
            user,
            password,
        } => (
            ResourceKind::Postgres,
            host,
            port,
            Some(Credentials {
                username: user,
                password,
                database: Some(database),
            }),
        ),
        Upstream::Tcp { host, port } => (ResourceKind::Tcp, host, port, None),
    };
    NewResource {
        name: name.into(),
        kind,
        hostname,
        port: Some(port),
        port_override: None,
        tags: Default::default(),
        credentials,
        upstream_tls: None,
        databases: Vec::new(),
        replication: false,
        ssh: None,
    }
}
