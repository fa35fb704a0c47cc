//! Warehouse file IO behind one interface. Every method takes a [`Location`], so every path has
//! been parsed and checked before any storage sees it (see [`location`]). Each storage serves one
//! root (a warehouse's, or a peer warehouse's) and refuses any location outside it
//! ([`StorageError::OutsideRoot`]): whatever a caller names, no read, write, copy or delete
//! reaches past the root, and local storage resolves every path beneath the root without
//! following a symbolic link out of it ([`local`]). The root's scheme picks the implementation:
//! [`local::LocalStorage`] or [`s3::S3Storage`].

mod group_sync;
pub mod local;
pub mod location;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::AsyncRead;

pub use local::LocalStorage;
pub use location::{Location, LocationError};
pub use s3::{S3Settings, S3Storage};

/// The most files one page of a listing holds (S3's own page size, and its delete batch).
pub const LIST_PAGE: usize = 1000;

/// A listing, page by page (see [`Storage::list_pages`]); it ends after its first error.
pub type ListPages = BoxStream<'static, Result<Vec<Location>, StorageError>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    InvalidLocation(#[from] LocationError),
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
    #[error("location `{location}` is outside the storage root `{root}`")]
    OutsideRoot { location: String, root: String },
    /// A symbolic link on the way to the file leads out of the storage root; it is not followed.
    #[error(
        "location `{location}` leads through a symbolic link out of the storage root `{root}`; \
         floe does not follow it"
    )]
    SymlinkEscape { location: String, root: String },
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    #[error("file `{location}` is larger than the {limit} bytes floe reads for it")]
    TooLarge { location: String, limit: u64 },
    #[error("storage IO on {location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// Whether the request itself named something floe will not touch (a bad or foreign
    /// location, a file too large or not a file), rather than the storage failing.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StorageError::InvalidLocation(_)
                | StorageError::OutsideRoot { .. }
                | StorageError::SymlinkEscape { .. }
                | StorageError::NotAFile(_)
                | StorageError::TooLarge { .. }
        )
    }
}

/// Reads and writes the files under one root of one storage system.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The root this storage serves; every location it is given must be at or under it.
    fn root(&self) -> &Location;
    /// [`StorageError::OutsideRoot`] unless `location` is at or under [`Storage::root`].
    fn check(&self, location: &Location) -> Result<(), StorageError> {
        if location.is_at_or_under(self.root()) {
            Ok(())
        } else {
            Err(StorageError::OutsideRoot {
                location: location.to_string(),
                root: self.root().to_string(),
            })
        }
    }
    /// Writes a new file durably; fails with [`StorageError::AlreadyExists`] rather than overwrite.
    async fn write_new(&self, location: &Location, bytes: &[u8]) -> Result<(), StorageError>;
    /// Reads a whole file of at most `max_bytes` (a larger one is [`StorageError::TooLarge`],
    /// found without reading more than `max_bytes + 1` bytes of it).
    async fn read(&self, location: &Location, max_bytes: u64) -> Result<Vec<u8>, StorageError>;
    /// The size of a file, or `None` when there is none.
    async fn size(&self, location: &Location) -> Result<Option<u64>, StorageError>;
    /// Opens a file for streaming reads.
    async fn open(
        &self,
        location: &Location,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError>;
    /// Writes a file from a stream with bounded memory, replacing any file of that name; the file
    /// appears only whole. With `durable` it is on disk when this returns; otherwise only after
    /// [`Storage::sync_all`]. Returns the bytes written. For copies, which may repeat.
    async fn write_stream(
        &self,
        location: &Location,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        durable: bool,
    ) -> Result<u64, StorageError>;
    /// Makes every file written so far under the root durable (one flush for many non-durable
    /// writes).
    async fn sync_all(&self) -> Result<(), StorageError>;
    /// The local filesystem implementation, for copies the kernel can do without a user buffer.
    fn as_local(&self) -> Option<&LocalStorage> {
        None
    }
    /// The S3 implementation, for copies S3 can do on its side.
    fn as_s3(&self) -> Option<&S3Storage> {
        None
    }
    /// Deletes one file; a missing file is not an error.
    async fn delete(&self, location: &Location) -> Result<(), StorageError>;
    /// Deletes many files (S3 batches them); missing files are not an error. Every file is tried;
    /// the first failure is returned after the rest are done.
    async fn delete_many(&self, locations: &[Location]) -> Result<(), StorageError> {
        let mut first_error = None;
        for location in locations {
            if let Err(err) = self.delete(location).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
    /// Every file under the directory `prefix`, at any depth, in pages of at most [`LIST_PAGE`]
    /// files, read as they are consumed: listing a location of any size holds a page or two in
    /// memory, never the whole listing. For purge: what a dropped table's location still holds
    /// beyond what its metadata names. Names that are not valid location segments are left out
    /// (and so never deleted). Files deleted while the listing runs may or may not be listed.
    fn list_pages(&self, prefix: &Location) -> ListPages;
    /// Every file under `prefix`, collected from [`Storage::list_pages`]: for small trees only.
    async fn list(&self, prefix: &Location) -> Result<Vec<Location>, StorageError> {
        let mut files = Vec::new();
        let mut pages = self.list_pages(prefix);
        while let Some(page) = pages.next().await {
            files.extend(page?);
        }
        Ok(files)
    }
    /// Removes the directories under `prefix` (and `prefix` itself) that hold no files. Only
    /// empty directories go, so it cannot touch another table's files. Object stores have no
    /// directories: nothing to do there.
    async fn remove_empty_dirs(&self, prefix: &Location) -> Result<(), StorageError>;
}

/// Parses and checks a storage root: a supported scheme, and for a local root a directory below
/// `/` (the whole filesystem is nobody's warehouse).
pub fn parse_root(root: &str) -> Result<Location, StorageError> {
    let location = Location::parse(root)?;
    if !location.is_s3() && location.segments().is_empty() {
        return Err(LocationError::Invalid {
            location: root.to_string(),
            reason: "a local storage root must be a directory below /".to_string(),
        }
        .into());
    }
    Ok(location)
}

/// The storage that serves locations under `root`; `s3` says how to reach an S3 bucket, `owner`
/// whose storage it is (named in errors, e.g. "warehouse `lake`").
pub async fn open(
    root: &Location,
    s3: Option<&S3Settings>,
    owner: &str,
) -> Result<Arc<dyn Storage>, StorageError> {
    if root.is_s3() {
        let storage = S3Storage::new(&s3.cloned().unwrap_or_default(), root.clone()).await;
        Ok(Arc::new(storage.owned_by(owner)))
    } else {
        Ok(Arc::new(LocalStorage::new(root.clone())?))
    }
}
