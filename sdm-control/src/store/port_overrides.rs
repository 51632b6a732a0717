//! Port overrides, the rules both backends follow: the setting ("assign every resource a unique
//! local port from a range"), how it is kept in the settings table, and which ports to hand
//! out. The backends only read the resources' ports and write the answer, inside the
//! transaction that also creates or changes a resource, so that two writers can never hand out
//! one port twice.
//!
//! The rules:
//! * an explicit port (given by an admin) is never moved, and no two resources share one: a
//!   resource asking for a port another holds is refused, naming the holder;
//! * with the setting on, a resource without an explicit port gets the lowest free port of the
//!   range when it is created, and every existing resource without one gets one when the
//!   setting is switched on;
//! * changing the range moves only the assigned ports that fall outside it (ports that jobs
//!   already use stay where they are); regenerating assigns every assigned port again, lowest
//!   first in name order (packing them at the start of the range);
//! * switching the setting off takes back the ports it assigned, so that a resource's port
//!   always means what the settings say;
//! * when the range has too few free ports for what is asked, nothing changes.

use std::collections::BTreeSet;

use sdm_proto::api::PortRange;
use uuid::Uuid;

use super::StoreError;

/// Key of the setting in the settings table.
pub const SETTING_KEY: &str = "org.port_overrides";

/// The port-overrides setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortOverrides {
    /// Whether resources without an explicit port get one from `range`.
    pub assign: bool,
    /// Where assigned ports come from.
    pub range: PortRange,
}

impl PortOverrides {
    /// The stored form: `on 20000-29999` or `off 20000-29999`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let state = if self.assign { "on" } else { "off" };
        format!("{state} {}", self.range).into_bytes()
    }

    /// The setting from its stored form; off with the default range when never set.
    pub(crate) fn decode(stored: Option<&[u8]>) -> Result<PortOverrides, StoreError> {
        let Some(bytes) = stored else {
            return Ok(PortOverrides::default());
        };
        let bad = |why: String| {
            StoreError::backend(
                "read the port-overrides setting",
                format!(
                    "{SETTING_KEY} holds {:?}: {why}",
                    String::from_utf8_lossy(bytes)
                ),
            )
        };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
        let (state, range) = text
            .split_once(' ')
            .ok_or_else(|| bad("expected `on|off FIRST-LAST`".into()))?;
        let assign = match state {
            "on" => true,
            "off" => false,
            _ => return Err(bad("expected `on` or `off` first".into())),
        };
        Ok(PortOverrides {
            assign,
            range: range.parse().map_err(bad)?,
        })
    }
}

/// A change of the port-overrides setting: only the fields set change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortOverridesChange {
    /// Switch assigning on or off.
    pub assign: Option<bool>,
    /// A new range.
    pub range: Option<PortRange>,
    /// Assign every assigned port again.
    pub regenerate: bool,
}

impl PortOverridesChange {
    /// `setting` with the change applied.
    pub(crate) fn applied_to(&self, setting: PortOverrides) -> PortOverrides {
        PortOverrides {
            assign: self.assign.unwrap_or(setting.assign),
            range: self.range.unwrap_or(setting.range),
        }
    }
}

/// A resource's local port, as the assigner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortHolder {
    /// The resource.
    pub id: Uuid,
    /// Its name (assignment goes in name order, so that it is repeatable).
    pub name: String,
    /// Its local port, if it has one.
    pub port: Option<u16>,
    /// Whether the setting assigned `port`.
    pub assigned: bool,
}

/// A resource's new local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortChange {
    /// The resource.
    pub id: Uuid,
    /// Its new port (`None`: none).
    pub port: Option<u16>,
    /// Whether the setting assigned it.
    pub assigned: bool,
}

/// The changes that bring `holders` (sorted by name) in line with `setting`; with
/// `regenerate`, every assigned port is assigned again. `PortsExhausted` when the range has
/// too few free ports.
pub(crate) fn plan(
    setting: PortOverrides,
    holders: &[PortHolder],
    regenerate: bool,
) -> Result<Vec<PortChange>, StoreError> {
    if !setting.assign {
        return Ok(holders
            .iter()
            .filter(|h| h.assigned)
            .map(|h| PortChange {
                id: h.id,
                port: None,
                assigned: false,
            })
            .collect());
    }
    let mut taken: BTreeSet<u16> = holders
        .iter()
        .filter(|h| !h.assigned)
        .filter_map(|h| h.port)
        .collect();
    let mut needy = Vec::new();
    for h in holders {
        match (h.port, h.assigned) {
            (Some(_), false) => {}
            // Kept: in the range, not wanted by an explicit port, not a duplicate.
            (Some(p), true) if !regenerate && setting.range.contains(p) && taken.insert(p) => {}
            _ => needy.push(h),
        }
    }
    let mut free = setting.range.ports().filter(|p| !taken.contains(p));
    let mut changes = Vec::with_capacity(needy.len());
    for h in &needy {
        let Some(port) = free.next() else {
            return Err(exhausted(setting.range, &taken, needy.len()));
        };
        if h.port != Some(port) || !h.assigned {
            changes.push(PortChange {
                id: h.id,
                port: Some(port),
                assigned: true,
            });
        }
    }
    Ok(changes)
}

/// The lowest port of `range` that no resource in `holders` holds, for one new resource.
pub(crate) fn first_free(range: PortRange, holders: &[PortHolder]) -> Result<u16, StoreError> {
    let taken: BTreeSet<u16> = holders.iter().filter_map(|h| h.port).collect();
    range
        .ports()
        .find(|p| !taken.contains(p))
        .ok_or_else(|| exhausted(range, &taken, 1))
}

/// The resource other than `except` that holds `port`, in `holders`.
pub(crate) fn holder_of(holders: &[PortHolder], port: u16, except: Uuid) -> Option<&PortHolder> {
    holders
        .iter()
        .find(|h| h.port == Some(port) && h.id != except)
}

fn exhausted(range: PortRange, taken: &BTreeSet<u16>, needed: usize) -> StoreError {
    let held = taken.iter().filter(|p| range.contains(**p)).count();
    StoreError::PortsExhausted {
        range,
        held,
        needed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(name: &str, port: Option<u16>, assigned: bool) -> PortHolder {
        PortHolder {
            id: Uuid::new_v4(),
            name: name.into(),
            port,
            assigned,
        }
    }

    fn on(first: u16, last: u16) -> PortOverrides {
        PortOverrides {
            assign: true,
            range: PortRange::new(first, last).unwrap(),
        }
    }

    fn ports(holders: &[PortHolder], changes: &[PortChange]) -> Vec<(String, Option<u16>, bool)> {
        holders
            .iter()
            .map(|h| match changes.iter().find(|c| c.id == h.id) {
                Some(c) => (h.name.clone(), c.port, c.assigned),
                None => (h.name.clone(), h.port, h.assigned),
            })
            .collect()
    }

    #[test]
    fn the_setting_round_trips_and_bad_stored_values_are_errors() {
        assert_eq!(
            PortOverrides::decode(None).unwrap(),
            PortOverrides::default()
        );
        let s = on(100, 200);
        assert_eq!(s.encode(), b"on 100-200");
        assert_eq!(PortOverrides::decode(Some(&s.encode())).unwrap(), s);
        for bad in [&b"maybe 1-2"[..], b"on", b"on 5-1", b"\xff"] {
            let e = PortOverrides::decode(Some(bad)).unwrap_err();
            assert!(matches!(e, StoreError::Backend { .. }), "{e}");
        }
    }

    #[test]
    fn switching_on_fills_gaps_around_explicit_ports_in_name_order() {
        let holders = [
            holder("a", None, false),
            holder("b", Some(101), false),
            holder("c", None, false),
            holder("d", Some(5432), false),
        ];
        let changes = plan(on(100, 103), &holders, false).unwrap();
        assert_eq!(
            ports(&holders, &changes),
            [
                ("a".into(), Some(100), true),
                ("b".into(), Some(101), false),
                ("c".into(), Some(102), true),
                ("d".into(), Some(5432), false),
            ]
        );
    }

    #[test]
    fn a_new_range_moves_only_ports_outside_it_and_regenerating_packs_them() {
        let holders = [
            holder("a", Some(105), true),
            holder("b", Some(90), true),
            holder("c", Some(100), false),
        ];
        let changes = plan(on(100, 110), &holders, false).unwrap();
        assert_eq!(
            ports(&holders, &changes),
            [
                ("a".into(), Some(105), true),
                ("b".into(), Some(101), true),
                ("c".into(), Some(100), false),
            ]
        );
        let changes = plan(on(100, 110), &holders, true).unwrap();
        assert_eq!(
            ports(&holders, &changes),
            [
                ("a".into(), Some(101), true),
                ("b".into(), Some(102), true),
                ("c".into(), Some(100), false),
            ]
        );
    }

    #[test]
    fn too_small_a_range_is_refused_and_off_takes_back_only_assigned_ports() {
        let holders = [
            holder("a", None, false),
            holder("b", Some(100), false),
            holder("c", None, false),
        ];
        let e = plan(on(100, 101), &holders, false).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::PortsExhausted {
                    held: 1,
                    needed: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("100-101"), "{e}");
        let holders = [holder("a", Some(100), true), holder("b", Some(7), false)];
        let off = PortOverrides {
            assign: false,
            ..on(100, 101)
        };
        assert_eq!(
            ports(&holders, &plan(off, &holders, false).unwrap()),
            [("a".into(), None, false), ("b".into(), Some(7), false)]
        );
        assert_eq!(first_free(on(7, 8).range, &holders).unwrap(), 8);
        assert!(first_free(on(7, 7).range, &holders).is_err());
    }
}
