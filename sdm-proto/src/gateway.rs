//! JSON bodies of the routes standalone gateways (`sdm-server gateway`) call, under
//! `/v1/gateway/…`, and of the admin routes that create their identities (`/v1/admin/gateways`).
//!
//! A standalone gateway authenticates with a gateway token (`sdm_gw_…`) over TLS 1.3 with the
//! installation's pinned CA. It registers (and receives the lease verification keys and a TLS
//! certificate for its address), heartbeats, asks whether a lease still holds and where it goes
//! (with the resource's credentials), polls the revocation epoch and uploads its audit trail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ResourceKind;
use crate::api::{Credentials, UpstreamTls};
pub use crate::audit::{AuditEnd, AuditEvent, AuditQueryEvent};
use crate::error::{ApiError, ErrorKind};

/// The largest audit upload a control plane reads (one batch of events).
pub const MAX_AUDIT_BODY_BYTES: usize = 1024 * 1024;
/// The most events in one audit upload.
pub const MAX_AUDIT_EVENTS: usize = 4096;

/// `POST /v1/admin/gateways`: a gateway identity and its token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateGateway {
    /// Unique name: letters, digits, `-`, `_`, `.`; at most 64 characters. Clients and the audit
    /// trail show it.
    pub name: String,
    /// The tags the gateway may serve under (see resource pinning, tag `sdm.gateway`). A tag
    /// without a value (`"eu": ""`) is written `eu` on the command line.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A gateway identity as an admin sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayDetails {
    /// Gateway id (kept across restarts and re-registrations).
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// The tags its token allows.
    pub tags: BTreeMap<String, String>,
    /// The tags it registered with (a subset of `tags`); `None` before it first registered.
    #[serde(default)]
    pub registered_tags: Option<BTreeMap<String, String>>,
    /// `host:port` clients connect to; `None` before it first registered.
    #[serde(default)]
    pub address: Option<String>,
    /// Unix seconds of its last heartbeat; `None` when it never reported or withdrew.
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// Whether it reported recently enough to be offered to clients.
    pub live: bool,
    /// When the identity was created; 0 for a gateway built into a control plane (it has no
    /// identity).
    pub created_at: i64,
    /// Whether it is built into a control plane (`sdm-server serve`) rather than a standalone
    /// gateway with an identity; listed only with `GET /v1/admin/gateways?built_in=true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub built_in: bool,
}

/// `GET /v1/admin/gateways`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayDetailsList {
    /// Every gateway identity, sorted by name.
    pub gateways: Vec<GatewayDetails>,
}

/// A new gateway identity with its token, shown this once.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreatedGateway {
    /// The identity.
    pub gateway: GatewayDetails,
    /// The token (`sdm_gw_…`). The server keeps only its hash.
    pub token: String,
}

impl std::fmt::Debug for CreatedGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedGateway")
            .field("gateway", &self.gateway)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `POST /v1/gateway/register` and `POST /v1/gateway/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterGateway {
    /// The gateway's name; when given it must be the name of its token's identity.
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` clients connect to. Its host is the name the TLS certificate is issued for.
    pub address: String,
    /// The tags to serve under; they must be among the identity's tags. `None`: all of them.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// The gateway's software, for logs (`sdm-server/0.1.0`).
    #[serde(default)]
    pub version: String,
    /// Set on the first registration of a gateway process, before it serves anything: the
    /// audit records its name left open belong to an earlier process that stopped without
    /// ending them (a crash, a kill), and the control plane closes them as `interrupted`.
    /// Never set on heartbeats or later registrations (certificate renewal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starting: bool,
}

/// What a registered gateway needs to serve.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayRegistration {
    /// Gateway id.
    pub id: Uuid,
    /// Gateway name (in audit records and messages).
    pub name: String,
    /// The tags it serves under.
    pub tags: BTreeMap<String, String>,
    /// Ed25519 public keys leases are signed with, base64url without padding.
    pub lease_keys: Vec<String>,
    /// PEM: the gateway's TLS certificate for its address's host, then the CA certificate.
    pub certificate_chain_pem: String,
    /// PEM (PKCS#8): the certificate's private key.
    pub private_key_pem: String,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u64,
    /// The revocation epoch now.
    pub revocation_epoch: i64,
}

impl std::fmt::Debug for GatewayRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayRegistration")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("lease_keys", &self.lease_keys.len())
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The revocation epoch now.
    pub revocation_epoch: i64,
    /// Ed25519 public keys leases are signed with now, base64url without padding (they change
    /// when the control plane's `lease.key` is replaced). Empty from control planes that predate
    /// this field: keep the keys of the registration then.
    #[serde(default)]
    pub lease_keys: Vec<String>,
}

/// `GET /v1/gateway/revocations`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationEpoch {
    /// A number that grows whenever access is taken away anywhere.
    pub epoch: i64,
}

/// `POST /v1/gateway/authorize`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizeLease {
    /// The signed lease a client presented, base64url without padding.
    pub lease: String,
}

/// The control plane's decision on a lease. A refusal is an answer (HTTP 200), not an API
/// error, so that a gateway never confuses "this lease no longer holds" with "I could not ask".
// One answer per HTTP exchange, moved once: boxing the large variant (an upstream with its ssh
// settings) would save nothing worth a change of the type gateways match on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Authorization {
    /// The lease holds: connect here.
    Allowed(GatewayUpstream),
    /// The lease no longer holds (or never reaches this gateway): tell the client why.
    Denied(ApiError),
}

/// A resource's address and the credentials to inject, for one lease. `Debug` hides the
/// password (through [`Credentials`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayUpstream {
    /// Resource name.
    pub resource_name: String,
    /// What it speaks.
    pub kind: ResourceKind,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// Stored credentials, decrypted; `None`: the client logs in itself.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// TLS between the gateway and the resource.
    #[serde(default)]
    pub upstream_tls: UpstreamTls,
    /// The account's name (audit).
    pub account_name: String,
    /// The session's job labels (audit).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Databases a client may name besides the stored one (postgres).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Whether replication connections are let through (postgres).
    #[serde(default)]
    pub replication: bool,
    /// How the gateway speaks SSH for this resource (ssh resources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshUpstream>,
}

/// What a gateway needs to carry one SSH connection: the host key it presents to the client,
/// the upstream host keys it accepts, and the key (with a certificate, when sdm's SSH CA signs
/// one) it logs in upstream with as [`GatewayUpstream::credentials`]' user name. `Debug` hides
/// both private keys.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshUpstream {
    /// The private host key (OpenSSH PEM) the gateway presents to clients for this resource:
    /// the same on every gateway and across restarts, so clients can pin it.
    pub host_key: String,
    /// The upstream server's host keys the gateway accepts (`ssh-ed25519 AAAA…` lines). Empty:
    /// none recorded yet; the gateway records the first one it sees
    /// ([`RecordHostKey`]) and refuses any other afterwards.
    #[serde(default)]
    pub known_host_keys: Vec<String>,
    /// The private key (OpenSSH PEM) the gateway logs in upstream with.
    pub private_key: String,
    /// An OpenSSH user certificate for `private_key`, signed by sdm's SSH certificate authority
    /// for this connection (principal: the user name; valid while the lease is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// When `certificate` stops being valid (Unix seconds): an answer remembered through a
    /// control-plane outage cannot log in past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_valid_before: Option<i64>,
    /// Record what terminal sessions show (asciicast v2) in the audit trail.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_sessions: bool,
}

impl std::fmt::Debug for SshUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshUpstream")
            .field("host_key", &"<redacted>")
            .field("known_host_keys", &self.known_host_keys)
            .field("private_key", &"<redacted>")
            .field("certificate", &self.certificate)
            .field("certificate_valid_before", &self.certificate_valid_before)
            .field("record_sessions", &self.record_sessions)
            .finish()
    }
}

/// `POST /v1/gateway/ssh-host-key`: the host key an ssh resource presented on its first
/// connection, recorded so that any other key is refused from then on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordHostKey {
    /// The signed lease of the connection that saw the key, base64url without padding.
    pub lease: String,
    /// The key, as an OpenSSH public key line (`ssh-ed25519 AAAA…`).
    pub host_key: String,
}

/// Why a lease does not hold (any more): what a gateway tells the client instead of
/// connecting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The error kind the client reports.
    pub kind: ErrorKind,
    /// What happened, for a person.
    pub message: String,
}

/// `POST /v1/gateway/audit`: a batch of audit events, in the order they happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditUpload {
    /// At most [`MAX_AUDIT_EVENTS`].
    pub events: Vec<AuditEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let r = GatewayRegistration {
            id: Uuid::nil(),
            name: "gw".into(),
            tags: BTreeMap::new(),
            lease_keys: vec![],
            certificate_chain_pem: String::new(),
            private_key_pem: "-----BEGIN PRIVATE KEY----- secretkey".into(),
            heartbeat_secs: 20,
            revocation_epoch: 0,
        };
        assert!(!format!("{r:?}").contains("secretkey"));
        let up = GatewayUpstream {
            resource_name: "pg".into(),
            kind: ResourceKind::Postgres,
            host: "db".into(),
            port: 5432,
            credentials: Some(Credentials {
                username: "app".into(),
                password: "hunter2-secret".into(),
                database: None,
            }),
            upstream_tls: UpstreamTls::default(),
            account_name: "etl".into(),
            labels: BTreeMap::new(),
            databases: Vec::new(),
            replication: false,
            ssh: Some(SshUpstream {
                host_key: "-----BEGIN OPENSSH PRIVATE KEY----- hostsecret".into(),
                known_host_keys: vec!["ssh-ed25519 AAAA".into()],
                private_key: "-----BEGIN OPENSSH PRIVATE KEY----- loginsecret".into(),
                certificate: None,
                certificate_valid_before: None,
                record_sessions: true,
            }),
        };
        let text = format!("{up:?}");
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("hostsecret") && !text.contains("loginsecret"));
    }

    #[test]
    fn decisions_are_tagged() {
        let denied = Authorization::Denied(ApiError {
            kind: "forbidden".into(),
            message: "no".into(),
            candidates: vec![],
        });
        let text = serde_json::to_string(&denied).unwrap();
        assert_eq!(text, r#"{"denied":{"kind":"forbidden","message":"no"}}"#);
        assert_eq!(
            serde_json::from_str::<Authorization>(&text).unwrap(),
            denied
        );
        let end: AuditEvent = serde_json::from_str(
            r#"{"ended":{"id":"00000000-0000-0000-0000-000000000000","ended_at":1,
                "bytes_up":2,"bytes_down":3,"outcome":"ok","query_count":0,"future":true}}"#,
        )
        .unwrap();
        assert!(matches!(
            end,
            AuditEvent::Ended(AuditEnd { bytes_down: 3, .. })
        ));
    }

    /// A gateway one version behind reads a newer control plane's answers: fields it does not
    /// know are ignored. (The control plane's side is `sdm-server/tests/gateway_lifecycle.rs`.)
    #[test]
    fn answers_from_a_newer_control_plane_are_read_without_their_new_fields() {
        let registration: GatewayRegistration = serde_json::from_str(
            r#"{"id":"00000000-0000-0000-0000-000000000000","name":"gw","tags":{},
                "lease_keys":["k"],"certificate_chain_pem":"c","private_key_pem":"p",
                "heartbeat_secs":20,"revocation_epoch":3,"future":{"nested":[1]}}"#,
        )
        .unwrap();
        assert_eq!(registration.revocation_epoch, 3);
        let heartbeat: HeartbeatReply =
            serde_json::from_str(r#"{"revocation_epoch":4,"lease_keys":["k"],"future":1}"#)
                .unwrap();
        assert_eq!(heartbeat.revocation_epoch, 4);
        let epoch: RevocationEpoch = serde_json::from_str(r#"{"epoch":5,"future":"x"}"#).unwrap();
        assert_eq!(epoch.epoch, 5);
        let allowed: Authorization = serde_json::from_str(
            r#"{"allowed":{"resource_name":"pg","kind":"postgres","host":"db","port":5432,
                "account_name":"etl","future":true}}"#,
        )
        .unwrap();
        assert!(matches!(allowed, Authorization::Allowed(up) if up.port == 5432));
    }
}
