//! Warehouse file IO behind one interface. Locations are URIs (`file:///...`, `s3://bucket/...`);
//! each warehouse's root picks the implementation: [`local::LocalStorage`] or [`s3::S3Storage`].

pub mod local;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;

pub use local::LocalStorage;
pub use s3::{S3Settings, S3Storage};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "unsupported storage location `{0}`: floe serves file:///path and s3://bucket/prefix locations"
    )]
    UnsupportedScheme(String),
    /// The storage refused the credentials (wrong keys, no permission).
    #[error("the storage of {owner} refused access to {location}: {message}")]
    Denied {
        /// Whose storage: a warehouse, or a peer's destination warehouse.
        owner: String,
        location: String,
        message: String,
    },
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
    /// The S3 implementation, for copies S3 can do on its side.
    fn as_s3(&self) -> Option<&S3Storage> {
        None
    }
    /// Deletes one file; a missing file is not an error.
    async fn delete(&self, location: &str) -> Result<(), StorageError>;
    /// Deletes many files (S3 batches them); missing files are not an error.
    async fn delete_many(&self, locations: &[String]) -> Result<(), StorageError> {
        for location in locations {
            self.delete(location).await?;
        }
        Ok(())
    }
    /// Every file under the directory `prefix`, at any depth, as locations spelled like `prefix`.
    /// For purge: what a dropped table's location still holds beyond what its metadata names.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Removes the directories under `prefix` (and `prefix` itself) that hold no files. Only
    /// empty directories go, so it cannot touch another table's files. Object stores have no
    /// directories: nothing to do there.
    async fn remove_empty_dirs(&self, prefix: &str) -> Result<(), StorageError>;
}

/// Checks a warehouse root: a supported scheme with an absolute path or a bucket.
pub fn validate_root(root: &str) -> Result<(), StorageError> {
    if root.starts_with("s3://") || root.starts_with("s3a://") {
        return s3::split(&format!("{}/", root.trim_end_matches('/'))).map(|_| ());
    }
    LocalStorage::path_of(root).map(|_| ())
}

/// The storage that serves locations under `root`; `s3` says how to reach an S3 bucket, `owner`
/// whose storage it is (named in errors, e.g. "warehouse `lake`").
pub async fn open(
    root: &str,
    s3: Option<&S3Settings>,
    owner: &str,
) -> Result<Arc<dyn Storage>, StorageError> {
    validate_root(root)?;
    if root.starts_with("file:") {
        Ok(Arc::new(LocalStorage))
    } else {
        let storage = S3Storage::new(&s3.cloned().unwrap_or_default()).await;
        Ok(Arc::new(storage.owned_by(owner)))
    }
}

/// Whether `location` lies under `root` (as directories, not as string prefixes: `/wh2` is not
/// under `/wh`), whichever way each spells a local file.
pub fn is_under(location: &str, root: &str) -> bool {
    let (location, root) = (canonical(location), canonical(root));
    let root = root.trim_end_matches('/');
    location
        .strip_prefix(root)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// One spelling per file: Hadoop-based writers (Spark) write `file:/p` where others write
/// `file:///p`, and `s3a://b/k` where others write `s3://b/k`; each pair names the same file.
/// Compare locations in this form.
pub fn canonical(location: &str) -> std::borrow::Cow<'_, str> {
    if let Some(rest) = location.strip_prefix("file:///") {
        format!("file:/{rest}").into()
    } else if let Some(rest) = location.strip_prefix("s3a://") {
        format!("s3://{rest}").into()
    } else {
        location.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_under_compares_directories_whichever_way_a_local_file_is_spelled() {
        assert!(is_under("file:/wh/ns/t/data/a.parquet", "file:///wh"));
        assert!(is_under("file:///wh/ns/t", "file:/wh/"));
        assert!(!is_under("file:///wh2/t", "file:///wh"));
        assert!(!is_under("file:///wh", "file:///wh"));
        assert!(is_under("s3://lake/wh/t/x", "s3://lake/wh"));
        assert!(!is_under("s3://lake/wh-other/x", "s3://lake/wh"));
        assert!(is_under("s3a://lake/wh/t/x", "s3://lake/wh"));
    }
}
