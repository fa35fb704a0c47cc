//! The location policy: every path a table's or view's metadata holds lies under its warehouse's
//! root.
//!
//! This is the one place that decides it. Table locations (create, stage-create, `set-location`,
//! register, a replica's), the metadata file a registration names, and every path a commit, a
//! registration or a replicated change adds (manifest lists, statistics and partition statistics,
//! metadata-log entries, the `write.*.path` properties) are parsed into a [`Location`] (which
//! refuses `..` and its disguises) and must lie strictly under the root. A path that does not gets
//! 400 `BadRequestException` naming the path and the root, before anything is written. Because
//! every path in a table's metadata passed here when it was added, purge and replication, which
//! read them back, stay inside the root too (and the storage itself refuses anything outside it).

use iceberg::TableUpdate;
use iceberg::spec::{TableMetadata, ViewMetadata};

use crate::error::{CatalogError, CatalogResult};
use crate::storage::Location;

use super::Warehouse;

/// Table properties whose values are locations where clients write the table's files.
pub const PATH_PROPERTIES: &[&str] = &[
    "write.data.path",
    "write.metadata.path",
    "write.object-storage.path",
    "write.folder-storage.path",
];

/// Parses a location a request names; `what` says which (e.g. "table location").
pub fn parse(what: &str, location: &str) -> CatalogResult<Location> {
    Location::parse(location)
        .map_err(|e| CatalogError::BadRequest(format!("{what} `{location}` is refused: {e}")))
}

/// Parses `location` and checks that it lies strictly under the warehouse root.
pub fn under_root(wh: &Warehouse, what: &str, location: &str) -> CatalogResult<Location> {
    let parsed = parse(what, location)?;
    if parsed.is_under(&wh.root) {
        Ok(parsed)
    } else {
        Err(CatalogError::BadRequest(format!(
            "{what} `{location}` is outside warehouse `{}` (root `{}`); table files must live \
             under the warehouse root",
            wh.name, wh.root
        )))
    }
}

/// Checks every path of a whole table metadata (a create, a registration, a replica's create).
pub fn check_metadata(wh: &Warehouse, metadata: &TableMetadata) -> CatalogResult<()> {
    under_root(wh, "table location", metadata.location())?;
    for snapshot in metadata.snapshots() {
        under_root(wh, "manifest list", snapshot.manifest_list())?;
    }
    for entry in metadata.metadata_log() {
        under_root(wh, "metadata-log entry", &entry.metadata_file)?;
    }
    for statistics in metadata.statistics_iter() {
        under_root(wh, "statistics file", &statistics.statistics_path)?;
    }
    for statistics in metadata.partition_statistics_iter() {
        under_root(wh, "partition statistics file", &statistics.statistics_path)?;
    }
    check_properties(wh, metadata.properties().iter())
}

/// Checks the one path a view's metadata holds, its location (a create, a registration, every
/// replace: the resulting metadata is checked, so a `set-location` cannot slip past).
pub fn check_view_metadata(wh: &Warehouse, metadata: &ViewMetadata) -> CatalogResult<()> {
    under_root(wh, "view location", metadata.location()).map(|_| ())
}

/// Checks the paths the changes of a commit add (the canonical changes `build()` returned, so
/// only what took effect, and nothing the table already held is read again).
pub fn check_changes(wh: &Warehouse, changes: &[TableUpdate]) -> CatalogResult<()> {
    for change in changes {
        match change {
            TableUpdate::SetLocation { location } => {
                under_root(wh, "table location", location)?;
            }
            TableUpdate::AddSnapshot { snapshot } => {
                under_root(wh, "manifest list", snapshot.manifest_list())?;
            }
            TableUpdate::SetStatistics { statistics } => {
                under_root(wh, "statistics file", &statistics.statistics_path)?;
            }
            TableUpdate::SetPartitionStatistics {
                partition_statistics,
            } => {
                under_root(
                    wh,
                    "partition statistics file",
                    &partition_statistics.statistics_path,
                )?;
            }
            TableUpdate::SetProperties { updates } => check_properties(wh, updates.iter())?,
            _ => {}
        }
    }
    Ok(())
}

fn check_properties<'a>(
    wh: &Warehouse,
    properties: impl Iterator<Item = (&'a String, &'a String)>,
) -> CatalogResult<()> {
    for (key, value) in properties {
        if PATH_PROPERTIES.contains(&key.as_str()) {
            under_root(wh, &format!("property `{key}`"), value)?;
        }
    }
    Ok(())
}
