//! Replica views at a destination: applying a view's replicated state or its drop.
//!
//! A view replicates as its whole state (migrations/0022): each change carries the source view's
//! current metadata, its location already in this warehouse, the source version it is, and the
//! name the view has at the source. It applies in one transaction: the change locks of the
//! replica's present name and of its new one, the lease fence (shared with replica tables, so a
//! revoked lease applies nothing once its successor has), the replica row found by its source
//! identity under FOR UPDATE, then the position check, the metadata file (written durably), the
//! row, this region's log entry, COMMIT. The replica never moves back, by the position rule of
//! whole states ([`super::replica_state`]).

use std::sync::Arc;

use iceberg::spec::ViewMetadata;
use serde_json::json;
use uuid::Uuid;

use crate::contract::peer_protocol::{
    ApplyAction, ApplyRequest, ApplyResponse, Position, ReplicaPosition,
};
use crate::db::catalog as catalog_db;
use crate::db::views::{self as db, ViewPointer, ViewReplicaMark};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, NewEntry, TableVersionRef};
use crate::names::{NamespaceName, TableName};

use super::replica_state::{StateDecision, decide_state, pass_fence};
use super::views::{CachedView, name_taken};
use super::{Catalog, Warehouse, metadata, paths};

impl Catalog {
    /// Applies a replicated view state or drop (see the module docs).
    pub(super) async fn apply_replicated_view(
        &self,
        wh: &Warehouse,
        req: &ApplyRequest,
        principal: &str,
    ) -> CatalogResult<ApplyResponse> {
        if wh.upstream.is_some() {
            return Err(CatalogError::BadRequest(format!(
                "warehouse `{}` is served by an upstream catalog; floe does not replicate views \
                 into upstream warehouses",
                wh.name
            )));
        }
        let present = TableName::new(NamespaceName::new(req.namespace.clone())?, req.name.clone())?;
        let target = match &req.action {
            ApplyAction::ViewState {
                namespace, name, ..
            } => TableName::new(NamespaceName::new(namespace.clone())?, name.clone())?,
            _ => present.clone(),
        };
        let mut written = None;
        let response = self
            .with_pending_files(async |files| {
                let mut tx = self.begin_table_change(wh, &[&present, &target]).await?;
                pass_fence(&mut tx, wh, req, &format!("view {present}")).await?;
                let replica =
                    db::get_replica_view(&mut tx, wh.id, &req.source_region, req.source_table_id)
                        .await?;
                let held = replica.as_ref().map(|r| ReplicaPosition {
                    generation: r.generation,
                    position: Position::at(r.version),
                });
                let what = format!(
                    "source view {} from region `{}`",
                    req.source_table_id, req.source_region
                );
                if let StateDecision::Repeat(position) = decide_state(req, held, &what)? {
                    return Ok(ApplyResponse {
                        applied: false,
                        position,
                        metadata_location: replica.map(|r| r.row.metadata_location),
                        parked: false,
                    });
                }
                let mark = ViewReplicaMark {
                    source_region: req.source_region.clone(),
                    source_view_id: req.source_table_id,
                    origin_region: req.origin_region.clone(),
                    origin_url: req.origin_url.clone(),
                    generation: req.generation,
                    version: req.to.version,
                };
                let entry = |kind, view: &TableName, (view_id, view_uuid, version)| NewEntry {
                    warehouse_id: wh.id,
                    txn_group: Uuid::now_v7(),
                    kind,
                    namespace: view.namespace.levels().to_vec(),
                    table: Some(TableVersionRef {
                        table_id: view_id,
                        table_uuid: view_uuid,
                        name: view.name.clone(),
                        version,
                    }),
                    changes: json!([]),
                    requirements: json!([]),
                    metadata: None,
                    details: json!({ "replicated-from": req.source_region, "position": req.to }),
                    principal: principal.to_string(),
                    origin_region: req.origin_region.clone(),
                    previous_metadata_location: None,
                    new_metadata_location: None,
                };
                let metadata_location = match &req.action {
                    ApplyAction::ViewState { metadata, .. } => {
                        let parsed: ViewMetadata = serde_json::from_value(metadata.clone())
                            .map_err(|e| {
                                CatalogError::BadRequest(format!(
                                    "the replicated state of view {target} is not view metadata: {e}"
                                ))
                            })?;
                        paths::check_view_metadata(wh, &parsed)?;
                        let namespace_id = catalog_db::ensure_replicated_namespace(
                            &mut tx,
                            wh.id,
                            &target.namespace,
                            &req.origin_region,
                        )
                        .await?;
                        let moves = replica.as_ref().is_none_or(|r| r.name != target);
                        if moves
                            && let Some(taken) = name_taken(&mut tx, namespace_id, &target).await?
                        {
                            return Err(CatalogError::AlreadyExists(format!(
                                "cannot place the replica of view {target} from region `{}` in \
                                 warehouse {}: {taken}",
                                req.source_region, wh.name
                            )));
                        }
                        let state = Arc::new(CachedView::from_parsed(parsed)?);
                        let version = replica.as_ref().map_or(1, |r| r.row.version + 1);
                        let file =
                            metadata::metadata_file_location(state.parsed.location(), version)?;
                        files
                            .write(&wh.storage, &file, state.json.as_bytes())
                            .await?;
                        let location = file.to_string();
                        let pointer = ViewPointer {
                            view_uuid: state.parsed.uuid(),
                            metadata_location: &location,
                            location: state.parsed.location(),
                        };
                        let mut new_entry = match &replica {
                            None => {
                                let view_id = Uuid::now_v7();
                                db::insert_view(
                                    &mut tx,
                                    wh.id,
                                    view_id,
                                    namespace_id,
                                    &target,
                                    pointer,
                                    Some(&mark),
                                )
                                .await?;
                                let mut e = entry(
                                    EntryKind::CreateView,
                                    &target,
                                    (view_id, state.parsed.uuid(), 1),
                                );
                                e.metadata = Some(serde_json::from_str(&state.json).map_err(
                                    CatalogError::Encoding,
                                )?);
                                e
                            }
                            Some(replica) => {
                                db::update_replica_view(
                                    &mut tx,
                                    replica.row.view_id,
                                    namespace_id,
                                    &target,
                                    version,
                                    pointer,
                                    &mark,
                                )
                                .await?;
                                let mut e = entry(
                                    EntryKind::ReplaceView,
                                    &replica.name,
                                    (replica.row.view_id, state.parsed.uuid(), version),
                                );
                                e.previous_metadata_location =
                                    Some(replica.row.metadata_location.clone());
                                if replica.name != target {
                                    e.details["destination"] = json!({
                                        "namespace": target.namespace.levels(),
                                        "name": target.name });
                                }
                                e
                            }
                        };
                        new_entry.new_metadata_location = Some(location.clone());
                        log::append(&mut tx, &[new_entry]).await?;
                        written = Some((location.clone(), state));
                        Some(location)
                    }
                    ApplyAction::DropView => {
                        if let Some(replica) = &replica {
                            db::delete_view(&mut tx, replica.row.view_id).await?;
                            let mut e = entry(
                                EntryKind::DropView,
                                &replica.name,
                                (
                                    replica.row.view_id,
                                    replica.row.view_uuid,
                                    replica.row.version + 1,
                                ),
                            );
                            e.previous_metadata_location =
                                Some(replica.row.metadata_location.clone());
                            log::append(&mut tx, &[e]).await?;
                        }
                        None
                    }
                    _ => {
                        return Err(CatalogError::BadRequest(
                            "only view states and view drops apply to views".to_string(),
                        ));
                    }
                };
                self.commit_transaction_or_unknown(tx).await?;
                Ok(ApplyResponse {
                    applied: true,
                    position: req.to,
                    metadata_location,
                    parked: false,
                })
            })
            .await?;
        if let Some((location, state)) = written {
            self.view_metadata.insert(&location, state);
        }
        Ok(response)
    }
}
