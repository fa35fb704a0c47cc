//! The commit path: commitTable and multi-table transactions, all or nothing.
//!
//! Read each table's row, check each requirement, apply the updates with iceberg's
//! `TableMetadataBuilder`, write the new metadata files (durably), then one statement that swaps
//! the pointers of rows still at the versions read, appends the log entries and commits
//! (`db::table_commit`: two round trips to PostgreSQL in all); then wake the log's readers
//! (`log::wake`). A row that moved on in between fails the statement as a whole: the attempt's
//! files are removed and the commit is planned again from what is read then, its requirements
//! checked again, so nothing planned against a stale state is committed. Only another instance
//! can move a row under a commit (this instance's commits to a table queue in `table_locks`), and
//! the retries take the tables' change locks before they read, so a commit is not starved.
//!
//! The change locks are taken before any write (`db::catalog::lock_table_names`), so a table's log
//! entries stay in version order along the log with no lock common to all tables. A statement
//! that fails with a database error wrote nothing; one whose outcome is unknown (the connection
//! lost) keeps its files and answers "state unknown".
//!
//! A table under a synchronous replication rule adds a step on each side of the statement
//! (`sync_commit`): before it, its destinations are asked whether the change would apply (a
//! shortfall fails the commit with nothing committed); after it, the change is applied there, and
//! only then does the commit answer (a shortfall then is "state unknown", the files kept).

use std::sync::Arc;

use iceberg::spec::TableMetadataBuildResult;
use iceberg::{ErrorKind, TableRequirement, TableUpdate};
use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Transaction};

use uuid::Uuid;

use crate::db::catalog::{self as db, TablePointer, TableRow};
use crate::db::table_commit::{self, Committed, RowChange, TableWrite};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, NewEntry, TableVersionRef};
use crate::storage::{Location, Storage};

use super::metadata::{self, invalid};
use super::metadata_cache::CachedMetadata;
use super::requests::{CommitTableRequest, CommitTransactionRequest};
use super::sync_commit::{PreparedSync, SyncChange};
use super::write_rule::{table_for_write, writable_namespace};
use super::{Catalog, Warehouse};
use crate::names::TableName;

/// Attempts at a commit whose tables keep moving between floe's read and its write. The first
/// attempt takes no lock until its one statement; the others take the tables' change locks
/// before reading, so only a concurrent create of the same name (which needs none) can still
/// move them.
const COMMIT_ATTEMPTS: usize = 4;

/// The connection an attempt reads and commits on.
enum Session {
    /// Optimistic: reads without a lock, the commit statement is its own transaction. The
    /// connection goes back to the pool while the commit waits for its synchronous destinations.
    Unlocked(Option<PoolConnection<Postgres>>),
    /// After a lost race: a transaction that holds the tables' change locks from the start.
    Locked(Transaction<'static, Postgres>),
}

impl Session {
    async fn conn(&mut self, pool: &sqlx::PgPool) -> CatalogResult<&mut PgConnection> {
        match self {
            Session::Unlocked(conn) => {
                if conn.is_none() {
                    *conn = Some(pool.acquire().await?);
                }
                Ok(conn.as_mut().expect("acquired above"))
            }
            Session::Locked(tx) => Ok(tx),
        }
    }

    /// Gives an unlocked session's connection back to the pool (the next `conn` takes one).
    fn release(&mut self) {
        if let Session::Unlocked(conn) = self {
            *conn = None;
        }
    }
}

/// What a client gets back from a commit.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    pub metadata_location: String,
    pub metadata: Arc<CachedMetadata>,
}

/// Metadata files written for changes not yet committed.
#[derive(Debug, Default)]
pub(crate) struct PendingFiles(Vec<(Arc<dyn Storage>, Location)>);

impl PendingFiles {
    pub(crate) async fn write(
        &mut self,
        storage: &Arc<dyn Storage>,
        location: &Location,
        bytes: &[u8],
    ) -> CatalogResult<()> {
        storage.write_new(location, bytes).await?;
        self.0.push((storage.clone(), location.clone()));
        Ok(())
    }

    /// Best effort: a leftover file is harmless (nothing points to it), so failures are only logged.
    pub(crate) async fn discard(self) {
        for (storage, location) in self.0 {
            if let Err(err) = storage.delete(&location).await {
                tracing::warn!(%location, %err, "could not remove the metadata file of a failed commit");
            }
        }
    }
}

/// One table's part of a commit, after its row is locked and its new metadata built.
enum Plan {
    /// No update changed anything: nothing is written, the current state is returned.
    Unchanged {
        table: TableName,
        row: TableRow,
        current: Arc<CachedMetadata>,
    },
    Update {
        row: TableRow,
        built: Built,
    },
    Create {
        built: Built,
        namespace_id: Uuid,
    },
}

struct Built {
    table: TableName,
    requirements: Vec<TableRequirement>,
    changes: Vec<TableUpdate>,
    metadata: Arc<CachedMetadata>,
    metadata_location: Location,
}

impl Built {
    /// The row's pointer to this metadata, stored at `metadata_location` (this one's, spelled).
    fn pointer<'a>(&'a self, metadata_location: &'a str) -> TablePointer<'a> {
        TablePointer {
            table_uuid: self.metadata.parsed.uuid(),
            metadata_location,
            location: self.metadata.parsed.location(),
        }
    }
}

fn requirement_failed(table: &TableName, err: iceberg::Error) -> CatalogError {
    match err.kind() {
        ErrorKind::CatalogCommitConflicts => {
            CatalogError::CommitFailed(format!("Commit to {table} failed: {err}"))
        }
        ErrorKind::TableNotFound => CatalogError::no_such_table(table),
        _ => CatalogError::BadRequest(format!("Commit to {table} is invalid: {err}")),
    }
}

impl Catalog {
    /// Begins a transaction that changes these existing tables (by name), their change locks taken
    /// before anything else (see `db::catalog::lock_table_names`: why a table's log entries stay
    /// in version order along the log).
    pub(crate) async fn begin_table_change(
        &self,
        wh: &Warehouse,
        tables: &[&TableName],
    ) -> CatalogResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        db::lock_table_names(&mut tx, wh.id, tables).await?;
        Ok(tx)
    }

    /// Commits a transaction that appended to the log, then wakes the log's readers: the
    /// injected fault fires first; a failed COMMIT is "unknown".
    pub(crate) async fn commit_transaction_or_unknown(
        &self,
        tx: Transaction<'_, Postgres>,
    ) -> CatalogResult<()> {
        self.faults.check_before_commit()?;
        tx.commit().await.map_err(|e| {
            crate::db::note_failure(&e);
            CatalogError::CommitStateUnknown(e.to_string())
        })?;
        self.log_wake.committed();
        Ok(())
    }

    /// Commits a transaction that appended to the log (a namespace change), then wakes the log's
    /// readers.
    pub(crate) async fn commit_logged(&self, tx: Transaction<'_, Postgres>) -> CatalogResult<()> {
        tx.commit().await?;
        self.log_wake.committed();
        Ok(())
    }

    /// Runs a change that writes files, removing them if the change fails before its COMMIT.
    pub(crate) async fn with_pending_files<T>(
        &self,
        run: impl AsyncFnOnce(&mut PendingFiles) -> CatalogResult<T>,
    ) -> CatalogResult<T> {
        let mut files = PendingFiles::default();
        match run(&mut files).await {
            Ok(value) => Ok(value),
            Err(err @ CatalogError::CommitStateUnknown(_)) => Err(err),
            Err(err) => {
                files.discard().await;
                Err(err)
            }
        }
    }

    /// commitTable: the path names the table; a body `identifier`, if present, must agree.
    pub async fn commit_table(
        &self,
        wh: &Warehouse,
        table: TableName,
        req: CommitTableRequest,
        principal: &str,
    ) -> CatalogResult<CommitOutcome> {
        if let Some(id) = &req.identifier
            && (id.namespace != table.namespace || id.name != table.name)
        {
            return Err(CatalogError::BadRequest(format!(
                "the body's identifier {}.{} does not match the table in the path {table}",
                id.namespace, id.name
            )));
        }
        let mut outcomes = self
            .commit_changes(wh, vec![(table, req.requirements, req.updates)], principal)
            .await?;
        Ok(outcomes.remove(0))
    }

    /// transactions/commit: every change applies, or none does.
    pub async fn commit_transaction(
        &self,
        wh: &Warehouse,
        req: CommitTransactionRequest,
        principal: &str,
    ) -> CatalogResult<()> {
        if req.table_changes.is_empty() {
            return Err(CatalogError::BadRequest(
                "table-changes must name at least one table".to_string(),
            ));
        }
        let mut changes = Vec::with_capacity(req.table_changes.len());
        for change in req.table_changes {
            let id = change.identifier.ok_or_else(|| {
                CatalogError::BadRequest(
                    "every table change in a transaction needs an identifier".to_string(),
                )
            })?;
            let table = TableName::new(id.namespace, id.name)?;
            if changes.iter().any(|(t, _, _)| t == &table) {
                return Err(CatalogError::BadRequest(format!(
                    "table {table} appears twice in one transaction; merge its changes into one"
                )));
            }
            changes.push((table, change.requirements, change.updates));
        }
        self.commit_changes(wh, changes, principal).await?;
        Ok(())
    }

    pub(super) async fn commit_changes(
        &self,
        wh: &Warehouse,
        changes: Vec<(TableName, Vec<TableRequirement>, Vec<TableUpdate>)>,
        principal: &str,
    ) -> CatalogResult<Vec<CommitOutcome>> {
        let result = self.commit_changes_in_turn(wh, changes, principal).await;
        match &result {
            Ok(outcomes) => crate::telemetry::record_commit(&wh.name, outcomes.len(), false),
            Err(CatalogError::CommitFailed(_)) => {
                crate::telemetry::record_commit(&wh.name, 0, true)
            }
            Err(_) => {}
        }
        result
    }

    async fn commit_changes_in_turn(
        &self,
        wh: &Warehouse,
        changes: Vec<(TableName, Vec<TableRequirement>, Vec<TableUpdate>)>,
        principal: &str,
    ) -> CatalogResult<Vec<CommitOutcome>> {
        // Queue behind other commits to these tables on this instance before touching the
        // database: only another instance's change can then move a table under this commit.
        let _queued = self
            .table_locks
            .lock(wh.id, changes.iter().map(|(table, _, _)| table))
            .await;
        for attempt in 1..=COMMIT_ATTEMPTS {
            let locked = attempt > 1;
            if let Some(outcomes) = self
                .try_commit_changes(wh, &changes, principal, locked)
                .await?
            {
                return Ok(outcomes);
            }
        }
        let names: Vec<String> = changes.iter().map(|(t, _, _)| t.to_string()).collect();
        Err(CatalogError::CommitFailed(format!(
            "Commit to {} failed: other writers kept changing it in between \
             ({COMMIT_ATTEMPTS} attempts); try again",
            names.join(", ")
        )))
    }

    /// One attempt: read the rows, plan, write the metadata files, then commit them in one
    /// statement (`db::table_commit`); `locked`, inside a transaction that took the tables'
    /// change locks first. `None` when a table moved on after it was read: this attempt's files
    /// are removed and nothing was committed.
    async fn try_commit_changes(
        &self,
        wh: &Warehouse,
        changes: &[(TableName, Vec<TableRequirement>, Vec<TableUpdate>)],
        principal: &str,
        locked: bool,
    ) -> CatalogResult<Option<Vec<CommitOutcome>>> {
        self.with_pending_files(async |files| {
            let mut session = if locked {
                let names: Vec<&TableName> = changes.iter().map(|(table, _, _)| table).collect();
                Session::Locked(self.begin_table_change(wh, &names).await?)
            } else {
                Session::Unlocked(None)
            };
            let conn = session.conn(&self.pool).await?;
            let mut plans = Vec::with_capacity(changes.len());
            for (table, requirements, updates) in changes {
                let row = table_for_write(conn, wh.id, table, false).await?;
                let (current, namespace_id) = match &row {
                    Some(row) => (
                        Some(
                            self.metadata
                                .load(&*wh.storage, &row.metadata_location)
                                .await?,
                        ),
                        None,
                    ),
                    // A staged create's commit: the table goes into this namespace.
                    None if requirements.contains(&TableRequirement::NotExist) => {
                        let namespace = writable_namespace(conn, wh.id, &table.namespace).await?;
                        // A view may hold the name (`floe_commit_tables` checks again under
                        // the name's lock).
                        if let Some(taken) =
                            super::views::name_taken(conn, namespace.namespace_id, table).await?
                        {
                            return Err(taken);
                        }
                        (None, Some(namespace.namespace_id))
                    }
                    None => (None, None),
                };
                plans.push(self.plan(
                    wh,
                    table.clone(),
                    requirements.clone(),
                    updates.clone(),
                    (row, current),
                    namespace_id,
                )?);
            }

            for plan in &plans {
                if let Plan::Update { built, .. } | Plan::Create { built, .. } = plan {
                    files
                        .write(
                            &wh.storage,
                            &built.metadata_location,
                            built.metadata.json.as_bytes(),
                        )
                        .await?;
                }
            }

            let txn_group = Uuid::now_v7();
            let locations: Vec<String> = plans
                .iter()
                .map(|plan| match plan {
                    Plan::Update { built, .. } | Plan::Create { built, .. } => {
                        built.metadata_location.to_string()
                    }
                    Plan::Unchanged { row, .. } => row.metadata_location.clone(),
                })
                .collect();
            let mut writes = Vec::with_capacity(plans.len());
            let mut entries = Vec::new();
            for (plan, metadata_location) in plans.iter().zip(&locations) {
                match plan {
                    Plan::Unchanged { table, row, .. } => writes.push(TableWrite {
                        table,
                        table_id: row.table_id,
                        change: RowChange::Unchanged {
                            expected_version: row.version,
                        },
                    }),
                    Plan::Update { row, built } => {
                        writes.push(TableWrite {
                            table: &built.table,
                            table_id: row.table_id,
                            change: RowChange::Swap {
                                expected_version: row.version,
                                pointer: built.pointer(metadata_location),
                            },
                        });
                        entries.push(self.commit_entry(
                            wh,
                            txn_group,
                            EntryKind::CommitTable,
                            built,
                            (row.table_id, row.version + 1),
                            Some(row.metadata_location.clone()),
                            principal,
                        )?);
                    }
                    Plan::Create {
                        built,
                        namespace_id,
                    } => {
                        let table_id = Uuid::now_v7();
                        writes.push(TableWrite {
                            table: &built.table,
                            table_id,
                            change: RowChange::Create {
                                namespace_id: *namespace_id,
                                pointer: built.pointer(metadata_location),
                            },
                        });
                        entries.push(self.commit_entry(
                            wh,
                            txn_group,
                            EntryKind::CreateTable,
                            built,
                            (table_id, 1),
                            None,
                            principal,
                        )?);
                    }
                }
            }
            log::mark_transaction_group(&mut entries);
            // Nothing changed anywhere (e.g. `updates: []`): write nothing, log nothing.
            if !entries.is_empty() {
                let sync = self.prepare_sync(wh, &plans, &mut session).await?;
                self.faults.check_before_commit()?;
                let conn = session.conn(&self.pool).await?;
                let committed = table_commit::commit_tables(conn, wh.id, &writes, &entries)
                    .await
                    .map_err(|err| self.commit_error(err, &plans))?;
                match (committed, session) {
                    (Committed::Done, Session::Unlocked(_)) => self.log_wake.committed(),
                    (Committed::Done, Session::Locked(tx)) => {
                        self.commit_transaction_or_unknown(tx).await?
                    }
                    (Committed::Moved, _) => {
                        std::mem::take(files).discard().await;
                        return Ok(None);
                    }
                }
                if let Some(prepared) = sync {
                    let group = (entries.len() > 1).then_some(txn_group);
                    // Committed here: whatever goes wrong now, the files stay.
                    prepared.confirm(group).await.map_err(|err| match err {
                        err @ CatalogError::CommitStateUnknown(_) => err,
                        other => CatalogError::CommitStateUnknown(other.to_string()),
                    })?;
                }
            }
            Ok(Some(
                plans
                    .into_iter()
                    .zip(locations)
                    .map(|(plan, metadata_location)| match plan {
                        Plan::Unchanged { current, .. } => CommitOutcome {
                            metadata_location,
                            metadata: current,
                        },
                        Plan::Update { built, .. } | Plan::Create { built, .. } => {
                            self.metadata
                                .insert(&metadata_location, built.metadata.clone());
                            CommitOutcome {
                                metadata_location,
                                metadata: built.metadata,
                            }
                        }
                    })
                    .collect(),
            ))
        })
        .await
    }

    /// Step 1 of a commit to tables under a synchronous rule (`sync_commit`): `None` when none
    /// of the changed tables is; otherwise the changes prepared at their destinations, with no
    /// connection held while they answer (a retry's transaction keeps its locks).
    async fn prepare_sync(
        &self,
        wh: &Warehouse,
        plans: &[Plan],
        session: &mut Session,
    ) -> CatalogResult<Option<Box<dyn PreparedSync>>> {
        let changes: Vec<SyncChange> = plans
            .iter()
            .filter_map(|plan| match plan {
                Plan::Update { row, built } if row.under_sync_rule => Some(SyncChange {
                    table: built.table.clone(),
                    table_id: row.table_id,
                    epoch: row.epoch,
                    version: row.version + 1,
                    changes: built.changes.clone(),
                    metadata: built.metadata.clone(),
                }),
                _ => None,
            })
            .collect();
        if changes.is_empty() {
            return Ok(None);
        }
        let sync = self.sync_replication.get().ok_or_else(|| {
            CatalogError::Unavailable(
                "a synchronous replication rule governs this table, but this floe instance \
                 does not replicate"
                    .to_string(),
            )
        })?;
        session.release();
        sync.prepare(wh, changes).await
    }

    /// A failed commit statement: a database error wrote nothing (a create's namespace dropped
    /// in between is a missing namespace); a lost connection leaves the outcome unknown.
    fn commit_error(&self, err: sqlx::Error, plans: &[Plan]) -> CatalogError {
        crate::db::note_failure(&err);
        if !matches!(
            err,
            sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        ) {
            return CatalogError::CommitStateUnknown(err.to_string());
        }
        let created_in = plans.iter().find_map(|plan| match plan {
            Plan::Create { built, .. } => Some(&built.table.namespace),
            _ => None,
        });
        match created_in {
            Some(ns) => super::tables::namespace_gone(err, ns),
            None => err.into(),
        }
    }

    /// Checks one table's requirements and builds its new metadata.
    fn plan(
        &self,
        wh: &Warehouse,
        table: TableName,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
        (row, current): (Option<TableRow>, Option<Arc<CachedMetadata>>),
        namespace_id: Option<Uuid>,
    ) -> CatalogResult<Plan> {
        let (Some(row), Some(current)) = (row, current) else {
            if !requirements.contains(&TableRequirement::NotExist) {
                return Err(CatalogError::no_such_table(&table));
            }
            for requirement in &requirements {
                requirement
                    .check(None)
                    .map_err(|e| requirement_failed(&table, e))?;
            }
            let namespace_id =
                namespace_id.ok_or_else(|| CatalogError::no_such_namespace(&table.namespace))?;
            let result = metadata::build_from_updates(wh, &table, updates)?;
            let built = Self::built(table, requirements, result, 1)?;
            return Ok(Plan::Create {
                built,
                namespace_id,
            });
        };

        for requirement in &requirements {
            requirement
                .check(Some(&current.parsed))
                .map_err(|e| requirement_failed(&table, e))?;
        }
        let current_uuid = current.parsed.uuid();
        let mut builder = current
            .parsed
            .clone()
            .into_builder(Some(row.metadata_location.clone()));
        for update in updates {
            builder = update.apply(builder).map_err(invalid)?;
        }
        let result = builder.build().map_err(invalid)?;
        if result.changes.is_empty() {
            return Ok(Plan::Unchanged {
                table,
                row,
                current,
            });
        }
        if result.metadata.uuid() != current_uuid {
            return Err(CatalogError::BadRequest(format!(
                "assign-uuid cannot change the UUID of existing table {table} ({current_uuid})"
            )));
        }
        super::paths::check_changes(wh, &result.changes)?;
        let built = Self::built(table, requirements, result, row.version + 1)?;
        Ok(Plan::Update { row, built })
    }

    fn built(
        table: TableName,
        requirements: Vec<TableRequirement>,
        result: TableMetadataBuildResult,
        version: i64,
    ) -> CatalogResult<Built> {
        let metadata_location =
            metadata::metadata_file_location(result.metadata.location(), version)?;
        Ok(Built {
            table,
            requirements,
            changes: result.changes,
            metadata: Arc::new(CachedMetadata::from_parsed(result.metadata)?),
            metadata_location,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_entry(
        &self,
        wh: &Warehouse,
        txn_group: Uuid,
        kind: EntryKind,
        built: &Built,
        (table_id, version): (Uuid, i64),
        previous_metadata_location: Option<String>,
        principal: &str,
    ) -> CatalogResult<NewEntry> {
        Ok(NewEntry {
            warehouse_id: wh.id,
            txn_group,
            kind,
            namespace: built.table.namespace.levels().to_vec(),
            table: Some(TableVersionRef {
                table_id,
                table_uuid: built.metadata.parsed.uuid(),
                name: built.table.name.clone(),
                version,
            }),
            changes: serde_json::to_value(&built.changes).map_err(CatalogError::Encoding)?,
            requirements: serde_json::to_value(&built.requirements)
                .map_err(CatalogError::Encoding)?,
            metadata: match kind {
                EntryKind::CreateTable => Some(
                    serde_json::to_value(&built.metadata.parsed).map_err(CatalogError::Encoding)?,
                ),
                _ => None,
            },
            details: json!({}),
            principal: principal.to_string(),
            origin_region: self.region.clone(),
            previous_metadata_location,
            new_metadata_location: Some(built.metadata_location.to_string()),
        })
    }
}
