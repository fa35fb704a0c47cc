//! The operator's side of failover: promoting a replica (`catalog::promotion` holds the rule
//! and its argument), replicating the promoted table back to its former primary, and each
//! table's role as the status shows it.

use uuid::Uuid;

use crate::catalog::Catalog;
use crate::contract::replication_model::{
    Destination, DivergedCommit, DivergedCommits, PromoteSpec, PromotionMode, PromotionResult,
    RuleSpec, TableRole,
};
use crate::db::catalog as catalog_db;
use crate::db::promotion::{self as promotion_db, PromotedFrom};
use crate::error::{CatalogError, CatalogResult};
use crate::names::TableName;

use super::admin;

/// PromoteTable: makes this region's replica `table` the primary (see `catalog::promotion`), then,
/// where it can, replicates it back to the former primary with a rule of its own, so that the
/// former primary becomes its replica once it is reachable.
pub async fn promote(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
    spec: PromoteSpec,
) -> CatalogResult<PromotionResult> {
    if spec.mode == PromotionMode::Planned {
        return Err(CatalogError::Unprocessable(
            "planned switchover is not available yet: promote with {\"mode\": \"forced\"}, \
             after checking the replica's status shows it caught up"
                .to_string(),
        ));
    }
    let wh = catalog.warehouse(Some(warehouse))?;
    let promoted = catalog.promote_table(wh, table).await?;
    let (replicates_back, note) =
        match replicate_back(catalog, warehouse, table, &promoted.from).await {
            Ok(rule) => (Some(rule), None),
            Err(why) => (None, Some(why)),
        };
    Ok(PromotionResult {
        warehouse: warehouse.to_string(),
        namespace: table.namespace.levels().to_vec(),
        table: table.name.clone(),
        epoch: promoted.epoch,
        previous_primary: promoted.from.source_region.clone(),
        promoted_at_version: promoted.from.at_version,
        replicates_back,
        note,
    })
}

/// A table rule sending the promoted table to the warehouse and namespace it came from, when the
/// former primary is a registered peer holding that warehouse and the names match (the table
/// kept its namespace: the rule that made the replica added no prefix); else why not.
async fn replicate_back(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
    from: &PromotedFrom,
) -> Result<Uuid, String> {
    let Some(source_warehouse) = &from.source_warehouse else {
        return Err("the former primary never said which warehouse the table is in".to_string());
    };
    if from.source_namespace.as_deref() != Some(table.namespace.levels()) {
        return Err(format!(
            "the table is in another namespace at region `{}` ({:?}): add a rule replicating it \
             back with the namespace it needs",
            from.source_region, from.source_namespace
        ));
    }
    let peer = admin::get_peer(catalog, &from.source_region)
        .await
        .map_err(|_| {
            format!(
                "region `{}` is not a registered peer here: register it (PUT \
                 /management/v1/peers/{}) and add a rule to replicate the table back",
                from.source_region, from.source_region
            )
        })?;
    if !peer
        .warehouses
        .iter()
        .any(|w| &w.warehouse == source_warehouse)
    {
        return Err(format!(
            "peer `{}` has no storage root for warehouse `{source_warehouse}` here",
            from.source_region
        ));
    }
    let spec = RuleSpec {
        warehouse: warehouse.to_string(),
        namespace: Some(table.namespace.levels().to_vec()),
        table: Some(table.name.clone()),
        destinations: vec![Destination {
            peer: from.source_region.clone(),
            warehouse: source_warehouse.clone(),
            namespace_prefix: Vec::new(),
        }],
        retention: Default::default(),
        replicate_drops: false,
    };
    admin::create_rule(catalog, spec)
        .await
        .map(|rule| rule.id)
        .map_err(|e| format!("the rule replicating the table back was not made: {e}"))
}

/// Asks every peer which of this region's tables it promoted, and learns each promotion (see
/// `catalog::promotion`). Run at start, before floe serves: a primary that was cut off while a
/// peer took its tables over refuses their writes from its first request, when that peer can be
/// reached. An unreachable peer is logged and passed over (floe serves regardless; its streams
/// learn of a promotion at their first push).
pub async fn learn_promotions(catalog: &Catalog, timeout: std::time::Duration) {
    let peers = match crate::db::replication::peer_endpoints(catalog.pool()).await {
        Ok(peers) => peers,
        Err(err) => {
            tracing::warn!(%err, "could not list the peers to ask for promotions");
            return;
        }
    };
    let client = super::peer_client::PeerClient::new(timeout);
    let asks = peers.iter().map(|(region, base_url, credential)| {
        let client = &client;
        async move {
            let answer = client
                .promotions(
                    region,
                    base_url,
                    credential.as_ref().map(crate::secret::Secret::expose),
                )
                .await;
            (region, answer)
        }
    });
    // Every peer at once: a start waits for the slowest peer, not for their sum.
    for (region, answer) in futures::future::join_all(asks).await {
        let promotions = match answer {
            Ok(answer) => answer.promotions,
            Err(err) => {
                tracing::warn!(%err, peer = %region,
                    "could not ask a peer for promotions of this region's tables");
                continue;
            }
        };
        for of in promotions {
            if &of.promotion.region != region {
                continue; // a peer speaks for its own promotions only
            }
            if let Err(err) = catalog
                .learn_promotion(of.source_table_id, &of.promotion)
                .await
            {
                tracing::warn!(%err, table = %of.source_table_id, peer = %region,
                    "could not learn a promotion");
            }
        }
    }
}

/// The table's epoch and role here, with the commits that diverged if a promotion elsewhere
/// superseded it.
pub async fn table_role(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
) -> CatalogResult<Option<TableRole>> {
    let wh = catalog.warehouse(Some(warehouse))?;
    let mut conn = catalog.pool().acquire().await?;
    let Some(row) =
        catalog_db::get_table(&mut conn, wh.id, &table.namespace, &table.name, false).await?
    else {
        return Ok(None);
    };
    drop(conn);
    let (role, primary_region, primary_url) = match &row.replica {
        Some(mark) => (
            "replica",
            mark.origin_region.clone(),
            mark.origin_url.clone(),
        ),
        None => (
            "primary",
            catalog.region().to_string(),
            catalog.public_url().map(str::to_string),
        ),
    };
    let diverged = match promotion_db::fencing(catalog.pool(), row.table_id).await? {
        Some(fencing) => Some(diverged_commits(catalog, row.table_id, fencing).await?),
        None => None,
    };
    Ok(Some(TableRole {
        epoch: row.epoch,
        role: role.to_string(),
        primary_region,
        primary_url,
        diverged,
    }))
}

/// The most diverged commits a status lists.
const MAX_DIVERGED: i64 = 1000;

async fn diverged_commits(
    catalog: &Catalog,
    table_id: Uuid,
    fencing: promotion_db::Fencing,
) -> CatalogResult<DivergedCommits> {
    let count = (fencing.fenced_at_version - fencing.promoted_at_version).clamp(0, MAX_DIVERGED);
    let entries = if count == 0 {
        Vec::new()
    } else {
        crate::log::read_table(catalog.pool(), table_id, fencing.promoted_at_version, count).await?
    };
    let commits = entries
        .into_iter()
        .filter(|e| {
            e.table_version
                .is_some_and(|v| v <= fencing.fenced_at_version)
        })
        .map(|e| DivergedCommit {
            seq: e.seq,
            version: e.table_version.unwrap_or_default(),
            kind: e.kind,
            metadata_location: e.new_metadata_location,
            snapshot_ids: e
                .changes
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["action"] == "add-snapshot")
                .filter_map(|c| c["snapshot"]["snapshot-id"].as_i64())
                .collect(),
        })
        .collect();
    Ok(DivergedCommits {
        epoch: fencing.epoch,
        primary_region: fencing.primary_region,
        promoted_at_version: fencing.promoted_at_version,
        fenced_at_version: fencing.fenced_at_version,
        fenced_at: fencing.fenced_at,
        last_metadata_location: fencing.last_metadata_location,
        commits,
    })
}
