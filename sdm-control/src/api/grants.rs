//! The admin grant routes: which resources an account may use.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use sdm_proto::api::{CreateGrant, GrantInfo, GrantList, ResourceGrant, ResourceGrantList};

use super::auth::Admin;
use super::error::ApiError;
use super::json::Json;
use super::{ApiState, accounts, resources};
use crate::store::GrantRecord;

/// An account's grants, sorted by resource name.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(account): Path<String>,
) -> Result<axum::Json<GrantList>, ApiError> {
    let account = accounts::resolve(&state, &account).await?;
    let grants = state.store.list_grants(account.id).await?;
    let names: HashMap<_, _> = state
        .store
        .list_granted_resources(account.id)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    Ok(axum::Json(GrantList {
        grants: grants
            .into_iter()
            .filter_map(|g| {
                // A resource deleted between the two reads is left out.
                let name = names.get(&g.resource_id)?.clone();
                Some(GrantInfo {
                    account_id: g.account_id,
                    resource_id: g.resource_id,
                    resource_name: name,
                    created_at: g.created_at,
                })
            })
            .collect(),
    }))
}

/// The accounts granted a resource, sorted by account name.
pub(crate) async fn list_for_resource(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(resource): Path<String>,
) -> Result<axum::Json<ResourceGrantList>, ApiError> {
    let resource = resources::resolve(&state, &resource).await?;
    let grants = state.store.list_resource_grants(resource.id).await?;
    Ok(axum::Json(ResourceGrantList {
        grants: grants
            .into_iter()
            .map(|(account, grant)| ResourceGrant {
                account: accounts::info(&account),
                resource_id: grant.resource_id,
                created_at: grant.created_at,
            })
            .collect(),
    }))
}

/// Grants a resource to an account; granting again returns the existing grant.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(account): Path<String>,
    Json(request): Json<CreateGrant>,
) -> Result<axum::Json<GrantInfo>, ApiError> {
    let account = accounts::resolve(&state, &account).await?;
    let resource = resources::resolve(&state, &request.resource).await?;
    let grant = state
        .store
        .grant(GrantRecord {
            account_id: account.id,
            resource_id: resource.id,
            created_at: sdm_proto::unix_now(),
        })
        .await?;
    tracing::info!(
        admin = %admin.0.account.name,
        account = %account.name,
        resource = %resource.name,
        "grant"
    );
    Ok(axum::Json(GrantInfo {
        account_id: grant.account_id,
        resource_id: grant.resource_id,
        resource_name: resource.name,
        created_at: grant.created_at,
    }))
}

/// Removes a grant (removing a missing grant is fine); tunnels using it are refused from then on.
pub(crate) async fn delete(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path((account, resource)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let account = accounts::resolve(&state, &account).await?;
    let resource = resources::resolve(&state, &resource).await?;
    if state.store.revoke_grant(account.id, resource.id).await? {
        tracing::info!(
            admin = %admin.0.account.name,
            account = %account.name,
            resource = %resource.name,
            "grant revoked"
        );
    }
    Ok(StatusCode::NO_CONTENT)
}
