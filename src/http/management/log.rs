//! `GET /management/v1/log`: the update log, in order, for operators.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::http::AppState;
use crate::http::errors::ApiResult;
use crate::http::extract::IcebergQuery;
use crate::log::{self, LogEntry, ReadFilter};

/// How long a page that is not full waits for committed entries to become readable.
const READABLE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Return entries with a larger `seq` than this (default 0: from the start).
    after: Option<i64>,
    /// Most entries to return, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// Only entries of this table: floe's table id or the Iceberg table UUID.
    table: Option<Uuid>,
    /// Only entries of this warehouse.
    warehouse: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// Pass as `after` to read on; null when the page is empty.
    pub next_after: Option<i64>,
}

/// Read the update log in `seq` order.
#[utoipa::path(
    get,
    path = "/management/v1/log",
    params(LogQuery),
    responses(
        (status = 200, description = "Entries in seq order", body = LogPage),
        (status = 400, description = "Invalid parameters", body = crate::http::errors::IcebergErrorResponse),
        (status = 404, description = "Unknown warehouse", body = crate::http::errors::IcebergErrorResponse),
        (status = 503, description = "Database unavailable", body = crate::http::errors::IcebergErrorResponse)
    ),
    tag = "log"
)]
pub async fn read_log(
    State(state): State<Arc<AppState>>,
    IcebergQuery(query): IcebergQuery<LogQuery>,
) -> ApiResult<Json<LogPage>> {
    let (after, limit) = super::page_bounds(query.after, query.limit)?;
    let warehouse_id = match &query.warehouse {
        Some(name) => Some(state.catalog.warehouse(Some(name))?.id),
        None => None,
    };
    let filter = ReadFilter {
        after,
        limit,
        table: query.table,
        warehouse_id,
    };
    let pool = state.catalog.pool();
    // An entry becomes readable once every older transaction has ended, usually within
    // milliseconds of its commit: a page that is not full waits that long for it, so that a
    // client reads its own acknowledged changes.
    let deadline = std::time::Instant::now() + READABLE_WAIT;
    let entries = loop {
        let entries = log::read(pool, &filter)
            .await
            .map_err(crate::error::CatalogError::from)?;
        let after = entries.last().map_or(filter.after, |e| e.seq);
        let full = entries.len() as i64 >= filter.limit;
        if full
            || std::time::Instant::now() >= deadline
            || !log::waiting_after(pool, after)
                .await
                .map_err(crate::error::CatalogError::from)?
        {
            break entries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let next_after = entries.last().map(|e| e.seq);
    Ok(Json(LogPage {
        entries,
        next_after,
    }))
}
