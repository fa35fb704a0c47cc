//! Table (and view) metadata by metadata-file location. Metadata files are written once and never
//! changed, so an entry is valid for as long as it is kept, on every floe instance: no
//! invalidation is needed. It spares loadTable and every commit a storage read and a parse of the
//! whole metadata.

use std::sync::Arc;

use iceberg::spec::TableMetadata;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CatalogError, CatalogResult};
use crate::storage::{Location, Storage, StorageError};

/// One metadata file: its JSON as served and its parsed form for commits.
#[derive(Debug)]
pub struct CachedMetadata<T = TableMetadata> {
    pub json: String,
    pub parsed: T,
}

impl<T: Serialize> CachedMetadata<T> {
    pub fn from_parsed(parsed: T) -> CatalogResult<Self> {
        let json = serde_json::to_string(&parsed)
            .map_err(|e| CatalogError::BadRequest(format!("metadata does not serialise: {e}")))?;
        Ok(Self { json, parsed })
    }
}

#[derive(Debug, Clone)]
struct ByJsonSize;

impl<T> Weighter<String, Arc<CachedMetadata<T>>> for ByJsonSize {
    fn weight(&self, _location: &String, value: &Arc<CachedMetadata<T>>) -> u64 {
        // The parsed form takes about as much memory again as its JSON.
        (value.json.len() as u64).saturating_mul(2).max(1)
    }
}

pub struct MetadataCache<T = TableMetadata> {
    entries: Cache<String, Arc<CachedMetadata<T>>, ByJsonSize>,
    /// The largest metadata file read (`max_metadata_bytes`): a client may name the file.
    max_file_bytes: u64,
}

impl<T> std::fmt::Debug for MetadataCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("entries", &self.entries.len())
            .field("weight", &self.entries.weight())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> MetadataCache<T> {
    pub fn new(max_bytes: u64, max_file_bytes: u64) -> Self {
        // quick_cache sizes its tables from an item estimate; 64 KiB is a typical metadata file.
        let estimated_items = (max_bytes / (64 * 1024)).clamp(16, 1 << 20) as usize;
        Self {
            entries: Cache::with_weighter(estimated_items, max_bytes.max(1), ByJsonSize),
            max_file_bytes,
        }
    }

    /// The largest metadata file this cache reads.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    pub fn insert(&self, location: &str, metadata: Arc<CachedMetadata<T>>) {
        self.entries.insert(location.to_string(), metadata);
    }

    /// The metadata at `location`, from the cache or else read from storage and parsed.
    pub async fn load(
        &self,
        storage: &dyn Storage,
        location: &str,
    ) -> CatalogResult<Arc<CachedMetadata<T>>> {
        if let Some(hit) = self.entries.get(location) {
            return Ok(hit);
        }
        let parsed_location = Location::parse(location).map_err(StorageError::from)?;
        let bytes = storage.read(&parsed_location, self.max_file_bytes).await?;
        let parsed: T =
            serde_json::from_slice(&bytes).map_err(|source| CatalogError::CorruptMetadata {
                location: location.to_string(),
                source,
            })?;
        let metadata = Arc::new(CachedMetadata::from_parsed(parsed)?);
        self.insert(location, metadata.clone());
        Ok(metadata)
    }
}
