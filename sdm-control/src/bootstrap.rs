//! Opening an installation: its keys and its database, checked against each other (the
//! credential-encryption key must open what the database holds, control planes sharing a
//! database must sign leases with one key), and its first admin account.
//!
//! Whether the installation exists already decides whether missing keys may be created: for
//! SQLite the database file tells, for PostgreSQL what it holds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sdm_proto::api::{AccountKind, AccountStatus};
use sdm_proto::lease::LeaseSigner;
use uuid::Uuid;

use crate::api;
use crate::keys::{CertificateAuthority, KeyError, Keys, SECRET_KEY_ENV, SecretBox, SshCa};
use crate::store::{AccountRecord, DatabaseUrl, PostgresStore, SqliteStore, Store, StoreError};

/// Name of the first admin account.
pub const FIRST_ADMIN_NAME: &str = "admin";
/// Setting that holds a value sealed with the credential-encryption key, to detect a wrong key.
const SECRET_KEY_CHECK: &str = "secret_key_check";
const SECRET_KEY_CHECK_TEXT: &str = "sdm secret key check v1";

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A builder setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The keys could not be loaded or created.
    #[error("cannot set up the server's keys")]
    Keys(#[source] KeyError),
    /// The database could not be opened.
    #[error("cannot open the database {}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The PostgreSQL database could not be reached or set up.
    #[error("cannot use the PostgreSQL database {url}")]
    Postgres {
        /// Its URL, without the password.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The credential-encryption key is not the one the database was set up with.
    #[error(
        "the credential-encryption key does not match this database: restore the original \
         secret.key, or set {SECRET_KEY_ENV} to the key this installation was created with"
    )]
    SecretKeyMismatch,
    /// The lease-signing key is not the one the other control planes of a shared database use.
    #[error(
        "the lease-signing key in the data directory (lease.key) is not the one this \
         installation's other control planes use, so gateways would refuse the leases it signs: \
         copy lease.key from another control plane"
    )]
    LeaseKeyMismatch,
    /// The SSH CA key is not the one the other control planes of a shared database use.
    #[error(
        "the SSH certificate authority key in the data directory (ssh_ca.key) is not the one \
         this installation's other control planes use, so ssh servers would refuse its \
         certificates and clients would see other host keys: copy ssh_ca.key from another \
         control plane"
    )]
    SshCaMismatch,
    /// The state could not be read or written during start.
    #[error("cannot {what}")]
    State {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A listener could not be bound.
    #[error("cannot listen for the {what} on {addr} (is another sdm-server running?)")]
    Bind {
        /// `"API"` or `"gateway"`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gateway could not register with the control plane.
    #[error("cannot register the gateway: {0}")]
    Gateway(String),
    /// A background task failed unexpectedly.
    #[error("an internal start-up task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// An installation's state, opened and checked.
pub struct Installation {
    /// Its database.
    pub store: Arc<dyn Store>,
    /// Its certificate authority.
    pub ca: Arc<CertificateAuthority>,
    /// Signs leases.
    pub lease_signer: LeaseSigner,
    /// Seals and opens stored credentials.
    pub secret_box: SecretBox,
    /// Signs ssh login certificates; gateway host keys derive from it.
    pub ssh_ca: Arc<SshCa>,
}

impl Installation {
    /// Opens (or, on the first start, creates) the installation in `data_dir`, with its
    /// database there (SQLite) or at `database_url` (PostgreSQL; a parse error is reported
    /// here).
    pub async fn open(
        data_dir: &Path,
        database_url: Option<Result<DatabaseUrl, String>>,
    ) -> Result<Installation, ServerError> {
        let data_dir: PathBuf = data_dir.to_owned();
        let shared = database_url.is_some();
        let secret_key_env = secret_key_from_env()?;

        let db_path = data_dir.join(crate::store::sqlite::FILE);
        let postgres = match database_url {
            Some(url) => {
                let url = url.map_err(|e| ServerError::Config(format!("--database-url: {e}")))?;
                let fail = |source| ServerError::Postgres {
                    url: url.redacted(),
                    source,
                };
                let store = PostgresStore::connect(&url).await.map_err(fail)?;
                let existing = store
                    .get_setting(SECRET_KEY_CHECK)
                    .await
                    .map_err(fail)?
                    .is_some()
                    || store.count_admins().await.map_err(fail)? > 0;
                tracing::info!(database = %url, existing, "using PostgreSQL");
                Some((Arc::new(store) as Arc<dyn Store>, existing))
            }
            None => None,
        };
        let keys = {
            let data_dir = data_dir.clone();
            let db_path = db_path.clone();
            let existing_postgres = postgres.as_ref().map(|(_, existing)| *existing);
            blocking(move || {
                let existing = existing_postgres.unwrap_or_else(|| db_path.exists());
                Keys::load_or_create(&data_dir, existing, secret_key_env.as_deref())
                    .map_err(ServerError::Keys)
            })
            .await?
        };
        let store: Arc<dyn Store> = match postgres {
            Some((store, _)) => store,
            None => {
                let db_path = db_path.clone();
                Arc::new(
                    blocking(move || {
                        SqliteStore::open(&db_path).map_err(|source| ServerError::Database {
                            path: db_path.clone(),
                            source,
                        })
                    })
                    .await?,
                )
            }
        };
        let Keys {
            ca,
            lease_signer,
            secret_box,
            ssh_ca,
        } = keys;
        check_secret_key(store.as_ref(), &secret_box).await?;
        check_lease_key(store.as_ref(), &lease_signer.public_key(), shared).await?;
        check_ssh_ca(store.as_ref(), &ssh_ca, shared).await?;
        Ok(Installation {
            store,
            ca: Arc::new(ca),
            lease_signer,
            secret_box,
            ssh_ca: Arc::new(ssh_ca),
        })
    }

    /// Creates the first admin account and returns its token (for tokens naming `api_url`),
    /// if there is no admin yet.
    pub async fn bootstrap_admin(&self, api_url: &str) -> Result<Option<String>, ServerError> {
        bootstrap_admin(self.store.as_ref(), api_url, self.ca.fingerprint()).await
    }
}

fn secret_key_from_env() -> Result<Option<String>, ServerError> {
    match std::env::var(SECRET_KEY_ENV) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ServerError::Config(format!(
            "{SECRET_KEY_ENV} is not valid text; it must be a base64 key"
        ))),
    }
}

/// The setting that records the lease-signing public key of the installation.
const LEASE_KEY_SETTING: &str = "keys.lease_public_key";

/// Control planes sharing a database must sign with one key. The first start records its
/// public key; a later start with another key is refused on a shared database. On an embedded
/// one (a single control plane) a lost and regenerated key simply replaces the record.
async fn check_lease_key(
    store: &dyn Store,
    public_key: &[u8],
    shared: bool,
) -> Result<(), ServerError> {
    let state = |what| move |source| ServerError::State { what, source };
    if store
        .put_setting_if_absent(LEASE_KEY_SETTING, public_key.to_vec())
        .await
        .map_err(state("record the lease key"))?
    {
        return Ok(());
    }
    let recorded = store
        .get_setting(LEASE_KEY_SETTING)
        .await
        .map_err(state("read the lease key"))?;
    if recorded.as_deref() == Some(public_key) {
        return Ok(());
    }
    if shared {
        return Err(ServerError::LeaseKeyMismatch);
    }
    tracing::warn!(
        "lease.key was replaced; leases signed with the old key are refused from now on"
    );
    store
        .set_setting(LEASE_KEY_SETTING, public_key.to_vec())
        .await
        .map_err(state("record the lease key"))
}

/// The setting that records the SSH CA's public key line.
const SSH_CA_SETTING: &str = "keys.ssh_ca_public_key";

/// Control planes sharing a database must share one SSH CA: servers trust its certificates
/// and clients pin the host keys derived from it. As for the lease key, the first start records
/// it; another on a shared database is refused; on an embedded one a lost key is replaced (ssh
/// servers must then trust the new CA, and clients pin the new host keys).
async fn check_ssh_ca(store: &dyn Store, ssh_ca: &SshCa, shared: bool) -> Result<(), ServerError> {
    let state = |what| move |source| ServerError::State { what, source };
    let line = ssh_ca.public_key_line().into_bytes();
    if store
        .put_setting_if_absent(SSH_CA_SETTING, line.clone())
        .await
        .map_err(state("record the SSH CA"))?
    {
        return Ok(());
    }
    let recorded = store
        .get_setting(SSH_CA_SETTING)
        .await
        .map_err(state("read the SSH CA"))?;
    if recorded.as_deref() == Some(line.as_slice()) {
        return Ok(());
    }
    if shared {
        return Err(ServerError::SshCaMismatch);
    }
    tracing::warn!(
        "ssh_ca.key was replaced: ssh servers must trust the new CA (`sdm admin ssh-ca \
         public-key`) and clients see new gateway host keys for ssh resources"
    );
    store
        .set_setting(SSH_CA_SETTING, line)
        .await
        .map_err(state("record the SSH CA"))
}

async fn check_secret_key(store: &dyn Store, secrets: &SecretBox) -> Result<(), ServerError> {
    let state = |what| move |source| ServerError::State { what, source };
    match store
        .get_setting(SECRET_KEY_CHECK)
        .await
        .map_err(state("read the key check"))?
    {
        Some(sealed) => match secrets.open(&sealed) {
            Ok(text) if text == SECRET_KEY_CHECK_TEXT => Ok(()),
            _ => Err(ServerError::SecretKeyMismatch),
        },
        None => {
            let sealed = secrets.seal(SECRET_KEY_CHECK_TEXT).map_err(|_| {
                ServerError::Config("cannot use the credential-encryption key".into())
            })?;
            let stored = store
                .put_setting_if_absent(SECRET_KEY_CHECK, sealed)
                .await
                .map_err(state("store the key check"))?;
            if stored {
                return Ok(());
            }
            // Another control plane sharing the database stored its check first: ours must
            // open it, never replace it.
            match store
                .get_setting(SECRET_KEY_CHECK)
                .await
                .map_err(state("read the key check"))?
                .map(|sealed| secrets.open(&sealed))
            {
                Some(Ok(text)) if text == SECRET_KEY_CHECK_TEXT => Ok(()),
                _ => Err(ServerError::SecretKeyMismatch),
            }
        }
    }
}

/// Creates the first admin account and returns its token, if there is no admin yet.
async fn bootstrap_admin(
    store: &dyn Store,
    api_url: &str,
    ca_fingerprint: [u8; 32],
) -> Result<Option<String>, ServerError> {
    let state = |what| move |source| ServerError::State { what, source };
    if store
        .count_admins()
        .await
        .map_err(state("count admin accounts"))?
        > 0
    {
        return Ok(None);
    }
    let now = sdm_proto::unix_now();
    let id = Uuid::new_v4();
    let mut name = FIRST_ADMIN_NAME.to_owned();
    for attempt in 0..2 {
        let (token, record) = api::new_token(api_url, ca_fingerprint, id, AccountKind::Admin, now)
            .map_err(|_| ServerError::Config("cannot generate the admin token".into()))?;
        let account = AccountRecord {
            id,
            name: name.clone(),
            kind: AccountKind::Admin,
            status: AccountStatus::Active,
            created_at: now,
        };
        match store.create_account(account, record).await {
            Ok(()) => {
                tracing::info!(account = %name, "created the first admin account");
                return Ok(Some(token.encode()));
            }
            // Another control plane sharing the database created the first admin meanwhile.
            Err(StoreError::Conflict { .. })
                if store
                    .count_admins()
                    .await
                    .map_err(state("count admin accounts"))?
                    > 0 =>
            {
                return Ok(None);
            }
            // A service account already has the name: use a distinct one.
            Err(StoreError::Conflict { .. }) if attempt == 0 => {
                name = format!("{FIRST_ADMIN_NAME}-{}", &id.simple().to_string()[..8]);
            }
            Err(source) => {
                return Err(ServerError::State {
                    what: "create the first admin account",
                    source,
                });
            }
        }
    }
    Ok(None)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ServerError::Task)?
}
