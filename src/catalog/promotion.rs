//! Epochs and promotions (issue 14): which region is a replicated table's primary.
//!
//! Every table has an epoch (1 when made). Promoting a replica makes it a primary at its source's
//! epoch plus one, in one transaction under the table's change lock: the row loses its replica
//! mark (clients may write it at once) and the fence row of the source it followed records the
//! promotion. From then on every change that source sends under its older epoch is refused
//! (`floe_open_replica_apply`, migrations/0024), so nothing the former primary wrote after the
//! promotion lands over the new primary's writes: a promoted replica never regresses.
//!
//! The former primary learns of it in one of two ways, both ending in [`Catalog::learn_promotion`]:
//! its stream pushes a change and is refused with the promotion, or the new primary's stream back
//! to it begins with a change that names the table it supersedes. Either way, under the table's
//! change lock, its row becomes a replica of the new primary at the new epoch (clients' writes are
//! refused from then on, naming the new primary), and the commits the new primary never received
//! (the versions after the one the replica had reached) are recorded as diverged: their entries
//! stay in the log and their files in storage. The new primary's stream back then backfills a new
//! generation over it. An epoch only grows at a row, so a promotion is learned once.
//!
//! A planned switchover adds a handover before the promotion, so that nothing diverges: the region
//! that is to become primary asks the primary ([`Catalog::hand_over`]), which, under the table's
//! change lock, stops taking client writes for it (`write_rule`, and the commit's own
//! compare-and-set, migrations/0025) and answers its version then. Nothing commits there after
//! that version, so once the replica has applied it the promotion leaves nothing behind, and the
//! primary, told of it, is fenced with no diverged commit. A handover lapses by itself after the
//! time the caller asked for (the caller promotes only before then, by its own clock started
//! before it asked), so a caller that dies mid-way does not keep the table from its writers.

use uuid::Uuid;

use crate::contract::peer_protocol::{
    ApplyRequest, HandoverAnswer, HandoverRequest, PromotionNotice, PromotionOf, Promotions,
    Superseded,
};
use crate::db::audit::{NewEvent, Outcome};
use crate::db::catalog as db;
use crate::db::promotion::{self as promotion_db, Fencing, PromotedFrom};
use crate::error::{CatalogError, CatalogResult};
use crate::names::TableName;

use super::{Catalog, Warehouse};

/// What a promotion did.
#[derive(Debug, Clone)]
pub struct Promoted {
    pub table_id: Uuid,
    pub epoch: i64,
    pub from: PromotedFrom,
}

impl Catalog {
    /// Makes the replica `table` of `wh` the table's primary at its source's epoch plus one
    /// (forced: at once, whatever its source knows; see the module docs).
    pub async fn promote_table(
        &self,
        wh: &Warehouse,
        table: &TableName,
    ) -> CatalogResult<Promoted> {
        let _queued = self.table_locks.lock(wh.id, std::iter::once(table)).await;
        let mut tx = self.pool.begin().await?;
        db::lock_table_names(&mut tx, wh.id, &[table]).await?;
        let row = db::get_table(&mut tx, wh.id, &table.namespace, &table.name, true)
            .await?
            .ok_or_else(|| CatalogError::no_such_table(table))?;
        let Some(mark) = row.replica.clone() else {
            return Err(CatalogError::Unprocessable(format!(
                "table {table} is already the primary here (epoch {}); only a replica can be \
                 promoted",
                row.epoch
            )));
        };
        let epoch = mark.epoch + 1;
        let from = promotion_db::promote_replica(&mut tx, wh.id, &row, &mark, epoch).await?;
        self.commit_transaction_or_unknown(tx).await?;
        crate::telemetry::record_role_change("promoted");
        tracing::info!(%table, epoch, source = %from.source_region,
            "replica promoted to primary");
        Ok(Promoted {
            table_id: row.table_id,
            epoch,
            from,
        })
    }

    fn warehouse_name(&self, warehouse_id: Uuid) -> String {
        self.warehouses()
            .find(|wh| wh.id == warehouse_id)
            .map_or_else(|| warehouse_id.to_string(), |wh| wh.name.clone())
    }

    /// The promotions here of replicas of `source_region`'s tables, as that region learns them.
    pub async fn promotions_from(&self, source_region: &str) -> CatalogResult<Promotions> {
        let rows = promotion_db::promotions_from(&self.pool, source_region).await?;
        Ok(Promotions {
            promotions: rows
                .into_iter()
                .map(
                    |(source_table_id, epoch, table_id, at_version)| PromotionOf {
                        source_table_id,
                        promotion: PromotionNotice {
                            region: self.region().to_string(),
                            url: self.public_url().map(str::to_string),
                            epoch,
                            table_id,
                            at_version,
                        },
                    },
                )
                .collect(),
        })
    }

    /// The refusal of a change from a source whose replica here was promoted at a newer epoch.
    pub(super) fn stale_epoch(
        &self,
        table: &TableName,
        req: &ApplyRequest,
        promotion: db::Promotion,
    ) -> CatalogError {
        CatalogError::StaleEpoch {
            message: format!(
                "table {table} was promoted to primary in region `{}` at epoch {}; region `{}` \
                 (epoch {}) is no longer its primary, and its change is not applied",
                self.region(),
                promotion.epoch,
                req.source_region,
                req.epoch
            ),
            promotion: PromotionNotice {
                region: self.region().to_string(),
                url: self.public_url().map(str::to_string),
                epoch: promotion.epoch,
                table_id: promotion.table_id,
                at_version: promotion.at_version,
            },
        }
    }

    /// At a former primary: the table `table_id` was promoted elsewhere (`notice`). Makes it a
    /// replica of the new primary and records what never reached it (see the module docs);
    /// `false` when it had learned it already (or is not a primary of an older epoch).
    pub async fn learn_promotion(
        &self,
        table_id: Uuid,
        notice: &PromotionNotice,
    ) -> CatalogResult<bool> {
        let mut tx = self.pool.begin().await?;
        let learned = self.fence_in(&mut tx, None, table_id, notice).await?;
        self.commit_transaction_or_unknown(tx).await?;
        Ok(learned == Learned::Fenced)
    }

    /// An apply from `req.source_region` says its table supersedes `superseded` here: fenced as
    /// [`Catalog::learn_promotion`] does, in the apply's transaction, before the apply.
    pub(super) async fn fence_superseded(
        &self,
        tx: &mut sqlx::PgConnection,
        wh: &Warehouse,
        req: &ApplyRequest,
        superseded: Superseded,
    ) -> CatalogResult<()> {
        let notice = PromotionNotice {
            region: req.source_region.clone(),
            url: req.origin_url.clone(),
            epoch: req.epoch,
            table_id: req.source_table_id,
            at_version: superseded.at_version,
        };
        match self
            .fence_in(tx, Some(wh.id), superseded.table_id, &notice)
            .await?
        {
            Learned::NotReplicatedThere => Err(CatalogError::Forbidden(format!(
                "region `{}` claims to supersede table {} of warehouse {}, which this region \
                 does not replicate to it",
                req.source_region, superseded.table_id, wh.name
            ))),
            Learned::Fenced | Learned::Before | Learned::NoSuchTable => Ok(()),
        }
    }

    /// At the table's primary, a step of a planned switchover asked by `caller`, the region of
    /// its replica that is to become primary (see the module docs).
    pub async fn hand_over(
        &self,
        caller: &str,
        request: HandoverRequest,
    ) -> CatalogResult<HandoverAnswer> {
        let table_id = match &request {
            HandoverRequest::Begin { table_id, .. }
            | HandoverRequest::Release { table_id }
            | HandoverRequest::Promoted { table_id, .. } => *table_id,
        };
        if let HandoverRequest::Promoted { promotion, .. } = &request {
            if promotion.region != caller {
                return Err(CatalogError::Forbidden(format!(
                    "region `{caller}` cannot speak for a promotion in region `{}`",
                    promotion.region
                )));
            }
            self.learn_promotion(table_id, promotion).await?;
        }
        let mut tx = self.pool.begin().await?;
        let Some((row, warehouse_id, name)) = locked_by_id(&mut tx, table_id).await? else {
            return Err(CatalogError::NotFound {
                kind: "NoSuchTableException",
                message: format!("this region has no table {table_id}"),
            });
        };
        if !crate::db::replication::has_stream_to(&mut tx, table_id, caller).await?
            && !matches!(request, HandoverRequest::Promoted { .. })
        {
            return Err(CatalogError::Forbidden(format!(
                "table {name} is not replicated to region `{caller}`: only a region holding its \
                 replica can take it over"
            )));
        }
        let target = format!("{}/{name}", self.warehouse_name(warehouse_id));
        match request {
            HandoverRequest::Begin {
                epoch,
                url,
                lasting_ms,
                ..
            } => {
                if let Some(mark) = &row.replica {
                    return Err(CatalogError::Unprocessable(format!(
                        "table {name} is not the primary here: it is a replica of region `{}`",
                        mark.source_region
                    )));
                }
                if row.epoch != epoch {
                    return Err(CatalogError::Unprocessable(format!(
                        "table {name} is at epoch {} here, not {epoch}: the replica follows \
                         another primary",
                        row.epoch
                    )));
                }
                let lasting = std::time::Duration::from_millis(lasting_ms.min(MAX_HANDOVER_MS));
                let handover =
                    promotion_db::hand_over(&mut tx, &row, caller, url.as_deref(), lasting).await?;
                let detail = format!(
                    "handed over to region `{caller}` at version {} for {} ms at most",
                    handover.at_version,
                    lasting.as_millis()
                );
                self.record_role_change(&mut tx, caller, "table.handed-over", &target, detail)
                    .await?;
                self.commit_transaction_or_unknown(tx).await?;
                crate::telemetry::record_role_change("handed-over");
                Ok(HandoverAnswer {
                    at_version: handover.at_version,
                })
            }
            HandoverRequest::Release { .. } => {
                if promotion_db::release_handover(&mut tx, table_id, caller).await? {
                    let detail = format!("region `{caller}` did not promote: writes resume");
                    self.record_role_change(
                        &mut tx,
                        caller,
                        "table.handover-released",
                        &target,
                        detail,
                    )
                    .await?;
                }
                self.commit_transaction_or_unknown(tx).await?;
                Ok(HandoverAnswer {
                    at_version: row.version,
                })
            }
            HandoverRequest::Promoted { .. } => Ok(HandoverAnswer {
                at_version: row.version,
            }),
        }
    }

    async fn record_role_change(
        &self,
        tx: &mut sqlx::PgConnection,
        peer: &str,
        action: &str,
        target: &str,
        detail: String,
    ) -> CatalogResult<()> {
        let event = NewEvent {
            principal: format!("peer:{peer}"),
            action: action.to_string(),
            target: target.to_string(),
            outcome: Outcome::Succeeded,
            status: 200,
            detail: Some(detail),
        };
        crate::db::audit::record(&mut *tx, &event).await?;
        Ok(())
    }

    /// [`Catalog::learn_promotion`] in the caller's transaction, for a table of warehouse
    /// `within` if given. Only a region this one replicates the table to can have promoted it:
    /// a notice from any other changes nothing.
    async fn fence_in(
        &self,
        tx: &mut sqlx::PgConnection,
        within: Option<Uuid>,
        table_id: Uuid,
        notice: &PromotionNotice,
    ) -> CatalogResult<Learned> {
        let Some((row, warehouse_id, name)) = locked_by_id(tx, table_id).await? else {
            return Ok(Learned::NoSuchTable);
        };
        if within.is_some_and(|wh| wh != warehouse_id) {
            return Ok(Learned::NotReplicatedThere);
        }
        if row.replica.is_some() || row.epoch >= notice.epoch {
            return Ok(Learned::Before);
        }
        if !crate::db::replication::has_stream_to(tx, table_id, &notice.region).await? {
            return Ok(Learned::NotReplicatedThere);
        }
        let fencing = Fencing {
            epoch: notice.epoch,
            primary_region: notice.region.clone(),
            primary_url: notice.url.clone(),
            promoted_at_version: notice.at_version,
            fenced_at_version: row.version,
            last_metadata_location: row.metadata_location.clone(),
            fenced_at: chrono::Utc::now(),
        };
        if !promotion_db::fence_primary(tx, warehouse_id, &row, notice.table_id, &fencing).await? {
            return Ok(Learned::Before);
        }
        let detail = if notice.at_version >= row.version {
            format!(
                "region `{}` promoted its replica at epoch {} with every version here",
                notice.region, notice.epoch
            )
        } else {
            format!(
                "region `{}` promoted its replica at epoch {}; versions {} to {} here never \
                 reached it",
                notice.region,
                notice.epoch,
                notice.at_version + 1,
                row.version
            )
        };
        let target = format!("{}/{name}", self.warehouse_name(warehouse_id));
        self.record_role_change(tx, &notice.region, "table.fenced", &target, detail.clone())
            .await?;
        crate::telemetry::record_role_change("fenced");
        tracing::warn!(table = %table_id, %detail,
            "a promotion elsewhere superseded this table: it is now a replica");
        Ok(Learned::Fenced)
    }
}

/// The longest a handover may last (a caller asking for more gets this).
const MAX_HANDOVER_MS: u64 = 10 * 60 * 1000;

/// The table `table_id` with its change lock and row lock held: its name first, for the change
/// lock, which comes before the row's (as in a commit). Its row, warehouse and name.
async fn locked_by_id(
    tx: &mut sqlx::PgConnection,
    table_id: Uuid,
) -> CatalogResult<Option<(db::TableRow, Uuid, TableName)>> {
    let Some((_, warehouse_id, name)) = db::find_table_by_id(tx, table_id, false).await? else {
        return Ok(None);
    };
    db::lock_table_names(tx, warehouse_id, &[&name]).await?;
    Ok(db::find_table_by_id(tx, table_id, true).await?)
}

/// What a former primary made of a promotion notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Learned {
    /// The table became the new primary's replica.
    Fenced,
    /// It knew already (a replica, or at that epoch or newer).
    Before,
    /// This region does not replicate the table to the notice's region.
    NotReplicatedThere,
    NoSuchTable,
}
