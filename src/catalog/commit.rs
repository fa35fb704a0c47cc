//! The commit path: commitTable and multi-table transactions, all or nothing.
//!
//! In one PostgreSQL transaction: lock every affected table row (in a fixed order, so concurrent
//! transactions cannot deadlock), check each requirement, apply the updates with iceberg's
//! `TableMetadataBuilder`, write the new metadata files, swap the pointers, append the log entries,
//! COMMIT; then wake the log's readers (`log::wake`). The tables' change locks come first, before
//! any write (`db::catalog::lock_table_names`), so their log entries stay in version order along
//! the log with no lock common to all tables. Files written for a change that then fails are
//! removed; a COMMIT whose outcome is unknown keeps them and answers "state unknown".

use std::sync::Arc;

use iceberg::spec::TableMetadataBuildResult;
use iceberg::{ErrorKind, TableRequirement, TableUpdate};
use serde_json::json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::db::catalog::{self as db, NewTable, TablePointer, TableRow};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, NewEntry, TableVersionRef};
use crate::storage::{Location, Storage};

use super::metadata::{self, invalid};
use super::metadata_cache::CachedMetadata;
use super::requests::{CommitTableRequest, CommitTransactionRequest};
use super::{Catalog, Warehouse};
use crate::names::TableName;

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
        row: TableRow,
        current: Arc<CachedMetadata>,
    },
    Update {
        row: TableRow,
        built: Built,
    },
    Create {
        built: Built,
    },
}

struct Built {
    table: TableName,
    requirements: Vec<TableRequirement>,
    changes: Vec<TableUpdate>,
    metadata: Arc<CachedMetadata>,
    metadata_location: Location,
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
        tx.commit()
            .await
            .map_err(|e| CatalogError::CommitStateUnknown(e.to_string()))?;
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

    async fn commit_changes(
        &self,
        wh: &Warehouse,
        changes: Vec<(TableName, Vec<TableRequirement>, Vec<TableUpdate>)>,
        principal: &str,
    ) -> CatalogResult<Vec<CommitOutcome>> {
        // Queue behind other commits to these tables on this instance before touching the database.
        let _queued = self
            .table_locks
            .lock(wh.id, changes.iter().map(|(table, _, _)| table))
            .await;
        self.with_pending_files(async |files| {
            let names: Vec<&TableName> = changes.iter().map(|(table, _, _)| table).collect();
            let mut tx = self.begin_table_change(wh, &names).await?;
            // Lock rows in name order so two transactions over the same tables cannot deadlock.
            let mut order: Vec<usize> = (0..changes.len()).collect();
            order.sort_by(|&a, &b| {
                let (ta, tb) = (&changes[a].0, &changes[b].0);
                (ta.namespace.levels(), &ta.name).cmp(&(tb.namespace.levels(), &tb.name))
            });
            let mut rows: Vec<Option<TableRow>> = vec![None; changes.len()];
            for i in order {
                let table = &changes[i].0;
                rows[i] =
                    db::get_table(&mut tx, wh.id, &table.namespace, &table.name, true).await?;
            }

            let mut plans = Vec::with_capacity(changes.len());
            for ((table, requirements, updates), row) in changes.into_iter().zip(rows) {
                let current = match &row {
                    Some(row) => Some(
                        self.metadata
                            .load(&*wh.storage, &row.metadata_location)
                            .await?,
                    ),
                    None => None,
                };
                plans.push(self.plan(wh, table, requirements, updates, row, current)?);
            }

            for plan in &plans {
                if let Plan::Update { built, .. } | Plan::Create { built } = plan {
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
            let mut entries = Vec::new();
            for plan in &plans {
                match plan {
                    Plan::Unchanged { .. } => {}
                    Plan::Update { row, built } => {
                        let version = row.version + 1;
                        db::update_table_pointer(
                            &mut tx,
                            row.table_id,
                            &TablePointer {
                                table_uuid: built.metadata.parsed.uuid(),
                                metadata_location: &built.metadata_location.to_string(),
                                location: built.metadata.parsed.location(),
                            },
                            version,
                        )
                        .await?;
                        entries.push(self.commit_entry(
                            wh,
                            txn_group,
                            EntryKind::CommitTable,
                            built,
                            (row.table_id, version),
                            Some(row.metadata_location.clone()),
                            principal,
                        )?);
                    }
                    Plan::Create { built } => {
                        let ns = db::get_namespace(&mut tx, wh.id, &built.table.namespace, false)
                            .await?
                            .ok_or_else(|| {
                                CatalogError::no_such_namespace(&built.table.namespace)
                            })?;
                        if let Some(origin) = &ns.origin_region {
                            return Err(super::replica::read_only_namespace(
                                &built.table.namespace,
                                origin,
                            ));
                        }
                        let table_id = Uuid::now_v7();
                        let inserted = db::insert_table(
                            &mut tx,
                            &NewTable {
                                table_id,
                                table_uuid: built.metadata.parsed.uuid(),
                                warehouse_id: wh.id,
                                namespace_id: ns.namespace_id,
                                name: &built.table.name,
                                metadata_location: &built.metadata_location.to_string(),
                                location: built.metadata.parsed.location(),
                            },
                        )
                        .await
                        .map_err(|e| super::tables::namespace_gone(e, &built.table.namespace))?;
                        if !inserted {
                            return Err(CatalogError::CommitFailed(format!(
                                "Commit to {} failed: the table was created concurrently",
                                built.table
                            )));
                        }
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
            if entries.is_empty() {
                // Nothing changed anywhere (e.g. `updates: []`): write nothing, log nothing.
                tx.rollback().await?;
            } else {
                log::append(&mut tx, &entries).await?;
                self.commit_transaction_or_unknown(tx).await?;
            }
            Ok(plans
                .into_iter()
                .map(|plan| match plan {
                    Plan::Unchanged { row, current } => CommitOutcome {
                        metadata_location: row.metadata_location,
                        metadata: current,
                    },
                    Plan::Update { built, .. } | Plan::Create { built } => {
                        let metadata_location = built.metadata_location.to_string();
                        self.metadata
                            .insert(&metadata_location, built.metadata.clone());
                        CommitOutcome {
                            metadata_location,
                            metadata: built.metadata,
                        }
                    }
                })
                .collect())
        })
        .await
    }

    /// Checks one table's requirements and builds its new metadata.
    fn plan(
        &self,
        wh: &Warehouse,
        table: TableName,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
        row: Option<TableRow>,
        current: Option<Arc<CachedMetadata>>,
    ) -> CatalogResult<Plan> {
        if let Some(mark) = row.as_ref().and_then(|row| row.replica.as_ref()) {
            return Err(super::replica::read_only_table(&table, mark));
        }
        let (Some(row), Some(current)) = (row, current) else {
            if !requirements.contains(&TableRequirement::NotExist) {
                return Err(CatalogError::no_such_table(&table));
            }
            for requirement in &requirements {
                requirement
                    .check(None)
                    .map_err(|e| requirement_failed(&table, e))?;
            }
            let result = metadata::build_from_updates(wh, &table, updates)?;
            let built = Self::built(table, requirements, result, 1)?;
            return Ok(Plan::Create { built });
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
            return Ok(Plan::Unchanged { row, current });
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
