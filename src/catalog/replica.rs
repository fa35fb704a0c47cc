//! Replica tables at a destination: applying one replicated change, fenced on the replica's
//! generation and position (the rule that keeps client changes away from replicas is
//! `write_rule`'s).
//!
//! A change applies in one PostgreSQL transaction, like a client commit: pass the replica's fence
//! (a change sent under a lease older than one already seen is refused, so a task whose lease was
//! revoked cannot apply anything once its successor has), lock the replica's row (and its
//! build's), decide where the change goes ([`Route`]), apply, write the metadata file,
//! swap the pointer, append to this region's log (marked with the origin region, so the replica
//! can feed further regions), COMMIT. A backfill's steps build the next generation beside the
//! serving replica (`replica_build`); the tail's changes go to the serving replica. A repeat of a
//! change already applied is acknowledged without effect; a change of an older generation, or one
//! that does not follow the position it targets, is refused with that position, so the sender can
//! resume from there.

use std::sync::Arc;

use iceberg::spec::{TableMetadata, TableMetadataBuildResult};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::contract::peer_protocol::{
    ApplyAction, ApplyGroup, ApplyRequest, ApplyResponse, Position, ReplicaPosition,
    ReplicatedObject, Retention,
};
use crate::db::catalog::{self as db, ReplicaBuild, ReplicaMark, TablePointer, TableRow};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, NewEntry, TableVersionRef};
use crate::names::{NamespaceName, TableName};

use super::commit::PendingFiles;
use super::metadata::{self, invalid};
use super::metadata_cache::CachedMetadata;
use super::replica_group::GroupArrival;
use super::{Catalog, Warehouse};

pub(super) fn mismatch(message: String, position: Option<ReplicaPosition>) -> CatalogError {
    CatalogError::ReplicaPosition { message, position }
}

/// The replica a change names.
pub(super) fn replica_name(req: &ApplyRequest) -> CatalogResult<TableName> {
    TableName::new(NamespaceName::new(req.namespace.clone())?, req.name.clone())
}

/// How an apply ended here: answered, or left to complete its transaction group.
enum Arrival {
    Done(ApplyResponse),
    CompletesGroup,
}

/// The state of a replica row before a change.
pub(super) struct Current {
    pub(super) row: TableRow,
    mark: ReplicaMark,
}

impl Current {
    pub(super) fn generation(&self) -> i64 {
        self.mark.generation
    }

    pub(super) fn position(&self) -> ReplicaPosition {
        ReplicaPosition {
            generation: self.mark.generation,
            position: Position {
                version: self.mark.version,
                step: self.mark.step,
            },
        }
    }
}

/// Where a replicated change goes, by the replica's generation and position (see the module docs).
pub(super) enum Route {
    /// Applied before: acknowledged without effect.
    Repeat(ApplyResponse),
    /// A create of a newer generation: a build begins beside the serving replica, if any (or, for
    /// a one-step backfill, is swapped in at once).
    StartBuild(Option<Current>),
    /// The next step of the build of the change's generation (and the serving replica, if any,
    /// whose history the build's last step keeps).
    Build(ReplicaBuild, Option<Current>),
    /// The next change to the serving replica.
    Serving(Current),
    /// The source table is gone: a drop or orphan mark for the serving replica, if any, whatever
    /// its generation, and the end of any build (no newer generation can complete now).
    End(Option<Current>, Option<ReplicaBuild>),
}

impl Catalog {
    /// Applies one replicated change to the replica it names (see the module docs).
    pub async fn apply_replicated(
        &self,
        wh: &Warehouse,
        req: ApplyRequest,
        principal: &str,
    ) -> CatalogResult<ApplyResponse> {
        match req.action.object() {
            ReplicatedObject::View => return self.apply_replicated_view(wh, &req, principal).await,
            ReplicatedObject::Namespace => {
                return self.apply_replicated_namespace(wh, &req, principal).await;
            }
            ReplicatedObject::Table => {}
        }
        let table = replica_name(&req)?;
        let queued = self.table_locks.lock(wh.id, std::iter::once(&table)).await;
        let outcome = self
            .with_pending_files(async |files| {
                let mut tx = self.pool.begin().await?;
                let route = self.open_route(&mut tx, wh, &req, &table).await?;
                let change = ReplicatedChange {
                    wh,
                    req: &req,
                    table: &table,
                    principal,
                    group: None,
                };
                let (response, after_commit) = match route {
                    Route::Repeat(done) => return Ok(Arrival::Done(done)),
                    Route::StartBuild(serving) => {
                        self.start_build(&mut tx, files, &change, serving).await?
                    }
                    Route::Build(build, serving) => {
                        self.continue_build(&mut tx, files, &change, build, serving)
                            .await?
                    }
                    Route::Serving(current) => {
                        match super::replica_group::arrive(&mut tx, wh, &req).await? {
                            GroupArrival::NotGrouped | GroupArrival::GivenUp => {
                                self.apply_to_serving(&mut tx, files, &change, current)
                                    .await?
                            }
                            GroupArrival::Parked => {
                                self.commit_transaction_or_unknown(tx).await?;
                                return Ok(Arrival::Done(ApplyResponse {
                                    applied: false,
                                    position: current.position().position,
                                    metadata_location: Some(current.row.metadata_location),
                                    parked: true,
                                }));
                            }
                            // Applied with the others, under all their locks (this transaction
                            // rolls back, having changed nothing).
                            GroupArrival::Completes => return Ok(Arrival::CompletesGroup),
                        }
                    }
                    Route::End(serving, build) => {
                        self.end_replica(&mut tx, files, &change, serving, build)
                            .await?
                    }
                };
                self.commit_transaction_or_unknown(tx).await?;
                self.after_commit(after_commit);
                Ok(Arrival::Done(response))
            })
            .await?;
        drop(queued);
        match outcome {
            Arrival::Done(response) => Ok(response),
            Arrival::CompletesGroup => self.complete_group(wh, &req, principal).await,
        }
    }

    /// Opens the apply of a change to the replica it names (fenced on its lease and epoch) and
    /// decides where it goes.
    pub(super) async fn open_route(
        &self,
        tx: &mut sqlx::PgConnection,
        wh: &Warehouse,
        req: &ApplyRequest,
        table: &TableName,
    ) -> CatalogResult<Route> {
        // The first change of a promoted table's stream back to the region it was promoted
        // from: that region's table, if still a primary of an older epoch, yields first.
        if let Some(superseded) = req.supersedes {
            self.fence_superseded(tx, wh, req, superseded).await?;
        }
        let sender = db::ReplicaSender {
            source_region: &req.source_region,
            source_table_id: req.source_table_id,
            source_warehouse: req.source_warehouse.as_deref(),
            source_namespace: req.source_namespace.as_deref(),
            lease_token: req.lease_token,
            epoch: req.epoch,
        };
        let start = match db::open_replica_apply(tx, wh.id, table, sender).await? {
            db::ReplicaApplyOpening::Open(start) => *start,
            db::ReplicaApplyOpening::StaleLease => {
                return Err(super::replica_state::stale_lease(&table.to_string(), req));
            }
            db::ReplicaApplyOpening::StaleEpoch(promotion) => {
                return Err(self.stale_epoch(table, req, promotion));
            }
        };
        let current = start.replica.map(|row| {
            let mark = row
                .replica
                .clone()
                .expect("open_replica_apply reads replicas");
            Current { row, mark }
        });
        Self::route(req, current, start.build)
    }

    pub(super) fn after_commit(&self, after: Option<AfterCommit>) {
        match after {
            Some(AfterCommit::Cache(location, built)) => self.metadata.insert(&location, built),
            Some(AfterCommit::Purge) => self.wake_purges(),
            None => {}
        }
    }

    /// Decides where a change goes: a repeat is acknowledged, a change of an older generation or
    /// one that does not follow the position it targets is refused with that position.
    fn route(
        req: &ApplyRequest,
        current: Option<Current>,
        build: Option<ReplicaBuild>,
    ) -> CatalogResult<Route> {
        let serving_at = current.as_ref().map(Current::position);
        let build_at = build.as_ref().map(|b| ReplicaPosition {
            generation: b.generation,
            position: Position {
                version: b.version,
                step: b.step,
            },
        });
        if let Some(newer) = [serving_at, build_at]
            .into_iter()
            .flatten()
            .find(|at| at.generation > req.generation)
        {
            return Err(mismatch(
                format!(
                    "the replica is of generation {}, newer than {}",
                    newer.generation, req.generation
                ),
                Some(newer),
            ));
        }
        let repeat = |at: ReplicaPosition, location: Option<String>| {
            Route::Repeat(ApplyResponse {
                applied: false,
                position: at.position,
                metadata_location: location,
                parked: false,
            })
        };
        let same_generation =
            |at: &Option<ReplicaPosition>| at.filter(|at| at.generation == req.generation);
        // A change already applied, to the build of its generation or (once swapped in) to the
        // serving replica.
        if let Some(at) = same_generation(&serving_at).filter(|at| at.position >= req.to) {
            let location = current.map(|c| c.row.metadata_location);
            return Ok(repeat(at, location));
        }
        if let Some(at) = same_generation(&build_at).filter(|at| at.position >= req.to) {
            return Ok(repeat(at, build.map(|b| b.metadata_location)));
        }
        if matches!(req.action, ApplyAction::Create { .. }) {
            return Ok(Route::StartBuild(current));
        }
        // The table's drop reaches a replica whose stream began a newer generation (a restart,
        // a resync) that the drop cut short: the serving replica ends from the last complete
        // state it has, and the build goes.
        if matches!(req.action, ApplyAction::Drop { .. } | ApplyAction::Orphan)
            && serving_at.is_none_or(|at| at.generation < req.generation)
        {
            return Ok(Route::End(current, build));
        }
        let follows = |at: ReplicaPosition| {
            if req.from == Some(at.position) {
                Ok(())
            } else {
                let expected = req
                    .from
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "no replica".to_string());
                Err(mismatch(
                    format!(
                        "the change expects the replica at {expected}, but it is at {}",
                        at.position
                    ),
                    Some(at),
                ))
            }
        };
        if let (Some(at), Some(build)) = (same_generation(&build_at), build) {
            follows(at)?;
            return match req.action {
                ApplyAction::Update { .. } => Ok(Route::Build(build, current)),
                _ => Err(CatalogError::BadRequest(
                    "only updates continue a replica's build; renames and drops follow it"
                        .to_string(),
                )),
            };
        }
        if let (Some(at), Some(current)) = (same_generation(&serving_at), current) {
            follows(at)?;
            return Ok(Route::Serving(current));
        }
        Err(match serving_at {
            Some(at) => mismatch(
                format!(
                    "the replica is of generation {}; generation {} must begin with a backfill",
                    at.generation, req.generation
                ),
                Some(at),
            ),
            None => mismatch(
                format!(
                    "no replica of source table {} from region `{}` exists here; start with a \
                     backfill",
                    req.source_table_id, req.source_region
                ),
                None,
            ),
        })
    }

    /// A change to the serving replica: updates, renames, drops and orphan marks of the tail.
    pub(super) async fn apply_to_serving(
        &self,
        tx: &mut sqlx::PgConnection,
        files: &mut PendingFiles,
        change: &ReplicatedChange<'_>,
        Current { row, .. }: Current,
    ) -> CatalogResult<(ApplyResponse, Option<AfterCommit>)> {
        let (wh, req, table) = (change.wh, change.req, change.table);
        let mark = change.mark(false);
        let mut after = None;
        let metadata_location = match &req.action {
            ApplyAction::Create { .. } => unreachable!("creates begin a build"),
            ApplyAction::ViewState { .. }
            | ApplyAction::DropView
            | ApplyAction::NamespaceProperties { .. } => {
                unreachable!("apply_replicated routes views' and namespaces' changes elsewhere")
            }
            ApplyAction::Update { updates } => {
                let base = self
                    .metadata
                    .load(&*wh.storage, &row.metadata_location)
                    .await?;
                let result = Self::apply_updates(&base, &row, updates, req.retention)?;
                if result.changes.is_empty() {
                    // Nothing to change here (e.g. an expiry this replica does not follow): only
                    // the position moves.
                    db::set_replica_mark(tx, row.table_id, &mark).await?;
                    Some(row.metadata_location)
                } else {
                    super::paths::check_changes(wh, &result.changes)?;
                    let metadata = with_last_updated(result.metadata, req.last_updated_ms)?;
                    let built = Arc::new(CachedMetadata::from_parsed(metadata)?);
                    let version = row.version + 1;
                    let recorded = Some(row.metadata_location.as_str());
                    let (location, built) = self
                        .place_state(files, change, recorded, built, version, false)
                        .await?;
                    let pointer = TablePointer {
                        table_uuid: row.table_uuid,
                        metadata_location: &location,
                        location: built.parsed.location(),
                    };
                    db::update_replica_pointer(tx, row.table_id, &pointer, version, &mark).await?;
                    let mut entry = change.entry(
                        EntryKind::CommitTable,
                        table,
                        (row.table_id, row.table_uuid, version),
                    );
                    entry.changes = serde_json::to_value(&result.changes).map_err(|e| {
                        CatalogError::BadRequest(format!("the changes do not serialise: {e}"))
                    })?;
                    entry.previous_metadata_location = Some(row.metadata_location);
                    entry.new_metadata_location = Some(location.clone());
                    log::append(tx, &[entry]).await?;
                    after = Some(AfterCommit::Cache(location.clone(), built));
                    Some(location)
                }
            }
            ApplyAction::Rename { namespace, name } => {
                let target = TableName::new(NamespaceName::new(namespace.clone())?, name.clone())?;
                let namespace_id = self.replica_namespace(tx, wh, &target, req).await?;
                let version = row.version + 1;
                self.place_rename(change, &target, row.table_uuid).await?;
                if !db::rename_table(tx, row.table_id, namespace_id, &target.name, version).await? {
                    return Err(CatalogError::AlreadyExists(format!(
                        "cannot rename the replica {table} to {target} in warehouse {}: a table \
                         of that name already exists there",
                        wh.name
                    )));
                }
                db::set_replica_mark(tx, row.table_id, &mark).await?;
                let mut entry = change.entry(
                    EntryKind::RenameTable,
                    table,
                    (row.table_id, row.table_uuid, version),
                );
                entry.details["destination"] =
                    json!({ "namespace": target.namespace.levels(), "name": target.name });
                entry.previous_metadata_location = Some(row.metadata_location.clone());
                entry.new_metadata_location = Some(row.metadata_location.clone());
                log::append(tx, &[entry]).await?;
                Some(row.metadata_location)
            }
            ApplyAction::Drop { purge } => {
                let purge_here = self.place_drop(change, *purge).await?;
                db::delete_table(tx, row.table_id).await?;
                let mut entry = change.entry(
                    EntryKind::DropTable,
                    table,
                    (row.table_id, row.table_uuid, row.version + 1),
                );
                entry.details["purge"] = json!(purge);
                entry.previous_metadata_location = Some(row.metadata_location.clone());
                log::append(tx, &[entry]).await?;
                if purge_here {
                    crate::db::jobs::insert_purge_job(
                        tx,
                        wh.id,
                        &table.to_string(),
                        &row.metadata_location,
                    )
                    .await?;
                    after = Some(AfterCommit::Purge);
                }
                None
            }
            ApplyAction::Orphan => {
                db::set_replica_mark(tx, row.table_id, &change.mark(true)).await?;
                let version = row.version + 1;
                db::bump_table_version(tx, row.table_id, version).await?;
                let mut entry = change.entry(
                    EntryKind::OrphanTable,
                    table,
                    (row.table_id, row.table_uuid, version),
                );
                entry.previous_metadata_location = Some(row.metadata_location.clone());
                entry.new_metadata_location = Some(row.metadata_location.clone());
                log::append(tx, &[entry]).await?;
                Some(row.metadata_location)
            }
        };
        Ok((
            ApplyResponse {
                applied: true,
                position: req.to,
                metadata_location,
                parked: false,
            },
            after,
        ))
    }

    /// A drop or orphan mark across generations (see [`Route::End`]): the build, if any, goes;
    /// the serving replica, if any, is dropped or marked; with neither, the replica is already
    /// gone (a repeated drop) and nothing changes.
    async fn end_replica(
        &self,
        tx: &mut sqlx::PgConnection,
        files: &mut PendingFiles,
        change: &ReplicatedChange<'_>,
        serving: Option<Current>,
        build: Option<ReplicaBuild>,
    ) -> CatalogResult<(ApplyResponse, Option<AfterCommit>)> {
        let req = change.req;
        if build.is_some() {
            db::delete_replica_build(tx, change.wh.id, &req.source_region, req.source_table_id)
                .await?;
        }
        match serving {
            Some(current) => self.apply_to_serving(tx, files, change, current).await,
            None => Ok((
                ApplyResponse {
                    applied: build.is_some(),
                    position: req.to,
                    metadata_location: None,
                    parked: false,
                },
                None,
            )),
        }
    }

    /// The namespace a replica lives in, created (read-only, marked with its origin) when missing.
    pub(super) async fn replica_namespace(
        &self,
        tx: &mut sqlx::PgConnection,
        wh: &Warehouse,
        table: &TableName,
        req: &ApplyRequest,
    ) -> CatalogResult<Uuid> {
        Ok(
            db::ensure_replicated_namespace(tx, wh.id, &table.namespace, &req.origin_region)
                .await?,
        )
    }

    pub(super) fn apply_updates(
        base: &CachedMetadata,
        row: &TableRow,
        updates: &[iceberg::TableUpdate],
        retention: Retention,
    ) -> CatalogResult<TableMetadataBuildResult> {
        let mut builder = base
            .parsed
            .clone()
            .into_builder(Some(row.metadata_location.clone()));
        for update in updates.iter().cloned() {
            builder = update.apply(builder).map_err(invalid)?;
        }
        let mut result = builder.build().map_err(invalid)?;
        let expired = expired_by_retention(&result.metadata, retention);
        if !expired.is_empty() {
            let mut again = result
                .metadata
                .into_builder(None)
                .remove_snapshots(&expired)
                .build()
                .map_err(invalid)?;
            result.changes.append(&mut again.changes);
            result.metadata = again.metadata;
        }
        Ok(result)
    }
}

/// One replicated change and what every part of applying it needs.
pub(super) struct ReplicatedChange<'a> {
    pub(super) wh: &'a Warehouse,
    pub(super) req: &'a ApplyRequest,
    pub(super) table: &'a TableName,
    pub(super) principal: &'a str,
    /// Set when the change is applied with the rest of its transaction group: this region's log
    /// keeps the group, so that regions further down a chain apply it together too.
    pub(super) group: Option<ApplyGroup>,
}

impl ReplicatedChange<'_> {
    /// The replica mark after this change.
    pub(super) fn mark(&self, orphaned: bool) -> ReplicaMark {
        ReplicaMark {
            source_region: self.req.source_region.clone(),
            source_table_id: self.req.source_table_id,
            origin_region: self.req.origin_region.clone(),
            origin_url: self.req.origin_url.clone(),
            generation: self.req.generation,
            version: self.req.to.version,
            step: self.req.to.step,
            orphaned,
            epoch: self.req.epoch,
        }
    }

    /// This region's log entry for the change (the origin region kept, so chains can follow).
    pub(super) fn entry(
        &self,
        kind: EntryKind,
        table: &TableName,
        (table_id, table_uuid, version): (Uuid, Uuid, i64),
    ) -> NewEntry {
        let mut details =
            json!({ "replicated-from": self.req.source_region, "position": self.req.to });
        if let Some(group) = self.group {
            details[log::GROUP_SIZE_DETAIL] = json!(group.members);
        }
        NewEntry {
            warehouse_id: self.wh.id,
            txn_group: self.group.map_or_else(Uuid::now_v7, |group| group.id),
            kind,
            namespace: table.namespace.levels().to_vec(),
            table: Some(TableVersionRef {
                table_id,
                table_uuid,
                name: table.name.clone(),
                version,
            }),
            changes: json!([]),
            requirements: json!([]),
            metadata: None,
            details,
            principal: self.principal.to_string(),
            origin_region: self.req.origin_region.clone(),
            previous_metadata_location: None,
            new_metadata_location: None,
        }
    }
}

/// What to do once a change's transaction has committed.
pub(super) enum AfterCommit {
    /// Keep the new metadata in the cache.
    Cache(String, Arc<CachedMetadata>),
    /// A purge was recorded: wake the purge worker.
    Purge,
}

/// Snapshots the replica's own retention removes: past the limit and not the head of any ref.
pub(super) fn expired_by_retention(metadata: &TableMetadata, retention: Retention) -> Vec<i64> {
    let heads: Vec<i64> = metadata::refs(metadata)
        .values()
        .map(|r| r.snapshot_id)
        .collect();
    let mut candidates: Vec<(i64, i64)> = metadata
        .snapshots()
        .map(|s| (s.timestamp_ms(), s.snapshot_id()))
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    let keep = |index: usize, timestamp_ms: i64| match retention {
        Retention::KeepAll | Retention::FollowSource => true,
        Retention::KeepSnapshots(n) => index < n as usize,
        Retention::KeepDays(days) => {
            timestamp_ms >= chrono::Utc::now().timestamp_millis() - i64::from(days) * 86_400_000
        }
    };
    candidates
        .into_iter()
        .enumerate()
        .filter(|(index, (timestamp_ms, id))| !keep(*index, *timestamp_ms) && !heads.contains(id))
        .map(|(_, (_, id))| id)
        .collect()
}

/// Gives the replica's metadata the source's `last-updated-ms`, so its timeline is the source's (and
/// a snapshot committed at the source before a late apply still passes iceberg's timestamp checks).
pub(super) fn with_last_updated(
    metadata: TableMetadata,
    last_updated_ms: Option<i64>,
) -> CatalogResult<TableMetadata> {
    let Some(ms) = last_updated_ms else {
        return Ok(metadata);
    };
    if metadata.last_updated_ms() == ms {
        return Ok(metadata);
    }
    let mut value = serde_json::to_value(&metadata)
        .map_err(|e| CatalogError::BadRequest(format!("metadata does not serialise: {e}")))?;
    value["last-updated-ms"] = Value::from(ms);
    serde_json::from_value(value)
        .map_err(|e| CatalogError::BadRequest(format!("metadata does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    /// A table whose snapshots 1, 2, 3 are 10, 5 and 0 days old; `main` is at 3, tag `audit` at 1.
    fn table_with_snapshots_aged(now_ms: i64) -> TableMetadata {
        let snapshot = |id: i64, age_days: i64| {
            serde_json::json!({
                "snapshot-id": id, "sequence-number": id,
                "timestamp-ms": now_ms - age_days * DAY_MS,
                "manifest-list": format!("file:///wh/t/metadata/snap-{id}.avro"),
                "summary": { "operation": "append" }, "schema-id": 0
            })
        };
        serde_json::from_value(serde_json::json!({
            "format-version": 2,
            "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
            "location": "file:///wh/t",
            "last-sequence-number": 3,
            "last-updated-ms": now_ms,
            "last-column-id": 1,
            "current-schema-id": 0,
            "schemas": [{ "type": "struct", "schema-id": 0,
                          "fields": [{ "id": 1, "name": "id", "type": "long", "required": false }] }],
            "default-spec-id": 0,
            "partition-specs": [{ "spec-id": 0, "fields": [] }],
            "last-partition-id": 999,
            "default-sort-order-id": 0,
            "sort-orders": [{ "order-id": 0, "fields": [] }],
            "properties": {},
            "current-snapshot-id": 3,
            "snapshots": [snapshot(1, 10), snapshot(2, 5), snapshot(3, 0)],
            "refs": {
                "main": { "snapshot-id": 3, "type": "branch" },
                "audit": { "snapshot-id": 1, "type": "tag" }
            },
            "snapshot-log": [],
            "metadata-log": []
        }))
        .expect("valid metadata")
    }

    #[test]
    fn keep_days_expires_snapshots_older_than_the_window_except_ref_heads() {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let metadata = table_with_snapshots_aged(now_ms);
        assert_eq!(
            expired_by_retention(&metadata, Retention::KeepDays(3)),
            vec![2],
            "5 days old goes; 10 days old stays as the head of tag `audit`"
        );
        assert!(expired_by_retention(&metadata, Retention::KeepDays(7)).is_empty());
        assert_eq!(
            expired_by_retention(&metadata, Retention::KeepSnapshots(1)),
            vec![2]
        );
        assert!(expired_by_retention(&metadata, Retention::KeepAll).is_empty());
    }
}
