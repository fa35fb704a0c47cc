//! View request bodies as Spark's Iceberg client sends them, and what tests read back.

use serde_json::{Value, json};

use super::simple_schema;

/// A view version as Spark's Iceberg client sends it.
pub fn view_version(version_id: i64, sql: &str) -> Value {
    json!({
        "version-id": version_id,
        "timestamp-ms": 1_764_000_000_000i64 + version_id,
        "schema-id": 0,
        "summary": { "engine-name": "spark", "engine-version": "3.5.9" },
        "representations": [{ "type": "sql", "sql": sql, "dialect": "spark" }],
        "default-namespace": ["ns"]
    })
}

pub fn create_body(name: &str, sql: &str) -> Value {
    json!({
        "name": name,
        "schema": simple_schema(),
        "view-version": view_version(1, sql),
        "properties": { "comment": "first" }
    })
}

/// replaceView as Spark's CREATE OR REPLACE VIEW sends it.
pub fn replace_body(uuid: &str, version_id: i64, sql: &str) -> Value {
    json!({
        "requirements": [{ "type": "assert-view-uuid", "uuid": uuid }],
        "updates": [
            { "action": "add-schema", "schema": simple_schema() },
            { "action": "add-view-version", "view-version": view_version(version_id, sql) },
            { "action": "set-current-view-version", "view-version-id": -1 }
        ]
    })
}

/// The SQL of a LoadViewResult's current version.
pub fn current_sql(load: &Value) -> String {
    let metadata = &load["metadata"];
    let current = metadata["current-version-id"].as_i64().unwrap();
    let version = metadata["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version-id"] == current)
        .unwrap();
    version["representations"][0]["sql"]
        .as_str()
        .unwrap()
        .to_string()
}
