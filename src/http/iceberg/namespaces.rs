//! Namespace endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{NamespacePath, PrefixPath};
use crate::catalog::namespaces::PageRequest;
use crate::catalog::requests::{
    CreateNamespaceRequest, UpdateNamespacePropertiesRequest, UpdateNamespacePropertiesResponse,
};
use crate::http::AppState;
use crate::http::auth::Principal;
use crate::http::errors::ApiResult;
use crate::http::extract::{IcebergJson, IcebergPath, IcebergQuery};
use crate::names::NamespaceName;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    parent: Option<String>,
    page_token: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ListNamespacesResponse {
    namespaces: Vec<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NamespaceResponse {
    namespace: Vec<String>,
    properties: HashMap<String, String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<PrefixPath>,
    IcebergQuery(query): IcebergQuery<ListQuery>,
) -> ApiResult<Json<ListNamespacesResponse>> {
    let wh = state.warehouse(&path.prefix)?;
    let parent = query
        .parent
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(NamespaceName::from_url_segment)
        .transpose()?;
    let page = PageRequest {
        token: query.page_token,
        size: query.page_size,
    };
    let page = state
        .catalog
        .list_namespaces(wh, parent.as_ref(), &page)
        .await?;
    Ok(Json(ListNamespacesResponse {
        namespaces: page.items,
        next_page_token: page.next_page_token,
    }))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<PrefixPath>,
    IcebergJson(req): IcebergJson<CreateNamespaceRequest>,
) -> ApiResult<Json<NamespaceResponse>> {
    let wh = state.warehouse(&path.prefix)?;
    let properties = state
        .catalog
        .create_namespace(wh, &req.namespace, req.properties, &principal.0)
        .await?;
    Ok(Json(NamespaceResponse {
        namespace: req.namespace.levels().to_vec(),
        properties,
    }))
}

pub async fn load(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<NamespacePath>,
) -> ApiResult<Json<NamespaceResponse>> {
    let (wh, ns) = path.resolve(&state)?;
    let properties = state.catalog.load_namespace(wh, &ns).await?;
    Ok(Json(NamespaceResponse {
        namespace: ns.levels().to_vec(),
        properties,
    }))
}

pub async fn exists(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<NamespacePath>,
) -> ApiResult<StatusCode> {
    let (wh, ns) = path.resolve(&state)?;
    state.catalog.load_namespace(wh, &ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn drop(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<NamespacePath>,
) -> ApiResult<StatusCode> {
    let (wh, ns) = path.resolve(&state)?;
    state.catalog.drop_namespace(wh, &ns, &principal.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn update_properties(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<NamespacePath>,
    IcebergJson(req): IcebergJson<UpdateNamespacePropertiesRequest>,
) -> ApiResult<Json<UpdateNamespacePropertiesResponse>> {
    let (wh, ns) = path.resolve(&state)?;
    let response = state
        .catalog
        .update_namespace_properties(wh, &ns, req, &principal.0)
        .await?;
    Ok(Json(response))
}
