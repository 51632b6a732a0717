//! `sdm_status` (the return code of every fallible function) and `sdm_error` (the optional
//! error object with a message).

use std::ffi::{CString, c_char, c_int};

use sdm_core::ErrorKind;

use crate::boundary::cstring;

/// The result of a call. `SDM_STATUS_OK` (0) is success; every other value is a failure.
///
/// Codes 1 to 13 are the error kinds shared by every sdm surface (Rust `ErrorKind::code()`,
/// Python exception classes); 14 to 99 are reserved for kinds added later; 100 and up are
/// failures of the C interface itself. A number is never reused for another meaning.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sdm_status {
    /// Success.
    Ok = 0,
    /// The token is not an sdm token (bad prefix, encoding or checksum), or no token was given
    /// and none is set in the environment.
    InvalidToken = 1,
    /// The token is unknown, revoked or expired, or its account is suspended or deleted.
    Unauthenticated = 2,
    /// The account may not do this.
    Forbidden = 3,
    /// No resource of that name is granted to the account (or no open tunnel matches).
    ResourceNotFound = 4,
    /// A substring matched several resources; the error lists the candidates.
    AmbiguousResource = 5,
    /// The control plane could not be reached (retryable).
    ApiUnreachable = 6,
    /// No gateway for the resource could be reached (retryable).
    GatewayUnreachable = 7,
    /// The gateway could not reach the resource (retryable).
    UpstreamRefused = 8,
    /// The requested local port is already in use.
    PortInUse = 9,
    /// An operation did not finish in time (retryable).
    Timeout = 10,
    /// The session or tunnel is closed (logged out, closed, freed session, revoked access, or a
    /// handle inherited across `fork()`).
    Closed = 11,
    /// An argument is unusable: empty name, index out of range, text that is not UTF-8, bad
    /// option value.
    InvalidArgument = 12,
    /// A bug or an unexpected condition; the message has details.
    Internal = 13,
    /// A pointer argument that must not be NULL was NULL. Nothing was done.
    NullArgument = 100,
    /// A bug in libsdm caused a Rust panic; it was caught at the boundary. The handles passed
    /// in are still valid and may be freed.
    Panic = 101,
    /// An error kind this version of the C interface does not know (from a newer sdm-core).
    /// `sdm_error_kind()` names it.
    Unknown = 102,
    /// The buffer given for a text is too small; the needed size (with the terminating NUL) was
    /// written to the size out-parameter.
    BufferTooSmall = 103,
}

impl sdm_status {
    /// Every status, in number order.
    pub(crate) fn all() -> [sdm_status; 18] {
        [
            sdm_status::Ok,
            sdm_status::InvalidToken,
            sdm_status::Unauthenticated,
            sdm_status::Forbidden,
            sdm_status::ResourceNotFound,
            sdm_status::AmbiguousResource,
            sdm_status::ApiUnreachable,
            sdm_status::GatewayUnreachable,
            sdm_status::UpstreamRefused,
            sdm_status::PortInUse,
            sdm_status::Timeout,
            sdm_status::Closed,
            sdm_status::InvalidArgument,
            sdm_status::Internal,
            sdm_status::NullArgument,
            sdm_status::Panic,
            sdm_status::Unknown,
            sdm_status::BufferTooSmall,
        ]
    }

    /// The status for an error kind: the same number as [`ErrorKind::code`].
    pub(crate) fn from_kind(kind: ErrorKind) -> sdm_status {
        match kind {
            ErrorKind::InvalidToken => sdm_status::InvalidToken,
            ErrorKind::Unauthenticated => sdm_status::Unauthenticated,
            ErrorKind::Forbidden => sdm_status::Forbidden,
            ErrorKind::ResourceNotFound => sdm_status::ResourceNotFound,
            ErrorKind::AmbiguousResource => sdm_status::AmbiguousResource,
            ErrorKind::ApiUnreachable => sdm_status::ApiUnreachable,
            ErrorKind::GatewayUnreachable => sdm_status::GatewayUnreachable,
            ErrorKind::UpstreamRefused => sdm_status::UpstreamRefused,
            ErrorKind::PortInUse => sdm_status::PortInUse,
            ErrorKind::Timeout => sdm_status::Timeout,
            ErrorKind::Closed => sdm_status::Closed,
            ErrorKind::InvalidArgument => sdm_status::InvalidArgument,
            ErrorKind::Internal => sdm_status::Internal,
            // A kind added to sdm-core after this binding was written: never a crash.
            _ => sdm_status::Unknown,
        }
    }

    /// The snake_case name (`"invalid_token"`), the same as the Rust kind's for codes 1–13.
    pub(crate) fn name(self) -> &'static std::ffi::CStr {
        match self {
            sdm_status::Ok => c"ok",
            sdm_status::InvalidToken => c"invalid_token",
            sdm_status::Unauthenticated => c"unauthenticated",
            sdm_status::Forbidden => c"forbidden",
            sdm_status::ResourceNotFound => c"resource_not_found",
            sdm_status::AmbiguousResource => c"ambiguous_resource",
            sdm_status::ApiUnreachable => c"api_unreachable",
            sdm_status::GatewayUnreachable => c"gateway_unreachable",
            sdm_status::UpstreamRefused => c"upstream_refused",
            sdm_status::PortInUse => c"port_in_use",
            sdm_status::Timeout => c"timeout",
            sdm_status::Closed => c"closed",
            sdm_status::InvalidArgument => c"invalid_argument",
            sdm_status::Internal => c"internal",
            sdm_status::NullArgument => c"null_argument",
            sdm_status::Panic => c"panic",
            sdm_status::Unknown => c"unknown",
            sdm_status::BufferTooSmall => c"buffer_too_small",
        }
    }
}

/// A failure inside the library, before it is handed to C as a status and an `sdm_error`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: sdm_status,
    pub(crate) kind: String,
    pub(crate) message: String,
    pub(crate) retryable: bool,
    pub(crate) candidates: Vec<String>,
}

impl Failure {
    /// A failure of the C interface itself (NULL argument, small buffer, …).
    pub(crate) fn new(status: sdm_status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            kind: status.name().to_string_lossy().into_owned(),
            message: message.into(),
            retryable: false,
            candidates: Vec::new(),
        }
    }

    pub(crate) fn null(argument: &str) -> Failure {
        Failure::new(
            sdm_status::NullArgument,
            format!("argument `{argument}` is NULL; pass a valid pointer"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(sdm_status::InvalidArgument, message)
    }

    pub(crate) fn closed(message: impl Into<String>) -> Failure {
        Failure::new(sdm_status::Closed, message)
    }

    pub(crate) fn index(what: &str, index: usize, len: usize) -> Failure {
        Failure::invalid(format!(
            "{what} index {index} is out of range (the list has {len} entries)"
        ))
    }

    pub(crate) fn panic(payload: Box<dyn std::any::Any + Send>) -> Failure {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        // The payload is dropped here, inside the caller's boundary.
        Failure::new(
            sdm_status::Panic,
            format!(
                "internal error in libsdm (a Rust panic was caught): {detail}; please report it"
            ),
        )
    }
}

impl From<sdm_core::Error> for Failure {
    fn from(e: sdm_core::Error) -> Failure {
        let kind = e.kind();
        Failure {
            status: sdm_status::from_kind(kind),
            kind: kind.as_str().to_owned(),
            message: e.message().to_owned(),
            retryable: e.retryable(),
            candidates: e.candidates().to_vec(),
        }
    }
}

/// An error: a status code, a message for people, a retryable flag, and for
/// `SDM_STATUS_AMBIGUOUS_RESOURCE` the candidate names. Created by libsdm; free with
/// `sdm_error_free`. Immutable, so it may be read from several threads at once.
#[allow(non_camel_case_types)]
pub struct sdm_error {
    status: sdm_status,
    kind: CString,
    message: CString,
    retryable: bool,
    candidates: Vec<CString>,
}

impl From<Failure> for sdm_error {
    fn from(f: Failure) -> sdm_error {
        sdm_error {
            status: f.status,
            kind: cstring(&f.kind),
            message: cstring(&f.message),
            retryable: f.retryable,
            candidates: f.candidates.iter().map(|c| cstring(c)).collect(),
        }
    }
}

/// The status code of `error`.
///
/// NULL: returns `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `error` is NULL or a live `sdm_error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_error_code(error: *const sdm_error) -> sdm_status {
    // SAFETY: the caller passes NULL or a live error.
    match unsafe { error.as_ref() } {
        Some(e) => e.status,
        None => sdm_status::NullArgument,
    }
}

/// The kind of `error` as a snake_case name: `"unauthenticated"`, `"null_argument"`, … (the
/// name of its status; for `SDM_STATUS_UNKNOWN`, the name sdm-core gave the new kind).
///
/// Ownership: borrowed from `error`; valid until `sdm_error_free(error)`. NULL: returns NULL.
/// Thread-safe.
///
/// # Safety
/// `error` is NULL or a live `sdm_error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_error_kind(error: *const sdm_error) -> *const c_char {
    // SAFETY: the caller passes NULL or a live error.
    match unsafe { error.as_ref() } {
        Some(e) => e.kind.as_ptr(),
        None => std::ptr::null(),
    }
}

/// The message of `error`: what failed and what to do, UTF-8, NUL-terminated.
///
/// Ownership: borrowed from `error`; valid until `sdm_error_free(error)`. NULL: returns NULL.
/// Thread-safe.
///
/// # Safety
/// `error` is NULL or a live `sdm_error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_error_message(error: *const sdm_error) -> *const c_char {
    // SAFETY: the caller passes NULL or a live error.
    match unsafe { error.as_ref() } {
        Some(e) => e.message.as_ptr(),
        None => std::ptr::null(),
    }
}

/// Whether the same call may succeed later without anyone changing anything (unreachable
/// control plane or gateway, refused upstream, timeout).
///
/// NULL: returns false. Thread-safe.
///
/// # Safety
/// `error` is NULL or a live `sdm_error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_error_retryable(error: *const sdm_error) -> bool {
    // SAFETY: the caller passes NULL or a live error.
    unsafe { error.as_ref() }.is_some_and(|e| e.retryable)
}

/// For `SDM_STATUS_AMBIGUOUS_RESOURCE`: how many resource names matched (0 for other errors).
///
/// NULL: returns 0. Thread-safe.
///
/// # Safety
/// `error` is NULL or a live `sdm_error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_error_candidates_len(error: *const sdm_error) -> usize {
    // SAFETY: the caller passes NULL or a live error.
    unsafe { error.as_ref() }.map_or(0, |e| e.candidates.len())
}

/// For `SDM_STATUS_AMBIGUOUS_RESOURCE`: the `index`th matching resource name.
///
/// Ownership: borrowed from `error`; valid until `sdm_error_free(error)`. NULL `error` or
/// `index` out of range: returns NULL. Thread-safe.
///
/// # Safety
/// `error` is NULL or a live `sdm_error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_error_candidate(
    error: *const sdm_error,
    index: usize,
) -> *const c_char {
    // SAFETY: the caller passes NULL or a live error.
    unsafe { error.as_ref() }
        .and_then(|e| e.candidates.get(index))
        .map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Frees an error returned through an `sdm_error **error_out` parameter.
///
/// NULL: does nothing. Not thread-safe with other uses of the same error.
///
/// # Safety
/// `error` is NULL or an `sdm_error` from libsdm that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_error_free(error: *mut sdm_error) {
    if !error.is_null() {
        // SAFETY: the caller hands back an error created by Box::into_raw, exactly once.
        drop(unsafe { Box::from_raw(error) });
    }
}

/// The snake_case name of a status number: `"ok"`, `"invalid_token"`, …, `"buffer_too_small"`;
/// `"unrecognized"` for a number that is not an `sdm_status`.
///
/// Ownership: a static string; never free it. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn sdm_status_name(status: c_int) -> *const c_char {
    sdm_status::all()
        .into_iter()
        .find(|s| *s as c_int == status)
        .map_or(c"unrecognized".as_ptr(), |s| s.name().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_are_status_numbers() {
        for kind in ErrorKind::ALL {
            let status = sdm_status::from_kind(kind);
            assert_eq!(status as i32, i32::from(kind.code()), "{kind}");
            assert_eq!(status.name().to_str().unwrap(), kind.as_str());
        }
    }

    #[test]
    fn statuses_are_unique_and_named() {
        for (i, a) in sdm_status::all().iter().enumerate() {
            for b in &sdm_status::all()[i + 1..] {
                assert_ne!(*a as i32, *b as i32);
                assert_ne!(a.name(), b.name());
            }
            let name = unsafe { std::ffi::CStr::from_ptr(sdm_status_name(*a as c_int)) };
            assert_eq!(name, a.name());
        }
        let unknown = unsafe { std::ffi::CStr::from_ptr(sdm_status_name(57)) };
        assert_eq!(unknown, c"unrecognized");
    }

    #[test]
    fn core_errors_keep_message_and_retryable() {
        let e = sdm_core::Error::new(ErrorKind::Timeout, "took too long");
        let f = Failure::from(e);
        assert_eq!(f.status, sdm_status::Timeout);
        assert!(f.retryable);
        let err = sdm_error::from(f);
        assert_eq!(err.message.to_str().unwrap(), "took too long");
        assert_eq!(err.kind.to_str().unwrap(), "timeout");
    }
}
