//! Port overrides: unique local ports, assigned from the setting's range.

use std::collections::BTreeSet;

use sdm_proto::api::PortRange;

use super::{Fixture, resource};
use crate::store::{PortOverrides, PortOverridesChange, ResourceRecord, Store, StoreError};

/// A resource that asks for no local port.
fn portless(name: &str) -> ResourceRecord {
    ResourceRecord {
        port_override: None,
        ..resource(name)
    }
}

fn on(first: u16, last: u16) -> PortOverrides {
    PortOverrides {
        assign: true,
        range: PortRange::new(first, last).unwrap(),
    }
}

/// Every resource's (name, local port, assigned), by name.
async fn ports(store: &dyn Store) -> Vec<(String, Option<u16>, bool)> {
    store
        .list_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.port_override, r.port_assigned))
        .collect()
}

/// Changes the setting to `setting` (whatever it was); how many ports moved.
async fn set(
    store: &dyn Store,
    setting: PortOverrides,
    regenerate: bool,
) -> Result<u64, StoreError> {
    let change = PortOverridesChange {
        assign: Some(setting.assign),
        range: Some(setting.range),
        regenerate,
    };
    let (stored, moved) = store.change_port_overrides(change).await?;
    assert_eq!(stored, setting);
    Ok(moved)
}

fn row(name: &str, port: Option<u16>, assigned: bool) -> (String, Option<u16>, bool) {
    (name.to_owned(), port, assigned)
}

pub(crate) async fn port_overrides_assign_unique_ports_and_keep_explicit_ones(f: &Fixture) {
    let (a, b) = (f.a.as_ref(), f.b.as_ref());
    assert_eq!(a.port_overrides().await.unwrap(), PortOverrides::default());
    let explicit = a
        .create_resource(ResourceRecord {
            port_override: Some(20001),
            ..resource("explicit")
        })
        .await
        .unwrap();
    assert!(!explicit.port_assigned);
    // Off: no port is given.
    let early = a.create_resource(portless("early")).await.unwrap();
    assert_eq!((early.port_override, early.port_assigned), (None, false));

    // Switching on gives the resource without a port the lowest free one, around the
    // explicit port; the other handle sees the setting.
    assert_eq!(set(a, on(20000, 20003), false).await.unwrap(), 1);
    assert_eq!(b.port_overrides().await.unwrap(), on(20000, 20003));
    let late = b.create_resource(portless("late")).await.unwrap();
    assert_eq!(
        (late.port_override, late.port_assigned),
        (Some(20002), true)
    );
    assert_eq!(
        a.get_resource(late.id)
            .await
            .unwrap()
            .unwrap()
            .port_override,
        Some(20002)
    );
    assert_eq!(
        ports(a).await,
        [
            row("early", Some(20000), true),
            row("explicit", Some(20001), false),
            row("late", Some(20002), true),
        ]
    );

    // An explicit port another resource holds is refused, naming it; on create and update.
    let e = a
        .create_resource(ResourceRecord {
            port_override: Some(20002),
            ..resource("thief")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::PortTaken { port: 20002, holder } if holder == "late"),
        "{e:?}"
    );
    assert!(a.find_resource_by_name("thief").await.unwrap().is_none());
    let e = b
        .update_resource(ResourceRecord {
            port_override: Some(20001),
            ..early.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::PortTaken { port: 20001, holder } if holder == "explicit"),
        "{e:?}"
    );
    // Keeping one's own port is no collision.
    let kept = b
        .update_resource(a.get_resource(late.id).await.unwrap().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (kept.port_override, kept.port_assigned),
        (Some(20002), true)
    );

    // A new range moves the assigned ports into it; the explicit one stays.
    assert_eq!(set(a, on(30000, 30001), false).await.unwrap(), 2);
    assert_eq!(
        ports(b).await,
        [
            row("early", Some(30000), true),
            row("explicit", Some(20001), false),
            row("late", Some(30001), true),
        ]
    );
    // Too small a range, or a full one, changes nothing.
    let before = ports(a).await;
    let e = set(a, on(30000, 30000), false).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::PortsExhausted {
                held: 1,
                needed: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(a.port_overrides().await.unwrap(), on(30000, 30001));
    let e = b
        .create_resource(portless("one-too-many"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::PortsExhausted {
                held: 2,
                needed: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        a.find_resource_by_name("one-too-many")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(ports(a).await, before);

    // Regenerating packs the assigned ports at the start, in name order.
    a.delete_resource(early.id).await.unwrap();
    assert_eq!(set(b, on(30000, 30001), true).await.unwrap(), 1);
    assert_eq!(
        ports(a).await,
        [
            row("explicit", Some(20001), false),
            row("late", Some(30000), true),
        ]
    );
    // Giving up an explicit port while ports are assigned assigns one.
    let explicit = a
        .update_resource(ResourceRecord {
            port_override: None,
            ..explicit
        })
        .await
        .unwrap();
    assert_eq!(
        (explicit.port_override, explicit.port_assigned),
        (Some(30001), true)
    );
    // Turning an assigned port into an explicit one keeps it through regeneration.
    let late = a.find_resource_by_name("late").await.unwrap().unwrap();
    b.update_resource(ResourceRecord {
        port_assigned: false,
        ..late
    })
    .await
    .unwrap();

    // Off takes back the assigned ports only.
    let off = PortOverrides {
        assign: false,
        ..on(30000, 30001)
    };
    assert_eq!(set(a, off, false).await.unwrap(), 1);
    assert_eq!(
        ports(b).await,
        [
            row("explicit", None, false),
            row("late", Some(30000), false),
        ]
    );
    assert_eq!(b.port_overrides().await.unwrap(), off);

    // A change names only what changes: switching on again keeps the stored range.
    let (stored, moved) = b
        .change_port_overrides(PortOverridesChange {
            assign: Some(true),
            ..PortOverridesChange::default()
        })
        .await
        .unwrap();
    assert_eq!((stored, moved), (on(30000, 30001), 1));
    assert_eq!(
        ports(a).await,
        [
            row("explicit", Some(30001), true),
            row("late", Some(30000), false),
        ]
    );
}

pub(crate) async fn concurrent_creations_and_switching_on_never_share_a_port(f: &Fixture) {
    // Resources that need a port when the setting goes on, while more are created at once on
    // both handles (two control planes on PostgreSQL).
    for i in 0..6 {
        f.a.create_resource(portless(&format!("before-{i}")))
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    {
        let a = f.a.clone();
        tasks.spawn(async move {
            set(a.as_ref(), on(21000, 21999), false).await.unwrap();
        });
    }
    for i in 0..16 {
        let store = if i % 2 == 0 { f.a.clone() } else { f.b.clone() };
        tasks.spawn(async move {
            store
                .create_resource(portless(&format!("racer-{i:02}")))
                .await
                .unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // Whichever came first, every resource ends with a port of its own, in the range.
    let all = ports(f.b.as_ref()).await;
    assert_eq!(all.len(), 22);
    let distinct: BTreeSet<u16> = all
        .iter()
        .map(|(name, port, assigned)| {
            assert!(assigned, "{name} {port:?}");
            port.unwrap_or_else(|| panic!("{name} has no port: {all:?}"))
        })
        .collect();
    assert_eq!(distinct.len(), 22, "{all:?}");
    assert!(
        distinct.iter().all(|p| (21000..=21999).contains(p)),
        "{all:?}"
    );

    // Created at once with the setting on from the start: still no port twice.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { f.a.clone() } else { f.b.clone() };
        tasks.spawn(async move {
            store
                .create_resource(portless(&format!("second-{i:02}")))
                .await
                .unwrap()
                .port_override
                .unwrap()
        });
    }
    let mut seen = distinct;
    while let Some(port) = tasks.join_next().await {
        assert!(seen.insert(port.unwrap()), "port given twice");
    }
    assert_eq!(seen.len(), 38);
}
