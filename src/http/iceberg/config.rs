//! `GET /v1/config`: where clients learn the URL prefix of a warehouse and what floe serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{endpoint_strings, read_endpoint_strings};
use crate::error::CatalogError;
use crate::http::AppState;
use crate::http::errors::ApiResult;
use crate::http::extract::IcebergQuery;

#[derive(Debug, Deserialize)]
pub struct ConfigQuery {
    warehouse: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CatalogConfig {
    defaults: BTreeMap<String, String>,
    overrides: BTreeMap<String, String>,
    endpoints: Vec<String>,
    /// floe keeps the answers to keyed requests this long (`http::idempotency`).
    #[serde(rename = "idempotency-key-lifetime")]
    idempotency_key_lifetime: String,
}

pub async fn get_config(
    State(state): State<Arc<AppState>>,
    IcebergQuery(query): IcebergQuery<ConfigQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let wh = state.catalog.warehouse(query.warehouse.as_deref())?;
    // A warehouse of replicas only is read-only for clients: advertise what they can do there
    // (an upstream warehouse too, when all it holds are replicas floe keeps in its catalog).
    let endpoints = if state.catalog.holds_only_replicas(wh).await? {
        read_endpoint_strings()
    } else {
        endpoint_strings()
    };
    if let Some(upstream) = &wh.upstream {
        let remote = upstream
            .remote_config(headers.get(header::AUTHORIZATION))
            .await
            .map_err(|e| e.to_api_error(&wh.name, upstream.url(), false))?;
        // floe replays keyed requests to upstream warehouses too.
        let mut config = serde_json::to_value(remote.for_clients(&wh.name, &endpoints))
            .map_err(CatalogError::Encoding)?;
        config["idempotency-key-lifetime"] = lifetime(&state).into();
        return Ok(Json(config).into_response());
    }
    Ok(Json(CatalogConfig {
        defaults: BTreeMap::new(),
        overrides: BTreeMap::from([("prefix".to_string(), wh.name.clone())]),
        endpoints,
        idempotency_key_lifetime: lifetime(&state),
    })
    .into_response())
}

/// The Idempotency-Key lifetime as an ISO-8601 duration (`PT30M`).
fn lifetime(state: &AppState) -> String {
    let seconds = state.idempotency.lifetime.as_secs();
    if seconds.is_multiple_of(60) {
        format!("PT{}M", seconds / 60)
    } else {
        format!("PT{seconds}S")
    }
}
