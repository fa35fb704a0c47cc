//! Warehouse file IO behind one interface. Locations are URIs (`file:///...`); each warehouse's root
//! picks the implementation. A later S3 implementation plugs in beside [`local::LocalStorage`].

pub mod local;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;

pub use local::LocalStorage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported storage location `{0}`: floe serves file:// warehouses")]
    UnsupportedScheme(String),
    #[error("file already exists: {0}")]
    AlreadyExists(String),
    #[error("file not found: {0}")]
    NotFound(String),
    #[error("location `{location}` is outside the warehouse root `{root}`")]
    OutsideRoot { location: String, root: String },
    #[error("storage IO on {location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads and writes the files of one storage system.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Writes a new file durably; fails with [`StorageError::AlreadyExists`] rather than overwrite.
    async fn write_new(&self, location: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// Reads a whole file.
    async fn read(&self, location: &str) -> Result<Vec<u8>, StorageError>;
    /// The size of a file, or `None` when there is none.
    async fn size(&self, location: &str) -> Result<Option<u64>, StorageError>;
    /// Opens a file for streaming reads.
    async fn open(&self, location: &str)
    -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError>;
    /// Writes a file from a stream with bounded memory, replacing any file of that name; the file
    /// appears only whole. With `durable` it is on disk when this returns; otherwise only after
    /// [`Storage::sync_all`]. Returns the bytes written. For copies, which may repeat.
    async fn write_stream(
        &self,
        location: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        durable: bool,
    ) -> Result<u64, StorageError>;
    /// Makes every file written so far under `location`'s storage durable (one flush for many
    /// non-durable writes).
    async fn sync_all(&self, location: &str) -> Result<(), StorageError>;
    /// The local filesystem implementation, for copies the kernel can do without a user buffer.
    fn as_local(&self) -> Option<&LocalStorage> {
        None
    }
    /// Deletes one file; a missing file is not an error.
    async fn delete(&self, location: &str) -> Result<(), StorageError>;
    /// Removes the directories under `prefix` (and `prefix` itself) that hold no files. Only
    /// empty directories go, so it cannot touch another table's files. Object stores have no
    /// directories: nothing to do there.
    async fn remove_empty_dirs(&self, prefix: &str) -> Result<(), StorageError>;
}

/// Checks a warehouse root from the settings: a supported scheme and an absolute path.
pub fn validate_root(root: &str) -> Result<(), StorageError> {
    LocalStorage::path_of(root).map(|_| ())
}

/// The storage that serves a location.
pub fn for_location(location: &str) -> Result<Arc<dyn Storage>, StorageError> {
    if location.starts_with("file:/") {
        Ok(Arc::new(LocalStorage))
    } else {
        Err(StorageError::UnsupportedScheme(location.to_string()))
    }
}

/// Whether `location` lies under `root` (as directories, not as string prefixes: `/wh2` is not under `/wh`).
pub fn is_under(location: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    location
        .strip_prefix(root)
        .is_some_and(|rest| rest.starts_with('/'))
}
