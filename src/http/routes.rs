//! Every route floe serves, with the access it needs and the name the audit trail gives it.
//!
//! This table is the only way a route comes into being: the router is built from it
//! (`http::router`), the access guard (`http::auth::guard`) reads the same entries, and a test
//! turns it into an auth matrix. A handler therefore cannot be reachable without a declared
//! [`Access`], and a request whose method and path match no entry never reaches a handler.

use std::collections::HashMap;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::AppState;
use crate::auth::{Access, Scope};

/// One route's declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// The path template, with `{param}` segments as axum matches them.
    pub path: &'static str,
    pub access: Access,
    /// A short, stable name for the audit trail (e.g. `peer.put`).
    pub action: &'static str,
}

impl RouteSpec {
    /// The warehouse scope of a request to this route, from its path parameters and query: the
    /// Iceberg API's `{prefix}` (or `/v1/config`'s `?warehouse=`), the management API's
    /// `{warehouse}`; region-wide management routes concern every warehouse.
    pub fn scope<'a>(
        &self,
        param: impl Fn(&str) -> Option<&'a str>,
        warehouse_query: Option<&'a str>,
    ) -> Scope<'a> {
        match self.access {
            Access::Catalog(_) => match param("prefix").or(warehouse_query) {
                Some(warehouse) if !warehouse.is_empty() => Scope::Warehouse(warehouse),
                _ => Scope::Any,
            },
            Access::Admin => param("warehouse")
                .map(Scope::Warehouse)
                .unwrap_or(Scope::Every),
            Access::Public | Access::Peer => Scope::Every,
        }
    }
}

/// A declared route and its handler.
pub struct Route {
    pub spec: RouteSpec,
    pub handler: MethodRouter<Arc<AppState>>,
}

/// Declares a route: `method path` needs `access`, is audited as `action`, and runs `handler`.
pub fn route<H, T>(
    method: Method,
    path: &'static str,
    access: Access,
    action: &'static str,
    handler: H,
) -> Route
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard HTTP method");
    Route {
        spec: RouteSpec {
            method,
            path,
            access,
            action,
        },
        handler: on(filter, handler),
    }
}

/// The declarations by path and method, for the guard.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_path: HashMap<&'static str, Vec<RouteSpec>>,
}

impl RouteTable {
    pub fn new(specs: impl IntoIterator<Item = RouteSpec>) -> Self {
        let mut by_path: HashMap<&'static str, Vec<RouteSpec>> = HashMap::new();
        for spec in specs {
            let methods = by_path.entry(spec.path).or_default();
            assert!(
                !methods.iter().any(|m| m.method == spec.method),
                "{} {} is declared twice",
                spec.method,
                spec.path
            );
            methods.push(spec);
        }
        Self { by_path }
    }

    /// The declaration of a request to the route matched at `path` (HEAD falls back to GET, as
    /// axum serves it).
    pub fn find(&self, method: &Method, path: &str) -> Option<&RouteSpec> {
        let methods = self.by_path.get(path)?;
        let lookup = |method: &Method| methods.iter().find(|spec| spec.method == *method);
        lookup(method).or_else(|| {
            (method == Method::HEAD)
                .then(|| lookup(&Method::GET))
                .flatten()
        })
    }
}
