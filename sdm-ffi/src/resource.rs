//! `sdm_resource_list`: the resources granted to an account, with indexed accessors.

use std::ffi::{CString, c_char};

use sdm_core::Resource;

use crate::boundary::{call, cstring, guard, handle, out, write};
use crate::error::{Failure, sdm_status};

/// The resources granted to an account, sorted by name: a snapshot from
/// `sdm_session_list_resources`, independent of the session. Free with
/// `sdm_resource_list_free`. Immutable, so every accessor is thread-safe.
#[allow(non_camel_case_types)]
pub struct sdm_resource_list {
    items: Vec<Item>,
}

struct Item {
    id: CString,
    name: CString,
    kind: CString,
    port: u16,
    healthy: bool,
    tags: Vec<(CString, CString)>,
    ssh_host_key: Option<CString>,
}

impl sdm_resource_list {
    pub(crate) fn new(resources: Vec<Resource>) -> sdm_resource_list {
        let items = resources
            .iter()
            .map(|r| Item {
                id: cstring(&r.id.to_string()),
                name: cstring(&r.name),
                kind: cstring(&r.kind.to_string()),
                port: r.port_override.unwrap_or(0),
                healthy: r.healthy,
                tags: r
                    .tags
                    .iter()
                    .map(|(k, v)| (cstring(k), cstring(v)))
                    .collect(),
                ssh_host_key: r.ssh_host_key.as_deref().map(cstring),
            })
            .collect();
        sdm_resource_list { items }
    }
}

/// # Safety
/// `list` is NULL or live.
unsafe fn item<'a>(list: *const sdm_resource_list, index: usize) -> Result<&'a Item, Failure> {
    // SAFETY: guaranteed by the caller.
    let list = unsafe { handle(list, "list") }?;
    list.items
        .get(index)
        .ok_or_else(|| Failure::index("resource", index, list.items.len()))
}

/// # Safety
/// `list` is NULL or live; `text_out` is NULL or writable.
unsafe fn item_text(
    list: *const sdm_resource_list,
    index: usize,
    text_out: *mut *const c_char,
    field: impl FnOnce(&Item) -> &CString,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let item = unsafe { item(list, index) }?;
        let text_out = out(text_out, "text_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write(text_out, field(item).as_ptr()) };
        Ok(())
    })
}

/// The number of resources in `list`. NULL: returns 0. Thread-safe.
///
/// # Safety
/// `list` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_len(list: *const sdm_resource_list) -> usize {
    // SAFETY: guaranteed by the caller.
    guard(0, || unsafe { list.as_ref() }.map_or(0, |l| l.items.len()))
}

/// The id (UUID text) of resource `index`.
///
/// Ownership: `*id_out` is borrowed from `list`; valid until `sdm_resource_list_free`.
/// NULL `list` or `id_out`: `SDM_STATUS_NULL_ARGUMENT`; `index` out of range:
/// `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `list` is NULL or live; `id_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_id(
    list: *const sdm_resource_list,
    index: usize,
    id_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe { item_text(list, index, id_out, |i| &i.id) }
}

/// The name of resource `index` (what `sdm_session_connect` takes). Ownership, NULL, range and
/// threads: as `sdm_resource_list_id`.
///
/// # Safety
/// `list` is NULL or live; `name_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_name(
    list: *const sdm_resource_list,
    index: usize,
    name_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe { item_text(list, index, name_out, |i| &i.name) }
}

/// The kind of resource `index`: `"postgres"`, `"mysql"`, `"redis"`, `"ssh"`, `"tcp"`, or any
/// other lowercase name a newer server uses. Ownership, NULL, range and threads: as
/// `sdm_resource_list_id`.
///
/// # Safety
/// `list` is NULL or live; `kind_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_kind(
    list: *const sdm_resource_list,
    index: usize,
    kind_out: *mut *const c_char,
) -> sdm_status {
    // SAFETY: forwarded from the caller.
    unsafe { item_text(list, index, kind_out, |i| &i.kind) }
}

/// The fixed local port tunnels to resource `index` listen on, or 0 when the admin set none
/// (a tunnel then takes a free port). NULL `list` or `port_out`: `SDM_STATUS_NULL_ARGUMENT`;
/// `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
///
/// # Safety
/// `list` is NULL or live; `port_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_port(
    list: *const sdm_resource_list,
    index: usize,
    port_out: *mut u16,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let item = unsafe { item(list, index) }?;
        let port_out = out(port_out, "port_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write(port_out, item.port) };
        Ok(())
    })
}

/// The host key the gateway presents for ssh resource `index`, as a known-hosts key
/// (`ssh-ed25519 AAAA…`), the same on every gateway: pin it for the tunnel's address (with
/// `HostKeyAlias`, as `sdm ssh-config` does). `*key_out` is NULL for other kinds. Owned by
/// `list`: valid until `sdm_resource_list_free`. NULL `list` or `key_out`:
/// `SDM_STATUS_NULL_ARGUMENT`; `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`.
/// Thread-safe.
///
/// # Safety
/// `list` is NULL or live; `key_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_ssh_host_key(
    list: *const sdm_resource_list,
    index: usize,
    key_out: *mut *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let item = unsafe { item(list, index) }?;
        let key_out = out(key_out, "key_out")?;
        let key = item
            .ssh_host_key
            .as_ref()
            .map_or(std::ptr::null(), |k| k.as_ptr());
        // SAFETY: checked non-NULL.
        unsafe { write(key_out, key) };
        Ok(())
    })
}

/// Whether a live gateway serves resource `index`. NULL `list` or `healthy_out`:
/// `SDM_STATUS_NULL_ARGUMENT`; `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`.
/// Thread-safe.
///
/// # Safety
/// `list` is NULL or live; `healthy_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_healthy(
    list: *const sdm_resource_list,
    index: usize,
    healthy_out: *mut bool,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let item = unsafe { item(list, index) }?;
        let healthy_out = out(healthy_out, "healthy_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write(healthy_out, item.healthy) };
        Ok(())
    })
}

/// The number of tags of resource `index`. NULL `list` or `count_out`:
/// `SDM_STATUS_NULL_ARGUMENT`; `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`.
/// Thread-safe.
///
/// # Safety
/// `list` is NULL or live; `count_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_tag_count(
    list: *const sdm_resource_list,
    index: usize,
    count_out: *mut usize,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let item = unsafe { item(list, index) }?;
        let count_out = out(count_out, "count_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write(count_out, item.tags.len()) };
        Ok(())
    })
}

/// The `tag_index`th tag of resource `index` (tags are sorted by key).
///
/// Ownership: `*key_out` and `*value_out` are borrowed from `list`; valid until
/// `sdm_resource_list_free`. NULL `list`, `key_out` or `value_out`:
/// `SDM_STATUS_NULL_ARGUMENT`; either index out of range: `SDM_STATUS_INVALID_ARGUMENT`.
/// Thread-safe.
///
/// # Safety
/// `list` is NULL or live; `key_out` and `value_out` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_tag(
    list: *const sdm_resource_list,
    index: usize,
    tag_index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const c_char,
) -> sdm_status {
    call(std::ptr::null_mut(), || {
        // SAFETY: guaranteed by the caller.
        let item = unsafe { item(list, index) }?;
        let key_out = out(key_out, "key_out")?;
        let value_out = out(value_out, "value_out")?;
        let (key, value) = item
            .tags
            .get(tag_index)
            .ok_or_else(|| Failure::index("tag", tag_index, item.tags.len()))?;
        // SAFETY: both checked non-NULL.
        unsafe {
            write(key_out, key.as_ptr());
            write(value_out, value.as_ptr());
        }
        Ok(())
    })
}

/// Frees a resource list; texts borrowed from it become invalid.
///
/// NULL: does nothing. Must not run while another thread uses the same list.
///
/// # Safety
/// `list` is NULL or a list from `sdm_session_list_resources` that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_resource_list_free(list: *mut sdm_resource_list) {
    if !list.is_null() {
        guard((), || {
            // SAFETY: created by Box::into_raw, handed back exactly once.
            drop(unsafe { Box::from_raw(list) });
        });
    }
}
