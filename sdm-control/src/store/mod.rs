//! The control plane's state behind one [`Store`] trait, so that the backend (embedded SQLite,
//! or PostgreSQL shared by several control planes) is a detail: SQL dialects stay inside their
//! backend. One test suite (`suite.rs`) checks every backend against the same expectations.
//!
//! Each backend is a folder (`sqlite/`, `postgres/`) with the same files: `mod.rs` (the
//! `Store` methods), `rows`, `audit`, `sessions`, `transfer`. A backend's files use only that
//! backend and this shared module (the trait, the records, `audit`'s rules for writers,
//! `transfer`'s items), never the other backend; the text forms of the enums they store are
//! `sdm_proto`'s. Only `transfer::sqlite_to_postgres` holds both.
//!
//! Records are plain structs. Ids are generated and timestamps (Unix seconds) are taken by the
//! caller, so backends only store and check.

use std::collections::BTreeMap;
use std::sync::Arc;

use sdm_proto::ResourceKind;
use sdm_proto::api::{AccountKind, AccountStatus, TlsMode};
use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord, AuditRecordingEvent};
use uuid::Uuid;

pub mod audit;
pub mod port_overrides;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod suite;
pub mod transfer;

pub use audit::{AuditFilter, AuditRefusals};
pub use port_overrides::{PortOverrides, PortOverridesChange};
pub use postgres::{DatabaseUrl, PostgresStore};
pub use sqlite::SqliteStore;

/// An account: a service account (a job's identity) or an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Account id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Service or admin.
    pub kind: AccountKind,
    /// Active or suspended.
    pub status: AccountStatus,
    /// Unix seconds.
    pub created_at: i64,
}

/// A token: only the hash of its secret is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token id (carried in the token, not secret).
    pub id: Uuid,
    /// Its account.
    pub account_id: Uuid,
    /// SHA-256 of the token's secret.
    pub secret_hash: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// A resource: where the gateway connects and with which (sealed) credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    /// Resource id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// What it speaks.
    pub kind: ResourceKind,
    /// Upstream host.
    pub hostname: String,
    /// Upstream port.
    pub port: u16,
    /// Fixed local port for clients.
    pub port_override: Option<u16>,
    /// Whether `port_override` was assigned by the port-overrides setting rather than given
    /// by an admin (see [`port_overrides`]).
    pub port_assigned: bool,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
    /// Upstream user name.
    pub username: Option<String>,
    /// Upstream database.
    pub database: Option<String>,
    /// The resource's upstream secret, sealed with the [`SecretBox`](crate::keys::SecretBox):
    /// the password (databases) or the OpenSSH private key the gateway logs in with (ssh). One
    /// column for both, because a resource has one secret whatever its kind, and everything
    /// that carries it (backups, restores, migrations between backends) then carries both.
    pub password_sealed: Option<Vec<u8>>,
    /// TLS between the gateway and the resource.
    pub tls_mode: TlsMode,
    /// CA certificate(s) for `verify-full`, PEM.
    pub tls_ca_pem: Option<String>,
    /// Databases a client may name besides the stored one (postgres).
    pub databases: Vec<String>,
    /// Whether replication connections are let through (postgres).
    pub replication: bool,
    /// Whether the gateway logs in with a certificate from sdm's SSH CA, made for each
    /// connection, rather than with a stored key (ssh).
    pub ssh_certificate_authority: bool,
    /// The upstream server's host key (`ssh-ed25519 AAAA…`, no comment) the gateway accepts
    /// (ssh): given by an admin, or recorded on the first connection
    /// ([`Store::record_ssh_host_key`]).
    pub ssh_host_key: Option<String>,
    /// Whether the gateway records what terminal sessions show (ssh).
    pub ssh_record_sessions: bool,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for ResourceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("port_override", &self.port_override)
            .field("port_assigned", &self.port_assigned)
            .field("tags", &self.tags)
            .field("username", &self.username)
            .field("database", &self.database)
            .field("has_password", &self.password_sealed.is_some())
            .field("tls_mode", &self.tls_mode)
            .field("ssh_certificate_authority", &self.ssh_certificate_authority)
            .field("ssh_host_key", &self.ssh_host_key)
            .field("ssh_record_sessions", &self.ssh_record_sessions)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A login session; leases are bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub id: Uuid,
    /// Who logged in.
    pub account_id: Uuid,
    /// Job labels.
    pub labels: BTreeMap<String, String>,
    /// Client library and version.
    pub client: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it ended (logout, token rotation, account deletion, expiry, the account's session
    /// limit).
    pub ended_at: Option<i64>,
    /// When a lease was last issued in it (kept to the minute or so: see
    /// [`Store::touch_session`]); `None` if none ever was.
    pub last_used_at: Option<i64>,
}

/// Which open sessions [`Store::expire_sessions`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpiry {
    /// When they end (Unix seconds).
    pub now: i64,
    /// Sessions last used (or, never used, logged in) before this are idle, unless the audit
    /// trail shows a connection of theirs still open.
    pub idle_before: i64,
    /// Sessions logged in before this are too old, whatever they do.
    pub created_before: i64,
}

/// A gateway that registered itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRecord {
    /// Gateway id (kept across restarts: gateways are upserted by name).
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// `host:port` clients connect to.
    pub address: String,
    /// The name its certificate is issued for.
    pub server_name: String,
    /// Unix seconds of its last heartbeat.
    pub last_seen: i64,
}

/// A direct grant of a resource to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// The account.
    pub account_id: Uuid,
    /// The resource.
    pub resource_id: Uuid,
    /// Unix seconds.
    pub created_at: i64,
}

/// Which accounts [`Store::page_accounts`] answers: those whose name holds `name_contains`, in
/// name order, `limit` of them after skipping `offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuery {
    /// Only names holding this text, ASCII case ignored (names are ASCII); `None` or empty:
    /// every account.
    pub name_contains: Option<String>,
    /// How many matching accounts to skip.
    pub offset: u64,
    /// At most this many.
    pub limit: u32,
}

/// An account with the time of its newest login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountWithLogin {
    /// The account.
    pub account: AccountRecord,
    /// When its newest session (open or ended, console sign-ins included) was created; `None`
    /// if it never logged in or its sessions were pruned.
    pub last_login: Option<i64>,
}

/// One page of accounts and how many match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPage {
    /// The page, sorted by name.
    pub accounts: Vec<AccountWithLogin>,
    /// Accounts matching the query, on every page.
    pub total: u64,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique name is taken.
    #[error("{entity} named {name:?} already exists")]
    Conflict {
        /// `"an account"`, `"a resource"`.
        entity: &'static str,
        /// The name.
        name: String,
    },
    /// The row to change does not exist (any more).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A resource asked for a local port another resource holds.
    #[error(
        "local port {port} is already the port of resource {holder:?}; choose another port, or \
         change {holder:?}'s first"
    )]
    PortTaken {
        /// The port.
        port: u16,
        /// The resource that holds it.
        holder: String,
    },
    /// The port-overrides range has too few free ports for what was asked; nothing changed.
    #[error(
        "the port-override range {range} has no free port left for {needed} more resource(s) \
         ({held} of its {len} ports are taken); widen the range",
        len = range.len()
    )]
    PortsExhausted {
        /// The range.
        range: sdm_proto::api::PortRange,
        /// How many of its ports resources hold.
        held: usize,
        /// How many resources needed a port.
        needed: usize,
    },
    /// The change would leave no active admin account.
    #[error(
        "this is the last active admin account; create or unsuspend another admin account first"
    )]
    LastAdmin,
    /// The target of a migration already holds data.
    #[error("the database already holds sdm data ({0})")]
    NotEmpty(String),
    /// The database was written by a newer version.
    #[error(
        "the database has schema version {found} but this sdm-server knows only up to {known}; \
         upgrade sdm-server"
    )]
    TooNew {
        /// Version in the database.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// The backend failed.
    #[error("database error while trying to {context}")]
    Backend {
        /// What was being done.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Backend {
            context,
            source: source.into(),
        }
    }
}

/// What a gateway needs to judge one connection: the lease's account, session and resource,
/// and whether the grant holds (see [`Store::access_facts`]).
#[derive(Debug, Clone)]
pub struct AccessFacts {
    /// The account the lease was issued to.
    pub account: Option<AccountRecord>,
    /// The login session the lease belongs to.
    pub session: Option<SessionRecord>,
    /// The resource the lease opens.
    pub resource: Option<ResourceRecord>,
    /// Whether the account was granted the resource.
    pub granted: bool,
}

/// Where a store reports how long each of its calls takes (`sdm_store_query_seconds`); set
/// once with [`Store::time_calls`]. Clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallClock(
    std::sync::Arc<std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>>,
);

impl CallClock {
    /// From now on, calls are observed in `histogram` (a second setting is ignored).
    pub(crate) fn set(&self, histogram: prometheus_client::metrics::histogram::Histogram) {
        let _ = self.0.set(histogram);
    }

    /// A call took `took`.
    pub(crate) fn observe(&self, took: std::time::Duration) {
        if let Some(histogram) = self.0.get() {
            histogram.observe(took.as_secs_f64());
        }
    }
}

/// The control plane's state. Every method is one transaction.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Observe how long each call takes in `histogram` from now on (the metrics of
    /// `--diag-listen`); stores that cannot tell ignore it.
    fn time_calls(&self, histogram: prometheus_client::metrics::histogram::Histogram) {
        let _ = histogram;
    }

    // --- accounts ---

    /// Creates an account together with its first token. `Conflict` if the name is taken.
    async fn create_account(
        &self,
        account: AccountRecord,
        token: TokenRecord,
    ) -> Result<(), StoreError>;
    /// The account with this id.
    async fn get_account(&self, id: Uuid) -> Result<Option<AccountRecord>, StoreError>;
    /// The account with this name.
    async fn find_account_by_name(&self, name: &str) -> Result<Option<AccountRecord>, StoreError>;
    /// All accounts, sorted by name.
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError>;
    /// One page of the accounts `query` matches, with their last logins and the number matching,
    /// read in one transaction.
    async fn page_accounts(&self, query: AccountQuery) -> Result<AccountPage, StoreError>;
    /// Sets an account's status and returns it. `NotFound` if it does not exist, `LastAdmin` if it
    /// would suspend the last active admin.
    async fn set_account_status(
        &self,
        id: Uuid,
        status: AccountStatus,
    ) -> Result<AccountRecord, StoreError>;
    /// Deletes an account, its tokens and grants, and ends its open sessions at `now`.
    /// `NotFound` if it does not exist, `LastAdmin` if it is the last active admin.
    async fn delete_account(&self, id: Uuid, now: i64) -> Result<(), StoreError>;
    /// How many admin accounts exist (active or not).
    async fn count_admins(&self) -> Result<u64, StoreError>;

    // --- tokens ---

    /// Adds a token to an existing account (`NotFound` if it does not exist).
    async fn insert_token(&self, token: TokenRecord) -> Result<(), StoreError>;
    /// The token with this id, revoked or not.
    async fn get_token(&self, id: Uuid) -> Result<Option<TokenRecord>, StoreError>;
    /// Revokes every live token of an account and ends its open sessions (so that its tunnels
    /// close); returns how many tokens were revoked.
    async fn revoke_tokens(&self, account_id: Uuid, now: i64) -> Result<u64, StoreError>;
    /// [`revoke_tokens`](Store::revoke_tokens) then [`insert_token`](Store::insert_token), as one
    /// transaction, with `token.created_at` as the time.
    async fn rotate_token(&self, token: TokenRecord) -> Result<(), StoreError>;

    // --- resources ---

    /// Creates a resource and returns it as stored. `Conflict` if the name is taken. With a
    /// `port_override`, `PortTaken` if another resource holds that port; without one while
    /// the port-overrides setting is on, it gets the lowest free port of the setting's range
    /// (`port_assigned`; `PortsExhausted` if none is free). Serialised with every other
    /// change of ports, so concurrent creations never share a port.
    async fn create_resource(&self, resource: ResourceRecord)
    -> Result<ResourceRecord, StoreError>;
    /// The resource with this id.
    async fn get_resource(&self, id: Uuid) -> Result<Option<ResourceRecord>, StoreError>;
    /// The resource with this name.
    async fn find_resource_by_name(&self, name: &str)
    -> Result<Option<ResourceRecord>, StoreError>;
    /// All resources, sorted by name.
    async fn list_resources(&self) -> Result<Vec<ResourceRecord>, StoreError>;
    /// Deletes a resource and its grants. `NotFound` if it does not exist.
    async fn delete_resource(&self, id: Uuid) -> Result<(), StoreError>;
    /// Replaces every field of the resource with this id but its name and creation time, and
    /// returns it as stored. `NotFound` if it does not exist. A `port_override` other than the
    /// stored one is checked as [`create_resource`](Store::create_resource) checks it; none
    /// while the port-overrides setting is on assigns one.
    async fn update_resource(&self, resource: ResourceRecord)
    -> Result<ResourceRecord, StoreError>;
    /// Records `host_key` as the ssh resource's upstream host key unless one is recorded
    /// already (compare and set, so two gateways seeing a first connection at once cannot both
    /// win); whether `host_key` is the recorded key now. `NotFound` if the resource does not
    /// exist.
    async fn record_ssh_host_key(&self, id: Uuid, host_key: &str) -> Result<bool, StoreError>;

    // --- grants ---

    /// Grants a resource to an account and returns the grant; granting twice keeps the first
    /// grant. `NotFound` if the account or resource does not exist.
    async fn grant(&self, grant: GrantRecord) -> Result<GrantRecord, StoreError>;
    /// Removes a grant; whether there was one.
    async fn revoke_grant(&self, account_id: Uuid, resource_id: Uuid) -> Result<bool, StoreError>;
    /// An account's grants.
    async fn list_grants(&self, account_id: Uuid) -> Result<Vec<GrantRecord>, StoreError>;
    /// The accounts granted a resource, each with its grant, sorted by account name.
    async fn list_resource_grants(
        &self,
        resource_id: Uuid,
    ) -> Result<Vec<(AccountRecord, GrantRecord)>, StoreError>;
    /// Whether the account was granted the resource.
    async fn has_grant(&self, account_id: Uuid, resource_id: Uuid) -> Result<bool, StoreError>;
    /// The resources granted to an account, sorted by name.
    async fn list_granted_resources(
        &self,
        account_id: Uuid,
    ) -> Result<Vec<ResourceRecord>, StoreError>;

    // --- sessions ---

    /// Records a session as it is, with no limit applied (imports and tests; logins use
    /// [`open_session`](Store::open_session)).
    async fn create_session(&self, session: SessionRecord) -> Result<(), StoreError>;
    /// The session with this id, open or ended.
    async fn get_session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError>;
    /// Ends a session at `now`; whether it was open.
    async fn end_session(&self, id: Uuid, now: i64) -> Result<bool, StoreError>;
    /// Records a new session of an account that may hold at most `max_open` open sessions
    /// (at least 1). When the new one would exceed that, the account's oldest open sessions
    /// (by login time, then id) make room, never the new one: those in which a lease was issued
    /// are ended at the new session's `created_at`, as a logout ends them (the revocation
    /// epoch moves, so their connections are cut); those never used are deleted, since nothing
    /// can refer to them. Returns how many made room. Logins of one account are serialised, so
    /// concurrent ones cannot leave more than `max_open` open.
    async fn open_session(&self, session: SessionRecord, max_open: u32) -> Result<u64, StoreError>;
    /// Records that a lease was issued in a session at `now`; whether the session is still
    /// open (`false` when it ended or is gone).
    async fn touch_session(&self, id: Uuid, now: i64) -> Result<bool, StoreError>;
    /// How many open sessions an account has.
    async fn count_open_sessions(&self, account_id: Uuid) -> Result<u64, StoreError>;
    /// Ends at most `limit` open sessions that `expiry` says are idle or too old, at
    /// `expiry.now` (the revocation epoch moves, as for a logout); how many it ended.
    async fn expire_sessions(&self, expiry: SessionExpiry, limit: u32) -> Result<u64, StoreError>;
    /// Deletes at most `limit` sessions that ended before `ended_before`; how many. Audit
    /// records keep the session id, labels and times by value, so they stay whole.
    async fn prune_sessions(&self, ended_before: i64, limit: u32) -> Result<u64, StoreError>;

    // --- connections ---

    /// The four facts a gateway judges a connection by, read together because they sit on
    /// the critical path of every new connection. The default asks for them at once; a
    /// backend with one connection overrides it to read them in one trip.
    async fn access_facts(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        resource_id: Uuid,
    ) -> Result<AccessFacts, StoreError> {
        let (account, session, resource, granted) = tokio::join!(
            self.get_account(account_id),
            self.get_session(session_id),
            self.get_resource(resource_id),
            self.has_grant(account_id, resource_id),
        );
        Ok(AccessFacts {
            account: account?,
            session: session?,
            resource: resource?,
            granted: granted?,
        })
    }

    // --- gateways ---

    /// Registers a gateway or refreshes it (by name: an existing gateway keeps its id); returns
    /// the stored record.
    async fn upsert_gateway(&self, gateway: GatewayRecord) -> Result<GatewayRecord, StoreError>;
    /// All registered gateways, sorted by name.
    async fn list_gateways(&self) -> Result<Vec<GatewayRecord>, StoreError>;

    // --- revocation ---

    /// A number that grows whenever access is taken away anywhere (an account suspended or
    /// deleted, a token revoked, a session ended, a grant or resource removed) or a resource is
    /// changed. Gateways poll it
    /// and re-check their open connections when it moves.
    async fn revocation_epoch(&self) -> Result<i64, StoreError>;

    /// The revocation epoch without a database trip, when this process sees every change to
    /// the store as it is made (embedded SQLite: this process is its only writer), so that an
    /// answer remembered under this epoch is still the answer the store would give. `None` when
    /// other processes may change the store (PostgreSQL) or the epoch is unknown.
    fn local_revocation_epoch(&self) -> Option<i64> {
        None
    }

    // --- audit ---

    /// Writes a batch of audit events in one transaction, as this process's own gateways
    /// report them. A start for a record that exists already changes nothing (records are
    /// changed only by their ends); an end for a record nobody wrote changes nothing. The
    /// batch is shared so that a writer that must retry it keeps it without a copy.
    async fn write_audit(&self, events: Arc<[AuditEvent]>) -> Result<(), StoreError>;
    /// Writes a batch of audit events from the gateway named `gateway` (authenticated) in one
    /// transaction, applying only what it may report: starts of records that do not exist yet
    /// (their `gateway` must already name it), and ends and queries of records whose gateway it
    /// is. Everything else is left out and counted in the answer; a start that repeats one of
    /// its own records (an upload sent again) is not counted.
    async fn write_gateway_audit(
        &self,
        gateway: &str,
        events: Vec<AuditEvent>,
    ) -> Result<AuditRefusals, StoreError>;
    /// Closes the records that the gateway named `gateway` left open, because its process
    /// stopped without ending them (a crash, a kill), with outcome
    /// [`Interrupted`](sdm_proto::audit::Outcome::Interrupted) at `now`
    /// (or at their start, if that is later); returns how many. Call it only when no process
    /// of that gateway carries connections (before it serves).
    async fn interrupt_connections(&self, gateway: &str, now: i64) -> Result<u64, StoreError>;
    /// Deletes at most `limit` connection records that ended before `ended_before`, with their
    /// queries; returns how many records. Open records are never deleted, whatever their age.
    async fn prune_audit(&self, ended_before: i64, limit: u32) -> Result<u64, StoreError>;
    /// Connection records matching `filter`, newest first.
    async fn list_connections(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// The connection record with this id.
    async fn get_connection(&self, id: Uuid) -> Result<Option<AuditRecord>, StoreError>;
    /// A connection's queries with `seq > after`, in order, at most `limit`.
    async fn list_queries(
        &self,
        connection_id: Uuid,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditQueryEvent>, StoreError>;
    /// The channels of a connection that have a recorded terminal session, in order.
    async fn recorded_channels(&self, connection_id: Uuid) -> Result<Vec<u32>, StoreError>;
    /// Lines of a channel's recording with `seq > after` (all, with `None`), in order, at most
    /// `limit`.
    async fn list_recording(
        &self,
        connection_id: Uuid,
        channel: u32,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecordingEvent>, StoreError>;

    // --- settings ---

    /// An installation setting.
    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a setting, replacing any earlier value.
    async fn set_setting(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    /// Stores a setting unless it is already set; whether it was stored.
    async fn put_setting_if_absent(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError>;

    // --- port overrides ---

    /// The port-overrides setting (off, default range, when never set).
    async fn port_overrides(&self) -> Result<PortOverrides, StoreError> {
        let stored = self.get_setting(port_overrides::SETTING_KEY).await?;
        PortOverrides::decode(stored.as_deref())
    }
    /// Changes the port-overrides setting and, in the same transaction, brings every
    /// resource's assigned port in line with it (the rules are [`port_overrides`]'s); with
    /// `change.regenerate`, every assigned port is assigned again. Returns the setting as
    /// stored and how many resources' ports changed. `PortsExhausted`, changing nothing, when
    /// the range has too few free ports.
    async fn change_port_overrides(
        &self,
        change: PortOverridesChange,
    ) -> Result<(PortOverrides, u64), StoreError>;
}
