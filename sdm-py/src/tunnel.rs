//! `RawTunnel`: an open core tunnel. `sdm.Tunnel` wraps it.

use std::sync::Arc;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use sdm_core::Tunnel;

use crate::bridge::into_awaitable;
use crate::errors::to_py;
use crate::owned::ProcessLocal;
use crate::values::{self, ResourceTuple};
use crate::wait::{block_on, quick};

/// An open tunnel of the core library. Private: use `sdm.Tunnel`.
///
/// In a process forked after it opened, the tunnel is the parent's: its address can be read, but
/// it reports itself closed and `close()` leaves the parent's tunnel alone.
#[pyclass(frozen, module = "sdm._native")]
pub(crate) struct RawTunnel {
    inner: ProcessLocal<Arc<Tunnel>>,
    resource: ResourceTuple,
    host: Option<String>,
    port: Option<u16>,
    unix_socket: Option<String>,
}

impl RawTunnel {
    pub(crate) fn new(tunnel: Tunnel) -> RawTunnel {
        RawTunnel {
            resource: values::resource(tunnel.resource()),
            host: tunnel.host(),
            port: tunnel.port(),
            unix_socket: tunnel
                .local_addr()
                .unix_path()
                .map(|p| p.to_string_lossy().into_owned()),
            inner: ProcessLocal::new(Arc::new(tunnel)),
        }
    }
}

fn none_to_py(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

#[pymethods]
impl RawTunnel {
    /// `(id, name, kind, tags, port, healthy, ssh host key)` of the resource.
    #[getter]
    fn resource(&self) -> ResourceTuple {
        self.resource.clone()
    }

    /// The local IP address as text, e.g. `"127.0.0.1"`; `None` for a Unix socket.
    #[getter]
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The local TCP port; `None` for a Unix socket.
    #[getter]
    fn port(&self) -> Option<u16> {
        self.port
    }

    /// The Unix socket's path; `None` for a TCP tunnel.
    #[getter]
    fn unix_socket(&self) -> Option<&str> {
        self.unix_socket.as_deref()
    }

    /// Whether the tunnel accepts connections (always false in a forked child).
    #[getter]
    fn is_open(&self, py: Python<'_>) -> bool {
        match self.inner.get() {
            Some(t) => quick(py, || t.is_open()),
            None => false,
        }
    }

    /// Local connections being carried now.
    #[getter]
    fn active_connections(&self, py: Python<'_>) -> usize {
        match self.inner.get() {
            Some(t) => quick(py, || t.active_connections()),
            None => 0,
        }
    }

    /// Why the tunnel closed when something other than its owner closed it, as an `sdm.Error`.
    #[getter]
    fn close_reason(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(t) = self.inner.get() else {
            return Ok(None);
        };
        match quick(py, || t.close_reason()) {
            Some(e) => to_py(py, &e).into_value(py).into_py_any(py).map(Some),
            None => Ok(None),
        }
    }

    /// Closes the tunnel and waits until its local port is released.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(t) = self.inner.get().cloned() else {
            return Ok(());
        };
        block_on(py, async move {
            t.close();
            t.closed().await;
            Ok(())
        })
    }

    /// Closes the tunnel and returns at once (the port is released shortly after, on the
    /// runtime): what a garbage-collected `sdm.Tunnel` does.
    fn close_nowait(&self, py: Python<'_>) {
        if let Some(t) = self.inner.get() {
            quick(py, || t.close());
        }
    }

    /// Closes the tunnel; an awaitable that resolves once the local port is released.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let t = self.inner.get().cloned();
        into_awaitable(
            py,
            async move {
                if let Some(t) = t {
                    t.close();
                    t.closed().await;
                }
                Ok(())
            },
            none_to_py,
        )
    }

    /// The process that opened the tunnel.
    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let address = match (&self.host, self.port, &self.unix_socket) {
            (Some(host), Some(port), _) => format!("{host}:{port}"),
            (_, _, Some(path)) => path.clone(),
            _ => "?".to_owned(),
        };
        format!(
            "<sdm._native.RawTunnel resource={:?} address={} {}>",
            self.resource.1,
            address,
            if self.is_open(py) { "open" } else { "closed" }
        )
    }
}
