//! HTTP: axum routers and thin handlers. Handlers parse and answer; the catalog service decides.

pub mod auth;
pub mod errors;
pub mod extract;
pub mod iceberg;
pub mod internal;
pub mod management;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use tower_http::trace::TraceLayer;

use crate::catalog::Catalog;
use errors::ApiError;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
}

/// The whole HTTP surface: the Iceberg API, the management API, and ErrorModel answers for
/// unknown routes and methods; every request is authenticated first.
pub fn router(
    state: Arc<AppState>,
    authenticator: auth::Authenticator,
    max_body_bytes: usize,
) -> Router {
    Router::new()
        .merge(iceberg::router())
        .merge(management::router())
        .merge(internal::router())
        .fallback(async || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFoundException",
                "No such endpoint: see GET /v1/config for the endpoints floe serves",
            )
        })
        .method_not_allowed_fallback(async || {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowedException",
                "This endpoint does not accept that HTTP method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            Arc::new(authenticator),
            auth::require_auth,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
