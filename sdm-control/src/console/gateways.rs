//! The Gateways page: every gateway (standalone ones and those built into control planes), its
//! address, tags, last report, and whether it is live (reported within
//! [`GATEWAY_LIVENESS`](crate::GATEWAY_LIVENESS), so that clients are offered it).

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use sdm_proto::gateway::GatewayDetails;

use super::page::{self, Chrome};
use super::session::Console;
use crate::api::{ApiState, gateways};

/// One gateway as the page lists it.
struct GatewayRow {
    name: String,
    built_in: bool,
    address: String,
    tags: String,
    last_seen: String,
    live: bool,
}

impl GatewayRow {
    fn of(g: &GatewayDetails) -> GatewayRow {
        let tags = g.registered_tags.as_ref().unwrap_or(&g.tags);
        GatewayRow {
            name: g.name.clone(),
            built_in: g.built_in,
            address: g.address.clone().unwrap_or_else(|| "—".to_owned()),
            tags: tags
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            last_seen: g.last_seen.map_or_else(|| "never".to_owned(), page::when),
            live: g.live,
        }
    }
}

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    chrome: Option<Chrome>,
    rows: Vec<GatewayRow>,
    liveness_secs: u64,
}

/// Every gateway, sorted by name.
pub(crate) async fn list(State(state): State<Arc<ApiState>>, console: Console) -> Response {
    let query = RawQuery(Some("built_in=true".to_owned()));
    match gateways::list(State(state), console.admin(), query).await {
        Ok(axum::Json(list)) => page::ok(&GatewaysPage {
            chrome: Some(Chrome::new(&console, "gateways")),
            rows: list.gateways.iter().map(GatewayRow::of).collect(),
            liveness_secs: crate::GATEWAY_LIVENESS.as_secs(),
        }),
        Err(e) => page::api_error_page(e),
    }
}
