//! The management API (`/management/v1`), described by the utoipa document in openapi/.

mod log;
mod metrics;
mod replication;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use utoipa::OpenApi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "floe management API",
        description = "Operator endpoints of floe: the update log, and cross-region replication \
                       (peers, rules, per-table status and actions).",
        version = "1"
    ),
    paths(
        log::read_log,
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
        replication::table_status,
        replication::pause,
        replication::resume,
        replication::resync
    ),
    components(schemas(
        crate::log::LogEntry,
        log::LogPage,
        crate::contract::replication_model::Peer,
        crate::contract::replication_model::PeerSpec,
        crate::contract::replication_model::PeerWarehouse,
        crate::contract::replication_model::Rule,
        crate::contract::replication_model::RuleSpec,
        crate::contract::replication_model::Destination,
        crate::contract::replication_model::StreamState,
        crate::contract::replication_model::DestinationStatus,
        crate::contract::replication_model::TableReplicationStatus,
        crate::contract::replication_model::StreamSelector,
        crate::contract::peer_protocol::Retention,
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
    Router::new()
        .route("/management/v1/log", get(log::read_log))
        .route("/management/v1/metrics", get(metrics::metrics))
        .route("/management/v1/peers", get(replication::list_peers))
        .route(
            "/management/v1/peers/{region}",
            get(replication::get_peer)
                .put(replication::put_peer)
                .delete(replication::delete_peer),
        )
        .route(
            "/management/v1/replication-rules",
            get(replication::list_rules).post(replication::create_rule),
        )
        .route(
            "/management/v1/replication-rules/{rule_id}",
            get(replication::get_rule)
                .put(replication::update_rule)
                .delete(replication::delete_rule),
        )
        .route(
            "/management/v1/tables/{warehouse}/{namespace}/{table}/replication",
            get(replication::table_status),
        )
        .route(
            "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/pause",
            post(replication::pause),
        )
        .route(
            "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/resume",
            post(replication::resume),
        )
        .route(
            "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/resync",
            post(replication::resync),
        )
}
