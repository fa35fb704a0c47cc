//! The management API (`/management/v1`), described by the utoipa document in openapi/.

mod audit;
mod log;
mod metrics;
mod replication;

use axum::http::Method;
use utoipa::OpenApi;

use super::errors::{ApiError, ApiResult};
use super::routes::{Route, route};
use crate::auth::Access;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "floe management API",
        description = "Operator endpoints of floe: the update log, the audit trail, and \
                       cross-region replication (peers, rules, per-table status and actions). \
                       Every endpoint needs the admin role.",
        version = "1"
    ),
    paths(
        openapi_document,
        log::read_log,
        audit::read_audit,
        metrics::metrics,
        replication::list_peers,
        replication::put_peer,
        replication::get_peer,
        replication::delete_peer,
        replication::list_rules,
        replication::create_rule,
        replication::get_rule,
        replication::update_rule,
        replication::delete_rule,
        replication::overview,
        replication::table_status,
        replication::pause,
        replication::resume,
        replication::resync,
        replication::promote,
        replication::export_diverged,
        replication::promote_warehouse
    ),
    components(schemas(
        crate::log::LogEntry,
        log::LogPage,
        crate::db::audit::AuditEvent,
        audit::AuditPage,
        crate::contract::replication_model::Peer,
        crate::contract::replication_model::PeerSpec,
        crate::contract::replication_model::PeerWarehouse,
        crate::contract::replication_model::Rule,
        crate::contract::replication_model::RuleSpec,
        crate::contract::replication_model::Destination,
        crate::contract::replication_model::StreamState,
        crate::contract::replication_model::DestinationStatus,
        crate::contract::replication_model::ReplicationMode,
        crate::contract::replication_model::SyncDestinationStatus,
        crate::contract::replication_model::TableReplicationStatus,
        crate::contract::replication_model::ReplicationOverview,
        crate::contract::replication_model::StreamSelector,
        crate::contract::peer_protocol::Retention,
        crate::contract::replication_model::TableRole,
        crate::contract::replication_model::DivergedCommits,
        crate::contract::replication_model::DivergedCommit,
        crate::contract::replication_model::PromoteSpec,
        crate::contract::replication_model::PromotionMode,
        crate::contract::replication_model::PromotionResult,
        crate::contract::replication_model::DivergedExport,
        crate::contract::replication_model::WarehousePromoteSpec,
        replication::WarehousePromotionResult,
        replication::TablePromotionOutcome,
        crate::http::errors::IcebergErrorResponse,
        crate::http::errors::ErrorModel
    ))
)]
pub struct ManagementApi;

/// The most entries one page of the log or the audit trail holds.
const MAX_PAGE: i64 = 1000;

/// `after` and `limit` of a paged read (defaults 0 and 100), or the 400 that says what is wrong.
fn page_bounds(after: Option<i64>, limit: Option<i64>) -> ApiResult<(i64, i64)> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: use 1 to {MAX_PAGE}"
        )));
    }
    let after = after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request("after must not be negative"));
    }
    Ok((after, limit))
}

/// The management API's OpenAPI document, as checked in at openapi/management.json.
pub fn openapi_json() -> String {
    ManagementApi::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

/// This document, served (the same text as openapi/management.json).
#[utoipa::path(
    get,
    path = "/management/v1/openapi.json",
    responses(
        (status = 200, description = "The management API's OpenAPI 3.1 document", body = String,
            content_type = "application/json")
    ),
    tag = "api"
)]
pub async fn openapi_document() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}

/// Every route of the management API; all need the admin role (on the table's warehouse for the
/// per-table routes, on every warehouse for the region-wide ones).
pub fn routes() -> Vec<Route> {
    use Method as M;
    let admin = Access::Admin;
    let table = "/management/v1/tables/{warehouse}/{namespace}/{table}/replication";
    vec![
        route(
            M::GET,
            "/management/v1/openapi.json",
            admin,
            "openapi.read",
            openapi_document,
        ),
        route(
            M::GET,
            "/management/v1/log",
            admin,
            "log.read",
            log::read_log,
        ),
        route(
            M::GET,
            "/management/v1/audit",
            admin,
            "audit.read",
            audit::read_audit,
        ),
        route(
            M::GET,
            "/management/v1/metrics",
            admin,
            "metrics.read",
            metrics::metrics,
        ),
        route(
            M::GET,
            "/management/v1/peers",
            admin,
            "peer.list",
            replication::list_peers,
        ),
        route(
            M::GET,
            "/management/v1/peers/{region}",
            admin,
            "peer.get",
            replication::get_peer,
        ),
        route(
            M::PUT,
            "/management/v1/peers/{region}",
            admin,
            "peer.put",
            replication::put_peer,
        ),
        route(
            M::DELETE,
            "/management/v1/peers/{region}",
            admin,
            "peer.delete",
            replication::delete_peer,
        ),
        route(
            M::GET,
            "/management/v1/replication-rules",
            admin,
            "rule.list",
            replication::list_rules,
        ),
        route(
            M::POST,
            "/management/v1/replication-rules",
            admin,
            "rule.create",
            replication::create_rule,
        ),
        route(
            M::GET,
            "/management/v1/replication-rules/{rule_id}",
            admin,
            "rule.get",
            replication::get_rule,
        ),
        route(
            M::PUT,
            "/management/v1/replication-rules/{rule_id}",
            admin,
            "rule.update",
            replication::update_rule,
        ),
        route(
            M::DELETE,
            "/management/v1/replication-rules/{rule_id}",
            admin,
            "rule.delete",
            replication::delete_rule,
        ),
        route(
            M::GET,
            "/management/v1/replication",
            admin,
            "replication.overview",
            replication::overview,
        ),
        route(
            M::GET,
            table,
            admin,
            "replication.status",
            replication::table_status,
        ),
        route(
            M::POST,
            "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/pause",
            admin,
            "replication.pause",
            replication::pause,
        ),
        route(
            M::POST,
            "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/resume",
            admin,
            "replication.resume",
            replication::resume,
        ),
        route(
            M::POST,
            "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/resync",
            admin,
            "replication.resync",
            replication::resync,
        ),
        route(
            M::POST,
            "/management/v1/tables/{warehouse}/{namespace}/{table}/promote",
            admin,
            "table.promote",
            replication::promote,
        ),
        route(
            M::POST,
            "/management/v1/warehouses/{warehouse}/promote",
            admin,
            "warehouse.promote",
            replication::promote_warehouse,
        ),
        route(
            M::POST,
            "/management/v1/tables/{warehouse}/{namespace}/{table}/export-diverged",
            admin,
            "table.export-diverged",
            replication::export_diverged,
        ),
    ]
}
