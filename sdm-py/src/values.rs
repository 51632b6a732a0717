//! Core values as plain Python values; the package wraps them in typed, frozen classes.

use std::collections::BTreeMap;

use sdm_core::{ConnectionState, Resource, Status};

/// `(id, name, kind, tags, port, healthy, ssh host key)`; see `sdm.Resource`.
pub(crate) type ResourceTuple = (
    String,
    String,
    String,
    BTreeMap<String, String>,
    Option<u16>,
    bool,
    Option<String>,
);

/// `(resource, connected, (host, port) or None, connections, port or None, socket path or
/// None)`; see `sdm.ResourceStatus`.
pub(crate) type StatusRow = (
    ResourceTuple,
    bool,
    Option<(String, u16)>,
    usize,
    Option<u16>,
    Option<String>,
);

/// `(account name, rows, table text, (why the control plane could not be asked, seconds the
/// open tunnels' leases still hold or None) or None)`; see `sdm.Status`.
pub(crate) type StatusTuple = (
    String,
    Vec<StatusRow>,
    String,
    Option<(String, Option<f64>)>,
);

pub(crate) fn resource(r: &Resource) -> ResourceTuple {
    (
        r.id.to_string(),
        r.name.clone(),
        r.kind.as_str().to_owned(),
        r.tags.clone(),
        r.port_override,
        r.healthy,
        r.ssh_host_key.clone(),
    )
}

pub(crate) fn status(s: &Status) -> StatusTuple {
    let rows = s
        .resources
        .iter()
        .map(|row| {
            let (address, unix_socket, connections) = match &row.state {
                ConnectionState::Connected {
                    local_addr,
                    connections,
                } => (
                    local_addr.tcp().map(|a| (a.ip().to_string(), a.port())),
                    local_addr
                        .unix_path()
                        .map(|p| p.to_string_lossy().into_owned()),
                    *connections,
                ),
                _ => (None, None, 0),
            };
            (
                resource(&row.resource),
                row.is_connected(),
                address,
                connections,
                row.port(),
                unix_socket,
            )
        })
        .collect();
    let unreachable = s
        .unreachable
        .as_ref()
        .map(|u| (u.to_string(), u.leases_hold_for.map(|d| d.as_secs_f64())));
    (s.account.name.clone(), rows, s.to_string(), unreachable)
}
