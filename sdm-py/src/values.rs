//! Core values as plain Python values; the package wraps them in typed, frozen classes.

use std::collections::BTreeMap;

use sdm_core::{ConnectionState, Resource, Status};

/// `(id, name, kind, tags, port, healthy)`; see `sdm.Resource`.
pub(crate) type ResourceTuple = (
    String,
    String,
    String,
    BTreeMap<String, String>,
    Option<u16>,
    bool,
);

/// `(resource, connected, (host, port) or None, connections, port or None)`; see
/// `sdm.ResourceStatus`.
pub(crate) type StatusRow = (
    ResourceTuple,
    bool,
    Option<(String, u16)>,
    usize,
    Option<u16>,
);

/// `(account name, rows, table text)`; see `sdm.Status`.
pub(crate) type StatusTuple = (String, Vec<StatusRow>, String);

pub(crate) fn resource(r: &Resource) -> ResourceTuple {
    (
        r.id.to_string(),
        r.name.clone(),
        r.kind.as_str().to_owned(),
        r.tags.clone(),
        r.port_override,
        r.healthy,
    )
}

pub(crate) fn status(s: &Status) -> StatusTuple {
    let rows = s
        .resources
        .iter()
        .map(|row| {
            let (address, connections) = match &row.state {
                ConnectionState::Connected {
                    local_addr,
                    connections,
                } => (
                    Some((local_addr.ip().to_string(), local_addr.port())),
                    *connections,
                ),
                _ => (None, 0),
            };
            (
                resource(&row.resource),
                row.is_connected(),
                address,
                connections,
                row.port(),
            )
        })
        .collect();
    (s.account.name.clone(), rows, s.to_string())
}
