//! `GET /management/v1/audit`: the audit trail, in order, for operators.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::audit::{self, AuditEvent};
use crate::http::AppState;
use crate::http::errors::ApiResult;
use crate::http::extract::IcebergQuery;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Return events with a larger `seq` than this (default 0: from the start).
    after: Option<i64>,
    /// Most events to return, 1 to 1000 (default 100).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `after` to read on; null when the page is empty.
    pub next_after: Option<i64>,
}

/// Read the audit trail in `seq` order: every management action and every refused request.
#[utoipa::path(
    get,
    path = "/management/v1/audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Events in seq order", body = AuditPage),
        (status = 400, description = "Invalid parameters", body = crate::http::errors::IcebergErrorResponse),
        (status = 403, description = "Not an admin of every warehouse", body = crate::http::errors::IcebergErrorResponse)
    ),
    tag = "audit"
)]
pub async fn read_audit(
    State(state): State<Arc<AppState>>,
    IcebergQuery(query): IcebergQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let (after, limit) = super::page_bounds(query.after, query.limit)?;
    let events = audit::read(state.catalog.pool(), after, limit)
        .await
        .map_err(crate::error::CatalogError::from)?;
    let next_after = events.last().map(|e| e.seq);
    Ok(Json(AuditPage { events, next_after }))
}
