//! The operator's side of failover: promoting a replica, forced or planned (the handover that
//! makes a planned one lose nothing; `catalog::promotion` holds the rules and their argument),
//! one table or every replica of a warehouse, replicating the promoted table back to its former
//! primary, and each table's role as the status shows it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use uuid::Uuid;

use crate::catalog::promotion::Promoted;
use crate::catalog::{Catalog, Warehouse};
use crate::contract::peer_protocol::{HandoverRequest, PromotionNotice};
use crate::contract::replication_model::{
    Destination, DivergedCommit, DivergedCommits, PromoteSpec, PromotionMode, PromotionResult,
    RuleSpec, TableRole, WarehousePromoteSpec,
};
use crate::db::catalog::{self as catalog_db, ReplicaMark};
use crate::db::promotion::{self as promotion_db, PromotedFrom};
use crate::error::{CatalogError, CatalogResult};
use crate::names::{NamespaceName, TableName};

use super::admin;
use super::peer_client::{PeerClient, PeerError};

/// PromoteTable: makes this region's replica `table` the primary (see `catalog::promotion`), then,
/// where it can, replicates it back to the former primary with a rule of its own, so that the
/// former primary becomes its replica once it is reachable.
pub async fn promote(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
    spec: PromoteSpec,
) -> CatalogResult<PromotionResult> {
    let wh = catalog.warehouse(Some(warehouse))?;
    let (promoted, writes_refused_ms) = match spec.mode {
        PromotionMode::Forced => (catalog.promote_table(wh, table).await?, None),
        PromotionMode::Planned => {
            let (promoted, refused) = switch_over(catalog, wh, table, spec.timeout_ms).await?;
            (promoted, Some(refused))
        }
    };
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
        writes_refused_ms,
        replicates_back,
        note,
    })
}

/// Tables a warehouse's promotion promotes at once (each one's handover is its own, so a table
/// refuses writes only while it catches up, however many there are).
const WAREHOUSE_PARALLELISM: usize = 16;

/// What a warehouse's promotion did.
pub struct WarehousePromoted {
    /// The region whose replicas were promoted (empty when the warehouse holds none).
    pub source_region: String,
    /// One result per table, by name.
    pub tables: Vec<(TableName, CatalogResult<PromotionResult>)>,
    /// The namespaces replication had made that are this region's own now.
    pub namespaces: Vec<Vec<String>>,
}

/// PromoteWarehouse: every replica of `warehouse` that follows `spec.source_region` (or the
/// only region it holds replicas of), promoted as [`promote`] does, each on its own; one result
/// per table, by name. Replicas of a dropped source (orphaned) are not promoted. Then the
/// namespaces replication made from that region that hold no replica any more become this
/// region's own, so that clients can create tables in them.
pub async fn promote_warehouse(
    catalog: &Catalog,
    warehouse: &str,
    spec: WarehousePromoteSpec,
) -> CatalogResult<WarehousePromoted> {
    let wh = catalog.warehouse(Some(warehouse))?;
    let replicas = promotion_db::replicas_in(catalog.pool(), wh.id).await?;
    let source = match spec.source_region {
        Some(source) => source,
        None => {
            let sources: std::collections::BTreeSet<&str> = replicas
                .iter()
                .map(|(_, _, source)| source.as_str())
                .collect();
            match sources.len() {
                0 => String::new(),
                1 => sources.first().expect("one").to_string(),
                _ => {
                    return Err(CatalogError::BadRequest(format!(
                        "warehouse {warehouse} holds replicas of regions {sources:?}: say which \
                         one's to promote with source-region"
                    )));
                }
            }
        }
    };
    let tables = replicas
        .into_iter()
        .filter(|(_, _, from)| *from == source)
        .map(|(levels, name, _)| TableName::new(NamespaceName::new(levels)?, name))
        .collect::<CatalogResult<Vec<_>>>()?;
    let one = PromoteSpec {
        mode: spec.mode,
        timeout_ms: spec.timeout_ms,
    };
    let mut results: Vec<_> = futures::stream::iter(tables)
        .map(|table| {
            let one = one.clone();
            async move {
                let result = promote(catalog, warehouse, &table, one).await;
                (table, result)
            }
        })
        .buffer_unordered(WAREHOUSE_PARALLELISM)
        .collect()
        .await;
    results.sort_by_key(|(table, _)| table.to_string());
    let namespaces = if source.is_empty() {
        Vec::new()
    } else {
        promotion_db::adopt_namespaces(catalog.pool(), wh.id, &source).await?
    };
    Ok(WarehousePromoted {
        source_region: source,
        tables: results,
        namespaces,
    })
}

/// How long a planned switchover lets the primary refuse writes by default, and at most.
const DEFAULT_HANDOVER: Duration = Duration::from_secs(30);
const MAX_HANDOVER: Duration = Duration::from_secs(600);

/// How often the replica's position is looked at while it catches up.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

/// Planned switchover (see `catalog::promotion`): the table's primary hands it over (it takes no
/// more writes and says its version), this replica applies up to that version, and is promoted
/// with nothing left behind; then the former primary is told, and becomes its replica. Past the
/// time allowed, nothing changes and the primary takes writes again. Returns the promotion and
/// how long the primary refused writes, from before asking to after telling it (at most that).
async fn switch_over(
    catalog: &Catalog,
    wh: &Warehouse,
    table: &TableName,
    timeout_ms: Option<u64>,
) -> CatalogResult<(Promoted, u64)> {
    let lasting = timeout_ms
        .map_or(DEFAULT_HANDOVER, Duration::from_millis)
        .clamp(Duration::from_millis(100), MAX_HANDOVER);
    // This clock starts before the primary's (it starts on receiving the request), so a
    // promotion made before this deadline is made before the handover lapses there; the margin
    // covers the promotion's own commit.
    let started = Instant::now();
    let deadline = started + lasting - (lasting / 5).min(Duration::from_secs(2));
    let mark = replica_mark(catalog, wh, table).await?;
    let primary = mark.source_region.clone();
    let Some((_, base_url, credential)) = crate::db::replication::peer_endpoints(catalog.pool())
        .await?
        .into_iter()
        .find(|(region, _, _)| *region == primary)
    else {
        return Err(CatalogError::Unprocessable(format!(
            "a planned switchover asks the primary, region `{primary}`, to hand table {table} \
             over, but it is not a registered peer here: register it (PUT \
             /management/v1/peers/{primary}), or promote with {{\"mode\": \"forced\"}} if it is lost"
        )));
    };
    let credential = credential.as_ref().map(crate::secret::Secret::expose);
    let client = PeerClient::new(lasting.min(Duration::from_secs(30)));
    let ask = |request: HandoverRequest| {
        let (client, primary, base_url) = (&client, &primary, &base_url);
        async move {
            client
                .handover(primary, base_url, credential, &request)
                .await
        }
    };
    let handed = ask(HandoverRequest::Begin {
        table_id: mark.source_table_id,
        epoch: mark.epoch,
        url: catalog.public_url().map(str::to_string),
        lasting_ms: lasting.as_millis() as u64,
    })
    .await
    .map_err(|err| handover_failed(table, &primary, err))?;
    let handed_at = started.elapsed();
    loop {
        let now = replica_mark(catalog, wh, table).await?;
        if now.source_table_id == mark.source_table_id
            && now.step == 0
            && now.version >= handed.at_version
        {
            break;
        }
        if Instant::now() >= deadline {
            if let Err(err) = ask(HandoverRequest::Release {
                table_id: mark.source_table_id,
            })
            .await
            {
                tracing::warn!(%err, %table, "the handover was not released: it lapses by itself");
            }
            return Err(CatalogError::Unavailable(format!(
                "the replica of table {table} reached version {} of region `{primary}`'s {} \
                 within {} ms: the switchover is abandoned and nothing changed (region \
                 `{primary}` takes writes again). Look at the stream's status, then try again \
                 with a longer timeout-ms",
                now.version,
                handed.at_version,
                lasting.as_millis()
            )));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
    let caught_up_at = started.elapsed();
    let promoted = catalog.promote_table(wh, table).await?;
    let promoted_at = started.elapsed();
    let promotion = PromotionNotice {
        region: catalog.region().to_string(),
        url: catalog.public_url().map(str::to_string),
        epoch: promoted.epoch,
        table_id: promoted.table_id,
        at_version: promoted.from.at_version,
    };
    // The former primary learns it now; if it cannot be told, it learns it from the stream back
    // to it, or asking its peers when it starts.
    if let Err(err) = ask(HandoverRequest::Promoted {
        table_id: mark.source_table_id,
        promotion,
    })
    .await
    {
        tracing::warn!(%err, %table, "the former primary was not told of the promotion");
    }
    let told_at = started.elapsed();
    // Where the time with writes refused went, step by step.
    tracing::info!(%table, handover_ms = handed_at.as_millis() as u64,
        catch_up_ms = (caught_up_at - handed_at).as_millis() as u64,
        promote_ms = (promoted_at - caught_up_at).as_millis() as u64,
        tell_ms = (told_at - promoted_at).as_millis() as u64, "planned switchover");
    Ok((promoted, told_at.as_millis() as u64))
}

/// The replica mark of `table` here: a 404 without the table, a 422 when it is a primary.
async fn replica_mark(
    catalog: &Catalog,
    wh: &Warehouse,
    table: &TableName,
) -> CatalogResult<ReplicaMark> {
    let mut conn = catalog.pool().acquire().await?;
    let row = catalog_db::get_table(&mut conn, wh.id, &table.namespace, &table.name, false)
        .await?
        .ok_or_else(|| CatalogError::no_such_table(table))?;
    row.replica.ok_or_else(|| {
        CatalogError::Unprocessable(format!(
            "table {table} is already the primary here (epoch {}); only a replica can be \
             promoted",
            row.epoch
        ))
    })
}

/// Why the primary did not hand the table over, for the operator: nothing changed.
fn handover_failed(table: &TableName, primary: &str, err: PeerError) -> CatalogError {
    match err {
        PeerError::Unavailable { .. } => CatalogError::Unavailable(format!(
            "region `{primary}` could not be asked to hand table {table} over ({err}); nothing \
             changed. If it is lost, promote with {{\"mode\": \"forced\"}}"
        )),
        other => CatalogError::Unprocessable(format!(
            "region `{primary}` did not hand table {table} over ({other}); nothing changed"
        )),
    }
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
        ..Default::default()
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
