//! One resource's page: its details (for an ssh server, how the gateway logs in, and the line
//! that makes the server trust sdm's SSH CA), the edit form (a password or private key field
//! left empty keeps the stored one), delete (after a confirmation page), and the accounts it is granted to, with
//! grant and revoke.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use sdm_proto::api::{AccountKind, AccountStatus, AdminResource, CreateGrant, SshSettings};
use serde::Deserialize;

use super::form::Action;
use super::page::{self, Chrome};
use super::resource_form::{FieldErrors, FormView, KINDS, ResourceFields, TLS_MODES};
use super::resources::ResourceRow;
use super::session::Console;
use super::sign_in::NoFields;
use crate::api::{ApiError, ApiState, Json, accounts, grants, resources};

/// An account holding the resource, as the page lists it.
struct GranteeRow {
    account: String,
    service: bool,
    suspended: bool,
    granted: String,
}

#[derive(Template)]
#[template(path = "resource.html")]
struct ResourcePage<'a> {
    chrome: Option<Chrome>,
    resource: ResourceRow,
    username: Option<String>,
    database: Option<String>,
    tls_mode: String,
    /// How the gateway logs in (ssh resources); never with a private key.
    ssh: Option<SshSettings>,
    /// sdm's SSH CA public key line, when the gateway logs in with the CA: for the server's
    /// `TrustedUserCAKeys` file.
    trusted_ca_line: Option<String>,
    created: String,
    /// The edit form.
    form: FormView,
    kinds: &'a [(&'a str, &'a str)],
    tls_modes: &'a [(&'a str, &'a str)],
    editing: bool,
    assigned_port: Option<u16>,
    has_credentials: bool,
    grantees: Vec<GranteeRow>,
    /// Accounts not granted the resource yet, suggested by the grant form.
    grantable: Vec<String>,
    grant_error: Option<String>,
}

/// Account names the grant form suggests at most.
const GRANT_SUGGESTIONS: usize = 200;

/// What the page shows besides the resource: the edit form as posted, or a grant refusal.
#[derive(Default)]
struct Shown {
    form: Option<FormView>,
    grant_error: Option<String>,
    status: Option<StatusCode>,
}

async fn render(
    state: &Arc<ApiState>,
    console: &Console,
    name: String,
    shown: Shown,
) -> Result<Response, ApiError> {
    let axum::Json(r) =
        resources::show(State(state.clone()), console.admin(), Path(name.clone())).await?;
    let axum::Json(granted) =
        grants::list_for_resource(State(state.clone()), console.admin(), Path(name)).await?;
    // Suggestions for the grant form: the first accounts by name (any other can be typed).
    let first = RawQuery(Some(format!("limit={GRANT_SUGGESTIONS}")));
    let axum::Json(all) = accounts::list(State(state.clone()), console.admin(), first).await?;
    let grantable = all
        .accounts
        .into_iter()
        .filter(|a| !granted.grants.iter().any(|g| g.account.id == a.id))
        .map(|a| a.name)
        .collect();
    let grantees = granted
        .grants
        .into_iter()
        .map(|g| GranteeRow {
            service: g.account.kind == AccountKind::Service,
            suspended: g.account.status == AccountStatus::Suspended,
            account: g.account.name,
            granted: page::when(g.created_at),
        })
        .collect();
    let form = shown.form.unwrap_or_else(|| FormView::of(&r));
    // The API never returns the key; dropped here too so no template can ever show it.
    let ssh = r.ssh.clone().map(|s| SshSettings {
        private_key: None,
        ..s
    });
    let trusted_ca_line = match &ssh {
        Some(s) if s.certificate_authority => {
            let axum::Json(ca) = resources::ssh_ca(State(state.clone()), console.admin()).await;
            Some(ca.public_key)
        }
        _ => None,
    };
    Ok(page::html(
        shown.status.unwrap_or(StatusCode::OK),
        &ResourcePage {
            chrome: Some(Chrome::new(console, "resources")),
            username: r.username.clone(),
            database: r.database.clone(),
            tls_mode: r.upstream_tls.as_str().to_owned(),
            ssh,
            trusted_ca_line,
            created: page::when(r.created_at),
            form,
            kinds: KINDS,
            tls_modes: TLS_MODES,
            editing: true,
            assigned_port: r.port_override.filter(|_| r.port_assigned),
            has_credentials: r.has_credentials,
            grantees,
            grantable,
            grant_error: shown.grant_error,
            resource: ResourceRow::of(&r),
        },
    ))
}

/// The resource's page.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Path(name): Path<String>,
) -> Response {
    render(&state, &console, name, Shown::default())
        .await
        .unwrap_or_else(page::api_error_page)
}

fn back_to(name: &str) -> Response {
    page::redirect(&format!("/console/resources/{name}"))
}

/// The edit form posted again, its password left out, with `errors` beside its fields.
async fn refused_edit(
    state: &Arc<ApiState>,
    console: &Console,
    current: &AdminResource,
    form: &ResourceFields,
    status: StatusCode,
    errors: FieldErrors,
) -> Response {
    let mut view = FormView::posted(form, errors);
    // Fields the edit form does not post.
    view.kind = current.kind.as_str().to_owned();
    view.name = current.name.clone();
    let shown = Shown {
        form: Some(view),
        grant_error: None,
        status: Some(status),
    };
    render(state, console, current.name.clone(), shown)
        .await
        .unwrap_or_else(page::api_error_page)
}

/// Changes the resource as the edit form says.
pub(crate) async fn update(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, form }: Action<ResourceFields>,
) -> Response {
    let current =
        match resources::show(State(state.clone()), console.admin(), Path(name.clone())).await {
            Ok(axum::Json(current)) => current,
            Err(e) => return page::api_error_page(e),
        };
    let request = match form.update_request(&current) {
        Ok(request) => request,
        Err(errors) => {
            return refused_edit(
                &state,
                &console,
                &current,
                &form,
                StatusCode::BAD_REQUEST,
                errors,
            )
            .await;
        }
    };
    match resources::update(
        State(state.clone()),
        console.admin(),
        Path(name),
        Json(request),
    )
    .await
    {
        Ok(axum::Json(updated)) => back_to(&updated.name),
        Err(e) if e.status().is_client_error() => {
            let errors = FieldErrors::of_api(&e);
            refused_edit(&state, &console, &current, &form, e.status(), errors).await
        }
        Err(e) => page::api_error_page(e),
    }
}

#[derive(Template)]
#[template(path = "resource_delete.html")]
struct DeletePage {
    chrome: Option<Chrome>,
    name: String,
    grants: usize,
}

/// Asks before deleting, saying how many accounts lose it.
pub(crate) async fn confirm_delete(
    State(state): State<Arc<ApiState>>,
    console: Console,
    Path(name): Path<String>,
) -> Response {
    let page = async {
        let axum::Json(r) =
            resources::show(State(state.clone()), console.admin(), Path(name.clone())).await?;
        let axum::Json(granted) =
            grants::list_for_resource(State(state.clone()), console.admin(), Path(name)).await?;
        Ok::<_, ApiError>(page::ok(&DeletePage {
            chrome: Some(Chrome::new(&console, "resources")),
            name: r.name,
            grants: granted.grants.len(),
        }))
    };
    page.await.unwrap_or_else(page::api_error_page)
}

/// Deletes the resource and its grants; tunnels to it are refused from then on.
pub(crate) async fn delete(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    match resources::delete(State(state), console.admin(), Path(name)).await {
        Ok(_) => page::redirect("/console/resources"),
        Err(e) => page::api_error_page(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct GrantForm {
    #[serde(default)]
    account: String,
}

/// Grants the resource to an account.
pub(crate) async fn grant(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Action { console, form }: Action<GrantForm>,
) -> Response {
    let request = CreateGrant {
        resource: name.clone(),
    };
    let answer = grants::create(
        State(state.clone()),
        console.admin(),
        Path(form.account),
        Json(request),
    )
    .await;
    match answer {
        Ok(_) => back_to(&name),
        // Shown beside the form: an unknown account, say.
        Err(e) if e.status().is_client_error() => {
            let shown = Shown {
                form: None,
                grant_error: Some(e.message().to_owned()),
                status: Some(e.status()),
            };
            render(&state, &console, name, shown)
                .await
                .unwrap_or_else(page::api_error_page)
        }
        Err(e) => page::api_error_page(e),
    }
}

/// Takes the resource back from an account; its tunnels to it are refused from then on.
pub(crate) async fn revoke(
    State(state): State<Arc<ApiState>>,
    Path((name, account)): Path<(String, String)>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    match grants::delete(State(state), console.admin(), Path((account, name.clone()))).await {
        Ok(_) => back_to(&name),
        Err(e) => page::api_error_page(e),
    }
}
