//! The Resources page (every resource, with its address, local port, tags and whether
//! credentials are stored) and **add resource**.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use sdm_proto::api::AdminResource;

use super::form::Action;
use super::page::{self, Chrome};
use super::resource_form::{FieldErrors, FormView, KINDS, ResourceFields, TLS_MODES};
use super::session::Console;
use crate::api::{ApiState, Json, resources};

/// A resource as the console lists it.
pub(crate) struct ResourceRow {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) address: String,
    /// The local port clients listen on, if any.
    pub(crate) local_port: Option<u16>,
    /// Whether the port-overrides setting assigned it (rather than an admin).
    pub(crate) assigned: bool,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) has_credentials: bool,
}

impl ResourceRow {
    pub(crate) fn of(r: &AdminResource) -> ResourceRow {
        ResourceRow {
            name: r.name.clone(),
            kind: r.kind.as_str().to_owned(),
            address: address(r),
            local_port: r.port_override,
            assigned: r.port_assigned,
            tags: r.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            has_credentials: r.has_credentials,
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn address(r: &AdminResource) -> String {
    if r.hostname.contains(':') {
        format!("[{}]:{}", r.hostname, r.port)
    } else {
        format!("{}:{}", r.hostname, r.port)
    }
}

#[derive(Template)]
#[template(path = "resources.html")]
struct ResourcesPage {
    chrome: Option<Chrome>,
    rows: Vec<ResourceRow>,
}

/// Every resource, sorted by name.
pub(crate) async fn list(State(state): State<Arc<ApiState>>, console: Console) -> Response {
    match resources::list_all(State(state), console.admin()).await {
        Ok(axum::Json(list)) => page::ok(&ResourcesPage {
            chrome: Some(Chrome::new(&console, "resources")),
            rows: list.resources.iter().map(ResourceRow::of).collect(),
        }),
        Err(e) => page::api_error_page(e),
    }
}

#[derive(Template)]
#[template(path = "resource_new.html")]
struct NewResourcePage<'a> {
    chrome: Option<Chrome>,
    form: FormView,
    kinds: &'a [(&'a str, &'a str)],
    tls_modes: &'a [(&'a str, &'a str)],
    /// The form edits a stored resource (no kind or name; keep-or-clear controls).
    editing: bool,
    /// The port the setting assigned, on the edit form.
    assigned_port: Option<u16>,
    /// Whether a password is stored, on the edit form.
    has_credentials: bool,
}

fn new_page(console: &Console, status: StatusCode, form: FormView) -> Response {
    page::html(
        status,
        &NewResourcePage {
            chrome: Some(Chrome::new(console, "resources")),
            form,
            kinds: KINDS,
            tls_modes: TLS_MODES,
            editing: false,
            assigned_port: None,
            has_credentials: false,
        },
    )
}

/// The **add resource** form.
pub(crate) async fn new(console: Console) -> Response {
    new_page(&console, StatusCode::OK, FormView::empty())
}

/// Creates the resource and shows its page; a refusal is shown beside the field that caused it.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    Action { console, form }: Action<ResourceFields>,
) -> Response {
    let request = match form.create_request() {
        Ok(request) => request,
        Err(errors) => {
            return new_page(
                &console,
                StatusCode::BAD_REQUEST,
                FormView::posted(&form, errors),
            );
        }
    };
    match resources::create(State(state), console.admin(), Json(request)).await {
        Ok(axum::Json(created)) => page::redirect(&format!("/console/resources/{}", created.name)),
        Err(e) if e.status().is_client_error() => new_page(
            &console,
            e.status(),
            FormView::posted(&form, FieldErrors::of_api(&e)),
        ),
        Err(e) => page::api_error_page(e),
    }
}
