//! Reading an upstream table's history: which metadata file followed a given one, and whether a
//! commit's updates are what produced it. The resolver (`commit`) uses these to settle a commit
//! whose answer floe never saw, and discovery uses them to log commits made past floe.
//!
//! An Iceberg table's metadata file lists the files before it (`metadata-log`, oldest first;
//! each commit appends the file it replaced), so the chain of states from any file the log still
//! names up to the current one is that list followed by the current file. A file the list no
//! longer names (`write.metadata.previous-versions-max` dropped it) cannot be placed: the caller
//! gets `None` and must not guess.

use iceberg::TableUpdate;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use serde_json::Value;

/// The metadata files after `known`, oldest first, ending with `current_location`; `None` when
/// `known` is neither current nor in the metadata-log.
pub fn states_after(
    known: &str,
    current_location: &str,
    current: &TableMetadata,
) -> Option<Vec<String>> {
    let chain = all_states(current_location, current);
    let at = chain.iter().position(|file| file == known)?;
    Some(chain[at + 1..].to_vec())
}

/// Every metadata file the table's metadata still names, oldest first, ending with the current.
pub fn all_states(current_location: &str, current: &TableMetadata) -> Vec<String> {
    current
        .metadata_log()
        .iter()
        .map(|entry| entry.metadata_file.clone())
        .chain([current_location.to_string()])
        .collect()
}

/// Whether applying `updates` to `previous` (the table at `previous_location`) gives `successor`,
/// compared on everything a commit decides (snapshots, refs, schemas, specs, sort orders,
/// properties, location, format version) and not on what the catalog stamps (timestamps, the
/// metadata-log itself). An update that does not apply means it was not this commit.
pub fn produced_by(
    previous: &TableMetadata,
    previous_location: &str,
    updates: Vec<TableUpdate>,
    successor: &TableMetadata,
) -> bool {
    let mut builder =
        TableMetadataBuilder::new_from_metadata(previous.clone(), Some(previous_location.into()));
    for update in updates {
        builder = match update.apply(builder) {
            Ok(builder) => builder,
            Err(_) => return false,
        };
    }
    match builder.build() {
        Ok(built) => Fingerprint::of(&built.metadata) == Fingerprint::of(successor),
        Err(_) => false,
    }
}

/// Whether two states agree on everything a commit decides (see [`produced_by`]).
pub fn same_state(a: &TableMetadata, b: &TableMetadata) -> bool {
    Fingerprint::of(a) == Fingerprint::of(b)
}

/// What a commit decides about a table's state: these fields of its metadata, as JSON.
#[derive(Debug, PartialEq)]
struct Fingerprint(Vec<Value>);

/// The fields of a table metadata that a commit decides (not the catalog's timestamps or logs).
const DECIDED: [&str; 12] = [
    "format-version",
    "location",
    "schemas",
    "current-schema-id",
    "partition-specs",
    "default-spec-id",
    "sort-orders",
    "default-sort-order-id",
    "properties",
    "snapshots",
    "current-snapshot-id",
    "refs",
];

impl Fingerprint {
    /// The lists sorted: the order of a metadata's snapshots (and schemas, specs, sort orders)
    /// is the writer's, not part of the state (iceberg-rust keeps them in hash maps).
    fn of(metadata: &TableMetadata) -> Self {
        Self::of_json(&serde_json::to_value(metadata).unwrap_or(Value::Null))
    }

    fn of_json(json: &Value) -> Self {
        Self(
            DECIDED
                .iter()
                .map(|key| match &json[key] {
                    Value::Array(items) => {
                        let mut items = items.clone();
                        items.sort_by_cached_key(Value::to_string);
                        Value::Array(items)
                    }
                    other => other.clone(),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_order_of_a_states_lists_is_not_part_of_it() {
        let snapshot = |id: i64| json!({"snapshot-id": id, "sequence-number": id});
        let state = |snapshots: Vec<Value>, owner: &str| json!({"snapshots": snapshots, "properties": {"owner": owner, "k": "v"}});
        let one = state(vec![snapshot(1), snapshot(2)], "a");
        assert_eq!(
            Fingerprint::of_json(&one),
            Fingerprint::of_json(&state(vec![snapshot(2), snapshot(1)], "a"))
        );
        assert_ne!(
            Fingerprint::of_json(&one),
            Fingerprint::of_json(&state(vec![snapshot(1)], "a"))
        );
        assert_ne!(
            Fingerprint::of_json(&one),
            Fingerprint::of_json(&state(vec![snapshot(1), snapshot(2)], "b"))
        );
    }
}
