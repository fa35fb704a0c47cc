//! Local filesystem warehouses (`file://` URIs).

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};

use super::{Storage, StorageError};

#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorage;

/// The buffer of a streamed copy: the memory one copy holds, whatever the file's size.
const COPY_BUFFER_BYTES: usize = 1024 * 1024;

impl LocalStorage {
    /// A temporary name beside `path` (its directory created): files are written under it and
    /// renamed, so a crash never leaves a partial file under the real name (a later copy would take
    /// it for done if the size happened to match).
    async fn temp_beside(location: &str, path: &Path) -> Result<PathBuf, StorageError> {
        let dir = path
            .parent()
            .ok_or_else(|| StorageError::UnsupportedScheme(location.to_string()))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_err(location, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(dir.join(format!(
            ".{name}.{}.floe-tmp",
            uuid::Uuid::new_v4().simple()
        )))
    }

    /// Renames a finished temporary file to its name; with `durable`, syncs the directory so the
    /// rename survives a crash before anyone commits a pointer to the file.
    async fn publish(temp: &Path, path: &Path, durable: bool) -> std::io::Result<()> {
        tokio::fs::rename(temp, path).await?;
        if durable && let Some(dir) = path.parent() {
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        Ok(())
    }

    /// Copies a file within the local filesystem with the kernel's copy (no user-space buffer),
    /// under a temporary name then renamed; durable only after [`Storage::sync_all`].
    pub async fn copy_file(&self, from: &str, to: &str) -> Result<u64, StorageError> {
        let source = Self::path_of(from)?;
        let path = Self::path_of(to)?;
        let temp = Self::temp_beside(to, &path).await?;
        let result = async {
            let copied = tokio::fs::copy(&source, &temp).await?;
            Self::publish(&temp, &path, false).await?;
            Ok::<u64, std::io::Error>(copied)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(|e| match e.kind() {
            ErrorKind::NotFound if !source.exists() => StorageError::NotFound(from.to_string()),
            _ => io_err(to, e),
        })
    }

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

    async fn size(&self, location: &str) -> Result<Option<u64>, StorageError> {
        let path = Self::path_of(location)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(location, e)),
        }
    }

    async fn open(
        &self,
        location: &str,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError> {
        let path = Self::path_of(location)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err(location, e))?;
        Ok(Box::new(file))
    }

    async fn write_stream(
        &self,
        location: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        durable: bool,
    ) -> Result<u64, StorageError> {
        let path = Self::path_of(location)?;
        let temp = Self::temp_beside(location, &path).await?;
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            let mut buffered = BufReader::with_capacity(COPY_BUFFER_BYTES, reader);
            let written = tokio::io::copy_buf(&mut buffered, &mut file).await?;
            file.flush().await?;
            if durable {
                file.sync_data().await?;
            }
            drop(file);
            Self::publish(&temp, &path, durable).await?;
            Ok::<u64, std::io::Error>(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(|e| io_err(location, e))
    }

    async fn sync_all(&self, location: &str) -> Result<(), StorageError> {
        let path = Self::path_of(location)?;
        // The nearest existing directory: syncfs flushes its whole filesystem.
        let dir = path
            .ancestors()
            .find(|p| p.is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        tokio::task::spawn_blocking(move || {
            let handle = std::fs::File::open(&dir)?;
            // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
            if unsafe { nix::libc::syncfs(handle.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
        .await
        .map_err(|e| io_err(location, std::io::Error::other(e)))?
        .map_err(|e| io_err(location, e))
    }

    fn as_local(&self) -> Option<&LocalStorage> {
        Some(self)
    }

    async fn delete(&self, location: &str) -> Result<(), StorageError> {
        let path = Self::path_of(location)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(location, e)),
            _ => Ok(()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let root = Self::path_of(prefix)?;
        let tree = walk(&root).await.map_err(|e| io_err(prefix, e))?;
        let base = prefix.trim_end_matches('/');
        Ok(tree
            .files
            .iter()
            .filter_map(|file| file.strip_prefix(&root).ok())
            .map(|relative| format!("{base}/{}", relative.to_string_lossy()))
            .collect())
    }

    async fn remove_empty_dirs(&self, prefix: &str) -> Result<(), StorageError> {
        let root = Self::path_of(prefix)?;
        let tree = walk(&root).await.map_err(|e| io_err(prefix, e))?;
        // Children come after their parents in `dirs`: removing in reverse empties each parent
        // before it is tried. A directory that still holds anything stays (remove_dir refuses).
        for dir in tree.dirs.into_iter().rev() {
            let _ = tokio::fs::remove_dir(&dir).await;
        }
        Ok(())
    }
}

/// The files and directories under a directory (itself included among the directories, parents
/// before their children); a missing directory holds nothing.
struct Tree {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

async fn walk(root: &Path) -> std::io::Result<Tree> {
    let mut tree = Tree {
        files: Vec::new(),
        dirs: Vec::new(),
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        while let Some(entry) = entries.next_entry().await? {
            // Symlinks are not followed: a purge must not reach outside the table's directory.
            let kind = entry.file_type().await?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                tree.files.push(entry.path());
            }
        }
        tree.dirs.push(dir);
    }
    Ok(tree)
}
