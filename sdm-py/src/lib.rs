//! `sdm._native`: the private native module behind the Python package `sdm`.
//!
//! It translates and holds no business logic: every call goes to `sdm_core` on the one
//! process-wide runtime (`sdm_core::runtime`). The public, typed Python API (`sdm.Session`,
//! `sdm.AsyncSession`, `sdm.Tunnel`, the exceptions) is the pure-Python package in `python/sdm/`,
//! which wraps the raw classes defined here.
//!
//! Rules this crate keeps:
//! - Every call that waits goes through [`wait::block_on`] (which takes `Python<'_>` and
//!   releases the GIL while it waits, polling for signals so that Ctrl-C interrupts it) or
//!   [`bridge::into_awaitable`] (which resolves an asyncio future on the caller's loop).
//! - Every core error becomes a Python exception in one place, [`errors::to_py`]; panics are
//!   caught and raised as `sdm.InternalError`.
//! - The runtime's threads never call into Python: what they have for it (log events, results
//!   of async calls) is queued and run by sdm's delivery thread ([`delivery`]), which the
//!   package holds still around `fork()`.
//! - Objects that own core state are [`owned::ProcessLocal`]: in a forked child they are never
//!   used or dropped, so the child cannot touch the parent's sockets or runtime.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bridge;
mod delivery;
mod errors;
mod logging;
mod owned;
mod session;
mod tunnel;
mod values;
mod wait;

use pyo3::prelude::*;

/// The private native module; use the `sdm` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<session::RawSession>()?;
    m.add_class::<tunnel::RawTunnel>()?;
    m.add_class::<bridge::Canceller>()?;
    m.add_function(wrap_pyfunction!(bridge::_resolve, m)?)?;
    m.add_function(wrap_pyfunction!(session::token_from_env, m)?)?;
    m.add_function(wrap_pyfunction!(errors::error_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(errors::_error_for_kind, m)?)?;
    m.add_function(wrap_pyfunction!(errors::_panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(delivery::_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(delivery::_wait_for_items, m)?)?;
    m.add_function(wrap_pyfunction!(delivery::_deliver, m)?)?;
    m.add_function(wrap_pyfunction!(logging::refresh_log_level, m)?)?;
    Ok(())
}
