//! The backend seam of the Iceberg API: a request under the prefix of an `upstream` warehouse
//! goes to its upstream catalog (`upstream::forward`), any other to floe's builtin handlers.
//!
//! This runs inside the access guard (`http::router` layers it first), so a forwarded request
//! has passed the same role checks as a builtin one, and for every route of the route table, so
//! no endpoint of an upstream warehouse can reach a builtin handler by being left out.
//!
//! Commits (commitTable, transactions/commit) are the exception: floe must log each one it
//! acknowledges, and until the intercepted commit path is built it refuses them for upstream
//! warehouses rather than forward them unlogged; `/v1/config` does not advertise them there.

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::errors::ApiError;
use crate::upstream::UpstreamCatalog;
use crate::upstream::forward::Forwarded;

/// The routes of the Iceberg API that are under a warehouse's prefix.
const UNDER_PREFIX: &str = "/v1/{prefix}/";

/// Whether a route commits table changes (see the module doc).
pub fn is_commit(method: &Method, route: &str) -> bool {
    *method == Method::POST
        && matches!(
            route,
            "/v1/{prefix}/namespaces/{namespace}/tables/{table}"
                | "/v1/{prefix}/transactions/commit"
        )
}

/// The endpoints of `/v1/config` ("<VERB> <path>") floe serves for an upstream warehouse.
pub fn served_endpoint(endpoint: &str) -> bool {
    endpoint
        .split_once(' ')
        .and_then(|(verb, path)| Some((Method::from_bytes(verb.as_bytes()).ok()?, path)))
        .is_some_and(|(method, path)| !is_commit(&method, path))
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
    let Some(upstream) = state
        .catalog
        .warehouse(prefix)
        .ok()
        .and_then(|wh| wh.upstream.clone())
    else {
        return next.run(request).await;
    };
    forward(&upstream, route, &params, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn forward(
    upstream: &UpstreamCatalog,
    route: &str,
    params: &[(&str, &str)],
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    if is_commit(&parts.method, route) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "UnsupportedOperationException",
            format!(
                "warehouse `{}` is served by the upstream catalog at {}, and this floe does not \
                 yet log commits made through it: commit to the upstream catalog directly",
                upstream.warehouse(),
                upstream.url()
            ),
        ));
    }
    let limit = upstream.max_body_bytes();
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        )
    })?;
    upstream
        .forward(Forwarded {
            commit: is_commit(&parts.method, route),
            method: parts.method,
            route,
            params,
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
        })
        .await
}
