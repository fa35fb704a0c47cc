//! A table's log entry as replication reads it: decoded once, into what it says, before anything is
//! done with it. Every field the change needs must be there and of its type; none is defaulted, so
//! an entry recorded wrongly stops its stream naming its `seq` rather than replicating something
//! it never said.

use iceberg::TableUpdate;

use super::LogEntry;

/// What a table's log entry did.
#[derive(Debug, Clone)]
pub enum TableChange {
    /// A commit: these canonical updates, giving this metadata file.
    Commit {
        updates: Vec<TableUpdate>,
        new_metadata_location: String,
    },
    Rename {
        namespace: Vec<String>,
        name: String,
    },
    Drop {
        purge: bool,
    },
    /// A replica's source table was dropped; the replica stays, marked.
    Orphan,
    /// The table's whole metadata was replaced (a create or a registration over it).
    Replaced {
        kind: String,
    },
}

/// A decoded table entry.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub seq: i64,
    pub version: i64,
    pub namespace: Vec<String>,
    pub name: String,
    pub change: TableChange,
}

/// An entry that does not say what a table entry of its kind must.
#[derive(Debug, Clone, thiserror::Error)]
#[error("log entry {seq} ({kind}) cannot be read: {reason}")]
pub struct UndecodableEntry {
    pub seq: i64,
    pub kind: String,
    pub reason: String,
}

impl TryFrom<&LogEntry> for TableEntry {
    type Error = UndecodableEntry;

    fn try_from(entry: &LogEntry) -> Result<Self, Self::Error> {
        let fail = |reason: String| UndecodableEntry {
            seq: entry.seq,
            kind: entry.kind.clone(),
            reason,
        };
        let required = |value: Option<&str>, what: &str| {
            value
                .map(str::to_string)
                .ok_or_else(|| fail(format!("it has no {what}")))
        };
        let version = entry
            .table_version
            .ok_or_else(|| fail("it has no table version".to_string()))?;
        let name = required(entry.table_name.as_deref(), "table name")?;
        let change = match entry.kind.as_str() {
            "commit-table" => TableChange::Commit {
                updates: serde_json::from_value(entry.changes.clone())
                    .map_err(|e| fail(format!("its changes are not table updates: {e}")))?,
                new_metadata_location: required(
                    entry.new_metadata_location.as_deref(),
                    "new metadata location",
                )?,
            },
            "rename-table" => {
                let destination = &entry.details["destination"];
                TableChange::Rename {
                    namespace: serde_json::from_value::<Vec<String>>(
                        destination["namespace"].clone(),
                    )
                    .map_err(|e| fail(format!("its destination namespace is unreadable: {e}")))?,
                    name: required(destination["name"].as_str(), "destination name")?,
                }
            }
            "drop-table" => TableChange::Drop {
                purge: entry.details["purge"]
                    .as_bool()
                    .ok_or_else(|| fail("it does not say whether the drop purged".to_string()))?,
            },
            "orphan-table" => TableChange::Orphan,
            "observe-table" if let Some(updates) = observed_step(entry, version) => {
                TableChange::Commit {
                    updates,
                    new_metadata_location: required(
                        entry.new_metadata_location.as_deref(),
                        "new metadata location",
                    )?,
                }
            }
            "create-table" | "register-table" | "observe-table" => TableChange::Replaced {
                kind: entry.kind.clone(),
            },
            other => return Err(fail(format!("`{other}` is not a change of a table"))),
        };
        Ok(Self {
            seq: entry.seq,
            version,
            namespace: entry.namespace.clone(),
            name,
            change,
        })
    }
}

/// The updates of an `observe-table` entry that is a step of a table floe knew (a commit made
/// past floe at an upstream, its changes derived from the state before): replayable as a commit,
/// so a replica follows it without a backfill. `None` for a first state, a step whose changes are
/// unknown (the state before was unreadable), or one that gives the table another identity.
fn observed_step(entry: &LogEntry, version: i64) -> Option<Vec<TableUpdate>> {
    if version <= 1 || !entry.details["changes-unknown"].is_null() {
        return None;
    }
    let updates: Vec<TableUpdate> = serde_json::from_value(entry.changes.clone()).ok()?;
    let another_table = updates.iter().any(|u| {
        matches!(
            u,
            TableUpdate::AssignUuid { .. } | TableUpdate::UpgradeFormatVersion { .. }
        )
    });
    (!another_table).then_some(updates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: &str, changes: serde_json::Value, details: serde_json::Value) -> LogEntry {
        LogEntry {
            seq: 42,
            warehouse: "wh".to_string(),
            txn_group: uuid::Uuid::nil(),
            kind: kind.to_string(),
            namespace: vec!["db".to_string()],
            table_name: Some("t".to_string()),
            table_id: Some(uuid::Uuid::nil()),
            table_uuid: Some(uuid::Uuid::nil()),
            table_version: Some(3),
            changes,
            requirements: json!([]),
            metadata: None,
            details,
            principal: "p".to_string(),
            origin_region: "r".to_string(),
            committed_at: chrono::Utc::now(),
            previous_metadata_location: None,
            new_metadata_location: Some("file:///wh/t/metadata/00002-x.metadata.json".to_string()),
        }
    }

    #[test]
    fn entries_decode_into_what_they_say() {
        let commit = entry(
            "commit-table",
            json!([{ "action": "set-properties", "updates": { "a": "b" } }]),
            json!({}),
        );
        match TableEntry::try_from(&commit).unwrap().change {
            TableChange::Commit { updates, .. } => assert_eq!(updates.len(), 1),
            other => panic!("{other:?}"),
        }
        let observed = entry(
            "observe-table",
            json!([{ "action": "set-properties", "updates": { "a": "b" } }]),
            json!({}),
        );
        assert!(matches!(
            TableEntry::try_from(&observed).unwrap().change,
            TableChange::Commit { .. }
        ));
        // A first state, changes unknown, or a new identity: the whole metadata is sent again.
        let mut first = observed.clone();
        first.table_version = Some(1);
        let mut unknown = observed.clone();
        unknown.details = json!({ "changes-unknown": "the previous metadata is unreadable" });
        let mut replaced = observed.clone();
        replaced.changes = json!([{ "action": "assign-uuid", "uuid": uuid::Uuid::nil() }]);
        for whole in [first, unknown, replaced] {
            assert!(matches!(
                TableEntry::try_from(&whole).unwrap().change,
                TableChange::Replaced { .. }
            ));
        }
        let drop = entry("drop-table", json!([]), json!({ "purge": true }));
        assert!(matches!(
            TableEntry::try_from(&drop).unwrap().change,
            TableChange::Drop { purge: true }
        ));
    }

    #[test]
    fn missing_or_wrong_fields_are_errors_naming_the_seq() {
        for bad in [
            entry("drop-table", json!([]), json!({})),
            entry(
                "commit-table",
                json!([{ "action": "no-such-action" }]),
                json!({}),
            ),
            entry("commit-table", json!("[]"), json!({})),
            entry(
                "rename-table",
                json!([]),
                json!({ "destination": { "namespace": ["x"] } }),
            ),
            entry("create-namespace", json!([]), json!({})),
        ] {
            let err = TableEntry::try_from(&bad).unwrap_err();
            assert!(err.to_string().contains("log entry 42"), "{err}");
        }
        let mut unnamed = entry("orphan-table", json!([]), json!({}));
        unnamed.table_version = None;
        assert!(TableEntry::try_from(&unnamed).is_err());
    }
}
