//! The one place where core errors (and panics) become Python exceptions.
//!
//! The exception classes are defined in `sdm/errors.py` (one subclass of `sdm.Error` per
//! `ErrorKind`); this module builds them through `sdm.errors._from_native`, which maps a kind
//! name to its class and falls back to `sdm.Error` for a kind this package does not know yet.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use sdm_core::{Error, ErrorKind};

/// Converts a core error to the matching `sdm.Error` subclass.
pub(crate) fn to_py(py: Python<'_>, e: &Error) -> PyErr {
    static FACTORY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let kind = e.kind();
    let built = FACTORY
        .import(py, "sdm.errors", "_from_native")
        .and_then(|factory| {
            factory.call1((
                kind.as_str(),
                kind.code(),
                kind.retryable(),
                e.message(),
                e.candidates().to_vec(),
            ))
        });
    match built {
        Ok(exception) => PyErr::from_value(exception),
        // The package is broken (sdm.errors missing): say so rather than lose the error.
        Err(err) => err,
    }
}

/// An `sdm.InternalError` with this message.
pub(crate) fn internal(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py(py, &Error::new(ErrorKind::Internal, message))
}

/// An `sdm.InvalidArgumentError` with this message.
pub(crate) fn invalid_argument(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py(py, &Error::new(ErrorKind::InvalidArgument, message))
}

/// Runs `f`, turning a panic into `sdm.InternalError` instead of letting it cross into Python.
pub(crate) fn guard<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(internal(py, panic_message(payload.as_ref()))),
    }
}

/// The message for a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("internal error in sdm (please report it): {detail}")
}

/// Every error kind of the core as `(name, code, retryable)`, in code order.
#[pyfunction]
pub(crate) fn error_kinds() -> Vec<(&'static str, u16, bool)> {
    ErrorKind::ALL
        .iter()
        .map(|k| (k.as_str(), k.code(), k.retryable()))
        .collect()
}

/// Test hook: the exception a core error of kind `kind` becomes (unknown names: `internal`).
#[pyfunction]
pub(crate) fn _error_for_kind(py: Python<'_>, kind: &str, message: &str) -> Py<PyAny> {
    to_py(py, &Error::new(ErrorKind::from_name(kind), message))
        .into_value(py)
        .into_any()
}

/// Test hook: panics inside the panic boundary, to show that Python sees `sdm.InternalError`.
#[pyfunction]
pub(crate) fn _panic_for_test(py: Python<'_>) -> PyResult<()> {
    guard(py, || panic!("a deliberate panic from _panic_for_test"))
}
