//! Idempotency-Key (Iceberg REST spec 1.11) on every mutating endpoint, of the Iceberg API and of
//! the management API: a retry with the key of a request that was answered gets that answer
//! again, and changes nothing.
//!
//! Per keyed request, scoped by its principal (another caller's key is another key):
//! 1. **One at a time.** A transaction on a connection of its own (from a pool apart from the
//!    requests', so lock holders cannot starve the requests they wait for) takes the key's
//!    advisory lock and holds it to the end; a retry that arrives while the first is served waits for it (up
//!    to [`KEY_WAIT`], then 503 to retry). PostgreSQL releases the lock if this floe dies.
//! 2. **An answer kept** within the lifetime is replayed if the request is the same one (method,
//!    path, query and body, by digest); a key first used for another request is refused (422)
//!    and nothing runs.
//! 3. **A change in the log but no answer kept**: the first request took effect and its answer
//!    was lost (floe died between its change's COMMIT and keeping the answer). Every log entry a
//!    keyed request appends carries its key, written in the change's own transaction
//!    (`log::REQUEST_IDEMPOTENCY_KEY`), so this is known for certain; the retry is answered from
//!    the current state (the spec allows a newer one) without running again.
//! 4. **Otherwise** the request runs, with its key set for the log, and its answer is kept in the
//!    lock's transaction if final: 2xx and 4xx, never 5xx (a retry of those runs again). The body
//!    of an answer too large, or one that may carry vended keys, is not kept (a retry is then
//!    answered as in 3), so no secret reaches the database.
//!
//! Forwarded requests of an upstream warehouse are replayed the same way; their changes are
//! logged by floe's protocol tasks rather than the request (`upstream::commit`), without the
//! key, so after a lost answer a retry is forwarded again, key included, for the upstream to
//! decide. Management changes write no log entries either: after a lost answer their retry runs
//! again (all of them set a whole state or act idempotently, but a rule's create, which makes
//! another rule).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::errors::{ApiError, ApiResult};
use super::iceberg::{json_response, load_result, table_body};
use crate::catalog::Catalog;
use crate::catalog::metadata::SnapshotsMode;
use crate::db::idempotency::{self as db, KeptAnswer};
use crate::error::CatalogError;
use crate::log::REQUEST_IDEMPOTENCY_KEY;
use crate::names::{NamespaceName, TableName};

const HEADER: &str = "idempotency-key";

/// How long a retry waits for the first request with its key to finish.
const KEY_WAIT: Duration = Duration::from_secs(30);

/// The largest answer kept whole; a larger one is answered from the current state on a retry.
const MAX_KEPT_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Answers kept are pruned after every this many kept.
const PRUNE_EVERY: u64 = 256;

/// What replay needs, fixed when the server starts.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// How long an answer is replayed (`idempotency_key_lifetime_seconds`).
    pub lifetime: Duration,
    /// The connections that hold the keys' locks, apart from the requests' pool: a request
    /// holding its key's lock must never wait for a connection that lock holders took.
    locks: sqlx::PgPool,
    /// `max_body_bytes`: a keyed request's body is read here, within the same limit.
    max_body_bytes: usize,
}

impl Idempotency {
    pub fn new(
        pool: &sqlx::PgPool,
        lifetime: Duration,
        max_body_bytes: usize,
        max_connections: u32,
    ) -> Self {
        Self {
            lifetime,
            locks: crate::db::background_pool(pool, max_connections),
            max_body_bytes,
        }
    }
}

/// Whether `method route` changes something (and so honours a key): every POST and DELETE
/// under a warehouse's prefix but the metrics report, which changes nothing, and every POST,
/// PUT and DELETE of the management API (peers, rules, stream actions).
fn is_mutation(method: &Method, route: &str) -> bool {
    let writes = *method == Method::POST || *method == Method::DELETE || *method == Method::PUT;
    writes
        && ((route.starts_with("/v1/{prefix}/") && !route.ends_with("/metrics"))
            || route.starts_with("/management/v1/"))
}

pub async fn replay_or_run(
    State(state): State<Arc<AppState>>,
    matched: MatchedPath,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.as_str().to_string();
    if !is_mutation(request.method(), &route) || !request.headers().contains_key(HEADER) {
        return next.run(request).await;
    }
    let params: Vec<(String, String)> = params
        .map(|params| {
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    keyed(&state, &route, &params, request, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn keyed(
    state: &AppState,
    route: &str,
    params: &[(String, String)],
    request: Request,
    next: Next,
) -> ApiResult<Response> {
    let key = parse_key(request.headers().get(HEADER))?;
    let principal = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let limit = state.idempotency.max_body_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        )
    })?;
    let endpoint = format!("{} {route}", parts.method);
    let fingerprint = fingerprint(&parts.method, &parts.uri, &body);
    let lifetime = state.idempotency.lifetime.as_secs_f64();
    let catalog = &state.catalog;
    let mut tx = state
        .idempotency
        .locks
        .begin()
        .await
        .map_err(CatalogError::from)?;
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = {}",
        KEY_WAIT.as_millis()
    ))
    .execute(&mut *tx)
    .await
    .map_err(CatalogError::from)?;
    if let Err(err) = db::lock_key(&mut tx, &principal, key).await {
        let busy = err
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "55P03");
        if busy {
            let mut refused = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                format!(
                    "a request with Idempotency-Key {key} is still being served; retry with the \
                     same key"
                ),
            )
            .into_response();
            refused
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(refused);
        }
        return Err(CatalogError::from(err).into());
    }
    if let Some(kept) = db::kept_answer(&mut tx, &principal, key, lifetime)
        .await
        .map_err(CatalogError::from)?
    {
        if kept.fingerprint != fingerprint || kept.endpoint != endpoint {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UnprocessableEntityException",
                format!(
                    "Idempotency-Key {key} was first used for another request ({}); a key names \
                     one operation and its retries: send a new key for a new operation",
                    kept.endpoint
                ),
            ));
        }
        if let Some(body) = kept.body {
            return Ok(replay(kept.status, kept.content_type.as_deref(), body));
        }
    }
    if db::took_effect(&mut tx, &principal, key)
        .await
        .map_err(CatalogError::from)?
    {
        let request = Answered {
            method: &parts.method,
            route,
            params,
            body: &body,
            headers: &parts.headers,
        };
        return request.answer_from_current_state(catalog).await;
    }
    // An answer that may carry vended keys (loadTable's `config` of a create or register that
    // asked for them) is not kept: no secret is written to the database. A retry is answered
    // from the current state, with keys vended afresh.
    let asks_for_credentials = parts.headers.contains_key("x-iceberg-access-delegation");
    let request = Request::from_parts(parts, Body::from(body));
    let answer = REQUEST_IDEMPOTENCY_KEY.scope(key, next.run(request)).await;
    let status = answer.status();
    if status.is_server_error() {
        return Ok(answer);
    }
    let (answer_parts, answer_body) = answer.into_parts();
    let answer_body = axum::body::to_bytes(answer_body, usize::MAX)
        .await
        .map_err(|e| CatalogError::Unavailable(format!("the answer could not be read: {e}")))?;
    let content_type = answer_parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let kept = KeptAnswer {
        endpoint,
        fingerprint,
        status: status.as_u16(),
        content_type,
        body: (answer_body.len() <= MAX_KEPT_BODY_BYTES
            && !(asks_for_credentials && status.is_success()))
        .then(|| answer_body.to_vec()),
    };
    // The change is committed and logged with the key already; an answer that cannot be kept
    // is still the client's (a retry is then answered from the log and the current state).
    if let Err(err) = keep(tx, &principal, key, &kept, lifetime).await {
        tracing::warn!(%err, "could not keep the answer to a keyed request");
    }
    Ok(Response::from_parts(answer_parts, Body::from(answer_body)))
}

/// Keeps the answer and ends the lock's transaction.
async fn keep(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    principal: &str,
    key: Uuid,
    kept: &KeptAnswer,
    lifetime: f64,
) -> sqlx::Result<()> {
    db::keep_answer(&mut tx, principal, key, kept).await?;
    static KEPT: AtomicU64 = AtomicU64::new(0);
    if KEPT.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
        // Kept a while past the lifetime, for retries of clients whose clocks run late.
        db::prune(&mut tx, lifetime * 2.0).await?;
    }
    tx.commit().await
}

/// The key as the spec has it: a UUID (UUIDv7 recommended); anything else is a 400.
fn parse_key(value: Option<&HeaderValue>) -> ApiResult<Uuid> {
    let text = value.and_then(|v| v.to_str().ok()).unwrap_or_default();
    match Uuid::try_parse(text) {
        Ok(key) if text.len() == 36 => Ok(key),
        _ => Err(ApiError::bad_request(format!(
            "Idempotency-Key must be a UUID in its 36-character form (a UUIDv7, as the Iceberg \
             REST spec asks), not `{}`",
            text.chars().take(64).collect::<String>()
        ))),
    }
}

fn fingerprint(method: &Method, uri: &axum::http::Uri, body: &[u8]) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(method.as_str());
    digest.update(b"\n");
    digest.update(uri.path());
    digest.update(b"\n");
    digest.update(uri.query().unwrap_or_default());
    digest.update(b"\n");
    digest.update(body);
    digest.finalize().to_vec()
}

fn replay(status: u16, content_type: Option<&str>, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, Bytes::from(body)).into_response();
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// A keyed request that took effect, to answer from the catalog's state now.
struct Answered<'a> {
    method: &'a Method,
    route: &'a str,
    params: &'a [(String, String)],
    body: &'a [u8],
    headers: &'a axum::http::HeaderMap,
}

impl Answered<'_> {
    /// What the endpoint answers after its change, read from the state now: its success answer
    /// with what it made or changed as it is now.
    async fn answer_from_current_state(&self, catalog: &Catalog) -> ApiResult<Response> {
        let param = |name: &str| {
            self.params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let wh = catalog.warehouse(param("prefix"))?;
        let path_namespace = || -> ApiResult<NamespaceName> {
            Ok(NamespaceName::from_url_segment(
                param("namespace").unwrap_or_default(),
            )?)
        };
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        #[derive(Deserialize)]
        struct NewNamespace {
            namespace: Vec<String>,
        }
        #[derive(Deserialize, Default)]
        struct PropertyChanges {
            #[serde(default)]
            removals: Vec<String>,
            #[serde(default)]
            updates: serde_json::Map<String, serde_json::Value>,
        }
        let parsed = |e: serde_json::Error| ApiError::bad_request(format!("invalid body: {e}"));
        let table_now = async |table: TableName| -> ApiResult<_> {
            let location = catalog.table_metadata_location(wh, &table).await?;
            Ok(catalog
                .load_metadata_at(wh, location, SnapshotsMode::All)
                .await?)
        };
        match (self.method.as_str(), self.route) {
            ("POST", "/v1/{prefix}/namespaces") => {
                let ns: NewNamespace = serde_json::from_slice(self.body).map_err(parsed)?;
                let ns = NamespaceName::new(ns.namespace)?;
                let properties = catalog.load_namespace(wh, &ns).await?;
                let body = serde_json::json!({"namespace": ns.levels(), "properties": properties});
                Ok(axum::Json(body).into_response())
            }
            ("POST", "/v1/{prefix}/namespaces/{namespace}/properties") => {
                let changes: PropertyChanges = serde_json::from_slice(self.body).map_err(parsed)?;
                let body = serde_json::json!({
                    "updated": changes.updates.keys().collect::<Vec<_>>(),
                    "removed": changes.removals,
                    "missing": [],
                });
                Ok(axum::Json(body).into_response())
            }
            ("POST", "/v1/{prefix}/namespaces/{namespace}/tables")
            | ("POST", "/v1/{prefix}/namespaces/{namespace}/register") => {
                let named: Named = serde_json::from_slice(self.body).map_err(parsed)?;
                let table = TableName::new(path_namespace()?, named.name)?;
                Ok(load_result(wh, self.headers, &table_now(table).await?))
            }
            ("POST", "/v1/{prefix}/namespaces/{namespace}/tables/{table}") => {
                let name = param("table").unwrap_or_default().to_string();
                let loaded = table_now(TableName::new(path_namespace()?, name)?).await?;
                Ok(json_response(
                    StatusCode::OK,
                    table_body(
                        loaded.metadata_location.as_deref(),
                        &loaded.metadata.json,
                        None,
                    ),
                ))
            }
            // Drops, renames and transactions answer 204 with nothing to say.
            _ => Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}
