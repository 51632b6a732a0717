//! The same API without async: every call blocks the calling thread while the process-wide
//! [`runtime`](crate::runtime) does the work. Tunnels keep running in that runtime's threads.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::runtime::{block_on, runtime};
use crate::{ConnectOptions, Resource, Status, Tunnel};

/// A blocking [`crate::Session`].
#[derive(Debug, Clone)]
pub struct Session {
    inner: crate::Session,
}

/// A blocking [`crate::SessionBuilder`].
#[derive(Debug, Clone, Default)]
pub struct SessionBuilder {
    inner: crate::SessionBuilder,
}

impl SessionBuilder {
    /// See [`crate::SessionBuilder::token`].
    pub fn token(self, token: impl Into<String>) -> Self {
        SessionBuilder {
            inner: self.inner.token(token),
        }
    }

    /// See [`crate::SessionBuilder::api_url`].
    pub fn api_url(self, url: impl Into<String>) -> Self {
        SessionBuilder {
            inner: self.inner.api_url(url),
        }
    }

    /// See [`crate::SessionBuilder::labels`].
    pub fn labels<K: Into<String>, V: Into<String>>(
        self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        SessionBuilder {
            inner: self.inner.labels(labels),
        }
    }

    /// See [`crate::SessionBuilder::timeout`].
    pub fn timeout(self, timeout: Duration) -> Self {
        SessionBuilder {
            inner: self.inner.timeout(timeout),
        }
    }

    /// See [`crate::SessionBuilder::warm_connections`].
    pub fn warm_connections(self, n: usize) -> Self {
        SessionBuilder {
            inner: self.inner.warm_connections(n),
        }
    }

    /// Logs in.
    pub fn login(self) -> Result<Session> {
        Ok(Session {
            inner: block_on(self.inner.login())??,
        })
    }
}

impl Session {
    /// See [`crate::Session::login`].
    pub fn login(token: &str) -> Result<Session> {
        Session::builder().token(token).login()
    }

    /// See [`crate::Session::from_env`].
    pub fn from_env() -> Result<Session> {
        Session::builder().login()
    }

    /// See [`crate::Session::builder`].
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// The async session behind this one.
    pub fn as_async(&self) -> &crate::Session {
        &self.inner
    }

    /// See [`crate::Session::account`].
    pub fn account(&self) -> &crate::Account {
        self.inner.account()
    }

    /// See [`crate::Session::list_resources`].
    pub fn list_resources(&self) -> Result<Vec<Resource>> {
        block_on(self.inner.list_resources())?
    }

    /// See [`crate::Session::connect`].
    pub fn connect(&self, name: &str) -> Result<Tunnel> {
        block_on(self.inner.connect(name))?
    }

    /// See [`crate::Session::connect_with`].
    pub fn connect_with(&self, name: &str, options: ConnectOptions) -> Result<Tunnel> {
        block_on(self.inner.connect_with(name, options))?
    }

    /// A connected socket to the resource `name`, carried in-process (no TCP listener): one end
    /// of a Unix socket pair whose other end is spliced to the gateway. Usable wherever a
    /// connected socket or file descriptor is (`read`/`write`/`poll`).
    pub fn dial(&self, name: &str) -> Result<UnixStream> {
        let mut remote = block_on(self.inner.dial(name))??;
        let (mine, theirs) = UnixStream::pair()
            .map_err(|e| Error::internal(format!("socketpair failed: {e}")).with_source(e))?;
        theirs
            .set_nonblocking(true)
            .map_err(|e| Error::internal(format!("socketpair setup failed: {e}")).with_source(e))?;
        let rt = runtime()?;
        let _guard = rt.enter();
        let mut theirs = tokio::net::UnixStream::from_std(theirs)
            .map_err(|e| Error::internal(format!("socketpair setup failed: {e}")).with_source(e))?;
        rt.spawn(async move {
            let _ = sdm_relay::relay(&mut theirs, &mut remote).await;
        });
        Ok(mine)
    }

    /// See [`crate::Session::status`].
    pub fn status(&self) -> Result<Status> {
        block_on(self.inner.status())?
    }

    /// See [`crate::Session::disconnect`].
    pub fn disconnect(&self, name: &str) -> Result<()> {
        block_on(self.inner.disconnect(name))?
    }

    /// See [`crate::Session::disconnect_all`].
    pub fn disconnect_all(&self) -> Result<()> {
        block_on(self.inner.disconnect_all())
    }

    /// See [`crate::Session::logout`].
    pub fn logout(&self) -> Result<()> {
        block_on(self.inner.logout())?
    }
}

/// Closes `tunnel` and blocks until its local port is released.
pub fn close_tunnel(tunnel: &Tunnel) -> Result<()> {
    tunnel.close();
    block_on(tunnel.closed())
}
