//! Blocking calls: run a core future on the process-wide runtime while this thread waits with
//! the GIL released.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::task::JoinError;

use crate::errors::{guard, internal, invalid_argument, panic_message, to_py};
use crate::{delivery, logging};

/// How often a waiting thread looks for signals (Ctrl-C) to handle.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// What every call into sdm does first, on the caller's thread: read the `sdm` logger's level
/// again, and start this process's delivery thread if it does not run yet (so in a forked child
/// it starts before the child's runtime can queue anything).
pub(crate) fn enter(py: Python<'_>) {
    logging::refresh(py);
    delivery::ensure_consumer(py);
}

/// Runs `future` on the sdm runtime and waits for it with the GIL released; the only way this
/// crate blocks. Python signal handlers run every [`SIGNAL_POLL`] while it waits, so Ctrl-C
/// raises `KeyboardInterrupt` promptly (and cancels the work). It returns once the log events
/// queued meanwhile were handled ([`delivery::settle`]), so a call's log lines come before it
/// returns, as with any Python code that logs.
pub(crate) fn block_on<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = sdm_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    guard(py, || {
        enter(py);
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(invalid_argument(
                py,
                "a blocking sdm call was made from a thread of the sdm runtime; call it from \
                 your own thread",
            ));
        }
        let rt = sdm_core::runtime::runtime().map_err(|e| to_py(py, &e))?;
        let mut task = rt.spawn(future);
        loop {
            let polled = py.detach(|| {
                rt.block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut task).await })
            });
            let outcome = match polled {
                Ok(Ok(Ok(value))) => Ok(value),
                Ok(Ok(Err(e))) => Err(to_py(py, &e)),
                Ok(Err(e)) => Err(join_error(py, e)),
                Err(_elapsed) => {
                    if let Err(interrupt) = py.check_signals() {
                        task.abort();
                        return Err(interrupt);
                    }
                    continue;
                }
            };
            delivery::settle(py, SIGNAL_POLL)?;
            return outcome;
        }
    })
}

/// Runs a short, non-waiting core call (one that takes locks shared with the runtime's threads)
/// with the GIL released: no core lock is ever waited for while the GIL is held.
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
