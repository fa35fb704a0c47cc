//! What sending one change down a stream needs, shared by the replicator (`worker`) and by
//! synchronous commits (`sync`), so that both send a destination the same thing: the stream's
//! [`Target`] (its source warehouse, the destination's storage, and the origin and epoch every
//! change carries), the [`Copier`] that moves a change's files under the replica's location, and
//! the [`ApplyRequest`] itself.

use std::sync::Arc;

use crate::catalog::Warehouse;
use crate::contract::peer_protocol::{ApplyAction, ApplyRequest, Position, Superseded};
use crate::db::replication::StreamRow;
use crate::storage::{self, Location, Storage};

use super::copy::{Copier, CopyError};
use super::destinations::DestinationStorages;
use super::paths::PathMap;

/// A stream's source warehouse and destination storage.
pub(super) struct Target {
    pub(super) wh: Warehouse,
    pub(super) dest_root: Location,
    pub(super) dest_storage: Arc<dyn Storage>,
    /// (origin region, its URL), sent with every change.
    pub(super) origin: (String, Option<String>),
    /// The table's epoch here, sent with every change.
    pub(super) epoch: i64,
}

impl Target {
    /// The target of stream `s` out of `wh`, its destination storage opened (or reused) through
    /// `destinations`; the origin is this region until the caller reads the object's own. `Err`
    /// says what an operator must fix (the peer's settings for the destination warehouse).
    pub(super) async fn open(
        s: &StreamRow,
        wh: Warehouse,
        destinations: &DestinationStorages,
        origin: (String, Option<String>),
    ) -> Result<Self, String> {
        let dest_root = s.dest_root.clone().ok_or_else(|| {
            format!(
                "peer `{}` has no storage root for its warehouse `{}`: add the warehouse to the \
                 peer (PUT /management/v1/peers/{})",
                s.peer_region, s.dest_warehouse, s.peer_region
            )
        })?;
        let owner = format!("peer `{}` warehouse `{}`", s.peer_region, s.dest_warehouse);
        let dest_root = storage::parse_root(&dest_root)
            .map_err(|e| format!("destination storage root: {e}"))?;
        let dest_storage = destinations
            .get(&owner, &dest_root, s.dest_s3.as_ref())
            .await
            .map_err(|e| format!("destination storage: {e}"))?;
        Ok(Self {
            wh,
            dest_root,
            dest_storage,
            origin,
            epoch: crate::contract::peer_protocol::first_epoch(),
        })
    }
}

/// Why a stream has no copier.
#[derive(Debug)]
pub(super) enum NoCopier {
    /// The stream has not begun: it has no replica location yet.
    NoLocation,
    /// The source location and the replica's do not map onto each other.
    Path(CopyError),
}

/// The copier of a change's files from the source table at `source_location` to stream `s`'s
/// replica.
pub(super) fn copier(
    s: &StreamRow,
    target: &Target,
    source_location: &str,
    parallel_files: usize,
    max_file_bytes: u64,
) -> Result<Copier, NoCopier> {
    let dest_location = s.dest_location.as_deref().ok_or(NoCopier::NoLocation)?;
    let map = PathMap::new(source_location, dest_location)
        .map_err(|e| NoCopier::Path(CopyError::Path(e)))?;
    Ok(Copier::new(
        target.wh.storage.clone(),
        target.dest_storage.clone(),
        map,
        parallel_files,
        max_file_bytes,
    ))
}

/// One change as a stream sends it: the position the replica must be at (`None` for a create),
/// the one it lands on, what to do, and the source's `last-updated-ms` after it.
pub(super) struct Change {
    pub(super) from: Option<Position>,
    pub(super) to: Position,
    pub(super) action: ApplyAction,
    pub(super) last_updated_ms: Option<i64>,
}

/// The request that sends `change` from `region` down stream `s`, under the stream's lease token.
pub(super) fn request(
    region: &str,
    s: &StreamRow,
    target: &Target,
    change: Change,
    supersedes: Option<Superseded>,
) -> ApplyRequest {
    let (origin_region, origin_url) = target.origin.clone();
    // The table's namespace here: the destination's without the rule's prefix.
    let source_namespace = s
        .dest_namespace
        .as_ref()
        .and_then(|ns| ns.get(s.namespace_prefix.len()..))
        .map(<[String]>::to_vec);
    ApplyRequest {
        source_region: region.to_string(),
        origin_region,
        origin_url,
        source_table_id: s.table_id,
        warehouse: s.dest_warehouse.clone(),
        namespace: s.dest_namespace.clone().unwrap_or_default(),
        name: s.dest_table.clone().unwrap_or_default(),
        generation: s.generation,
        lease_token: s.lease.token,
        epoch: target.epoch,
        source_warehouse: Some(target.wh.name.clone()),
        source_namespace,
        supersedes,
        from: change.from,
        to: change.to,
        action: change.action,
        retention: s.retention,
        last_updated_ms: change.last_updated_ms,
        group: None,
    }
}
