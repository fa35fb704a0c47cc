//! A destination's answer to "would this update apply to its replica now?", asked by a source
//! before it commits a change that its synchronous replication rule must see applied
//! (`replication::sync`).
//!
//! The answer is the apply's own decision, made the same way and thrown away: the update is
//! opened on the replica under its locks and fences (lease, epoch), routed by the replica's
//! generation and position, and its updates applied to the replica's metadata and checked against
//! the warehouse's paths; then the transaction rolls back. Nothing is written and nothing is held:
//! a yes promises nothing, and a source that commits after it still sends the update and counts
//! only the applies that succeed. What a yes buys is that a commit whose destinations are down,
//! behind, rebuilding or refusing fails before anything is committed anywhere, and that the apply
//! that follows the source's commit almost never fails (its files are copied before the question).

use crate::contract::peer_protocol::{ApplyAction, ApplyRequest, ApplyResponse, ReplicaPosition};
use crate::error::{CatalogError, CatalogResult};

use super::replica::{Route, mismatch, replica_name};
use super::{Catalog, Warehouse};

impl Catalog {
    /// Whether `req`, a table update, would apply to its replica now (see the module docs).
    pub async fn prepare_replicated(
        &self,
        wh: &Warehouse,
        req: ApplyRequest,
    ) -> CatalogResult<ApplyResponse> {
        let ApplyAction::Update { updates } = &req.action else {
            return Err(CatalogError::BadRequest(
                "only a table update can be prepared: creates, renames, drops and views' and \
                 namespaces' changes replicate asynchronously"
                    .to_string(),
            ));
        };
        let table = replica_name(&req)?;
        let _queued = self.table_locks.lock(wh.id, std::iter::once(&table)).await;
        let mut tx = self.pool.begin().await?;
        let current = match self.open_route(&mut tx, wh, &req, &table).await? {
            Route::Serving(current) => current,
            Route::Repeat(done) => {
                return Err(mismatch(
                    format!(
                        "the replica is already at {}, past the update to {}",
                        done.position, req.to
                    ),
                    Some(ReplicaPosition {
                        generation: req.generation,
                        position: done.position,
                    }),
                ));
            }
            Route::Build(build, _) => {
                return Err(mismatch(
                    format!(
                        "the replica of generation {} is being rebuilt (its backfill is at \
                         version {} step {})",
                        build.generation, build.version, build.step
                    ),
                    None,
                ));
            }
            Route::StartBuild(_) | Route::End(..) => {
                unreachable!("only creates, drops and orphan marks take these routes")
            }
        };
        let base = self
            .metadata
            .load(&*wh.storage, &current.row.metadata_location)
            .await?;
        let result = Self::apply_updates(&base, &current.row, updates, req.retention)?;
        super::paths::check_changes(wh, &result.changes)?;
        tx.rollback().await?;
        Ok(ApplyResponse {
            applied: false,
            position: current.position().position,
            metadata_location: Some(current.row.metadata_location),
            parked: false,
        })
    }
}
