//! Recording an ssh server's host key: the first key wins, even between two control planes.

use super::{Fixture, resource};
use crate::store::{ResourceRecord, StoreError};
use sdm_proto::ResourceKind;
use uuid::Uuid;

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub(crate) async fn ssh_host_keys_are_recorded_once_even_by_racing_writers(f: &Fixture) {
    let web = ResourceRecord {
        kind: ResourceKind::Ssh,
        port: 22,
        ssh_certificate_authority: true,
        password_sealed: None,
        ..resource("web")
    };
    f.a.create_resource(web.clone()).await.unwrap();
    let stored = f.b.get_resource(web.id).await.unwrap().unwrap();
    assert!(stored.ssh_certificate_authority);
    assert_eq!(stored.ssh_host_key, None);

    // Two control planes see a first connection at once, with different keys: one wins.
    let epoch = f.a.revocation_epoch().await.unwrap();
    let (a, b) = (f.a.clone(), f.b.clone());
    let (won_a, won_b) = tokio::join!(
        tokio::spawn(async move { a.record_ssh_host_key(web.id, KEY_A).await }),
        tokio::spawn(async move { b.record_ssh_host_key(web.id, KEY_B).await }),
    );
    let (won_a, won_b) = (won_a.unwrap().unwrap(), won_b.unwrap().unwrap());
    assert!(won_a != won_b, "exactly one key is recorded");
    let winner = if won_a { KEY_A } else { KEY_B };
    let loser = if won_a { KEY_B } else { KEY_A };
    let stored = f.a.get_resource(web.id).await.unwrap().unwrap();
    assert_eq!(stored.ssh_host_key.as_deref(), Some(winner));
    // Answers remembered before the key was recorded are stale now.
    assert!(f.b.revocation_epoch().await.unwrap() > epoch);

    // The recorded key is accepted again, any other refused, nothing changes.
    let epoch = f.a.revocation_epoch().await.unwrap();
    assert!(f.b.record_ssh_host_key(web.id, winner).await.unwrap());
    assert!(!f.a.record_ssh_host_key(web.id, loser).await.unwrap());
    assert_eq!(f.a.revocation_epoch().await.unwrap(), epoch);

    // An admin forgets the key (the server was reinstalled): the next one is recorded.
    f.a.update_resource(ResourceRecord {
        ssh_host_key: None,
        ..stored
    })
    .await
    .unwrap();
    assert!(f.b.record_ssh_host_key(web.id, loser).await.unwrap());
    assert_eq!(
        f.a.get_resource(web.id)
            .await
            .unwrap()
            .unwrap()
            .ssh_host_key
            .as_deref(),
        Some(loser)
    );

    assert!(matches!(
        f.a.record_ssh_host_key(Uuid::new_v4(), KEY_A).await,
        Err(StoreError::NotFound(_))
    ));
}
