//! View endpoints (listViews, createView, loadView, viewExists, replaceView, dropView,
//! renameView, registerView).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::tables::{ListQuery, ListTablesResponse, json_response, table_body};
use super::{NamespacePath, PrefixPath};
use crate::catalog::Warehouse;
use crate::catalog::namespaces::PageRequest;
use crate::catalog::requests::{
    CommitViewRequest, CreateViewRequest, RegisterViewRequest, RenameTableRequest,
};
use crate::catalog::views::LoadedView;
use crate::http::AppState;
use crate::http::auth::Principal;
use crate::http::errors::ApiResult;
use crate::http::extract::{IcebergJson, IcebergPath, IcebergQuery};
use crate::names::{NamespaceName, TableName};

#[derive(Debug, Deserialize)]
pub struct ViewPath {
    prefix: String,
    namespace: String,
    view: String,
}

impl ViewPath {
    fn resolve<'a>(&self, state: &'a AppState) -> ApiResult<(&'a Warehouse, TableName)> {
        let wh = state.warehouse(&self.prefix)?;
        let ns = NamespaceName::from_url_segment(&self.namespace)?;
        Ok((wh, TableName::new(ns, self.view.clone())?))
    }
}

/// A LoadViewResult. Views have no files a client reads but their metadata, so `config` is empty.
fn load_result(view: &LoadedView) -> Response {
    json_response(
        StatusCode::OK,
        table_body(
            Some(&view.metadata_location),
            &view.metadata.json,
            Some(&Default::default()),
        ),
    )
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<NamespacePath>,
    IcebergQuery(query): IcebergQuery<ListQuery>,
) -> ApiResult<axum::Json<ListTablesResponse>> {
    let (wh, ns) = path.resolve(&state)?;
    let page = state
        .catalog
        .list_views(wh, &ns, &PageRequest::from(query))
        .await?;
    Ok(axum::Json(ListTablesResponse::new(&ns, page)))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<NamespacePath>,
    IcebergJson(req): IcebergJson<CreateViewRequest>,
) -> ApiResult<Response> {
    let (wh, ns) = path.resolve(&state)?;
    let view = state
        .catalog
        .create_view(wh, &ns, req, &principal.0)
        .await?;
    Ok(load_result(&view))
}

pub async fn load(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<ViewPath>,
) -> ApiResult<Response> {
    let (wh, view) = path.resolve(&state)?;
    Ok(load_result(&state.catalog.load_view(wh, &view).await?))
}

pub async fn exists(
    State(state): State<Arc<AppState>>,
    IcebergPath(path): IcebergPath<ViewPath>,
) -> ApiResult<StatusCode> {
    let (wh, view) = path.resolve(&state)?;
    state.catalog.view_metadata_location(wh, &view).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn replace(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<ViewPath>,
    IcebergJson(req): IcebergJson<CommitViewRequest>,
) -> ApiResult<Response> {
    let (wh, view) = path.resolve(&state)?;
    let replaced = state
        .catalog
        .replace_view(wh, &view, req, &principal.0)
        .await?;
    Ok(load_result(&replaced))
}

pub async fn drop(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<ViewPath>,
) -> ApiResult<StatusCode> {
    let (wh, view) = path.resolve(&state)?;
    state.catalog.drop_view(wh, &view, &principal.0).await?;
    Ok(StatusCode::NO_CONTENT)
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
        .rename_view(wh, &source, &destination, &principal.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn register(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IcebergPath(path): IcebergPath<NamespacePath>,
    IcebergJson(req): IcebergJson<RegisterViewRequest>,
) -> ApiResult<Response> {
    let (wh, ns) = path.resolve(&state)?;
    let view = state
        .catalog
        .register_view(wh, &ns, req, &principal.0)
        .await?;
    Ok(load_result(&view))
}
