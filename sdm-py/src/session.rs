//! `RawSession`: a logged-in core session, with a blocking and an async variant of each call.
//! `sdm.Session` and `sdm.AsyncSession` wrap it (and log in again after a fork).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

use sdm_core::{ConnectOptions, Error, ErrorKind, Session, SessionBuilder};

use crate::bridge::into_awaitable;
use crate::errors::{guard, invalid_argument, to_py};
use crate::owned::ProcessLocal;
use crate::tunnel::RawTunnel;
use crate::values::{self, ResourceTuple, StatusTuple};
use crate::wait::block_on;

/// Copy buffer per direction between a dialled socket pair and the gateway connection.
const COPY_BUFFER: usize = 64 * 1024;

/// A logged-in session of the core library. Private: use `sdm.Session` / `sdm.AsyncSession`.
#[pyclass(frozen, module = "sdm._native")]
pub(crate) struct RawSession {
    inner: ProcessLocal<Session>,
    account: String,
    account_kind: &'static str,
    id: String,
    api_url: String,
}

impl RawSession {
    fn new(session: Session) -> RawSession {
        let account = session.account();
        RawSession {
            account: account.name.clone(),
            account_kind: account.kind.as_str(),
            id: session.id().to_string(),
            api_url: session.api_url().to_owned(),
            inner: ProcessLocal::new(session),
        }
    }

    /// The core session (a cheap clone), unless this object was inherited through a fork.
    fn session(&self, py: Python<'_>) -> PyResult<Session> {
        self.inner.get().cloned().ok_or_else(|| {
            to_py(
                py,
                &Error::new(
                    ErrorKind::Closed,
                    format!(
                        "this session was opened by process {}; a forked process must log in \
                         again (sdm.Session and sdm.AsyncSession do so by themselves)",
                        self.inner.pid()
                    ),
                ),
            )
        })
    }
}

fn builder(
    py: Python<'_>,
    token: Option<String>,
    api_url: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    timeout: Option<f64>,
    warm_connections: Option<usize>,
) -> PyResult<SessionBuilder> {
    let mut b = Session::builder();
    if let Some(token) = token {
        b = b.token(token);
    }
    if let Some(url) = api_url {
        b = b.api_url(url);
    }
    if let Some(labels) = labels {
        b = b.labels(labels);
    }
    if let Some(secs) = timeout {
        let limit = Duration::try_from_secs_f64(secs).map_err(|_| {
            invalid_argument(
                py,
                format!("timeout must be a positive number of seconds, not {secs}"),
            )
        })?;
        b = b.timeout(limit);
    }
    if let Some(n) = warm_connections {
        b = b.warm_connections(n);
    }
    Ok(b)
}

/// The core's options from what `sdm.Session.connect` checked: a port, a socket path (or a
/// private socket sdm places), and whether other OS users are refused.
fn connect_options(
    port: Option<u16>,
    unix_socket: Option<PathBuf>,
    private_unix_socket: bool,
    same_user_only: bool,
) -> ConnectOptions {
    let mut options = ConnectOptions::default();
    options.port = port;
    options.unix_socket = unix_socket;
    options.private_unix_socket = private_unix_socket;
    options.same_user_only = same_user_only;
    options
}

/// Dials `name` and returns one end of a Unix socket pair whose other end is spliced to the
/// gateway connection (drivers get a real, blocking file descriptor).
async fn dial(session: Session, name: String) -> sdm_core::Result<UnixStream> {
    let mut remote = session.dial(&name).await?;
    let setup = |e: std::io::Error| {
        Error::new(
            ErrorKind::Internal,
            format!("could not set up the socket pair for {name:?}: {e}"),
        )
        .with_source(e)
    };
    let (mine, theirs) = UnixStream::pair().map_err(setup)?;
    theirs.set_nonblocking(true).map_err(setup)?;
    let mut theirs = tokio::net::UnixStream::from_std(theirs).map_err(setup)?;
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional_with_sizes(
            &mut theirs,
            &mut remote,
            COPY_BUFFER,
            COPY_BUFFER,
        )
        .await;
    });
    Ok(mine)
}

/// A `socket.socket` that takes ownership of `stream`'s file descriptor.
fn into_socket(py: Python<'_>, stream: UnixStream) -> PyResult<Py<PyAny>> {
    let fd = OwnedFd::from(stream);
    let kwargs = PyDict::new(py);
    kwargs.set_item("fileno", fd.as_raw_fd())?;
    let socket = py
        .import("socket")?
        .getattr("socket")?
        .call((), Some(&kwargs))?;
    // The Python socket owns the descriptor now (on failure above, `fd` closes it).
    std::mem::forget(fd);
    Ok(socket.unbind())
}

fn resources_to_py(py: Python<'_>, list: Vec<sdm_core::Resource>) -> PyResult<Py<PyAny>> {
    list.iter()
        .map(values::resource)
        .collect::<Vec<_>>()
        .into_py_any(py)
}

fn status_to_py(py: Python<'_>, status: sdm_core::Status) -> PyResult<Py<PyAny>> {
    values::status(&status).into_py_any(py)
}

fn session_to_py(py: Python<'_>, session: Session) -> PyResult<Py<PyAny>> {
    RawSession::new(session).into_py_any(py)
}

fn tunnel_to_py(py: Python<'_>, tunnel: sdm_core::Tunnel) -> PyResult<Py<PyAny>> {
    RawTunnel::new(tunnel).into_py_any(py)
}

fn none_to_py(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

#[pymethods]
impl RawSession {
    /// Logs in (blocking). `token` None: `SDM_ADMIN_TOKEN`, then `SDM_SERVICE_TOKEN`.
    #[staticmethod]
    #[pyo3(signature = (token, api_url, labels, timeout, warm_connections))]
    fn login(
        py: Python<'_>,
        token: Option<String>,
        api_url: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        warm_connections: Option<usize>,
    ) -> PyResult<RawSession> {
        let b = builder(py, token, api_url, labels, timeout, warm_connections)?;
        block_on(py, b.login()).map(RawSession::new)
    }

    /// Logs in; an awaitable of `RawSession`.
    #[staticmethod]
    #[pyo3(signature = (token, api_url, labels, timeout, warm_connections))]
    fn login_async<'py>(
        py: Python<'py>,
        token: Option<String>,
        api_url: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        warm_connections: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = builder(py, token, api_url, labels, timeout, warm_connections)?;
        into_awaitable(py, b.login(), session_to_py)
    }

    /// The account's name.
    #[getter]
    fn account(&self) -> &str {
        &self.account
    }

    /// `"service"` or `"admin"`.
    #[getter]
    fn account_kind(&self) -> &'static str {
        self.account_kind
    }

    /// The session id (audit records carry it).
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// The control plane URL in use.
    #[getter]
    fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The process that logged in.
    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    fn list_resources(&self, py: Python<'_>) -> PyResult<Vec<ResourceTuple>> {
        let s = self.session(py)?;
        let list = block_on(py, async move { s.list_resources().await })?;
        Ok(list.iter().map(values::resource).collect())
    }

    fn list_resources_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.session(py)?;
        into_awaitable(py, async move { s.list_resources().await }, resources_to_py)
    }

    #[pyo3(signature = (name, port=None, unix_socket=None, private_unix_socket=false, same_user_only=false))]
    fn connect(
        &self,
        py: Python<'_>,
        name: String,
        port: Option<u16>,
        unix_socket: Option<PathBuf>,
        private_unix_socket: bool,
        same_user_only: bool,
    ) -> PyResult<RawTunnel> {
        let s = self.session(py)?;
        let options = connect_options(port, unix_socket, private_unix_socket, same_user_only);
        block_on(py, async move { s.connect_with(&name, options).await }).map(RawTunnel::new)
    }

    #[pyo3(signature = (name, port=None, unix_socket=None, private_unix_socket=false, same_user_only=false))]
    fn connect_async<'py>(
        &self,
        py: Python<'py>,
        name: String,
        port: Option<u16>,
        unix_socket: Option<PathBuf>,
        private_unix_socket: bool,
        same_user_only: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.session(py)?;
        let options = connect_options(port, unix_socket, private_unix_socket, same_user_only);
        into_awaitable(
            py,
            async move { s.connect_with(&name, options).await },
            tunnel_to_py,
        )
    }

    /// A connected `socket.socket` (AF_UNIX, blocking) carried in-process to the resource.
    fn dial(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
        let s = self.session(py)?;
        let stream = block_on(py, dial(s, name))?;
        guard(py, || into_socket(py, stream))
    }

    fn dial_async<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let s = self.session(py)?;
        into_awaitable(py, dial(s, name), into_socket)
    }

    fn status(&self, py: Python<'_>) -> PyResult<StatusTuple> {
        let s = self.session(py)?;
        let status = block_on(py, async move { s.status().await })?;
        Ok(values::status(&status))
    }

    fn status_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.session(py)?;
        into_awaitable(py, async move { s.status().await }, status_to_py)
    }

    fn disconnect(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let s = self.session(py)?;
        block_on(py, async move { s.disconnect(&name).await })
    }

    fn disconnect_async<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let s = self.session(py)?;
        into_awaitable(py, async move { s.disconnect(&name).await }, none_to_py)
    }

    fn disconnect_all(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.session(py)?;
        block_on(py, async move {
            s.disconnect_all().await;
            Ok(())
        })
    }

    fn disconnect_all_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.session(py)?;
        into_awaitable(
            py,
            async move {
                s.disconnect_all().await;
                Ok(())
            },
            none_to_py,
        )
    }

    fn logout(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.session(py)?;
        block_on(py, async move { s.logout().await })
    }

    fn logout_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.session(py)?;
        into_awaitable(py, async move { s.logout().await }, none_to_py)
    }

    fn __repr__(&self) -> String {
        format!(
            "<sdm._native.RawSession account={:?} id={} api_url={:?}>",
            self.account, self.id, self.api_url
        )
    }
}

/// The token in `SDM_ADMIN_TOKEN`, else `SDM_SERVICE_TOKEN` (the variables the core reads),
/// so that `sdm.Session` can keep it for logging in again after a fork.
#[pyfunction]
pub(crate) fn token_from_env() -> Option<String> {
    sdm_core::TOKEN_ENV_VARS
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}
