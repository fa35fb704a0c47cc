//! The Iceberg REST catalog API (`/v1`), per the spec in the Iceberg repository.

mod config;
mod namespaces;
mod tables;

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post};
use serde::Deserialize;

use super::AppState;
use super::errors::ApiResult;
use crate::catalog::Warehouse;
use crate::names::{NamespaceName, TableName};

/// Every endpoint floe serves, as `/v1/config` advertises it ("<VERB> <spec path>"). The router below
/// is built from the same paths, and a test checks each against the spec and against the router.
pub const ENDPOINTS: &[(Method, &str)] = &[
    (Method::GET, "/v1/{prefix}/namespaces"),
    (Method::POST, "/v1/{prefix}/namespaces"),
    (Method::GET, "/v1/{prefix}/namespaces/{namespace}"),
    (Method::HEAD, "/v1/{prefix}/namespaces/{namespace}"),
    (Method::DELETE, "/v1/{prefix}/namespaces/{namespace}"),
    (
        Method::POST,
        "/v1/{prefix}/namespaces/{namespace}/properties",
    ),
    (Method::GET, "/v1/{prefix}/namespaces/{namespace}/tables"),
    (Method::POST, "/v1/{prefix}/namespaces/{namespace}/tables"),
    (
        Method::GET,
        "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
    ),
    (
        Method::HEAD,
        "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
    ),
    (
        Method::POST,
        "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
    ),
    (
        Method::DELETE,
        "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
    ),
    (Method::POST, "/v1/{prefix}/namespaces/{namespace}/register"),
    (Method::POST, "/v1/{prefix}/tables/rename"),
    (
        Method::POST,
        "/v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    ),
    (Method::POST, "/v1/{prefix}/transactions/commit"),
];

/// The endpoint strings of [`ENDPOINTS`], in the `/v1/config` format.
pub fn endpoint_strings() -> Vec<String> {
    ENDPOINTS
        .iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect()
}

/// The endpoints that change nothing (GET and HEAD), for warehouses that hold only replicas.
pub fn read_endpoint_strings() -> Vec<String> {
    ENDPOINTS
        .iter()
        .filter(|(method, _)| matches!(*method, Method::GET | Method::HEAD))
        .map(|(method, path)| format!("{method} {path}"))
        .collect()
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/config", get(config::get_config))
        .route(
            "/v1/{prefix}/namespaces",
            get(namespaces::list).post(namespaces::create),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}",
            get(namespaces::load)
                .head(namespaces::exists)
                .delete(namespaces::drop),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/properties",
            post(namespaces::update_properties),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables",
            get(tables::list).post(tables::create),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
            get(tables::load)
                .head(tables::exists)
                .post(tables::commit)
                .delete(tables::drop),
        )
        .route(
            "/v1/{prefix}/namespaces/{namespace}/register",
            post(tables::register),
        )
        .route("/v1/{prefix}/tables/rename", post(tables::rename))
        .route(
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
            post(tables::report_metrics),
        )
        .route(
            "/v1/{prefix}/transactions/commit",
            post(tables::commit_transaction),
        )
}

#[derive(Debug, Deserialize)]
struct PrefixPath {
    prefix: String,
}

#[derive(Debug, Deserialize)]
struct NamespacePath {
    prefix: String,
    namespace: String,
}

#[derive(Debug, Deserialize)]
struct TablePath {
    prefix: String,
    namespace: String,
    table: String,
}

impl AppState {
    fn warehouse(&self, prefix: &str) -> ApiResult<&Warehouse> {
        Ok(self.catalog.warehouse(Some(prefix))?)
    }
}

impl NamespacePath {
    fn resolve<'a>(&self, state: &'a AppState) -> ApiResult<(&'a Warehouse, NamespaceName)> {
        let wh = state.warehouse(&self.prefix)?;
        Ok((wh, NamespaceName::from_url_segment(&self.namespace)?))
    }
}

impl TablePath {
    fn resolve<'a>(&self, state: &'a AppState) -> ApiResult<(&'a Warehouse, TableName)> {
        let wh = state.warehouse(&self.prefix)?;
        let ns = NamespaceName::from_url_segment(&self.namespace)?;
        Ok((wh, TableName::new(ns, self.table.clone())?))
    }
}
