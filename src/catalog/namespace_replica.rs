//! Replica namespaces at a destination: applying a namespace's replicated properties.
//!
//! A namespace replicates as its whole state, its properties (migrations/0023), under the
//! position rule of [`super::replica_state`], so a stream that restarts, rewinds or is resent
//! never moves a replica's properties back. A change applies in one transaction: the lease fence
//! (shared with replica tables and views, so a revoked lease applies nothing once its successor
//! has), the namespace's row found by its name here and locked (made when missing, with the
//! namespaces above it, as a replica table's namespace is), the position check against the sender
//! it last applied, the properties, this region's log entry, COMMIT.
//!
//! Properties are replaced only in a namespace that replication made from the change's origin:
//! this region's own namespaces, those made from another origin and those of upstream
//! warehouses keep theirs. Such a change is acknowledged without effect (a second writer of a
//! namespace is a topology's choice, not a stream's failure) and this region logs why. A
//! `location` property must lie in this warehouse, as every path a source sends must.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::contract::peer_protocol::{
    ApplyAction, ApplyRequest, ApplyResponse, Position, ReplicaPosition,
};
use crate::db::catalog as catalog_db;
use crate::db::replica_namespaces::{self as db, NamespaceReplicaMark};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, NewEntry};
use crate::names::NamespaceName;

use super::replica_state::{StateDecision, decide_state, pass_fence};
use super::{Catalog, Warehouse, paths};

/// The namespace property that is a path.
const LOCATION_PROPERTY: &str = "location";

impl Catalog {
    /// Applies a namespace's replicated properties (see the module docs).
    pub(super) async fn apply_replicated_namespace(
        &self,
        wh: &Warehouse,
        req: &ApplyRequest,
        principal: &str,
    ) -> CatalogResult<ApplyResponse> {
        let ApplyAction::NamespaceProperties { properties } = &req.action else {
            unreachable!("apply_replicated routes only namespace changes here")
        };
        let ns = NamespaceName::new(req.namespace.clone())?;
        let unchanged = ApplyResponse {
            applied: false,
            position: req.to,
            metadata_location: None,
            parked: false,
        };
        if wh.upstream.is_some() {
            tracing::warn!(namespace = %ns, warehouse = %wh.name, source = %req.source_region,
                "replicated namespace properties are not applied to an upstream warehouse");
            return Ok(unchanged);
        }
        if let Some(location) = properties.get(LOCATION_PROPERTY) {
            paths::under_root(wh, "the namespace's location property", location)?;
        }
        let mut tx = self.pool.begin().await?;
        pass_fence(
            &mut tx,
            wh,
            req,
            &format!("the properties of namespace {ns}"),
        )
        .await?;
        let (row, created) = match db::lock_namespace(&mut tx, wh.id, &ns).await? {
            Some(row) => (row, false),
            None => {
                catalog_db::ensure_replicated_namespace(&mut tx, wh.id, &ns, &req.origin_region)
                    .await?;
                let row = db::lock_namespace(&mut tx, wh.id, &ns)
                    .await?
                    .ok_or_else(|| {
                        CatalogError::Unavailable(format!(
                            "namespace {ns} was dropped while its replicated properties applied"
                        ))
                    })?;
                (row, true)
            }
        };
        if row.origin_region.as_deref() != Some(req.origin_region.as_str()) {
            let owner = match &row.origin_region {
                None => "this region's own".to_string(),
                Some(origin) => format!("a replica of region `{origin}`"),
            };
            tracing::warn!(namespace = %ns, warehouse = %wh.name, origin = %req.origin_region,
                "replicated namespace properties left unapplied: the namespace here is {owner}");
            return Ok(unchanged);
        }
        let held = row
            .mark
            .as_ref()
            .filter(|m| {
                m.source_region == req.source_region && m.source_namespace_id == req.source_table_id
            })
            .map(|m| ReplicaPosition {
                generation: m.generation,
                position: Position::at(m.version),
            });
        let what = format!(
            "source namespace {} from region `{}`",
            req.source_table_id, req.source_region
        );
        if let StateDecision::Repeat(position) = decide_state(req, held, &what)? {
            return Ok(ApplyResponse {
                position,
                ..unchanged
            });
        }
        let before: BTreeMap<String, String> =
            serde_json::from_value(row.properties).unwrap_or_default();
        let props = serde_json::to_value(properties).map_err(CatalogError::Encoding)?;
        let mark = NamespaceReplicaMark {
            source_region: req.source_region.clone(),
            source_namespace_id: req.source_table_id,
            generation: req.generation,
            version: req.to.version,
        };
        db::set_replicated_properties(&mut tx, row.namespace_id, &props, &mark).await?;
        let updates: BTreeMap<&String, &String> = properties
            .iter()
            .filter(|(key, value)| before.get(*key) != Some(*value))
            .collect();
        let removals: Vec<&String> = before
            .keys()
            .filter(|key| !properties.contains_key(*key))
            .collect();
        let entry = NewEntry {
            warehouse_id: wh.id,
            txn_group: Uuid::now_v7(),
            kind: if created {
                EntryKind::CreateNamespace
            } else {
                EntryKind::UpdateNamespaceProperties
            },
            namespace: ns.levels().to_vec(),
            table: None,
            changes: json!([]),
            requirements: json!([]),
            metadata: None,
            details: json!({
                "properties": props,
                "updates": updates,
                "removals": removals,
                "replicated-from": req.source_region,
                "position": req.to,
            }),
            principal: principal.to_string(),
            origin_region: req.origin_region.clone(),
            previous_metadata_location: None,
            new_metadata_location: None,
        };
        log::append(&mut tx, &[entry]).await?;
        self.commit_transaction_or_unknown(tx).await?;
        Ok(ApplyResponse {
            applied: true,
            ..unchanged
        })
    }
}

/// A namespace's properties as its stream sends them: a `location` under the source warehouse's
/// root moves to the same place under the destination's (`destination_root`, the namespace
/// prefix already joined); a `location` elsewhere is not sent, since the replica would point at
/// storage that is not the destination's. Every other property goes as it is.
pub fn properties_for_destination(
    properties: &Value,
    source_root: &crate::storage::Location,
    destination_root: &crate::storage::Location,
) -> BTreeMap<String, String> {
    let mut properties: BTreeMap<String, String> =
        serde_json::from_value(properties.clone()).unwrap_or_default();
    if let Some(location) = properties.remove(LOCATION_PROPERTY) {
        let moved = crate::storage::Location::parse(&location)
            .ok()
            .filter(|at| at.is_under(source_root))
            .and_then(|at| at.rebase(source_root, destination_root));
        if let Some(moved) = moved {
            properties.insert(LOCATION_PROPERTY.to_string(), moved.to_string());
        }
    }
    properties
}
