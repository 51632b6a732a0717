//! `GET /v1/resources` (what the caller may use) and the admin resource routes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use sdm_proto::api::{
    AdminResource, AdminResourceList, CreateResource, Credentials, ResourceInfo, ResourceList,
    SshCertificateAuthority, SshSettings, TlsMode, UpdateResource, UpstreamTls,
};
use sdm_proto::{ErrorKind, ResourceKind};
use uuid::Uuid;

use super::auth::{Admin, Caller};
use super::error::ApiError;
use super::json::Json;
use super::leases::{live_gateways, serving_gateways};
use super::{ApiState, validate};
use crate::ssh_upstream;
use crate::store::{ResourceRecord, StoreError};

fn admin_view(r: ResourceRecord) -> AdminResource {
    // Never the private key: it is write-only.
    let ssh = (r.kind == ResourceKind::Ssh).then(|| SshSettings {
        username: r.username.clone().unwrap_or_default(),
        private_key: None,
        certificate_authority: r.ssh_certificate_authority,
        host_key: r.ssh_host_key.clone(),
        record_sessions: Some(r.ssh_record_sessions),
    });
    AdminResource {
        id: r.id,
        name: r.name,
        kind: r.kind,
        hostname: r.hostname,
        port: r.port,
        port_override: r.port_override,
        port_assigned: r.port_assigned,
        tags: r.tags,
        username: r.username,
        database: r.database,
        has_credentials: r.password_sealed.is_some(),
        upstream_tls: r.tls_mode,
        databases: r.databases,
        replication: r.replication,
        ssh,
        created_at: r.created_at,
    }
}

/// The resource named `key`, or with id `key`.
pub(crate) async fn resolve(state: &ApiState, key: &str) -> Result<ResourceRecord, ApiError> {
    if let Ok(id) = Uuid::parse_str(key)
        && let Some(r) = state.store.get_resource(id).await?
    {
        return Ok(r);
    }
    state
        .store
        .find_resource_by_name(key)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::ResourceNotFound,
                format!("no resource is named {key:?} or has that id"),
            )
        })
}

/// The resources granted to the caller, sorted by name.
pub(crate) async fn list_granted(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<axum::Json<ResourceList>, ApiError> {
    let resources = state
        .store
        .list_granted_resources(caller.account.id)
        .await?;
    let live = live_gateways(&state, sdm_proto::unix_now()).await?;
    let mut listed = Vec::with_capacity(resources.len());
    for r in resources {
        // A pinned resource is healthy only when a live gateway it is pinned to is.
        let healthy = !serving_gateways(&state, live.clone(), &r.tags)
            .await?
            .is_empty();
        // Clients pin the host key every gateway presents for an ssh resource.
        let ssh_host_key = (r.kind == ResourceKind::Ssh)
            .then(|| ssh_upstream::host_key_line(&state.ssh_ca, r.id))
            .flatten();
        listed.push(ResourceInfo {
            id: r.id,
            name: r.name,
            kind: r.kind,
            tags: r.tags,
            port_override: r.port_override,
            healthy,
            ssh_host_key,
        });
    }
    Ok(axum::Json(ResourceList { resources: listed }))
}

/// Every resource, sorted by name.
pub(crate) async fn list_all(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
) -> Result<axum::Json<AdminResourceList>, ApiError> {
    let resources = state.store.list_resources().await?;
    Ok(axum::Json(AdminResourceList {
        resources: resources.into_iter().map(admin_view).collect(),
    }))
}

/// Creates a resource; its password is sealed and never returned.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Json(request): Json<CreateResource>,
) -> Result<axum::Json<AdminResource>, ApiError> {
    validate::name("resource", &request.name).map_err(|e| e.in_field("name"))?;
    validate::hostname(&request.hostname).map_err(|e| e.in_field("hostname"))?;
    tags(&request.tags)?;
    if request.kind.as_str().is_empty() {
        return Err(ApiError::invalid("the resource kind must not be empty").in_field("kind"));
    }
    validate::text(
        "resource kind",
        request.kind.as_str(),
        validate::MAX_NAME_LEN,
    )
    .map_err(|e| e.in_field("kind"))?;
    let port = match request.port.or_else(|| request.kind.default_port()) {
        Some(0) | None => {
            return Err(ApiError::invalid(format!(
                "give the port of resource {} (1-65535): kind {} has no default port",
                request.name, request.kind
            ))
            .in_field("port"));
        }
        Some(p) => p,
    };
    if request.port_override == Some(0) {
        return Err(ApiError::invalid(
            "port_override must be between 1 and 65535; leave it out for none",
        )
        .in_field("port_override"));
    }
    let ssh = match (request.kind == ResourceKind::Ssh, &request.ssh) {
        (true, Some(ssh)) => {
            if request.credentials.is_some() {
                return Err(ssh_not_password().in_field("credentials"));
            }
            Some(ssh_login(&state, ssh, None)?)
        }
        (true, None) => {
            return Err(ApiError::invalid(format!(
                "ssh resource {} needs ssh settings: ssh.username, and ssh.private_key (an \
                 OpenSSH private key the gateway logs in with) or ssh.certificate_authority \
                 (log in with certificates from sdm's SSH CA)",
                request.name
            ))
            .in_field("ssh"));
        }
        (false, Some(_)) => return Err(ssh_only(&request.kind)),
        (false, None) => None,
    };
    let (username, database, password_sealed) = match (&request.credentials, &ssh) {
        (_, Some(login)) => (
            Some(login.username.clone()),
            None,
            login.private_key_sealed.clone(),
        ),
        (Some(c), None) => seal_credentials(&state, c)?,
        (None, None) => (None, None, None),
    };
    let (tls_mode, tls_ca_pem) = tls_settings(request.upstream_tls.as_ref())?;
    databases(&request.databases).map_err(|e| e.in_field("databases"))?;
    let record = ResourceRecord {
        id: Uuid::new_v4(),
        name: request.name,
        kind: request.kind,
        hostname: request.hostname,
        port,
        port_override: request.port_override,
        port_assigned: false,
        tags: request.tags,
        username,
        database,
        password_sealed,
        tls_mode,
        tls_ca_pem,
        databases: request.databases,
        replication: request.replication,
        ssh_certificate_authority: ssh.as_ref().is_some_and(|s| s.certificate_authority),
        ssh_record_sessions: ssh.as_ref().is_some_and(|s| s.record_sessions),
        ssh_host_key: ssh.and_then(|s| s.host_key),
        created_at: sdm_proto::unix_now(),
    };
    // The store gives it a local port when the port-overrides setting says so.
    let record = state
        .store
        .create_resource(record)
        .await
        .map_err(store_refusal)?;
    tracing::info!(
        admin = %admin.0.account.name,
        resource = %record.name,
        kind = %record.kind,
        local_port = ?record.port_override,
        "resource created"
    );
    Ok(axum::Json(admin_view(record)))
}

/// Tags as a resource may carry them.
fn tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    validate::labels("tag", tags).map_err(|e| e.in_field("tags"))?;
    validate::pin(tags).map_err(|e| e.in_field("tags.sdm.gateway"))
}

/// A store's refusal of a resource, naming the field that caused it.
fn store_refusal(e: StoreError) -> ApiError {
    let field = match &e {
        StoreError::Conflict { .. } => Some("name"),
        StoreError::PortTaken { .. } | StoreError::PortsExhausted { .. } => Some("port_override"),
        _ => None,
    };
    let error = ApiError::from(e);
    match field {
        Some(field) => error.in_field(field),
        None => error,
    }
}

type SealedCredentials = (Option<String>, Option<String>, Option<Vec<u8>>);

/// Validates credentials and seals the password.
fn seal_credentials(state: &ApiState, c: &Credentials) -> Result<SealedCredentials, ApiError> {
    if c.username.is_empty() {
        return Err(ApiError::invalid("credentials.username must not be empty")
            .in_field("credentials.username"));
    }
    validate::text("credentials.username", &c.username, validate::MAX_TEXT_LEN)
        .map_err(|e| e.in_field("credentials.username"))?;
    validate::secret(
        "credentials.password",
        &c.password,
        validate::MAX_PASSWORD_LEN,
    )
    .map_err(|e| e.in_field("credentials.password"))?;
    if let Some(db) = &c.database {
        validate::text("credentials.database", db, validate::MAX_TEXT_LEN)
            .map_err(|e| e.in_field("credentials.database"))?;
    }
    let sealed = state
        .secrets
        .seal(&c.password)
        .map_err(|e| ApiError::internal("sealing a resource password failed", &e))?;
    Ok((Some(c.username.clone()), c.database.clone(), Some(sealed)))
}

/// The largest OpenSSH private key accepted (an RSA 16384-bit key is about 12 KiB).
const MAX_PRIVATE_KEY_BYTES: usize = 16 * 1024;

/// How the gateway logs in to an ssh resource, checked, its key sealed.
struct SshLogin {
    username: String,
    private_key_sealed: Option<Vec<u8>>,
    certificate_authority: bool,
    host_key: Option<String>,
    record_sessions: bool,
}

fn ssh_not_password() -> ApiError {
    ApiError::invalid(
        "ssh resources log in with ssh.private_key or ssh.certificate_authority, not with \
         credentials (a password)",
    )
}

fn ssh_only(kind: &ResourceKind) -> ApiError {
    ApiError::invalid(format!(
        "ssh settings are for resources of kind ssh, not {kind}; a {kind} resource is passed \
         through as it is"
    ))
    .in_field("ssh")
}

/// Checks `ssh` (against the `stored` resource, for an update: what is left out is kept) and
/// seals its private key.
fn ssh_login(
    state: &ApiState,
    ssh: &SshSettings,
    stored: Option<&ResourceRecord>,
) -> Result<SshLogin, ApiError> {
    let username = match (
        ssh.username.as_str(),
        stored.and_then(|r| r.username.as_ref()),
    ) {
        ("", Some(stored)) => stored.clone(),
        ("", None) => {
            return Err(ApiError::invalid(
                "ssh.username is required: the user the gateway logs in upstream as",
            )
            .in_field("ssh.username"));
        }
        (given, _) => {
            validate::text("ssh.username", given, validate::MAX_TEXT_LEN)
                .map_err(|e| e.in_field("ssh.username"))?;
            given.to_owned()
        }
    };
    let (private_key_sealed, certificate_authority) =
        match (&ssh.private_key, ssh.certificate_authority) {
            (Some(_), true) => {
                return Err(ApiError::invalid(
                    "give either ssh.private_key or ssh.certificate_authority, not both",
                )
                .in_field("ssh.private_key"));
            }
            (Some(key), false) => {
                if key.len() > MAX_PRIVATE_KEY_BYTES {
                    return Err(ApiError::invalid(format!(
                        "ssh.private_key is larger than {MAX_PRIVATE_KEY_BYTES} bytes"
                    ))
                    .in_field("ssh.private_key"));
                }
                ssh_upstream::private_key(key).map_err(|reason| {
                    ApiError::invalid(format!("ssh.private_key: {reason}"))
                        .in_field("ssh.private_key")
                })?;
                let sealed = state
                    .secrets
                    .seal(key.trim())
                    .map_err(|e| ApiError::internal("sealing an ssh private key failed", &e))?;
                (Some(sealed), false)
            }
            (None, true) => (None, true),
            (None, false) => match stored {
                Some(r) if r.ssh_certificate_authority => (None, true),
                Some(r) if r.password_sealed.is_some() => (r.password_sealed.clone(), false),
                _ => {
                    return Err(ApiError::invalid(
                        "give ssh.private_key (an OpenSSH private key the gateway logs in with) \
                         or ssh.certificate_authority (certificates from sdm's SSH CA, which \
                         the server trusts)",
                    )
                    .in_field("ssh.private_key"));
                }
            },
        };
    let host_key = match &ssh.host_key {
        Some(line) => Some(ssh_upstream::host_key(line).map_err(|reason| {
            ApiError::invalid(format!("ssh.host_key: {reason}")).in_field("ssh.host_key")
        })?),
        None => stored.and_then(|r| r.ssh_host_key.clone()),
    };
    let record_sessions = ssh
        .record_sessions
        .unwrap_or_else(|| stored.is_some_and(|r| r.ssh_record_sessions));
    Ok(SshLogin {
        username,
        private_key_sealed,
        certificate_authority,
        host_key,
        record_sessions,
    })
}

/// `GET /v1/admin/ssh-ca`: the line ssh servers put in their `TrustedUserCAKeys` file.
pub(crate) async fn ssh_ca(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
) -> axum::Json<SshCertificateAuthority> {
    axum::Json(SshCertificateAuthority {
        public_key: state.ssh_ca.public_key_line(),
    })
}

/// Databases a client may name at most per resource.
const MAX_DATABASES: usize = 64;

/// Validates a resource's list of databases a client may name.
fn databases(list: &[String]) -> Result<(), ApiError> {
    if list.len() > MAX_DATABASES {
        return Err(ApiError::invalid(format!(
            "a resource lists at most {MAX_DATABASES} databases ({} given)",
            list.len()
        )));
    }
    for db in list {
        if db.is_empty() {
            return Err(ApiError::invalid("databases must not hold an empty name"));
        }
        validate::text("databases", db, validate::MAX_TEXT_LEN)?;
    }
    Ok(())
}

/// The largest CA bundle accepted for `verify-full`.
const MAX_CA_PEM_BYTES: usize = 32 * 1024;

/// Validates upstream TLS settings: `verify-full` needs a CA.
fn tls_settings(tls: Option<&UpstreamTls>) -> Result<(TlsMode, Option<String>), ApiError> {
    tls_checked(tls).map_err(|e| e.in_field("upstream_tls.ca_pem"))
}

fn tls_checked(tls: Option<&UpstreamTls>) -> Result<(TlsMode, Option<String>), ApiError> {
    let Some(tls) = tls else {
        return Ok((TlsMode::Disable, None));
    };
    match (&tls.mode, &tls.ca_pem) {
        (TlsMode::VerifyFull, None) => Err(ApiError::invalid(
            "upstream_tls.mode verify-full needs upstream_tls.ca_pem (the CA certificate, PEM)",
        )),
        (_, Some(pem)) if pem.len() > MAX_CA_PEM_BYTES => Err(ApiError::invalid(format!(
            "upstream_tls.ca_pem is larger than {MAX_CA_PEM_BYTES} bytes"
        ))),
        (_, Some(pem)) if !pem.contains("-----BEGIN CERTIFICATE-----") => Err(ApiError::invalid(
            "upstream_tls.ca_pem must hold PEM certificates",
        )),
        (mode, pem) => Ok((*mode, pem.clone())),
    }
}

/// Changes a resource (address, tags, credentials, TLS). Rotating the stored password is an
/// update with new `credentials`; connections opened afterwards use it.
pub(crate) async fn update(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(key): Path<String>,
    Json(request): Json<UpdateResource>,
) -> Result<axum::Json<AdminResource>, ApiError> {
    let mut record = resolve(&state, &key).await?;
    if let Some(hostname) = request.hostname {
        validate::hostname(&hostname).map_err(|e| e.in_field("hostname"))?;
        record.hostname = hostname;
    }
    match request.port {
        Some(0) => {
            return Err(ApiError::invalid("port must be between 1 and 65535").in_field("port"));
        }
        Some(p) => record.port = p,
        None => {}
    }
    match (request.port_override, request.clear_port_override) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "give either port_override or clear_port_override, not both",
            )
            .in_field("port_override"));
        }
        (Some(0), false) => {
            return Err(
                ApiError::invalid("port_override must be between 1 and 65535")
                    .in_field("port_override"),
            );
        }
        (Some(p), false) => (record.port_override, record.port_assigned) = (Some(p), false),
        // With the port-overrides setting on, the store assigns a port again.
        (None, true) => (record.port_override, record.port_assigned) = (None, false),
        (None, false) => {}
    }
    if let Some(new_tags) = request.tags {
        tags(&new_tags)?;
        record.tags = new_tags;
    }
    let ssh = record.kind == ResourceKind::Ssh;
    if ssh && (request.credentials.is_some() || request.clear_credentials) {
        return Err(ssh_not_password().in_field("credentials"));
    }
    if !ssh && (request.ssh.is_some() || request.clear_ssh_host_key) {
        return Err(ssh_only(&record.kind));
    }
    if let Some(settings) = &request.ssh {
        if request.clear_ssh_host_key && settings.host_key.is_some() {
            return Err(ApiError::invalid(
                "give either ssh.host_key or clear_ssh_host_key, not both",
            )
            .in_field("ssh.host_key"));
        }
        let login = ssh_login(&state, settings, Some(&record))?;
        record.username = Some(login.username);
        record.password_sealed = login.private_key_sealed;
        record.ssh_certificate_authority = login.certificate_authority;
        record.ssh_host_key = login.host_key;
        record.ssh_record_sessions = login.record_sessions;
    }
    if request.clear_ssh_host_key {
        record.ssh_host_key = None;
    }
    match (&request.credentials, request.clear_credentials) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "give either credentials or clear_credentials, not both",
            )
            .in_field("credentials"));
        }
        (Some(c), false) => {
            (record.username, record.database, record.password_sealed) =
                seal_credentials(&state, c)?;
        }
        (None, true) => {
            (record.username, record.database, record.password_sealed) = (None, None, None)
        }
        (None, false) => {}
    }
    if let Some(tls) = &request.upstream_tls {
        (record.tls_mode, record.tls_ca_pem) = tls_settings(Some(tls))?;
    }
    if let Some(list) = request.databases {
        databases(&list).map_err(|e| e.in_field("databases"))?;
        record.databases = list;
    }
    if let Some(replication) = request.replication {
        record.replication = replication;
    }
    let record = state
        .store
        .update_resource(record)
        .await
        .map_err(store_refusal)?;
    tracing::info!(admin = %admin.0.account.name, resource = %record.name, "resource updated");
    Ok(axum::Json(admin_view(record)))
}

/// One resource.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(key): Path<String>,
) -> Result<axum::Json<AdminResource>, ApiError> {
    Ok(axum::Json(admin_view(resolve(&state, &key).await?)))
}

/// Deletes a resource and its grants; open tunnels to it are refused from then on.
pub(crate) async fn delete(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let resource = resolve(&state, &key).await?;
    state.store.delete_resource(resource.id).await?;
    tracing::info!(admin = %admin.0.account.name, resource = %resource.name, "resource deleted");
    Ok(StatusCode::NO_CONTENT)
}
