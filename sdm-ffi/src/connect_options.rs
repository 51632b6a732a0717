//! `sdm_connect_options`: how a tunnel listens (port, address, Unix socket) and who may use it.

use std::ffi::c_char;
use std::net::IpAddr;
use std::sync::Mutex;

use sdm_core::ConnectOptions;

use crate::boundary::{call, handle, out, text, write};
use crate::error::{Failure, sdm_status};

/// Tunnel options for `sdm_session_connect_with_options`. Create with
/// `sdm_connect_options_new`, free with `sdm_connect_options_free`. Every function on it is
/// thread-safe (it is guarded by a lock); one options handle may serve many connects.
#[allow(non_camel_case_types)]
pub struct sdm_connect_options {
    options: Mutex<ConnectOptions>,
}

impl sdm_connect_options {
    /// A copy of the options, for a connect.
    pub(crate) fn get(&self) -> Result<ConnectOptions, Failure> {
        self.options
            .lock()
            .map(|o| o.clone())
            .map_err(|_| Failure::new(sdm_status::Internal, "the options lock is poisoned"))
    }

    fn update(&self, f: impl FnOnce(&mut ConnectOptions)) -> Result<(), Failure> {
        let mut options = self
            .options
            .lock()
            .map_err(|_| Failure::new(sdm_status::Internal, "the options lock is poisoned"))?;
        f(&mut options);
        Ok(())
    }
}

/// Creates tunnel options with the defaults of `sdm_session_connect`: TCP on 127.0.0.1, the
/// resource's fixed port or a free one, and every local OS user may connect.
///
/// Ownership: on success `*options_out` receives a new handle the caller frees with
/// `sdm_connect_options_free`. NULL `options_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_connect_options_new(
    options_out: *mut *mut sdm_connect_options,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        let options_out = out(options_out, "options_out")?;
        let options = Box::new(sdm_connect_options {
            options: Mutex::new(ConnectOptions::default()),
        });
        // SAFETY: checked non-NULL; written only now that everything succeeded.
        unsafe { write(options_out, Box::into_raw(options)) };
        Ok(())
    })
}

/// Sets the local TCP port (0: the resource's fixed port, else a free one).
///
/// NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_connect_options_set_port(
    options: *mut sdm_connect_options,
    port: u16,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live pointer.
        let options = unsafe { handle(options, "options") }?;
        options.update(|o| o.port = (port != 0).then_some(port))
    })
}

/// Sets the local IP address to listen on (`"127.0.0.1"`, `"::1"`, …; default 127.0.0.1).
/// Anything but loopback exposes the resource to other machines.
///
/// NULL `options` or `address`: `SDM_STATUS_NULL_ARGUMENT`; not an IP address:
/// `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live; `address` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_connect_options_set_bind_address(
    options: *mut sdm_connect_options,
    address: *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or live pointers.
        let options = unsafe { handle(options, "options") }?;
        let address = unsafe { text(address, "address") }?;
        let ip = parse_ip(address)?;
        options.update(|o| o.bind = Some(ip))
    })
}

/// The IP address in `text`, or an invalid-argument failure that says what was expected.
pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, Failure> {
    text.trim().parse().map_err(|_| {
        Failure::invalid(format!(
            "bind_address {text:?} is not an IP address (e.g. \"127.0.0.1\" or \"::1\")"
        ))
    })
}

/// Listens on a Unix socket at `path` instead of a TCP port: the socket gets mode 0600, its
/// directory is created with mode 0700 if missing, and an existing directory that other users
/// can reach is refused at connect time (`SDM_STATUS_INVALID_ARGUMENT`). Only the owner (and
/// root) can then connect, whatever `sdm_connect_options_set_same_user_only` says.
///
/// NULL `options` or `path`: `SDM_STATUS_NULL_ARGUMENT`; not UTF-8 or empty:
/// `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live; `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_connect_options_set_unix_socket(
    options: *mut sdm_connect_options,
    path: *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or live pointers.
        let options = unsafe { handle(options, "options") }?;
        let path = unsafe { text(path, "path") }?;
        if path.is_empty() {
            return Err(Failure::invalid("path is empty; give the socket's path"));
        }
        let path = std::path::PathBuf::from(path);
        options.update(|o| o.unix_socket = Some(path))
    })
}

/// With `enabled`, listens on a Unix socket at a path sdm picks: a new directory of mode 0700
/// under `$XDG_RUNTIME_DIR/sdm` (else `sdm-UID` in the temporary directory), removed when the
/// tunnel closes. A postgres resource's socket is named `.s.PGSQL.5432` there, so libpq takes
/// the directory as `host` and 5432 as `port`. `sdm_tunnel_local_addr` gives the path. A path
/// set with `sdm_connect_options_set_unix_socket` takes precedence.
///
/// NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_connect_options_set_private_unix_socket(
    options: *mut sdm_connect_options,
    enabled: bool,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live pointer.
        let options = unsafe { handle(options, "options") }?;
        options.update(|o| o.private_unix_socket = enabled)
    })
}

/// With `enabled`, the tunnel refuses local connections from other OS users (Linux: a TCP
/// peer's user is asked of the kernel by its four-tuple, a Unix-socket peer's read from its
/// credentials). A refused PostgreSQL client reads why as a server error; the refusal is
/// logged. Default off for the library (the check costs a netlink query per connection).
///
/// NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `options` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_connect_options_set_same_user_only(
    options: *mut sdm_connect_options,
    enabled: bool,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live pointer.
        let options = unsafe { handle(options, "options") }?;
        options.update(|o| o.same_user_only = enabled)
    })
}

/// Frees tunnel options. Tunnels opened with them are not affected.
///
/// NULL: does nothing. Must not run while another thread uses the same options.
///
/// # Safety
/// `options` is NULL or a handle from `sdm_connect_options_new` that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_connect_options_free(options: *mut sdm_connect_options) {
    if !options.is_null() {
        crate::boundary::guard((), || {
            // SAFETY: created by Box::into_raw in sdm_connect_options_new, handed back once.
            drop(unsafe { Box::from_raw(options) });
        });
    }
}
