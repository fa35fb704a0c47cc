//! The backend seam of the Iceberg API: a request under the prefix of an `upstream` warehouse
//! goes to its upstream catalog (`upstream::forward`), any other to floe's builtin handlers.
//!
//! This runs inside the access guard (`http::router` layers it first), so a forwarded request
//! has passed the same role checks as a builtin one, and for every route of the route table, so
//! no endpoint of an upstream warehouse can reach a builtin handler by being left out.
//!
//! Commits (commitTable, transactions/commit) are not forwarded as they are: floe logs each one
//! it acknowledges, so they go through `upstream::commit`'s protocol instead.

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Principal;
use super::errors::ApiError;
use crate::catalog::write_rule;
use crate::error::CatalogError;
use crate::names::{NamespaceName, TableName};
use crate::upstream::commit::{self, InterceptedCommit};
use crate::upstream::forward::Forwarded;
use crate::upstream::{UpstreamCatalog, observer};

/// The routes of the Iceberg API that are under a warehouse's prefix.
const UNDER_PREFIX: &str = "/v1/{prefix}/";

/// Whether a route commits table changes (see the module doc).
pub fn is_commit(method: &Method, route: &str) -> bool {
    *method == Method::POST && matches!(route, TABLE_ROUTE | "/v1/{prefix}/transactions/commit")
}

pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    matched: MatchedPath,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.as_str();
    let params = match params {
        Ok(params) if route.starts_with(UNDER_PREFIX) => params,
        _ => return next.run(request).await,
    };
    let params: Vec<(&str, &str)> = params.iter().collect();
    let prefix = params
        .iter()
        .find(|(key, _)| *key == "prefix")
        .map(|(_, value)| *value);
    // An unknown warehouse is the builtin handler's 404 to give.
    let Some((warehouse_id, upstream)) = state
        .catalog
        .warehouse(prefix)
        .ok()
        .and_then(|wh| Some((wh.id, wh.upstream.clone()?)))
    else {
        return next.run(request).await;
    };
    forward(&state, warehouse_id, &upstream, route, &params, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn forward(
    state: &Arc<AppState>,
    warehouse_id: uuid::Uuid,
    upstream: &Arc<UpstreamCatalog>,
    route: &str,
    params: &[(&str, &str)],
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let limit = upstream.max_body_bytes();
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        )
    })?;
    if is_commit(&parts.method, route) {
        return intercept(state, upstream, params, parts, body).await;
    }
    let (tables, namespaces) = written(&parts.method, route, params, &body);
    if !tables.is_empty() || !namespaces.is_empty() {
        let mut conn = state
            .catalog
            .pool()
            .acquire()
            .await
            .map_err(CatalogError::from)?;
        let tables: Vec<&TableName> = tables.iter().collect();
        let namespaces: Vec<&NamespaceName> = namespaces.iter().collect();
        write_rule::check_forwarded_write(&mut conn, warehouse_id, &tables, &namespaces).await?;
    }
    let changed = changed_tables(&parts.method, route, params, &body);
    let created = created_table(&parts.method, route, params, &body);
    let answer = upstream
        .forward(Forwarded {
            method: parts.method.clone(),
            route,
            params,
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
        })
        .await?;
    if !answer.status().is_success() {
        return Ok(answer);
    }
    let authorization = parts.headers.get(header::AUTHORIZATION);
    if parts.method == Method::GET
        && route == TABLE_ROUTE
        && let Some(table) = path_table(params)
    {
        return Ok(observer::watch_load_table(
            answer,
            upstream.clone(),
            table,
            authorization.cloned(),
            upstream.max_body_bytes(),
        ));
    }
    for table in changed {
        upstream.observations().note(table, None, authorization);
    }
    match created {
        Some(table) => {
            let wh = state.catalog.warehouse(Some(upstream.warehouse()))?;
            Ok(
                observer::log_created(&state.catalog, wh, upstream, table, answer, authorization)
                    .await,
            )
        }
        None => Ok(answer),
    }
}

/// The table a forwarded createTable (not a staged one: that makes nothing at the upstream) or
/// registerTable makes, which floe logs from the answer (`observer::log_created`).
fn created_table(
    method: &Method,
    route: &str,
    params: &[(&str, &str)],
    body: &[u8],
) -> Option<TableName> {
    #[derive(serde::Deserialize)]
    struct Create {
        name: String,
        #[serde(rename = "stage-create", default)]
        stage_create: bool,
    }
    if method != Method::POST
        || !matches!(
            route,
            "/v1/{prefix}/namespaces/{namespace}/tables"
                | "/v1/{prefix}/namespaces/{namespace}/register"
        )
    {
        return None;
    }
    let create = serde_json::from_slice::<Create>(body).ok()?;
    if create.stage_create {
        return None;
    }
    let param = params.iter().find(|(k, _)| *k == "namespace")?.1;
    TableName::new(NamespaceName::from_url_segment(param).ok()?, create.name).ok()
}

const TABLE_ROUTE: &str = "/v1/{prefix}/namespaces/{namespace}/tables/{table}";

/// The table a route's path names, if it names one floe can serve.
fn path_table(params: &[(&str, &str)]) -> Option<TableName> {
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let namespace = NamespaceName::from_url_segment(param("namespace")?).ok()?;
    TableName::new(namespace, param("table")?.to_string()).ok()
}

/// A renameTable body's tables (`None` for one that is not valid: the upstream refuses it).
struct Rename {
    source: Option<TableName>,
    destination: Option<TableName>,
}

impl Rename {
    fn parse(body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Identifier {
            namespace: Vec<String>,
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct Body {
            source: Identifier,
            destination: Identifier,
        }
        let table =
            |id: Identifier| TableName::new(NamespaceName::new(id.namespace).ok()?, id.name).ok();
        let body: Body = serde_json::from_slice(body).ok()?;
        Some(Self {
            source: table(body.source),
            destination: table(body.destination),
        })
    }
}

/// The tables a forwarded drop or rename changes: once it succeeds, each is a hint for the
/// warehouse's observer (`upstream::observer`). A create or register is [`created_table`].
fn changed_tables(
    method: &Method,
    route: &str,
    params: &[(&str, &str)],
    body: &[u8],
) -> Vec<TableName> {
    match (method.as_str(), route) {
        ("DELETE", TABLE_ROUTE) => path_table(params).into_iter().collect(),
        ("POST", "/v1/{prefix}/tables/rename") => Rename::parse(body)
            .map(|rename| {
                [rename.source, rename.destination]
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The replicas and replicated namespaces a forwarded request would change, for the write rule
/// (`catalog::write_rule`): a drop or rename of a table; a namespace's drop or properties; a
/// table made in a namespace, or moved into one. Commits are checked under their locks instead
/// (`upstream::commit`).
fn written(
    method: &Method,
    route: &str,
    params: &[(&str, &str)],
    body: &[u8],
) -> (Vec<TableName>, Vec<NamespaceName>) {
    let namespace = || {
        let param = params.iter().find(|(k, _)| *k == "namespace")?.1;
        NamespaceName::from_url_segment(param).ok()
    };
    match (method.as_str(), route) {
        ("DELETE", "/v1/{prefix}/namespaces/{namespace}")
        | ("POST", "/v1/{prefix}/namespaces/{namespace}/properties")
        | ("POST", "/v1/{prefix}/namespaces/{namespace}/tables")
        | ("POST", "/v1/{prefix}/namespaces/{namespace}/register") => {
            (Vec::new(), namespace().into_iter().collect())
        }
        ("DELETE", TABLE_ROUTE) => (path_table(params).into_iter().collect(), Vec::new()),
        ("POST", "/v1/{prefix}/tables/rename") => match Rename::parse(body) {
            Some(rename) => (
                rename.source.into_iter().collect(),
                rename
                    .destination
                    .map(|t| t.namespace)
                    .into_iter()
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        },
        _ => (Vec::new(), Vec::new()),
    }
}

/// A commit, run through the intercepted-commit protocol (`upstream::commit`).
async fn intercept(
    state: &Arc<AppState>,
    upstream: &Arc<UpstreamCatalog>,
    params: &[(&str, &str)],
    parts: axum::http::request::Parts,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let principal = parts
        .extensions
        .get::<Principal>()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let table = match (param("namespace"), param("table")) {
        (Some(namespace), Some(table)) => Some(TableName::new(
            NamespaceName::from_url_segment(namespace)?,
            table.to_string(),
        )?),
        _ => None,
    };
    let commit = InterceptedCommit::parse(table, body, parts.headers, principal)?;
    let warehouse = param("prefix").map(str::to_string);
    let answer =
        commit::intercept(state.catalog.clone(), warehouse, upstream.clone(), commit).await?;
    Ok((answer.status, answer.headers, answer.body).into_response())
}
