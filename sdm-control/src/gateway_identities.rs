//! Identities of standalone gateways: a name, the tags it may serve under, and the hash of its
//! token (`sdm_gw_…`), created by an admin.
//!
//! They live in the store's settings (one entry per token, one per name), not in a table of
//! their own, so they need no schema change and travel with every backend and with
//! `sdm-server migrate`, which copy settings as they are. Keys:
//!
//! | key | value |
//! |---|---|
//! | `gateway.token.<token id>` | the identity as JSON (the token's secret only as SHA-256) |
//! | `gateway.name.<name>` | the token id currently holding the name |
//!
//! The name is claimed with an insert-if-absent before the identity is written, so two control
//! planes creating the same name at once cannot both succeed. A deleted identity keeps its
//! entry, marked revoked, and its token is refused from then on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{GatewayRecord, Store, StoreError};

const TOKEN_KEY: &str = "gateway.token.";
const NAME_KEY: &str = "gateway.name.";
/// How long the lease endpoint trusts the tags it read for a gateway.
const TAG_CACHE_TTL: Duration = Duration::from_secs(5);

/// A gateway identity as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayIdentity {
    /// The id of its token.
    pub token_id: Uuid,
    /// Unique name; also the name of its row among the registered gateways.
    pub name: String,
    /// The tags an admin allowed.
    pub tags: BTreeMap<String, String>,
    /// The tags it registered with, a subset of `tags`; `None` before its first registration.
    #[serde(default)]
    pub registered_tags: Option<BTreeMap<String, String>>,
    /// SHA-256 of the token's secret, hex.
    secret_hash: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it was deleted.
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for GatewayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayIdentity")
            .field("token_id", &self.token_id)
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("registered_tags", &self.registered_tags)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl GatewayIdentity {
    /// A new identity for the token with this id and secret hash.
    pub fn new(
        token_id: Uuid,
        secret_hash: &[u8],
        name: String,
        tags: BTreeMap<String, String>,
        now: i64,
    ) -> GatewayIdentity {
        GatewayIdentity {
            token_id,
            name,
            tags,
            registered_tags: None,
            secret_hash: hex(secret_hash),
            created_at: now,
            revoked_at: None,
        }
    }

    /// Whether `token` is this identity's live token.
    pub fn accepts(&self, token: &sdm_proto::Token) -> bool {
        self.revoked_at.is_none()
            && token.id == self.token_id
            && decode_hex(&self.secret_hash).is_some_and(|hash| token.matches_hash(&hash))
    }

    /// The tags it serves under now.
    pub fn serving_tags(&self) -> &BTreeMap<String, String> {
        self.registered_tags.as_ref().unwrap_or(&self.tags)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::backend("read a gateway identity", e)
}

/// The identity whose token has this id, if any (its secret not checked: see
/// [`GatewayIdentity::accepts`]).
pub async fn read(
    store: &dyn Store,
    token_id: Uuid,
) -> Result<Option<GatewayIdentity>, StoreError> {
    match store.get_setting(&format!("{TOKEN_KEY}{token_id}")).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(corrupt),
        None => Ok(None),
    }
}

/// Stores `identity` (a new one, or a change to an existing one).
pub async fn write(store: &dyn Store, identity: &GatewayIdentity) -> Result<(), StoreError> {
    let bytes =
        serde_json::to_vec(identity).map_err(|e| StoreError::backend("store a gateway", e))?;
    store
        .set_setting(&format!("{TOKEN_KEY}{}", identity.token_id), bytes)
        .await
}

/// The live identity holding `name`.
pub async fn find_by_name(
    store: &dyn Store,
    name: &str,
) -> Result<Option<GatewayIdentity>, StoreError> {
    let Some(pointer) = store.get_setting(&format!("{NAME_KEY}{name}")).await? else {
        return Ok(None);
    };
    let Some(token_id) = std::str::from_utf8(&pointer)
        .ok()
        .and_then(|t| Uuid::parse_str(t).ok())
    else {
        return Ok(None);
    };
    Ok(read(store, token_id)
        .await?
        .filter(|i| i.revoked_at.is_none() && i.name == name))
}

/// The live identity of `token`, if the token is its current one.
pub async fn authenticate(
    store: &dyn Store,
    token: &sdm_proto::Token,
) -> Result<Option<GatewayIdentity>, StoreError> {
    Ok(read(store, token.id).await?.filter(|i| i.accepts(token)))
}

/// Why an identity could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// The name is taken (by another identity or by a control plane's embedded gateway).
    Taken(String),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for CreateError {
    fn from(e: StoreError) -> Self {
        CreateError::Store(e)
    }
}

/// Creates `identity` and a (never seen) registration row under its name; returns that row.
pub async fn create(
    store: &dyn Store,
    identity: &GatewayIdentity,
) -> Result<GatewayRecord, CreateError> {
    let name_key = format!("{NAME_KEY}{}", identity.name);
    let claim = identity.token_id.to_string().into_bytes();
    let rows = store.list_gateways().await?;
    if store.get_setting(&name_key).await?.is_some() {
        if find_by_name(store, &identity.name).await?.is_some() {
            return Err(CreateError::Taken(format!(
                "a gateway named {:?} already exists; delete it first or choose another name",
                identity.name
            )));
        }
        // The name's holder was deleted: take it over.
        store.set_setting(&name_key, claim).await?;
    } else {
        if rows.iter().any(|r| r.name == identity.name) {
            return Err(CreateError::Taken(format!(
                "the name {:?} is used by a gateway built into a control plane \
                 (sdm-server serve); choose another name",
                identity.name
            )));
        }
        if !store.put_setting_if_absent(&name_key, claim).await? {
            return Err(CreateError::Taken(format!(
                "a gateway named {:?} was created at the same moment; choose another name",
                identity.name
            )));
        }
    }
    write(store, identity).await?;
    // A row that was never seen, so that the gateway has a stable id from now on. It is not
    // offered to clients until it registers.
    let row = rows
        .into_iter()
        .find(|r| r.name == identity.name)
        .map(|mut r| {
            r.last_seen = 0;
            r
        })
        .unwrap_or_else(|| GatewayRecord {
            id: Uuid::new_v4(),
            name: identity.name.clone(),
            address: String::new(),
            server_name: String::new(),
            last_seen: 0,
        });
    Ok(store.upsert_gateway(row).await?)
}

/// Deletes the identity holding `name`: its token is refused from now on and the gateway is no
/// longer offered to clients. Whether there was one.
pub async fn delete(store: &dyn Store, name: &str, now: i64) -> Result<bool, StoreError> {
    let Some(mut identity) = find_by_name(store, name).await? else {
        return Ok(false);
    };
    identity.revoked_at = Some(now);
    write(store, &identity).await?;
    withdraw(store, name).await?;
    Ok(true)
}

/// Stops offering the gateway named `name` to clients (its row stays, never seen).
pub async fn withdraw(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    if let Some(mut row) = store
        .list_gateways()
        .await?
        .into_iter()
        .find(|r| r.name == name)
    {
        row.last_seen = 0;
        store.upsert_gateway(row).await?;
    }
    Ok(())
}

/// Every live identity with its registration row, sorted by name.
pub async fn list(store: &dyn Store) -> Result<Vec<(GatewayIdentity, GatewayRecord)>, StoreError> {
    let mut out = Vec::new();
    for row in store.list_gateways().await? {
        if let Some(identity) = find_by_name(store, &row.name).await? {
            out.push((identity, row));
        }
    }
    Ok(out)
}

/// The registered gateways that were never given an identity: those built into control planes
/// (a deleted standalone gateway keeps its name's entry, so it is not among them), sorted by
/// name.
pub async fn list_built_in(store: &dyn Store) -> Result<Vec<GatewayRecord>, StoreError> {
    let mut out = Vec::new();
    for row in store.list_gateways().await? {
        if store
            .get_setting(&format!("{NAME_KEY}{}", row.name))
            .await?
            .is_none()
        {
            out.push(row);
        }
    }
    Ok(out)
}

/// The tags each gateway serves under, as the lease endpoint needs them: read from the store at
/// most every few seconds per gateway. Gateways without an identity (embedded in a control
/// plane) have none.
#[derive(Debug, Default)]
pub struct TagCache {
    entries: Mutex<HashMap<String, (Instant, Tags)>>,
}

/// A gateway's tags, shared.
type Tags = Arc<BTreeMap<String, String>>;

impl TagCache {
    /// The tags of the gateway named `name`.
    pub async fn tags_of(&self, store: &dyn Store, name: &str) -> Result<Tags, StoreError> {
        if let Some((at, tags)) = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            && at.elapsed() < TAG_CACHE_TTL
        {
            return Ok(tags.clone());
        }
        let tags = Arc::new(
            find_by_name(store, name)
                .await?
                .map(|i| i.serving_tags().clone())
                .unwrap_or_default(),
        );
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(name.to_owned(), (Instant::now(), tags.clone()));
        Ok(tags)
    }

    /// Forgets what was read for `name` (after it registered with other tags).
    pub fn forget(&self, name: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use sdm_proto::{Token, TokenKind};

    use super::*;
    use crate::store::SqliteStore;

    fn token() -> Token {
        Token::generate(TokenKind::Gateway, "https://127.0.0.1:1", [1; 32]).unwrap()
    }

    fn identity(token: &Token, name: &str) -> GatewayIdentity {
        GatewayIdentity::new(
            token.id,
            &token.secret_hash(),
            name.into(),
            BTreeMap::from([("eu".into(), String::new())]),
            10,
        )
    }

    #[tokio::test]
    async fn create_authenticate_list_delete_and_recreate() {
        let store = SqliteStore::open_in_memory().unwrap();
        let t = token();
        let row = create(&store, &identity(&t, "edge-1")).await.unwrap();
        assert_eq!(row.last_seen, 0);
        let found = authenticate(&store, &t).await.unwrap().unwrap();
        assert_eq!(found.name, "edge-1");
        // Another token with the same id but another secret is refused.
        let mut forged = token();
        forged.id = t.id;
        assert!(authenticate(&store, &forged).await.unwrap().is_none());
        // The name is taken.
        let other = token();
        assert!(matches!(
            create(&store, &identity(&other, "edge-1")).await,
            Err(CreateError::Taken(_))
        ));
        let listed = list(&store).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.id, row.id);

        assert!(delete(&store, "edge-1", 20).await.unwrap());
        assert!(!delete(&store, "edge-1", 21).await.unwrap());
        assert!(authenticate(&store, &t).await.unwrap().is_none());
        assert!(list(&store).await.unwrap().is_empty());
        // The name can be used again; the row (and so the gateway id) is kept.
        let again = create(&store, &identity(&other, "edge-1")).await.unwrap();
        assert_eq!(again.id, row.id);
        assert!(authenticate(&store, &other).await.unwrap().is_some());
        assert!(authenticate(&store, &t).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn embedded_gateway_names_are_not_taken_over() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .upsert_gateway(GatewayRecord {
                id: Uuid::new_v4(),
                name: "embedded".into(),
                address: "127.0.0.1:8444".into(),
                server_name: "127.0.0.1".into(),
                last_seen: 5,
            })
            .await
            .unwrap();
        assert!(matches!(
            create(&store, &identity(&token(), "embedded")).await,
            Err(CreateError::Taken(_))
        ));
        let cache = TagCache::default();
        assert!(cache.tags_of(&store, "embedded").await.unwrap().is_empty());
    }

    #[test]
    fn debug_hides_the_hash() {
        let t = token();
        let i = identity(&t, "gw");
        assert!(!format!("{i:?}").contains(&hex(&t.secret_hash())));
    }
}
