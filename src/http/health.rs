//! Health probes for orchestrators, open to anyone (they say nothing about the catalog's data):
//! `GET /health/live` answers while the process serves HTTP; `GET /health/ready` only when
//! PostgreSQL answers and every migration this binary needs is applied, so a load balancer sends
//! no traffic to an instance that would fail it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::errors::ApiError;
use super::routes::{Route, route};
use crate::auth::Access;

/// Readiness is decided within this long; a database slower than that is not ready.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub fn routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/health/live",
            Access::Public,
            "health.live",
            live,
        ),
        route(
            Method::GET,
            "/health/ready",
            Access::Public,
            "health.ready",
            ready,
        ),
    ]
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "live"}))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let check = crate::db::missing_migrations(state.catalog.pool());
    let reason = match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(missing)) if missing.is_empty() => None,
        Ok(Ok(missing)) => Some(format!(
            "the database lacks migrations {missing:?}: run `floe migrate` or start an \
             instance that applies them"
        )),
        Ok(Err(err)) => Some(format!("the database cannot be reached: {err}")),
        Err(_) => Some(format!(
            "the database did not answer within {} s",
            READY_TIMEOUT.as_secs()
        )),
    };
    match reason {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(reason) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!("not ready: {reason}"),
        )
        .into_response(),
    }
}
