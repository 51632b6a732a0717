//! Blocking calls: run a core future on the process-wide runtime while this thread waits with
//! the GIL released.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::task::JoinError;

use crate::errors::{guard, internal, invalid_argument, panic_message, to_py};
use crate::logging;

/// How often a waiting thread looks for signals (Ctrl-C) to handle.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Runs `future` on the sdm runtime and waits for it with the GIL released; the only way this
/// crate blocks. Python signal handlers run every [`SIGNAL_POLL`] while it waits, so Ctrl-C
/// raises `KeyboardInterrupt` promptly (and cancels the work).
pub(crate) fn block_on<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = sdm_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    guard(py, || {
        logging::refresh(py);
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(invalid_argument(
                py,
                "a blocking sdm call was made from a thread of the sdm runtime (for example from \
                 a logging handler); call it from your own thread",
            ));
        }
        let rt = sdm_core::runtime::runtime().map_err(|e| to_py(py, &e))?;
        let mut task = rt.spawn(future);
        loop {
            let polled = py.detach(|| {
                rt.block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut task).await })
            });
            match polled {
                Ok(Ok(Ok(value))) => return Ok(value),
                Ok(Ok(Err(e))) => return Err(to_py(py, &e)),
                Ok(Err(e)) => return Err(join_error(py, e)),
                Err(_elapsed) => {
                    if let Err(interrupt) = py.check_signals() {
                        task.abort();
                        return Err(interrupt);
                    }
                }
            }
        }
    })
}

/// Runs a short, non-waiting core call (one that takes locks shared with the runtime's threads)
/// with the GIL released, so that a runtime thread logging to Python can never deadlock with it.
pub(crate) fn quick<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(f)
}

/// A task that panicked or was cancelled.
pub(crate) fn join_error(py: Python<'_>, e: JoinError) -> PyErr {
    match e.try_into_panic() {
        Ok(payload) => internal(py, panic_message(payload.as_ref())),
        Err(e) => to_py(
            py,
            &sdm_core::Error::new(
                sdm_core::ErrorKind::Closed,
                format!("the operation was cancelled: {e}"),
            ),
        ),
    }
}
