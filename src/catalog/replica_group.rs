//! A source's multi-table transaction applied at a destination in one transaction (issue 14,
//! item 5), so that a reader of the replicas sees all of it or none of it.
//!
//! A source commits a transaction's table updates together, but replicates each table in a stream
//! of its own, so they reach a destination one by one. Each carries its group
//! (`ApplyRequest::group`: the source's `txn_group` and how many of its updates go to this
//! destination warehouse). Why what is here keeps the promise:
//! - **An update that arrives before the rest of its group is parked** (`replica_group_member`,
//!   migrations/0026) and changes nothing a reader sees. Its sender is answered `parked` and sends
//!   it again; once applied, a send again is a repeat, acknowledged as any repeat is.
//! - **Exactly one arrival completes a group.** Members park and count under one advisory lock
//!   per group ([`db::lock_group`]), so of concurrent arrivals one finds all the others parked.
//!   That one gives up its own locks and takes every member table's (the in-process stripes in
//!   their one order, then the change locks in the tables' name order) before the group lock
//!   again, the order in which an arrival takes its own, so neither waits for the other in a
//!   cycle. It applies each member in one transaction, each through the same opening and route as
//!   an update of its own: fenced on its lease and epoch, and applied only if its replica is still
//!   where the update expects. A member sent again under a newer lease of its stream between the
//!   first read of the parked members and the taking of its table's lock (a synchronous commit
//!   and the stream's own task both send it) is opened as it is parked then, not refused as the
//!   older send it replaced.
//! - **A group that cannot complete does not hold its replicas back for ever.** A member's stream
//!   may have stopped, or its backfill gone past the group. A member parked longer than
//!   [`GROUP_WAIT`] is applied apart when it is sent again, and counted (`given-up`, in
//!   `floe_replica_transaction_groups_total`): the replica then shows the transaction partly for
//!   as long as the other tables lag, which is what it would show without groups.
//!
//! Only a group's updates are held; creates, renames and drops in a transaction replicate apart.

use std::collections::HashSet;
use std::time::Duration;

use uuid::Uuid;

use crate::contract::peer_protocol::{ApplyAction, ApplyGroup, ApplyRequest, ApplyResponse};
use crate::db::replica_groups as db;
use crate::error::{CatalogError, CatalogResult};
use crate::names::TableName;

use super::replica::{ReplicatedChange, Route, replica_name};
use super::{Catalog, Warehouse};

/// How long a parked update waits for the rest of its group before it is applied apart.
pub const GROUP_WAIT: Duration = Duration::from_secs(30);

/// What an update's arrival does with its group.
pub(super) enum GroupArrival {
    /// Not part of a group: applied as it is.
    NotGrouped,
    /// Parked: the rest of the group has not arrived.
    Parked,
    /// The last of its group: all are applied together (`Catalog::complete_group`).
    Completes,
    /// Parked too long: applied apart.
    GivenUp,
}

/// The group an update belongs to, if it has to wait for others.
fn group_of(req: &ApplyRequest) -> Option<ApplyGroup> {
    req.group
        .filter(|group| group.members > 1 && matches!(req.action, ApplyAction::Update { .. }))
}

/// Whether two updates are to the same replica.
fn same_replica(a: &ApplyRequest, b: &ApplyRequest) -> bool {
    a.source_region == b.source_region && a.source_table_id == b.source_table_id
}

fn replica_key(req: &ApplyRequest) -> (String, Uuid) {
    (req.source_region.clone(), req.source_table_id)
}

/// Decides, inside the transaction that opened the update's replica (which is where the update
/// expects), what its group does with it; parks it if the group is not complete.
pub(super) async fn arrive(
    tx: &mut sqlx::PgConnection,
    wh: &Warehouse,
    req: &ApplyRequest,
) -> CatalogResult<GroupArrival> {
    let Some(group) = group_of(req) else {
        return Ok(GroupArrival::NotGrouped);
    };
    db::lock_group(tx, group.id).await?;
    let parked = db::parked(tx, wh.id, group.id).await?;
    let (mine, others): (Vec<_>, Vec<_>) = parked
        .into_iter()
        .partition(|member| same_replica(&member.request, req));
    if let Some(mine) = mine.first()
        && mine.waited_ms >= GROUP_WAIT.as_millis() as i64
    {
        db::unpark(tx, group.id, req).await?;
        crate::telemetry::record_replica_group("given-up");
        tracing::warn!(group = %group.id, table = %req.name, parked = others.len() + 1,
            members = group.members, "a transaction group did not complete in time; its update \
             is applied apart");
        return Ok(GroupArrival::GivenUp);
    }
    if others.len() + 1 >= group.members as usize {
        return Ok(GroupArrival::Completes);
    }
    db::park(tx, wh.id, group.id, req).await?;
    Ok(GroupArrival::Parked)
}

impl Catalog {
    /// Applies every parked member of `req`'s group and `req` itself in one transaction (see the
    /// module docs); answers for `req`.
    pub(super) async fn complete_group(
        &self,
        wh: &Warehouse,
        req: &ApplyRequest,
        principal: &str,
    ) -> CatalogResult<ApplyResponse> {
        let group = group_of(req).expect("only a group's update completes it");
        // Which tables to lock: the members parked now. None can join before the group lock is
        // taken again below (every other member is parked), and one that gives up meanwhile is
        // left out then.
        let parked = {
            let mut conn = self.pool.acquire().await?;
            db::parked(&mut conn, wh.id, group.id).await?
        };
        let mut members: Vec<ApplyRequest> = parked
            .into_iter()
            .map(|member| member.request)
            .filter(|member| !same_replica(member, req))
            .collect();
        members.push(req.clone());
        let mut tables = Vec::with_capacity(members.len());
        for member in &members {
            tables.push(replica_name(member)?);
        }
        let _queued = self.table_locks.lock(wh.id, tables.iter()).await;
        self.with_pending_files(async |files| {
            let mut tx = self.pool.begin().await?;
            // Each member's replica opened (its change lock taken) before the group lock, the
            // order an arrival takes them in: a member sent again meanwhile waits for this
            // transaction, never the other way round.
            let mut order: Vec<(&TableName, &ApplyRequest)> = tables.iter().zip(&members).collect();
            order.sort_by_key(|(table, _)| table.to_string());
            let mut opened = Vec::with_capacity(order.len());
            for (table, member) in order {
                let is_own = same_replica(member, req);
                let mut member = member.clone();
                let mut route = self.open_route(&mut tx, wh, &member, table).await;
                // Parked again since it was read, under a newer lease of its stream (before
                // this transaction took its table's lock, which an arrival takes first): open
                // it as it is parked now.
                if !is_own
                    && matches!(route, Err(CatalogError::StaleLease(_)))
                    && let Some(newer) = db::parked_request(&mut tx, wh.id, group.id, &member)
                        .await?
                        .filter(|newer| newer.lease_token > member.lease_token)
                {
                    member = newer;
                    route = self.open_route(&mut tx, wh, &member, table).await;
                }
                match route {
                    Ok(route) => opened.push((table, member, is_own, route)),
                    Err(err) if is_own => return Err(err),
                    Err(err) => tracing::info!(group = %group.id, %table, %err,
                        "a parked update of a transaction group no longer applies; left out"),
                }
            }
            db::lock_group(&mut tx, group.id).await?;
            let still_parked: HashSet<(String, Uuid)> = db::parked(&mut tx, wh.id, group.id)
                .await?
                .iter()
                .map(|member| replica_key(&member.request))
                .collect();
            let (mut own, mut applied, mut after) = (None, 0u32, Vec::new());
            for (table, member, is_own, route) in opened {
                if !is_own && !still_parked.contains(&replica_key(&member)) {
                    continue;
                }
                let change = ReplicatedChange {
                    wh,
                    req: &member,
                    table,
                    principal,
                    group: Some(group),
                };
                match route {
                    Route::Serving(current) => {
                        let (response, then) = self
                            .apply_to_serving(&mut tx, files, &change, current)
                            .await?;
                        applied += 1;
                        after.push(then);
                        if is_own {
                            own = Some(response);
                        }
                    }
                    Route::Repeat(response) if is_own => own = Some(response),
                    _ if is_own => {
                        return Err(CatalogError::Unavailable(format!(
                            "the replica {table} changed while its transaction group was \
                             applied; send the update again"
                        )));
                    }
                    _ => tracing::info!(group = %group.id, %table,
                        "a parked update of a transaction group no longer follows its replica; \
                         left out"),
                }
            }
            db::dissolve(&mut tx, group.id).await?;
            self.commit_transaction_or_unknown(tx).await?;
            for then in after {
                self.after_commit(then);
            }
            crate::telemetry::record_replica_group(if applied >= group.members {
                "together"
            } else {
                "partial"
            });
            Ok(own.expect("the group's own update is always in its order"))
        })
        .await
    }
}
