//! The shared backend: PostgreSQL, so that several control planes (and the gateways they serve)
//! work on one state.
//!
//! Connections come from a small pool (deadpool-postgres: bounded size, waits and connects with
//! timeouts, broken connections replaced on checkout) and cache their prepared statements.
//! Every [`Store`] call is bounded by [`CALL_TIMEOUT`]. Behaviour matches [`SqliteStore`]
//! exactly (the store test suite runs against both); where PostgreSQL runs transactions
//! concurrently and SQLite does not, locks restore SQLite's answers:
//!
//! * schema migrations run in one transaction holding a transaction-level advisory lock, so
//!   processes starting at once apply each migration once;
//! * changes that could take away the last active admin hold another advisory lock, so two
//!   control planes suspending the last two admins at once cannot both succeed.
//!
//! TLS to the database follows the URL's `sslmode` (`verify-full` with `sslrootcert=FILE` checks
//! the server's certificate and name; see `url`).
//!
//! This file holds the [`Store`] methods, the pool and migrations; the larger subjects have a
//! file each: `url` (the connection URL and its TLS parameters), `tls` (tokio-postgres over
//! rustls), `rows` (how records map to rows), `audit`, `sessions`, `transfer` (import for
//! `sdm-server migrate`). They use only this backend and the shared
//! `store` module, never the SQLite backend.
//!
//! [`SqliteStore`]: crate::store::SqliteStore

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use sdm_proto::api::{AccountKind, AccountStatus};
use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord, AuditRecordingEvent};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use crate::store::audit::Writer;
use crate::store::{
    AccountPage, AccountQuery, AccountRecord, AccountWithLogin, AuditFilter, AuditRefusals,
    GatewayRecord, GrantRecord, PortOverrides, PortOverridesChange, ResourceRecord, SessionExpiry,
    SessionRecord, Store, StoreError, TokenRecord,
};

mod audit;
mod port_overrides;
mod rows;
mod sessions;
mod tls;
mod transfer;
mod url;

pub use url::DatabaseUrl;

use rows::{
    ACCOUNT_COLUMNS, Context, GATEWAY_COLUMNS, RESOURCE_COLUMNS, SESSION_COLUMNS, TOKEN_COLUMNS,
    account_row, col, count_at, gateway_row, grant_row, invalid, resource_row, session_row,
    token_row,
};

/// Versioned migrations, applied in order, each once. PostgreSQL's versions are its own: one
/// migration here may hold several of SQLite's (version 1 = SQLite's 1 to 3).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_resource_update_epoch.sql"),
    ),
    (
        3,
        include_str!("../migrations/postgres/0003_postgres_access.sql"),
    ),
    (
        4,
        include_str!("../migrations/postgres/0004_session_lifetimes_and_audit_owners.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_session_order.sql"),
    ),
    (
        6,
        include_str!("../migrations/postgres/0006_port_overrides.sql"),
    ),
    (
        7,
        include_str!("../migrations/postgres/0007_last_login.sql"),
    ),
    (
        8,
        include_str!("../migrations/postgres/0008_ssh_resources.sql"),
    ),
    (
        9,
        include_str!("../migrations/postgres/0009_session_recordings.sql"),
    ),
];

/// Connections per process at most (PostgreSQL's default `max_connections` is 100).
pub const POOL_SIZE: usize = 16;
/// Bound on one store call, waiting for a pooled connection included. Shorter than the API's
/// 30 s bound on a whole request, so that a request whose database does not answer gets the
/// store's retryable 503 (`api_unreachable`), not whichever of two equal deadlines fires first.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on opening one connection, unless the URL sets `connect_timeout`.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on applying migrations at start (waiting for another process's included).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Advisory lock held while migrations are applied ("sdm_migr").
const MIGRATION_LOCK: i64 = 0x7364_6d5f_6d69_6772;
/// Advisory lock held while an admin account is suspended or deleted ("sdm_admn").
const ADMIN_LOCK: i64 = 0x7364_6d5f_6164_6d6e;

/// The PostgreSQL [`Store`]. Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    url: String,
    /// Times each call, once asked to.
    clock: super::CallClock,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn is(e: &tokio_postgres::Error, state: &SqlState) -> bool {
    e.code() == Some(state)
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Runs one statement (prepared once per connection) in `tx`.
async fn tx_execute(
    tx: &Tx<'_>,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let stmt = tx.prepare_cached(sql).await.context(context)?;
    tx.execute(&stmt, params).await.context(context)
}

async fn tx_query_opt(
    tx: &Tx<'_>,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let stmt = tx.prepare_cached(sql).await.context(context)?;
    tx.query_opt(&stmt, params).await.context(context)
}

async fn get_account_tx(tx: &Tx<'_>, id: Uuid) -> Result<Option<AccountRecord>, StoreError> {
    tx_query_opt(
        tx,
        "read an account",
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(account_row)
    .transpose()
}

/// The account, read again after taking the admin lock if it is an admin, so that the
/// last-admin check below sees every admin change committed before it.
async fn lock_account_tx(tx: &Tx<'_>, id: Uuid) -> Result<AccountRecord, StoreError> {
    let account = get_account_tx(tx, id)
        .await?
        .ok_or(StoreError::NotFound("account"))?;
    if account.kind != AccountKind::Admin {
        return Ok(account);
    }
    tx_execute(
        tx,
        "lock admin changes",
        "SELECT pg_advisory_xact_lock($1)",
        &[&ADMIN_LOCK],
    )
    .await?;
    get_account_tx(tx, id)
        .await?
        .ok_or(StoreError::NotFound("account"))
}

async fn remaining_active_admins(tx: &Tx<'_>, except: Uuid) -> Result<i64, StoreError> {
    let row = tx_query_opt(
        tx,
        "count active admins",
        "SELECT COUNT(*) FROM accounts WHERE kind = 'admin' AND status = 'active' AND id <> $1",
        &[&except],
    )
    .await?
    .ok_or_else(|| invalid("COUNT returned no row".into()))?;
    col(&row, 0)
}

async fn insert_token_tx(tx: &Tx<'_>, token: &TokenRecord) -> Result<(), StoreError> {
    let sql = "INSERT INTO tokens (id, account_id, secret_hash, created_at, revoked_at)
               VALUES ($1, $2, $3, $4, $5)";
    let stmt = tx.prepare_cached(sql).await.context("insert a token")?;
    tx.execute(
        &stmt,
        &[
            &token.id,
            &token.account_id,
            &token.secret_hash,
            &token.created_at,
            &token.revoked_at,
        ],
    )
    .await
    .map_err(|e| {
        if is(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
            StoreError::NotFound("account")
        } else {
            StoreError::backend("insert a token", e)
        }
    })?;
    Ok(())
}

async fn revoke_tokens_tx(tx: &Tx<'_>, account_id: Uuid, now: i64) -> Result<u64, StoreError> {
    let revoked = tx_execute(
        tx,
        "revoke tokens",
        "UPDATE tokens SET revoked_at = $2 WHERE account_id = $1 AND revoked_at IS NULL",
        &[&account_id, &now],
    )
    .await?;
    tx_execute(
        tx,
        "end sessions",
        "UPDATE sessions SET ended_at = $2 WHERE account_id = $1 AND ended_at IS NULL",
        &[&account_id, &now],
    )
    .await?;
    Ok(revoked)
}

async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.context("start the migration")?;
    // Held until commit: a second process starting now waits here, then finds the schema
    // current.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("lock the schema for migration")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )",
    )
    .await
    .context("create schema_migrations")?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .await
        .context("read the schema version")?
        .try_get(0)
        .context("read the schema version")?;
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .await
            .context("apply a schema migration")?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[version, &sdm_proto::unix_now()],
        )
        .await
        .context("record a schema migration")?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit().await.context("commit the migration")
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "PostgreSQL did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        ),
    )
}

impl PostgresStore {
    /// Connects to the database at `url` and applies pending migrations (safe when several
    /// processes start at once).
    pub async fn connect(url: &DatabaseUrl) -> Result<PostgresStore, StoreError> {
        let manager = Manager::from_config(
            url.config.clone(),
            url.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::backend("set up the PostgreSQL connection pool", e))?;
        let store = PostgresStore {
            pool,
            url: url.redacted(),
            clock: super::CallClock::default(),
        };
        let mut client = store.client().await?;
        match tokio::time::timeout(MIGRATION_TIMEOUT, migrate(&mut client)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(StoreError::backend(
                    "apply schema migrations",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "another process held the migration lock for too long",
                    ),
                ));
            }
        }
        Ok(store)
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::backend("get a PostgreSQL connection", e))
    }

    /// Runs one store call, bounded by [`CALL_TIMEOUT`]. A call cut short rolls back: an
    /// unfinished transaction is rolled back when dropped.
    async fn call<T>(
        &self,
        context: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(StoreError::backend(context, timed_out())));
        // Waiting for a pooled connection included: that is what a caller waits.
        self.clock.observe(started.elapsed());
        result
    }

    async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.call(context, async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(sql).await.context(context)?;
            client.query(&stmt, params).await.context(context)
        })
        .await
    }

    async fn query_opt(
        &self,
        context: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        self.call(context, async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(sql).await.context(context)?;
            client.query_opt(&stmt, params).await.context(context)
        })
        .await
    }

    async fn execute(
        &self,
        context: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.call(context, async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(sql).await.context(context)?;
            client.execute(&stmt, params).await.context(context)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn time_calls(&self, histogram: prometheus_client::metrics::histogram::Histogram) {
        self.clock.set(histogram);
    }

    async fn create_account(
        &self,
        account: AccountRecord,
        token: TokenRecord,
    ) -> Result<(), StoreError> {
        self.call("create an account", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO accounts (id, name, kind, status, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await
                .context("create an account")?;
            tx.execute(
                &stmt,
                &[
                    &account.id,
                    &account.name,
                    &account.kind.as_str(),
                    &account.status.as_str(),
                    &account.created_at,
                ],
            )
            .await
            .map_err(|e| {
                if is(&e, &SqlState::UNIQUE_VIOLATION) {
                    StoreError::Conflict {
                        entity: "an account",
                        name: account.name.clone(),
                    }
                } else {
                    StoreError::backend("create an account", e)
                }
            })?;
            insert_token_tx(&tx, &token).await?;
            tx.commit().await.context("commit a transaction")
        })
        .await
    }

    async fn get_account(&self, id: Uuid) -> Result<Option<AccountRecord>, StoreError> {
        self.query_opt(
            "read an account",
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(account_row)
        .transpose()
    }

    async fn find_account_by_name(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        self.query_opt(
            "find an account",
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
            &[&name],
        )
        .await?
        .as_ref()
        .map(account_row)
        .transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.query(
            "list accounts",
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"),
            &[],
        )
        .await?
        .iter()
        .map(account_row)
        .collect()
    }

    async fn page_accounts(&self, query: AccountQuery) -> Result<AccountPage, StoreError> {
        let needle = query
            .name_contains
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| !n.is_empty());
        let limit = i64::from(query.limit);
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        self.call("page accounts", async {
            let mut client = self.client().await?;
            // One snapshot, so that the count and the page agree.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .context("start a transaction")?;
            let count = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM accounts
                     WHERE $1::TEXT IS NULL OR strpos(lower(name), $1) > 0",
                )
                .await
                .context("count accounts")?;
            let total: i64 = col(
                &tx.query_one(&count, &[&needle])
                    .await
                    .context("count accounts")?,
                0,
            )?;
            // The newest login of each account on the page: one step down the
            // sessions_by_account index per account.
            let page = tx
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS},
                         (SELECT MAX(s.created_at) FROM sessions s
                          WHERE s.account_id = accounts.id)
                     FROM accounts
                     WHERE $1::TEXT IS NULL OR strpos(lower(name), $1) > 0
                     ORDER BY name LIMIT $2 OFFSET $3"
                ))
                .await
                .context("page accounts")?;
            let rows = tx
                .query(&page, &[&needle, &limit, &offset])
                .await
                .context("page accounts")?;
            tx.commit().await.context("commit a transaction")?;
            let accounts = rows
                .iter()
                .map(|row| {
                    Ok(AccountWithLogin {
                        account: account_row(row)?,
                        last_login: col(row, 5)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
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
        self.call("set an account's status", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            let mut account = lock_account_tx(&tx, id).await?;
            if account.kind == AccountKind::Admin
                && account.status == AccountStatus::Active
                && status != AccountStatus::Active
                && remaining_active_admins(&tx, id).await? == 0
            {
                return Err(StoreError::LastAdmin);
            }
            let changed = tx_execute(
                &tx,
                "set an account's status",
                "UPDATE accounts SET status = $2 WHERE id = $1",
                &[&id, &status.as_str()],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::NotFound("account"));
            }
            tx.commit().await.context("commit a transaction")?;
            account.status = status;
            Ok(account)
        })
        .await
    }

    async fn delete_account(&self, id: Uuid, now: i64) -> Result<(), StoreError> {
        self.call("delete an account", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            let account = lock_account_tx(&tx, id).await?;
            if account.kind == AccountKind::Admin
                && account.status == AccountStatus::Active
                && remaining_active_admins(&tx, id).await? == 0
            {
                return Err(StoreError::LastAdmin);
            }
            tx_execute(
                &tx,
                "end an account's sessions",
                "UPDATE sessions SET ended_at = $2 WHERE account_id = $1 AND ended_at IS NULL",
                &[&id, &now],
            )
            .await?;
            // Tokens and grants go with the account (ON DELETE CASCADE).
            let deleted = tx_execute(
                &tx,
                "delete an account",
                "DELETE FROM accounts WHERE id = $1",
                &[&id],
            )
            .await?;
            if deleted == 0 {
                return Err(StoreError::NotFound("account"));
            }
            tx.commit().await.context("commit a transaction")
        })
        .await
    }

    async fn count_admins(&self) -> Result<u64, StoreError> {
        let row = self
            .query_opt(
                "count admins",
                "SELECT COUNT(*) FROM accounts WHERE kind = 'admin'",
                &[],
            )
            .await?
            .ok_or_else(|| invalid("COUNT returned no row".into()))?;
        count_at(&row, 0)
    }

    async fn insert_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.call("insert a token", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            insert_token_tx(&tx, &token).await?;
            tx.commit().await.context("commit a transaction")
        })
        .await
    }

    async fn get_token(&self, id: Uuid) -> Result<Option<TokenRecord>, StoreError> {
        self.query_opt(
            "read a token",
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(token_row)
        .transpose()
    }

    async fn revoke_tokens(&self, account_id: Uuid, now: i64) -> Result<u64, StoreError> {
        self.call("revoke tokens", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            let revoked = revoke_tokens_tx(&tx, account_id, now).await?;
            tx.commit().await.context("commit a transaction")?;
            Ok(revoked)
        })
        .await
    }

    async fn rotate_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.call("rotate a token", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            get_account_tx(&tx, token.account_id)
                .await?
                .ok_or(StoreError::NotFound("account"))?;
            revoke_tokens_tx(&tx, token.account_id, token.created_at).await?;
            insert_token_tx(&tx, &token).await?;
            tx.commit().await.context("commit a transaction")
        })
        .await
    }

    async fn create_resource(
        &self,
        mut resource: ResourceRecord,
    ) -> Result<ResourceRecord, StoreError> {
        self.call("create a resource", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            port_overrides::lock(&tx).await?;
            port_overrides::place(&tx, &mut resource, None).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO resources (id, name, kind, hostname, port, port_override, tags,
                                            username, database, password_sealed, created_at,
                                            tls_mode, tls_ca_pem, databases, replication,
                                            port_assigned, ssh_certificate_authority,
                                            ssh_host_key, ssh_record_sessions)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                             $16, $17, $18, $19)",
                )
                .await
                .context("create a resource")?;
            tx.execute(
                &stmt,
                &[
                    &resource.id,
                    &resource.name,
                    &resource.kind.as_str(),
                    &resource.hostname,
                    &i32::from(resource.port),
                    &resource.port_override.map(i32::from),
                    &Json(&resource.tags),
                    &resource.username,
                    &resource.database,
                    &resource.password_sealed,
                    &resource.created_at,
                    &resource.tls_mode.as_str(),
                    &resource.tls_ca_pem,
                    &Json(&resource.databases),
                    &resource.replication,
                    &resource.port_assigned,
                    &resource.ssh_certificate_authority,
                    &resource.ssh_host_key,
                    &resource.ssh_record_sessions,
                ],
            )
            .await
            .map_err(|e| {
                if is(&e, &SqlState::UNIQUE_VIOLATION) {
                    StoreError::Conflict {
                        entity: "a resource",
                        name: resource.name.clone(),
                    }
                } else {
                    StoreError::backend("create a resource", e)
                }
            })?;
            tx.commit().await.context("commit a transaction")?;
            Ok(resource)
        })
        .await
    }

    async fn get_resource(&self, id: Uuid) -> Result<Option<ResourceRecord>, StoreError> {
        self.query_opt(
            "read a resource",
            &format!("SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(resource_row)
        .transpose()
    }

    async fn find_resource_by_name(
        &self,
        name: &str,
    ) -> Result<Option<ResourceRecord>, StoreError> {
        self.query_opt(
            "find a resource",
            &format!("SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.name = $1"),
            &[&name],
        )
        .await?
        .as_ref()
        .map(resource_row)
        .transpose()
    }

    async fn list_resources(&self) -> Result<Vec<ResourceRecord>, StoreError> {
        self.query(
            "list resources",
            &format!("SELECT {RESOURCE_COLUMNS} FROM resources r ORDER BY r.name"),
            &[],
        )
        .await?
        .iter()
        .map(resource_row)
        .collect()
    }

    async fn delete_resource(&self, id: Uuid) -> Result<(), StoreError> {
        let n = self
            .execute(
                "delete a resource",
                "DELETE FROM resources WHERE id = $1",
                &[&id],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound("resource"));
        }
        Ok(())
    }

    async fn update_resource(
        &self,
        mut resource: ResourceRecord,
    ) -> Result<ResourceRecord, StoreError> {
        self.call("update a resource", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            port_overrides::lock(&tx).await?;
            let stored = port_overrides::stored_port(&tx, resource.id)
                .await?
                .ok_or(StoreError::NotFound("resource"))?;
            port_overrides::place(&tx, &mut resource, stored).await?;
            let row = tx_query_opt(
                &tx,
                "update a resource",
                &format!(
                    "UPDATE resources r SET kind = $2, hostname = $3, port = $4,
                            port_override = $5, tags = $6, username = $7, database = $8,
                            password_sealed = $9, tls_mode = $10, tls_ca_pem = $11,
                            databases = $12, replication = $13, port_assigned = $14,
                            ssh_certificate_authority = $15, ssh_host_key = $16,
                            ssh_record_sessions = $17
                     WHERE r.id = $1
                     RETURNING {RESOURCE_COLUMNS}"
                ),
                &[
                    &resource.id,
                    &resource.kind.as_str(),
                    &resource.hostname,
                    &i32::from(resource.port),
                    &resource.port_override.map(i32::from),
                    &Json(&resource.tags),
                    &resource.username,
                    &resource.database,
                    &resource.password_sealed,
                    &resource.tls_mode.as_str(),
                    &resource.tls_ca_pem,
                    &Json(&resource.databases),
                    &resource.replication,
                    &resource.port_assigned,
                    &resource.ssh_certificate_authority,
                    &resource.ssh_host_key,
                    &resource.ssh_record_sessions,
                ],
            )
            .await?
            .ok_or(StoreError::NotFound("resource"))?;
            // Name and creation time are the stored ones.
            let stored = resource_row(&row)?;
            tx.commit().await.context("commit a transaction")?;
            Ok(stored)
        })
        .await
    }

    async fn record_ssh_host_key(&self, id: Uuid, host_key: &str) -> Result<bool, StoreError> {
        // Two statements, not one: under READ COMMITTED the read after a concurrent writer's
        // commit must take a new snapshot to see the key that writer recorded.
        self.execute(
            "record an ssh host key",
            "UPDATE resources SET ssh_host_key = $2 WHERE id = $1 AND ssh_host_key IS NULL",
            &[&id, &host_key],
        )
        .await?;
        let row = self
            .query_opt(
                "record an ssh host key",
                "SELECT ssh_host_key FROM resources WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound("resource"))?;
        let recorded: Option<String> = col(&row, 0)?;
        Ok(recorded.as_deref() == Some(host_key))
    }

    async fn grant(&self, grant: GrantRecord) -> Result<GrantRecord, StoreError> {
        self.call("grant a resource", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO grants (account_id, resource_id, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (account_id, resource_id) DO NOTHING",
                )
                .await
                .context("grant a resource")?;
            tx.execute(
                &stmt,
                &[&grant.account_id, &grant.resource_id, &grant.created_at],
            )
            .await
            .map_err(|e| {
                if is(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                    StoreError::NotFound("account or resource")
                } else {
                    StoreError::backend("grant a resource", e)
                }
            })?;
            let row = tx_query_opt(
                &tx,
                "read a grant",
                "SELECT account_id, resource_id, created_at FROM grants
                 WHERE account_id = $1 AND resource_id = $2",
                &[&grant.account_id, &grant.resource_id],
            )
            .await?
            // Gone between the two statements: deleted by someone else in the meantime.
            .ok_or(StoreError::NotFound("account or resource"))?;
            let stored = grant_row(&row)?;
            tx.commit().await.context("commit a transaction")?;
            Ok(stored)
        })
        .await
    }

    async fn revoke_grant(&self, account_id: Uuid, resource_id: Uuid) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "revoke a grant",
                "DELETE FROM grants WHERE account_id = $1 AND resource_id = $2",
                &[&account_id, &resource_id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn list_grants(&self, account_id: Uuid) -> Result<Vec<GrantRecord>, StoreError> {
        self.query(
            "list grants",
            "SELECT g.account_id, g.resource_id, g.created_at
             FROM grants g JOIN resources r ON r.id = g.resource_id
             WHERE g.account_id = $1 ORDER BY r.name",
            &[&account_id],
        )
        .await?
        .iter()
        .map(grant_row)
        .collect()
    }

    async fn list_resource_grants(
        &self,
        resource_id: Uuid,
    ) -> Result<Vec<(AccountRecord, GrantRecord)>, StoreError> {
        self.query(
            "list a resource's grants",
            "SELECT a.id, a.name, a.kind, a.status, a.created_at, g.created_at
             FROM grants g JOIN accounts a ON a.id = g.account_id
             WHERE g.resource_id = $1 ORDER BY a.name",
            &[&resource_id],
        )
        .await?
        .iter()
        .map(|row| {
            let account = account_row(row)?;
            let grant = GrantRecord {
                account_id: account.id,
                resource_id,
                created_at: col(row, 5)?,
            };
            Ok((account, grant))
        })
        .collect()
    }

    async fn has_grant(&self, account_id: Uuid, resource_id: Uuid) -> Result<bool, StoreError> {
        let row = self
            .query_opt(
                "check a grant",
                "SELECT EXISTS (SELECT 1 FROM grants WHERE account_id = $1 AND resource_id = $2)",
                &[&account_id, &resource_id],
            )
            .await?
            .ok_or_else(|| invalid("EXISTS returned no row".into()))?;
        col(&row, 0)
    }

    async fn list_granted_resources(
        &self,
        account_id: Uuid,
    ) -> Result<Vec<ResourceRecord>, StoreError> {
        self.query(
            "list granted resources",
            &format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources r
                 JOIN grants g ON g.resource_id = r.id
                 WHERE g.account_id = $1 ORDER BY r.name"
            ),
            &[&account_id],
        )
        .await?
        .iter()
        .map(resource_row)
        .collect()
    }

    async fn create_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.execute(
            "create a session",
            "INSERT INTO sessions (id, account_id, labels, client, created_at, ended_at,
                                   last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &session.id,
                &session.account_id,
                &Json(&session.labels),
                &session.client,
                &session.created_at,
                &session.ended_at,
                &session.last_used_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        self.query_opt(
            "read a session",
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(session_row)
        .transpose()
    }

    async fn end_session(&self, id: Uuid, now: i64) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "end a session",
                "UPDATE sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL",
                &[&id, &now],
            )
            .await?;
        Ok(n > 0)
    }

    async fn open_session(&self, session: SessionRecord, max_open: u32) -> Result<u64, StoreError> {
        self.call("create a session", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            let made_room = sessions::open(&tx, &session, max_open).await?;
            tx.commit().await.context("commit a transaction")?;
            Ok(made_room)
        })
        .await
    }

    async fn touch_session(&self, id: Uuid, now: i64) -> Result<bool, StoreError> {
        self.call("record a session's use", async {
            let client = self.client().await?;
            sessions::touch(&client, id, now).await
        })
        .await
    }

    async fn count_open_sessions(&self, account_id: Uuid) -> Result<u64, StoreError> {
        self.call("count open sessions", async {
            let client = self.client().await?;
            sessions::count_open(&client, account_id).await
        })
        .await
    }

    async fn expire_sessions(&self, expiry: SessionExpiry, limit: u32) -> Result<u64, StoreError> {
        self.call("end expired sessions", async {
            let client = self.client().await?;
            sessions::expire(&client, expiry, limit).await
        })
        .await
    }

    async fn prune_sessions(&self, ended_before: i64, limit: u32) -> Result<u64, StoreError> {
        self.call("remove ended sessions", async {
            let client = self.client().await?;
            sessions::prune(&client, ended_before, limit).await
        })
        .await
    }

    async fn upsert_gateway(&self, gateway: GatewayRecord) -> Result<GatewayRecord, StoreError> {
        let row = self
            .query_opt(
                "register a gateway",
                &format!(
                    "INSERT INTO gateways (id, name, address, server_name, last_seen)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name) DO UPDATE SET
                         address = excluded.address,
                         server_name = excluded.server_name,
                         last_seen = excluded.last_seen
                     RETURNING {GATEWAY_COLUMNS}"
                ),
                &[
                    &gateway.id,
                    &gateway.name,
                    &gateway.address,
                    &gateway.server_name,
                    &gateway.last_seen,
                ],
            )
            .await?
            .ok_or_else(|| invalid("RETURNING returned no row".into()))?;
        gateway_row(&row)
    }

    async fn list_gateways(&self) -> Result<Vec<GatewayRecord>, StoreError> {
        self.query(
            "list gateways",
            &format!("SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY name"),
            &[],
        )
        .await?
        .iter()
        .map(gateway_row)
        .collect()
    }

    async fn revocation_epoch(&self) -> Result<i64, StoreError> {
        let row = self
            .query_opt(
                "read the revocation epoch",
                "SELECT epoch FROM revocation_epoch WHERE id = 1",
                &[],
            )
            .await?
            .ok_or_else(|| invalid("the revocation_epoch row is missing".into()))?;
        col(&row, 0)
    }

    async fn write_audit(&self, events: Arc<[AuditEvent]>) -> Result<(), StoreError> {
        self.call("write the audit trail", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            audit::write(&tx, Writer::Local, &events).await?;
            tx.commit().await.context("commit a transaction")
        })
        .await
    }

    async fn write_gateway_audit(
        &self,
        gateway: &str,
        events: Vec<AuditEvent>,
    ) -> Result<AuditRefusals, StoreError> {
        self.call("write the audit trail", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            let refused = audit::write(&tx, Writer::Gateway(gateway), &events).await?;
            tx.commit().await.context("commit a transaction")?;
            Ok(refused)
        })
        .await
    }

    async fn interrupt_connections(&self, gateway: &str, now: i64) -> Result<u64, StoreError> {
        self.call("close the records a stopped gateway left open", async {
            let client = self.client().await?;
            audit::interrupt(&client, gateway, now).await
        })
        .await
    }

    async fn prune_audit(&self, ended_before: i64, limit: u32) -> Result<u64, StoreError> {
        self.call("remove audit records past the retention", async {
            let client = self.client().await?;
            audit::prune(&client, ended_before, limit).await
        })
        .await
    }

    async fn list_connections(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.call("list audit records", async {
            let client = self.client().await?;
            audit::list_connections(&client, &filter).await
        })
        .await
    }

    async fn get_connection(&self, id: Uuid) -> Result<Option<AuditRecord>, StoreError> {
        self.call("read an audit record", async {
            let client = self.client().await?;
            audit::get_connection(&client, id).await
        })
        .await
    }

    async fn list_queries(
        &self,
        connection_id: Uuid,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditQueryEvent>, StoreError> {
        self.call("list queries", async {
            let client = self.client().await?;
            audit::list_queries(&client, connection_id, after, limit).await
        })
        .await
    }

    async fn recorded_channels(&self, connection_id: Uuid) -> Result<Vec<u32>, StoreError> {
        self.call("list recorded channels", async {
            let client = self.client().await?;
            audit::recorded_channels(&client, connection_id).await
        })
        .await
    }

    async fn list_recording(
        &self,
        connection_id: Uuid,
        channel: u32,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecordingEvent>, StoreError> {
        self.call("read a terminal session's recording", async {
            let client = self.client().await?;
            audit::list_recording(&client, connection_id, channel, after, limit).await
        })
        .await
    }

    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query_opt(
            "read a setting",
            "SELECT value FROM settings WHERE key = $1",
            &[&key],
        )
        .await?
        .as_ref()
        .map(|row| col(row, 0))
        .transpose()
    }

    async fn set_setting(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.execute(
            "store a setting",
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await?;
        Ok(())
    }

    async fn put_setting_if_absent(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "store a setting",
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .await?;
        Ok(n > 0)
    }

    async fn change_port_overrides(
        &self,
        change: PortOverridesChange,
    ) -> Result<(PortOverrides, u64), StoreError> {
        self.call("change the port-overrides setting", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.context("start a transaction")?;
            port_overrides::lock(&tx).await?;
            let changed = port_overrides::change(&tx, change).await?;
            tx.commit().await.context("commit a transaction")?;
            Ok(changed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::suite::{Fixture, fresh_postgres_database, store_suite};

    /// A fresh database and two stores on it, each with its own pool, as two control planes.
    async fn fixture() -> Fixture {
        let url = fresh_postgres_database().await;
        let a = PostgresStore::connect(&url).await.unwrap();
        let b = PostgresStore::connect(&url).await.unwrap();
        Fixture {
            a: Arc::new(a),
            b: Arc::new(b),
            _keep: Box::new(()),
        }
    }

    store_suite!(fixture);

    async fn raw(url: &DatabaseUrl) -> tokio_postgres::Client {
        let (client, connection) = url.config.connect(url.tls()).await.unwrap();
        tokio::spawn(connection);
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_starting_at_once_migrate_once() {
        let url = fresh_postgres_database().await;
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresStore::connect(&url).await })
            })
            .collect();
        for open in opens {
            let store = open.await.unwrap().unwrap();
            assert_eq!(store.revocation_epoch().await.unwrap(), 0);
        }
        let client = raw(&url).await;
        let versions: Vec<i64> = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let known: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, known);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_schema_is_refused() {
        let url = fresh_postgres_database().await;
        drop(PostgresStore::connect(&url).await.unwrap());
        // Opening again changes nothing.
        drop(PostgresStore::connect(&url).await.unwrap());
        raw(&url)
            .await
            .batch_execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
            .await
            .unwrap();
        let err = PostgresStore::connect(&url).await.unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 99, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade sdm-server"), "{err}");
    }

    #[test]
    fn urls_never_show_the_password_and_bad_tls_settings_are_named() {
        let url =
            DatabaseUrl::parse("postgres://sdm:s3cr%40t-pw@db.internal:6432/sdm_state").unwrap();
        assert_eq!(url.redacted(), "postgres://sdm@db.internal:6432/sdm_state");
        assert_eq!(url.to_string(), url.redacted());
        assert!(!format!("{url:?}").contains("s3cr"));
        let store_debug = format!(
            "{:?}",
            PostgresStore {
                pool: Pool::builder(Manager::new(url.config.clone(), url.tls()))
                    .build()
                    .unwrap(),
                url: url.redacted(),
                clock: crate::store::CallClock::default(),
            }
        );
        assert!(!store_debug.contains("s3cr"), "{store_debug}");
        let kv =
            DatabaseUrl::parse("host=/run/postgresql user=sdm dbname=sdm password=pw").unwrap();
        assert_eq!(kv.redacted(), "postgres://sdm@/run/postgresql:5432/sdm");
        let socket = DatabaseUrl::parse("postgres://sdm@%2Frun%2Fpostgresql/sdm").unwrap();
        assert_eq!(socket.redacted(), "postgres://sdm@/run/postgresql:5432/sdm");
        let required = DatabaseUrl::parse("postgres://sdm@db/sdm?sslmode=require").unwrap();
        assert_eq!(
            required.redacted(),
            "postgres://sdm@db:5432/sdm?sslmode=require"
        );
        for (url, says) in [
            (
                "postgres://sdm@db/sdm?sslmode=verify-ca",
                "use sslmode=verify-full",
            ),
            (
                "host=db user=sdm sslmode=verify-full",
                "needs sslrootcert=FILE",
            ),
            (
                "postgres://sdm@db/sdm?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "cannot read sslrootcert /nonexistent/ca.pem",
            ),
            (
                "host=db sslmode=require sslrootcert=/etc/hostname",
                "only used with sslmode=verify-full",
            ),
            (
                "postgres://sdm@db/sdm?sslmode=verify-full&sslrootcert=/etc/hostname",
                "sslrootcert /etc/hostname: no PEM certificate",
            ),
            ("postgres://sdm@db/sdm?sslmode=always", "not one of disable"),
        ] {
            let err = DatabaseUrl::parse(url).unwrap_err();
            let text = sdm_proto::error::one_line(&err);
            assert!(text.contains(says), "{url}: {text}");
        }
        for bad in [
            "postgres://sdm@db:notaport/sdm",
            "nonsense",
            "postgres:///sdm",
        ] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_is_reported_in_bounded_time() {
        let port = sdm_testkit::free_port();
        let url = DatabaseUrl::parse(&format!(
            "postgres://sdm:pw-x9q@127.0.0.1:{port}/sdm?connect_timeout=2"
        ))
        .unwrap();
        let started = std::time::Instant::now();
        let err = PostgresStore::connect(&url).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20));
        let text = sdm_proto::error::one_line(&err);
        assert!(text.contains("get a PostgreSQL connection"), "{text}");
        assert!(!text.contains("x9q"), "{text}");
    }
}
