//! The changes between two states of a table, as the Iceberg REST spec's table updates: what an
//! `observe-table` entry records for a state floe read from the upstream rather than made.
//!
//! The diff is taken on the metadata's JSON, field by field, over what a commit decides (the
//! fields `history::produced_by` compares): list members are matched by their ids (schema,
//! spec, sort order, snapshot ids; statistics by snapshot), maps by key. The updates are ordered
//! as a writer would send them (schemas before the snapshots that use them, snapshots before
//! the refs that name them), so that applying them to the earlier state gives the later one in
//! everything a commit decides; the tests hold it to that.

use std::collections::BTreeSet;

use iceberg::spec::TableMetadata;
use serde_json::{Map, Value, json};

/// The updates that take `before` (`None`: no table yet) to `after`.
pub fn changes_between(before: Option<&TableMetadata>, after: &TableMetadata) -> Vec<Value> {
    let empty = Value::Object(Map::new());
    let before = before
        .and_then(|m| serde_json::to_value(m).ok())
        .unwrap_or(empty);
    let Ok(after) = serde_json::to_value(after) else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    if before.get("table-uuid") != after.get("table-uuid") {
        changes.push(json!({"action": "assign-uuid", "uuid": after["table-uuid"]}));
    }
    if before.get("format-version") != after.get("format-version") {
        changes.push(json!({"action": "upgrade-format-version",
            "format-version": after["format-version"]}));
    }
    let mut set = |field: &str, action: &str, key: &str| {
        if before.get(field) != after.get(field) && !after[field].is_null() {
            changes.push(json!({"action": action, key: after[field]}));
        }
    };
    set("location", "set-location", "location");
    let mut members = |list: &str, id: &str, add: &str, member: &str| {
        for item in added(&before[list], &after[list], id) {
            changes.push(json!({"action": add, member: item}));
        }
    };
    members("schemas", "schema-id", "add-schema", "schema");
    members("partition-specs", "spec-id", "add-spec", "spec");
    members("sort-orders", "order-id", "add-sort-order", "sort-order");
    let mut defaults = |field: &str, action: &str, key: &str| {
        if before.get(field) != after.get(field) && !after[field].is_null() {
            changes.push(json!({"action": action, key: after[field]}));
        }
    };
    defaults("current-schema-id", "set-current-schema", "schema-id");
    defaults("default-spec-id", "set-default-spec", "spec-id");
    defaults(
        "default-sort-order-id",
        "set-default-sort-order",
        "sort-order-id",
    );
    properties(&before["properties"], &after["properties"], &mut changes);
    for snapshot in added(&before["snapshots"], &after["snapshots"], "snapshot-id") {
        changes.push(json!({"action": "add-snapshot", "snapshot": snapshot}));
    }
    refs(&before["refs"], &after["refs"], &mut changes);
    let removed_snapshots = removed(&before["snapshots"], &after["snapshots"], "snapshot-id");
    if !removed_snapshots.is_empty() {
        changes.push(json!({"action": "remove-snapshots", "snapshot-ids": removed_snapshots}));
    }
    for (list, add, member, remove) in [
        (
            "statistics",
            "set-statistics",
            "statistics",
            "remove-statistics",
        ),
        (
            "partition-statistics",
            "set-partition-statistics",
            "partition-statistics",
            "remove-partition-statistics",
        ),
    ] {
        for item in changed(&before[list], &after[list], "snapshot-id") {
            changes.push(json!({"action": add, member: item}));
        }
        for id in removed(&before[list], &after[list], "snapshot-id") {
            changes.push(json!({"action": remove, "snapshot-id": id}));
        }
    }
    for (list, id, action, key) in [
        (
            "partition-specs",
            "spec-id",
            "remove-partition-specs",
            "spec-ids",
        ),
        ("schemas", "schema-id", "remove-schemas", "schema-ids"),
    ] {
        let ids = removed(&before[list], &after[list], id);
        if !ids.is_empty() {
            changes.push(json!({"action": action, key: ids}));
        }
    }
    changes
}

fn items(list: &Value) -> &[Value] {
    list.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn ids(list: &Value, id: &str) -> BTreeSet<String> {
    items(list)
        .iter()
        .map(|item| item[id].to_string())
        .collect()
}

/// The members of `after` whose id `before` lacks, in `after`'s order.
fn added<'a>(before: &Value, after: &'a Value, id: &str) -> Vec<&'a Value> {
    let known = ids(before, id);
    items(after)
        .iter()
        .filter(|item| !known.contains(&item[id].to_string()))
        .collect()
}

/// The members of `after` that are new or differ from `before`'s of the same id.
fn changed<'a>(before: &Value, after: &'a Value, id: &str) -> Vec<&'a Value> {
    items(after)
        .iter()
        .filter(|item| !items(before).iter().any(|old| old == *item))
        .filter(|item| !item[id].is_null())
        .collect()
}

/// The ids of `before`'s members that `after` lacks.
fn removed(before: &Value, after: &Value, id: &str) -> Vec<Value> {
    let kept = ids(after, id);
    items(before)
        .iter()
        .filter(|item| !kept.contains(&item[id].to_string()))
        .map(|item| item[id].clone())
        .collect()
}

fn properties(before: &Value, after: &Value, changes: &mut Vec<Value>) {
    let (empty_before, empty_after) = (Map::new(), Map::new());
    let before = before.as_object().unwrap_or(&empty_before);
    let after = after.as_object().unwrap_or(&empty_after);
    let updates: Map<String, Value> = after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if !updates.is_empty() {
        changes.push(json!({"action": "set-properties", "updates": updates}));
    }
    let removals: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    if !removals.is_empty() {
        changes.push(json!({"action": "remove-properties", "removals": removals}));
    }
}

fn refs(before: &Value, after: &Value, changes: &mut Vec<Value>) {
    let (empty_before, empty_after) = (Map::new(), Map::new());
    let before = before.as_object().unwrap_or(&empty_before);
    let after = after.as_object().unwrap_or(&empty_after);
    for (name, reference) in after {
        if before.get(name) != Some(reference) {
            let mut update = json!({"action": "set-snapshot-ref", "ref-name": name});
            if let (Some(update), Some(fields)) = (update.as_object_mut(), reference.as_object()) {
                update.extend(fields.clone());
            }
            changes.push(update);
        }
    }
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        changes.push(json!({"action": "remove-snapshot-ref", "ref-name": name}));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::TableUpdate;
    use iceberg::spec::{
        FormatVersion, NestedField, Operation, PrimitiveType, Schema, Snapshot, SnapshotReference,
        SnapshotRetention, SortOrder, Summary, TableMetadataBuilder, Type, UnboundPartitionSpec,
    };

    use super::*;
    use crate::upstream::history::produced_by;

    const LOCATION: &str = "file:///lake/ns/t/metadata/00001.metadata.json";

    fn schema(id: i32, fields: &[(i32, &str)]) -> Schema {
        Schema::builder()
            .with_schema_id(id)
            .with_fields(fields.iter().map(|(field_id, name)| {
                NestedField::optional(*field_id, *name, Type::Primitive(PrimitiveType::Long)).into()
            }))
            .build()
            .unwrap()
    }

    fn created() -> TableMetadata {
        TableMetadataBuilder::new(
            schema(0, &[(1, "id")]),
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "file:///lake/ns/t".to_string(),
            FormatVersion::V2,
            HashMap::from([("owner".to_string(), "a".to_string())]),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata
    }

    fn snapshot(id: i64, parent: Option<i64>, sequence: i64) -> Snapshot {
        Snapshot::builder()
            .with_snapshot_id(id)
            .with_parent_snapshot_id(parent)
            .with_sequence_number(sequence)
            .with_timestamp_ms(now_ms() + id)
            .with_manifest_list(format!("file:///lake/ns/t/metadata/snap-{id}.avro"))
            .with_schema_id(0)
            .with_summary(Summary {
                operation: Operation::Append,
                additional_properties: HashMap::new(),
            })
            .build()
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    fn apply(before: &TableMetadata, updates: Vec<TableUpdate>) -> TableMetadata {
        let mut builder = before.clone().into_builder(Some(LOCATION.to_string()));
        for update in updates {
            builder = update.apply(builder).unwrap();
        }
        builder.build().unwrap().metadata
    }

    fn main_ref(id: i64) -> TableUpdate {
        TableUpdate::SetSnapshotRef {
            ref_name: "main".to_string(),
            reference: SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)),
        }
    }

    /// The diff, replayed on the earlier state, gives the later one.
    fn assert_replays(before: &TableMetadata, after: &TableMetadata) {
        let changes = changes_between(Some(before), after);
        let updates: Vec<TableUpdate> = serde_json::from_value(Value::Array(changes.clone()))
            .unwrap_or_else(|e| panic!("not table updates: {e}: {changes:#?}"));
        assert!(
            produced_by(before, LOCATION, updates, after),
            "the diff does not replay: {changes:#?}"
        );
    }

    #[test]
    fn a_diff_replays_to_the_later_state() {
        let before = created();
        let appended = apply(
            &before,
            vec![
                TableUpdate::AddSnapshot {
                    snapshot: snapshot(11, None, 1),
                },
                main_ref(11),
            ],
        );
        assert_replays(&before, &appended);
        let evolved = apply(
            &appended,
            vec![
                TableUpdate::AddSchema {
                    schema: schema(1, &[(1, "id"), (2, "n")]),
                },
                TableUpdate::SetCurrentSchema { schema_id: -1 },
                TableUpdate::SetProperties {
                    updates: HashMap::from([("k".to_string(), "v".to_string())]),
                },
                TableUpdate::RemoveProperties {
                    removals: vec!["owner".to_string()],
                },
                TableUpdate::AddSnapshot {
                    snapshot: snapshot(12, Some(11), 2),
                },
                main_ref(12),
                TableUpdate::SetSnapshotRef {
                    ref_name: "audit".to_string(),
                    reference: SnapshotReference::new(
                        11,
                        SnapshotRetention::branch(None, None, None),
                    ),
                },
            ],
        );
        assert_replays(&appended, &evolved);
        let expired = apply(
            &evolved,
            vec![
                TableUpdate::RemoveSnapshotRef {
                    ref_name: "audit".to_string(),
                },
                TableUpdate::RemoveSnapshots {
                    snapshot_ids: vec![11],
                },
            ],
        );
        assert_replays(&evolved, &expired);
        let actions: Vec<Value> = changes_between(Some(&evolved), &expired)
            .into_iter()
            .map(|c| c["action"].clone())
            .collect();
        assert_eq!(
            actions,
            [json!("remove-snapshot-ref"), json!("remove-snapshots")]
        );
    }

    #[test]
    fn unchanged_is_no_changes_and_a_first_state_is_its_creation() {
        let table = created();
        assert!(changes_between(Some(&table), &table).is_empty());
        let actions: Vec<Value> = changes_between(None, &table)
            .into_iter()
            .map(|c| c["action"].clone())
            .collect();
        for action in [
            "assign-uuid",
            "upgrade-format-version",
            "set-location",
            "add-schema",
            "add-spec",
            "add-sort-order",
            "set-current-schema",
            "set-default-spec",
            "set-default-sort-order",
            "set-properties",
        ] {
            assert!(
                actions.contains(&json!(action)),
                "{action} missing: {actions:?}"
            );
        }
    }
}
