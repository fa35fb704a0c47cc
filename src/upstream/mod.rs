//! Upstream warehouses: floe in front of an existing Iceberg REST catalog (Polaris, Lakekeeper,
//! Glue's endpoint, Nessie, the Apache Iceberg reference catalog...).
//!
//! A warehouse configured with `backend = "upstream"` is served by its upstream catalog: the HTTP
//! layer hands every request under its prefix to [`UpstreamCatalog::forward`] (after the access
//! guard, so floe's roles apply as for builtin warehouses), and the answer goes back to the client
//! as the upstream sent it. Two rules make the forwarding safe:
//!
//! - **The upstream URL is built, never copied.** The path sent upstream is the route's template
//!   filled with the upstream's own prefix and the request's validated, fully percent-encoded
//!   names (`forward::UpstreamPath`), so no segment a client sends (`..`, an encoded slash) can
//!   reach another endpoint of the upstream or another host; credentials go only to the URL the
//!   operator configured.
//! - **Every failure is an ErrorModel that names the upstream.** Unreachable is 503, a timeout
//!   504, an answer that is not an Iceberg ErrorModel 502 (`errors`); an ErrorModel the upstream
//!   sent passes through unchanged, so clients see its 404s and 409s as they are.

pub mod auth;
pub mod client;
pub mod commit;
pub mod config;
pub mod diff;
pub mod errors;
pub mod forward;
pub mod history;
pub mod listing;
pub mod observer;
pub mod replica;
pub mod table_log;

pub use client::UpstreamCatalog;
pub use errors::UpstreamError;

/// Waits until the intercepted commits under way in every upstream warehouse are settled (for a
/// graceful stop, once the server takes no more requests: their clients may have been answered).
pub async fn settle_in_flight(catalog: &crate::catalog::Catalog) {
    for wh in catalog.warehouses() {
        if let Some(upstream) = &wh.upstream {
            upstream.settled().await;
        }
    }
}
