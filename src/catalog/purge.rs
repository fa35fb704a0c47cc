//! Purging a dropped table. Every file its metadata references goes, as in Apache Iceberg's own
//! catalogs. Beyond that, the table's location is listed and everything left there goes too (data
//! files of commits that failed, metadata files trimmed from the log, interrupted copies), but
//! only when the location is provably the table's alone: one floe assigned (it ends in the
//! table's UUID) and no other table's location at or under it. A client may choose a location
//! that holds other tables' files (e.g. a namespace directory); those must survive.

use std::collections::BTreeSet;

use futures::StreamExt;

use iceberg::spec::TableMetadata;
use sqlx::PgPool;

use crate::db::catalog as db;
use crate::manifest_avro::{self, AvroRewriteError};
use crate::storage::{Location, Storage, StorageError};

/// The table property that, set to `false`, keeps a purge from deleting data files.
const GC_ENABLED: &str = "gc.enabled";

/// What a purge did.
#[derive(Debug, Default)]
pub struct PurgeReport {
    pub deleted: usize,
    /// Whether the table's location was listed (see [`location_is_exclusive`]).
    pub listed: bool,
    /// Of `deleted`, the files found by listing that the metadata did not reference.
    pub unreferenced: usize,
    /// Whether data files were left because the table has `gc.enabled=false`.
    pub data_files_kept: bool,
    /// Referenced files that lie outside the warehouse root: left alone.
    pub outside_root: usize,
    /// Manifest lists or manifests that could not be read (missing or corrupt): their entries stay.
    pub unreadable: Vec<String>,
    /// Deletes the storage refused (a path through a symbolic link out of the warehouse): those
    /// files stay, and so does whatever the link leads to.
    pub refused: Vec<String>,
}

/// The files a table's metadata references, in the order a purge deletes them: what the index
/// files name first, the index files next, the metadata files last. A purge cut short (a crash)
/// therefore leaves its index behind, and the purge that resumes it finds every file again.
#[derive(Debug, Default)]
struct Referenced {
    /// Data and delete files (live or not).
    data: BTreeSet<Location>,
    /// Manifests, manifest lists, statistics and partition statistics.
    indexes: BTreeSet<Location>,
    /// The current metadata file and the metadata log.
    metadata: BTreeSet<Location>,
}

impl Referenced {
    fn contains(&self, location: &Location) -> bool {
        self.data.contains(location)
            || self.indexes.contains(location)
            || self.metadata.contains(location)
    }

    fn len(&self) -> usize {
        self.data.len() + self.indexes.len() + self.metadata.len()
    }
}

/// Every file `metadata` references (with `data_files`, the data and delete files too). Paths that
/// do not parse, or lie outside the storage's root, are counted and left alone.
async fn referenced_files(
    storage: &dyn Storage,
    max_manifest_bytes: u64,
    metadata: &TableMetadata,
    metadata_location: &str,
    data_files: bool,
    report: &mut PurgeReport,
) -> Referenced {
    let mut files = Referenced::default();
    let keep = |path: &str, files: &mut BTreeSet<Location>, report: &mut PurgeReport| {
        match Location::parse(path) {
            Ok(location) if storage.check(&location).is_ok() => {
                files.insert(location);
            }
            _ => report.outside_root += 1,
        }
    };
    keep(metadata_location, &mut files.metadata, report);
    for entry in metadata.metadata_log() {
        keep(&entry.metadata_file, &mut files.metadata, report);
    }
    for statistics in metadata.statistics_iter() {
        keep(&statistics.statistics_path, &mut files.indexes, report);
    }
    for statistics in metadata.partition_statistics_iter() {
        keep(&statistics.statistics_path, &mut files.indexes, report);
    }
    let mut manifests = BTreeSet::new();
    for snapshot in metadata.snapshots() {
        let mut list = BTreeSet::new();
        keep(snapshot.manifest_list(), &mut list, report);
        for list_location in list {
            let read = read_paths(
                storage,
                max_manifest_bytes,
                &list_location,
                manifest_avro::manifest_paths,
            );
            match read.await {
                Ok(paths) => {
                    for path in paths {
                        keep(&path, &mut manifests, report);
                    }
                }
                Err(err) => report.unreadable.push(err),
            }
            files.indexes.insert(list_location);
        }
    }
    // Snapshots share manifests; each is read once.
    if data_files {
        for manifest in &manifests {
            let read = read_paths(
                storage,
                max_manifest_bytes,
                manifest,
                manifest_avro::entry_file_paths,
            );
            match read.await {
                Ok(paths) => {
                    for path in paths {
                        keep(&path, &mut files.data, report);
                    }
                }
                Err(err) => report.unreadable.push(err),
            }
        }
    }
    files.indexes.extend(manifests);
    files
}

/// Whether everything under the table's location belongs to this table: the location is under
/// the warehouse root, is one floe assigned (`<name>-<table uuid>`, see
/// `metadata::default_table_location`), and no table in the catalog (any warehouse) has its
/// location there or below. Call it after the dropped table's row is gone.
pub async fn location_is_exclusive(
    pool: &PgPool,
    warehouse_root: &Location,
    metadata: &TableMetadata,
) -> sqlx::Result<bool> {
    let Ok(location) = Location::parse(metadata.location()) else {
        return Ok(false);
    };
    let assigned_suffix = format!("-{}", metadata.uuid().simple());
    let assigned = location
        .file_name()
        .is_some_and(|last| last.ends_with(&assigned_suffix));
    if !assigned || !location.is_under(warehouse_root) {
        return Ok(false);
    }
    Ok(!db::location_may_hold_tables(pool, &location).await?)
}

/// Reads a manifest list or manifest and the paths `parse` finds in it; the error names the file.
async fn read_paths(
    storage: &dyn Storage,
    max_bytes: u64,
    location: &Location,
    parse: fn(&[u8]) -> Result<Vec<String>, AvroRewriteError>,
) -> Result<Vec<String>, String> {
    let bytes = storage
        .read(location, max_bytes)
        .await
        .map_err(|err| format!("{location}: {err}"))?;
    // Avro decoding is CPU work: off the async runtime's threads.
    tokio::task::spawn_blocking(move || parse(&bytes))
        .await
        .map_err(|err| format!("{location}: {err}"))?
        .map_err(|err| format!("{location}: {err}"))
}

/// Deletes the files of a dropped table that lie inside the storage's root (with `list_location`,
/// everything under its location as well), then any directories under its location left empty.
pub async fn purge_table(
    storage: &dyn Storage,
    max_manifest_bytes: u64,
    metadata: &TableMetadata,
    metadata_location: &str,
    list_location: bool,
) -> Result<PurgeReport, StorageError> {
    let mut report = PurgeReport::default();
    // `gc.enabled=false` says the data files may be shared with other tables (e.g. a snapshot of
    // another table): only the table's own metadata goes, as in Apache Iceberg's catalogs.
    let gc_enabled = metadata
        .properties()
        .get(GC_ENABLED)
        .is_none_or(|value| !value.eq_ignore_ascii_case("false"));
    report.data_files_kept = !gc_enabled;
    let referenced = referenced_files(
        storage,
        max_manifest_bytes,
        metadata,
        metadata_location,
        gc_enabled,
        &mut report,
    )
    .await;
    let table_location = Location::parse(metadata.location())
        .ok()
        .filter(|location| location.is_under(storage.root()));
    if let Some(location) = table_location
        .as_ref()
        .filter(|_| list_location && gc_enabled)
    {
        report.listed = true;
        // Page by page: what no metadata references goes with its page, before any referenced
        // file, so the listing is never held whole and a purge cut short still finds the
        // metadata that names the rest.
        let mut pages = storage.list_pages(location);
        while let Some(page) = pages.next().await {
            let unreferenced: Vec<Location> = page?
                .into_iter()
                .filter(|file| !referenced.contains(file))
                .collect();
            report.unreferenced += unreferenced.len();
            delete_all(storage, &unreferenced, &mut report).await?;
        }
    }
    report.deleted = referenced.len() + report.unreferenced;
    for tier in [referenced.data, referenced.indexes, referenced.metadata] {
        let tier: Vec<Location> = tier.into_iter().collect();
        delete_all(storage, &tier, &mut report).await?;
    }
    if let Some(location) = &table_location {
        storage.remove_empty_dirs(location).await?;
    }
    Ok(report)
}

/// Deletes `files`; a delete the storage refuses (a link out of the warehouse) is reported and
/// the purge goes on.
async fn delete_all(
    storage: &dyn Storage,
    files: &[Location],
    report: &mut PurgeReport,
) -> Result<(), StorageError> {
    match storage.delete_many(files).await {
        Err(err) if err.is_refusal() => {
            report.refused.push(err.to_string());
            Ok(())
        }
        other => other,
    }
}
