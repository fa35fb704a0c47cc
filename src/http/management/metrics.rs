//! `GET /management/v1/metrics`: this instance's figures (`telemetry`: requests, commits, log
//! appends, the database pool, replication applies, lag and bytes copied) and every replication
//! stream's lag and state, for Prometheus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::http::AppState;
use crate::http::errors::ApiResult;
use crate::replication::admin;

/// This instance's figures, then every replication stream's lag (versions and seconds), failed
/// attempts and state (computed from the database, so all instances report the same), in the
/// Prometheus text format.
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
    let pool = state.catalog.pool();
    crate::telemetry::set_pool(
        pool.size(),
        pool.num_idle(),
        pool.options().get_max_connections(),
    );
    // The replication gauges are the shared streams' state, read from the database at each
    // scrape; the rest is this process's own (`telemetry`).
    let mut text = crate::telemetry::render();
    text.push_str(&admin::metrics_text(&state.catalog).await?);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
