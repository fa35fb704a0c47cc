//! The operator's page: `GET /ui`, a replication dashboard served by floe itself, with no
//! front-end build step. The page and its script are static files compiled into the binary and
//! open to anyone: they hold no data. Everything shown comes from the management API
//! (`/management/v1/replication`, the OpenAPI document), which the script calls with the admin
//! token the operator gives it, so the page can show and do no more than that token may.
//!
//! The page sets every value it shows as text (never as markup), and its Content-Security-Policy
//! allows only this origin's own script and requests: a table name cannot become script.

use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};

use super::routes::{Route, route};
use crate::auth::Access;

const PAGE: &str = include_str!("ui/dashboard.html");
const SCRIPT: &str = include_str!("ui/dashboard.js");

const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                      style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "/ui", Access::Public, "ui.page", page),
        route(
            Method::GET,
            "/ui/dashboard.js",
            Access::Public,
            "ui.script",
            script,
        ),
    ]
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
