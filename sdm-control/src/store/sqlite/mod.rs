//! The embedded backend: one SQLite file (`sdm.db`, mode 0600) in WAL mode.
//!
//! One connection behind a mutex serves every call: SQLite writes are serialised anyway, and the
//! control plane's queries are small and indexed. Each call runs on tokio's blocking pool
//! (`spawn_blocking`) so that a slow disk never stalls the runtime's workers; unlike
//! `block_in_place` it also works on a current-thread runtime, which tests use.
//!
//! This file holds the [`Store`] methods and opening the database; each method's SQL is here or,
//! for the larger subjects, in a file of its own: `rows` (how records map to rows), `audit`,
//! `sessions`, `transfer` (export for `sdm-server migrate`). They use only this backend and the
//! shared `store` module, never the PostgreSQL backend.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sdm_proto::api::{AccountKind, AccountStatus};
use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord, AuditRecordingEvent};
use uuid::Uuid;

use crate::store::audit::Writer;
use crate::store::{
    AccessFacts, AccountPage, AccountQuery, AccountRecord, AccountWithLogin, AuditFilter,
    AuditRefusals, GatewayRecord, GrantRecord, PortOverrides, PortOverridesChange, ResourceRecord,
    SessionExpiry, SessionRecord, Store, StoreError, TokenRecord,
};

mod audit;
pub mod backup;
mod port_overrides;
mod query_blocks;
mod rows;
mod sessions;
mod transfer;

use rows::{
    ACCOUNT_COLUMNS, Context, GATEWAY_COLUMNS, RESOURCE_COLUMNS, SESSION_COLUMNS, TOKEN_COLUMNS,
    account_row, gateway_row, grant_row, json, json_list, resource_row, session_row, token_row,
};

/// File name of the database in the data directory.
pub const FILE: &str = "sdm.db";

/// Versioned migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_tls_and_audit.sql"),
    ),
    (
        3,
        include_str!("../migrations/sqlite/0003_revocation_epoch.sql"),
    ),
    (
        4,
        include_str!("../migrations/sqlite/0004_resource_update_epoch.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_postgres_access.sql"),
    ),
    (
        6,
        include_str!("../migrations/sqlite/0006_session_lifetimes_and_audit_owners.sql"),
    ),
    (
        7,
        include_str!("../migrations/sqlite/0007_port_overrides.sql"),
    ),
    (8, include_str!("../migrations/sqlite/0008_last_login.sql")),
    (
        9,
        include_str!("../migrations/sqlite/0009_ssh_resources.sql"),
    ),
    (
        10,
        include_str!("../migrations/sqlite/0010_session_recordings.sql"),
    ),
    (
        11,
        include_str!("../migrations/sqlite/0011_query_blocks.sql"),
    ),
];

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The revocation epoch as of the last change made through this store (or the last read),
    /// so that the gateway can tell without a database trip whether what it remembered still
    /// holds. This process is the database's only writer; `UNKNOWN_EPOCH` after a failed read.
    epoch: Arc<AtomicI64>,
    /// Times each call, once asked to.
    clock: super::CallClock,
}

const UNKNOWN_EPOCH: i64 = i64::MIN;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn constraint(e: &rusqlite::Error, code: std::ffi::c_int) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == code)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    constraint(e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
        || constraint(e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    constraint(e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .context("set busy_timeout")?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .context("enable WAL mode")?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(journal_mode = %mode, "SQLite did not switch to WAL mode");
    }
    conn.pragma_update(None, "foreign_keys", "ON")
        .context("enable foreign keys")?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .context("set synchronous mode")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().context("start the migration")?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .context("create schema_migrations")?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .context("read the schema version")?;
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).context("apply a schema migration")?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, sdm_proto::unix_now()],
        )
        .context("record a schema migration")?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit().context("commit the migration")
}

/// Creates the database file with mode 0600 before SQLite does (SQLite would use the umask;
/// its `-wal` and `-shm` files then copy the database's mode).
fn create_private(path: &Path) -> Result<(), StoreError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::backend("create the database file", e)),
    }
}

fn remaining_active_admins(tx: &Transaction<'_>, except: Uuid) -> Result<i64, StoreError> {
    tx.query_row(
        "SELECT COUNT(*) FROM accounts
         WHERE kind = 'admin' AND status = 'active' AND id <> ?1",
        [except.to_string()],
        |r| r.get(0),
    )
    .context("count active admins")
}

fn get_account_tx(tx: &Transaction<'_>, id: Uuid) -> Result<Option<AccountRecord>, StoreError> {
    tx.query_row(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
        [id.to_string()],
        account_row,
    )
    .optional()
    .context("read an account")
}

fn get_session_row(conn: &Connection, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
        [id.to_string()],
        session_row,
    )
    .optional()
    .context("read a session")
}

fn get_resource_row(conn: &Connection, id: Uuid) -> Result<Option<ResourceRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.id = ?1"),
        [id.to_string()],
        resource_row,
    )
    .optional()
    .context("read a resource")
}

fn grant_exists(
    conn: &Connection,
    account_id: Uuid,
    resource_id: Uuid,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM grants WHERE account_id = ?1 AND resource_id = ?2)",
        params![account_id.to_string(), resource_id.to_string()],
        |r| r.get(0),
    )
    .context("check a grant")
}

fn insert_token_tx(tx: &Transaction<'_>, token: &TokenRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tokens (id, account_id, secret_hash, created_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            token.id.to_string(),
            token.account_id.to_string(),
            token.secret_hash,
            token.created_at,
            token.revoked_at
        ],
    )
    .map_err(|e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound("account")
        } else {
            StoreError::backend("insert a token", e)
        }
    })?;
    Ok(())
}

fn revoke_tokens_tx(tx: &Transaction<'_>, account_id: Uuid, now: i64) -> Result<u64, StoreError> {
    let id = account_id.to_string();
    let revoked = tx
        .execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE account_id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )
        .context("revoke tokens")?;
    tx.execute(
        "UPDATE sessions SET ended_at = ?2 WHERE account_id = ?1 AND ended_at IS NULL",
        params![id, now],
    )
    .context("end sessions")?;
    Ok(u64::try_from(revoked).unwrap_or(u64::MAX))
}

fn read_epoch(conn: &Connection) -> Result<i64, StoreError> {
    // Cached: it is read after every write, an audit batch's included.
    conn.prepare_cached("SELECT epoch FROM revocation_epoch WHERE id = 1")
        .and_then(|mut read| read.query_row([], |r| r.get(0)))
        .context("read the revocation epoch")
}

/// Reads the epoch into `mirror` (unknown when the read fails) and returns the read.
fn refresh_epoch(conn: &Connection, mirror: &AtomicI64) -> Result<i64, StoreError> {
    let epoch = read_epoch(conn);
    mirror.store(*epoch.as_ref().unwrap_or(&UNKNOWN_EPOCH), Ordering::Release);
    epoch
}

impl SqliteStore {
    /// Opens (creating it with mode 0600 if needed) the database at `path` and applies pending
    /// migrations. Blocking: call it from a blocking context.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let mut conn = Connection::open(path).context("open the database")?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(SqliteStore::with(conn))
    }

    /// A private in-memory database, for tests and experiments.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open_in_memory().context("open an in-memory database")?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(SqliteStore::with(conn))
    }

    fn with(conn: Connection) -> SqliteStore {
        let epoch = Arc::new(AtomicI64::new(UNKNOWN_EPOCH));
        // Unknown (no remembered answers) until a read succeeds.
        let _ = refresh_epoch(&conn, &epoch);
        SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            epoch,
            clock: super::CallClock::default(),
        }
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let epoch = Arc::clone(&self.epoch);
        let started = std::time::Instant::now();
        let value = tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot leave a transaction half applied (an
            // unfinished `Transaction` rolls back on drop), so the connection stays usable.
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let changes = guard.total_changes();
            let value = f(&mut guard);
            // Triggers move the epoch; read it before anyone can act on the change.
            if guard.total_changes() != changes {
                let _ = refresh_epoch(&guard, &epoch);
            }
            value
        })
        .await
        .map_err(|e| StoreError::backend("run a database task", e))?;
        // Waiting for the connection included: that is what a caller waits.
        self.clock.observe(started.elapsed());
        value
    }

    /// Runs `f` inside a transaction, committed when `f` succeeds.
    async fn transaction<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn.transaction().context("start a transaction")?;
            let value = f(&tx)?;
            tx.commit().context("commit a transaction")?;
            Ok(value)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn time_calls(&self, histogram: prometheus_client::metrics::histogram::Histogram) {
        self.clock.set(histogram);
    }

    async fn create_account(
        &self,
        account: AccountRecord,
        token: TokenRecord,
    ) -> Result<(), StoreError> {
        self.transaction(move |tx| {
            tx.execute(
                "INSERT INTO accounts (id, name, kind, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    account.id.to_string(),
                    account.name,
                    account.kind.as_str(),
                    account.status.as_str(),
                    account.created_at
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict {
                        entity: "an account",
                        name: account.name.clone(),
                    }
                } else {
                    StoreError::backend("create an account", e)
                }
            })?;
            insert_token_tx(tx, &token)
        })
        .await
    }

    async fn get_account(&self, id: Uuid) -> Result<Option<AccountRecord>, StoreError> {
        self.transaction(move |tx| get_account_tx(tx, id)).await
    }

    async fn find_account_by_name(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"),
                [name],
                account_row,
            )
            .optional()
            .context("find an account")
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"
                ))
                .context("list accounts")?;
            let rows = stmt.query_map([], account_row).context("list accounts")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .context("list accounts")
        })
        .await
    }

    async fn page_accounts(&self, query: AccountQuery) -> Result<AccountPage, StoreError> {
        let needle = query
            .name_contains
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| !n.is_empty());
        let limit = i64::from(query.limit);
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        self.transaction(move |tx| {
            let total: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM accounts
                     WHERE ?1 IS NULL OR instr(lower(name), ?1) > 0",
                    params![needle],
                    |row| row.get(0),
                )
                .context("count accounts")?;
            let mut stmt = tx
                .prepare_cached(&page_accounts_sql())
                .context("page accounts")?;
            let rows = stmt
                .query_map(params![needle, limit, offset], |row| {
                    Ok(AccountWithLogin {
                        account: account_row(row)?,
                        last_login: row.get(5)?,
                    })
                })
                .context("page accounts")?;
            let accounts = rows
                .collect::<rusqlite::Result<Vec<_>>>()
                .context("page accounts")?;
            Ok(AccountPage {
                accounts,
                total: u64::try_from(total).unwrap_or(0),
            })
        })
        .await
    }

    async fn set_account_status(
        &self,
        id: Uuid,
        status: AccountStatus,
    ) -> Result<AccountRecord, StoreError> {
        self.transaction(move |tx| {
            let mut account = get_account_tx(tx, id)?.ok_or(StoreError::NotFound("account"))?;
            if account.kind == AccountKind::Admin
                && account.status == AccountStatus::Active
                && status != AccountStatus::Active
                && remaining_active_admins(tx, id)? == 0
            {
                return Err(StoreError::LastAdmin);
            }
            tx.execute(
                "UPDATE accounts SET status = ?2 WHERE id = ?1",
                params![id.to_string(), status.as_str()],
            )
            .context("set an account's status")?;
            account.status = status;
            Ok(account)
        })
        .await
    }

    async fn delete_account(&self, id: Uuid, now: i64) -> Result<(), StoreError> {
        self.transaction(move |tx| {
            let account = get_account_tx(tx, id)?.ok_or(StoreError::NotFound("account"))?;
            if account.kind == AccountKind::Admin
                && account.status == AccountStatus::Active
                && remaining_active_admins(tx, id)? == 0
            {
                return Err(StoreError::LastAdmin);
            }
            tx.execute(
                "UPDATE sessions SET ended_at = ?2 WHERE account_id = ?1 AND ended_at IS NULL",
                params![id.to_string(), now],
            )
            .context("end an account's sessions")?;
            // Tokens and grants go with the account (ON DELETE CASCADE).
            tx.execute("DELETE FROM accounts WHERE id = ?1", [id.to_string()])
                .context("delete an account")?;
            Ok(())
        })
        .await
    }

    async fn count_admins(&self) -> Result<u64, StoreError> {
        self.run(|conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM accounts WHERE kind = 'admin'",
                    [],
                    |r| r.get(0),
                )
                .context("count admins")?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn insert_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.transaction(move |tx| insert_token_tx(tx, &token))
            .await
    }

    async fn get_token(&self, id: Uuid) -> Result<Option<TokenRecord>, StoreError> {
        self.run(move |conn| {
            conn.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                [id.to_string()],
                token_row,
            )
            .optional()
            .context("read a token")
        })
        .await
    }

    async fn revoke_tokens(&self, account_id: Uuid, now: i64) -> Result<u64, StoreError> {
        self.transaction(move |tx| revoke_tokens_tx(tx, account_id, now))
            .await
    }

    async fn rotate_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.transaction(move |tx| {
            get_account_tx(tx, token.account_id)?.ok_or(StoreError::NotFound("account"))?;
            revoke_tokens_tx(tx, token.account_id, token.created_at)?;
            insert_token_tx(tx, &token)
        })
        .await
    }

    async fn create_resource(
        &self,
        mut resource: ResourceRecord,
    ) -> Result<ResourceRecord, StoreError> {
        let tags = json(&resource.tags)?;
        let databases = json_list(&resource.databases)?;
        self.transaction(move |tx| {
            port_overrides::place(tx, &mut resource, None)?;
            tx.execute(
                "INSERT INTO resources (id, name, kind, hostname, port, port_override, tags,
                                        username, database, password_sealed, created_at,
                                        tls_mode, tls_ca_pem, databases, replication,
                                        port_assigned, ssh_certificate_authority, ssh_host_key,
                                        ssh_record_sessions)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                         ?17, ?18, ?19)",
                params![
                    resource.id.to_string(),
                    resource.name,
                    resource.kind.as_str(),
                    resource.hostname,
                    resource.port,
                    resource.port_override,
                    tags,
                    resource.username,
                    resource.database,
                    resource.password_sealed,
                    resource.created_at,
                    resource.tls_mode.as_str(),
                    resource.tls_ca_pem,
                    databases,
                    resource.replication,
                    resource.port_assigned,
                    resource.ssh_certificate_authority,
                    resource.ssh_host_key,
                    resource.ssh_record_sessions
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict {
                        entity: "a resource",
                        name: resource.name.clone(),
                    }
                } else {
                    StoreError::backend("create a resource", e)
                }
            })?;
            Ok(resource)
        })
        .await
    }

    async fn get_resource(&self, id: Uuid) -> Result<Option<ResourceRecord>, StoreError> {
        self.run(move |conn| get_resource_row(conn, id)).await
    }

    async fn find_resource_by_name(
        &self,
        name: &str,
    ) -> Result<Option<ResourceRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.query_row(
                &format!("SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.name = ?1"),
                [name],
                resource_row,
            )
            .optional()
            .context("find a resource")
        })
        .await
    }

    async fn list_resources(&self) -> Result<Vec<ResourceRecord>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources r ORDER BY r.name"
                ))
                .context("list resources")?;
            let rows = stmt.query_map([], resource_row).context("list resources")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .context("list resources")
        })
        .await
    }

    async fn delete_resource(&self, id: Uuid) -> Result<(), StoreError> {
        self.run(move |conn| {
            let n = conn
                .execute("DELETE FROM resources WHERE id = ?1", [id.to_string()])
                .context("delete a resource")?;
            if n == 0 {
                return Err(StoreError::NotFound("resource"));
            }
            Ok(())
        })
        .await
    }

    async fn update_resource(
        &self,
        mut resource: ResourceRecord,
    ) -> Result<ResourceRecord, StoreError> {
        let tags = json(&resource.tags)?;
        let databases = json_list(&resource.databases)?;
        self.transaction(move |tx| {
            let stored = port_overrides::stored_port(tx, resource.id)?
                .ok_or(StoreError::NotFound("resource"))?;
            port_overrides::place(tx, &mut resource, stored)?;
            let changed = tx
                .execute(
                    "UPDATE resources SET kind = ?2, hostname = ?3, port = ?4, port_override = ?5,
                            tags = ?6, username = ?7, database = ?8, password_sealed = ?9,
                            tls_mode = ?10, tls_ca_pem = ?11, databases = ?12, replication = ?13,
                            port_assigned = ?14, ssh_certificate_authority = ?15,
                            ssh_host_key = ?16, ssh_record_sessions = ?17
                     WHERE id = ?1",
                    params![
                        resource.id.to_string(),
                        resource.kind.as_str(),
                        resource.hostname,
                        resource.port,
                        resource.port_override,
                        tags,
                        resource.username,
                        resource.database,
                        resource.password_sealed,
                        resource.tls_mode.as_str(),
                        resource.tls_ca_pem,
                        databases,
                        resource.replication,
                        resource.port_assigned,
                        resource.ssh_certificate_authority,
                        resource.ssh_host_key,
                        resource.ssh_record_sessions
                    ],
                )
                .context("update a resource")?;
            if changed == 0 {
                return Err(StoreError::NotFound("resource"));
            }
            // Name and creation time are the stored ones.
            get_resource_row(tx, resource.id)?.ok_or(StoreError::NotFound("resource"))
        })
        .await
    }

    async fn record_ssh_host_key(&self, id: Uuid, host_key: &str) -> Result<bool, StoreError> {
        let host_key = host_key.to_owned();
        self.transaction(move |tx| {
            tx.execute(
                "UPDATE resources SET ssh_host_key = ?2 WHERE id = ?1 AND ssh_host_key IS NULL",
                params![id.to_string(), host_key],
            )
            .context("record an ssh host key")?;
            let recorded: Option<String> = tx
                .query_row(
                    "SELECT ssh_host_key FROM resources WHERE id = ?1",
                    [id.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .context("record an ssh host key")?
                .ok_or(StoreError::NotFound("resource"))?;
            Ok(recorded.as_deref() == Some(host_key.as_str()))
        })
        .await
    }

    async fn grant(&self, grant: GrantRecord) -> Result<GrantRecord, StoreError> {
        self.transaction(move |tx| {
            tx.execute(
                "INSERT INTO grants (account_id, resource_id, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account_id, resource_id) DO NOTHING",
                params![
                    grant.account_id.to_string(),
                    grant.resource_id.to_string(),
                    grant.created_at
                ],
            )
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound("account or resource")
                } else {
                    StoreError::backend("grant a resource", e)
                }
            })?;
            tx.query_row(
                "SELECT account_id, resource_id, created_at FROM grants
                 WHERE account_id = ?1 AND resource_id = ?2",
                params![grant.account_id.to_string(), grant.resource_id.to_string()],
                grant_row,
            )
            .context("read a grant")
        })
        .await
    }

    async fn revoke_grant(&self, account_id: Uuid, resource_id: Uuid) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM grants WHERE account_id = ?1 AND resource_id = ?2",
                    params![account_id.to_string(), resource_id.to_string()],
                )
                .context("revoke a grant")?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_grants(&self, account_id: Uuid) -> Result<Vec<GrantRecord>, StoreError> {
        self.run(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT g.account_id, g.resource_id, g.created_at
                     FROM grants g JOIN resources r ON r.id = g.resource_id
                     WHERE g.account_id = ?1 ORDER BY r.name",
                )
                .context("list grants")?;
            let rows = stmt
                .query_map([account_id.to_string()], grant_row)
                .context("list grants")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .context("list grants")
        })
        .await
    }

    async fn list_resource_grants(
        &self,
        resource_id: Uuid,
    ) -> Result<Vec<(AccountRecord, GrantRecord)>, StoreError> {
        self.run(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT a.id, a.name, a.kind, a.status, a.created_at, g.created_at
                     FROM grants g JOIN accounts a ON a.id = g.account_id
                     WHERE g.resource_id = ?1 ORDER BY a.name",
                )
                .context("list a resource's grants")?;
            let rows = stmt
                .query_map([resource_id.to_string()], |row| {
                    let account = account_row(row)?;
                    let grant = GrantRecord {
                        account_id: account.id,
                        resource_id,
                        created_at: row.get(5)?,
                    };
                    Ok((account, grant))
                })
                .context("list a resource's grants")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .context("list a resource's grants")
        })
        .await
    }

    async fn has_grant(&self, account_id: Uuid, resource_id: Uuid) -> Result<bool, StoreError> {
        self.run(move |conn| grant_exists(conn, account_id, resource_id))
            .await
    }

    async fn list_granted_resources(
        &self,
        account_id: Uuid,
    ) -> Result<Vec<ResourceRecord>, StoreError> {
        self.run(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources r
                     JOIN grants g ON g.resource_id = r.id
                     WHERE g.account_id = ?1 ORDER BY r.name"
                ))
                .context("list granted resources")?;
            let rows = stmt
                .query_map([account_id.to_string()], resource_row)
                .context("list granted resources")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .context("list granted resources")
        })
        .await
    }

    async fn create_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.run(move |conn| sessions::insert(conn, &session)).await
    }

    async fn get_session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        self.run(move |conn| get_session_row(conn, id)).await
    }

    async fn access_facts(
        &self,
        account_id: Uuid,
        session_id: Uuid,
        resource_id: Uuid,
    ) -> Result<AccessFacts, StoreError> {
        // One trip through the blocking pool and one lock instead of four, and a consistent
        // snapshot of the four answers.
        self.transaction(move |tx| {
            let account = get_account_tx(tx, account_id)?;
            let session = get_session_row(tx, session_id)?;
            let resource = get_resource_row(tx, resource_id)?;
            let granted = grant_exists(tx, account_id, resource_id)?;
            Ok(AccessFacts {
                account,
                session,
                resource,
                granted,
            })
        })
        .await
    }

    async fn end_session(&self, id: Uuid, now: i64) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let n = conn
                .execute(
                    "UPDATE sessions SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL",
                    params![id.to_string(), now],
                )
                .context("end a session")?;
            Ok(n > 0)
        })
        .await
    }

    async fn open_session(&self, session: SessionRecord, max_open: u32) -> Result<u64, StoreError> {
        self.transaction(move |tx| sessions::open(tx, &session, max_open))
            .await
    }

    async fn touch_session(&self, id: Uuid, now: i64) -> Result<bool, StoreError> {
        self.run(move |conn| sessions::touch(conn, id, now)).await
    }

    async fn count_open_sessions(&self, account_id: Uuid) -> Result<u64, StoreError> {
        self.run(move |conn| sessions::count_open(conn, account_id))
            .await
    }

    async fn expire_sessions(&self, expiry: SessionExpiry, limit: u32) -> Result<u64, StoreError> {
        self.run(move |conn| sessions::expire(conn, expiry, limit))
            .await
    }

    async fn prune_sessions(&self, ended_before: i64, limit: u32) -> Result<u64, StoreError> {
        self.run(move |conn| sessions::prune(conn, ended_before, limit))
            .await
    }

    async fn upsert_gateway(&self, gateway: GatewayRecord) -> Result<GatewayRecord, StoreError> {
        self.run(move |conn| {
            conn.query_row(
                &format!(
                    "INSERT INTO gateways (id, name, address, server_name, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (name) DO UPDATE SET
                         address = excluded.address,
                         server_name = excluded.server_name,
                         last_seen = excluded.last_seen
                     RETURNING {GATEWAY_COLUMNS}"
                ),
                params![
                    gateway.id.to_string(),
                    gateway.name,
                    gateway.address,
                    gateway.server_name,
                    gateway.last_seen
                ],
                gateway_row,
            )
            .context("register a gateway")
        })
        .await
    }

    async fn list_gateways(&self) -> Result<Vec<GatewayRecord>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY name"
                ))
                .context("list gateways")?;
            let rows = stmt.query_map([], gateway_row).context("list gateways")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .context("list gateways")
        })
        .await
    }

    async fn revocation_epoch(&self) -> Result<i64, StoreError> {
        let mirror = Arc::clone(&self.epoch);
        // Also catches changes made by anything but this store (gateways poll every second).
        self.run(move |conn| refresh_epoch(conn, &mirror)).await
    }

    fn local_revocation_epoch(&self) -> Option<i64> {
        Some(self.epoch.load(Ordering::Acquire)).filter(|e| *e != UNKNOWN_EPOCH)
    }

    async fn write_audit(&self, events: Arc<[AuditEvent]>) -> Result<(), StoreError> {
        self.transaction(move |tx| audit::write(tx, Writer::Local, &events))
            .await
            .map(|_| ())
    }

    async fn write_gateway_audit(
        &self,
        gateway: &str,
        events: Vec<AuditEvent>,
    ) -> Result<AuditRefusals, StoreError> {
        let gateway = gateway.to_owned();
        self.transaction(move |tx| audit::write(tx, Writer::Gateway(&gateway), &events))
            .await
    }

    async fn interrupt_connections(&self, gateway: &str, now: i64) -> Result<u64, StoreError> {
        let gateway = gateway.to_owned();
        self.run(move |conn| audit::interrupt(conn, &gateway, now))
            .await
    }

    async fn prune_audit(&self, ended_before: i64, limit: u32) -> Result<u64, StoreError> {
        self.transaction(move |tx| audit::prune(tx, ended_before, limit))
            .await
    }

    async fn list_connections(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(move |conn| audit::list_connections(conn, &filter))
            .await
    }

    async fn get_connection(&self, id: Uuid) -> Result<Option<AuditRecord>, StoreError> {
        self.run(move |conn| audit::get_connection(conn, id)).await
    }

    async fn list_queries(
        &self,
        connection_id: Uuid,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditQueryEvent>, StoreError> {
        self.run(move |conn| audit::list_queries(conn, connection_id, after, limit))
            .await
    }

    async fn recorded_channels(&self, connection_id: Uuid) -> Result<Vec<u32>, StoreError> {
        self.run(move |conn| audit::recorded_channels(conn, connection_id))
            .await
    }

    async fn list_recording(
        &self,
        connection_id: Uuid,
        channel: u32,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecordingEvent>, StoreError> {
        self.run(move |conn| audit::list_recording(conn, connection_id, channel, after, limit))
            .await
    }

    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.run(move |conn| {
            conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .context("read a setting")
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .context("store a setting")?;
            Ok(())
        })
        .await
    }

    async fn put_setting_if_absent(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.run(move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO NOTHING",
                    params![key, value],
                )
                .context("store a setting")?;
            Ok(n > 0)
        })
        .await
    }

    async fn change_port_overrides(
        &self,
        change: PortOverridesChange,
    ) -> Result<(PortOverrides, u64), StoreError> {
        self.transaction(move |tx| port_overrides::change(tx, change))
            .await
    }
}

/// One page of accounts with their last logins (`?1` the lower-case search or NULL, `?2` the
/// limit, `?3` the offset). The newest login of each account on the page is one step down the
/// `sessions_by_account` index, never a scan of the sessions.
fn page_accounts_sql() -> String {
    format!(
        "SELECT {ACCOUNT_COLUMNS},
             (SELECT MAX(s.created_at) FROM sessions s WHERE s.account_id = accounts.id)
         FROM accounts
         WHERE ?1 IS NULL OR instr(lower(name), ?1) > 0
         ORDER BY name LIMIT ?2 OFFSET ?3"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{Fixture, store_suite};

    #[test]
    fn a_page_of_accounts_reads_last_logins_from_the_index() {
        let store = SqliteStore::open_in_memory().unwrap();
        let conn = store.conn.lock().unwrap();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", page_accounts_sql()))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(params![Option::<String>::None, 50, 0], |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING COVERING INDEX sessions_by_account")),
            "{plan:#?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN s")),
            "{plan:#?}"
        );
    }

    /// A database at `path` as the versions before `version` left it, for tests of upgrades.
    pub(super) fn database_before(path: &Path, version: i64) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < version) {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
                [v],
            )
            .unwrap();
        }
        conn
    }

    /// An in-memory database; both handles share its one connection, as one process does.
    async fn fixture() -> Fixture {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        Fixture {
            a: store.clone(),
            b: store,
            _keep: Box::new(()),
        }
    }

    store_suite!(fixture);

    /// Sessions open before session lifetimes existed may have leases out: the session limit
    /// must end them (moving the epoch), never delete them as unused.
    #[tokio::test]
    async fn sessions_open_before_the_lifetimes_migration_count_as_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (open, ended) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let conn = database_before(&path, 6);
            conn.execute(
                "INSERT INTO sessions (id, account_id, created_at, ended_at)
                 VALUES (?1, ?3, 10, NULL), (?2, ?3, 11, 12)",
                params![
                    open.to_string(),
                    ended.to_string(),
                    Uuid::new_v4().to_string()
                ],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let get = |id| store.get_session(id);
        assert_eq!(get(open).await.unwrap().unwrap().last_used_at, Some(10));
        assert_eq!(get(ended).await.unwrap().unwrap().last_used_at, None);
    }

    #[test]
    fn file_database_is_private_and_migrations_are_idempotent() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        drop(SqliteStore::open(&path).unwrap());
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let conn = store.conn.lock().unwrap();
        let versions: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, MIGRATIONS.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)",
            [],
        )
        .unwrap();
        drop(conn);
        drop(store);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
