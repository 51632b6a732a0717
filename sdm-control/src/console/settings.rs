//! Settings > Port Overrides: connect on login, assigned local ports and their range, and the
//! local port of every resource.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use sdm_proto::api::{PortRange, Settings, UpdateSettings};
use serde::Deserialize;

use super::form::Action;
use super::page::{self, Chrome};
use super::resources::ResourceRow;
use super::session::Console;
use super::sign_in::NoFields;
use crate::api::{ApiError, ApiState, Json, resources, settings};

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Option<Chrome>,
    auto_connect: bool,
    assign_ports: bool,
    first_port: String,
    last_port: String,
    /// Beside the range fields.
    range_error: Option<String>,
    /// Above the form (a refusal that names no field).
    save_error: Option<String>,
    /// Beside **Regenerate ports**.
    regenerate_error: Option<String>,
    rows: Vec<ResourceRow>,
}

/// The form as posted, when the page shows it again.
struct Posted {
    auto_connect: bool,
    assign_ports: bool,
    first_port: String,
    last_port: String,
}

/// What went wrong, and where it is shown.
enum Refusal {
    Range(String),
    Save(String),
    Regenerate(String),
}

async fn render(
    state: &Arc<ApiState>,
    console: &Console,
    posted: Option<Posted>,
    refusal: Option<(StatusCode, Refusal)>,
) -> Result<Response, ApiError> {
    let axum::Json(current) = settings::show(State(state.clone()), console.admin()).await?;
    let axum::Json(all) = resources::list_all(State(state.clone()), console.admin()).await?;
    let posted = posted.unwrap_or_else(|| Posted::of(&current));
    let (status, refusal) = match refusal {
        Some((status, refusal)) => (status, Some(refusal)),
        None => (StatusCode::OK, None),
    };
    let mut page = SettingsPage {
        chrome: Some(Chrome::new(console, "settings")),
        auto_connect: posted.auto_connect,
        assign_ports: posted.assign_ports,
        first_port: posted.first_port,
        last_port: posted.last_port,
        range_error: None,
        save_error: None,
        regenerate_error: None,
        rows: all.resources.iter().map(ResourceRow::of).collect(),
    };
    match refusal {
        Some(Refusal::Range(m)) => page.range_error = Some(m),
        Some(Refusal::Save(m)) => page.save_error = Some(m),
        Some(Refusal::Regenerate(m)) => page.regenerate_error = Some(m),
        None => {}
    }
    Ok(page::html(status, &page))
}

impl Posted {
    fn of(s: &Settings) -> Posted {
        Posted {
            auto_connect: s.auto_connect,
            assign_ports: s.assign_ports,
            first_port: s.port_range.first.to_string(),
            last_port: s.port_range.last.to_string(),
        }
    }
}

/// The settings page.
pub(crate) async fn show(State(state): State<Arc<ApiState>>, console: Console) -> Response {
    render(&state, &console, None, None)
        .await
        .unwrap_or_else(page::api_error_page)
}

/// The form as posted; a checkbox is present only when ticked.
#[derive(Deserialize)]
pub(crate) struct SettingsForm {
    #[serde(default)]
    auto_connect: Option<String>,
    #[serde(default)]
    assign_ports: Option<String>,
    #[serde(default)]
    first_port: String,
    #[serde(default)]
    last_port: String,
}

/// A port field of the range, or what is wrong with its text.
fn range_port(label: &str, text: &str) -> Result<u16, String> {
    let text = text.trim();
    text.parse()
        .map_err(|_| format!("{label} {text:?} is not a port: give a number from 1 to 65535."))
}

/// Saves the settings: the port changes first, so that when the range is refused nothing
/// changes.
pub(crate) async fn update(
    State(state): State<Arc<ApiState>>,
    Action { console, form }: Action<SettingsForm>,
) -> Response {
    let posted = Posted {
        auto_connect: form.auto_connect.is_some(),
        assign_ports: form.assign_ports.is_some(),
        first_port: form.first_port.clone(),
        last_port: form.last_port.clone(),
    };
    let range = range_port("First port", &form.first_port).and_then(|first| {
        range_port("Last port", &form.last_port).map(|last| PortRange { first, last })
    });
    let refusal = match range {
        Err(message) => Some((StatusCode::BAD_REQUEST, Refusal::Range(message))),
        Ok(range) => {
            let request = UpdateSettings {
                auto_connect: Some(posted.auto_connect),
                assign_ports: Some(posted.assign_ports),
                port_range: Some(range),
            };
            match settings::update(State(state.clone()), console.admin(), Json(request)).await {
                Ok(_) => return page::redirect("/console/settings"),
                Err(e) if e.status().is_client_error() => {
                    let message = e.message().to_owned();
                    let refusal = match e.field() {
                        Some("port_range") => Refusal::Range(message),
                        _ => Refusal::Save(message),
                    };
                    Some((e.status(), refusal))
                }
                Err(e) => return page::api_error_page(e),
            }
        }
    };
    render(&state, &console, Some(posted), refusal)
        .await
        .unwrap_or_else(page::api_error_page)
}

/// Assigns every assigned port again, lowest first in name order; explicit ports stay.
pub(crate) async fn regenerate_ports(
    State(state): State<Arc<ApiState>>,
    Action { console, .. }: Action<NoFields>,
) -> Response {
    match settings::regenerate_ports(State(state.clone()), console.admin()).await {
        Ok(_) => page::redirect("/console/settings"),
        Err(e) if e.status().is_client_error() => {
            let refusal = (e.status(), Refusal::Regenerate(e.message().to_owned()));
            render(&state, &console, None, Some(refusal))
                .await
                .unwrap_or_else(page::api_error_page)
        }
        Err(e) => page::api_error_page(e),
    }
}
