//! The admin account routes: create (with a token shown once), list, show, suspend, unsuspend,
//! rotate the token, delete.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use sdm_proto::api::{
    AccountInfo, AccountKind, AccountList, AccountStatus, CreateAccount, CreatedAccount,
};
use sdm_proto::{Token, TokenKind};
use uuid::Uuid;

use super::auth::Admin;
use super::error::ApiError;
use super::json::Json;
use super::{ApiState, query, validate};
use crate::store::{AccountQuery, AccountRecord, TokenRecord};

pub(crate) fn info(a: &AccountRecord) -> AccountInfo {
    AccountInfo {
        id: a.id,
        name: a.name.clone(),
        kind: a.kind,
        status: a.status,
        created_at: a.created_at,
        last_login: None,
    }
}

/// The account named `key`, or with id `key`.
pub(crate) async fn resolve(state: &ApiState, key: &str) -> Result<AccountRecord, ApiError> {
    if let Ok(id) = Uuid::parse_str(key)
        && let Some(a) = state.store.get_account(id).await?
    {
        return Ok(a);
    }
    state.store.find_account_by_name(key).await?.ok_or_else(|| {
        ApiError::invalid(format!("no account is named {key:?} or has that id"))
            .with_status(StatusCode::NOT_FOUND)
    })
}

/// A new token for an account of `kind`, and the record that stores its hash.
pub(crate) fn new_token(
    api_url: &str,
    ca_fingerprint: [u8; 32],
    account_id: Uuid,
    kind: AccountKind,
    now: i64,
) -> Result<(Token, TokenRecord), ApiError> {
    let token_kind = match kind {
        AccountKind::Service => TokenKind::Service,
        AccountKind::Admin => TokenKind::Admin,
    };
    let token = Token::generate(token_kind, api_url, ca_fingerprint)
        .map_err(|e| ApiError::internal("generating a token failed", &e))?;
    let record = TokenRecord {
        id: token.id,
        account_id,
        secret_hash: token.secret_hash().to_vec(),
        created_at: now,
        revoked_at: None,
    };
    Ok((token, record))
}

/// Accounts per page when paging without a `limit`.
const DEFAULT_PAGE: u32 = 100;
/// The largest page.
const MAX_PAGE: u32 = 500;
const KNOWN_PARAMS: [&str; 3] = ["name_contains", "offset", "limit"];

/// Every account, sorted by name; with any of `name_contains` (a part of the name, ASCII case
/// ignored), `offset` and `limit` (1–500, default 100), one page of the accounts matching, each
/// with its last login, and how many match in all.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<AccountList>, ApiError> {
    let params = query::parse(raw.as_deref(), &KNOWN_PARAMS)?;
    if params.is_empty() {
        let accounts = state.store.list_accounts().await?;
        return Ok(axum::Json(AccountList {
            accounts: accounts.iter().map(info).collect(),
            total: None,
        }));
    }
    let whole = |key: &str| -> Result<Option<u64>, ApiError> {
        params
            .get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::invalid(format!("{key} must be a whole number, 0 or more"))
                })
            })
            .transpose()
    };
    let limit = match whole("limit")? {
        None => DEFAULT_PAGE,
        Some(n) if (1..=u64::from(MAX_PAGE)).contains(&n) => u32::try_from(n).unwrap_or(MAX_PAGE),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
    };
    let page = state
        .store
        .page_accounts(AccountQuery {
            name_contains: params.get("name_contains").cloned(),
            offset: whole("offset")?.unwrap_or(0),
            limit,
        })
        .await?;
    Ok(axum::Json(AccountList {
        accounts: page
            .accounts
            .iter()
            .map(|a| AccountInfo {
                last_login: a.last_login,
                ..info(&a.account)
            })
            .collect(),
        total: Some(page.total),
    }))
}

/// Creates an account and returns its token, once.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Json(request): Json<CreateAccount>,
) -> Result<axum::Json<CreatedAccount>, ApiError> {
    validate::name("account", &request.name)?;
    let now = sdm_proto::unix_now();
    let account = AccountRecord {
        id: Uuid::new_v4(),
        name: request.name,
        kind: request.kind,
        status: AccountStatus::Active,
        created_at: now,
    };
    let (token, record) = new_token(
        &state.api_url,
        state.ca_fingerprint,
        account.id,
        account.kind,
        now,
    )?;
    state.store.create_account(account.clone(), record).await?;
    tracing::info!(
        admin = %admin.0.account.name,
        account = %account.name,
        kind = ?account.kind,
        "account created"
    );
    Ok(axum::Json(CreatedAccount {
        account: info(&account),
        token: token.encode(),
    }))
}

/// One account.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(key): Path<String>,
) -> Result<axum::Json<AccountInfo>, ApiError> {
    Ok(axum::Json(info(&resolve(&state, &key).await?)))
}

/// Deletes an account with its tokens and grants and ends its sessions.
pub(crate) async fn delete(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let account = resolve(&state, &key).await?;
    state
        .store
        .delete_account(account.id, sdm_proto::unix_now())
        .await?;
    tracing::info!(admin = %admin.0.account.name, account = %account.name, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn set_status(
    state: &ApiState,
    admin: &Admin,
    key: &str,
    status: AccountStatus,
) -> Result<axum::Json<AccountInfo>, ApiError> {
    let account = resolve(state, key).await?;
    let account = state.store.set_account_status(account.id, status).await?;
    tracing::info!(
        admin = %admin.0.account.name,
        account = %account.name,
        status = ?status,
        "account status set"
    );
    Ok(axum::Json(info(&account)))
}

/// Suspends an account: its tokens and open tunnels are refused until it is unsuspended.
pub(crate) async fn suspend(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<axum::Json<AccountInfo>, ApiError> {
    set_status(&state, &admin, &key, AccountStatus::Suspended).await
}

/// Lifts a suspension.
pub(crate) async fn unsuspend(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<axum::Json<AccountInfo>, ApiError> {
    set_status(&state, &admin, &key, AccountStatus::Active).await
}

/// Revokes the account's tokens (ending its sessions) and issues a new one, shown once.
pub(crate) async fn rotate_token(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(key): Path<String>,
) -> Result<axum::Json<CreatedAccount>, ApiError> {
    let account = resolve(&state, &key).await?;
    let (token, record) = new_token(
        &state.api_url,
        state.ca_fingerprint,
        account.id,
        account.kind,
        sdm_proto::unix_now(),
    )?;
    state.store.rotate_token(record).await?;
    tracing::info!(admin = %admin.0.account.name, account = %account.name, "token rotated");
    Ok(axum::Json(CreatedAccount {
        account: info(&account),
        token: token.encode(),
    }))
}
