//! Table operations other than commits: list, create, load, exists, drop, rename, register.

use std::sync::Arc;

use iceberg::TableRequirement;
use iceberg::spec::TableMetadata;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::catalog::{self as db, TablePointer};
use crate::db::table_commit::{self, Committed, RowChange, TableWrite};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, NewEntry, TableVersionRef};

use super::metadata::{self, SnapshotsMode};
use super::metadata_cache::CachedMetadata;
use super::namespaces::{Page, PageRequest, page_token, paginate};
use super::requests::{CreateTableRequest, RegisterTableRequest};
use super::write_rule::{table_for_write, writable_namespace};
use super::{Catalog, Warehouse};
use crate::names::{NamespaceName, TableName};

/// A table as loadTable returns it. A staged table has no metadata location yet.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    pub metadata_location: Option<String>,
    pub metadata: Arc<CachedMetadata>,
    /// The metadata JSON when it differs from `metadata.json` (`snapshots=refs`).
    pub filtered_json: Option<String>,
}

impl LoadedTable {
    fn new(metadata_location: Option<String>, metadata: Arc<CachedMetadata>) -> Self {
        Self {
            metadata_location,
            metadata,
            filtered_json: None,
        }
    }

    /// The metadata JSON to send.
    pub fn json(&self) -> &str {
        self.filtered_json.as_deref().unwrap_or(&self.metadata.json)
    }
}

/// What a namespace's listing lists.
pub(super) enum Listed {
    Tables,
    Views,
}

/// Attempts at a registration whose table keeps moving between its read and its write.
const REGISTER_ATTEMPTS: usize = 4;

impl Catalog {
    /// An entry about one table (or view) with nothing but its version filled in.
    pub(super) fn table_entry(
        &self,
        wh: &Warehouse,
        kind: EntryKind,
        table: &TableName,
        version: TableVersionRef,
        principal: &str,
    ) -> NewEntry {
        NewEntry {
            warehouse_id: wh.id,
            txn_group: Uuid::now_v7(),
            kind,
            namespace: table.namespace.levels().to_vec(),
            table: Some(version),
            changes: json!([]),
            requirements: json!([]),
            metadata: None,
            details: json!({}),
            principal: principal.to_string(),
            origin_region: self.region.clone(),
            previous_metadata_location: None,
            new_metadata_location: None,
        }
    }

    pub async fn list_tables(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        page: &PageRequest,
    ) -> CatalogResult<Page<String>> {
        self.list_names(wh, ns, page, Listed::Tables).await
    }

    /// One page of a namespace's table or view names, in name order.
    pub(super) async fn list_names(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        page: &PageRequest,
        listed: Listed,
    ) -> CatalogResult<Page<String>> {
        let size = page.size()?;
        let after: Option<String> = page.token().map(page_token::decode).transpose()?;
        let mut conn = self.pool.acquire().await?;
        let namespace = db::get_namespace(&mut conn, wh.id, ns, false)
            .await?
            .ok_or_else(|| CatalogError::no_such_namespace(ns))?;
        drop(conn);
        let (id, after) = (namespace.namespace_id, after.as_deref());
        let names = match listed {
            Listed::Tables => db::list_tables(&self.pool, id, after, size + 1).await?,
            Listed::Views => crate::db::views::list_views(&self.pool, id, after, size + 1).await?,
        };
        Ok(paginate(names, size, Clone::clone))
    }

    /// createTable. A staged create stores nothing; any other is the staged create's commit (the
    /// `assert-create` requirement and the updates that make the table) through the commit path,
    /// so one writer makes every new table's row and log entry, with the commit path's file
    /// durability, faults and answers.
    pub async fn create_table(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        req: CreateTableRequest,
        principal: &str,
    ) -> CatalogResult<LoadedTable> {
        let table = TableName::new(ns.clone(), req.name.clone())?;
        let mut conn = self.pool.acquire().await?;
        writable_namespace(&mut conn, wh.id, ns).await?;
        if db::get_table(&mut conn, wh.id, ns, &table.name, false)
            .await?
            .is_some()
        {
            return Err(already_exists(&table));
        }
        drop(conn);
        let built = metadata::build_from_request(wh, &table, &req)?;
        if req.stage_create {
            // Nothing is stored: the client commits the table later with `assert-create`.
            let created = Arc::new(CachedMetadata::from_parsed(built.metadata)?);
            return Ok(LoadedTable::new(None, created));
        }
        let updates = built.changes;
        let mut outcomes = self
            .commit_changes(
                wh,
                vec![(table.clone(), vec![TableRequirement::NotExist], updates)],
                principal,
            )
            .await
            .map_err(|err| match err {
                // Made by another client since the check above.
                CatalogError::CommitFailed(_) => already_exists(&table),
                other => other,
            })?;
        let outcome = outcomes.remove(0);
        Ok(LoadedTable::new(
            Some(outcome.metadata_location),
            outcome.metadata,
        ))
    }

    /// The metadata at a location [`Self::table_metadata_location`] returned.
    pub async fn load_metadata_at(
        &self,
        wh: &Warehouse,
        location: String,
        snapshots: SnapshotsMode,
    ) -> CatalogResult<LoadedTable> {
        let current = self.metadata.load(&*wh.storage, &location).await?;
        let filtered_json = match snapshots {
            SnapshotsMode::All => None,
            SnapshotsMode::Refs => Some(metadata::only_referenced_snapshots(&current.json)?),
        };
        Ok(LoadedTable {
            metadata_location: Some(location),
            metadata: current,
            filtered_json,
        })
    }

    /// The current metadata location only: for HEAD and for conditional loads (`If-None-Match`).
    pub async fn table_metadata_location(
        &self,
        wh: &Warehouse,
        table: &TableName,
    ) -> CatalogResult<String> {
        db::get_table_location(&self.pool, wh.id, &table.namespace, &table.name)
            .await?
            .ok_or_else(|| CatalogError::no_such_table(table))
    }

    pub async fn drop_table(
        &self,
        wh: &Warehouse,
        table: &TableName,
        purge: bool,
        principal: &str,
    ) -> CatalogResult<()> {
        let mut tx = self.begin_table_change(wh, &[table]).await?;
        let row = table_for_write(&mut tx, wh.id, table, true)
            .await?
            .ok_or_else(|| CatalogError::no_such_table(table))?;
        db::delete_table(&mut tx, row.table_id).await?;
        let mut entry = self.table_entry(
            wh,
            EntryKind::DropTable,
            table,
            TableVersionRef {
                table_id: row.table_id,
                table_uuid: row.table_uuid,
                name: table.name.clone(),
                version: row.version + 1,
            },
            principal,
        );
        entry.details = json!({ "purge": purge });
        entry.previous_metadata_location = Some(row.metadata_location.clone());
        log::append(&mut tx, &[entry]).await?;
        if purge {
            // The purge is recorded with the drop and runs after it (see `purge_jobs`): the table
            // is gone for clients at once, and a crash cannot lose the purge.
            crate::db::jobs::insert_purge_job(
                &mut tx,
                wh.id,
                &table.to_string(),
                &row.metadata_location,
            )
            .await?;
        }
        self.commit_transaction_or_unknown(tx).await?;
        if purge {
            self.wake_purges();
        }
        Ok(())
    }

    pub async fn rename_table(
        &self,
        wh: &Warehouse,
        source: &TableName,
        destination: &TableName,
        principal: &str,
    ) -> CatalogResult<()> {
        let mut tx = self.begin_table_change(wh, &[source, destination]).await?;
        let row = table_for_write(&mut tx, wh.id, source, true)
            .await?
            .ok_or_else(|| CatalogError::no_such_table(source))?;
        let dest_ns = writable_namespace(&mut tx, wh.id, &destination.namespace).await?;
        let version = row.version + 1;
        let renamed = db::rename_table(
            &mut tx,
            row.table_id,
            dest_ns.namespace_id,
            &destination.name,
            version,
        )
        .await?;
        if !renamed {
            return Err(CatalogError::AlreadyExists(format!(
                "Cannot rename {source} to {destination}: a table or view of that name already \
                 exists"
            )));
        }
        let mut entry = self.table_entry(
            wh,
            EntryKind::RenameTable,
            source,
            TableVersionRef {
                table_id: row.table_id,
                table_uuid: row.table_uuid,
                name: source.name.clone(),
                version,
            },
            principal,
        );
        entry.details = json!({ "destination": {
            "namespace": destination.namespace.levels(), "name": destination.name } });
        entry.previous_metadata_location = Some(row.metadata_location.clone());
        entry.new_metadata_location = Some(row.metadata_location);
        log::append(&mut tx, &[entry]).await?;
        self.commit_transaction_or_unknown(tx).await?;
        Ok(())
    }

    pub async fn register_table(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        req: RegisterTableRequest,
        principal: &str,
    ) -> CatalogResult<LoadedTable> {
        let table = TableName::new(ns.clone(), req.name.clone())?;
        let (metadata_file, parsed): (_, TableMetadata) = metadata::read_registered(
            wh,
            self.metadata.max_file_bytes(),
            &req.metadata_location,
            &table.to_string(),
            "table metadata",
        )
        .await?;
        super::paths::check_metadata(wh, &parsed)?;
        let metadata_location = metadata_file.to_string();
        let metadata_value: Value =
            serde_json::to_value(&parsed).map_err(CatalogError::Encoding)?;
        let table_uuid = parsed.uuid();
        let registered = Arc::new(CachedMetadata::from_parsed(parsed)?);

        let pointer = TablePointer {
            table_uuid,
            metadata_location: &metadata_location,
            location: registered.parsed.location(),
        };
        // As a commit writes: read, then one statement that takes the change lock, writes the
        // row only if it is still as read (or inserts it) and appends the entry; a row that moved
        // on in between is read again.
        let mut conn = self.pool.acquire().await?;
        let mut created_and_moved = false;
        for _ in 0..REGISTER_ATTEMPTS {
            let namespace = writable_namespace(&mut conn, wh.id, ns).await?;
            let existing = table_for_write(&mut conn, wh.id, &table, false).await?;
            if existing.is_none()
                && let Some(taken) =
                    super::views::name_taken(&mut conn, namespace.namespace_id, &table).await?
            {
                return Err(taken);
            }
            let (table_id, version, previous, change) = match existing {
                Some(_) if !req.overwrite => {
                    return Err(CatalogError::AlreadyExists(format!(
                        "Table already exists: {table} (pass overwrite=true to replace its pointer)"
                    )));
                }
                Some(row) => (
                    row.table_id,
                    row.version + 1,
                    Some(row.metadata_location),
                    RowChange::Swap {
                        expected_version: row.version,
                        pointer,
                    },
                ),
                // The name was free and the insert still failed: the UUID is another table's.
                None if created_and_moved => break,
                None => (
                    Uuid::now_v7(),
                    1,
                    None,
                    RowChange::Create {
                        namespace_id: namespace.namespace_id,
                        pointer,
                    },
                ),
            };
            let creates = matches!(change, RowChange::Create { .. });
            let mut entry = self.table_entry(
                wh,
                EntryKind::RegisterTable,
                &table,
                TableVersionRef {
                    table_id,
                    table_uuid,
                    name: table.name.clone(),
                    version,
                },
                principal,
            );
            entry.metadata = Some(metadata_value.clone());
            entry.details = json!({ "overwrite": req.overwrite });
            entry.previous_metadata_location = previous;
            entry.new_metadata_location = Some(metadata_location.clone());
            self.faults.check_before_commit()?;
            let write = TableWrite {
                table: &table,
                table_id,
                change,
            };
            match table_commit::commit_tables(&mut conn, wh.id, &[write], &[entry]).await {
                Ok(Committed::Done) => {
                    self.log_wake().committed();
                    self.metadata.insert(&metadata_location, registered.clone());
                    return Ok(LoadedTable::new(Some(metadata_location), registered));
                }
                Ok(Committed::Moved) => created_and_moved = creates,
                Err(err) => {
                    crate::db::note_failure(&err);
                    return Err(match err {
                        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23503") => {
                            namespace_gone(err, ns)
                        }
                        sqlx::Error::Database(_) => uuid_taken(err, &table, table_uuid),
                        other => CatalogError::CommitStateUnknown(other.to_string()),
                    });
                }
            }
        }
        Err(CatalogError::AlreadyExists(format!(
            "Cannot register {table}: table UUID {table_uuid} is already registered in warehouse {}",
            wh.name
        )))
    }
}

fn already_exists(table: &TableName) -> CatalogError {
    CatalogError::AlreadyExists(format!("Table already exists: {table}"))
}

/// A foreign-key violation on insert means the namespace was dropped concurrently.
pub(crate) fn namespace_gone(err: sqlx::Error, ns: &NamespaceName) -> CatalogError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
            CatalogError::no_such_namespace(ns)
        }
        _ => err.into(),
    }
}

fn uuid_taken(err: sqlx::Error, table: &TableName, uuid: Uuid) -> CatalogError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            CatalogError::AlreadyExists(format!(
                "Cannot register {table}: table UUID {uuid} is already registered under another name"
            ))
        }
        _ => err.into(),
    }
}
