//! `GET /management/v1/log`: the update log, in order, for operators and for consumers that
//! follow it (an audit pipeline, a cache invalidator, a search index).
//!
//! With `wait=SECONDS` a read that finds nothing after `after` waits for entries, up to that
//! long: it reads again as soon as this instance commits an append (`LogWake::watch_commits`), and
//! every [`OTHER_INSTANCES_POLL`] for appends other instances commit, so a follower needs no poll
//! loop of its own. `Accept: application/cloudevents-batch+json` gives the entries as a batch of
//! CloudEvents 1.0 (the entry itself as each event's `data`), the next `after` in the
//! `floe-next-after` header.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::CatalogError;
use crate::http::AppState;
use crate::http::errors::{ApiError, ApiResult};
use crate::http::extract::IcebergQuery;
use crate::log::{self, LogEntry, ReadFilter};

/// How long a page that is not full waits for committed entries to become readable.
const READABLE_WAIT: Duration = Duration::from_millis(500);

/// The longest `wait` a read may ask for.
const MAX_WAIT_SECONDS: u64 = 300;

/// How often a waiting read looks for entries other instances appended.
const OTHER_INSTANCES_POLL: Duration = Duration::from_millis(100);

/// The media type of a batch of CloudEvents (CloudEvents JSON format, batched mode).
const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Return entries with a larger `seq` than this (default 0: from the start).
    after: Option<i64>,
    /// Most entries to return, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// Only entries of this table: floe's table id or the Iceberg table UUID.
    table: Option<Uuid>,
    /// Only entries of this warehouse.
    warehouse: Option<String>,
    /// When there are no entries yet, wait up to this many seconds (at most 300) for some.
    wait: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// Pass as `after` to read on; null when the page is empty.
    pub next_after: Option<i64>,
}

/// Read the update log in `seq` order.
#[utoipa::path(
    get,
    path = "/management/v1/log",
    params(LogQuery),
    responses(
        (status = 200, description = "Entries in seq order (with `Accept: application/cloudevents-batch+json`, a batch of CloudEvents whose `data` is each entry, and the next `after` in the `floe-next-after` header)", body = LogPage),
        (status = 400, description = "Invalid parameters", body = crate::http::errors::IcebergErrorResponse),
        (status = 404, description = "Unknown warehouse", body = crate::http::errors::IcebergErrorResponse),
        (status = 503, description = "Database unavailable", body = crate::http::errors::IcebergErrorResponse)
    ),
    tag = "log"
)]
pub async fn read_log(
    State(state): State<Arc<AppState>>,
    IcebergQuery(query): IcebergQuery<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (after, limit) = super::page_bounds(query.after, query.limit)?;
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::bad_request(format!(
            "wait {wait} is out of range: use 0 to {MAX_WAIT_SECONDS} seconds"
        )));
    }
    let warehouse_id = match &query.warehouse {
        Some(name) => Some(state.catalog.warehouse(Some(name))?.id),
        None => None,
    };
    let filter = ReadFilter {
        after,
        limit,
        table: query.table,
        warehouse_id,
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    // Subscribed before the first read, so a commit between that read and the wait wakes it.
    let mut commits = state.catalog.log_wake().watch_commits();
    let entries = loop {
        let entries = read_page(state.catalog.pool(), &filter).await?;
        let now = Instant::now();
        if !entries.is_empty() || now >= deadline {
            break entries;
        }
        let nap = OTHER_INSTANCES_POLL.min(deadline - now);
        tokio::select! {
            woken = commits.changed() => {
                if woken.is_err() {
                    // The catalog is shutting down: no more wake-ups, only the timer.
                    tokio::time::sleep(nap).await;
                }
            }
            () = tokio::time::sleep(nap) => {}
        }
    };
    let next_after = entries.last().map(|e| e.seq);
    let batch = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains(CLOUDEVENTS_BATCH));
    if !batch {
        return Ok(Json(LogPage {
            entries,
            next_after,
        })
        .into_response());
    }
    let region = state.catalog.region();
    let events: Vec<Value> = entries.iter().map(|e| cloud_event(region, e)).collect();
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CLOUDEVENTS_BATCH),
        )],
        Json(events),
    )
        .into_response();
    if let Some(next) = next_after.and_then(|n| HeaderValue::from_str(&n.to_string()).ok()) {
        response.headers_mut().insert("floe-next-after", next);
    }
    Ok(response)
}

/// One page. An entry becomes readable once every older transaction has ended, usually within
/// milliseconds of its commit: a page that is not full waits that long for it, so that a client
/// reads its own acknowledged changes.
async fn read_page(pool: &sqlx::PgPool, filter: &ReadFilter) -> ApiResult<Vec<LogEntry>> {
    let deadline = Instant::now() + READABLE_WAIT;
    loop {
        let entries = log::read(pool, filter).await.map_err(CatalogError::from)?;
        let after = entries.last().map_or(filter.after, |e| e.seq);
        let full = entries.len() as i64 >= filter.limit;
        if full
            || Instant::now() >= deadline
            || !log::waiting_after(pool, after)
                .await
                .map_err(CatalogError::from)?
        {
            return Ok(entries);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An entry as a CloudEvent 1.0: its `seq` the id (unique in the region's log), the region and
/// warehouse the source, its kind the type, the table (or namespace) the subject.
fn cloud_event(region: &str, entry: &LogEntry) -> Value {
    let mut subject = entry.namespace.join(".");
    if let Some(table) = &entry.table_name {
        subject = format!("{subject}.{table}");
    }
    json!({
        "specversion": "1.0",
        "id": entry.seq.to_string(),
        "source": format!("/floe/{region}/{}", entry.warehouse),
        "type": format!("io.floe.log.{}", entry.kind),
        "time": entry.committed_at,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": entry,
    })
}
