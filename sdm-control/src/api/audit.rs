//! `GET /v1/admin/audit` (connection records, newest first, filtered and paged),
//! `GET /v1/admin/audit/{id}` (one record) and `GET /v1/admin/audit/{id}/queries` (the queries
//! of one connection, in order), `GET /v1/admin/audit/{id}/recording` (its recorded terminal
//! sessions, asciicast v2).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use sdm_proto::ErrorKind;
use sdm_proto::api::{AuditList, AuditQueryList, AuditRecord, AuditRecording};
use uuid::Uuid;

use super::auth::Admin;
use super::error::ApiError;
use super::{ApiState, accounts, query, resources};
use crate::store::AuditFilter;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// Records matching `account`, `resource` (id or name), `since`/`until` (Unix seconds), one page
/// of `limit`, continuing from `before` (the previous page's `next_before`).
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<AuditList>, ApiError> {
    let params = parse_query(query.as_deref())?;
    let mut filter = AuditFilter {
        limit: limit(&params)?,
        since: number(&params, "since")?,
        until: number(&params, "until")?,
        ..AuditFilter::default()
    };
    if let Some(key) = params.get("account") {
        filter.account_id = Some(match Uuid::parse_str(key) {
            Ok(id) => id,
            Err(_) => accounts::resolve(&state, key).await?.id,
        });
    }
    if let Some(key) = params.get("resource") {
        filter.resource_id = Some(match Uuid::parse_str(key) {
            Ok(id) => id,
            Err(_) => resources::resolve(&state, key).await?.id,
        });
    }
    if let Some(cursor) = params.get("before") {
        filter.before = Some(parse_cursor(cursor)?);
    }
    let page = filter.limit as usize;
    let records = state.store.list_connections(filter).await?;
    let next_before = (records.len() == page)
        .then(|| records.last().map(|r| format!("{}:{}", r.started_at, r.id)))
        .flatten();
    Ok(axum::Json(AuditList {
        records,
        next_before,
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorKind::InvalidArgument,
        format!("no audit record {id:?}; list them with GET /v1/admin/audit"),
    )
    .with_status(axum::http::StatusCode::NOT_FOUND)
}

/// The record with id `id` (404 when there is none, or it was pruned).
async fn record(state: &ApiState, id: &str) -> Result<AuditRecord, ApiError> {
    let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
    state
        .store
        .get_connection(uuid)
        .await?
        .ok_or_else(|| not_found(id))
}

/// One connection record.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<axum::Json<AuditRecord>, ApiError> {
    record(&state, &id).await.map(axum::Json)
}

/// The queries of one connection with `seq > after`, one page of `limit`.
pub(crate) async fn queries(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<AuditQueryList>, ApiError> {
    let params = parse_query(query.as_deref())?;
    let id = record(&state, &id).await?.id;
    let limit = limit(&params)?;
    let after = number(&params, "after")?.unwrap_or(0).max(0);
    let after = u64::try_from(after).unwrap_or(0);
    let rows = state.store.list_queries(id, after, limit).await?;
    let next_after = (rows.len() == limit as usize)
        .then(|| rows.last().map(|q| q.seq))
        .flatten();
    Ok(axum::Json(AuditQueryList {
        queries: rows.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// One page of a connection's recorded terminal session: channel `channel` (default: the first
/// recorded), lines with `seq > after` (default: from the header), `limit` of them.
pub(crate) async fn recording(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<AuditRecording>, ApiError> {
    let params = parse_query(query.as_deref())?;
    let id = record(&state, &id).await?.id;
    let limit = limit(&params)?;
    let after = number(&params, "after")?
        .map(|after| u64::try_from(after).map_err(|_| ApiError::invalid("after must be 0 or more")))
        .transpose()?;
    let channels = state.store.recorded_channels(id).await?;
    let channel = match number(&params, "channel")? {
        None => channels.first().copied(),
        Some(asked) => match u32::try_from(asked).ok().filter(|c| channels.contains(c)) {
            Some(channel) => Some(channel),
            None => {
                return Err(ApiError::invalid(format!(
                    "connection {id} has no recording of channel {asked}; its recorded \
                     channels: {channels:?}"
                ))
                .with_status(axum::http::StatusCode::NOT_FOUND));
            }
        },
    };
    let Some(channel) = channel else {
        return Ok(axum::Json(AuditRecording {
            channels,
            ..AuditRecording::default()
        }));
    };
    let rows = state
        .store
        .list_recording(id, channel, after, limit)
        .await?;
    let next_after = (rows.len() == limit as usize)
        .then(|| rows.last().map(|l| l.seq))
        .flatten();
    Ok(axum::Json(AuditRecording {
        channels,
        channel: Some(channel),
        lines: rows.into_iter().map(|l| l.line).collect(),
        next_after,
    }))
}

fn limit(params: &HashMap<String, String>) -> Result<u32, ApiError> {
    match number(params, "limit")? {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n >= 1 && n <= i64::from(MAX_PAGE) => Ok(u32::try_from(n).unwrap_or(MAX_PAGE)),
        Some(_) => Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        ))),
    }
}

fn number(params: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::invalid(format!(
                    "{key} must be a whole number (Unix seconds for times)"
                ))
            })
        })
        .transpose()
}

fn parse_cursor(cursor: &str) -> Result<(i64, Uuid), ApiError> {
    let bad = || ApiError::invalid("before must be a next_before value from a previous page");
    let (at, id) = cursor.split_once(':').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        Uuid::parse_str(id).map_err(|_| bad())?,
    ))
}

const KNOWN_PARAMS: [&str; 7] = [
    "account", "resource", "since", "until", "limit", "before", "after",
];

fn parse_query(query: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    query::parse(query, &KNOWN_PARAMS)
}
