//! Purging a dropped table: delete exactly the files its metadata references, as Apache Iceberg's own
//! catalogs do, never "everything under the location". A client may choose a table location that
//! holds other tables' files too (e.g. a namespace directory); those must survive.

use std::collections::BTreeSet;

use iceberg::spec::{Manifest, ManifestList, TableMetadata};

use crate::storage::{self, Storage, StorageError};

/// What a purge did.
#[derive(Debug, Default)]
pub struct PurgeReport {
    pub deleted: usize,
    /// Referenced files that lie outside the warehouse root: left alone.
    pub outside_root: usize,
    /// Manifest lists or manifests that could not be read (missing or corrupt): their entries stay.
    pub unreadable: Vec<String>,
}

/// Every file `metadata` references: metadata files (current and logged), manifest lists, manifests,
/// data and delete files (live or not), statistics and partition statistics.
async fn referenced_files(
    storage: &dyn Storage,
    metadata: &TableMetadata,
    metadata_location: &str,
    report: &mut PurgeReport,
) -> BTreeSet<String> {
    let mut files = BTreeSet::from([metadata_location.to_string()]);
    files.extend(
        metadata
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.clone()),
    );
    files.extend(
        metadata
            .statistics_iter()
            .map(|s| s.statistics_path.clone()),
    );
    files.extend(
        metadata
            .partition_statistics_iter()
            .map(|s| s.statistics_path.clone()),
    );
    let mut manifests = BTreeSet::new();
    for snapshot in metadata.snapshots() {
        let list_location = snapshot.manifest_list();
        files.insert(list_location.to_string());
        let list = match storage.read(list_location).await {
            Ok(bytes) => ManifestList::parse_with_version(&bytes, metadata.format_version()),
            Err(err) => {
                report.unreadable.push(format!("{list_location}: {err}"));
                continue;
            }
        };
        match list {
            Ok(list) => manifests.extend(list.entries().iter().map(|m| m.manifest_path.clone())),
            Err(err) => report.unreadable.push(format!("{list_location}: {err}")),
        }
    }
    // Snapshots share manifests; each is read once.
    for manifest_location in manifests {
        let parsed = match storage.read(&manifest_location).await {
            Ok(bytes) => Manifest::parse_avro(&bytes),
            Err(err) => {
                report
                    .unreadable
                    .push(format!("{manifest_location}: {err}"));
                files.insert(manifest_location);
                continue;
            }
        };
        match parsed {
            Ok(manifest) => {
                files.extend(manifest.entries().iter().map(|e| e.file_path().to_string()))
            }
            Err(err) => report
                .unreadable
                .push(format!("{manifest_location}: {err}")),
        }
        files.insert(manifest_location);
    }
    files
}

/// Deletes the files of a dropped table that lie inside the warehouse root, then any directories
/// under its location that are left empty.
pub async fn purge_table(
    storage: &dyn Storage,
    warehouse_root: &str,
    metadata: &TableMetadata,
    metadata_location: &str,
) -> Result<PurgeReport, StorageError> {
    let mut report = PurgeReport::default();
    for file in referenced_files(storage, metadata, metadata_location, &mut report).await {
        if storage::is_under(&file, warehouse_root) {
            storage.delete(&file).await?;
            report.deleted += 1;
        } else {
            report.outside_root += 1;
        }
    }
    if storage::is_under(metadata.location(), warehouse_root) {
        storage.remove_empty_dirs(metadata.location()).await?;
    }
    Ok(report)
}
