//! Copying the files a change newly references into the destination storage.
//!
//! For a snapshot: its manifests' live files first (data and equality-delete files byte for byte,
//! skipped when already there with the same size; position-delete files with `file_path`
//! rewritten), then each manifest rewritten, then the manifest list rewritten. Each file is written
//! only after everything it points to is durable, so a file already at the destination proves the
//! files below it are there too, after a crash or a power cut, and a copy interrupted by either
//! resumes where it stopped.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use apache_avro::types::Value;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::delete_files::{self, DeleteFileError};
use super::paths::{PathError, PathMap};
use crate::manifest_avro::{self as avro, AvroRewriteError};
use crate::storage::{Location, Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{file}: {source}")]
    Avro {
        file: String,
        #[source]
        source: AvroRewriteError,
    },
    #[error("{file}: {source}")]
    DeleteFile {
        file: String,
        #[source]
        source: DeleteFileError,
    },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("copy of {file} wrote {written} bytes, but the source manifest says {expected}")]
    SizeMismatch {
        file: String,
        written: u64,
        expected: u64,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// Manifest entry status DELETED: the entry records a removal; its file is not live.
const STATUS_DELETED: i32 = 2;
/// The field id of a position-delete file's `file_path` column (reserved by the Iceberg spec).
const DELETE_FILE_PATH_FIELD_ID: i32 = 2_147_483_546;
/// data_file.content values.
const CONTENT_POSITION_DELETES: i32 = 1;

/// What one copier has moved, for status and the benchmark.
#[derive(Debug, Default)]
pub struct CopyStats {
    pub files_copied: AtomicU64,
    pub files_skipped: AtomicU64,
    pub bytes_copied: AtomicU64,
}

/// Copies one table's files from its source storage into a replica's.
#[derive(Clone)]
pub struct Copier {
    source: Arc<dyn Storage>,
    destination: Arc<dyn Storage>,
    map: PathMap,
    /// Bounds the files copied at once (each holds one copy buffer).
    permits: Arc<Semaphore>,
    /// The most of a manifest list, manifest, position-delete or Puffin file read into memory.
    max_file_bytes: u64,
    /// Whether files were copied without syncing since the last `finish`.
    needs_sync: Arc<AtomicBool>,
    pub stats: Arc<CopyStats>,
}

impl Copier {
    pub fn new(
        source: Arc<dyn Storage>,
        destination: Arc<dyn Storage>,
        map: PathMap,
        parallel_files: usize,
        max_file_bytes: u64,
    ) -> Self {
        Self {
            source,
            destination,
            map,
            permits: Arc::new(Semaphore::new(parallel_files.max(1))),
            max_file_bytes,
            needs_sync: Arc::default(),
            stats: Arc::default(),
        }
    }

    pub fn map(&self) -> &PathMap {
        &self.map
    }

    /// Makes every copied file durable: call before the destination commits a change naming them.
    pub async fn finish(&self) -> Result<(), CopyError> {
        if self.needs_sync.swap(false, Ordering::Relaxed) {
            self.destination.sync_all().await?;
        }
        Ok(())
    }

    /// Copies a snapshot's files; returns the replica's manifest list.
    pub async fn copy_snapshot(&self, manifest_list: &str) -> Result<String, CopyError> {
        let source = self.map.source_file(manifest_list)?;
        let destination = self.map.rewrite(manifest_list)?;
        if self.destination.size(&destination).await?.is_some() {
            self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(destination.to_string());
        }
        let bytes = Arc::new(self.source.read(&source, self.max_file_bytes).await?);
        let avro_err = |source| CopyError::Avro {
            file: manifest_list.to_string(),
            source,
        };
        let manifests = cpu({
            let bytes = bytes.clone();
            move || avro::manifest_paths(&bytes)
        })
        .await
        .map_err(avro_err)?;
        // A few manifests at once; their files share the copier's permits.
        let lengths: HashMap<String, u64> = futures::stream::iter(manifests)
            .map(|manifest| async move {
                let length = self.copy_manifest(&manifest).await?;
                Ok::<_, CopyError>((manifest, length))
            })
            .buffer_unordered(4)
            .try_collect()
            .await?;
        let map = self.map.clone();
        let rewritten = cpu(move || rewrite_manifest_list(&bytes, &map, &lengths))
            .await
            .map_err(avro_err)?;
        self.write_bytes(&destination, rewritten).await?;
        Ok(destination.to_string())
    }

    /// Copies a manifest's live files and writes the rewritten manifest; returns its length.
    async fn copy_manifest(&self, manifest: &str) -> Result<u64, CopyError> {
        let source = self.map.source_file(manifest)?;
        let destination = self.map.rewrite(manifest)?;
        if let Some(length) = self.destination.size(&destination).await? {
            self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(length);
        }
        let bytes = Arc::new(self.source.read(&source, self.max_file_bytes).await?);
        let avro_err = |source| CopyError::Avro {
            file: manifest.to_string(),
            source,
        };
        let files = cpu({
            let bytes = bytes.clone();
            move || live_files(&bytes)
        })
        .await
        .map_err(avro_err)?;
        // Position-delete files change size when rewritten; the manifest must carry the new size.
        let new_sizes: HashMap<String, u64> = futures::stream::iter(files)
            .map(|file| async move {
                let size = self.copy_live_file(&file).await?;
                Ok::<_, CopyError>((file.path, size))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let map = self.map.clone();
        let rewritten = cpu(move || rewrite_manifest(&bytes, &map, &new_sizes))
            .await
            .map_err(avro_err)?;
        let length = rewritten.len() as u64;
        // The manifest's existence is what a resumed copy trusts: the data files it names must be
        // durable before it is (they were copied without a sync of their own).
        self.finish().await?;
        self.write_bytes(&destination, rewritten).await?;
        Ok(length)
    }

    /// Copies (or rewrites) one live file; returns its size at the destination.
    async fn copy_live_file(&self, file: &LiveFile) -> Result<u64, CopyError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        let source = self.map.source_file(&file.path)?;
        let destination = self.map.rewrite(&file.path)?;
        if file.content == CONTENT_POSITION_DELETES && file.format.eq_ignore_ascii_case("puffin") {
            // A deletion vector: several may share one Puffin file, each naming its data file.
            if let Some(size) = self.destination.size(&destination).await? {
                self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(size);
            }
            let bytes = self.source.read(&source, self.max_file_bytes).await?;
            let map = self.map.clone();
            let rewritten = cpu(move || delete_files::rewrite_puffin_references(&bytes, &map))
                .await
                .map_err(|e| CopyError::Unsupported(format!("{}: {e}", file.path)))?;
            let size = rewritten.len() as u64;
            self.write_bytes(&destination, rewritten).await?;
            return Ok(size);
        }
        if file.content == CONTENT_POSITION_DELETES {
            if !file.format.eq_ignore_ascii_case("parquet") {
                return Err(CopyError::Unsupported(format!(
                    "position-delete file {} is {}; floe rewrites Parquet position deletes only",
                    file.path, file.format
                )));
            }
            if let Some(size) = self.destination.size(&destination).await? {
                self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(size);
            }
            let bytes = Bytes::from(self.source.read(&source, self.max_file_bytes).await?);
            let map = self.map.clone();
            let rewritten =
                cpu(move || delete_files::rewrite_parquet_position_deletes(bytes, &map))
                    .await
                    .map_err(|source| CopyError::DeleteFile {
                        file: file.path.clone(),
                        source,
                    })?;
            let size = rewritten.len() as u64;
            self.write_bytes(&destination, rewritten).await?;
            return Ok(size);
        }
        self.copy_verbatim(&source, &destination, file.size).await?;
        Ok(file.size)
    }

    /// Copies a file byte for byte, unless the destination already has it at the expected size.
    pub async fn copy_verbatim(
        &self,
        source: &Location,
        destination: &Location,
        expected: u64,
    ) -> Result<(), CopyError> {
        if self.destination.size(destination).await? == Some(expected) {
            self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Data files are made durable together, by `finish`, before the change is applied.
        self.needs_sync.store(true, Ordering::Relaxed);
        let written = match self.server_side_copy(source, destination, expected).await? {
            Some(written) => written,
            None => {
                let mut reader = self.source.open(source).await?;
                self.destination
                    .write_stream(destination, &mut reader, false)
                    .await?
            }
        };
        if written != expected {
            return Err(CopyError::SizeMismatch {
                file: source.to_string(),
                written,
                expected,
            });
        }
        self.stats.files_copied.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_copied
            .fetch_add(written, Ordering::Relaxed);
        crate::telemetry::record_bytes_copied(written);
        Ok(())
    }

    /// A copy no byte of which passes through floe, where the two storages can do one: the kernel's
    /// between local directories; CopyObject (UploadPartCopy above 1 GiB) between S3 buckets the
    /// destination's keys can read. `None` when the file must be streamed instead.
    async fn server_side_copy(
        &self,
        source: &Location,
        destination: &Location,
        expected: u64,
    ) -> Result<Option<u64>, CopyError> {
        self.source.check(source)?;
        if let (Some(from), Some(local)) = (self.source.as_local(), self.destination.as_local()) {
            return Ok(Some(local.copy_from(from, source, destination).await?));
        }
        if let (Some(_), Some(s3)) = (self.source.as_s3(), self.destination.as_s3()) {
            let part = crate::storage::s3::COPY_PART_BYTES;
            match s3.copy_object(source, destination, expected, part).await {
                Ok(()) => {
                    let written = self.destination.size(destination).await?.unwrap_or(0);
                    return Ok(Some(written));
                }
                // The destination's keys cannot read the source (another account): stream it.
                Err(StorageError::Denied { .. }) => return Ok(None),
                Err(other) => return Err(other.into()),
            }
        }
        Ok(None)
    }

    /// Copies a statistics or partition-statistics file (Puffin or Parquet) byte for byte.
    pub async fn copy_statistics(&self, path: &str, size: u64) -> Result<String, CopyError> {
        let source = self.map.source_file(path)?;
        let destination = self.map.rewrite(path)?;
        let _permit = self.permits.acquire().await.expect("never closed");
        self.copy_verbatim(&source, &destination, size).await?;
        Ok(destination.to_string())
    }

    async fn write_bytes(&self, destination: &Location, bytes: Vec<u8>) -> Result<(), CopyError> {
        let len = bytes.len() as u64;
        let mut reader = Cursor::new(bytes);
        // Rewritten files are durable one by one: their existence is what a resumed copy trusts.
        self.destination
            .write_stream(destination, &mut reader, true)
            .await?;
        self.stats.files_copied.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_copied.fetch_add(len, Ordering::Relaxed);
        crate::telemetry::record_bytes_copied(len);
        Ok(())
    }
}

/// Runs CPU-bound work (Avro and Parquet decoding and rewriting) off the async runtime's threads;
/// a panic in it propagates to the caller's task.
async fn cpu<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// A manifest list with each manifest's path rewritten and its new length.
fn rewrite_manifest_list(
    bytes: &[u8],
    map: &PathMap,
    lengths: &HashMap<String, u64>,
) -> Result<Vec<u8>, AvroRewriteError> {
    avro::rewrite_records(bytes, |record| {
        let path = avro::field(record, "manifest_path")
            .and_then(avro::as_str)
            .unwrap_or_default()
            .to_string();
        let length = lengths
            .get(&path)
            .copied()
            .ok_or_else(|| AvroRewriteError::Shape(format!("manifest {path} was not copied")))?;
        avro::map_string_field(record, "manifest_path", |p| Ok(map.rewrite(p)?.to_string()))?;
        avro::set_long_field(record, "manifest_length", length as i64)
    })
}

/// The files a manifest's entries keep live (entries of removals are not).
fn live_files(bytes: &[u8]) -> Result<Vec<LiveFile>, AvroRewriteError> {
    avro::map_records(bytes, |entry| {
        let status = avro::field(entry, "status").and_then(avro::as_long);
        let data_file = avro::field(entry, "data_file")
            .ok_or_else(|| AvroRewriteError::Shape("entry has no data_file".to_string()))?;
        if status == Some(i64::from(STATUS_DELETED)) {
            return Ok(None);
        }
        LiveFile::of(data_file).map(Some)
    })
}

/// A manifest with every path rewritten into the replica's location and the new sizes of
/// rewritten delete files.
fn rewrite_manifest(
    bytes: &[u8],
    map: &PathMap,
    new_sizes: &HashMap<String, u64>,
) -> Result<Vec<u8>, AvroRewriteError> {
    avro::rewrite_records(bytes, |entry| {
        let data_file = avro::field_mut(entry, "data_file")
            .ok_or_else(|| AvroRewriteError::Shape("entry has no data_file".to_string()))?;
        let path = avro::field(data_file, "file_path")
            .and_then(avro::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(size) = new_sizes.get(&path) {
            avro::set_long_field(data_file, "file_size_in_bytes", *size as i64)?;
        }
        avro::map_string_field(data_file, "file_path", |p| Ok(map.rewrite(p)?.to_string()))?;
        // A position-delete file's bounds on `file_path` name data files: readers match deletes to
        // data files with them, so they must name the replica's files.
        for bounds in ["lower_bounds", "upper_bounds"] {
            avro::map_bound(data_file, bounds, DELETE_FILE_PATH_FIELD_ID, |p| {
                map.rewrite(p).ok().map(|l| l.to_string())
            });
        }
        avro::map_string_field(data_file, "referenced_data_file", |p| {
            Ok(map.rewrite(p)?.to_string())
        })
    })
}

/// A file a manifest entry keeps live.
struct LiveFile {
    path: String,
    size: u64,
    content: i32,
    format: String,
}

impl LiveFile {
    fn of(data_file: &Value) -> Result<Self, AvroRewriteError> {
        let shape = |what: &str| AvroRewriteError::Shape(format!("data_file has no {what}"));
        Ok(Self {
            path: avro::field(data_file, "file_path")
                .and_then(avro::as_str)
                .ok_or_else(|| shape("file_path"))?
                .to_string(),
            size: avro::field(data_file, "file_size_in_bytes")
                .and_then(avro::as_long)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| shape("file_size_in_bytes"))?,
            // v1 manifests have no content field: data files only.
            content: avro::field(data_file, "content")
                .and_then(avro::as_long)
                .unwrap_or(0) as i32,
            format: avro::field(data_file, "file_format")
                .and_then(avro::as_str)
                .unwrap_or("PARQUET")
                .to_string(),
        })
    }
}
