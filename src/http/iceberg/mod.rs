//! The Iceberg REST catalog API (`/v1`), per the spec in the Iceberg repository.

mod config;
mod namespaces;
mod tables;
mod views;

pub(crate) use tables::{json_response, load_result, table_body};

use axum::http::Method;
use serde::Deserialize;

use super::AppState;
use super::errors::ApiResult;
use super::routes::{Route, route};
use crate::auth::{Access, Role};
use crate::catalog::Warehouse;
use crate::names::{NamespaceName, TableName};

/// Every route of the Iceberg REST API floe serves, with the role each needs.
pub fn routes() -> Vec<Route> {
    use Method as M;
    let read = Access::Catalog(Role::Reader);
    let write = Access::Catalog(Role::Writer);
    vec![
        route(M::GET, "/v1/config", read, "config.get", config::get_config),
        route(
            M::GET,
            "/v1/{prefix}/namespaces",
            read,
            "namespace.list",
            namespaces::list,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces",
            write,
            "namespace.create",
            namespaces::create,
        ),
        route(
            M::GET,
            "/v1/{prefix}/namespaces/{namespace}",
            read,
            "namespace.load",
            namespaces::load,
        ),
        route(
            M::HEAD,
            "/v1/{prefix}/namespaces/{namespace}",
            read,
            "namespace.exists",
            namespaces::exists,
        ),
        route(
            M::DELETE,
            "/v1/{prefix}/namespaces/{namespace}",
            write,
            "namespace.drop",
            namespaces::drop,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/properties",
            write,
            "namespace.properties",
            namespaces::update_properties,
        ),
        route(
            M::GET,
            "/v1/{prefix}/namespaces/{namespace}/tables",
            read,
            "table.list",
            tables::list,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/tables",
            write,
            "table.create",
            tables::create,
        ),
        route(
            M::GET,
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
            read,
            "table.load",
            tables::load,
        ),
        route(
            M::HEAD,
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
            read,
            "table.exists",
            tables::exists,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
            write,
            "table.commit",
            tables::commit,
        ),
        route(
            M::DELETE,
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}",
            write,
            "table.drop",
            tables::drop,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/register",
            write,
            "table.register",
            tables::register,
        ),
        route(
            M::POST,
            "/v1/{prefix}/tables/rename",
            write,
            "table.rename",
            tables::rename,
        ),
        route(
            M::GET,
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials",
            read,
            "table.credentials",
            tables::load_credentials,
        ),
        // Metrics reports change nothing (floe discards them), so a reader may send them.
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
            read,
            "table.metrics",
            tables::report_metrics,
        ),
        route(
            M::POST,
            "/v1/{prefix}/transactions/commit",
            write,
            "transaction.commit",
            tables::commit_transaction,
        ),
        route(
            M::GET,
            "/v1/{prefix}/namespaces/{namespace}/views",
            read,
            "view.list",
            views::list,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/views",
            write,
            "view.create",
            views::create,
        ),
        route(
            M::GET,
            "/v1/{prefix}/namespaces/{namespace}/views/{view}",
            read,
            "view.load",
            views::load,
        ),
        route(
            M::HEAD,
            "/v1/{prefix}/namespaces/{namespace}/views/{view}",
            read,
            "view.exists",
            views::exists,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/views/{view}",
            write,
            "view.replace",
            views::replace,
        ),
        route(
            M::DELETE,
            "/v1/{prefix}/namespaces/{namespace}/views/{view}",
            write,
            "view.drop",
            views::drop,
        ),
        route(
            M::POST,
            "/v1/{prefix}/views/rename",
            write,
            "view.rename",
            views::rename,
        ),
        route(
            M::POST,
            "/v1/{prefix}/namespaces/{namespace}/register-view",
            write,
            "view.register",
            views::register,
        ),
    ]
}

/// The endpoints `/v1/config` advertises ("<VERB> <spec path>"): every route of the catalog under
/// a prefix, from the same list the router is built from (a test checks each against the spec).
pub fn endpoints() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|r| r.spec)
        .filter(|spec| spec.path.starts_with("/v1/{prefix}/"))
        .map(|spec| (spec.method, spec.path))
        .collect()
}

/// The endpoint strings of [`endpoints`], in the `/v1/config` format.
pub fn endpoint_strings() -> Vec<String> {
    endpoints()
        .iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect()
}

/// The endpoints that change nothing (GET and HEAD), for warehouses that hold only replicas.
pub fn read_endpoint_strings() -> Vec<String> {
    endpoints()
        .iter()
        .filter(|(method, _)| matches!(*method, Method::GET | Method::HEAD))
        .map(|(method, path)| format!("{method} {path}"))
        .collect()
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
