//! `sdm_tunnel`: an open tunnel's address, state and close.

use std::ffi::{CString, c_char};

use sdm_core::{ListenAddr, Tunnel, blocking};

use crate::boundary::{Owner, call, copy_text, cstring, guard, handle, out, write};
use crate::error::{Failure, sdm_error, sdm_status};

/// An open tunnel: a listener on a local address whose connections reach a resource through a
/// gateway. Create with `sdm_session_connect`; free with `sdm_tunnel_free`.
///
/// Thread-safe: any function may be called on one tunnel from several threads at once, except
/// `sdm_tunnel_free`, which must be the last use. Once the tunnel is closed (by
/// `sdm_tunnel_close`, `sdm_session_disconnect`, logout, freeing its session, or revoked
/// access) the handle stays valid, and calls that need an open tunnel give
/// `SDM_STATUS_CLOSED`.
#[allow(non_camel_case_types)]
pub struct sdm_tunnel {
    tunnel: Tunnel,
    owner: Owner,
    resource: CString,
    local_addr: String,
}

/// What kind of address a tunnel listens on (`sdm_tunnel_local_addr_kind`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sdm_addr_kind {
    /// A TCP address: `sdm_tunnel_local_addr` gives `"127.0.0.1:PORT"`; `sdm_tunnel_host` and
    /// `sdm_tunnel_port` give its parts.
    Tcp = 0,
    /// A Unix socket: `sdm_tunnel_local_addr` gives its path; the tunnel has no host or port.
    Unix = 1,
}

impl sdm_tunnel {
    pub(crate) fn new(tunnel: Tunnel) -> sdm_tunnel {
        sdm_tunnel {
            resource: cstring(&tunnel.resource().name),
            local_addr: tunnel.local_addr().to_string(),
            owner: Owner::current(),
            tunnel,
        }
    }

    /// The TCP address of an open tunnel; a Unix-socket tunnel has none (`what` names the
    /// function asked, for the message).
    fn tcp(&self, what: &str) -> Result<std::net::SocketAddr, Failure> {
        let tunnel = self.open()?;
        tunnel.local_addr().tcp().ok_or_else(|| {
            Failure::invalid(format!(
                "{what}: the tunnel to {} listens on the Unix socket {}, which has no host or \
                 port; connect to that path (sdm_tunnel_local_addr)",
                self.resource.to_string_lossy(),
                tunnel.local_addr()
            ))
        })
    }

    /// The tunnel, if it is open in this process.
    fn open(&self) -> Result<&Tunnel, Failure> {
        self.owner.check("tunnel")?;
        if self.tunnel.is_open() {
            return Ok(&self.tunnel);
        }
        let name = self.resource.to_string_lossy();
        Err(match self.tunnel.close_reason() {
            Some(reason) => {
                let mut failure = Failure::from(reason);
                failure.message = format!("the tunnel to {name} was closed: {}", failure.message);
                failure.status = sdm_status::Closed;
                failure.kind = "closed".into();
                failure.retryable = false;
                failure
            }
            None => Failure::closed(format!(
                "the tunnel to {name} is closed (by sdm_tunnel_close, sdm_session_disconnect, \
                 logout, or because its session was freed); open a new one with \
                 sdm_session_connect"
            )),
        })
    }
}

/// Copies where the tunnel listens into `buf` with a terminating NUL: a TCP address as
/// `"127.0.0.1:40001"` (`"[::1]:40001"` for IPv6), or a Unix socket's path (see
/// `sdm_tunnel_local_addr_kind`).
///
/// `needed_out` (may be NULL) receives the buffer size the text needs, including the NUL, both
/// on success and when the buffer is too small. `buf` may be NULL when `buf_len` is 0, to ask
/// for the size. Buffer too small: `SDM_STATUS_BUFFER_TOO_SMALL`, nothing written to `buf`.
/// Closed tunnel: `SDM_STATUS_CLOSED`. NULL `tunnel` (or `buf` with `buf_len` > 0):
/// `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `buf` is NULL or writable for `buf_len` bytes; `needed_out` and
/// `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_local_addr(
    tunnel: *const sdm_tunnel,
    buf: *mut c_char,
    buf_len: usize,
    needed_out: *mut usize,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        tunnel.open()?;
        // SAFETY: buffer and size pointer as the caller guarantees.
        unsafe { copy_text(&tunnel.local_addr, buf, buf_len, needed_out) }
    })
}

/// Copies the tunnel's local IP address as text (`"127.0.0.1"`, what a driver's `host` takes)
/// into `buf`. Buffer, size, NULL and closed behaviour: as `sdm_tunnel_local_addr`. A
/// Unix-socket tunnel has no IP address: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `buf` is NULL or writable for `buf_len` bytes; `needed_out` and
/// `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_host(
    tunnel: *const sdm_tunnel,
    buf: *mut c_char,
    buf_len: usize,
    needed_out: *mut usize,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        let host = tunnel.tcp("sdm_tunnel_host")?.ip().to_string();
        // SAFETY: buffer and size pointer as the caller guarantees.
        unsafe { copy_text(&host, buf, buf_len, needed_out) }
    })
}

/// The tunnel's local port. Closed tunnel: `SDM_STATUS_CLOSED`. A Unix-socket tunnel has no
/// port: `SDM_STATUS_INVALID_ARGUMENT`. NULL `tunnel` or `port_out`:
/// `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `port_out` and `error_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_port(
    tunnel: *const sdm_tunnel,
    port_out: *mut u16,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        let port_out = out(port_out, "port_out")?;
        let port = tunnel.tcp("sdm_tunnel_port")?.port();
        // SAFETY: checked non-NULL; written only on success.
        unsafe { write(port_out, port) };
        Ok(())
    })
}

/// Whether the tunnel listens on a TCP address (`SDM_ADDR_KIND_TCP`) or a Unix socket
/// (`SDM_ADDR_KIND_UNIX`); also once it is closed. NULL `tunnel` or `kind_out`:
/// `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `kind_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_local_addr_kind(
    tunnel: *const sdm_tunnel,
    kind_out: *mut sdm_addr_kind,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        let kind_out = out(kind_out, "kind_out")?;
        let kind = match tunnel.tunnel.local_addr() {
            ListenAddr::Unix(_) => sdm_addr_kind::Unix,
            _ => sdm_addr_kind::Tcp,
        };
        // SAFETY: checked non-NULL.
        unsafe { write(kind_out, kind) };
        Ok(())
    })
}

/// The name of the resource the tunnel reaches (also once it is closed).
///
/// Ownership: `*name_out` is borrowed from `tunnel`; valid until `sdm_tunnel_free`. NULL
/// `tunnel` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `name_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_resource_name(
    tunnel: *const sdm_tunnel,
    name_out: *mut *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        let name_out = out(name_out, "name_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write(name_out, tunnel.resource.as_ptr()) };
        Ok(())
    })
}

/// Whether the tunnel still accepts connections (false once closed, and in a forked child).
/// NULL `tunnel` or `open_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `open_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_is_open(
    tunnel: *const sdm_tunnel,
    open_out: *mut bool,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        let open_out = out(open_out, "open_out")?;
        let open = tunnel.owner.is_current() && tunnel.tunnel.is_open();
        // SAFETY: checked non-NULL.
        unsafe { write(open_out, open) };
        Ok(())
    })
}

/// Why the tunnel closed when something other than its owner closed it, for example
/// `SDM_STATUS_UNAUTHENTICATED` after the account was suspended or `SDM_STATUS_FORBIDDEN`
/// after the grant was removed.
///
/// On success `*reason_out` receives a new error (free it with `sdm_error_free`), or NULL when
/// the tunnel is open or was closed by its owner. NULL `tunnel` or `reason_out`:
/// `SDM_STATUS_NULL_ARGUMENT`; in a forked child: `SDM_STATUS_CLOSED`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `reason_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_close_reason(
    tunnel: *const sdm_tunnel,
    reason_out: *mut *mut sdm_error,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        let reason_out = out(reason_out, "reason_out")?;
        tunnel.owner.check("tunnel")?;
        let reason = match tunnel.tunnel.close_reason() {
            Some(reason) => Box::into_raw(Box::new(sdm_error::from(Failure::from(reason)))),
            None => std::ptr::null_mut(),
        };
        // SAFETY: checked non-NULL.
        unsafe { write(reason_out, reason) };
        Ok(())
    })
}

/// Closes the tunnel: stops listening, closes its connections, and returns once the local port
/// is free. Closing a closed tunnel succeeds and does nothing. The handle must still be freed
/// with `sdm_tunnel_free`. In a forked child: `SDM_STATUS_CLOSED`.
///
/// NULL `tunnel`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `tunnel` is NULL or live; `error_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_close(
    tunnel: *mut sdm_tunnel,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        // SAFETY: the caller passes NULL or a live handle.
        let tunnel = unsafe { handle(tunnel, "tunnel") }?;
        tunnel.owner.check("tunnel")?;
        Ok(blocking::close_tunnel(&tunnel.tunnel)?)
    })
}

/// Closes the tunnel (as `sdm_tunnel_close`) and frees the handle.
///
/// In a child after `fork()`, freeing a tunnel inherited from the parent releases nothing and
/// does not block. NULL: does nothing. Must be the last use of the tunnel.
///
/// # Safety
/// `tunnel` is NULL or a handle from `sdm_session_connect` that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_tunnel_free(tunnel: *mut sdm_tunnel) {
    if tunnel.is_null() {
        return;
    }
    // SAFETY: created by Box::into_raw in sdm_session_connect_with, handed back exactly once.
    let tunnel = unsafe { Box::from_raw(tunnel) };
    if !tunnel.owner.is_current() {
        std::mem::forget(tunnel);
        return;
    }
    guard((), move || {
        let _ = blocking::close_tunnel(&tunnel.tunnel);
        drop(tunnel);
    });
}
