//! [`SessionCore`]: what a session shares with its tunnels and dials (the API client, the
//! session id and logging in again, leases, the resource list, the gateway connector). Sessions
//! and tunnels both use it; it uses neither.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sdm_proto::api::{LoginRequest, LoginResponse, ResourceList, Settings, routes};
use uuid::Uuid;

use crate::account::Account;
use crate::api::ApiClient;
use crate::error::{Error, ErrorKind, Result};
use crate::gateway::{Connector, GatewayStream, WarmPool};
use crate::lease::{ActiveLease, LeaseSlot};
use crate::observer::TunnelObserver;
use crate::resource::{Resource, resolve};

/// How long a resource list is reused to resolve names for `connect` and `dial`.
const RESOURCE_CACHE: Duration = Duration::from_secs(5);
/// Logins per call at most when the session keeps ending on the server (the account's other
/// logins push it out of its session limit as soon as it is made).
const RELOGINS: usize = 2;

/// What a session, its tunnels and its dials share: the API client, leases, gateway connector.
pub(crate) struct SessionCore {
    pub(crate) api: Arc<ApiClient>,
    /// The session on the control plane; replaced when it ended there (expiry, the account's
    /// session limit) while the token is still valid: see [`SessionCore::lease`].
    id: RwLock<Uuid>,
    /// What a login sends again (the job's labels and client).
    login: LoginRequest,
    /// One login again at a time.
    pub(crate) relogin: tokio::sync::Mutex<()>,
    pub(crate) account: Account,
    pub(crate) settings: Settings,
    pub(crate) connector: Connector,
    pub(crate) warm_connections: usize,
    /// Told what the tunnels do; `None` costs nothing on the data path.
    pub(crate) observer: Option<Arc<dyn TunnelObserver>>,
    leases: Mutex<HashMap<Uuid, Arc<LeaseSlot>>>,
    resources: Mutex<Option<(Instant, Vec<Resource>)>>,
    pub(crate) logged_out: AtomicBool,
}

impl SessionCore {
    /// The core of a session the control plane just opened.
    pub(crate) fn new(
        api: Arc<ApiClient>,
        connector: Connector,
        login: LoginRequest,
        response: LoginResponse,
        warm_connections: usize,
        observer: Option<Arc<dyn TunnelObserver>>,
    ) -> SessionCore {
        SessionCore {
            api,
            id: RwLock::new(response.session_id),
            login,
            relogin: tokio::sync::Mutex::new(()),
            account: Account {
                id: response.account.id,
                name: response.account.name,
                kind: response.account.kind,
            },
            connector,
            settings: response.settings,
            warm_connections,
            observer,
            leases: Mutex::new(HashMap::new()),
            resources: Mutex::new(None),
            logged_out: AtomicBool::new(false),
        }
    }

    /// The current session id.
    pub(crate) fn id(&self) -> Uuid {
        *self
            .id
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A lease for `slot`'s resource: [`LeaseSlot::get`], or a fresh one with `renew`. When
    /// the control plane says the session is not open although the token is valid (it expired,
    /// or the account's session limit ended it), logs in again with the same token, labels and
    /// client, and asks again: tunnels carry on with new connections. A refusal of the token
    /// itself (revoked, account suspended or deleted) fails the login and is returned.
    pub(crate) async fn lease(&self, slot: &LeaseSlot, renew: bool) -> Result<Arc<ActiveLease>> {
        let mut id = self.id();
        let mut result = if renew {
            slot.renew(&self.api, id).await
        } else {
            slot.get(&self.api, id).await
        };
        for _ in 0..RELOGINS {
            match result {
                Err(e) if e.kind() == ErrorKind::Unauthenticated => {
                    tracing::debug!(error = %e, "the control plane refused a lease");
                    id = self.log_in_again(id).await?;
                    result = slot.renew(&self.api, id).await;
                }
                other => return other,
            }
        }
        result
    }

    /// Replaces the session `ended` by a new login, unless another caller already did; returns
    /// the session to use.
    async fn log_in_again(&self, ended: Uuid) -> Result<Uuid> {
        let _one = self.relogin.lock().await;
        self.check_open()?;
        let current = self.id();
        if current != ended {
            return Ok(current);
        }
        let response: LoginResponse = self.api.post(routes::LOGIN, &self.login).await?;
        if response.account.id != self.account.id {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                format!(
                    "logging in again gave account {}, not {}; log in anew",
                    response.account.name, self.account.name
                ),
            ));
        }
        if let Ok(mut id) = self.id.write() {
            *id = response.session_id;
        }
        if let Ok(leases) = self.leases.lock() {
            for slot in leases.values() {
                slot.forget();
            }
        }
        tracing::info!(
            account = %self.account.name,
            ended = %ended,
            session = %response.session_id,
            "the session had ended on the server (expiry, or the account's session limit); \
             logged in again with the same token"
        );
        Ok(response.session_id)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.logged_out.load(Ordering::Acquire) {
            return Err(Error::closed("the session was logged out; log in again"));
        }
        Ok(())
    }

    /// Whether the account still has `resource`: `Ok` if so; the refusal (unauthenticated,
    /// forbidden) if access was taken away; transient failures are passed on as they are.
    pub(crate) async fn verify_access(&self, resource: &Resource) -> Result<()> {
        let resources = self.fetch_resources().await?;
        if resources.iter().any(|r| r.id == resource.id) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Forbidden,
                format!("access to resource {:?} was revoked", resource.name),
            ))
        }
    }

    pub(crate) async fn fetch_resources(&self) -> Result<Vec<Resource>> {
        let list: ResourceList = self.api.get(routes::RESOURCES).await?;
        let mut resources: Vec<Resource> = list.resources.into_iter().map(Resource::from).collect();
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        if let Ok(mut cache) = self.resources.lock() {
            *cache = Some((Instant::now(), resources.clone()));
        }
        Ok(resources)
    }

    /// The last resource list fetched, however old (empty if none was).
    pub(crate) fn last_resources(&self) -> Vec<Resource> {
        match self.resources.lock() {
            Ok(cache) => cache
                .as_ref()
                .map(|(_, list)| list.clone())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The resource `name` picks, from a recent list if there is one.
    pub(crate) async fn resolve(&self, name: &str) -> Result<Resource> {
        let cached = match self.resources.lock() {
            Ok(cache) => cache
                .as_ref()
                .filter(|(at, _)| at.elapsed() < RESOURCE_CACHE)
                .map(|(_, list)| list.clone()),
            Err(_) => None,
        };
        if let Some(list) = cached
            && let Ok(found) = resolve(&list, name)
        {
            return Ok(found.clone());
        }
        let list = self.fetch_resources().await?;
        resolve(&list, name).cloned()
    }

    pub(crate) fn lease_slot(&self, resource_id: Uuid) -> Arc<LeaseSlot> {
        match self.leases.lock() {
            Ok(mut leases) => leases
                .entry(resource_id)
                .or_insert_with(|| Arc::new(LeaseSlot::new(resource_id)))
                .clone(),
            Err(_) => Arc::new(LeaseSlot::new(resource_id)),
        }
    }

    /// A gateway connection with OPEN sent (or, on a warm one, going out with the stream's first
    /// bytes): a warm one from `pool` when there is one, else a new one. The pool is topped up in
    /// the background.
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        slot: &LeaseSlot,
        resource: &str,
        pool: Option<&Arc<WarmPool>>,
    ) -> Result<GatewayStream> {
        let lease = self.lease(slot, false).await?;
        if let Some(pool) = pool {
            let warm = pool.take(&lease, &self.connector);
            if pool.claim_fill() {
                let (core, pool, lease, resource) = (
                    self.clone(),
                    pool.clone(),
                    lease.clone(),
                    resource.to_owned(),
                );
                tokio::spawn(async move { pool.fill(&core.connector, &lease, &resource).await });
            }
            if let Some(mut stream) = warm {
                stream.open();
                return Ok(stream);
            }
        }
        self.connector.connect(&lease, resource, true).await
    }
}
