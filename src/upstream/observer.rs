//! Commits that bypass floe: writers that commit to the upstream catalog directly are found and
//! their states logged, so the update log stays the whole history of every table of an upstream
//! warehouse, whoever wrote it.
//!
//! Two things make floe look at a table:
//!
//! - **What passes through.** A loadTable answer names the table's current metadata; a forwarded
//!   create, register, drop or rename changes a table without a commit. Each leaves a *hint*
//!   ([`Observations::note`]), coalesced per table, for the warehouse's observer task.
//! - **The poll**, every `poll_interval_ms` (0: never): every table the upstream lists is loaded
//!   with the ETag of its last answer (`If-None-Match`, so an unchanged table costs a 304 where
//!   the upstream supports it); a changed one is looked at, and so is every table floe has logged
//!   that the upstream no longer lists. The poll also deletes commit intents settled more than an
//!   hour ago.
//!
//! A hint is only a reason to look, never a state to log: looking takes the table's change lock
//! and reads the upstream's state again under it (`table_log::catch_up`), so an answer a client
//! saw earlier, or one that raced a commit through floe, cannot be logged as if it were newer.
//! One answer is logged as a state: that of a create or register through floe, while floe has
//! no row for the table ([`log_created`], which says why that is safe).
//! A hint whose location is the one floe last logged costs one query and no upstream call. A
//! hint that fails (the upstream down) is dropped: the next poll, or the table's next commit
//! through floe, catches up the same way.
//!
//! Replicas floe keeps in the upstream (`upstream::replica`) are not caught up: their states
//! are floe's to make, so one made there directly is divergence, warned of here and refused at
//! the replica's next replicated change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::UpstreamCatalog;
use super::errors::UpstreamError;
use super::listing;
use super::table_log::{Current, catch_up, table_path};
use crate::catalog::{Catalog, Warehouse};
use crate::db::upstream as db;
use crate::error::CatalogError;
use crate::http::errors::ApiError;
use crate::names::TableName;

/// The most tables with a hint waiting; more are left to the poll (hints are only hints).
const MAX_PENDING_HINTS: usize = 10_000;

/// How long a settled commit intent is kept (for operators: its outcome says why it was settled
/// as it was); the poll deletes older ones, so the table holds what is pending and recent.
const SETTLED_INTENTS_KEPT_SECONDS: f64 = 3600.0;

/// What floe saw of a table: a reason to look at it.
struct Hint {
    /// The metadata a loadTable answer named; `None` when the table changed in another way.
    location: Option<String>,
    /// The client's credentials, for an upstream in pass-through mode (marked sensitive, so no
    /// Debug output shows them; only the next call to the upstream uses them).
    authorization: Option<HeaderValue>,
}

/// The hints waiting for a warehouse's observer task.
#[derive(Default)]
pub struct Observations {
    pending: Mutex<HashMap<TableName, Hint>>,
    /// Per table, the last location a look found logged: a load naming it again is no news (a
    /// logged state stays logged), so the common case, loads of an unchanged table, costs no
    /// query. Bounded like `pending`.
    logged: Mutex<HashMap<TableName, String>>,
    wake: Notify,
}

impl std::fmt::Debug for Observations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observations").finish_non_exhaustive()
    }
}

impl Observations {
    /// Leaves a hint that `table` may have changed; a later hint for the table replaces it.
    pub fn note(
        &self,
        table: TableName,
        location: Option<String>,
        authorization: Option<&HeaderValue>,
    ) {
        let authorization = authorization.cloned().map(|mut value| {
            value.set_sensitive(true);
            value
        });
        if location.is_some() && self.logged_location(&table) == location {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING_HINTS && !pending.contains_key(&table) {
            return;
        }
        pending.insert(
            table,
            Hint {
                location,
                authorization,
            },
        );
        drop(pending);
        self.wake.notify_one();
    }

    fn logged_location(&self, table: &TableName) -> Option<String> {
        let logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        logged.get(table).cloned()
    }

    /// Records that `location` is logged for `table` (see `logged`).
    fn found_logged(&self, table: &TableName, location: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() >= MAX_PENDING_HINTS && !logged.contains_key(table) {
            logged.clear();
        }
        logged.insert(table.clone(), location.to_string());
    }

    fn take(&self) -> HashMap<TableName, Hint> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A loadTable answer passed through with its body watched: once the client has read it all,
/// the metadata location it names becomes a hint (`None` if it could not be read within the
/// body limit). The body still streams; only a copy is kept, bounded by `limit`.
pub fn watch_load_table(
    response: Response,
    upstream: Arc<UpstreamCatalog>,
    table: TableName,
    authorization: Option<HeaderValue>,
    limit: usize,
) -> Response {
    #[derive(Deserialize)]
    struct LoadTable {
        #[serde(rename = "metadata-location")]
        location: Option<String>,
    }
    struct Watched {
        body: axum::body::BodyDataStream,
        copy: Option<Vec<u8>>,
        hint: Option<(Arc<UpstreamCatalog>, TableName, Option<HeaderValue>)>,
    }
    let (parts, body) = response.into_parts();
    let watched = Watched {
        body: body.into_data_stream(),
        copy: Some(Vec::new()),
        hint: Some((upstream, table, authorization)),
    };
    let chunks = futures::stream::unfold(watched, move |mut watched| async move {
        match watched.body.next().await {
            Some(Ok(bytes)) => {
                if let Some(kept) = watched.copy.as_mut() {
                    if kept.len() + bytes.len() > limit {
                        watched.copy = None;
                    } else {
                        kept.extend_from_slice(&bytes);
                    }
                }
                Some((Ok(bytes), watched))
            }
            Some(Err(err)) => {
                watched.copy = None;
                Some((Err(err), watched))
            }
            None => {
                let location = watched
                    .copy
                    .take()
                    .and_then(|bytes| serde_json::from_slice::<LoadTable>(&bytes).ok())
                    .and_then(|answer| answer.location);
                if let Some((upstream, table, authorization)) = watched.hint.take() {
                    upstream
                        .observations()
                        .note(table, location, authorization.as_ref());
                }
                None
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(chunks))
}

/// A table created or registered through floe, logged from the upstream's answer before that
/// answer goes back, so that the table's first commit through floe does not have to read it from
/// the upstream first. The answer is read whole (within `max_body_bytes`; a larger one streams
/// on and the table is left a hint) and passed on as the upstream sent it. This is the one
/// answer logged as a state rather than taken as a hint (see the module doc), and only under the
/// table's change lock while floe has no row for it and no commit naming it is pending: there is
/// then nothing logged that the state could be older than, and states the upstream made after
/// it are caught up from its metadata-log, as any others are.
/// Otherwise, or when the answer cannot be read or logged, the table is noted as a hint.
pub async fn log_created(
    catalog: &Catalog,
    wh: &Warehouse,
    upstream: &UpstreamCatalog,
    table: TableName,
    response: Response,
    authorization: Option<&HeaderValue>,
) -> Response {
    #[derive(Deserialize)]
    struct CreateAnswer {
        #[serde(rename = "metadata-location")]
        location: String,
        metadata: iceberg::spec::TableMetadata,
    }
    let (parts, body) = response.into_parts();
    let limit = upstream.max_body_bytes();
    let mut body = body.into_data_stream();
    let mut kept: Vec<Bytes> = Vec::new();
    let mut size = 0;
    while let Some(chunk) = body.next().await {
        // An answer larger than the limit, or one that breaks off, goes on streaming as it
        // would have without this (what was read first, then the rest); the table is a hint.
        let rest = match chunk {
            Ok(chunk) => {
                size += chunk.len();
                kept.push(chunk);
                if size <= limit {
                    continue;
                }
                body.boxed()
            }
            Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
        };
        upstream.observations().note(table, None, authorization);
        let read = futures::stream::iter(kept.into_iter().map(Ok));
        return Response::from_parts(parts, Body::from_stream(read.chain(rest)));
    }
    let bytes = kept.concat();
    let logged = match serde_json::from_slice::<CreateAnswer>(&bytes) {
        Ok(answer) => {
            let current = Current {
                location: answer.location,
                metadata: answer.metadata,
            };
            match log_first_state(catalog, wh, &table, &current).await {
                Ok(logged) => logged.then_some(current.location),
                Err(err) => {
                    tracing::debug!(warehouse = %wh.name, %table, error = %err.model().message,
                        "a created table is left to the observer");
                    None
                }
            }
        }
        Err(_) => None,
    };
    match logged {
        Some(location) => upstream.observations().found_logged(&table, &location),
        None => upstream.observations().note(table, None, authorization),
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Logs `current` as the first state of `table` (with the states its metadata-log names before
/// it) if floe has no row for the table and no commit naming it is pending; whether it did.
async fn log_first_state(
    catalog: &Catalog,
    wh: &Warehouse,
    table: &TableName,
    current: &Current,
) -> Result<bool, ApiError> {
    let mut tx = catalog.pool().begin().await.map_err(CatalogError::from)?;
    crate::db::catalog::lock_table_names(&mut tx, wh.id, &[table])
        .await
        .map_err(CatalogError::from)?;
    let known = db::get_table(&mut tx, wh.id, table)
        .await
        .map_err(CatalogError::from)?
        .is_some();
    if known
        || db::has_pending_intents(&mut tx, wh.id, table)
            .await
            .map_err(CatalogError::from)?
    {
        return Ok(false);
    }
    catch_up(catalog, wh, &mut tx, table, Some(current)).await?;
    tx.commit().await.map_err(CatalogError::from)?;
    catalog.log_wake().committed();
    Ok(true)
}

/// The observer tasks, one per upstream warehouse.
pub struct UpstreamObserver {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl UpstreamObserver {
    pub fn spawn(catalog: Arc<Catalog>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = catalog
            .warehouses()
            .filter(|wh| wh.upstream.is_some())
            .map(|wh| tokio::spawn(run(catalog.clone(), wh.name.clone(), stopped.clone())))
            .collect();
        Self { stop, tasks }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn run(catalog: Arc<Catalog>, warehouse: String, mut stop: watch::Receiver<bool>) {
    let Ok(wh) = catalog.warehouse(Some(&warehouse)) else {
        return;
    };
    let Some(upstream) = wh.upstream.clone() else {
        return;
    };
    let interval = upstream.poll_interval();
    let mut etags = HashMap::new();
    let mut next_poll = Instant::now();
    loop {
        for (table, hint) in upstream.observations().take() {
            if let Err(err) = look(&catalog, wh, &upstream, &table, hint).await {
                tracing::warn!(warehouse = %wh.name, %table, error = %err.message,
                    "could not catch up with an upstream table");
            }
        }
        if let Some(interval) = interval
            && Instant::now() >= next_poll
        {
            match db::prune_settled_intents(catalog.pool(), wh.id, SETTLED_INTENTS_KEPT_SECONDS)
                .await
            {
                Ok(0) => {}
                Ok(pruned) => {
                    tracing::debug!(warehouse = %wh.name, pruned, "settled intents pruned")
                }
                Err(err) => tracing::warn!(warehouse = %wh.name, %err,
                    "could not prune settled commit intents"),
            }
            match poll(&catalog, wh, &upstream, &mut etags).await {
                Ok(looked) => tracing::debug!(warehouse = %wh.name, looked, "polled the upstream"),
                Err(err) => tracing::warn!(warehouse = %wh.name, error = %err,
                    "could not poll the upstream catalog"),
            }
            next_poll = Instant::now() + interval;
        }
        let poll_due = async {
            match interval {
                Some(_) => tokio::time::sleep_until(next_poll).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = upstream.observations().wake.notified() => {}
            _ = poll_due => {}
            _ = stop.changed() => return,
        }
    }
}

/// Brings the table's log up to the upstream's state (see the module doc).
async fn look(
    catalog: &Catalog,
    wh: &Warehouse,
    upstream: &UpstreamCatalog,
    table: &TableName,
    hint: Hint,
) -> Result<(), ApiError> {
    // Checked once without the lock (a busy table's loads need not queue behind its commits),
    // and again under it.
    let location = hint.location.as_deref();
    let mut conn = catalog.pool().acquire().await.map_err(CatalogError::from)?;
    if already_logged(&mut conn, wh, table, location).await? {
        if let Some(location) = location {
            upstream.observations().found_logged(table, location);
        }
        return Ok(());
    }
    drop(conn);
    let mut tx = catalog.pool().begin().await.map_err(CatalogError::from)?;
    crate::db::catalog::lock_table_names(&mut tx, wh.id, &[table])
        .await
        .map_err(CatalogError::from)?;
    if already_logged(&mut tx, wh, table, location).await? {
        return Ok(());
    }
    let mut headers = HeaderMap::new();
    if let Some(authorization) = hint.authorization {
        headers.insert(header::AUTHORIZATION, authorization);
    }
    let current = upstream
        .current(table, &headers)
        .await
        .map_err(|e| e.to_api_error(upstream.warehouse(), upstream.url(), false))?;
    let row = crate::db::catalog::get_table(&mut tx, wh.id, &table.namespace, &table.name, false)
        .await
        .map_err(CatalogError::from)?;
    if let Some(row) = row.filter(|row| row.replica.is_some()) {
        // A replica floe keeps here changes only by replication (`upstream::replica`); a state
        // it did not make is divergence, refused at the replica's next change, never logged.
        let serving = current.as_ref().map(|c| c.location.as_str());
        if serving != Some(row.metadata_location.as_str()) {
            tracing::warn!(warehouse = %wh.name, %table, recorded = %row.metadata_location,
                serving = serving.unwrap_or("no table"),
                "a replica was changed at the upstream catalog directly: it has diverged");
        }
        return Ok(());
    }
    catch_up(catalog, wh, &mut tx, table, current.as_ref()).await?;
    tx.commit().await.map_err(CatalogError::from)?;
    catalog.log_wake().committed();
    if let Some(current) = &current {
        upstream
            .observations()
            .found_logged(table, &current.location);
    }
    Ok(())
}

/// Whether `location` is the state floe last logged for the table, with no commit pending.
async fn already_logged(
    conn: &mut sqlx::PgConnection,
    wh: &Warehouse,
    table: &TableName,
    location: Option<&str>,
) -> Result<bool, CatalogError> {
    let Some(location) = location else {
        return Ok(false);
    };
    let row = db::get_table(conn, wh.id, table).await?;
    Ok(row.is_some_and(|row| row.metadata_location == location)
        && !db::has_pending_intents(conn, wh.id, table).await?)
}

/// One visit of every table (see the module doc); returns how many were looked at.
async fn poll(
    catalog: &Catalog,
    wh: &Warehouse,
    upstream: &UpstreamCatalog,
    etags: &mut HashMap<TableName, HeaderValue>,
) -> Result<usize, UpstreamError> {
    let listed: HashSet<TableName> = listing::all_tables(upstream).await?.into_iter().collect();
    let mut looked = 0;
    for table in &listed {
        let mut headers = HeaderMap::new();
        if let Some(etag) = etags.get(table) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        let path = table_path(table).map_err(listing::invalid_name)?;
        let (status, answer_headers, body) = upstream
            .call(Method::GET, &path, &[], &headers, None)
            .await?;
        let location = match status {
            StatusCode::NOT_MODIFIED => continue,
            StatusCode::NOT_FOUND => None,
            status if status.is_success() => {
                match answer_headers.get(header::ETAG) {
                    Some(etag) => etags.insert(table.clone(), etag.clone()),
                    None => etags.remove(table),
                };
                #[derive(Deserialize)]
                struct LoadTable {
                    #[serde(rename = "metadata-location")]
                    location: String,
                }
                let answer: LoadTable = serde_json::from_slice(&body).map_err(|e| {
                    UpstreamError::InvalidAnswer(format!("loadTable of `{table}`: {e}"))
                })?;
                Some(answer.location)
            }
            status => {
                return Err(UpstreamError::InvalidAnswer(format!(
                    "loadTable of `{table}` answered {status}"
                )));
            }
        };
        looked += 1;
        let hint = Hint {
            location,
            authorization: None,
        };
        if let Err(err) = look(catalog, wh, upstream, table, hint).await {
            tracing::warn!(warehouse = %wh.name, %table, error = %err.message,
                "could not catch up with an upstream table");
        }
    }
    etags.retain(|table, _| listed.contains(table));
    // Tables floe has logged that the upstream no longer lists: looking confirms (a 404 under
    // the lock) before their drop is logged.
    let logged = db::list_tables(catalog.pool(), wh.id)
        .await
        .map_err(|e| UpstreamError::InvalidAnswer(format!("floe's database: {e}")))?;
    for table in logged.into_iter().filter(|t| !listed.contains(t)) {
        looked += 1;
        let hint = Hint {
            location: None,
            authorization: None,
        };
        if let Err(err) = look(catalog, wh, upstream, &table, hint).await {
            tracing::warn!(warehouse = %wh.name, %table, error = %err.message,
                "could not catch up with an upstream table");
        }
    }
    Ok(looked)
}

impl UpstreamCatalog {
    /// How often the observer polls the upstream (`None`: never).
    pub fn poll_interval(&self) -> Option<Duration> {
        (self.poll_interval_ms() > 0).then(|| Duration::from_millis(self.poll_interval_ms()))
    }
}
