//! `GET /v1/resources` (what the caller may use) and the admin resource routes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use sdm_proto::ErrorKind;
use sdm_proto::api::{
    AdminResource, AdminResourceList, CreateResource, ResourceInfo, ResourceList,
};
use uuid::Uuid;

use super::auth::{Admin, Caller};
use super::error::ApiError;
use super::json::Json;
use super::leases::live_gateways;
use super::{ApiState, validate};
use crate::store::ResourceRecord;

fn admin_view(r: ResourceRecord) -> AdminResource {
    AdminResource {
        id: r.id,
        name: r.name,
        kind: r.kind,
        hostname: r.hostname,
        port: r.port,
        port_override: r.port_override,
        tags: r.tags,
        username: r.username,
        database: r.database,
        has_credentials: r.password_sealed.is_some(),
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
    let healthy = !live_gateways(&state, sdm_proto::unix_now())
        .await?
        .is_empty();
    Ok(axum::Json(ResourceList {
        resources: resources
            .into_iter()
            .map(|r| ResourceInfo {
                id: r.id,
                name: r.name,
                kind: r.kind,
                tags: r.tags,
                port_override: r.port_override,
                healthy,
            })
            .collect(),
    }))
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
    validate::name("resource", &request.name)?;
    validate::hostname(&request.hostname)?;
    validate::labels("tag", &request.tags)?;
    if request.kind.as_str().is_empty() {
        return Err(ApiError::invalid("the resource kind must not be empty"));
    }
    validate::text(
        "resource kind",
        request.kind.as_str(),
        validate::MAX_NAME_LEN,
    )?;
    let port = match request.port.or_else(|| request.kind.default_port()) {
        Some(0) | None => {
            return Err(ApiError::invalid(format!(
                "give the port of resource {} (1-65535): kind {} has no default port",
                request.name, request.kind
            )));
        }
        Some(p) => p,
    };
    if request.port_override == Some(0) {
        return Err(ApiError::invalid(
            "port_override must be between 1 and 65535; leave it out for none",
        ));
    }
    let (username, database, password_sealed) = match &request.credentials {
        Some(c) => {
            if c.username.is_empty() {
                return Err(ApiError::invalid("credentials.username must not be empty"));
            }
            validate::text("credentials.username", &c.username, validate::MAX_TEXT_LEN)?;
            validate::text(
                "credentials.password",
                &c.password,
                validate::MAX_PASSWORD_LEN,
            )?;
            if let Some(db) = &c.database {
                validate::text("credentials.database", db, validate::MAX_TEXT_LEN)?;
            }
            let sealed = state
                .secrets
                .seal(&c.password)
                .map_err(|e| ApiError::internal("sealing a resource password failed", &e))?;
            (Some(c.username.clone()), c.database.clone(), Some(sealed))
        }
        None => (None, None, None),
    };
    let record = ResourceRecord {
        id: Uuid::new_v4(),
        name: request.name,
        kind: request.kind,
        hostname: request.hostname,
        port,
        port_override: request.port_override,
        tags: request.tags,
        username,
        database,
        password_sealed,
        created_at: sdm_proto::unix_now(),
    };
    state.store.create_resource(record.clone()).await?;
    tracing::info!(
        admin = %admin.0.account.name,
        resource = %record.name,
        kind = %record.kind,
        "resource created"
    );
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
