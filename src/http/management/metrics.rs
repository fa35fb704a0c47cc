//! `GET /management/v1/metrics`: replication lag and stream states for Prometheus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::http::AppState;
use crate::http::errors::ApiResult;
use crate::replication::admin;

/// Every replication stream's lag (versions and seconds), failed attempts and state, in the
/// Prometheus text format. Computed from the database, so all instances report the same figures.
#[utoipa::path(
    get,
    path = "/management/v1/metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
            content_type = "text/plain"),
        (status = 503, description = "Database unavailable", body = crate::http::errors::IcebergErrorResponse)
    ),
    tag = "replication"
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    let text = admin::metrics_text(&state.catalog).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
