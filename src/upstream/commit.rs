//! Intercepted commits (commitTable, transactions/commit) of an upstream warehouse: every commit
//! the upstream acknowledges through floe is in floe's log exactly once, and no refused one.
//!
//! The protocol, per commit, under the change lock of every table it names (the advisory lock
//! builtin commits take, so commits through floe to one table are forwarded one at a time, in the
//! order they are logged). The locks are held at session level by the connection the commit runs
//! on (`HeldLocks`), from the first statement to the settlement, so that each step can commit on
//! its own (migrations/0028, 0030), and everything is read under them:
//! 1. **Record the intent** (the request, the last known metadata location per table), in one
//!    statement that takes the locks, reads the tables' rows and commits, waiting for the WAL
//!    flush, so that the intent is durable before the request leaves. It records nothing, and
//!    keeps the locks, when a table is one clients may not write (a replica, or handed over:
//!    403), or has a pending intent, or has no row yet and the commit does not create it (a
//!    staged create's `assert-create`, which the upstream refuses if the table is there); then
//!    floe, still under the locks, first
//!    - **settles what is pending** for the tables (a crash, a timeout or a 5xx left an intent):
//!      the upstream's current metadata says whether the intent's commit landed (`history`): a
//!      state after the intent's `previous` that its updates produce from the state before it,
//!      or none;
//!    - **catches up**: states of a table floe has not logged (a table first seen, commits made
//!      directly at the upstream) are appended as `observe-table` entries, oldest first;
//!
//!    commits that on its own (a failed forward must not undo a settlement), and records the
//!    intent. For a table floe knows, the states made past floe since the last logged one are in
//!    the commit's answer (its metadata-log) and are logged before the commit in step 2, so the
//!    upstream is not asked first (that would double its work per commit).
//! 2. **Forward**, and on the answer: a 2xx or a 4xx ErrorModel goes back to the client at once,
//!    as the upstream sent it; then (`Settlement`) a 2xx appends the entries, settles the intent
//!    `done` and gives the locks back in one statement, its own transaction, and a 4xx settles it
//!    `failed` the same way. Anything else leaves it pending, for the next commit to the table
//!    to settle, and answers CommitStateUnknownException (the connection is closed, which gives
//!    the locks back).
//!
//! Two round trips to PostgreSQL when nothing is pending, one of them before the client's answer:
//! step 1's statement; step 2's follows the answer.
//!
//! Why exactly once: an entry is appended only in the transaction that settles its pending
//! intent (`settle_intent` changes only a pending row, and the lock keeps two settlers apart), and
//! every intent is settled before its tables' next commit is forwarded. A crash before step 1's
//! commit forwards nothing; between 1 and 2's commit leaves the intent for the next commit to
//! settle (and the session, with its locks, ends with floe's connection).
//!
//! Why answering before the entry is written is safe: what the client is told is the upstream's
//! own answer, about a commit the upstream has made durable (or refused), and floe's record of it,
//! the intent, is durable before the request left. From there the entry follows from the intent
//! and the upstream's state alone, whether the settlement or, after a crash, the table's next
//! commit writes it: the answer never runs ahead of what floe can log, it only runs ahead of the
//! writing. The client is also never told a failure about a commit the upstream made because
//! floe's own bookkeeping failed after it. What the answer does not promise is that floe's log
//! already shows the entry: a reader of the log sees it once the settlement commits (within
//! milliseconds; the table's next commit through floe waits for it, as it waits for the locks).
//!
//! The protocol runs in a task of its own, so a client that hangs up does not cancel it midway;
//! a graceful stop waits for it (`UpstreamCatalog::settled`).

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use iceberg::TableUpdate;
use iceberg::spec::TableMetadata;
use serde::Deserialize;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, PgConnection, Postgres};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::client::UpstreamCatalog;
use super::errors::UpstreamError;
use super::forward::UpstreamPath;
use super::table_log::{self, Current, LogBatch, TableChanges, catch_up, log_landed, table_path};
use crate::catalog::{Catalog, Warehouse, write_rule};
use crate::db::upstream::{self as db, IntentTable, Opened, PendingIntent, UpstreamTableRow};
use crate::error::{CatalogError, CatalogResult};
use crate::http::errors::ApiError;
use crate::names::{NamespaceName, TableName};

const TRANSACTION_ROUTE: &str = "/v1/{prefix}/transactions/commit";

#[derive(Deserialize)]
struct Identifier {
    namespace: Vec<String>,
    name: String,
}

#[derive(Deserialize)]
struct CommitTableRequest {
    identifier: Option<Identifier>,
    #[serde(default)]
    requirements: Value,
    #[serde(default)]
    updates: Value,
}

#[derive(Deserialize)]
struct CommitTransactionRequest {
    #[serde(rename = "table-changes")]
    table_changes: Vec<CommitTableRequest>,
}

/// A commit to forward: commitTable (`table` from the path) or transactions/commit.
pub struct InterceptedCommit {
    pub tables: Vec<TableChanges>,
    /// Whether this is transactions/commit (its 204 answer carries no metadata).
    pub transaction: bool,
    pub body: Bytes,
    pub headers: HeaderMap,
    pub principal: String,
}

impl InterceptedCommit {
    /// Parses the request as the spec defines it; a body that is not one is a 400 and nothing
    /// is forwarded.
    pub fn parse(
        path_table: Option<TableName>,
        body: Bytes,
        headers: HeaderMap,
        principal: String,
    ) -> CatalogResult<Self> {
        let bad = |e: serde_json::Error| CatalogError::BadRequest(format!("invalid commit: {e}"));
        let (requests, transaction) = match &path_table {
            Some(_) => (
                vec![serde_json::from_slice::<CommitTableRequest>(&body).map_err(bad)?],
                false,
            ),
            None => (
                serde_json::from_slice::<CommitTransactionRequest>(&body)
                    .map_err(bad)?
                    .table_changes,
                true,
            ),
        };
        let mut tables = Vec::new();
        for request in requests {
            let table = match (&path_table, request.identifier) {
                (Some(table), _) => table.clone(),
                (None, Some(id)) => TableName::new(NamespaceName::new(id.namespace)?, id.name)?,
                (None, None) => {
                    return Err(CatalogError::BadRequest(
                        "every table change of a transaction needs its identifier".to_string(),
                    ));
                }
            };
            // The updates must be Iceberg table updates: the resolver replays them.
            serde_json::from_value::<Vec<TableUpdate>>(request.updates.clone()).map_err(bad)?;
            if tables.iter().any(|t: &TableChanges| t.table == table) {
                return Err(CatalogError::BadRequest(format!(
                    "table `{table}` appears twice in one transaction"
                )));
            }
            tables.push(TableChanges {
                table,
                requirements: request.requirements,
                updates: request.updates,
            });
        }
        if tables.is_empty() {
            return Err(CatalogError::BadRequest(
                "a transaction with no table changes".to_string(),
            ));
        }
        Ok(Self {
            tables,
            transaction,
            body,
            headers,
            principal,
        })
    }
}

/// The answer to give the client.
pub struct CommitAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Runs the protocol of the module doc for one commit, in a task of its own that the upstream's
/// settlements track (`UpstreamCatalog::settlements`; a client that hangs up cancels no step, and
/// a graceful stop waits for it): answers as soon as the client's answer is known (the upstream's,
/// the intent durable), while the task goes on to settle the intent.
pub async fn intercept(
    catalog: Arc<Catalog>,
    warehouse: Option<String>,
    upstream: Arc<UpstreamCatalog>,
    commit: InterceptedCommit,
) -> Result<CommitAnswer, ApiError> {
    let (answered, answer) = oneshot::channel();
    let settlements = upstream.settlements().clone();
    settlements.spawn(async move {
        let wh = match catalog.warehouse(warehouse.as_deref()) {
            Ok(wh) => wh,
            Err(e) => {
                let _ = answered.send(Err(e.into()));
                return;
            }
        };
        match forward(&catalog, wh, &upstream, commit).await {
            Ok((reply, settlement)) => {
                let _ = answered.send(Ok(reply));
                // The request's task, woken by the answer, runs next on this thread (tokio runs
                // the task a task wakes there next): it is let go first, not after the
                // settlement's own work.
                tokio::task::yield_now().await;
                if let Err(e) = settlement.settle(&catalog, wh, &upstream).await {
                    // Left pending: the table's next commit, or the observer's poll, settles it.
                    tracing::warn!(warehouse = %wh.name, error = %e.message,
                        "an answered commit was left pending for floe to settle later");
                }
            }
            Err(e) => {
                let _ = answered.send(Err(e));
            }
        }
    });
    answer.await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "CommitStateUnknownException",
            "the commit's task ended before it had an answer",
        )
    })?
}

/// Steps 1 and 2 up to the upstream's answer: the answer to give the client, and what is left to
/// settle. A forward that brings no ErrorModel or success back is an error, its intent left
/// pending (and the connection, with the locks, closed).
async fn forward(
    catalog: &Catalog,
    wh: &Warehouse,
    upstream: &UpstreamCatalog,
    commit: InterceptedCommit,
) -> Result<(CommitAnswer, Settlement), ApiError> {
    let failed = |err| commit_failed(upstream, err);
    let names: Vec<&TableName> = commit.tables.iter().map(|t| &t.table).collect();
    let conn = catalog.pool().acquire().await.map_err(CatalogError::from)?;
    let mut locks = HeldLocks {
        conn: Some(conn),
        locked: false,
    };
    let mut intent = PendingIntent {
        intent_id: Uuid::now_v7(),
        txn_group: Uuid::now_v7(),
        tables: commit
            .tables
            .iter()
            .map(|changes| IntentTable {
                namespace: changes.table.namespace.levels().to_vec(),
                name: changes.table.name.clone(),
                // Set from the row read under the locks.
                previous: None,
                requirements: changes.requirements.clone(),
                updates: changes.updates.clone(),
            })
            .collect(),
        principal: commit.principal.clone(),
    };
    // Step 1, settling and catching up first where a table needs it, all under the locks the
    // first call takes: what the catch-up leaves is what the intent is recorded against.
    let mut caught_up = false;
    let known = loop {
        // From this call on the connection holds the locks, whatever it answers.
        let locked = std::mem::replace(&mut locks.locked, true);
        let opened = db::open_commit(locks.conn(), wh.id, &mut intent, locked, caught_up)
            .await
            .map_err(CatalogError::from)?;
        match opened {
            Opened::Recorded(rows) => break rows,
            Opened::Refused => return Err(refusal(locks.conn(), wh, &names).await),
            Opened::Unknown | Opened::Pending if !caught_up => {
                let mut tx = locks.conn().begin().await.map_err(CatalogError::from)?;
                for table in &names {
                    let current = upstream
                        .current(table, &commit.headers)
                        .await
                        .map_err(failed)?;
                    catch_up(catalog, wh, &mut tx, table, current.as_ref()).await?;
                }
                tx.commit().await.map_err(CatalogError::from)?;
                catalog.log_wake().committed();
                caught_up = true;
            }
            // The catch-up settled every intent naming the tables, and no other commit to them
            // can start while the locks are held.
            Opened::Unknown | Opened::Pending => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    "a commit to these tables was still pending after floe settled them; retry",
                ));
            }
        }
    };
    // Step 2.
    let path = if commit.transaction {
        UpstreamPath::new(TRANSACTION_ROUTE, &[])?
    } else {
        table_path(&commit.tables[0].table)?
    };
    let (status, headers, body) = upstream
        .call(
            Method::POST,
            &path,
            &[],
            &commit.headers,
            Some(commit.body.clone()),
        )
        .await
        .map_err(failed)?;
    if !status.is_success() && !status.is_client_error() {
        // Left pending: the next commit to these tables settles it from the upstream's state.
        return Err(failed(UpstreamError::InvalidAnswer(format!(
            "the commit answered {status}"
        ))));
    }
    if status == StatusCode::CONFLICT {
        crate::telemetry::record_commit(&wh.name, 0, true);
    }
    let settlement = Settlement {
        locks,
        intent,
        known,
        status,
        body: body.clone(),
        commit,
    };
    Ok((
        CommitAnswer {
            status,
            headers,
            body,
        },
        settlement,
    ))
}

/// The rest of step 2 once the client has its answer: the commit's entries appended and its
/// intent settled `done` (a 2xx), or only settled `failed` (a 4xx ErrorModel), the locks given
/// back, in one statement. Should it not get there, the intent stays pending and the connection
/// is closed (`HeldLocks`).
struct Settlement {
    locks: HeldLocks,
    intent: PendingIntent,
    /// The tables' rows the intent was recorded against, in its order.
    known: Vec<Option<UpstreamTableRow>>,
    status: StatusCode,
    body: Bytes,
    commit: InterceptedCommit,
}

impl Settlement {
    async fn settle(
        mut self,
        catalog: &Catalog,
        wh: &Warehouse,
        upstream: &UpstreamCatalog,
    ) -> Result<(), ApiError> {
        let failed = |err| commit_failed(upstream, err);
        let (commit, intent) = (&self.commit, &self.intent);
        let names: Vec<&TableName> = commit.tables.iter().map(|t| &t.table).collect();
        if self.status.is_client_error() {
            let outcome = format!("the upstream answered {}", self.status);
            let settled = db::settle_commit(
                self.locks.conn(),
                wh.id,
                intent,
                (false, &outcome),
                &[],
                &[],
            )
            .await
            .map_err(CatalogError::from)?;
            table_log::moved_is_a_failure(settled, names.iter().copied())?;
            self.locks.given_back();
            return Ok(());
        }
        let mut made = Vec::with_capacity(commit.tables.len());
        let mut batch = LogBatch::default();
        for (changes, row) in commit.tables.iter().zip(&self.known) {
            // commitTable's answer names the state it made; transactions/commit's 204 does not,
            // so the table is read back, and the state this commit made is the first after the
            // one it went out on that its updates produce (a commit made directly at the
            // upstream since would otherwise be taken for this one's; it is logged at the
            // table's next catch-up).
            let current = match commit_answer(&self.body, commit.transaction) {
                Some(current) => current,
                None => {
                    let read = upstream
                        .current(&changes.table, &commit.headers)
                        .await
                        .map_err(failed)?
                        .ok_or_else(|| {
                            failed(UpstreamError::InvalidAnswer(format!(
                                "table `{}` is gone after its commit",
                                changes.table
                            )))
                        })?;
                    let made = match row {
                        Some(known) => {
                            table_log::landed_at(
                                catalog,
                                wh,
                                &known.metadata_location,
                                &changes.updates,
                                &read,
                            )
                            .await?
                        }
                        None => None,
                    };
                    match made {
                        Some((_, location)) if location != read.location => Current {
                            metadata: catalog.load_metadata(wh, &location).await?.parsed.clone(),
                            location,
                        },
                        _ => read,
                    }
                }
            };
            let previous = row.as_ref().map(|r| r.metadata_location.as_str());
            log_landed(
                catalog,
                wh,
                &mut batch,
                changes,
                row.clone(),
                previous,
                &current,
                intent,
            )
            .await?;
            made.push(current);
        }
        let conn = self.locks.conn();
        let (writes, entries) = batch.planned(conn, wh).await?;
        let settled = db::settle_commit(
            conn,
            wh.id,
            intent,
            (true, "acknowledged"),
            &writes,
            entries,
        )
        .await
        .map_err(CatalogError::from)?;
        table_log::moved_is_a_failure(settled, names.iter().copied())?;
        self.locks.given_back();
        catalog.log_wake().committed();
        // Each table's next commit reads this state as its state before.
        for current in made {
            catalog.remember_metadata(&current.location, current.metadata);
        }
        crate::telemetry::record_commit(&wh.name, commit.tables.len(), false);
        Ok(())
    }
}

/// The ErrorModel for a commit whose exchange with the upstream failed (its outcome unknown
/// where the spec says so: `UpstreamError::to_api_error`).
fn commit_failed(upstream: &UpstreamCatalog, err: UpstreamError) -> ApiError {
    err.to_api_error(upstream.warehouse(), upstream.url(), true)
}

/// The 403 for a commit naming a table clients may not write, in the write rule's own words
/// (`write_rule`), read on the connection that holds the tables' locks.
async fn refusal(conn: &mut PgConnection, wh: &Warehouse, names: &[&TableName]) -> ApiError {
    for table in names {
        if let Err(refused) = write_rule::table_for_write(conn, wh.id, table, false).await {
            return refused.into();
        }
    }
    // A handover that ended between the two reads.
    CatalogError::CommitFailed(format!(
        "table `{}` was being handed over when floe read it; retry",
        table_log::table_list(names.iter().copied())
    ))
    .into()
}

/// The connection a commit runs on, which holds its tables' change locks at session level from
/// the intent's record to its settlement. Given back to the pool only once the settlement gave
/// the locks back; on any other way out (an error, a lost answer, a panic) the connection is
/// closed, and PostgreSQL releases the locks with the session: a pooled connection never
/// carries a lock to another request.
struct HeldLocks {
    conn: Option<PoolConnection<Postgres>>,
    /// Whether the connection may hold the locks (it asked for them).
    locked: bool,
}

impl HeldLocks {
    fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("the connection is held until given back")
    }

    /// The settlement gave the locks back: the connection may serve another request.
    fn given_back(&mut self) {
        self.locked = false;
    }
}

impl Drop for HeldLocks {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.locked
        {
            // The locks go with the connection (dropping it closes its socket).
            drop(conn.detach());
        }
    }
}

/// The state a commitTable answer (CommitTableResponse) names.
fn commit_answer(body: &[u8], transaction: bool) -> Option<Current> {
    #[derive(Deserialize)]
    struct CommitTableResponse {
        #[serde(rename = "metadata-location")]
        location: String,
        metadata: TableMetadata,
    }
    if transaction {
        return None;
    }
    let answer: CommitTableResponse = serde_json::from_slice(body).ok()?;
    Some(Current {
        location: answer.location,
        metadata: answer.metadata,
    })
}
