//! Where a replica's state goes once `replica` and `replica_build` have decided it: the one seam
//! between deciding a replicated change and making it visible to readers.
//!
//! In a builtin warehouse a state is a metadata file floe writes, which the row's pointer then
//! names. In an upstream warehouse readers ask the upstream catalog, so the state must be made
//! there (`upstream::replica`), and the row records the metadata location the upstream serves.
//! Either way this runs before the row and its log entry are written, in the apply's transaction
//! and under its locks, so a state that could not be placed is never recorded.

use std::sync::Arc;

use uuid::Uuid;

use crate::error::CatalogResult;
use crate::names::TableName;
use crate::upstream::replica::ReplicaState;

use super::commit::PendingFiles;
use super::metadata;
use super::metadata_cache::CachedMetadata;
use super::replica::ReplicatedChange;
use super::{Catalog, paths};

impl Catalog {
    /// Places the replica's new state `built` (its `version`th); `recorded` is the replica's
    /// metadata location before, `whole` that the state stands alone (a backfill's swap). Returns
    /// the metadata location readers are now served, with that metadata.
    pub(super) async fn place_state(
        &self,
        files: &mut PendingFiles,
        change: &ReplicatedChange<'_>,
        recorded: Option<&str>,
        built: Arc<CachedMetadata>,
        version: i64,
        whole: bool,
    ) -> CatalogResult<(String, Arc<CachedMetadata>)> {
        let wh = change.wh;
        let file = metadata::metadata_file_location(built.parsed.location(), version)?;
        let Some(upstream) = &wh.upstream else {
            files
                .write(&wh.storage, &file, built.json.as_bytes())
                .await?;
            return Ok((file.to_string(), built));
        };
        let state = ReplicaState {
            table: change.table,
            recorded,
            target: &built.parsed,
            whole,
        };
        // Not a pending file: once registered, the upstream points to it even if this apply
        // fails afterwards, and the source's retry adopts it (`upstream::replica`).
        let write_file = async || {
            wh.storage.write_new(&file, built.json.as_bytes()).await?;
            Ok(file.to_string())
        };
        let published = upstream.publish_state(state, write_file).await?;
        paths::under_root(wh, "metadata location", &published.location)?;
        let placed = Arc::new(CachedMetadata::from_parsed(published.metadata)?);
        Ok((published.location, placed))
    }

    /// Renames the replica where it is served (the row's rename is the caller's).
    pub(super) async fn place_rename(
        &self,
        change: &ReplicatedChange<'_>,
        target: &TableName,
        table_uuid: Uuid,
    ) -> CatalogResult<()> {
        match &change.wh.upstream {
            Some(upstream) => {
                upstream
                    .publish_rename(change.table, target, table_uuid)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Drops the replica where it is served; returns whether floe must purge its files itself
    /// (an upstream purges its own tables' files when asked to).
    pub(super) async fn place_drop(
        &self,
        change: &ReplicatedChange<'_>,
        purge: bool,
    ) -> CatalogResult<bool> {
        match &change.wh.upstream {
            Some(upstream) => {
                upstream.publish_drop(change.table, purge).await?;
                Ok(false)
            }
            None => Ok(purge),
        }
    }
}
