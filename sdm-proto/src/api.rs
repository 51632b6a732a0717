//! JSON bodies of the control plane's HTTP API (`docs/PROTOCOL.md` lists the routes).
//!
//! Every request is authenticated with `Authorization: Bearer <token>`. Timestamps are Unix
//! seconds. Unknown fields are ignored in both directions so that either side can be newer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ResourceKind;
pub use crate::audit::{AuditQuery, AuditRecord};
pub use crate::port_range::PortRange;

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
    /// `GET` (optionally `?name_contains=&offset=&limit=`) → [`AccountList`](super::AccountList); `POST` [`CreateAccount`](super::CreateAccount) → [`CreatedAccount`](super::CreatedAccount).
    pub const ADMIN_ACCOUNTS: &str = "/v1/admin/accounts";
    /// `GET` → [`AdminResourceList`](super::AdminResourceList); `POST` [`CreateResource`](super::CreateResource) → [`AdminResource`](super::AdminResource).
    /// `PATCH /v1/admin/resources/{resource}` [`UpdateResource`](super::UpdateResource) → [`AdminResource`](super::AdminResource).
    /// `GET /v1/admin/resources/{resource}/grants` → [`ResourceGrantList`](super::ResourceGrantList).
    pub const ADMIN_RESOURCES: &str = "/v1/admin/resources";
    /// `GET` → [`Settings`](super::Settings); `PATCH` [`UpdateSettings`](super::UpdateSettings) → [`Settings`](super::Settings).
    pub const ADMIN_SETTINGS: &str = "/v1/admin/settings";
    /// `POST` → [`Settings`](super::Settings): every port the port-overrides setting assigned
    /// is assigned again, lowest ports first in name order; explicit ports stay.
    pub const ADMIN_REGENERATE_PORTS: &str = "/v1/admin/settings/regenerate-ports";
    /// `GET ?account=&resource=&since=&until=&limit=&before=` → [`AuditList`](super::AuditList);
    /// `GET /v1/admin/audit/{id}/queries?limit=&after=` → [`AuditQueryList`](super::AuditQueryList).
    pub const ADMIN_AUDIT: &str = "/v1/admin/audit";
    /// `GET` → [`GatewayDetailsList`](crate::gateway::GatewayDetailsList); `POST`
    /// [`CreateGateway`](crate::gateway::CreateGateway) → [`CreatedGateway`](crate::gateway::CreatedGateway);
    /// `GET`/`DELETE /v1/admin/gateways/{gateway}`.
    pub const ADMIN_GATEWAYS: &str = "/v1/admin/gateways";
    /// `POST` [`RegisterGateway`](crate::gateway::RegisterGateway) →
    /// [`GatewayRegistration`](crate::gateway::GatewayRegistration) (gateway token).
    pub const GATEWAY_REGISTER: &str = "/v1/gateway/register";
    /// `POST` [`RegisterGateway`](crate::gateway::RegisterGateway) →
    /// [`HeartbeatReply`](crate::gateway::HeartbeatReply) (gateway token).
    pub const GATEWAY_HEARTBEAT: &str = "/v1/gateway/heartbeat";
    /// `POST`, no body → 204: stop offering this gateway to clients (gateway token).
    pub const GATEWAY_WITHDRAW: &str = "/v1/gateway/withdraw";
    /// `POST` [`AuthorizeLease`](crate::gateway::AuthorizeLease) →
    /// [`Authorization`](crate::gateway::Authorization) (gateway token).
    pub const GATEWAY_AUTHORIZE: &str = "/v1/gateway/authorize";
    /// `GET` → [`RevocationEpoch`](crate::gateway::RevocationEpoch) (gateway token).
    pub const GATEWAY_REVOCATIONS: &str = "/v1/gateway/revocations";
    /// `POST` [`AuditUpload`](crate::gateway::AuditUpload) → 204 (gateway token).
    pub const GATEWAY_AUDIT: &str = "/v1/gateway/audit";
    /// `POST` [`RecordHostKey`](crate::gateway::RecordHostKey) → 204 (gateway token); refused
    /// (`upstream_refused`) when the resource recorded another key.
    pub const GATEWAY_SSH_HOST_KEY: &str = "/v1/gateway/ssh-host-key";
    /// `GET` → [`SshCertificateAuthority`](super::SshCertificateAuthority).
    pub const ADMIN_SSH_CA: &str = "/v1/admin/ssh-ca";
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
    /// The organisation's settings that clients act on.
    #[serde(default)]
    pub settings: Settings,
}

/// Organisation settings.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// Port overrides: clients that keep tunnels (the `sdm` agent) connect every granted
    /// resource that has a fixed port as soon as they log in.
    #[serde(default)]
    pub auto_connect: bool,
    /// Port overrides: every resource gets a unique local port from [`port_range`] when it is
    /// created (and every existing one when this is switched on), unless an admin gave it one;
    /// so `sdm status` shows a port for every resource and auto-connect covers all of them.
    ///
    /// [`port_range`]: Settings::port_range
    #[serde(default)]
    pub assign_ports: bool,
    /// Where assigned ports come from.
    #[serde(default)]
    pub port_range: PortRange,
}

/// `PATCH /v1/admin/settings`: only the fields present change. The port fields change in one
/// transaction with the ports they move, before `auto_connect`: when they are refused,
/// nothing changes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateSettings {
    /// See [`Settings::auto_connect`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_connect: Option<bool>,
    /// See [`Settings::assign_ports`]. Switching it on gives every resource without a port one
    /// from the range (refused, changing nothing, when the range has too few free ports);
    /// switching it off takes back the ports it assigned (explicit ones stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_ports: Option<bool>,
    /// See [`Settings::port_range`]. While ports are assigned, assigned ports outside the new
    /// range move into it and those inside stay; refused, changing nothing, when the range has
    /// too few free ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
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
    /// ssh resources: the public host key line (`ssh-ed25519 AAAA…`) every gateway presents
    /// for this resource, for clients to pin (`sdm ssh-config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
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

/// A name that is none of an enum's text forms (see [`AccountKind::as_str`] and the like).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    /// What the name was read as: `"account kind"`, `"TLS mode"`, …
    pub what: &'static str,
    /// The name.
    pub name: String,
}

/// `as_str`, `ALL`, `FromStr` and `Display` of a fieldless enum, from one table of the names
/// serde also uses on the wire (a test checks that the two agree). The store writes these
/// names to its databases; they live here, next to the enum, once.
macro_rules! text_forms {
    ($enum:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $enum {
            /// Every value, in declaration order.
            pub const ALL: &'static [$enum] = &[$($enum::$variant),+];

            /// The name used on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($enum::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $enum {
            type Err = UnknownName;

            fn from_str(name: &str) -> Result<$enum, UnknownName> {
                match name {
                    $($name => Ok($enum::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        name: name.to_owned(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
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

text_forms!(AccountKind, "account kind", {
    Service => "service",
    Admin => "admin",
});

text_forms!(AccountStatus, "account status", {
    Active => "active",
    Suspended => "suspended",
});

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
    /// When it last logged in (its newest session's creation, console sign-ins included):
    /// given only in a paged `GET /v1/admin/accounts`, and `None` there when it never did (or
    /// its sessions were pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<i64>,
}

/// `GET /v1/admin/accounts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountList {
    /// All accounts, sorted by name; with the paging parameters (`name_contains`, `offset`,
    /// `limit`), one page of those matching.
    pub accounts: Vec<AccountInfo>,
    /// With the paging parameters: how many accounts match in all, on every page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
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
    /// How the gateway protects its connection to the resource (postgres; default: disable).
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTls>,
    /// Databases a client may name besides the stored one (postgres); see
    /// [`AdminResource::databases`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Let replication connections through (postgres; default: refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replication: bool,
    /// How the gateway logs in (ssh; required for kind `ssh`, refused for other kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
}

/// How the gateway logs in to an ssh resource. In requests, give exactly one of `private_key`
/// and `certificate_authority` (an update may give neither to keep the stored choice); in
/// answers `private_key` is always `None` (it is stored sealed and never returned). `Debug`
/// hides the key.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshSettings {
    /// The upstream user name (the certificate's principal in CA mode). Required when creating;
    /// empty in an update keeps the stored one.
    #[serde(default)]
    pub username: String,
    /// An unencrypted OpenSSH private key (Ed25519, ECDSA or RSA; `-----BEGIN OPENSSH PRIVATE
    /// KEY-----`) the gateway logs in with. Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Log in with a certificate from sdm's SSH CA, made for each connection and valid while
    /// its lease is; the server must trust the CA (`GET /v1/admin/ssh-ca`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub certificate_authority: bool,
    /// The server's host key (`ssh-ed25519 AAAA…`). `None`: the first connection records the
    /// key the server presents, and any other is refused afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Record what terminal sessions (those with a pty) show, as asciicast v2, in the audit
    /// trail (`GET /v1/admin/audit/{id}/recording`). `None` in an update keeps the stored
    /// choice, in a create means no; answers always say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_sessions: Option<bool>,
}

impl std::fmt::Debug for SshSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSettings")
            .field("username", &self.username)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("certificate_authority", &self.certificate_authority)
            .field("host_key", &self.host_key)
            .field("record_sessions", &self.record_sessions)
            .finish()
    }
}

/// `GET /v1/admin/ssh-ca`: the public key of sdm's SSH certificate authority.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshCertificateAuthority {
    /// `ssh-ed25519 AAAA… sdm-ssh-ca`: a line for sshd's `TrustedUserCAKeys` file.
    pub public_key: String,
}

impl CreateResource {
    /// A resource with the kind's default port and nothing else set.
    pub fn new(name: impl Into<String>, kind: ResourceKind, hostname: impl Into<String>) -> Self {
        CreateResource {
            name: name.into(),
            kind,
            hostname: hostname.into(),
            port: None,
            port_override: None,
            tags: BTreeMap::new(),
            credentials: None,
            upstream_tls: None,
            databases: Vec::new(),
            replication: false,
            ssh: None,
        }
    }

    /// The upstream port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// A fixed local port for clients.
    pub fn port_override(mut self, port: u16) -> Self {
        self.port_override = Some(port);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Credentials the gateway logs in with.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Upstream TLS settings.
    pub fn upstream_tls(mut self, tls: UpstreamTls) -> Self {
        self.upstream_tls = Some(tls);
        self
    }

    /// Also allows a client to name `database` (postgres).
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.databases.push(database.into());
        self
    }

    /// Lets replication connections through (postgres).
    pub fn allow_replication(mut self) -> Self {
        self.replication = true;
        self
    }

    /// How the gateway logs in to an ssh resource.
    pub fn ssh(mut self, ssh: SshSettings) -> Self {
        self.ssh = Some(ssh);
        self
    }
}

/// TLS between the gateway and a resource, in libpq's terms.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// No TLS.
    #[default]
    Disable,
    /// TLS, without checking the server's certificate.
    Require,
    /// TLS, with the certificate checked against a CA and the host name.
    VerifyFull,
}

text_forms!(TlsMode, "TLS mode", {
    Disable => "disable",
    Require => "require",
    VerifyFull => "verify-full",
});

/// Upstream TLS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The mode.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM certificate(s) of the CA that signs the resource's certificate (`verify-full`).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// `PATCH /v1/admin/resources/{resource}`: only the fields present change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateResource {
    /// New upstream host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New upstream port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New fixed local port (`Some(None)`-like clearing is done with `clear_port_override`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_override: Option<u16>,
    /// Removes the fixed local port.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_port_override: bool,
    /// Replaces the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Replaces the stored credentials (password rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Removes the stored credentials (the client then logs in itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_credentials: bool,
    /// Replaces the upstream TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTls>,
    /// Replaces the databases a client may name besides the stored one (empty: only that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    /// Lets replication connections through, or refuses them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<bool>,
    /// Changes how the gateway logs in to an ssh resource: what is given replaces what is
    /// stored (see [`SshSettings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
    /// Forgets the ssh server's host key: the next connection records the key it presents
    /// (after a server was reinstalled and its key changed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_ssh_host_key: bool,
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
    /// Whether `port_override` was assigned by the port-overrides setting
    /// ([`Settings::assign_ports`]) rather than given by an admin.
    #[serde(default)]
    pub port_assigned: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Upstream user name, when credentials are stored.
    pub username: Option<String>,
    /// Upstream database, when stored.
    pub database: Option<String>,
    /// Whether a password is stored.
    pub has_credentials: bool,
    /// Upstream TLS mode.
    #[serde(default)]
    pub upstream_tls: TlsMode,
    /// Databases a client may name besides the stored one (postgres). A client that names
    /// another database is refused; one that names none gets the stored database. With no stored
    /// database and no list, the client chooses.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Whether replication connections (`replication=true|database`) are let through
    /// (postgres); they read every database of the server.
    #[serde(default)]
    pub replication: bool,
    /// How the gateway logs in (ssh resources): never with the private key, which is not
    /// returned (`has_credentials` says whether one is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
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

/// An account that holds a grant of a resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceGrant {
    /// The account.
    pub account: AccountInfo,
    /// The resource.
    pub resource_id: Uuid,
    /// When it was granted.
    pub created_at: i64,
}

/// `GET /v1/admin/resources/{resource}/grants`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceGrantList {
    /// The accounts granted the resource, sorted by account name.
    pub grants: Vec<ResourceGrant>,
}

/// `GET /v1/admin/audit`: newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditList {
    /// One page of records.
    pub records: Vec<AuditRecord>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<String>,
}

/// `GET /v1/admin/audit/{id}/queries`: in the order they were sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditQueryList {
    /// One page of queries.
    pub queries: Vec<AuditQuery>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

/// `GET /v1/admin/audit/{id}/recording?channel=N&after=S`: one page of a recorded terminal
/// session (ssh resources that record them), as the lines of an asciicast v2 file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecording {
    /// The connection's channels that have a recording, in order (one per terminal session).
    pub channels: Vec<u32>,
    /// The channel this page is of: the one asked for, or else the first recorded one; `None`
    /// when the connection has no recording.
    pub channel: Option<u32>,
    /// Lines in order, each with its position: line 0 is the asciicast header, then one event
    /// per line. Joined by newlines, the pages make the `.cast` file.
    pub lines: Vec<String>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `as_str` gives are serde's, and `FromStr` reads them back.
    fn text_forms_agree_with_serde<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + std::fmt::Debug + PartialEq + Serialize + std::str::FromStr<Err = UnknownName>,
    {
        for &value in all {
            let name = as_str(value);
            assert_eq!(serde_json::to_string(&value).unwrap(), format!("{name:?}"));
            assert_eq!(name.parse::<T>(), Ok(value));
        }
        let err = "Admin ".parse::<T>().unwrap_err();
        assert_eq!(err.name, "Admin ");
    }

    #[test]
    fn enum_text_forms_are_the_wire_names() {
        text_forms_agree_with_serde(AccountKind::ALL, AccountKind::as_str);
        text_forms_agree_with_serde(AccountStatus::ALL, AccountStatus::as_str);
        text_forms_agree_with_serde(TlsMode::ALL, TlsMode::as_str);
        assert_eq!(TlsMode::VerifyFull.to_string(), "verify-full");
        assert_eq!(
            "verify_full".parse::<TlsMode>().unwrap_err().to_string(),
            "unknown TLS mode \"verify_full\""
        );
    }

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
                last_login: None,
            },
            token: "sdm_svc_secretsecret".into(),
        };
        assert!(!format!("{a:?}").contains("secretsecret"));
        let s = SshSettings {
            username: "deploy".into(),
            private_key: Some("-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXk".into()),
            ..SshSettings::default()
        };
        assert!(!format!("{s:?}").contains("b3BlbnNzaC1rZXk"));
        assert!(
            !format!(
                "{:?}",
                CreateResource::new("web", crate::ResourceKind::Ssh, "h").ssh(s)
            )
            .contains("b3BlbnNzaC1rZXk")
        );
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
