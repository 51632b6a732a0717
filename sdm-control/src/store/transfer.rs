//! Moving a whole installation's state from one backend to another (`sdm-server migrate`):
//! the source exports [`Item`]s table by table, parents before children, and the target
//! imports them in one transaction. Both sides keep their SQL to themselves; only records cross.

use std::fmt;

use sdm_proto::audit::{AuditQueryEvent, AuditRecord};
use tokio::sync::mpsc;

use super::{
    AccountRecord, GatewayRecord, GrantRecord, PostgresStore, ResourceRecord, SessionRecord,
    SqliteStore, StoreError, TokenRecord,
};

/// Chunks in flight between the reading and the writing side.
const IN_FLIGHT: usize = 4;

/// Items are sent in chunks of this many.
pub const CHUNK: usize = 1000;

/// One row of the state, as records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An account.
    Account(AccountRecord),
    /// A token (its hash).
    Token(TokenRecord),
    /// A resource, its password still sealed.
    Resource(ResourceRecord),
    /// A grant.
    Grant(GrantRecord),
    /// A session.
    Session(SessionRecord),
    /// A registered gateway.
    Gateway(GatewayRecord),
    /// A setting.
    Setting {
        /// Its key.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// An audited connection.
    Connection(AuditRecord),
    /// An audited query.
    Query(AuditQueryEvent),
    /// The revocation counter.
    RevocationEpoch(i64),
    /// The end: everything was sent, this much of each kind. The target commits only after
    /// receiving it and finding that it wrote as much.
    End(Counts),
}

/// How many rows of each kind were moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accounts.
    pub accounts: u64,
    /// Tokens.
    pub tokens: u64,
    /// Resources.
    pub resources: u64,
    /// Grants.
    pub grants: u64,
    /// Sessions.
    pub sessions: u64,
    /// Gateways.
    pub gateways: u64,
    /// Settings.
    pub settings: u64,
    /// Audited connections.
    pub connections: u64,
    /// Audited queries.
    pub queries: u64,
}

impl Counts {
    /// Counts `item`.
    pub fn add(&mut self, item: &Item) {
        match item {
            Item::Account(_) => self.accounts += 1,
            Item::Token(_) => self.tokens += 1,
            Item::Resource(_) => self.resources += 1,
            Item::Grant(_) => self.grants += 1,
            Item::Session(_) => self.sessions += 1,
            Item::Gateway(_) => self.gateways += 1,
            Item::Setting { .. } => self.settings += 1,
            Item::Connection(_) => self.connections += 1,
            Item::Query(_) => self.queries += 1,
            Item::RevocationEpoch(_) | Item::End(_) => {}
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accounts, {} tokens, {} resources, {} grants, {} sessions, {} gateways, \
             {} settings, {} audited connections, {} audited queries",
            self.accounts,
            self.tokens,
            self.resources,
            self.grants,
            self.sessions,
            self.gateways,
            self.settings,
            self.connections,
            self.queries
        )
    }
}

/// Copies everything `source` holds into `target` in one transaction of the target (see
/// [`PostgresStore::import`] for `replace`), and returns what was copied. The source is read
/// on the blocking pool while the target writes.
pub async fn sqlite_to_postgres(
    source: &SqliteStore,
    target: &PostgresStore,
    replace: bool,
) -> Result<Counts, StoreError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(IN_FLIGHT);
    let reader = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || {
            let mut writer_gone = false;
            let read = source.export(&mut |chunk| {
                writer_gone = tx.blocking_send(chunk).is_err();
                !writer_gone
            });
            (read, writer_gone)
        })
    };
    let written = target.import(&mut rx, replace).await;
    // Unblock the reader if the writer gave up early.
    drop(rx);
    let (read, writer_gone) = reader
        .await
        .map_err(|e| StoreError::backend("read the source database", e))?;
    match (read, written) {
        (_, Ok(counts)) => Ok(counts),
        // The reader stopped because the writer failed: the writer's error says why.
        (_, Err(e)) if writer_gone => Err(e),
        // The writer saw no end because the reader failed: the reader's error says why.
        (Err(e), Err(_)) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}
