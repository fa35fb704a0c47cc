//! Local filesystem warehouses (`file://` URIs).

use std::io::ErrorKind;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{Storage, StorageError};

#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorage;

impl LocalStorage {
    /// The filesystem path of a `file:` URI (`file:///abs` or `file:/abs`).
    pub fn path_of(location: &str) -> Result<PathBuf, StorageError> {
        let path = location
            .strip_prefix("file://")
            .or_else(|| location.strip_prefix("file:"))
            .ok_or_else(|| StorageError::UnsupportedScheme(location.to_string()))?;
        if !path.starts_with('/') {
            return Err(StorageError::UnsupportedScheme(location.to_string()));
        }
        Ok(PathBuf::from(path))
    }
}

fn io_err(location: &str, source: std::io::Error) -> StorageError {
    match source.kind() {
        ErrorKind::NotFound => StorageError::NotFound(location.to_string()),
        ErrorKind::AlreadyExists => StorageError::AlreadyExists(location.to_string()),
        _ => StorageError::Io {
            location: location.to_string(),
            source,
        },
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn write_new(&self, location: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = Self::path_of(location)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err(location, e))?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_err(location, e))?;
        file.write_all(bytes)
            .await
            .map_err(|e| io_err(location, e))?;
        // The pointer to this file is committed right after: the bytes must be on disk first.
        file.sync_data().await.map_err(|e| io_err(location, e))?;
        Ok(())
    }

    async fn read(&self, location: &str) -> Result<Vec<u8>, StorageError> {
        let path = Self::path_of(location)?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| io_err(location, e))
    }

    async fn delete(&self, location: &str) -> Result<(), StorageError> {
        let path = Self::path_of(location)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(location, e)),
            _ => Ok(()),
        }
    }

    async fn remove_empty_dirs(&self, prefix: &str) -> Result<(), StorageError> {
        let root = Self::path_of(prefix)?;
        let mut stack = vec![root];
        let mut dirs = Vec::new();
        while let Some(dir) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(prefix, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| io_err(prefix, e))? {
                if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
            dirs.push(dir);
        }
        // Children come after their parents in `dirs`: removing in reverse empties each parent
        // before it is tried. A directory that still holds anything stays (remove_dir refuses).
        for dir in dirs.into_iter().rev() {
            let _ = tokio::fs::remove_dir(&dir).await;
        }
        Ok(())
    }
}
