//! The one process-wide runtime that drives tunnels for the blocking API and the C and Python
//! bindings.
//!
//! Tokio does not survive `fork()`: a child inherits the parent's runtime state but not its
//! threads. The runtime is therefore tagged with the process id that built it; in a forked
//! child it is abandoned (never dropped, which could touch the parent's state) and a new one is
//! built on first use.

use std::future::Future;
use std::sync::atomic::{AtomicPtr, Ordering};

use tokio::runtime::Runtime;

use crate::error::{Error, Result};
use crate::sigpipe;

struct Owned {
    pid: u32,
    runtime: Runtime,
}

static CURRENT: AtomicPtr<Owned> = AtomicPtr::new(std::ptr::null_mut());

/// The process-wide runtime, built on first use (and again after a fork).
pub fn runtime() -> Result<&'static Runtime> {
    let pid = std::process::id();
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: pointers stored in CURRENT come from Box::into_raw and are never freed, so a
    // non-null pointer is valid for the rest of the process.
    if let Some(owned) = unsafe { current.as_ref() }
        && owned.pid == pid
    {
        return Ok(&owned.runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("sdm-io")
        .on_thread_start(sigpipe::block_for_this_thread)
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| {
            Error::internal(format!("could not start the sdm runtime: {e}")).with_source(e)
        })?;
    let fresh = Box::into_raw(Box::new(Owned {
        pid,
        runtime: built,
    }));
    match CURRENT.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // The previous runtime (if any) belonged to a parent process: leaked on purpose.
        Ok(_) => {
            // SAFETY: `fresh` was just published and is never freed.
            Ok(unsafe { &(*fresh).runtime })
        }
        Err(_) => {
            // Another thread won the race; discard ours (it never ran anything).
            // SAFETY: `fresh` was never published, so this thread owns it.
            let ours = unsafe { Box::from_raw(fresh) };
            ours.runtime.shutdown_background();
            runtime()
        }
    }
}

/// One thread by default: a connection's sockets are then always served by the thread that
/// was woken for them, with no hand-off between threads (the agent runs the same way, and
/// docs/BENCHMARKS.md has the measurements). `SDM_RUNTIME_THREADS` (1 to 64) gives more, for a
/// process that moves more encrypted data than one core seals.
fn worker_threads() -> usize {
    threads_from(std::env::var("SDM_RUNTIME_THREADS").ok().as_deref())
}

fn threads_from(setting: Option<&str>) -> usize {
    match setting.map(|s| s.trim().parse::<usize>()) {
        Some(Ok(n)) if (1..=64).contains(&n) => n,
        Some(_) => {
            tracing::warn!(
                value = setting.unwrap_or_default(),
                "SDM_RUNTIME_THREADS must be a number from 1 to 64; using 1"
            );
            1
        }
        None => 1,
    }
}

/// Runs `future` to completion on the process-wide runtime, blocking this thread (with SIGPIPE
/// held off it meanwhile: see `sigpipe.rs`).
///
/// Fails with [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when called from
/// inside an async runtime, where blocking would stall it; use the async API there.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::invalid_argument(
            "the blocking sdm API was called from inside an async runtime; use the async API (sdm_core::Session) there",
        ));
    }
    let runtime = runtime()?;
    let _sigpipe = sigpipe::CallerGuard::hold();
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::threads_from;

    #[test]
    fn one_thread_unless_a_valid_count_is_set() {
        assert_eq!(threads_from(None), 1);
        assert_eq!(threads_from(Some("3")), 3);
        assert_eq!(threads_from(Some(" 64 ")), 64);
        for bad in ["0", "65", "-1", "two", ""] {
            assert_eq!(threads_from(Some(bad)), 1, "{bad:?}");
        }
    }
}
