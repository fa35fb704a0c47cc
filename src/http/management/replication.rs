//! Replication administration: peers, rules, and each table's replication status and actions.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::contract::replication_model::{
    DivergedExport, Peer, PeerSpec, PromoteSpec, PromotionResult, ReplicationOverview, Rule,
    RuleSpec, StreamSelector, TableReplicationStatus, WarehousePromoteSpec,
};
use crate::db::replication::StreamAction;
use crate::http::AppState;
use crate::http::auth::Principal;
use crate::http::errors::{ApiError, ApiResult, ErrorModel, IcebergErrorResponse};
use crate::http::extract::{IcebergJson, IcebergPath};
use crate::names::{NamespaceName, TableName};
use crate::replication::admin;

#[derive(Debug, Deserialize)]
pub struct RegionPath {
    region: String,
}

#[derive(Debug, Deserialize)]
pub struct RulePath {
    rule_id: String,
}

impl RulePath {
    fn id(&self) -> ApiResult<Uuid> {
        Uuid::parse_str(&self.rule_id).map_err(|_| {
            ApiError::bad_request(format!("`{}` is not a rule id (a UUID)", self.rule_id))
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct WarehousePath {
    warehouse: String,
}

#[derive(Debug, Deserialize)]
pub struct TablePath {
    warehouse: String,
    namespace: String,
    table: String,
}

impl TablePath {
    fn table(&self) -> ApiResult<TableName> {
        let ns = NamespaceName::from_url_segment(&self.namespace)?;
        Ok(TableName::new(ns, self.table.clone())?)
    }
}

/// List the peer regions this floe replicates to.
#[utoipa::path(get, path = "/management/v1/peers",
    responses((status = 200, body = Vec<Peer>), (status = 503, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn list_peers(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<Peer>>> {
    Ok(Json(admin::list_peers(&state.catalog).await?))
}

/// Register or replace a peer region: its URL, the credential floe presents to it, and where
/// replica files go for each of its warehouses. Omitting `credential` keeps the stored one.
#[utoipa::path(put, path = "/management/v1/peers/{region}", request_body = PeerSpec,
    params(("region" = String, Path, description = "The peer's region")),
    responses((status = 200, body = Peer), (status = 400, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn put_peer(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<RegionPath>,
    IcebergJson(spec): IcebergJson<PeerSpec>,
) -> ApiResult<Json<Peer>> {
    Ok(Json(
        admin::put_peer(
            &state.catalog,
            state.allowed_peer_hosts.as_deref(),
            &path.region,
            spec,
        )
        .await?,
    ))
}

#[utoipa::path(get, path = "/management/v1/peers/{region}",
    params(("region" = String, Path, description = "The peer's region")),
    responses((status = 200, body = Peer), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn get_peer(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<RegionPath>,
) -> ApiResult<Json<Peer>> {
    Ok(Json(admin::get_peer(&state.catalog, &path.region).await?))
}

/// Remove a peer that no rule uses.
#[utoipa::path(delete, path = "/management/v1/peers/{region}",
    params(("region" = String, Path, description = "The peer's region")),
    responses((status = 204), (status = 404, body = IcebergErrorResponse),
        (status = 409, description = "Rules still use the peer", body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn delete_peer(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<RegionPath>,
) -> ApiResult<StatusCode> {
    admin::delete_peer(&state.catalog, &path.region).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List the replication rules.
#[utoipa::path(get, path = "/management/v1/replication-rules",
    responses((status = 200, body = Vec<Rule>)), tag = "replication")]
pub async fn list_rules(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<Rule>>> {
    Ok(Json(admin::list_rules(&state.catalog).await?))
}

/// Create a rule: a scope (warehouse, namespace or table) and 1..N destinations. Tables in scope
/// now are backfilled; tables created later are replicated from their creation.
#[utoipa::path(post, path = "/management/v1/replication-rules", request_body = RuleSpec,
    responses((status = 201, body = Rule), (status = 400, body = IcebergErrorResponse),
        (status = 409, description = "A rule with this scope exists", body = IcebergErrorResponse),
        (status = 422, description = "Unknown peer or peer warehouse", body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn create_rule(
    State(state): State<Arc<AppState>>,
    IcebergJson(spec): IcebergJson<RuleSpec>,
) -> ApiResult<(StatusCode, Json<Rule>)> {
    Ok((
        StatusCode::CREATED,
        Json(admin::create_rule(&state.catalog, spec).await?),
    ))
}

#[utoipa::path(get, path = "/management/v1/replication-rules/{rule_id}",
    params(("rule_id" = Uuid, Path, description = "The rule's id")),
    responses((status = 200, body = Rule), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn get_rule(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<RulePath>,
) -> ApiResult<Json<Rule>> {
    Ok(Json(admin::get_rule(&state.catalog, path.id()?).await?))
}

/// Replace a rule's scope, destinations, retention and drop policy.
#[utoipa::path(put, path = "/management/v1/replication-rules/{rule_id}", request_body = RuleSpec,
    params(("rule_id" = Uuid, Path, description = "The rule's id")),
    responses((status = 200, body = Rule), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn update_rule(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<RulePath>,
    IcebergJson(spec): IcebergJson<RuleSpec>,
) -> ApiResult<Json<Rule>> {
    Ok(Json(
        admin::update_rule(&state.catalog, path.id()?, spec).await?,
    ))
}

/// Delete a rule. Its streams stop; replicas already made stay as they are.
#[utoipa::path(delete, path = "/management/v1/replication-rules/{rule_id}",
    params(("rule_id" = Uuid, Path, description = "The rule's id")),
    responses((status = 204), (status = 404, body = IcebergErrorResponse)), tag = "replication")]
pub async fn delete_rule(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<RulePath>,
) -> ApiResult<StatusCode> {
    admin::delete_rule(&state.catalog, path.id()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A table's replication status for each destination (GetTableReplicationStatus).
#[utoipa::path(get, path = "/management/v1/tables/{warehouse}/{namespace}/{table}/replication",
    params(("warehouse" = String, Path), ("namespace" = String, Path,
        description = "Levels joined by the unit separator (%1F), as in the Iceberg API"),
        ("table" = String, Path)),
    responses((status = 200, body = TableReplicationStatus), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn table_status(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
) -> ApiResult<Json<TableReplicationStatus>> {
    let table = path.table()?;
    Ok(Json(
        admin::table_status(&state.catalog, &path.warehouse, &table).await?,
    ))
}

/// This region, its peers, and every replicated table with each destination's status.
#[utoipa::path(get, path = "/management/v1/replication",
    responses((status = 200, body = ReplicationOverview), (status = 503, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn overview(State(state): State<Arc<AppState>>) -> ApiResult<Json<ReplicationOverview>> {
    Ok(Json(admin::overview(&state.catalog).await?))
}

/// An optional selector body: empty means every destination.
fn selector(body: &Bytes) -> ApiResult<StreamSelector> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StreamSelector::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed request body: {e}")))
}

async fn act(
    state: &AppState,
    path: &TablePath,
    body: &Bytes,
    action: StreamAction,
) -> ApiResult<Json<TableReplicationStatus>> {
    let table = path.table()?;
    let selector = selector(body)?;
    Ok(Json(
        admin::act(&state.catalog, &path.warehouse, &table, &selector, action).await?,
    ))
}

/// Pause the table's streams (all, or the destination the body names).
#[utoipa::path(post, path = "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/pause",
    request_body(content = Option<StreamSelector>), params(("warehouse" = String, Path),
        ("namespace" = String, Path), ("table" = String, Path)),
    responses((status = 200, body = TableReplicationStatus), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn pause(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
    body: Bytes,
) -> ApiResult<Json<TableReplicationStatus>> {
    act(&state, &path, &body, StreamAction::Pause).await
}

/// Resume paused or failed streams.
#[utoipa::path(post, path = "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/resume",
    request_body(content = Option<StreamSelector>), params(("warehouse" = String, Path),
        ("namespace" = String, Path), ("table" = String, Path)),
    responses((status = 200, body = TableReplicationStatus), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
    body: Bytes,
) -> ApiResult<Json<TableReplicationStatus>> {
    act(&state, &path, &body, StreamAction::Resume).await
}

/// Resync: a new full backfill that replaces the replica.
#[utoipa::path(post, path = "/management/v1/tables/{warehouse}/{namespace}/{table}/replication/resync",
    request_body(content = Option<StreamSelector>), params(("warehouse" = String, Path),
        ("namespace" = String, Path), ("table" = String, Path)),
    responses((status = 200, body = TableReplicationStatus), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn resync(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
    body: Bytes,
) -> ApiResult<Json<TableReplicationStatus>> {
    act(&state, &path, &body, StreamAction::Resync).await
}

/// Promote this region's replica of the table to primary, at its source's epoch plus one.
/// `planned` asks the source to hand the table over (it refuses writes from then on), waits until
/// the replica has everything the source acknowledged, then promotes: nothing is lost, and
/// `writes-refused-ms` says how long the source refused writes; past `timeout-ms` (default
/// 30000) nothing changes (503). `forced` promotes at once: what the source committed after the
/// replica's position stays there, listed as diverged in its status once it learns of the
/// promotion, and is not applied here.
/// The table replicates back to the former primary when it is a registered peer holding the
/// table's warehouse (`replicates-back`), else `note` says why not.
#[utoipa::path(post, path = "/management/v1/tables/{warehouse}/{namespace}/{table}/promote",
    request_body(content = PromoteSpec), params(("warehouse" = String, Path),
        ("namespace" = String, Path), ("table" = String, Path)),
    responses((status = 200, body = PromotionResult), (status = 404, body = IcebergErrorResponse),
        (status = 422, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn promote(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
    IcebergJson(spec): IcebergJson<PromoteSpec>,
) -> ApiResult<Json<PromotionResult>> {
    let table = path.table()?;
    Ok(Json(
        crate::replication::promote::promote(&state.catalog, &path.warehouse, &table, spec).await?,
    ))
}

/// Export a fenced table's diverged state: its last state here, which never reached the new
/// primary, is copied into the new table `<table>_diverged_<epoch>` of this region, which
/// replicates to the new primary by the rules that sent the table there (a rule for the table
/// alone is copied for it). Merge it there, then drop it.
#[utoipa::path(post, path = "/management/v1/tables/{warehouse}/{namespace}/{table}/export-diverged",
    params(("warehouse" = String, Path), ("namespace" = String, Path), ("table" = String, Path)),
    responses((status = 200, body = DivergedExport), (status = 404, body = IcebergErrorResponse),
        (status = 409, body = IcebergErrorResponse), (status = 422, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn export_diverged(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
    principal: Principal,
) -> ApiResult<Json<DivergedExport>> {
    let table = path.table()?;
    Ok(Json(
        crate::replication::diverged::export(&state.catalog, &path.warehouse, &table, &principal.0)
            .await?,
    ))
}

/// What a warehouse's promotion did: one outcome per table, by name.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct WarehousePromotionResult {
    pub warehouse: String,
    /// The region whose replicas were promoted (empty when the warehouse holds none).
    pub source_region: String,
    pub tables: Vec<TablePromotionOutcome>,
    /// The namespaces replication had made from that region, this region's own now (every
    /// table in them promoted): clients may create tables in them.
    pub namespaces: Vec<Vec<String>>,
}

/// One table's outcome: `promoted`, or `error` as the table's own promotion would have answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TablePromotionOutcome {
    pub namespace: Vec<String>,
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted: Option<PromotionResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorModel>,
}

/// Promote every replica of the warehouse that follows one source region (`source-region`, or
/// the only one it holds replicas of), each as its table's own promotion would (`mode`
/// planned or forced); one outcome per table. A table that fails does not stop the others.
#[utoipa::path(post, path = "/management/v1/warehouses/{warehouse}/promote",
    request_body(content = WarehousePromoteSpec), params(("warehouse" = String, Path)),
    responses((status = 200, body = WarehousePromotionResult),
        (status = 400, body = IcebergErrorResponse), (status = 404, body = IcebergErrorResponse)),
    tag = "replication")]
pub async fn promote_warehouse(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<WarehousePath>,
    IcebergJson(spec): IcebergJson<WarehousePromoteSpec>,
) -> ApiResult<Json<WarehousePromotionResult>> {
    let promoted =
        crate::replication::promote::promote_warehouse(&state.catalog, &path.warehouse, spec)
            .await?;
    let tables = promoted
        .tables
        .into_iter()
        .map(|(table, result)| {
            let (promoted, error) = match result {
                Ok(promoted) => (Some(promoted), None),
                Err(err) => (None, Some(ApiError::from(err).model())),
            };
            TablePromotionOutcome {
                namespace: table.namespace.levels().to_vec(),
                table: table.name,
                promoted,
                error,
            }
        })
        .collect();
    Ok(Json(WarehousePromotionResult {
        warehouse: path.warehouse,
        source_region: promoted.source_region,
        tables,
        namespaces: promoted.namespaces,
    }))
}
