//! Intercepted commits (commitTable, transactions/commit) of an upstream warehouse: every commit
//! the upstream acknowledges through floe is in floe's log exactly once, and no refused one.
//!
//! The protocol, per commit, under the change lock of every table it names (the advisory lock
//! builtin commits take, so commits through floe to one table are forwarded one at a time, in the
//! order they are logged). Steps 1 and 2 run only when a table has a pending intent or is one floe
//! has not logged yet; they commit on their own (a failed forward must not undo a settlement), the
//! locks are then taken again and held from step 3 to the end, and if the tables' rows or pending
//! intents changed in between, steps 1 and 2 run again:
//! 1. **Settle what is pending** for those tables (a crash, a timeout or a 5xx left an intent):
//!    the upstream's current metadata says whether the intent's commit landed (`history`): a
//!    state after the intent's `previous` that its updates produce from the state before it, or
//!    none.
//! 2. **Catch up**: states of the table floe has not logged (a table first seen, commits made
//!    directly at the upstream) are appended as `observe-table` entries, oldest first. For a
//!    table floe knows, the commit's own answer names them (its metadata-log), and they are
//!    logged before the commit in step 4.
//! 3. **Record the intent** (the request, the last known metadata location per table) in its own
//!    committed transaction, so that it is durable before the request leaves.
//! 4. **Forward**, and on the answer: 2xx appends the entries and settles the intent `done` in one
//!    transaction; a 4xx ErrorModel settles it `failed`; anything else leaves it pending, for
//!    step 1 of the next commit to the table, and answers CommitStateUnknownException.
//!
//! Why exactly once: an entry is appended only in the transaction that settles its pending
//! intent (`settle_intent` changes only a pending row, and the lock keeps two settlers apart), and
//! every intent is settled before its tables' next commit is forwarded. A crash before step 3's
//! commit forwards nothing; between 3 and 4's commit leaves the intent for step 1.
//!
//! The protocol runs in a task of its own, so a client that hangs up does not cancel it midway.

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use iceberg::TableUpdate;
use iceberg::spec::TableMetadata;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::client::UpstreamCatalog;
use super::errors::UpstreamError;
use super::forward::UpstreamPath;
use super::table_log::{self, Current, TableChanges, catch_up, log_landed, table_path};
use crate::catalog::{Catalog, Warehouse, write_rule};
use crate::db::upstream::{self as db, IntentTable, PendingIntent, UpstreamTableRow};
use crate::error::{CatalogError, CatalogResult};
use crate::http::errors::ApiError;
use crate::names::{NamespaceName, TableName};

/// How often a commit catches up with its tables before it gives up (each time, another
/// instance committed to them while this one's locks were released).
const MAX_CATCH_UP_ATTEMPTS: u32 = 5;

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

/// Runs the protocol of the module doc for one commit.
pub async fn intercept(
    catalog: &Catalog,
    wh: &Warehouse,
    upstream: &UpstreamCatalog,
    commit: InterceptedCommit,
) -> Result<CommitAnswer, ApiError> {
    let failed = |err: UpstreamError| err.to_api_error(upstream.warehouse(), upstream.url(), true);
    let names: Vec<&TableName> = commit.tables.iter().map(|t| &t.table).collect();
    // Steps 1 and 2 are committed before the intent is recorded (a later step that fails must
    // not undo a settlement), so the locks are taken again for step 4: if anything changed
    // while they were released (another instance's commit), catch up again.
    let mut caught_up: Option<Vec<Option<UpstreamTableRow>>> = None;
    let mut attempts = 0;
    let (mut tx, known) = loop {
        attempts += 1;
        if attempts > MAX_CATCH_UP_ATTEMPTS {
            return Err(CatalogError::Unavailable(format!(
                "the tables of this commit changed {MAX_CATCH_UP_ATTEMPTS} times while floe \
                 caught up with them; retry"
            ))
            .into());
        }
        let mut tx = catalog.pool().begin().await.map_err(CatalogError::from)?;
        crate::db::catalog::lock_table_names(&mut tx, wh.id, &names)
            .await
            .map_err(CatalogError::from)?;
        let mut rows = Vec::new();
        let mut pending = false;
        for table in &names {
            // A replica floe keeps in this upstream changes only by replication.
            let row = write_rule::table_for_write(&mut tx, wh.id, table, false).await?;
            rows.push(row.map(UpstreamTableRow::from));
            pending |= !db::pending_intents(&mut tx, wh.id, table)
                .await
                .map_err(CatalogError::from)?
                .is_empty();
        }
        // Nothing to settle and every table known: the states made past floe since the last
        // logged one are in the answer's metadata-log, logged before the commit (`log_landed`),
        // so the upstream is not asked first (that would double its work per commit).
        let known = rows.iter().all(Option::is_some);
        if !pending && (caught_up.as_ref() == Some(&rows) || (caught_up.is_none() && known)) {
            break (tx, rows);
        }
        let mut after = Vec::new();
        for table in &names {
            let current = upstream
                .current(table, &commit.headers)
                .await
                .map_err(failed)?;
            after.push(catch_up(catalog, wh, &mut tx, table, current.as_ref()).await?);
        }
        tx.commit().await.map_err(CatalogError::from)?;
        catalog.log_wake().committed();
        caught_up = Some(after);
    };
    // Step 3.
    let intent = PendingIntent {
        intent_id: Uuid::now_v7(),
        txn_group: Uuid::now_v7(),
        tables: commit
            .tables
            .iter()
            .zip(&known)
            .map(|(changes, row)| IntentTable {
                namespace: changes.table.namespace.levels().to_vec(),
                name: changes.table.name.clone(),
                previous: row.as_ref().map(|r| r.metadata_location.clone()),
                requirements: changes.requirements.clone(),
                updates: changes.updates.clone(),
            })
            .collect(),
        principal: commit.principal.clone(),
    };
    db::record_intent(catalog.pool(), wh.id, &intent)
        .await
        .map_err(CatalogError::from)?;
    // Step 4.
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
    if status.is_client_error() {
        if status == StatusCode::CONFLICT {
            crate::telemetry::record_commit(&wh.name, 0, true);
        }
        db::settle_intent(
            &mut tx,
            intent.intent_id,
            false,
            &format!("the upstream answered {status}"),
        )
        .await
        .map_err(CatalogError::from)?;
        tx.commit().await.map_err(CatalogError::from)?;
        return Ok(CommitAnswer {
            status,
            headers,
            body,
        });
    }
    if !status.is_success() {
        // Left pending: the next commit to these tables settles it from the upstream's state.
        return Err(failed(UpstreamError::InvalidAnswer(format!(
            "the commit answered {status}"
        ))));
    }
    let mut made = Vec::with_capacity(commit.tables.len());
    for (changes, row) in commit.tables.iter().zip(&known) {
        // commitTable's answer names the state it made; transactions/commit's 204 does not, so
        // the table is read back, and the state this commit made is the first after the one it
        // went out on that its updates produce (a commit made directly at the upstream since
        // would otherwise be taken for this one's; it is logged at the table's next catch-up).
        let current = match commit_answer(&body, commit.transaction) {
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
            &mut tx,
            changes,
            row.clone(),
            previous,
            &current,
            &intent,
        )
        .await?;
        made.push(current);
    }
    db::settle_intent(&mut tx, intent.intent_id, true, "acknowledged")
        .await
        .map_err(CatalogError::from)?;
    tx.commit().await.map_err(CatalogError::from)?;
    catalog.log_wake().committed();
    // Each table's next commit reads this state as its state before.
    for current in made {
        catalog.remember_metadata(&current.location, current.metadata);
    }
    crate::telemetry::record_commit(&wh.name, commit.tables.len(), false);
    Ok(CommitAnswer {
        status,
        headers,
        body,
    })
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
