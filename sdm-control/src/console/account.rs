//! One account's page: its token shown once after **create** or **Rotate token**, suspend,
//! unsuspend, delete (after a confirmation page), and its grants.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use sdm_proto::api::{AccountKind, AccountStatus, CreateGrant};
use serde::Deserialize;

use super::form::Action;
use super::page::{self, Chrome};
use super::session::Console;
use super::shown_once::{self, NewToken};
use super::sign_in::NoFields;
use crate::api::{ApiError, ApiState, Json, accounts, grants, resources};

/// A grant as the account page lists it.
struct GrantRow {
    resource: String,
    granted: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Option<Chrome>,
    name: String,
    service: bool,
    suspended: bool,
    created: String,
    grants: Vec<GrantRow>,
    /// Resources not granted yet, for the grant form.
    grantable: Vec<String>,
    grant_error: Option<String>,
    /// The token to show once (after create or rotate).
    new_token: Option<NewToken>,
    /// Whether the account was just created (the dialog's title).
    created_now: bool,
}

/// What went wrong with the grant form, to show beside it.
type GrantError = Option<(StatusCode, String)>;

/// A token to show once, and whether it is a new account's first (or a rotated one).
type Shown = Option<(NewToken, bool)>;

async fn render(
    state: &Arc<ApiState>,
    console: &Console,
    name: String,
    shown: Shown,
    grant_error: GrantError,
) -> Result<Response, ApiError> {
    let axum::Json(account) =
        accounts::show(State(state.clone()), console.admin(), Path(name.clone())).await?;
    let axum::Json(granted) =
        grants::list(State(state.clone()), console.admin(), Path(name)).await?;
    let axum::Json(all) = resources::list_all(State(state.clone()), console.admin()).await?;
    let grantable = all
        .resources
        .into_iter()
        .filter(|r| !granted.grants.iter().any(|g| g.resource_id == r.id))
        .map(|r| r.name)
        .collect();
    let (new_token, created_now) = match shown {
        Some((token, created)) if token.account == account.name => (Some(token), created),
        _ => (None, false),
    };
    let status = grant_error
        .as_ref()
        .map_or(StatusCode::OK, |(status, _)| *status);
    Ok(page::html(
        status,
        &AccountPage {
            chrome: Some(Chrome::new(console, "users")),
            service: account.kind == AccountKind::Service,
            suspended: account.status == AccountStatus::Suspended,
            created: page::when(account.created_at),
            grants: granted
                .grants
                .into_iter()
                .map(|g| GrantRow {
                    resource: g.resource_name,
                    granted: page::when(g.created_at),
                })
                .collect(),
            grantable,
            grant_error: grant_error.map(|(_, message)| message),
            created_now,
            new_token,
            name: account.name,
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    /// Set by **create**: the token shown is the new account's first.
    #[serde(default)]
    created: Option<String>,
}

/// The account's page; shows a new token once when the request carries one.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Path(name): Path<String>,
    Query(query): Query<ShowQuery>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let shown = shown_once::take(&state, &console, &parts).map(|t| (t, query.created.is_some()));
    let page = render(&state, &console, name, shown, None)
        .await
        .unwrap_or_else(page::api_error_page);
    // Whether or not it was shown: a reload must not show it again.
    shown_once::forget(page)
}

fn back_to(name: &str) -> Response {
    page::redirect(&format!("/console/users/{name}"))
}

/// Suspends the account: its tokens and open tunnels are refused until it is unsuspended.
pub(crate) async fn suspend(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    match accounts::suspend(State(state), console.admin(), Path(name.clone())).await {
        Ok(_) => back_to(&name),
        Err(e) => page::api_error_page(e),
    }
}

/// Lifts a suspension.
pub(crate) async fn unsuspend(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    match accounts::unsuspend(State(state), console.admin(), Path(name.clone())).await {
        Ok(_) => back_to(&name),
        Err(e) => page::api_error_page(e),
    }
}

/// Revokes the account's token and shows the new one once.
pub(crate) async fn rotate(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    let created =
        match accounts::rotate_token(State(state.clone()), console.admin(), Path(name.clone()))
            .await
        {
            Ok(axum::Json(created)) => created,
            Err(e) => return page::api_error_page(e),
        };
    let token = NewToken {
        account: created.account.name,
        token: created.token,
    };
    shown_once::carry(&state, &console, &token, back_to(&name)).unwrap_or_else(page::api_error_page)
}

#[derive(Template)]
#[template(path = "account_delete.html")]
struct DeletePage {
    chrome: Option<Chrome>,
    name: String,
}

/// Asks before deleting.
pub(crate) async fn confirm_delete(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Path(name): Path<String>,
) -> Response {
    match accounts::show(State(state), console.admin(), Path(name)).await {
        Ok(axum::Json(account)) => page::ok(&DeletePage {
            chrome: Some(Chrome::new(&console, "users")),
            name: account.name,
        }),
        Err(e) => page::api_error_page(e),
    }
}

/// Deletes the account with its tokens and grants, ending its sessions.
pub(crate) async fn delete(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    match accounts::delete(State(state), console.admin(), Path(name)).await {
        Ok(_) => page::redirect("/console/users"),
        Err(e) => page::api_error_page(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct GrantForm {
    #[serde(default)]
    resource: String,
}

/// Grants a resource to the account.
pub(crate) async fn grant(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, form }: Action<GrantForm>,
) -> Response {
    let request = CreateGrant {
        resource: form.resource,
    };
    let answer = grants::create(
        State(state.clone()),
        console.admin(),
        Path(name.clone()),
        Json(request),
    )
    .await;
    match answer {
        Ok(_) => back_to(&name),
        // Shown beside the form: an unknown resource, say.
        Err(e) if e.status().is_client_error() => {
            let error = Some((e.status(), e.message().to_owned()));
            render(&state, &console, name, None, error)
                .await
                .unwrap_or_else(page::api_error_page)
        }
        Err(e) => page::api_error_page(e),
    }
}

/// Removes a grant; tunnels using it are refused from then on.
pub(crate) async fn revoke(
    State(state): State<Arc<ApiState>>,
    Path((name, resource)): Path<(String, String)>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    match grants::delete(
        State(state),
        console.admin(),
        Path((name.clone(), resource)),
    )
    .await
    {
        Ok(_) => back_to(&name),
        Err(e) => page::api_error_page(e),
    }
}
