//! What floe logs of an upstream warehouse's tables: the states it reads from the upstream, and
//! the commits it forwarded, appended to the update log in the order the upstream made them.
//!
//! Both `commit` (before and after forwarding a commit) and `observer` (after a loadTable, a
//! create, a drop or a rename passes through, and on its poll) bring a table's log up to the
//! upstream's state with [`catch_up`], always under the table's change lock and with the state
//! the upstream serves *now* (read under that lock), for two reasons:
//!
//! - **The log never goes back.** The state caught up to is read after the lock is taken, and no
//!   floe commit to the table can be in flight while it is held (commits hold it from forwarding
//!   to logging), so that state is at least as new as the last logged one; an answer a client saw
//!   earlier is only ever a hint to look. The states in between are those the new state's
//!   metadata-log lists after the logged one (`history::states_after`), or, when the log no
//!   longer names it (`previous-versions-max` dropped it), the new state alone.
//! - **A pending intent is settled from a current state.** Whether a commit whose answer was lost
//!   landed is decided from the upstream's state after it, never from an older answer.
//!
//! A table the upstream no longer serves is logged as dropped (`drop-table`, principal
//! `upstream`) and forgotten, so a table made again under that name starts a new history.

use axum::http::{HeaderMap, Method, StatusCode};
use iceberg::TableUpdate;
use iceberg::spec::TableMetadata;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::client::UpstreamCatalog;
use super::errors::UpstreamError;
use super::forward::UpstreamPath;
use super::{diff, history};
use crate::catalog::{Catalog, Warehouse, paths};
use crate::db::catalog::TablePointer;
use crate::db::table_commit::{self, Committed, RowChange, TableWrite};
use crate::db::upstream::{self as db, PendingIntent, UpstreamTableRow};
use crate::error::{CatalogError, CatalogResult};
use crate::http::errors::ApiError;
use crate::log::{self, EntryKind, NewEntry, TableVersionRef};
use crate::names::TableName;

const TABLE_ROUTE: &str = "/v1/{prefix}/namespaces/{namespace}/tables/{table}";

/// One table's part of a commit, as the client sent it.
#[derive(Debug, Clone)]
pub struct TableChanges {
    pub table: TableName,
    pub requirements: Value,
    pub updates: Value,
}

/// The upstream path of a table's endpoint (loadTable, commitTable).
pub(super) fn table_path(table: &TableName) -> CatalogResult<UpstreamPath> {
    let namespace = table.namespace.levels().join("\u{1f}");
    UpstreamPath::new(
        TABLE_ROUTE,
        &[("namespace", &namespace), ("table", &table.name)],
    )
}

/// A table as the upstream serves it now.
pub(super) struct Current {
    pub(super) location: String,
    pub(super) metadata: TableMetadata,
}

impl UpstreamCatalog {
    /// loadTable at the upstream; `None` when it has no such table.
    pub(super) async fn current(
        &self,
        table: &TableName,
        headers: &HeaderMap,
    ) -> Result<Option<Current>, UpstreamError> {
        let path = table_path(table).map_err(|e| UpstreamError::InvalidAnswer(e.to_string()))?;
        let (status, _, body) = self.call(Method::GET, &path, &[], headers, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(UpstreamError::InvalidAnswer(format!(
                "loadTable answered {status}"
            )));
        }
        #[derive(Deserialize)]
        struct LoadTable {
            #[serde(rename = "metadata-location")]
            location: String,
            metadata: TableMetadata,
        }
        let answer: LoadTable = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::InvalidAnswer(format!("loadTable: {e}")))?;
        Ok(Some(Current {
            location: answer.location,
            metadata: answer.metadata,
        }))
    }
}

/// Brings one table's log up to the upstream's `current` state, under the table's change lock (a
/// commit's first step where a table needs it, and the observer): settles its pending intents
/// and logs the states floe has not; returns the table's row as logged (`None`: the upstream has
/// no such table).
pub(super) async fn catch_up(
    catalog: &Catalog,
    wh: &Warehouse,
    conn: &mut PgConnection,
    table: &TableName,
    current: Option<&Current>,
) -> Result<Option<UpstreamTableRow>, ApiError> {
    let mut row = db::get_table(conn, wh.id, table)
        .await
        .map_err(CatalogError::from)?;
    let mut batch = LogBatch::default();
    for intent in db::pending_intents(conn, wh.id, table)
        .await
        .map_err(CatalogError::from)?
    {
        let mine = intent
            .tables
            .iter()
            .find(|t| t.namespace == table.namespace.levels() && t.name == table.name)
            .cloned();
        let landed = match (&mine, current, &row) {
            (Some(part), Some(current), Some(known)) if part.previous.is_some() => {
                landed_at(
                    catalog,
                    wh,
                    &known.metadata_location,
                    &part.updates,
                    current,
                )
                .await?
            }
            _ => None,
        };
        match (landed, mine) {
            (Some((missed, location)), Some(part)) => {
                // Commits made past floe before this one landed come first, as they did there.
                for state in &missed {
                    row = Some(observe(catalog, wh, &mut batch, table, row, state).await?);
                }
                let changes = TableChanges {
                    table: table.clone(),
                    requirements: part.requirements.clone(),
                    updates: part.updates.clone(),
                };
                let next = catalog.load_metadata(wh, &location).await?;
                let state = Current {
                    location,
                    metadata: next.parsed.clone(),
                };
                let previous = row.as_ref().map(|r| r.metadata_location.clone());
                row = Some(
                    append_commit(
                        catalog,
                        wh,
                        &mut batch,
                        &changes,
                        row.clone(),
                        previous.as_deref(),
                        &state,
                        &intent,
                    )
                    .await?,
                );
                db::settle_intent(conn, intent.intent_id, true, "found at the upstream")
                    .await
                    .map_err(CatalogError::from)?;
            }
            _ => {
                db::settle_intent(conn, intent.intent_id, false, "not at the upstream")
                    .await
                    .map_err(CatalogError::from)?;
            }
        }
    }
    let Some(current) = current else {
        // The drop comes after what the intents made.
        batch.write(conn, wh).await?;
        if let Some(gone) = row {
            log_dropped(catalog, wh, conn, table, gone).await?;
        }
        return Ok(None);
    };
    let after = match &row {
        Some(known) => history::states_after(
            &known.metadata_location,
            &current.location,
            &current.metadata,
        )
        .unwrap_or_else(|| vec![current.location.clone()]),
        // A table floe has not seen: its history as far back as the metadata-log goes.
        None => history::all_states(&current.location, &current.metadata),
    };
    for location in after {
        row = Some(observe(catalog, wh, &mut batch, table, row, &location).await?);
    }
    batch.write(conn, wh).await?;
    Ok(row)
}

/// Where a commit landed: the first state after `known` (the state floe last logged, which the
/// commit was forwarded on) that its `updates` produce from the state before it, with
/// the states before that one (commits made past floe in between); `None` when no state after
/// `known` is its work, or `known` is no longer in the upstream's metadata-log.
pub(super) async fn landed_at(
    catalog: &Catalog,
    wh: &Warehouse,
    known: &str,
    updates: &Value,
    current: &Current,
) -> Result<Option<(Vec<String>, String)>, ApiError> {
    let Some(after) = history::states_after(known, &current.location, &current.metadata) else {
        return Ok(None);
    };
    let Ok(updates) = serde_json::from_value::<Vec<TableUpdate>>(updates.clone()) else {
        return Ok(None);
    };
    let mut before_location = known.to_string();
    let mut before = catalog.load_metadata(wh, known).await?;
    for (i, location) in after.iter().enumerate() {
        paths::under_root(wh, "metadata location", location)?;
        let next = catalog.load_metadata(wh, location).await?;
        if history::produced_by(
            &before.parsed,
            &before_location,
            updates.clone(),
            &next.parsed,
        ) {
            return Ok(Some((after[..i].to_vec(), location.clone())));
        }
        before_location = location.clone();
        before = next;
    }
    Ok(None)
}

/// Logs the upstream's state at `location` as an `observe-table` entry.
async fn observe(
    catalog: &Catalog,
    wh: &Warehouse,
    batch: &mut LogBatch,
    table: &TableName,
    row: Option<UpstreamTableRow>,
    location: &str,
) -> Result<UpstreamTableRow, ApiError> {
    paths::under_root(wh, "metadata location", location)?;
    let metadata = catalog.load_metadata(wh, location).await?;
    let next = next_row(row.as_ref(), metadata.parsed.uuid(), location);
    // A previous file the upstream has since deleted leaves the changes unknown (the entry still
    // carries the whole metadata).
    let (changes, details) = match changes_since(catalog, wh, row.as_ref(), &metadata.parsed).await
    {
        Ok(changes) => (changes, json!({})),
        Err(unknown) => (Vec::new(), json!({ "changes-unknown": unknown })),
    };
    let mut entry = table_entry(catalog, wh, table, EntryKind::ObserveTable, &next);
    entry.changes = Value::Array(changes);
    entry.metadata = Some(serde_json::to_value(&metadata.parsed).map_err(CatalogError::Encoding)?);
    entry.details = details;
    entry.previous_metadata_location = row.map(|r| r.metadata_location);
    entry.new_metadata_location = Some(location.to_string());
    batch.push(table, entry, &next, metadata.parsed.location());
    Ok(next)
}

/// Logs that the upstream no longer serves `table` and forgets it.
async fn log_dropped(
    catalog: &Catalog,
    wh: &Warehouse,
    conn: &mut PgConnection,
    table: &TableName,
    gone: UpstreamTableRow,
) -> Result<(), ApiError> {
    let version = UpstreamTableRow {
        version: gone.version + 1,
        ..gone.clone()
    };
    let mut entry = table_entry(catalog, wh, table, EntryKind::DropTable, &version);
    // Whether the upstream purged the files is not known; floe's replicas keep theirs.
    entry.details = json!({ "purge": false, "observed": true });
    entry.previous_metadata_location = Some(gone.metadata_location);
    log::append(conn, &[entry])
        .await
        .map_err(CatalogError::from)?;
    // Its row is an `iceberg_table` row like a builtin table's (migrations/0019).
    crate::db::catalog::delete_table(conn, gone.table_id)
        .await
        .map_err(CatalogError::from)?;
    Ok(())
}

/// The commit landed at `current`: logs the states before it that floe missed, then the commit.
#[allow(clippy::too_many_arguments)]
pub(super) async fn log_landed(
    catalog: &Catalog,
    wh: &Warehouse,
    batch: &mut LogBatch,
    changes: &TableChanges,
    mut row: Option<UpstreamTableRow>,
    previous: Option<&str>,
    current: &Current,
    intent: &PendingIntent,
) -> Result<(), ApiError> {
    let replaced = current
        .metadata
        .metadata_log()
        .last()
        .map(|m| m.metadata_file.clone());
    if let (Some(replaced), Some(previous)) = (&replaced, previous)
        && replaced != previous
    {
        for location in history::states_after(
            previous,
            replaced,
            &catalog.load_metadata(wh, replaced).await?.parsed,
        )
        .unwrap_or_else(|| vec![replaced.clone()])
        {
            row = Some(observe(catalog, wh, batch, &changes.table, row, &location).await?);
        }
    }
    let before = row.as_ref().map(|r| r.metadata_location.clone());
    append_commit(
        catalog,
        wh,
        batch,
        changes,
        row,
        before.as_deref(),
        current,
        intent,
    )
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn append_commit(
    catalog: &Catalog,
    wh: &Warehouse,
    batch: &mut LogBatch,
    changes: &TableChanges,
    row: Option<UpstreamTableRow>,
    previous: Option<&str>,
    current: &Current,
    intent: &PendingIntent,
) -> Result<UpstreamTableRow, ApiError> {
    paths::under_root(wh, "metadata location", &current.location)?;
    let created = row.is_none();
    let next = next_row(row.as_ref(), current.metadata.uuid(), &current.location);
    let kind = if created {
        EntryKind::CreateTable
    } else {
        EntryKind::CommitTable
    };
    let mut entry = table_entry(catalog, wh, &changes.table, kind, &next);
    entry.txn_group = intent.txn_group;
    if intent.tables.len() > 1 {
        // One transaction's tables, as the builtin catalog marks them (`log::GROUP_SIZE_DETAIL`).
        entry.details[log::GROUP_SIZE_DETAIL] = json!(intent.tables.len());
    }
    entry.principal = intent.principal.clone();
    // As the builtin catalog logs a commit: the changes it made, canonical (`diff`), or the
    // client's updates when the state before cannot be read any more.
    entry.changes = match changes_since(catalog, wh, row.as_ref(), &current.metadata).await {
        Ok(derived) => Value::Array(derived),
        Err(_) => changes.updates.clone(),
    };
    entry.requirements = changes.requirements.clone();
    entry.metadata = created
        .then(|| serde_json::to_value(&current.metadata))
        .transpose()
        .map_err(CatalogError::Encoding)?;
    entry.previous_metadata_location = previous.map(str::to_string);
    entry.new_metadata_location = Some(current.location.clone());
    batch.push(&changes.table, entry, &next, current.metadata.location());
    Ok(next)
}

/// An entry of `table` at `version` (its ids and version number), by the upstream, in its own
/// transaction group, with nothing else said: the callers fill in what their kind says.
fn table_entry(
    catalog: &Catalog,
    wh: &Warehouse,
    table: &TableName,
    kind: EntryKind,
    version: &UpstreamTableRow,
) -> NewEntry {
    NewEntry {
        warehouse_id: wh.id,
        txn_group: Uuid::now_v7(),
        kind,
        namespace: table.namespace.levels().to_vec(),
        table: Some(TableVersionRef {
            table_id: version.table_id,
            table_uuid: version.table_uuid,
            name: table.name.clone(),
            version: version.version,
        }),
        changes: json!([]),
        requirements: json!([]),
        metadata: None,
        details: json!({}),
        principal: "upstream".to_string(),
        origin_region: catalog.region().to_string(),
        previous_metadata_location: None,
        new_metadata_location: None,
    }
}

/// States of upstream tables to log, in order: each an entry, and its table's row moved to
/// the state's version (made at its first, version 1). They are written together, by the one
/// writer of table rows and their entries (`table_commit`), in one statement: the row moves
/// only from the version before, so a batch planned from a row that has since moved writes
/// nothing.
#[derive(Default)]
pub(super) struct LogBatch {
    rows: Vec<PlannedRow>,
    entries: Vec<NewEntry>,
}

/// A table's row as one state of a [`LogBatch`] leaves it.
struct PlannedRow {
    table: TableName,
    row: UpstreamTableRow,
    /// The table's location, as the state's metadata says.
    location: String,
    /// For a new row (version 1), its namespace's row, made before the batch is written.
    namespace_id: Option<Uuid>,
}

impl LogBatch {
    fn push(&mut self, table: &TableName, entry: NewEntry, row: &UpstreamTableRow, location: &str) {
        self.rows.push(PlannedRow {
            table: table.clone(),
            row: row.clone(),
            location: location.to_string(),
            namespace_id: None,
        });
        self.entries.push(entry);
    }

    /// The rows to write and their entries, the namespace rows of new tables made first (with
    /// nothing logged: an upstream's namespaces are its own).
    pub(super) async fn planned(
        &mut self,
        conn: &mut PgConnection,
        wh: &Warehouse,
    ) -> Result<(Vec<TableWrite<'_>>, &[NewEntry]), ApiError> {
        for planned in &mut self.rows {
            if planned.row.version == 1 && planned.namespace_id.is_none() {
                planned.namespace_id = Some(
                    db::ensure_namespace(conn, wh.id, &planned.table.namespace)
                        .await
                        .map_err(CatalogError::from)?,
                );
            }
        }
        let writes = self
            .rows
            .iter()
            .map(|planned| {
                let pointer = TablePointer {
                    table_uuid: planned.row.table_uuid,
                    metadata_location: &planned.row.metadata_location,
                    location: &planned.location,
                };
                let change = match planned.namespace_id {
                    Some(namespace_id) => RowChange::Create {
                        namespace_id,
                        pointer,
                    },
                    None => RowChange::Swap {
                        expected_version: planned.row.version - 1,
                        pointer,
                    },
                };
                TableWrite {
                    table: &planned.table,
                    table_id: planned.row.table_id,
                    change,
                }
            })
            .collect();
        Ok((writes, &self.entries))
    }

    /// Writes the batch in the caller's transaction, which holds the tables' change locks.
    async fn write(&mut self, conn: &mut PgConnection, wh: &Warehouse) -> Result<(), ApiError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let (writes, entries) = self.planned(conn, wh).await?;
        let committed = table_commit::commit_tables(conn, wh.id, &writes, entries)
            .await
            .map_err(CatalogError::from)?;
        drop(writes);
        moved_is_a_failure(committed, self.rows.iter().map(|p| &p.table))?;
        self.rows.clear();
        self.entries.clear();
        Ok(())
    }
}

/// A batch's write that found a row moved: the caller holds the tables' change locks, so only a
/// row of another kind (a replica, which the observer and commits leave alone) can be in the way.
pub(super) fn moved_is_a_failure<'a>(
    committed: Committed,
    tables: impl IntoIterator<Item = &'a TableName>,
) -> Result<(), ApiError> {
    match committed {
        Committed::Done => Ok(()),
        Committed::Moved => Err(CatalogError::CommitFailed(format!(
            "table `{}` changed in floe's catalog while its upstream state was logged; retry",
            table_list(tables)
        ))
        .into()),
    }
}

/// Tables' names for a message, as `a`, `b` (inside the message's own backquotes), each once
/// in a row.
pub(super) fn table_list<'a>(tables: impl IntoIterator<Item = &'a TableName>) -> String {
    let mut names: Vec<String> = tables.into_iter().map(ToString::to_string).collect();
    names.dedup();
    names.join("`, `")
}

/// The changes from the logged state `row` (`None`: no table yet) to `after`; `Err` says why
/// they cannot be known (the file of the logged state is unreadable).
async fn changes_since(
    catalog: &Catalog,
    wh: &Warehouse,
    row: Option<&UpstreamTableRow>,
    after: &TableMetadata,
) -> Result<Vec<Value>, String> {
    let Some(known) = row else {
        return Ok(diff::changes_between(None, after));
    };
    let before = catalog
        .load_metadata(wh, &known.metadata_location)
        .await
        .map_err(|e| format!("the previous metadata is unreadable: {e}"))?;
    Ok(diff::changes_between(Some(&before.parsed), after))
}

fn next_row(row: Option<&UpstreamTableRow>, table_uuid: Uuid, location: &str) -> UpstreamTableRow {
    UpstreamTableRow {
        table_id: row.map_or_else(Uuid::now_v7, |r| r.table_id),
        table_uuid,
        version: row.map_or(1, |r| r.version + 1),
        metadata_location: location.to_string(),
    }
}
