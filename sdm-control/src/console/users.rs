//! The Users page (every account, searchable and paged) and **add service** (a new service
//! account, whose token is shown once on its account page).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, RawQuery, State};
use axum::response::Response;
use sdm_proto::api::{AccountInfo, AccountKind, AccountStatus, CreateAccount};
use serde::{Deserialize, Serialize};

use super::form::Action;
use super::page::{self, Chrome};
use super::session::Console;
use super::shown_once::{self, NewToken};
use crate::api::{ApiError, ApiState, Json, accounts};

/// Accounts per page.
pub(crate) const PAGE_SIZE: u64 = 50;

/// One account as the console lists it.
pub(crate) struct AccountRow {
    pub(crate) name: String,
    pub(crate) service: bool,
    pub(crate) suspended: bool,
    pub(crate) created: String,
    /// When it last logged in, or "never".
    pub(crate) last_login: String,
}

impl AccountRow {
    pub(crate) fn of(a: &AccountInfo) -> AccountRow {
        AccountRow {
            name: a.name.clone(),
            service: a.kind == AccountKind::Service,
            suspended: a.status == AccountStatus::Suspended,
            created: page::when(a.created_at),
            last_login: a.last_login.map_or_else(|| "never".to_owned(), page::when),
        }
    }
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Option<Chrome>,
    search: String,
    rows: Vec<AccountRow>,
    total: u64,
    page: u64,
    pages: u64,
}

#[derive(Deserialize)]
pub(crate) struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<u64>,
}

/// The API's query for one page of accounts whose name holds `search`.
#[derive(Serialize)]
struct PageQuery<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name_contains: &'a str,
    offset: u64,
    limit: u64,
}

/// One page of the accounts whose name holds the search text, read a page at a time.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Query(query): Query<UsersQuery>,
) -> Response {
    let search = query.q.trim().to_owned();
    let wanted = query.page.unwrap_or(1).max(1);
    let fetch = |page_number: u64| {
        let query = serde_urlencoded::to_string(PageQuery {
            name_contains: &search,
            offset: (page_number - 1).saturating_mul(PAGE_SIZE),
            limit: PAGE_SIZE,
        });
        let state = state.clone();
        let admin = console.admin();
        async move {
            let query = query.map_err(|_| ApiError::invalid("the search is not a query"))?;
            accounts::list(State(state), admin, RawQuery(Some(query)))
                .await
                .map(|axum::Json(list)| list)
        }
    };
    let mut list = match fetch(wanted).await {
        Ok(list) => list,
        Err(e) => return page::api_error_page(e),
    };
    let total = list.total.unwrap_or(0);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    // A page past the end (the list shrank, or an edited address): show the last one.
    let page_number = wanted.min(pages);
    if page_number != wanted {
        list = match fetch(page_number).await {
            Ok(list) => list,
            Err(e) => return page::api_error_page(e),
        };
    }
    page::ok(&UsersPage {
        chrome: Some(Chrome::new(&console, "users")),
        search,
        rows: list.accounts.iter().map(AccountRow::of).collect(),
        total,
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
