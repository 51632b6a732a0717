//! The Users page (every account, searchable and paged) and **add service** (a new service
//! account, whose token is shown once on its account page).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use sdm_proto::api::{AccountInfo, AccountKind, AccountStatus, CreateAccount};
use serde::Deserialize;

use super::form::Action;
use super::page::{self, Chrome};
use super::session::Console;
use super::shown_once::{self, NewToken};
use crate::api::{ApiState, Json, accounts};

/// Accounts per page.
pub(crate) const PAGE_SIZE: usize = 50;

/// One account as the console lists it.
pub(crate) struct AccountRow {
    pub(crate) name: String,
    pub(crate) service: bool,
    pub(crate) suspended: bool,
    pub(crate) created: String,
}

impl AccountRow {
    pub(crate) fn of(a: &AccountInfo) -> AccountRow {
        AccountRow {
            name: a.name.clone(),
            service: a.kind == AccountKind::Service,
            suspended: a.status == AccountStatus::Suspended,
            created: page::when(a.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Option<Chrome>,
    search: String,
    rows: Vec<AccountRow>,
    total: usize,
    page: usize,
    pages: usize,
}

#[derive(Deserialize)]
pub(crate) struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

/// Every account whose name holds the search text, a page at a time.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Query(query): Query<UsersQuery>,
) -> Response {
    let all = match accounts::list(State(state), console.admin()).await {
        Ok(axum::Json(list)) => list.accounts,
        Err(e) => return page::api_error_page(e),
    };
    let search = query.q.trim().to_owned();
    let needle = search.to_lowercase();
    let matching: Vec<&AccountInfo> = all
        .iter()
        .filter(|a| a.name.to_lowercase().contains(&needle))
        .collect();
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page_number = query.page.unwrap_or(1).clamp(1, pages);
    let rows = matching
        .iter()
        .skip((page_number - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|a| AccountRow::of(a))
        .collect();
    page::ok(&UsersPage {
        chrome: Some(Chrome::new(&console, "users")),
        search,
        rows,
        total: matching.len(),
        page: page_number,
        pages,
    })
}

#[derive(Template)]
#[template(path = "account_new.html")]
struct NewAccountPage {
    chrome: Option<Chrome>,
    name: String,
    name_error: Option<String>,
}

/// The **add service** form.
pub(crate) async fn new(console: Console) -> Response {
    page::ok(&NewAccountPage {
        chrome: Some(Chrome::new(&console, "users")),
        name: String::new(),
        name_error: None,
    })
}

#[derive(Deserialize)]
pub(crate) struct NewAccount {
    #[serde(default)]
    name: String,
}

/// Creates the service account and shows its token once, on its account page.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    Action { console, form }: Action<NewAccount>,
) -> Response {
    let request = CreateAccount {
        name: form.name.trim().to_owned(),
        kind: AccountKind::Service,
    };
    let created = match accounts::create(State(state.clone()), console.admin(), Json(request)).await
    {
        Ok(axum::Json(created)) => created,
        Err(e) if e.status().is_client_error() => {
            let status = e.status();
            return page::html(
                status,
                &NewAccountPage {
                    chrome: Some(Chrome::new(&console, "users")),
                    name: form.name,
                    name_error: Some(e.message().to_owned()),
                },
            );
        }
        Err(e) => return page::api_error_page(e),
    };
    let name = created.account.name.clone();
    let token = NewToken {
        account: name.clone(),
        token: created.token,
    };
    let to_account = page::redirect(&format!("/console/users/{name}?created=1"));
    shown_once::carry(&state, &console, &token, to_account).unwrap_or_else(page::api_error_page)
}
