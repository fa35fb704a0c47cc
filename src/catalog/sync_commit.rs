//! The commit path's seam to synchronous replication (issue 14, item 4): what a commit asks of the
//! destinations a synchronous rule makes it wait for. `replication::sync` implements it; the commit
//! path (`catalog::commit`) only calls it, so that the catalog knows nothing of peers.
//!
//! A commit that changes tables under a synchronous rule runs around its one statement:
//! 1. [`SyncReplication::prepare`], after its metadata files are written and before anything is
//!    committed: each destination is sent the change's files and asked whether the change would
//!    apply now. Fewer yeses than a table's rule needs, within its timeout, fail the commit with
//!    nothing committed here or anywhere.
//! 2. The commit here, as for any commit.
//! 3. [`PreparedSync::confirm`]: the change is applied at the destinations that said yes; the
//!    commit is acknowledged once each table's rule has its applies. Short of them the commit is
//!    committed here but not acknowledged (500 `CommitStateUnknownException`): the destinations
//!    receive it from their streams, and the table's next synchronous commit waits for that.

use std::sync::Arc;

use async_trait::async_trait;
use iceberg::TableUpdate;
use uuid::Uuid;

use crate::error::CatalogResult;
use crate::names::TableName;

use super::Warehouse;
use super::metadata_cache::CachedMetadata;

/// One table's change in a commit, as synchronous replication sends it.
#[derive(Debug, Clone)]
pub struct SyncChange {
    pub table: TableName,
    pub table_id: Uuid,
    /// The table's epoch, which every replicated change carries.
    pub epoch: i64,
    /// The version the commit makes (the replica must be at the one before).
    pub version: i64,
    /// The canonical changes, as the log entry records them.
    pub changes: Vec<TableUpdate>,
    /// The table's metadata after the change.
    pub metadata: Arc<CachedMetadata>,
}

/// Synchronous replication as the commit path sees it.
#[async_trait]
pub trait SyncReplication: Send + Sync + std::fmt::Debug {
    /// Step 1 (see the module docs) for these changes of one commit: `None` when no synchronous
    /// rule governs their tables, an error (409, committed nowhere) when a rule cannot have its
    /// destinations in time.
    async fn prepare(
        &self,
        wh: &Warehouse,
        changes: Vec<SyncChange>,
    ) -> CatalogResult<Option<Box<dyn PreparedSync>>>;
}

/// Changes prepared at their destinations, to confirm once committed here.
#[async_trait]
pub trait PreparedSync: Send {
    /// Step 3 (see the module docs). `txn_group` is the commit's transaction group when it
    /// changed several tables (a destination applies a group's updates together).
    async fn confirm(self: Box<Self>, txn_group: Option<Uuid>) -> CatalogResult<()>;
}
