//! What to send a destination: the steps of a backfill (derived from the source metadata at one
//! version, so a resumed backfill recomputes exactly the same steps) and the translation of one
//! logged change (paths rewritten into the replica's location, files copied first).

use std::collections::HashSet;

use iceberg::TableUpdate;
use iceberg::spec::{MAIN_BRANCH, Snapshot, SnapshotReference, SnapshotRetention, TableMetadata};
use serde_json::{Value, json};

use super::copy::{Copier, CopyError};
use super::paths::PathMap;
use crate::catalog::metadata;
use crate::contract::peer_protocol::Retention;

/// Snapshots added per backfill step: each step is one metadata file at the destination, so this
/// bounds both the number of files and the size of each apply request.
const SNAPSHOTS_PER_STEP: usize = 25;

/// One step of a backfill, before its files are copied.
#[derive(Debug, Clone)]
pub enum BackfillStep {
    /// The replica with the source's schemas, specs, sort orders and properties, and no snapshots.
    Create,
    /// Snapshots in commit order; `main` moves to the newest of them on main's ancestry.
    Snapshots {
        snapshots: Vec<Snapshot>,
        main_to: Option<i64>,
    },
    /// The source's refs (branches and tags), statistics and partition statistics.
    Finish,
}

/// The steps that bring a new replica to the source's state `metadata`. A table with no
/// snapshots, refs or statistics (a table just created) needs the create alone.
pub fn backfill_steps(metadata: &TableMetadata) -> Vec<BackfillStep> {
    if metadata.snapshots().next().is_none()
        && metadata::refs(metadata).is_empty()
        && metadata.statistics_iter().next().is_none()
        && metadata.partition_statistics_iter().next().is_none()
    {
        return vec![BackfillStep::Create];
    }
    let mut snapshots: Vec<Snapshot> = metadata.snapshots().map(|s| (**s).clone()).collect();
    // Parents before children: sequence numbers grow along every chain (v1 tables have none, so
    // timestamps order them).
    snapshots.sort_by_key(|s| (s.sequence_number(), s.timestamp_ms(), s.snapshot_id()));
    let main_ancestry = main_ancestry(metadata);
    let mut steps = vec![BackfillStep::Create];
    for batch in snapshots.chunks(SNAPSHOTS_PER_STEP) {
        let main_to = batch
            .iter()
            .rev()
            .map(Snapshot::snapshot_id)
            .find(|id| main_ancestry.contains(id));
        steps.push(BackfillStep::Snapshots {
            snapshots: batch.to_vec(),
            main_to,
        });
    }
    steps.push(BackfillStep::Finish);
    steps
}

fn main_ancestry(metadata: &TableMetadata) -> HashSet<i64> {
    let mut ancestry = HashSet::new();
    let mut next = metadata::refs(metadata)
        .get(MAIN_BRANCH)
        .map(|r| r.snapshot_id);
    while let Some(id) = next {
        if !ancestry.insert(id) {
            break;
        }
        next = metadata
            .snapshot_by_id(id)
            .and_then(|s| s.parent_snapshot_id());
    }
    ancestry
}

/// The replica's first metadata: the source's, without snapshots and history, at the replica's
/// location. Its `last-updated-ms` is the first snapshot's time, so the snapshots added next
/// (with their original timestamps) pass iceberg's timeline checks.
pub fn create_metadata(metadata: &TableMetadata, map: &PathMap) -> Result<Value, CopyError> {
    let mut value = serde_json::to_value(metadata)
        .map_err(|e| CopyError::Unsupported(format!("source metadata does not serialise: {e}")))?;
    let first_snapshot_ms = metadata.snapshots().map(|s| s.timestamp_ms()).min();
    let object = value
        .as_object_mut()
        .ok_or_else(|| CopyError::Unsupported("source metadata is not an object".to_string()))?;
    object.insert(
        "location".into(),
        json!(map.destination_location().to_string()),
    );
    for key in [
        "snapshots",
        "snapshot-log",
        "metadata-log",
        "statistics",
        "partition-statistics",
    ] {
        object.insert(key.into(), json!([]));
    }
    object.insert("refs".into(), json!({}));
    object.remove("current-snapshot-id");
    object.insert("last-sequence-number".into(), json!(0));
    if object.contains_key("next-row-id") {
        object.insert("next-row-id".into(), json!(0));
    }
    if let Some(ms) = first_snapshot_ms {
        object.insert("last-updated-ms".into(), json!(ms));
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for value in properties.values_mut() {
            if let Value::String(s) = value {
                *s = map.rewrite_if_path(s);
            }
        }
    }
    Ok(value)
}

/// The updates of a snapshots step, after copying the snapshots' files.
pub async fn snapshot_updates(
    snapshots: &[Snapshot],
    main_to: Option<i64>,
    copier: &Copier,
) -> Result<Vec<TableUpdate>, CopyError> {
    let mut updates = Vec::with_capacity(snapshots.len() + 1);
    for snapshot in snapshots {
        updates.push(TableUpdate::AddSnapshot {
            snapshot: replica_snapshot(snapshot, copier).await?,
        });
    }
    if let Some(id) = main_to {
        updates.push(TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_string(),
            reference: SnapshotReference::new(
                id,
                SnapshotRetention::Branch {
                    min_snapshots_to_keep: None,
                    max_snapshot_age_ms: None,
                    max_ref_age_ms: None,
                },
            ),
        });
    }
    Ok(updates)
}

/// The updates of the final step: every ref as the source has it, and the statistics files.
pub async fn finish_updates(
    metadata: &TableMetadata,
    copier: &Copier,
) -> Result<Vec<TableUpdate>, CopyError> {
    let mut updates = Vec::new();
    let mut refs: Vec<_> = metadata::refs(metadata).into_iter().collect();
    refs.sort_by_key(|(name, _)| (name != MAIN_BRANCH, name.clone()));
    for (ref_name, reference) in refs {
        updates.push(TableUpdate::SetSnapshotRef {
            ref_name,
            reference,
        });
    }
    for statistics in metadata.statistics_iter() {
        updates.push(
            translate(
                TableUpdate::SetStatistics {
                    statistics: statistics.clone(),
                },
                copier,
                Retention::KeepAll,
            )
            .await?
            .expect("statistics are always sent"),
        );
    }
    for statistics in metadata.partition_statistics_iter() {
        updates.push(
            translate(
                TableUpdate::SetPartitionStatistics {
                    partition_statistics: statistics.clone(),
                },
                copier,
                Retention::KeepAll,
            )
            .await?
            .expect("statistics are always sent"),
        );
    }
    Ok(updates)
}

/// A source snapshot as the replica holds it: its manifest list copied and rewritten.
async fn replica_snapshot(snapshot: &Snapshot, copier: &Copier) -> Result<Snapshot, CopyError> {
    let list = snapshot.manifest_list();
    if list.is_empty() {
        return Err(CopyError::Unsupported(format!(
            "snapshot {} has no manifest list (a v1 snapshot with inline manifests)",
            snapshot.snapshot_id()
        )));
    }
    let replica_list = copier.copy_snapshot(list).await?;
    // `Snapshot` has no setter and serialises only inside an update: rewrite it in that form.
    let mut value = serde_json::to_value(TableUpdate::AddSnapshot {
        snapshot: snapshot.clone(),
    })
    .map_err(|e| CopyError::Unsupported(format!("snapshot does not serialise: {e}")))?;
    value["snapshot"]["manifest-list"] = json!(replica_list);
    match serde_json::from_value(value) {
        Ok(TableUpdate::AddSnapshot { snapshot }) => Ok(snapshot),
        Ok(_) => unreachable!("an add-snapshot update parses as one"),
        Err(e) => Err(CopyError::Unsupported(format!(
            "snapshot does not parse: {e}"
        ))),
    }
}

/// Translates one update of a logged change for the replica (copying the files it adds); `None`
/// for updates the replica does not take (its own location; expiry it does not follow).
pub async fn translate(
    update: TableUpdate,
    copier: &Copier,
    retention: Retention,
) -> Result<Option<TableUpdate>, CopyError> {
    let map = copier.map();
    Ok(Some(match update {
        TableUpdate::AddSnapshot { snapshot } => TableUpdate::AddSnapshot {
            snapshot: replica_snapshot(&snapshot, copier).await?,
        },
        TableUpdate::SetStatistics { mut statistics } => {
            statistics.statistics_path = copier
                .copy_statistics(
                    &statistics.statistics_path,
                    statistics.file_size_in_bytes as u64,
                )
                .await?;
            TableUpdate::SetStatistics { statistics }
        }
        TableUpdate::SetPartitionStatistics {
            mut partition_statistics,
        } => {
            partition_statistics.statistics_path = copier
                .copy_statistics(
                    &partition_statistics.statistics_path,
                    partition_statistics.file_size_in_bytes as u64,
                )
                .await?;
            TableUpdate::SetPartitionStatistics {
                partition_statistics,
            }
        }
        TableUpdate::SetProperties { updates } => TableUpdate::SetProperties {
            updates: updates
                .into_iter()
                .map(|(k, v)| {
                    let v = map.rewrite_if_path(&v);
                    (k, v)
                })
                .collect(),
        },
        // The replica keeps its own location; later source paths map into it all the same.
        TableUpdate::SetLocation { .. } => return Ok(None),
        TableUpdate::RemoveSnapshots { snapshot_ids } => {
            if retention != Retention::FollowSource {
                return Ok(None);
            }
            TableUpdate::RemoveSnapshots { snapshot_ids }
        }
        other => other,
    }))
}

/// Translates all updates of a logged change, in order.
pub async fn translate_all(
    updates: Vec<TableUpdate>,
    copier: &Copier,
    retention: Retention,
) -> Result<Vec<TableUpdate>, CopyError> {
    let mut translated = Vec::with_capacity(updates.len());
    for update in updates {
        if let Some(update) = translate(update, copier, retention).await? {
            translated.push(update);
        }
    }
    Ok(translated)
}
