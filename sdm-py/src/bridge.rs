//! Async calls: a core future runs on the sdm runtime and resolves an asyncio future created on
//! the caller's running loop, from whichever loop and thread the call was made.
//!
//! The runtime's threads never call into Python: the finished result is queued for sdm's
//! delivery thread ([`crate::delivery`]), which converts it and hands it to the loop with
//! `loop.call_soon_threadsafe`. Cancelling the asyncio future (a task cancelled,
//! `asyncio.wait_for` timing out) aborts the core future.

use std::future::Future;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::task::{AbortHandle, JoinError};

use crate::delivery;
use crate::errors::{guard, to_py};
use crate::wait::{enter, join_error};

/// Turns the value of a finished core future into a Python object (with the GIL held).
pub(crate) type Convert<T> = fn(Python<'_>, T) -> PyResult<Py<PyAny>>;

/// Starts `future` and returns an awaitable (an asyncio future of the running loop) that
/// resolves to `convert(value)` or raises the matching `sdm.Error`.
///
/// Raises `RuntimeError` when no event loop runs in this thread.
pub(crate) fn into_awaitable<'py, T, F>(
    py: Python<'py>,
    future: F,
    convert: Convert<T>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = sdm_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    guard(py, || {
        enter(py);
        let asyncio = py.import("asyncio")?;
        let event_loop = asyncio.call_method0("get_running_loop")?;
        let awaitable = event_loop.call_method0("create_future")?;
        let rt = sdm_core::runtime::runtime().map_err(|e| to_py(py, &e))?;
        let task = rt.spawn(future);
        awaitable.call_method1(
            "add_done_callback",
            (Canceller {
                abort: task.abort_handle(),
            },),
        )?;
        let target = Target {
            event_loop: event_loop.unbind(),
            future: awaitable.clone().unbind(),
        };
        rt.spawn(async move {
            let outcome = task.await;
            delivery::push(Box::new(move |py: Python<'_>| {
                target.deliver(py, outcome, convert)
            }));
        });
        Ok(awaitable)
    })
}

/// Where a result goes.
struct Target {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
}

impl Target {
    fn deliver<T>(
        self,
        py: Python<'_>,
        outcome: Result<sdm_core::Result<T>, JoinError>,
        convert: Convert<T>,
    ) {
        let result = match outcome {
            Ok(Ok(value)) => guard(py, || convert(py, value)),
            Ok(Err(e)) => Err(to_py(py, &e)),
            // Aborted because the asyncio future was cancelled: it is already done.
            Err(e) if e.is_cancelled() => return,
            Err(e) => Err(join_error(py, e)),
        };
        let (ok, value) = match result {
            Ok(value) => (true, value),
            Err(err) => (false, err.into_value(py).into_any()),
        };
        static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let scheduled = RESOLVE
            .import(py, "sdm._native", "_resolve")
            .and_then(|resolve| {
                self.event_loop.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (resolve, self.future.clone_ref(py), ok, value),
                )
            });
        if let Err(e) = scheduled {
            // The loop was closed before the call finished; nobody can await it now.
            tracing::debug!(error = %e, "dropping the result of an sdm call: its event loop is closed");
        }
    }
}

/// Sets the result (or exception) of `future` unless it is already done (cancelled). Runs on
/// the future's loop, scheduled with `call_soon_threadsafe`.
#[pyfunction]
pub(crate) fn _resolve(
    future: &Bound<'_, PyAny>,
    ok: bool,
    value: Bound<'_, PyAny>,
) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?;
    } else {
        future.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

/// Done-callback of an asyncio future: aborts the core future when the asyncio one was
/// cancelled.
#[pyclass(frozen, module = "sdm._native")]
pub(crate) struct Canceller {
    abort: AbortHandle,
}

#[pymethods]
impl Canceller {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.abort.abort();
        }
        Ok(())
    }
}
