//! `sdm_status_report`: every granted resource and whether the session is connected to it.

use std::ffi::{CString, c_char};

use sdm_core::{ConnectionState, Status};

use crate::boundary::{call, cstring, guard, handle, out, write};
use crate::error::{Failure, sdm_status};

/// What `sdm status` shows: the account, and for every granted resource (sorted by name)
/// whether this session has a tunnel open to it. A snapshot from `sdm_session_status`,
/// independent of the session. Free with `sdm_status_report_free`. Immutable, so every
/// accessor is thread-safe.
#[allow(non_camel_case_types)]
pub struct sdm_status_report {
    account: CString,
    text: CString,
    rows: Vec<Row>,
}

struct Row {
    name: CString,
    kind: CString,
    local_addr: Option<CString>,
    port: u16,
    connections: usize,
}

impl sdm_status_report {
    pub(crate) fn new(status: Status) -> sdm_status_report {
        let rows = status
            .resources
            .iter()
            .map(|r| {
                let (local_addr, connections) = match &r.state {
                    ConnectionState::Connected {
                        local_addr,
                        connections,
                    } => (Some(cstring(&local_addr.to_string())), *connections),
                    _ => (None, 0),
                };
                Row {
                    name: cstring(&r.resource.name),
                    kind: cstring(&r.resource.kind.to_string()),
                    local_addr,
                    port: r.port().unwrap_or(0),
                    connections,
                }
            })
            .collect();
        sdm_status_report {
            account: cstring(&status.account.name),
            text: cstring(&status.to_string()),
            rows,
        }
    }
}

/// # Safety
/// `report` is NULL or live.
unsafe fn row<'a>(report: *const sdm_status_report, index: usize) -> Result<&'a Row, Failure> {
    // SAFETY: guaranteed by the caller.
    let report = unsafe { handle(report, "report") }?;
    report
        .rows
        .get(index)
        .ok_or_else(|| Failure::index("status row", index, report.rows.len()))
}

/// Writes one value of a row, behind the boundary.
///
/// # Safety
/// `report` is NULL or live; `value_out` is NULL or writable.
unsafe fn row_value<T>(
    report: *const sdm_status_report,
    index: usize,
    value_out: *mut T,
    name: &str,
    value: impl FnOnce(&Row) -> T,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let row = unsafe { row(report, index) }?;
        let value_out = out(value_out, name)?;
        // SAFETY: checked non-NULL.
        unsafe { write(value_out, value(row)) };
        Ok(())
    })
}

/// The number of resources (rows) in `report`. NULL: returns 0. Thread-safe.
///
/// # Safety
/// `report` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_len(report: *const sdm_status_report) -> usize {
    // SAFETY: guaranteed by the caller.
    guard(0, || unsafe { report.as_ref() }.map_or(0, |r| r.rows.len()))
}

/// The account name the report is for.
///
/// Ownership: `*name_out` is borrowed from `report`; valid until `sdm_status_report_free`.
/// NULL `report` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `report` is NULL or live; `name_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_account(
    report: *const sdm_status_report,
    name_out: *mut *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let report = unsafe { handle(report, "report") }?;
        let name_out = out(name_out, "name_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write(name_out, report.account.as_ptr()) };
        Ok(())
    })
}

/// The report as the table `sdm status` prints (a section per resource class, aligned
/// columns, a trailing newline).
///
/// Ownership: `*text_out` is borrowed from `report`; valid until `sdm_status_report_free`.
/// NULL `report` or `text_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `report` is NULL or live; `text_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_text(
    report: *const sdm_status_report,
    text_out: *mut *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let report = unsafe { handle(report, "report") }?;
        let text_out = out(text_out, "text_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write(text_out, report.text.as_ptr()) };
        Ok(())
    })
}

/// The name of the resource in row `index`.
///
/// Ownership: `*name_out` is borrowed from `report`; valid until `sdm_status_report_free`.
/// NULL `report` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`; `index` out of range:
/// `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `report` is NULL or live; `name_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_name(
    report: *const sdm_status_report,
    index: usize,
    name_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe { row_value(report, index, name_out, "name_out", |r| r.name.as_ptr()) }
}

/// The kind (`"postgres"`, `"tcp"`, …) of the resource in row `index`. Ownership, NULL, range
/// and threads: as `sdm_status_report_name`.
///
/// # Safety
/// `report` is NULL or live; `kind_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_kind(
    report: *const sdm_status_report,
    index: usize,
    kind_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe { row_value(report, index, kind_out, "kind_out", |r| r.kind.as_ptr()) }
}

/// Whether this session has a tunnel open to the resource in row `index`. NULL, range and
/// threads: as `sdm_status_report_name`.
///
/// # Safety
/// `report` is NULL or live; `connected_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_connected(
    report: *const sdm_status_report,
    index: usize,
    connected_out: *mut bool,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        row_value(report, index, connected_out, "connected_out", |r| {
            r.local_addr.is_some()
        })
    }
}

/// The local address (`"127.0.0.1:40001"`) of the open tunnel in row `index`, or NULL when
/// the resource is not connected. Ownership, NULL, range and threads: as
/// `sdm_status_report_name`.
///
/// # Safety
/// `report` is NULL or live; `addr_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_local_addr(
    report: *const sdm_status_report,
    index: usize,
    addr_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        row_value(report, index, addr_out, "addr_out", |r| {
            r.local_addr
                .as_ref()
                .map_or(std::ptr::null(), |a| a.as_ptr())
        })
    }
}

/// The local port of row `index`: the open tunnel's, else the resource's fixed port, else 0.
/// NULL, range and threads: as `sdm_status_report_name`.
///
/// # Safety
/// `report` is NULL or live; `port_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_port(
    report: *const sdm_status_report,
    index: usize,
    port_out: *mut u16,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe { row_value(report, index, port_out, "port_out", |r| r.port) }
}

/// The number of local connections the open tunnel of row `index` was carrying (0 when not
/// connected). NULL, range and threads: as `sdm_status_report_name`.
///
/// # Safety
/// `report` is NULL or live; `connections_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_connections(
    report: *const sdm_status_report,
    index: usize,
    connections_out: *mut usize,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        row_value(report, index, connections_out, "connections_out", |r| {
            r.connections
        })
    }
}

/// Frees a status report; texts borrowed from it become invalid.
///
/// NULL: does nothing. Must not run while another thread uses the same report.
///
/// # Safety
/// `report` is NULL or a report from `sdm_session_status` that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_status_report_free(report: *mut sdm_status_report) {
    if !report.is_null() {
        guard((), || {
            // SAFETY: created by Box::into_raw, handed back exactly once.
            drop(unsafe { Box::from_raw(report) });
        });
    }
}
