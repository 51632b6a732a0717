//! The Audit page (connections through the gateways, newest first, filtered by account,
//! resource and time, paged with the API's cursor) and one connection's page (its details and
//! its queries, paged too).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use sdm_proto::api::AuditRecord;
use sdm_proto::audit::Outcome;
use serde::{Deserialize, Serialize};

use super::page::{self, Chrome};
use super::session::Console;
use crate::api::{ApiState, accounts, audit, resources};

/// Connections per page, unless the address asks for another size.
pub(crate) const PAGE_SIZE: u32 = 50;
/// Queries per page on a connection's page.
pub(crate) const QUERY_PAGE_SIZE: u32 = 100;
/// The largest page the address may ask for.
const MAX_PAGE_SIZE: u32 = 500;

/// One connection as the list shows it.
struct ConnectionRow {
    id: String,
    started: String,
    account: String,
    resource: String,
    gateway: String,
    client: String,
    outcome: String,
    /// Whether it ended badly (an error kind, or interrupted).
    failed: bool,
    ended: String,
    bytes_up: u64,
    bytes_down: u64,
    queries: u64,
}

impl ConnectionRow {
    fn of(r: &AuditRecord) -> ConnectionRow {
        ConnectionRow {
            id: r.id.to_string(),
            started: page::when(r.started_at),
            account: r.account_name.clone(),
            resource: r.resource_name.clone(),
            gateway: r.gateway.clone(),
            client: r.client_addr.clone(),
            outcome: r.outcome.as_str().to_owned(),
            failed: failed(&r.outcome),
            ended: r.ended_at.map_or_else(|| "open".to_owned(), page::when),
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
            queries: r.query_count,
        }
    }
}

fn failed(outcome: &Outcome) -> bool {
    !matches!(outcome, Outcome::Open | Outcome::Ok)
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Option<Chrome>,
    filters: Filters,
    account_error: Option<String>,
    resource_error: Option<String>,
    from_error: Option<String>,
    until_error: Option<String>,
    limit_error: Option<String>,
    rows: Vec<ConnectionRow>,
    /// The filters as a query string, for the paging links.
    filter_query: String,
    /// Whether this is a later page (the link back to the newest is shown).
    paged: bool,
    /// The cursor of the next (older) page.
    next_before: Option<String>,
}

/// The list's address: the filters as typed, the page size and the cursor.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct Filters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    account: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    resource: String,
    /// `YYYY-MM-DD HH:MM` (UTC), or a date-time input's `YYYY-MM-DDTHH:MM`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    until: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    limit: String,
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(flatten)]
    filters: Filters,
    #[serde(default)]
    before: String,
}

/// The API's query for one page of the list.
#[derive(Serialize)]
struct ApiQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
    limit: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    before: &'a str,
}

/// A page size from the address: empty is the default.
fn page_size(text: &str, default: u32) -> Result<u32, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(default);
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(format!(
            "Give a page size from 1 to {MAX_PAGE_SIZE}, or leave it empty."
        )),
    }
}

/// Connections matching the filters, newest first, a page at a time.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Query(query): Query<ListQuery>,
) -> Response {
    let filters = query.filters;
    let mut page_view = AuditPage {
        chrome: Some(Chrome::new(&console, "audit")),
        filters: filters.clone(),
        account_error: None,
        resource_error: None,
        from_error: None,
        until_error: None,
        limit_error: None,
        rows: Vec::new(),
        filter_query: serde_urlencoded::to_string(&filters).unwrap_or_default(),
        paged: !query.before.is_empty(),
        next_before: None,
    };

    // Each filter checked on its own, so that every bad one is named beside its field.
    let account = filters.account.trim();
    let account_id = if account.is_empty() {
        None
    } else {
        match accounts::show(
            State(state.clone()),
            console.admin(),
            Path(account.to_owned()),
        )
        .await
        {
            Ok(axum::Json(a)) => Some(a.id.to_string()),
            Err(e) if e.status().is_client_error() => {
                page_view.account_error = Some(format!("No account is named “{account}”."));
                None
            }
            Err(e) => return page::api_error_page(e),
        }
    };
    let resource = filters.resource.trim();
    let resource_id = if resource.is_empty() {
        None
    } else {
        match resources::show(
            State(state.clone()),
            console.admin(),
            Path(resource.to_owned()),
        )
        .await
        {
            Ok(axum::Json(r)) => Some(r.id.to_string()),
            Err(e) if e.status().is_client_error() => {
                page_view.resource_error = Some(format!("No resource is named “{resource}”."));
                None
            }
            Err(e) => return page::api_error_page(e),
        }
    };
    let since = parse_utc(&filters.from).unwrap_or_else(|e| {
        page_view.from_error = Some(e);
        None
    });
    let until = parse_utc(&filters.until).unwrap_or_else(|e| {
        page_view.until_error = Some(e);
        None
    });
    if let (Some(since), Some(until)) = (since, until)
        && until <= since
    {
        page_view.until_error = Some("Until must be later than From.".to_owned());
    }
    let limit = page_size(&filters.limit, PAGE_SIZE).unwrap_or_else(|e| {
        page_view.limit_error = Some(e);
        PAGE_SIZE
    });
    let bad = [
        &page_view.account_error,
        &page_view.resource_error,
        &page_view.from_error,
        &page_view.until_error,
        &page_view.limit_error,
    ]
    .iter()
    .any(|e| e.is_some());
    if bad {
        return page::html(StatusCode::BAD_REQUEST, &page_view);
    }

    let api_query = serde_urlencoded::to_string(ApiQuery {
        account: account_id,
        resource: resource_id,
        since,
        until,
        limit,
        before: query.before.trim(),
    })
    .unwrap_or_default();
    match audit::list(State(state), console.admin(), RawQuery(Some(api_query))).await {
        Ok(axum::Json(list)) => {
            page_view.rows = list.records.iter().map(ConnectionRow::of).collect();
            page_view.next_before = list.next_before;
            page::ok(&page_view)
        }
        Err(e) => page::api_error_page(e),
    }
}

/// A query as a connection's page shows it.
struct QueryRow {
    seq: u64,
    at: String,
    text: String,
}

#[derive(Template)]
#[template(path = "audit_connection.html")]
struct ConnectionPage {
    chrome: Option<Chrome>,
    row: ConnectionRow,
    session: String,
    lease: String,
    labels: Vec<(String, String)>,
    error: Option<String>,
    queries: Vec<QueryRow>,
    /// Whether this is a later page of queries.
    paged: bool,
    /// Where the next page of queries starts.
    next_after: Option<u64>,
    /// The page size asked for, for the paging links (empty: the default).
    limit: String,
}

#[derive(Deserialize)]
pub(crate) struct QueriesQuery {
    /// The last query of the previous page (`seq`); empty: from the first.
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: String,
}

/// One connection: its record and its queries, a page at a time.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Path(id): Path<String>,
    Query(query): Query<QueriesQuery>,
) -> Response {
    let record = match audit::show(State(state.clone()), console.admin(), Path(id.clone())).await {
        Ok(axum::Json(record)) => record,
        Err(e) => return page::api_error_page(e),
    };
    let bad_address = |message: String| {
        page::error(
            StatusCode::BAD_REQUEST,
            Some(Chrome::new(&console, "audit")),
            "Not a page of queries",
            message,
        )
    };
    let limit = match page_size(&query.limit, QUERY_PAGE_SIZE) {
        Ok(limit) => limit,
        Err(message) => return bad_address(message),
    };
    let after = match query.after.trim() {
        "" => 0,
        text => match text.parse::<u64>() {
            Ok(after) => after,
            Err(_) => {
                return bad_address(
                    "The address names no page of queries; open the connection from the \
                     Audit page."
                        .to_owned(),
                );
            }
        },
    };
    let api_query = format!("after={after}&limit={limit}");
    let list = match audit::queries(
        State(state),
        console.admin(),
        Path(id),
        RawQuery(Some(api_query)),
    )
    .await
    {
        Ok(axum::Json(list)) => list,
        Err(e) => return page::api_error_page(e),
    };
    page::ok(&ConnectionPage {
        chrome: Some(Chrome::new(&console, "audit")),
        row: ConnectionRow::of(&record),
        session: record.session_id.to_string(),
        lease: record.lease_id.to_string(),
        labels: record.labels.into_iter().collect(),
        error: record.error,
        queries: list
            .queries
            .into_iter()
            .map(|q| QueryRow {
                seq: q.seq,
                at: page::when(q.at),
                text: q.text,
            })
            .collect(),
        paged: after > 0,
        next_after: list.next_after,
        limit: query.limit.trim().to_owned(),
    })
}

/// A time typed as `YYYY-MM-DD HH:MM` (UTC; `T` for the space, seconds and a `UTC` suffix
/// allowed, the time optional) as Unix seconds; empty is no time.
pub(crate) fn parse_utc(text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || format!("“{text}” is not a time: write it as YYYY-MM-DD HH:MM (UTC).");
    let text = text.strip_suffix("UTC").unwrap_or(text).trim_end();
    let (date, time) = text
        .split_once(['T', ' '])
        .map_or((text, ""), |(d, t)| (d, t.trim()));
    let numbers = |part: &str, sep: char| -> Option<Vec<i64>> {
        part.split(sep)
            .map(|n| {
                (!n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| n.parse().ok())
                    .flatten()
            })
            .collect()
    };
    let [y, m, d] = numbers(date, '-')
        .and_then(|v| <[i64; 3]>::try_from(v).ok())
        .ok_or_else(bad)?;
    let (h, min, s) = match numbers(time, ':').as_deref() {
        _ if time.is_empty() => (0, 0, 0),
        Some(&[h, min]) => (h, min, 0),
        Some(&[h, min, s]) => (h, min, s),
        _ => return Err(bad()),
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1970..=9999).contains(&y) || !(1..=month_days).contains(&d) || h > 23 || min > 59 || s > 59
    {
        return Err(bad());
    }
    Ok(Some(
        days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + s,
    ))
}

/// (year, month, day) → days since 1970-01-01 (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_utc_in_the_forms_the_page_names() {
        assert_eq!(parse_utc(""), Ok(None));
        assert_eq!(parse_utc("1970-01-01 00:00"), Ok(Some(0)));
        assert_eq!(parse_utc("2026-12-05 20:50"), Ok(Some(1_796_503_800)));
        assert_eq!(parse_utc("2026-12-05T20:50"), Ok(Some(1_796_503_800)));
        assert_eq!(
            parse_utc(" 2026-12-05 20:50:27 UTC "),
            Ok(Some(1_796_503_827))
        );
        assert_eq!(parse_utc("2026-12-05"), Ok(Some(1_796_428_800)));
        assert_eq!(parse_utc("2024-02-29 12:00"), Ok(Some(1_709_208_000)));
        // What the console prints reads back.
        for secs in [0, 951_782_400, 1_709_208_000, 1_796_503_827] {
            assert_eq!(parse_utc(&sdm_proto::utc(secs)), Ok(Some(secs)));
        }
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "2026-12-05 24:00",
            "2026-12-05 20:60",
            "2026-12-5x",
            "1969-12-31 23:59",
            "2026-12-05 20",
            "12/05/2026",
        ] {
            let message = parse_utc(bad).unwrap_err();
            assert!(message.contains("YYYY-MM-DD HH:MM"), "{bad}: {message}");
        }
    }
}
