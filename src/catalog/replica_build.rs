//! A replica's next generation, built beside the replica readers see and swapped in when complete.
//!
//! Every generation of a replica (its first, a resync, a restart after the source lost files) is
//! a backfill: a create, then batches of snapshots, then the refs and statistics (for a table
//! with none of those, the create alone, complete in itself). Its steps go to a
//! build (`replica_build`: a position and a metadata file nothing serves, no log entry), never to
//! the serving replica, so a reader sees the old replica, whole, until the last step lands. The
//! last step swaps the build in, in one transaction with the pointer, the replica's mark and the
//! log entry: the serving replica moves from one complete state to the next, never through an
//! empty or partial one.
//!
//! The swap keeps what the replica holds. Snapshots the serving replica has and the build lacks
//! (history the source expired, or lost) stay, with their schemas, specs, sort orders, statistics
//! and snapshot log, and so does the replica's metadata log; the rule's retention then applies as
//! after any change. Only `follow-source` retention, or a source table replaced by another one (a
//! new table UUID), lets the build's state stand alone. History that cannot be merged fails the
//! swap with a reason, and the serving replica stays as it was.

use std::collections::HashSet;
use std::sync::Arc;

use iceberg::spec::TableMetadata;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::contract::peer_protocol::{ApplyAction, ApplyResponse, Retention};
use crate::db::catalog::{self as db, ReplicaBuild, TablePointer};
use crate::db::table_commit::{self, Committed, RowChange, TableWrite};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind};

use super::Catalog;
use super::commit::PendingFiles;
use super::metadata::{self, invalid};
use super::metadata_cache::CachedMetadata;
use super::replica::{
    AfterCommit, Current, ReplicatedChange, expired_by_retention, with_last_updated,
};

impl Catalog {
    /// A create of a newer generation: the build begins (replacing a build of an older one). A
    /// create that is the backfill's only step (it lands on a source version, step 0: a table
    /// with no snapshots, refs or statistics) is complete, and is swapped in at once.
    pub(super) async fn start_build(
        &self,
        tx: &mut sqlx::PgConnection,
        files: &mut PendingFiles,
        change: &ReplicatedChange<'_>,
        serving: Option<Current>,
    ) -> CatalogResult<(ApplyResponse, Option<AfterCommit>)> {
        let (wh, req, table) = (change.wh, change.req, change.table);
        let ApplyAction::Create { metadata } = &req.action else {
            unreachable!("builds begin with a create")
        };
        let parsed: TableMetadata = serde_json::from_value(metadata.clone()).map_err(|e| {
            CatalogError::BadRequest(format!(
                "replicated metadata for {table} is not valid table metadata: {e}"
            ))
        })?;
        // Every path a peer sends must lie in this warehouse, as a client's must.
        super::paths::check_metadata(wh, &parsed)?;
        // A name taken by a table that is not this source's replica fails the build at once.
        if let Some(row) = db::get_table(tx, wh.id, &table.namespace, &table.name, false).await?
            && row.replica.as_ref().is_none_or(|mark| {
                mark.source_region != req.source_region
                    || mark.source_table_id != req.source_table_id
            })
        {
            return Err(name_taken(change, parsed.uuid()));
        }
        if req.to.step == 0 {
            return self.swap_in(tx, files, change, parsed, serving).await;
        }
        self.stage_build(tx, files, change, parsed).await
    }

    /// The next step of a build; its last step swaps the build in.
    pub(super) async fn continue_build(
        &self,
        tx: &mut sqlx::PgConnection,
        files: &mut PendingFiles,
        change: &ReplicatedChange<'_>,
        build: ReplicaBuild,
        serving: Option<Current>,
    ) -> CatalogResult<(ApplyResponse, Option<AfterCommit>)> {
        let (wh, req) = (change.wh, change.req);
        let ApplyAction::Update { updates } = &req.action else {
            unreachable!("route() sends only updates to a build")
        };
        let base = self
            .metadata
            .load(&*wh.storage, &build.metadata_location)
            .await?;
        // A build's steps are not the replica's history: no metadata-log entry for them.
        let mut builder = base.parsed.clone().into_builder(None);
        for update in updates.iter().cloned() {
            builder = update.apply(builder).map_err(invalid)?;
        }
        let result = builder.build().map_err(invalid)?;
        super::paths::check_changes(wh, &result.changes)?;
        if req.to.step == 0 {
            return self
                .swap_in(tx, files, change, result.metadata, serving)
                .await;
        }
        self.stage_build(tx, files, change, result.metadata).await
    }

    /// A build step that does not complete the build: its metadata written to a file nothing
    /// serves, and the build's position saved.
    async fn stage_build(
        &self,
        tx: &mut sqlx::PgConnection,
        files: &mut PendingFiles,
        change: &ReplicatedChange<'_>,
        staged: TableMetadata,
    ) -> CatalogResult<(ApplyResponse, Option<AfterCommit>)> {
        let built = CachedMetadata::from_parsed(staged)?;
        let file = metadata::metadata_file_location(built.parsed.location(), 1)?;
        files
            .write(&change.wh.storage, &file, built.json.as_bytes())
            .await?;
        let location = file.to_string();
        self.save_build(tx, change, &location).await?;
        Ok((
            ApplyResponse {
                applied: true,
                position: change.req.to,
                metadata_location: Some(location),
                parked: false,
            },
            None,
        ))
    }

    async fn save_build(
        &self,
        tx: &mut sqlx::PgConnection,
        change: &ReplicatedChange<'_>,
        location: &str,
    ) -> CatalogResult<()> {
        let req = change.req;
        let build = ReplicaBuild {
            generation: req.generation,
            version: req.to.version,
            step: req.to.step,
            metadata_location: location.to_string(),
        };
        let saved = db::save_replica_build(
            tx,
            change.wh.id,
            &req.source_region,
            req.source_table_id,
            &build,
        )
        .await?;
        if !saved {
            return Err(CatalogError::CommitFailed(format!(
                "a newer generation of the replica of {} is being built",
                change.table
            )));
        }
        Ok(())
    }

    /// Makes the complete build the serving replica, in the caller's transaction.
    async fn swap_in(
        &self,
        tx: &mut sqlx::PgConnection,
        files: &mut PendingFiles,
        change: &ReplicatedChange<'_>,
        staged: TableMetadata,
        serving: Option<Current>,
    ) -> CatalogResult<(ApplyResponse, Option<AfterCommit>)> {
        let (wh, req, table) = (change.wh, change.req, change.table);
        let mut metadata = staged;
        // A former primary that a promotion superseded (generation 0, see `promotion`) takes the
        // new primary's state as it is: its diverged snapshots are listed and kept apart, not
        // merged into the replica's history.
        if let Some(current) = serving.as_ref().filter(|c| c.generation() > 0) {
            let old = self
                .metadata
                .load(&*wh.storage, &current.row.metadata_location)
                .await?;
            if old.parsed.uuid() == metadata.uuid() {
                let keep_snapshots = req.retention != Retention::FollowSource;
                metadata = merge_history(
                    metadata,
                    &old.parsed,
                    &current.row.metadata_location,
                    keep_snapshots,
                )?;
            }
        }
        let expired = expired_by_retention(&metadata, req.retention);
        if !expired.is_empty() {
            metadata = metadata
                .into_builder(None)
                .remove_snapshots(&expired)
                .build()
                .map_err(invalid)?
                .metadata;
        }
        let metadata = with_last_updated(metadata, req.last_updated_ms)?;
        super::paths::check_metadata(wh, &metadata)?;
        let uuid = metadata.uuid();
        let built = Arc::new(CachedMetadata::from_parsed(metadata)?);
        let (table_id, version, previous) = match &serving {
            Some(current) => (
                current.row.table_id,
                current.row.version + 1,
                Some(current.row.metadata_location.clone()),
            ),
            None => (Uuid::now_v7(), 1, None),
        };
        let namespace_id = self.replica_namespace(tx, wh, table, req).await?;
        let recorded = previous.as_deref();
        let (location, built) = self
            .place_state(files, change, recorded, built, version, true)
            .await?;
        let metadata_value = serde_json::to_value(&built.parsed)
            .map_err(|e| CatalogError::BadRequest(format!("metadata does not serialise: {e}")))?;
        let pointer = TablePointer {
            table_uuid: uuid,
            metadata_location: &location,
            location: built.parsed.location(),
        };
        let mut entry = change.entry(EntryKind::CreateTable, table, (table_id, uuid, version));
        entry.metadata = Some(metadata_value);
        entry.previous_metadata_location = previous;
        entry.new_metadata_location = Some(location.clone());
        match &serving {
            Some(current) => {
                let mark = change.mark(false);
                db::update_replica_pointer(tx, table_id, &pointer, version, &mark).await?;
                // The source's name now (a rename the old generation never delivered).
                let renamed =
                    current.row.namespace_id != namespace_id || current.row.name != table.name;
                if renamed
                    && !db::rename_table(tx, table_id, namespace_id, &table.name, version).await?
                {
                    return Err(name_taken(change, uuid));
                }
                log::append(tx, &[entry]).await?;
            }
            None => {
                // A new row and its entry, by the one writer of every new table
                // (`table_commit`); it becomes a replica below, in this same transaction.
                let write = TableWrite {
                    table,
                    table_id,
                    change: RowChange::Create {
                        namespace_id,
                        pointer,
                    },
                };
                if let Committed::Moved =
                    table_commit::commit_tables(tx, wh.id, &[write], &[entry]).await?
                {
                    return Err(name_taken(change, uuid));
                }
                db::set_replica_mark(tx, table_id, &change.mark(false)).await?;
            }
        }
        db::delete_replica_build(tx, wh.id, &req.source_region, req.source_table_id).await?;
        Ok((
            ApplyResponse {
                applied: true,
                position: req.to,
                metadata_location: Some(location.clone()),
                parked: false,
            },
            Some(AfterCommit::Cache(location, built)),
        ))
    }
}

fn name_taken(change: &ReplicatedChange<'_>, uuid: Uuid) -> CatalogError {
    CatalogError::AlreadyExists(format!(
        "cannot create the replica {} in warehouse {}: a table of that name (or with table UUID \
         {uuid}) already exists there and is not a replica of this source; rename one of them or \
         give the rule a namespace prefix",
        change.table, change.wh.name
    ))
}

/// The build's metadata with the history of the serving replica's kept: its metadata log, and
/// with `keep_snapshots` every snapshot the build lacks, with what those snapshots need (their
/// schemas, partition specs, sort orders, statistics and snapshot-log entries). The build's refs,
/// current snapshot and properties stand: they are the source's.
fn merge_history(
    staged: TableMetadata,
    old: &TableMetadata,
    old_location: &str,
    keep_snapshots: bool,
) -> CatalogResult<TableMetadata> {
    let unmergeable = |e: String| {
        CatalogError::Unprocessable(format!(
            "the new generation cannot keep the replica's history ({e}); the replica stays as \
             it is"
        ))
    };
    let to_value = |m: &TableMetadata| {
        serde_json::to_value(m)
            .map_err(|e| unmergeable(format!("metadata does not serialise: {e}")))
    };
    let mut merged = to_value(&staged)?;
    let old = to_value(old)?;
    let mut log: Vec<Value> = array(&old, "metadata-log").to_vec();
    log.push(json!({ "timestamp-ms": old["last-updated-ms"], "metadata-file": old_location }));
    merged["metadata-log"] = Value::Array(log);

    if keep_snapshots {
        let have: HashSet<i64> = array(&merged, "snapshots")
            .iter()
            .filter_map(|s| s["snapshot-id"].as_i64())
            .collect();
        let kept: Vec<Value> = array(&old, "snapshots")
            .iter()
            .filter(|s| {
                s["snapshot-id"]
                    .as_i64()
                    .is_some_and(|id| !have.contains(&id))
            })
            .cloned()
            .collect();
        if !kept.is_empty() {
            let kept_ids: HashSet<i64> = kept
                .iter()
                .filter_map(|s| s["snapshot-id"].as_i64())
                .collect();
            extend(&mut merged, "snapshots", kept);
            for (list, id) in [
                ("schemas", "schema-id"),
                ("partition-specs", "spec-id"),
                ("sort-orders", "order-id"),
            ] {
                let present: HashSet<i64> = array(&merged, list)
                    .iter()
                    .filter_map(|v| v[id].as_i64())
                    .collect();
                let missing: Vec<Value> = array(&old, list)
                    .iter()
                    .filter(|v| v[id].as_i64().is_some_and(|i| !present.contains(&i)))
                    .cloned()
                    .collect();
                extend(&mut merged, list, missing);
            }
            for list in ["statistics", "partition-statistics"] {
                let extra: Vec<Value> = array(&old, list)
                    .iter()
                    .filter(|v| {
                        v["snapshot-id"]
                            .as_i64()
                            .is_some_and(|i| kept_ids.contains(&i))
                    })
                    .cloned()
                    .collect();
                extend(&mut merged, list, extra);
            }
            let mut snapshot_log: Vec<Value> = array(&old, "snapshot-log")
                .iter()
                .filter(|v| {
                    v["snapshot-id"]
                        .as_i64()
                        .is_some_and(|i| kept_ids.contains(&i))
                })
                .cloned()
                .collect();
            snapshot_log.extend(array(&merged, "snapshot-log").iter().cloned());
            snapshot_log.sort_by_key(|v| v["timestamp-ms"].as_i64());
            merged["snapshot-log"] = Value::Array(snapshot_log);
            for counter in [
                "last-sequence-number",
                "last-column-id",
                "last-partition-id",
            ] {
                if let (Some(a), Some(b)) = (merged[counter].as_i64(), old[counter].as_i64()) {
                    merged[counter] = json!(a.max(b));
                }
            }
        }
    }
    serde_json::from_value(merged).map_err(|e| unmergeable(e.to_string()))
}

fn array<'a>(metadata: &'a Value, key: &str) -> &'a [Value] {
    metadata[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn extend(metadata: &mut Value, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    match metadata.get_mut(key).and_then(Value::as_array_mut) {
        Some(list) => list.extend(items),
        None => metadata[key] = Value::Array(items),
    }
}
