//! Table metadata helpers: building a new table's metadata, naming metadata files, reading the
//! file a registration names, and shaping the metadata a client asked for.

use std::collections::HashMap;

use iceberg::spec::{
    FormatVersion, SortOrder, TableMetadataBuildResult, TableMetadataBuilder, UnboundPartitionSpec,
};
use iceberg::{TableCreation, TableUpdate};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{CatalogError, CatalogResult};
use crate::storage::{Location, StorageError};

use super::requests::CreateTableRequest;
use super::{Warehouse, paths};
use crate::names::TableName;

/// Maps an iceberg error from building or applying metadata to a 400 with its message.
pub fn invalid(err: iceberg::Error) -> CatalogError {
    CatalogError::BadRequest(format!("invalid table update: {err}"))
}

/// Reads the metadata file a registration names (`subject` as the messages name the object:
/// `db.t`, `view db.v`; `kind`: `table metadata`, `view metadata`): it must lie under the warehouse
/// root, be at most `max_bytes`, exist and parse. Each of these is the client's to get right, so
/// each is a 400 saying which.
pub async fn read_registered<T: serde::de::DeserializeOwned>(
    wh: &Warehouse,
    max_bytes: u64,
    metadata_location: &str,
    subject: &str,
    kind: &str,
) -> CatalogResult<(Location, T)> {
    let file = paths::under_root(wh, "metadata-location", metadata_location)?;
    let bytes = wh
        .storage
        .read(&file, max_bytes)
        .await
        .map_err(|e| match e {
            StorageError::NotFound(_) => CatalogError::BadRequest(format!(
                "cannot register {subject}: metadata file {metadata_location} does not exist"
            )),
            other => other.into(),
        })?;
    let parsed = serde_json::from_slice(&bytes).map_err(|e| {
        CatalogError::BadRequest(format!(
            "cannot register {subject}: {metadata_location} is not valid {kind}: {e}"
        ))
    })?;
    Ok((file, parsed))
}

/// `<root>/<namespace levels>/<table>-<uuid>`: unique, so a dropped table's files never collide
/// with its successor's.
pub fn default_table_location(
    wh: &Warehouse,
    table: &TableName,
    table_uuid: Uuid,
) -> CatalogResult<Location> {
    let name = format!("{}-{}", table.name, table_uuid.simple());
    Ok(wh
        .root
        .join_all(table.namespace.levels())
        .and_then(|namespace| namespace.join(&name))
        .map_err(StorageError::from)?)
}

/// `<location>/metadata/NNNNN-<uuid>.metadata.json`, numbered from the table version (00000 at
/// creation).
pub fn metadata_file_location(table_location: &str, version: i64) -> CatalogResult<Location> {
    let name = format!("{:05}-{}.metadata.json", version - 1, Uuid::new_v4());
    Ok(paths::parse("table location", table_location)?
        .join("metadata")
        .and_then(|dir| dir.join(&name))
        .map_err(StorageError::from)?)
}

/// The metadata of a table created by createTable.
pub fn build_from_request(
    wh: &Warehouse,
    table: &TableName,
    req: &CreateTableRequest,
) -> CatalogResult<TableMetadataBuildResult> {
    let table_uuid = Uuid::now_v7();
    let location = match &req.location {
        Some(location) => paths::under_root(wh, "table location", location)?.to_string(),
        None => default_table_location(wh, table, table_uuid)?.to_string(),
    };
    // `format-version` among the properties chooses the format version (DuckDB sends it so), as in
    // Apache Iceberg's own catalogs; it is not stored as a property.
    let mut properties = req.properties.clone();
    let format_version = match properties.remove("format-version").as_deref() {
        None | Some("2") => FormatVersion::V2,
        Some("1") => FormatVersion::V1,
        Some("3") => FormatVersion::V3,
        Some(other) => {
            return Err(CatalogError::BadRequest(format!(
                "format-version `{other}` is not supported: use 1, 2 or 3"
            )));
        }
    };
    let creation = TableCreation::builder()
        .name(table.name.clone())
        .location(location)
        .schema(req.schema.clone())
        .partition_spec_opt(req.partition_spec.clone())
        .sort_order_opt(req.write_order.clone())
        .properties(properties)
        .format_version(format_version)
        .build();
    let builder = TableMetadataBuilder::from_table_creation(creation)
        .map_err(invalid)?
        .assign_uuid(table_uuid);
    let built = builder.build().map_err(invalid)?;
    paths::check_metadata(wh, &built.metadata)?;
    Ok(built)
}

/// The metadata of a table created by a commit with `assert-create` (a staged create): the updates
/// carry the whole table. The first schema, spec, sort order, location and format version seed a
/// builder; then every update is applied in order, as for any commit.
pub fn build_from_updates(
    wh: &Warehouse,
    table: &TableName,
    updates: Vec<TableUpdate>,
) -> CatalogResult<TableMetadataBuildResult> {
    let mut schema = None;
    let mut spec = None;
    let mut sort_order = None;
    let mut location = None;
    let mut format_version = FormatVersion::V2;
    let mut uuid = None;
    for update in &updates {
        match update {
            TableUpdate::AddSchema { schema: s } if schema.is_none() => schema = Some(s.clone()),
            TableUpdate::AddSpec { spec: s } if spec.is_none() => spec = Some(s.clone()),
            TableUpdate::AddSortOrder { sort_order: o } if sort_order.is_none() => {
                sort_order = Some(o.clone())
            }
            TableUpdate::SetLocation { location: l } => location = Some(l.clone()),
            TableUpdate::UpgradeFormatVersion { format_version: v } => format_version = *v,
            TableUpdate::AssignUuid { uuid: u } => uuid = Some(*u),
            _ => {}
        }
    }
    let schema = schema.ok_or_else(|| {
        CatalogError::BadRequest(
            "a commit with assert-create must add a schema (add-schema)".to_string(),
        )
    })?;
    let uuid = uuid.unwrap_or_else(Uuid::now_v7);
    let location = match location {
        Some(location) => paths::under_root(wh, "table location", &location)?.to_string(),
        None => default_table_location(wh, table, uuid)?.to_string(),
    };
    let mut builder = TableMetadataBuilder::new(
        schema,
        spec.unwrap_or_else(|| UnboundPartitionSpec::builder().build()),
        sort_order.unwrap_or_else(SortOrder::unsorted_order),
        location,
        format_version,
        HashMap::new(),
    )
    .map_err(invalid)?
    .assign_uuid(uuid);
    for update in updates {
        builder = update.apply(builder).map_err(invalid)?;
    }
    let built = builder.build().map_err(invalid)?;
    paths::check_metadata(wh, &built.metadata)?;
    Ok(built)
}

/// Which snapshots loadTable returns (`snapshots=all|refs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotsMode {
    #[default]
    All,
    Refs,
}

/// Keeps only the snapshots that a branch or tag points at, for `snapshots=refs`.
pub fn only_referenced_snapshots(metadata_json: &str) -> CatalogResult<String> {
    let mut metadata: Value = serde_json::from_str(metadata_json)
        .map_err(|e| CatalogError::Database(sqlx::Error::Decode(e.into())))?;
    let referenced: Vec<i64> = metadata
        .get("refs")
        .and_then(Value::as_object)
        .map(|refs| {
            refs.values()
                .filter_map(|r| r.get("snapshot-id").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Array(snapshots)) = metadata.get_mut("snapshots") {
        snapshots.retain(|s| {
            s.get("snapshot-id")
                .and_then(Value::as_i64)
                .is_some_and(|id| referenced.contains(&id))
        });
    }
    Ok(metadata.to_string())
}

/// A table's refs (branches and tags) by name. `TableMetadata` keeps them private, so they are read
/// from its JSON form; a v1 table without refs has `main` at its current snapshot.
pub fn refs(
    metadata: &iceberg::spec::TableMetadata,
) -> std::collections::BTreeMap<String, iceberg::spec::SnapshotReference> {
    use iceberg::spec::{MAIN_BRANCH, SnapshotReference, SnapshotRetention};
    let mut refs: std::collections::BTreeMap<String, SnapshotReference> =
        serde_json::to_value(metadata)
            .ok()
            .and_then(|v| serde_json::from_value(v["refs"].clone()).ok())
            .unwrap_or_default();
    if refs.is_empty()
        && let Some(id) = metadata.current_snapshot_id()
    {
        refs.insert(
            MAIN_BRANCH.to_string(),
            SnapshotReference::new(
                id,
                SnapshotRetention::Branch {
                    min_snapshots_to_keep: None,
                    max_snapshot_age_ms: None,
                    max_ref_age_ms: None,
                },
            ),
        );
    }
    refs
}
