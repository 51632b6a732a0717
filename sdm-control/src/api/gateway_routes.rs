//! The routes standalone gateways call (`/v1/gateway/…`, gateway token): register, heartbeat,
//! withdraw, authorize a lease, read the revocation epoch, upload audit events.
//!
//! Authorization answers carry decrypted credentials: they go only to an authenticated gateway,
//! over TLS, for a lease whose signature this control plane checked, to a gateway the resource
//! is pinned to; request and answer bodies are never logged.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_proto::ErrorKind;
use sdm_proto::audit::{AuditEvent, Outcome};
use sdm_proto::error::ApiError as WireError;
use sdm_proto::gateway::{
    AuditUpload, Authorization, AuthorizeLease, GatewayRegistration, HeartbeatReply,
    MAX_AUDIT_EVENTS, RecordHostKey, RegisterGateway, RevocationEpoch,
};
use sdm_proto::lease::LeaseVerifier;
use uuid::Uuid;

use super::auth::GatewayCaller;
use super::error::ApiError;
use super::json::Json;
use super::{ApiState, validate};
use crate::GATEWAY_HEARTBEAT;
use crate::gateway_identities::{self, GatewayIdentity};
use crate::store::GatewayRecord;

/// Longest audited query text kept (the gateway cuts at 8 KiB already).
const MAX_QUERY_TEXT: usize = 8 * 1024 + 8;
/// Longest other audit text (names, addresses, outcomes, error messages).
const MAX_AUDIT_TEXT: usize = 2048;

/// `host:port` → host, refusing what clients could not connect to.
fn address_host(address: &str) -> Result<String, ApiError> {
    let (host, _) = sdm_proto::addr::host_and_port(address).map_err(|why| {
        ApiError::invalid(format!(
            "gateway address {address:?} {why}; give the host:port clients connect to \
             (sdm-server gateway --public-addr)"
        ))
    })?;
    validate::hostname(&host)?;
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(ApiError::invalid(format!(
            "gateway address {address:?} is not an address clients can connect to; give \
             sdm-server gateway --public-addr HOST:PORT"
        )));
    }
    Ok(host)
}

/// The tags a gateway asks to serve under, which its token must allow.
fn serving_tags(
    identity: &GatewayIdentity,
    requested: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(requested) = requested else {
        return Ok(identity.tags.clone());
    };
    validate::labels("gateway tag", requested)?;
    for (key, value) in requested {
        if identity.tags.get(key) != Some(value) {
            let allowed: Vec<String> = identity
                .tags
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                format!(
                    "gateway {}'s token does not allow the tag {key}={value}; it allows [{}]. \
                     Ask an admin for a gateway created with that tag",
                    identity.name,
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(requested.clone())
}

/// Validates a registration or heartbeat and marks the gateway seen now.
async fn refresh(
    state: &ApiState,
    caller: GatewayCaller,
    request: &RegisterGateway,
) -> Result<(GatewayIdentity, GatewayRecord), ApiError> {
    let mut identity = caller.identity;
    if let Some(name) = &request.name
        && *name != identity.name
    {
        return Err(ApiError::invalid(format!(
            "this token belongs to gateway {:?}, not {name:?}",
            identity.name
        )));
    }
    validate::text("gateway version", &request.version, validate::MAX_TEXT_LEN)?;
    let host = address_host(&request.address)?;
    let tags = serving_tags(&identity, request.tags.as_ref())?;
    if identity.registered_tags.as_ref() != Some(&tags) {
        identity.registered_tags = Some(tags);
        gateway_identities::write(state.store.as_ref(), &identity).await?;
        state.gateway_tags.forget(&identity.name);
    }
    let id = state
        .store
        .list_gateways()
        .await?
        .into_iter()
        .find(|r| r.name == identity.name)
        .map_or_else(Uuid::new_v4, |r| r.id);
    let row = state
        .store
        .upsert_gateway(GatewayRecord {
            id,
            name: identity.name.clone(),
            address: request.address.clone(),
            server_name: host,
            last_seen: sdm_proto::unix_now(),
        })
        .await?;
    Ok((identity, row))
}

/// `POST /v1/gateway/register`: marks the gateway live and hands it what it needs to serve.
pub(crate) async fn register(
    State(state): State<Arc<ApiState>>,
    caller: GatewayCaller,
    Json(request): Json<RegisterGateway>,
) -> Result<axum::Json<GatewayRegistration>, ApiError> {
    let (identity, row) = refresh(&state, caller, &request).await?;
    if request.starting {
        // A new process of this gateway, serving nothing yet (one identity per process): the
        // connections of the one before it are over.
        let closed = state
            .store
            .interrupt_connections(&identity.name, sdm_proto::unix_now())
            .await?;
        if closed > 0 {
            tracing::warn!(
                gateway = %identity.name,
                closed,
                "the gateway restarted with connections open before (a crash or a kill); their \
                 audit records are closed as interrupted"
            );
        }
    }
    let leaf = state
        .ca
        .issue_leaf(std::slice::from_ref(&row.server_name))
        .map_err(|e| ApiError::internal("issuing a gateway certificate failed", &e))?;
    let (certificate_chain_pem, private_key_pem) = leaf.to_pem();
    let revocation_epoch = state.store.revocation_epoch().await?;
    tracing::info!(
        gateway = %identity.name,
        address = %row.address,
        version = %request.version,
        "gateway registered"
    );
    Ok(axum::Json(GatewayRegistration {
        id: row.id,
        name: identity.name.clone(),
        tags: identity.serving_tags().clone(),
        lease_keys: lease_keys(&state),
        certificate_chain_pem,
        private_key_pem,
        heartbeat_secs: GATEWAY_HEARTBEAT.as_secs(),
        revocation_epoch,
    }))
}

/// The keys gateways check leases with: the public half of this control plane's `lease.key`.
fn lease_keys(state: &ApiState) -> Vec<String> {
    vec![URL_SAFE_NO_PAD.encode(state.signer.public_key())]
}

/// `POST /v1/gateway/heartbeat`: the gateway is alive (and still at this address).
pub(crate) async fn heartbeat(
    State(state): State<Arc<ApiState>>,
    caller: GatewayCaller,
    Json(request): Json<RegisterGateway>,
) -> Result<axum::Json<HeartbeatReply>, ApiError> {
    refresh(&state, caller, &request).await?;
    Ok(axum::Json(HeartbeatReply {
        revocation_epoch: state.store.revocation_epoch().await?,
        lease_keys: lease_keys(&state),
    }))
}

/// `POST /v1/gateway/withdraw`: the gateway is stopping; offer it to no one from now on.
pub(crate) async fn withdraw(
    State(state): State<Arc<ApiState>>,
    caller: GatewayCaller,
) -> Result<StatusCode, ApiError> {
    gateway_identities::withdraw(state.store.as_ref(), &caller.identity.name).await?;
    tracing::info!(gateway = %caller.identity.name, "gateway withdrew");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/gateway/revocations`.
pub(crate) async fn revocations(
    State(state): State<Arc<ApiState>>,
    _caller: GatewayCaller,
) -> Result<axum::Json<RevocationEpoch>, ApiError> {
    Ok(axum::Json(RevocationEpoch {
        epoch: state.store.revocation_epoch().await?,
    }))
}

fn denied(kind: ErrorKind, message: String) -> axum::Json<Authorization> {
    axum::Json(Authorization::Denied(WireError {
        kind: kind.as_str().to_owned(),
        message,
        candidates: Vec::new(),
    }))
}

/// `POST /v1/gateway/authorize`: whether a lease a client presented still holds, and where it
/// goes. A refusal is a 200 answer (`{"denied": …}`).
pub(crate) async fn authorize(
    State(state): State<Arc<ApiState>>,
    caller: GatewayCaller,
    Json(request): Json<AuthorizeLease>,
) -> Result<axum::Json<Authorization>, ApiError> {
    if request.lease.len() > 2 * sdm_proto::handshake::MAX_LEASE_LEN {
        return Err(ApiError::invalid(
            "the lease is too long to be an sdm lease",
        ));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(&request.lease)
        .map_err(|_| ApiError::invalid("the lease is not base64url without padding"))?;
    let verifier = LeaseVerifier::new([state.signer.public_key()]);
    let lease = match verifier.verify_signature(&bytes) {
        Ok(lease) => lease,
        Err(e) => {
            return Ok(denied(
                ErrorKind::Unauthenticated,
                format!("the control plane refused the lease: {e}"),
            ));
        }
    };
    let directory = state.directory();
    Ok(
        match directory
            .decide(&lease, caller.identity.serving_tags())
            .await
        {
            Ok(upstream) => axum::Json(Authorization::Allowed(upstream)),
            Err(refusal) => {
                tracing::debug!(gateway = %caller.identity.name, lease = %lease.id, kind = %refusal.kind, "lease refused for a gateway");
                denied(refusal.kind, refusal.message)
            }
        },
    )
}

/// Clock difference allowed with the control plane that signed a lease.
const LEASE_SKEW_SECS: i64 = 30;

/// `POST /v1/gateway/ssh-host-key`: the host key an ssh resource presented to a gateway on a
/// connection of a lease that still holds, recorded when none is yet. 204 when it is the
/// recorded key now; `upstream_refused` (409) when another key is recorded.
pub(crate) async fn record_host_key(
    State(state): State<Arc<ApiState>>,
    caller: GatewayCaller,
    Json(request): Json<RecordHostKey>,
) -> Result<StatusCode, ApiError> {
    if request.lease.len() > 2 * sdm_proto::handshake::MAX_LEASE_LEN {
        return Err(ApiError::invalid(
            "the lease is too long to be an sdm lease",
        ));
    }
    if request.host_key.len() > validate::MAX_TEXT_LEN * 8 {
        return Err(ApiError::invalid("the host key is too long").in_field("host_key"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(&request.lease)
        .map_err(|_| ApiError::invalid("the lease is not base64url without padding"))?;
    let verifier = LeaseVerifier::new([state.signer.public_key()]);
    let lease = verifier
        .verify_signature(&bytes)
        .and_then(|lease| {
            lease.check_validity(sdm_proto::unix_now(), LEASE_SKEW_SECS)?;
            Ok(lease)
        })
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Unauthenticated,
                format!("the control plane refused the lease: {e}"),
            )
            .with_status(StatusCode::FORBIDDEN)
        })?;
    state
        .directory()
        .record_host_key(&lease, caller.identity.serving_tags(), &request.host_key)
        .await
        .map_err(|refusal| {
            tracing::info!(gateway = %caller.identity.name, lease = %lease.id, kind = %refusal.kind, "an ssh host key was not recorded");
            let status = match refusal.kind {
                ErrorKind::Internal => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            ApiError::new(refusal.kind, refusal.message).with_status(status)
        })?;
    Ok(StatusCode::NO_CONTENT)
}

fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn cut_outcome(outcome: &mut Outcome) {
    if let Outcome::Other(name) = outcome {
        cut(name, MAX_AUDIT_TEXT);
    }
}

/// An uploaded event as the store keeps it: a start names the authenticated gateway, whatever
/// it says, and texts are cut to their limits.
fn received(mut event: AuditEvent, gateway: &str) -> AuditEvent {
    match &mut event {
        AuditEvent::Started(r) => {
            gateway.clone_into(&mut r.gateway);
            cut(&mut r.account_name, MAX_AUDIT_TEXT);
            cut(&mut r.resource_name, MAX_AUDIT_TEXT);
            cut(&mut r.client_addr, MAX_AUDIT_TEXT);
            cut_outcome(&mut r.outcome);
            if let Some(error) = &mut r.error {
                cut(error, MAX_AUDIT_TEXT);
            }
        }
        AuditEvent::Ended(e) => {
            cut_outcome(&mut e.outcome);
            if let Some(error) = &mut e.error {
                cut(error, MAX_AUDIT_TEXT);
            }
        }
        AuditEvent::Query(q) => cut(&mut q.text, MAX_QUERY_TEXT),
        // A line is whole or useless (JSON); the gateway keeps them under the upload's bound.
        AuditEvent::Recording(_) => {}
    }
    event
}

/// `POST /v1/gateway/audit`: a batch of the gateway's audit events, written in one transaction.
/// The records name the authenticated gateway, whatever the events say, and a gateway changes
/// only records it wrote: events about other gateways' connections (or about none) are left
/// out, counted and logged, and the upload still succeeds, so that a gateway is never stuck on
/// a batch it cannot change.
pub(crate) async fn audit(
    State(state): State<Arc<ApiState>>,
    caller: GatewayCaller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let upload: AuditUpload = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!("the audit upload is not valid: {e}"))
            .with_status(StatusCode::UNPROCESSABLE_ENTITY)
    })?;
    if upload.events.len() > MAX_AUDIT_EVENTS {
        return Err(ApiError::invalid(format!(
            "an audit upload carries at most {MAX_AUDIT_EVENTS} events ({} sent)",
            upload.events.len()
        )));
    }
    for event in &upload.events {
        if let AuditEvent::Started(r) = event {
            validate::recorded_labels("label", &r.labels)?;
        }
    }
    let name = caller.identity.name;
    let events: Vec<AuditEvent> = upload
        .events
        .into_iter()
        .map(|e| received(e, &name))
        .collect();
    if !events.is_empty() {
        let refused = state.store.write_gateway_audit(&name, events).await?;
        if refused.total() > 0 {
            tracing::warn!(
                gateway = %name,
                starts = refused.starts,
                ends = refused.ends,
                queries = refused.queries,
                recording_lines = refused.recording_lines,
                "refused audit events about connections this gateway did not open"
            );
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
