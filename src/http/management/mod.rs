//! The management API (`/management/v1`), described by the utoipa document in openapi/.

mod log;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "floe management API",
        description = "Operator endpoints of floe: the update log (and, later, replication).",
        version = "1"
    ),
    paths(log::read_log),
    components(schemas(
        crate::log::LogEntry,
        log::LogPage,
        crate::http::errors::IcebergErrorResponse,
        crate::http::errors::ErrorModel
    ))
)]
pub struct ManagementApi;

/// The management API's OpenAPI document, as checked in at openapi/management.json.
pub fn openapi_json() -> String {
    ManagementApi::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/management/v1/log", get(log::read_log))
}
