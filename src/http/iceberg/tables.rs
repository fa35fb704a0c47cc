//! Table endpoints, commits and transactions.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{NamespacePath, PrefixPath, TablePath};
use crate::catalog::Warehouse;
use crate::catalog::commit::CommitOutcome;
use crate::catalog::metadata::SnapshotsMode;
use crate::catalog::namespaces::{Page, PageRequest};
use crate::catalog::requests::{
    CommitTableRequest, CommitTransactionRequest, CreateTableRequest, RegisterTableRequest,
    RenameTableRequest,
};
use crate::catalog::tables::LoadedTable;
use crate::http::AppState;
use crate::http::auth::Principal;
use crate::http::errors::{ApiError, ApiResult};
use crate::http::extract::{IcebergJson, IcebergPath, IcebergQuery};
use crate::names::{NamespaceName, TableName};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    page_token: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct TableIdentifierBody {
    namespace: Vec<String>,
    name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ListTablesResponse {
    identifiers: Vec<TableIdentifierBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

impl ListTablesResponse {
    /// A page of names in one namespace (tables or views).
    pub fn new(ns: &NamespaceName, page: Page<String>) -> Self {
        Self {
            identifiers: page
                .items
                .into_iter()
                .map(|name| TableIdentifierBody {
                    namespace: ns.levels().to_vec(),
                    name,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }
    }
}

impl From<ListQuery> for PageRequest {
    fn from(query: ListQuery) -> Self {
        PageRequest {
            token: query.page_token,
            size: query.page_size,
        }
    }
}

/// A JSON response assembled from pre-serialised parts, so the stored metadata text is passed through
/// without being parsed again.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(body),
    )
        .into_response()
}

/// The body of LoadTableResult / CommitTableResponse.
pub(crate) fn table_body(
    metadata_location: Option<&str>,
    metadata_json: &str,
    config: Option<&BTreeMap<String, String>>,
) -> String {
    let mut body = String::with_capacity(metadata_json.len() + 160);
    body.push('{');
    if let Some(location) = metadata_location {
        body.push_str("\"metadata-location\":");
        body.push_str(&Value::from(location).to_string());
        body.push(',');
    }
    body.push_str("\"metadata\":");
    body.push_str(metadata_json);
    if let Some(config) = config {
        body.push_str(",\"config\":");
        body.push_str(&serde_json::to_string(config).unwrap_or_else(|_| "{}".to_string()));
    }
    body.push('}');
    body
}

/// A LoadTableResult, with the `config` clients need to read the warehouse's files.
pub(crate) fn load_result(wh: &Warehouse, headers: &HeaderMap, table: &LoadedTable) -> Response {
    let config = wh.table_config(delegation_requested(headers));
    json_response(
        StatusCode::OK,
        table_body(
            table.metadata_location.as_deref(),
            table.json(),
            Some(&config),
        ),
    )
}

/// Whether the client asked for vended credentials (`X-Iceberg-Access-Delegation`, a
/// comma-separated list that may name `vended-credentials` and `remote-signing`).
fn delegation_requested(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-iceberg-access-delegation")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|mode| mode.trim().eq_ignore_ascii_case("vended-credentials"))
}

/// ETags name the metadata file and the snapshot selection: equal tags mean equal responses.
fn etag(metadata_location: &str, mode: SnapshotsMode) -> String {
    let mut hasher = DefaultHasher::new();
    metadata_location.hash(&mut hasher);
    format!(
        "\"{:016x}-{}\"",
        hasher.finish(),
        matches!(mode, SnapshotsMode::Refs) as u8
    )
}

fn if_none_match_hits(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<NamespacePath>,
    IcebergQuery(query): IcebergQuery<ListQuery>,
) -> ApiResult<axum::Json<ListTablesResponse>> {
    let (wh, ns) = path.resolve(&state)?;
    let page = state
        .catalog
        .list_tables(wh, &ns, &PageRequest::from(query))
        .await?;
    Ok(axum::Json(ListTablesResponse::new(&ns, page)))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<NamespacePath>,
    headers: HeaderMap,
    IcebergJson(req): IcebergJson<CreateTableRequest>,
) -> ApiResult<Response> {
    let (wh, ns) = path.resolve(&state)?;
    let table = state
        .catalog
        .create_table(wh, &ns, req, &principal.0)
        .await?;
    Ok(load_result(wh, &headers, &table))
}

#[derive(Debug, Deserialize)]
pub struct LoadQuery {
    snapshots: Option<String>,
}

pub async fn load(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
    IcebergQuery(query): IcebergQuery<LoadQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (wh, table) = path.resolve(&state)?;
    let mode = match query.snapshots.as_deref() {
        None | Some("all") => SnapshotsMode::All,
        Some("refs") => SnapshotsMode::Refs,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "snapshots must be `all` or `refs`, not `{other}`"
            )));
        }
    };
    let location = state.catalog.table_metadata_location(wh, &table).await?;
    let tag = etag(&location, mode);
    if if_none_match_hits(&headers, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let loaded = state.catalog.load_metadata_at(wh, location, mode).await?;
    let mut response = load_result(wh, &headers, &loaded);
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    Ok(response)
}

/// loadCredentials: the keys a warehouse that vends credentials gives a reader of its tables
/// (the same `s3.*` settings loadTable's `config` carries when vended credentials are asked
/// for), for the warehouse root, which they cover; none for a warehouse that vends none.
pub async fn load_credentials(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
) -> ApiResult<axum::Json<Value>> {
    let (wh, table) = path.resolve(&state)?;
    state.catalog.table_metadata_location(wh, &table).await?;
    let credentials = if wh.vended_credentials.is_empty() {
        Vec::new()
    } else {
        vec![serde_json::json!({
            "prefix": wh.root.to_string(),
            "config": wh.table_config(true),
        })]
    };
    Ok(axum::Json(
        serde_json::json!({ "storage-credentials": credentials }),
    ))
}

pub async fn exists(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
) -> ApiResult<StatusCode> {
    let (wh, table) = path.resolve(&state)?;
    state.catalog.table_metadata_location(wh, &table).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn commit(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<TablePath>,
    IcebergJson(req): IcebergJson<CommitTableRequest>,
) -> ApiResult<Response> {
    let (wh, table) = path.resolve(&state)?;
    let CommitOutcome {
        metadata_location,
        metadata,
    } = state
        .catalog
        .commit_table(wh, table, req, &principal.0)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        table_body(Some(&metadata_location), &metadata.json, None),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropQuery {
    #[serde(default, deserialize_with = "lenient_bool")]
    purge_requested: bool,
}

/// `true`/`false` in any case: PyIceberg sends `purgeRequested=True`.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(serde::de::Error::custom(format!(
            "`{text}` is not a boolean: use true or false"
        ))),
    }
}

pub async fn drop(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<TablePath>,
    IcebergQuery(query): IcebergQuery<DropQuery>,
) -> ApiResult<StatusCode> {
    let (wh, table) = path.resolve(&state)?;
    state
        .catalog
        .drop_table(wh, &table, query.purge_requested, &principal.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn register(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<NamespacePath>,
    headers: HeaderMap,
    IcebergJson(req): IcebergJson<RegisterTableRequest>,
) -> ApiResult<Response> {
    let (wh, ns) = path.resolve(&state)?;
    let table = state
        .catalog
        .register_table(wh, &ns, req, &principal.0)
        .await?;
    Ok(load_result(wh, &headers, &table))
}

pub async fn rename(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<PrefixPath>,
    IcebergJson(req): IcebergJson<RenameTableRequest>,
) -> ApiResult<StatusCode> {
    let wh = state.warehouse(&path.prefix)?;
    let source = TableName::new(req.source.namespace, req.source.name)?;
    let destination = TableName::new(req.destination.namespace, req.destination.name)?;
    state
        .catalog
        .rename_table(wh, &source, &destination, &principal.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Metrics reports are accepted and discarded; the body must still be JSON and the table must exist.
pub async fn report_metrics(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<TablePath>,
    IcebergJson(_report): IcebergJson<Value>,
) -> ApiResult<StatusCode> {
    let (wh, table) = path.resolve(&state)?;
    state.catalog.table_metadata_location(wh, &table).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn commit_transaction(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<PrefixPath>,
    IcebergJson(req): IcebergJson<CommitTransactionRequest>,
) -> ApiResult<StatusCode> {
    let wh = state.warehouse(&path.prefix)?;
    state
        .catalog
        .commit_transaction(wh, req, &principal.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
