//! HTTP: axum routers and thin handlers. Handlers parse and answer; the catalog service decides.

pub mod auth;
pub mod errors;
pub mod extract;
pub mod health;
pub mod iceberg;
pub mod idempotency;
pub mod internal;
pub mod management;
pub mod oauth;
pub mod routes;
mod ui;
pub mod upstream;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::catalog::Catalog;
use errors::ApiError;
use routes::{Route, RouteSpec, RouteTable};

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub authenticator: Arc<Authenticator>,
    /// `replication.allowed_peer_hosts`: where a registered peer may be.
    pub allowed_peer_hosts: Option<Vec<String>>,
    /// What Idempotency-Key replay needs (`idempotency`).
    pub idempotency: idempotency::Idempotency,
}

/// Every route floe serves: the Iceberg API, its token endpoint, the management API, the peer
/// endpoint and the health probes.
pub fn routes() -> Vec<Route> {
    let mut routes = iceberg::routes();
    routes.extend(oauth::routes());
    routes.extend(management::routes());
    routes.extend(internal::routes());
    routes.extend(health::routes());
    routes.extend(ui::routes());
    routes
}

/// The declarations of [`routes`] (for tests and documents).
pub fn route_specs() -> Vec<RouteSpec> {
    routes().into_iter().map(|r| r.spec).collect()
}

/// The whole HTTP surface, built from [`routes`] alone, every route behind the access guard and
/// the backend seam (`upstream`), and ErrorModel answers for unknown routes and methods.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let routes = routes();
    let guard = Arc::new(auth::Guard::new(
        state.authenticator.clone(),
        RouteTable::new(routes.iter().map(|r| r.spec.clone())),
        state.catalog.pool().clone(),
    ));
    let mut router = Router::new();
    for route in routes {
        router = router.route(route.spec.path, route.handler);
    }
    // Layers wrap what is already there: the measurement runs first (so refusals are counted
    // too), then the guard, then Idempotency-Key replay, then the backend seam.
    router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            upstream::dispatch,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::replay_or_run,
        ))
        .route_layer(middleware::from_fn_with_state(guard, auth::guard))
        .route_layer(middleware::from_fn(measured))
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
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Counts and times every request of a declared route (`telemetry`), by its route template.
async fn measured(
    matched: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    crate::telemetry::record_request(
        matched.as_str(),
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
