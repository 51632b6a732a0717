//! `sdm_options`: a login with options (token, API URL override, job labels, timeout).

use std::ffi::c_char;
use std::sync::Mutex;
use std::time::Duration;

use sdm_core::blocking::SessionBuilder;

use crate::boundary::{call, handle, out, text, write};
use crate::error::{Failure, sdm_status};

/// Login options for `sdm_login_with_options`. Create with `sdm_options_new`, free with
/// `sdm_options_free`. Every function on it is thread-safe (it is guarded by a lock).
#[allow(non_camel_case_types)]
pub struct sdm_options {
    builder: Mutex<SessionBuilder>,
}

impl sdm_options {
    /// A copy of the builder, for a login.
    pub(crate) fn builder(&self) -> Result<SessionBuilder, Failure> {
        self.builder
            .lock()
            .map(|b| b.clone())
            .map_err(|_| Failure::new(sdm_status::Internal, "the options lock is poisoned"))
    }

    fn update(&self, f: impl FnOnce(SessionBuilder) -> SessionBuilder) -> Result<(), Failure> {
        let mut builder = self
            .builder
            .lock()
            .map_err(|_| Failure::new(sdm_status::Internal, "the options lock is poisoned"))?;
        let current = std::mem::take(&mut *builder);
        *builder = f(current);
        Ok(())
    }
}

/// Creates empty login options: no token (so the login reads `SDM_ADMIN_TOKEN`, then
/// `SDM_SERVICE_TOKEN`), the token's API URL (or `SDM_API_URL`), no labels, a 30 s timeout
/// per control plane call, 2 warm gateway connections per tunnel.
///
/// Ownership: on success `*options_out` receives a new handle the caller frees with
/// `sdm_options_free`. NULL `options_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_options_new(options_out: *mut *mut sdm_options) -> sdm_status {
    call(std::ptr::null_mut(), || {
        let options_out = out(options_out, "options_out")?;
        let options = Box::new(sdm_options {
            builder: Mutex::new(SessionBuilder::default()),
        });
        // SAFETY: checked non-NULL; written only now that everything succeeded.
        unsafe { write(options_out, Box::into_raw(options)) };
        Ok(())
    })
}

/// Sets the service account token (UTF-8 text, copied).
///
/// NULL `options` or `token`: `SDM_STATUS_NULL_ARGUMENT`; text that is not UTF-8:
/// `SDM_STATUS_INVALID_ARGUMENT`. The token is checked by the login, not here. Thread-safe.
///
/// # Safety
/// `options` is NULL or live; `token` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_options_set_token(
    options: *mut sdm_options,
    token: *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or live pointers.
        let options = unsafe { handle(options, "options") }?;
        let token = unsafe { text(token, "token") }?.to_owned();
        options.update(|b| b.token(token))
    })
}

/// Overrides the control plane URL the token carries (e.g. `https://sdm.internal:8443`, for a
/// proxy); the CA pinned by the token still applies. Default: `SDM_API_URL`, else the token's.
///
/// NULL `options` or `url`: `SDM_STATUS_NULL_ARGUMENT`; not UTF-8:
/// `SDM_STATUS_INVALID_ARGUMENT`. The URL is checked by the login. Thread-safe.
///
/// # Safety
/// `options` is NULL or live; `url` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_options_set_api_url(
    options: *mut sdm_options,
    url: *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or live pointers.
        let options = unsafe { handle(options, "options") }?;
        let url = unsafe { text(url, "url") }?.to_owned();
        options.update(|b| b.api_url(url))
    })
}

/// Adds a job label recorded with the session and every connection (e.g. `dag_id`,
/// `task_id`); a key set twice keeps the last value. The server limits labels (at most 32;
/// keys 1–64 characters, values at most 256) and refuses others at login with
/// `SDM_STATUS_INVALID_ARGUMENT`.
///
/// NULL `options`, `key` or `value`: `SDM_STATUS_NULL_ARGUMENT`; not UTF-8:
/// `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live; `key` and `value` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_options_add_label(
    options: *mut sdm_options,
    key: *const c_char,
    value: *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or live pointers.
        let options = unsafe { handle(options, "options") }?;
        let key = unsafe { text(key, "key") }?.to_owned();
        let value = unsafe { text(value, "value") }?.to_owned();
        options.update(|b| b.labels([(key, value)]))
    })
}

/// Sets the time limit of each control plane call, in milliseconds (default 30000).
///
/// NULL `options`: `SDM_STATUS_NULL_ARGUMENT`; 0: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_options_set_timeout_ms(
    options: *mut sdm_options,
    timeout_ms: u64,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live pointer.
        let options = unsafe { handle(options, "options") }?;
        if timeout_ms == 0 {
            return Err(Failure::invalid("timeout_ms must be more than 0"));
        }
        options.update(|b| b.timeout(Duration::from_millis(timeout_ms)))
    })
}

/// Sets how many gateway connections each tunnel keeps ready so that a new local connection
/// skips the TLS handshake (default 2; 0 turns it off).
///
/// NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_options_set_warm_connections(
    options: *mut sdm_options,
    count: usize,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live pointer.
        let options = unsafe { handle(options, "options") }?;
        options.update(|b| b.warm_connections(count))
    })
}

/// Frees login options. Sessions logged in with them are not affected.
///
/// NULL: does nothing. Must not run while another thread uses the same options.
///
/// # Safety
/// `options` is NULL or a handle from `sdm_options_new` that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_options_free(options: *mut sdm_options) {
    if !options.is_null() {
        crate::boundary::guard((), || {
            // SAFETY: created by Box::into_raw in sdm_options_new, handed back exactly once.
            drop(unsafe { Box::from_raw(options) });
        });
    }
}
