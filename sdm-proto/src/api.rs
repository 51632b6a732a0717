//! JSON bodies of the control plane's HTTP API (`docs/PROTOCOL.md` lists the routes).
//!
//! Every request is authenticated with `Authorization: Bearer <token>`. Timestamps are Unix
//! seconds. Unknown fields are ignored in both directions so that either side can be newer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ResourceKind;

/// Route paths, shared by the server's router and the client.
pub mod routes {
    /// `GET`: liveness, no authentication.
    pub const HEALTH: &str = "/v1/health";
    /// `POST` [`LoginRequest`](super::LoginRequest) → [`LoginResponse`](super::LoginResponse).
    pub const LOGIN: &str = "/v1/login";
    /// `POST` [`LogoutRequest`](super::LogoutRequest) → 204.
    pub const LOGOUT: &str = "/v1/logout";
    /// `GET` → [`ResourceList`](super::ResourceList).
    pub const RESOURCES: &str = "/v1/resources";
    /// `POST` [`LeaseRequest`](super::LeaseRequest) → [`LeaseGrant`](super::LeaseGrant).
    pub const LEASES: &str = "/v1/leases";
    /// `GET` → [`AccountList`](super::AccountList); `POST` [`CreateAccount`](super::CreateAccount) → [`CreatedAccount`](super::CreatedAccount).
    pub const ADMIN_ACCOUNTS: &str = "/v1/admin/accounts";
    /// `GET` → [`AdminResourceList`](super::AdminResourceList); `POST` [`CreateResource`](super::CreateResource) → [`AdminResource`](super::AdminResource).
    pub const ADMIN_RESOURCES: &str = "/v1/admin/resources";
}

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `POST /v1/login`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginRequest {
    /// Job labels (`dag_id`, `task_id`, …) recorded with every connection of the session.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The client library and version, for the audit trail.
    #[serde(default)]
    pub client: String,
}

/// Answer to a login.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginResponse {
    /// The new session; leases are bound to it.
    pub session_id: Uuid,
    /// Who logged in.
    pub account: AccountSummary,
    /// The control plane's clock.
    pub server_time: i64,
}

/// An account as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountSummary {
    /// Account id.
    pub id: Uuid,
    /// Account name.
    pub name: String,
    /// Service or admin.
    pub kind: AccountKind,
}

/// `POST /v1/logout`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The session to end.
    pub session_id: Uuid,
}

/// `GET /v1/resources`: what the account may connect to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceList {
    /// The resources, sorted by name.
    pub resources: Vec<ResourceInfo>,
}

/// A resource as a job sees it (never its address or credentials).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceInfo {
    /// Resource id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// What it speaks.
    pub kind: ResourceKind,
    /// Free-form `key=value` tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The fixed local port clients listen on, when the admin set one.
    #[serde(default)]
    pub port_override: Option<u16>,
    /// Whether a live gateway serves it.
    #[serde(default = "yes")]
    pub healthy: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/leases`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The login session.
    pub session_id: Uuid,
    /// The resource to reach.
    pub resource_id: Uuid,
}

/// A signed lease and the gateways that accept it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The signed lease, base64url without padding.
    pub lease: String,
    /// The lease id.
    pub lease_id: Uuid,
    /// Lifetime in seconds from now; clients renew at about half of it, on their own clock.
    pub ttl_secs: u64,
    /// Gateways to try, best first.
    pub gateways: Vec<GatewayInfo>,
}

/// Where a gateway listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayInfo {
    /// Gateway id.
    pub id: Uuid,
    /// Gateway name (for messages and audit).
    pub name: String,
    /// `host:port` to connect to.
    pub address: String,
    /// The name its TLS certificate is issued for.
    pub server_name: String,
}

/// Service or admin.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A job's identity.
    Service,
    /// Manages accounts, resources and grants.
    Admin,
}

/// Active or suspended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// May log in and connect.
    Active,
    /// Refused until unsuspended.
    Suspended,
}

/// An account as an admin sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    /// Account id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Service or admin.
    pub kind: AccountKind,
    /// Active or suspended.
    pub status: AccountStatus,
    /// When it was created.
    pub created_at: i64,
}

/// `GET /v1/admin/accounts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountList {
    /// All accounts, sorted by name.
    pub accounts: Vec<AccountInfo>,
}

/// `POST /v1/admin/accounts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateAccount {
    /// Unique name: letters, digits, `-`, `_`, `.`; at most 64 characters.
    pub name: String,
    /// Defaults to a service account.
    #[serde(default = "service")]
    pub kind: AccountKind,
}

fn service() -> AccountKind {
    AccountKind::Service
}

/// A new account (or a rotated token) with its token, shown this once.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreatedAccount {
    /// The account.
    pub account: AccountInfo,
    /// The token. The server keeps only its hash; it cannot be shown again.
    pub token: String,
}

impl std::fmt::Debug for CreatedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAccount")
            .field("account", &self.account)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Stored upstream credentials, as an admin sends them. `Debug` hides the password.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// Upstream user name.
    pub username: String,
    /// Upstream password; stored encrypted, never returned.
    pub password: String,
    /// Upstream database, where the protocol has one.
    #[serde(default)]
    pub database: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .finish()
    }
}

/// `POST /v1/admin/resources`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateResource {
    /// Unique name: letters, digits, `-`, `_`, `.`; at most 64 characters.
    pub name: String,
    /// What it speaks.
    pub kind: ResourceKind,
    /// Host name or IP the gateway connects to.
    pub hostname: String,
    /// Port the gateway connects to; defaults to the kind's usual port.
    #[serde(default)]
    pub port: Option<u16>,
    /// A fixed local port for clients.
    #[serde(default)]
    pub port_override: Option<u16>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Credentials the gateway logs in with (stored encrypted).
    #[serde(default)]
    pub credentials: Option<Credentials>,
}

/// A resource as an admin sees it: address and credential presence, never the password.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminResource {
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
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Upstream user name, when credentials are stored.
    pub username: Option<String>,
    /// Upstream database, when stored.
    pub database: Option<String>,
    /// Whether a password is stored.
    pub has_credentials: bool,
    /// When it was created.
    pub created_at: i64,
}

/// `GET /v1/admin/resources`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminResourceList {
    /// All resources, sorted by name.
    pub resources: Vec<AdminResource>,
}

/// `POST /v1/admin/accounts/{account}/grants`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateGrant {
    /// Resource id or name.
    pub resource: String,
}

/// A grant of a resource to an account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantInfo {
    /// The account.
    pub account_id: Uuid,
    /// The resource.
    pub resource_id: Uuid,
    /// The resource's name.
    pub resource_name: String,
    /// When it was granted.
    pub created_at: i64,
}

/// `GET /v1/admin/accounts/{account}/grants`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantList {
    /// The account's grants.
    pub grants: Vec<GrantInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials {
            username: "app".into(),
            password: "hunter2-very-secret".into(),
            database: None,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let a = CreatedAccount {
            account: AccountInfo {
                id: Uuid::nil(),
                name: "etl".into(),
                kind: AccountKind::Service,
                status: AccountStatus::Active,
                created_at: 0,
            },
            token: "sdm_svc_secretsecret".into(),
        };
        assert!(!format!("{a:?}").contains("secretsecret"));
    }

    #[test]
    fn newer_fields_are_ignored_and_defaults_apply() {
        let r: ResourceInfo = serde_json::from_str(
            r#"{"id":"00000000-0000-0000-0000-000000000000","name":"pg","kind":"cockroach","future":1}"#,
        )
        .unwrap();
        assert_eq!(r.kind, ResourceKind::Other("cockroach".into()));
        assert!(r.healthy);
        assert!(r.tags.is_empty());
        let c: CreateAccount = serde_json::from_str(r#"{"name":"etl"}"#).unwrap();
        assert_eq!(c.kind, AccountKind::Service);
    }
}
