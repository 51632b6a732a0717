//! `sdm_session`: log in, list resources, connect, dial, status, disconnect, log out.

use std::ffi::{CString, c_char, c_int};
use std::os::fd::IntoRawFd;

use sdm_core::ConnectOptions;
use sdm_core::blocking::{self, SessionBuilder};

use crate::boundary::{Owner, call, cstring, guard, handle, out, text, write};
use crate::connect_options::{parse_ip, sdm_connect_options};
use crate::error::{Failure, sdm_error, sdm_status};
use crate::options::sdm_options;
use crate::report::sdm_status_report;
use crate::resource::sdm_resource_list;
use crate::tunnel::sdm_tunnel;

/// A logged-in service account. Create with `sdm_login`, `sdm_login_from_env` or
/// `sdm_login_with_options`; free with `sdm_session_free`.
///
/// Thread-safe: any function may be called on one session from several threads at once,
/// except `sdm_session_free`, which must be the last use. A session belongs to the process that
/// logged in: in a child made by `fork()`, calls on an inherited session fail with
/// `SDM_STATUS_CLOSED` (log in again in the child).
#[allow(non_camel_case_types)]
pub struct sdm_session {
    inner: blocking::Session,
    owner: Owner,
    account_name: CString,
    account_id: CString,
    session_id: CString,
    api_url: CString,
}

impl sdm_session {
    fn new(inner: blocking::Session) -> sdm_session {
        let account = inner.account();
        let (account_name, account_id) = (cstring(&account.name), cstring(&account.id.to_string()));
        let session_id = cstring(&inner.as_async().id().to_string());
        let api_url = cstring(inner.as_async().api_url());
        sdm_session {
            inner,
            owner: Owner::current(),
            account_name,
            account_id,
            session_id,
            api_url,
        }
    }

    /// The session, in the process that created it.
    fn live(&self) -> Result<&blocking::Session, Failure> {
        self.owner.check("session")?;
        Ok(&self.inner)
    }
}

fn login(builder: SessionBuilder, session_out: *mut *mut sdm_session) -> Result<(), Failure> {
    let session = builder.login()?;
    let session = Box::new(sdm_session::new(session));
    // SAFETY: the caller checked `session_out` with `out` before the work.
    unsafe { write(session_out, Box::into_raw(session)) };
    Ok(())
}

/// Logs in with a service account token; everything else (control plane URL, pinned CA) comes
/// from the token, except that `SDM_API_URL` overrides the URL. Blocks until the control plane
/// answers (at most 30 s).
///
/// Ownership: `token` is copied; on success `*session_out` receives a new session the caller
/// frees with `sdm_session_free`. On failure `*error_out` (when `error_out` is not NULL)
/// receives an error the caller frees with `sdm_error_free`.
///
/// Fails with `SDM_STATUS_INVALID_TOKEN` (not an sdm token), `SDM_STATUS_UNAUTHENTICATED`
/// (unknown, revoked or suspended), `SDM_STATUS_API_UNREACHABLE`, `SDM_STATUS_TIMEOUT`.
/// NULL `token` or `session_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe; works in a child
/// after `fork()`.
///
/// # Safety
/// `token` is NULL or a NUL-terminated string; `session_out` and `error_out` are NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_login(
    token: *const c_char,
    session_out: *mut *mut sdm_session,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let token = unsafe { text(token, "token") }?;
        let session_out = out(session_out, "session_out")?;
        login(blocking::Session::builder().token(token), session_out)
    })
}

/// Logs in with the token in `SDM_ADMIN_TOKEN`, else `SDM_SERVICE_TOKEN`
/// (`SDM_STATUS_INVALID_TOKEN` when neither is set). Otherwise as `sdm_login`.
///
/// # Safety
/// `session_out` and `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_login_from_env(
    session_out: *mut *mut sdm_session,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        let session_out = out(session_out, "session_out")?;
        login(blocking::Session::builder(), session_out)
    })
}

/// Logs in with options (see `sdm_options_new`): token (else from the environment), API URL
/// override, job labels, timeout. The options are only read; free them when convenient.
/// Otherwise as `sdm_login`; a bad label or timeout fails with `SDM_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `options` is NULL or live; `session_out` and `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_login_with_options(
    options: *const sdm_options,
    session_out: *mut *mut sdm_session,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let options = unsafe { handle(options, "options") }?;
        let session_out = out(session_out, "session_out")?;
        login(options.builder()?, session_out)
    })
}

/// The name of the account logged in (e.g. `"etl"`).
///
/// Ownership: `*name_out` is borrowed from `session`; valid until `sdm_session_free`.
/// NULL `session` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `name_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_account_name(
    session: *const sdm_session,
    name_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: the caller passes NULL or valid pointers.
    unsafe { borrowed_text(session, name_out, "name_out", |s| &s.account_name) }
}

/// The id (UUID text) of the account logged in. Ownership, NULL and threads: as
/// `sdm_session_account_name`.
///
/// # Safety
/// `session` is NULL or live; `id_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_account_id(
    session: *const sdm_session,
    id_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: the caller passes NULL or valid pointers.
    unsafe { borrowed_text(session, id_out, "id_out", |s| &s.account_id) }
}

/// The session id (UUID text) that audit records carry. Ownership, NULL and threads: as
/// `sdm_session_account_name`.
///
/// # Safety
/// `session` is NULL or live; `id_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_id(
    session: *const sdm_session,
    id_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: the caller passes NULL or valid pointers.
    unsafe { borrowed_text(session, id_out, "id_out", |s| &s.session_id) }
}

/// The control plane URL in use. Ownership, NULL and threads: as `sdm_session_account_name`.
///
/// # Safety
/// `session` is NULL or live; `url_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_api_url(
    session: *const sdm_session,
    url_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: the caller passes NULL or valid pointers.
    unsafe { borrowed_text(session, url_out, "url_out", |s| &s.api_url) }
}

/// # Safety
/// `session` is NULL or live; `text_out` is NULL or writable.
unsafe fn borrowed_text(
    session: *const sdm_session,
    text_out: *mut *const c_char,
    name: &str,
    field: impl FnOnce(&sdm_session) -> &CString,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live handle.
        let session = unsafe { handle(session, "session") }?;
        let text_out = out(text_out, name)?;
        // SAFETY: checked non-NULL.
        unsafe { write(text_out, field(session).as_ptr()) };
        Ok(())
    })
}

/// Lists the resources granted to the account, sorted by name (a fresh list from the control
/// plane).
///
/// Ownership: on success `*list_out` receives a new list the caller frees with
/// `sdm_resource_list_free`; it does not depend on the session. NULL `session` or `list_out`:
/// `SDM_STATUS_NULL_ARGUMENT`. After logout: `SDM_STATUS_CLOSED`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `list_out` and `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_list_resources(
    session: *const sdm_session,
    list_out: *mut *mut sdm_resource_list,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let session = unsafe { handle(session, "session") }?.live()?;
        let list_out = out(list_out, "list_out")?;
        let list = Box::new(sdm_resource_list::new(session.list_resources()?));
        // SAFETY: checked non-NULL; written only on success.
        unsafe { write(list_out, Box::into_raw(list)) };
        Ok(())
    })
}

/// Opens a tunnel to the resource `name` (an exact name or id, else a unique case-insensitive
/// substring, e.g. `"pgsql"`): a listener on 127.0.0.1 (on the resource's fixed port when the
/// admin set one, else a free port) that any driver can connect to. Blocks until the listener
/// is up and the control plane granted a lease.
///
/// Ownership: `name` is copied; on success `*tunnel_out` receives a new tunnel the caller frees
/// with `sdm_tunnel_free`. The tunnel works until it is closed, its session is freed or logs
/// out, or access is revoked.
///
/// Fails with `SDM_STATUS_RESOURCE_NOT_FOUND`, `SDM_STATUS_AMBIGUOUS_RESOURCE` (the error lists
/// the candidates), `SDM_STATUS_PORT_IN_USE`, `SDM_STATUS_FORBIDDEN`,
/// `SDM_STATUS_UNAUTHENTICATED`, `SDM_STATUS_API_UNREACHABLE`, `SDM_STATUS_GATEWAY_UNREACHABLE`,
/// `SDM_STATUS_CLOSED` (after logout). NULL `session`, `name` or `tunnel_out`:
/// `SDM_STATUS_NULL_ARGUMENT`; empty `name`: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `name` is NULL or a NUL-terminated string; `tunnel_out` and
/// `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_connect(
    session: *const sdm_session,
    name: *const c_char,
    tunnel_out: *mut *mut sdm_tunnel,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe { sdm_session_connect_with(session, name, std::ptr::null(), 0, tunnel_out, error_out) }
}

/// `sdm_session_connect` with a chosen local address and port.
///
/// `bind_address`: the local IP address to listen on (`"127.0.0.1"`, `"::1"`, …); NULL means
/// 127.0.0.1. Anything but loopback exposes the resource to other machines. `port`: the local
/// port; 0 means the resource's fixed port, else a free one. A port in use fails with
/// `SDM_STATUS_PORT_IN_USE`; an address that is not an IP address with
/// `SDM_STATUS_INVALID_ARGUMENT`. Otherwise as `sdm_session_connect`.
///
/// # Safety
/// `session` is NULL or live; `name` and `bind_address` are NULL or NUL-terminated strings;
/// `tunnel_out` and `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_connect_with(
    session: *const sdm_session,
    name: *const c_char,
    bind_address: *const c_char,
    port: u16,
    tunnel_out: *mut *mut sdm_tunnel,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        let options = || {
            let mut options = ConnectOptions::default();
            if !bind_address.is_null() {
                // SAFETY: non-NULL and NUL-terminated, guaranteed by the caller.
                let text = unsafe { text(bind_address, "bind_address") }?;
                options = options.bind(parse_ip(text)?);
            }
            if port != 0 {
                options = options.port(port);
            }
            Ok(options)
        };
        // SAFETY: forwarded from the caller.
        unsafe { connect_into(session, name, tunnel_out, options) }
    })
}

/// The body the connect functions share: checks the arguments, opens the tunnel with what
/// `options` gives (asked after the other checks) and writes `*tunnel_out` on success.
///
/// # Safety
/// `session` is NULL or live; `name` is NULL or a NUL-terminated string; `tunnel_out` is NULL
/// or writable.
unsafe fn connect_into(
    session: *const sdm_session,
    name: *const c_char,
    tunnel_out: *mut *mut sdm_tunnel,
    options: impl FnOnce() -> Result<ConnectOptions, Failure>,
) -> Result<(), Failure> {
    // SAFETY: the caller passes NULL or live pointers.
    let session = unsafe { handle(session, "session") }?.live()?;
    let name = unsafe { text(name, "name") }?;
    let tunnel_out = out(tunnel_out, "tunnel_out")?;
    let tunnel = session.connect_with(name, options()?)?;
    let tunnel = Box::new(sdm_tunnel::new(tunnel));
    // SAFETY: checked non-NULL; written only on success.
    unsafe { write(tunnel_out, Box::into_raw(tunnel)) };
    Ok(())
}

/// `sdm_session_connect` with tunnel options (`sdm_connect_options`): a port or address, a
/// Unix socket, refusing other OS users. NULL `options` means the defaults of
/// `sdm_session_connect`. The options are copied; they may be freed or changed afterwards.
/// Otherwise as `sdm_session_connect`.
///
/// # Safety
/// `session` and `options` are NULL or live; `name` is NULL or a NUL-terminated string;
/// `tunnel_out` and `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_connect_with_options(
    session: *const sdm_session,
    name: *const c_char,
    options: *const sdm_connect_options,
    tunnel_out: *mut *mut sdm_tunnel,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        let options = || {
            if options.is_null() {
                Ok(ConnectOptions::default())
            } else {
                // SAFETY: non-NULL and live, guaranteed by the caller.
                unsafe { handle(options, "options") }?.get()
            }
        };
        // SAFETY: forwarded from the caller.
        unsafe { connect_into(session, name, tunnel_out, options) }
    })
}

/// Connects to the resource `name` inside this process, without a local listener, and returns
/// a connected socket: read and write the resource's own protocol on it (`read`/`write`/
/// `send`/`recv`/`poll`/`select`). Blocks until the gateway has reached the resource.
///
/// Ownership: on success `*fd_out` receives a file descriptor the caller owns and closes with
/// `close(2)`; it is a blocking `AF_UNIX` stream socket with `FD_CLOEXEC` set (one end of a
/// socket pair whose other end libsdm splices to the gateway). It stays connected until either
/// side closes it, also after the session is freed. Name lookup and failures as
/// `sdm_session_connect`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `name` is NULL or a NUL-terminated string; `fd_out` and
/// `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_dial(
    session: *const sdm_session,
    name: *const c_char,
    fd_out: *mut c_int,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or live pointers.
        let session = unsafe { handle(session, "session") }?.live()?;
        let name = unsafe { text(name, "name") }?;
        let fd_out = out(fd_out, "fd_out")?;
        let stream = session.dial(name)?;
        // SAFETY: checked non-NULL; written only on success (ownership passes to the caller).
        unsafe { write(fd_out, stream.into_raw_fd()) };
        Ok(())
    })
}

/// Reads the status of every granted resource: connected (with the tunnel's address) or not,
/// as `sdm status` prints it.
///
/// Ownership: on success `*report_out` receives a new report the caller frees with
/// `sdm_status_report_free`. NULL `session` or `report_out`: `SDM_STATUS_NULL_ARGUMENT`. After
/// logout: `SDM_STATUS_CLOSED`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `report_out` and `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_status(
    session: *const sdm_session,
    report_out: *mut *mut sdm_status_report,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let session = unsafe { handle(session, "session") }?.live()?;
        let report_out = out(report_out, "report_out")?;
        let report = Box::new(sdm_status_report::new(session.status()?));
        // SAFETY: checked non-NULL; written only on success.
        unsafe { write(report_out, Box::into_raw(report)) };
        Ok(())
    })
}

/// Closes this session's open tunnels to the resource `name` (exact name or unique substring
/// among the connected resources) and waits until their local ports are free. Their
/// `sdm_tunnel` handles stay valid (free them as usual); calls on them give
/// `SDM_STATUS_CLOSED`.
///
/// No open tunnel matches: `SDM_STATUS_RESOURCE_NOT_FOUND`. NULL `session` or `name`:
/// `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `name` is NULL or a NUL-terminated string; `error_out` is NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_disconnect(
    session: *const sdm_session,
    name: *const c_char,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or live pointers.
        let session = unsafe { handle(session, "session") }?.live()?;
        let name = unsafe { text(name, "name") }?;
        Ok(session.disconnect(name)?)
    })
}

/// Closes every open tunnel of this session and waits until their ports are free. The session
/// stays logged in. NULL `session`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `error_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_disconnect_all(
    session: *const sdm_session,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let session = unsafe { handle(session, "session") }?.live()?;
        Ok(session.disconnect_all()?)
    })
}

/// Closes every tunnel and ends the session on the control plane (its leases stop working at
/// once). Later calls on the session fail with `SDM_STATUS_CLOSED`; logging out again succeeds
/// and does nothing. The handle must still be freed with `sdm_session_free`.
///
/// NULL `session`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `session` is NULL or live; `error_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_logout(
    session: *const sdm_session,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let session = unsafe { handle(session, "session") }?.live()?;
        Ok(session.logout()?)
    })
}

/// Frees a session. Its open tunnels are closed first (their local ports are free when this
/// returns); their `sdm_tunnel` handles stay valid until `sdm_tunnel_free`, and every call on
/// them gives `SDM_STATUS_CLOSED`. File descriptors from `sdm_session_dial` are not affected.
/// The session is not ended on the control plane: call `sdm_session_logout` first for that.
///
/// In a child after `fork()`, freeing a session inherited from the parent releases nothing
/// (the parent still owns its sockets) and does not block.
///
/// NULL: does nothing. Must be the last use of the session: no other thread may be using it.
///
/// # Safety
/// `session` is NULL or a handle from a login function that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_session_free(session: *mut sdm_session) {
    if session.is_null() {
        return;
    }
    // SAFETY: created by Box::into_raw in `login`, handed back exactly once.
    let session = unsafe { Box::from_raw(session) };
    if !session.owner.is_current() {
        // The parent's runtime threads do not exist here: closing would wait for them forever.
        std::mem::forget(session);
        return;
    }
    guard((), move || {
        // Failures here leave nothing to report: the tunnels close when dropped regardless.
        let _ = session.inner.disconnect_all();
        drop(session);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_arguments_are_reported_not_dereferenced() {
        let mut session: *mut sdm_session = std::ptr::null_mut();
        let mut error: *mut sdm_error = std::ptr::null_mut();
        let status = unsafe { sdm_login(std::ptr::null(), &mut session, &mut error) };
        assert_eq!(status, sdm_status::NullArgument);
        assert!(session.is_null(), "no output on failure");
        let message = unsafe { std::ffi::CStr::from_ptr(crate::error::sdm_error_message(error)) };
        assert!(message.to_str().unwrap().contains("`token`"));
        unsafe { crate::error::sdm_error_free(error) };

        let status =
            unsafe { sdm_login(c"x".as_ptr(), std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(status, sdm_status::NullArgument);
    }

    #[test]
    fn a_malformed_token_is_invalid_token() {
        let mut session: *mut sdm_session = std::ptr::null_mut();
        let status =
            unsafe { sdm_login(c"not-a-token".as_ptr(), &mut session, std::ptr::null_mut()) };
        assert_eq!(status, sdm_status::InvalidToken);
        assert!(session.is_null());
    }
}
