//! What operators do through the management API: register peers, manage rules, read a table's
//! replication status, pause, resume and resync its streams. Inputs are checked here, so a
//! mistake gets a 4xx that names it and changes nothing.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::db::catalog as catalog_db;
use crate::db::replication::{self as db, StreamAction, StreamStatusRow};
use crate::error::{CatalogError, CatalogResult};
use crate::names::{self, NamespaceName, TableName};

use crate::contract::peer_protocol::{ReplicatedObject, Retention};
use crate::contract::replication_model::{
    DestinationStatus, Peer, PeerSpec, ReplicationMode, ReplicationOverview, Rule, RuleSpec,
    StreamSelector, StreamState, SyncDestinationStatus, SyncSettings, TableReplicationStatus,
};

fn bad(message: impl Into<String>) -> CatalogError {
    CatalogError::BadRequest(message.into())
}

fn is_violation(err: &sqlx::Error, code: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

/// Registers or replaces a peer (see the checks in the body: a URL floe may push to, a credential
/// that never follows a new URL, storage roots apart from this region's own warehouses).
pub async fn put_peer(
    catalog: &Catalog,
    allowed_hosts: Option<&[String]>,
    region: &str,
    spec: PeerSpec,
) -> CatalogResult<Peer> {
    if spec.region != region {
        return Err(bad(format!(
            "the body names region `{}` but the path names `{region}`",
            spec.region
        )));
    }
    names::validate_warehouse_name(region).map_err(|e| bad(format!("invalid peer region: {e}")))?;
    if region == catalog.region() {
        return Err(bad(format!(
            "`{region}` is this floe's own region; a peer must be another region"
        )));
    }
    super::peer_url::check(&spec.base_url, allowed_hosts).map_err(bad)?;
    if spec.credential.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(bad(
            "credential must not be empty; omit it to keep the stored one",
        ));
    }
    for wh in &spec.warehouses {
        names::validate_warehouse_name(&wh.warehouse)?;
        let root = crate::storage::parse_root(&wh.storage_root)
            .map_err(|e| bad(format!("storage-root of warehouse `{}`: {e}", wh.warehouse)))?;
        // Replica files written there would land among this region's own tables (or contain them).
        if let Some(own) = catalog
            .warehouses()
            .find(|own| root.is_at_or_under(&own.root) || own.root.is_at_or_under(&root))
        {
            return Err(bad(format!(
                "storage-root `{}` of peer warehouse `{}` overlaps this region's warehouse `{}` \
                 (root `{}`); replica files must go to the peer's own storage",
                wh.storage_root, wh.warehouse, own.name, own.root
            )));
        }
    }
    let mut tx = catalog.pool().begin().await?;
    if let Some((stored_url, has_credential)) = db::peer_for_update(&mut tx, region).await?
        && has_credential
        && spec.credential.is_none()
        && !super::peer_url::same_endpoint(&stored_url, &spec.base_url)
    {
        return Err(bad(format!(
            "base-url changes from `{stored_url}` to `{}`: send the peer's credential again; a \
             stored credential never follows a new URL",
            spec.base_url
        )));
    }
    db::upsert_peer(&mut tx, &spec).await?;
    tx.commit().await?;
    get_peer(catalog, region).await
}

pub async fn list_peers(catalog: &Catalog) -> CatalogResult<Vec<Peer>> {
    Ok(db::list_peers(catalog.pool(), None).await?)
}

pub async fn get_peer(catalog: &Catalog, region: &str) -> CatalogResult<Peer> {
    db::list_peers(catalog.pool(), Some(region))
        .await?
        .pop()
        .ok_or_else(|| no_such_peer(region))
}

fn no_such_peer(region: &str) -> CatalogError {
    CatalogError::NotFound {
        kind: "NoSuchPeerException",
        message: format!("Peer does not exist: {region}"),
    }
}

pub async fn delete_peer(catalog: &Catalog, region: &str) -> CatalogResult<()> {
    match db::delete_peer(catalog.pool(), region).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(no_such_peer(region)),
        Err(e) if is_violation(&e, "23503") => Err(CatalogError::AlreadyExists(format!(
            "peer `{region}` is still a destination of replication rules or streams; delete \
             those rules first"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Checks a rule against the catalog and the registered peers.
async fn validate_rule(catalog: &Catalog, spec: &RuleSpec) -> CatalogResult<Uuid> {
    let wh = catalog.warehouse(Some(&spec.warehouse))?;
    if let Some(levels) = &spec.namespace {
        NamespaceName::new(levels.clone())?;
    }
    if let Some(table) = &spec.table {
        let Some(levels) = &spec.namespace else {
            return Err(bad("a rule for one table needs its namespace too"));
        };
        TableName::new(NamespaceName::new(levels.clone())?, table.clone())?;
    }
    if spec.destinations.is_empty() {
        return Err(bad("a rule needs at least one destination"));
    }
    match spec.retention {
        Retention::KeepDays(0) | Retention::KeepSnapshots(0) => {
            return Err(bad("a retention value must be at least 1"));
        }
        _ => {}
    }
    validate_mode(wh, spec)?;
    let peers = db::list_peers(catalog.pool(), None).await?;
    for (i, d) in spec.destinations.iter().enumerate() {
        if spec.destinations[..i]
            .iter()
            .any(|o| o.peer == d.peer && o.warehouse == d.warehouse)
        {
            return Err(bad(format!(
                "destination {}/{} appears twice",
                d.peer, d.warehouse
            )));
        }
        if !d.namespace_prefix.is_empty() {
            NamespaceName::new(d.namespace_prefix.clone())
                .map_err(|e| bad(format!("namespace-prefix: {e}")))?;
        }
        let peer = peers.iter().find(|p| p.region == d.peer).ok_or_else(|| {
            CatalogError::Unprocessable(format!(
                "destination peer `{}` is not registered: PUT /management/v1/peers/{} first",
                d.peer, d.peer
            ))
        })?;
        if !peer.warehouses.iter().any(|w| w.warehouse == d.warehouse) {
            return Err(CatalogError::Unprocessable(format!(
                "peer `{}` has no storage root for warehouse `{}`: add it to the peer first",
                d.peer, d.warehouse
            )));
        }
    }
    Ok(wh.id)
}

/// A rule's mode and its settings: `min-acks` and `timeout-ms` belong to synchronous rules, which
/// need destinations enough to acknowledge and a builtin warehouse (floe cannot hold a commit made
/// through an upstream catalog until replicas have it).
fn validate_mode(wh: &crate::catalog::Warehouse, spec: &RuleSpec) -> CatalogResult<()> {
    let Some(sync) = spec.synchronous() else {
        if spec.min_acks.is_some() || spec.timeout_ms.is_some() {
            return Err(bad(
                "min-acks and timeout-ms apply to synchronous rules only: add \"mode\": \"sync\"",
            ));
        }
        return Ok(());
    };
    if wh.upstream.is_some() {
        return Err(bad(format!(
            "warehouse `{}` is served by an upstream catalog, whose commits floe cannot hold \
             until replicas have them: its rules must be asynchronous",
            wh.name
        )));
    }
    if sync.min_acks < 1 || sync.min_acks as usize > spec.destinations.len() {
        return Err(bad(format!(
            "min-acks must be between 1 and the rule's number of destinations ({}), not {}",
            spec.destinations.len(),
            sync.min_acks
        )));
    }
    if !(1..=SyncSettings::MAX_TIMEOUT_MS).contains(&sync.timeout_ms) {
        return Err(bad(format!(
            "timeout-ms must be between 1 and {}, not {}",
            SyncSettings::MAX_TIMEOUT_MS,
            sync.timeout_ms
        )));
    }
    Ok(())
}

async fn save_rule(catalog: &Catalog, rule_id: Uuid, spec: &RuleSpec) -> CatalogResult<()> {
    let warehouse_id = validate_rule(catalog, spec).await?;
    let mut tx = catalog.pool().begin().await?;
    db::save_rule(&mut tx, rule_id, warehouse_id, spec)
        .await
        .map_err(|e| {
            if is_violation(&e, "23505") {
                CatalogError::AlreadyExists(
                    "a rule with this scope already exists; update it instead".to_string(),
                )
            } else {
                e.into()
            }
        })?;
    tx.commit().await?;
    // Streams for existing tables right away (the replicator also reconciles on its own).
    db::reconcile_streams(catalog.pool(), None).await?;
    Ok(())
}

pub async fn create_rule(catalog: &Catalog, spec: RuleSpec) -> CatalogResult<Rule> {
    let rule_id = Uuid::now_v7();
    save_rule(catalog, rule_id, &spec).await?;
    get_rule(catalog, rule_id).await
}

pub async fn update_rule(catalog: &Catalog, rule_id: Uuid, spec: RuleSpec) -> CatalogResult<Rule> {
    get_rule(catalog, rule_id).await?;
    save_rule(catalog, rule_id, &spec).await?;
    get_rule(catalog, rule_id).await
}

pub async fn list_rules(catalog: &Catalog) -> CatalogResult<Vec<Rule>> {
    Ok(db::list_rules(catalog.pool(), None).await?)
}

pub async fn get_rule(catalog: &Catalog, rule_id: Uuid) -> CatalogResult<Rule> {
    db::list_rules(catalog.pool(), Some(rule_id))
        .await?
        .pop()
        .ok_or_else(|| CatalogError::NotFound {
            kind: "NoSuchRuleException",
            message: format!("Replication rule does not exist: {rule_id}"),
        })
}

pub async fn delete_rule(catalog: &Catalog, rule_id: Uuid) -> CatalogResult<()> {
    let mut tx = catalog.pool().begin().await?;
    if !db::delete_rule(&mut tx, rule_id).await? {
        return Err(CatalogError::NotFound {
            kind: "NoSuchRuleException",
            message: format!("Replication rule does not exist: {rule_id}"),
        });
    }
    tx.commit().await?;
    db::reconcile_streams(catalog.pool(), None).await?;
    Ok(())
}

/// The id of the table (or, where no table has the name, the view) whose streams are meant.
async fn table_id(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
) -> CatalogResult<(Uuid, ReplicatedObject)> {
    let wh = catalog.warehouse(Some(warehouse))?;
    let mut conn = catalog.pool().acquire().await?;
    if let Some(row) =
        catalog_db::get_table(&mut conn, wh.id, &table.namespace, &table.name, false).await?
    {
        return Ok((row.table_id, ReplicatedObject::Table));
    }
    crate::db::views::get_view(&mut conn, wh.id, &table.namespace, &table.name, false)
        .await?
        .map(|row| (row.view_id, ReplicatedObject::View))
        .ok_or_else(|| CatalogError::no_such_table(table))
}

/// GetTableReplicationStatus: every destination of the table.
pub async fn table_status(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
) -> CatalogResult<TableReplicationStatus> {
    let (table_id, kind) = table_id(catalog, warehouse, table).await?;
    let now = Utc::now();
    let destinations = db::stream_status(catalog.pool(), table_id)
        .await?
        .into_iter()
        .map(|s| destination_status(s, table.namespace.levels(), &table.name, now))
        .collect();
    let role = match kind {
        ReplicatedObject::Table => super::promote::table_role(catalog, warehouse, table).await?,
        _ => None,
    };
    Ok(TableReplicationStatus {
        kind,
        warehouse: warehouse.to_string(),
        namespace: table.namespace.levels().to_vec(),
        table: table.name.clone(),
        source_region: catalog.region().to_string(),
        destinations,
        role,
    })
}

/// Every stream of this region, grouped by source table, with the peers they go to.
pub async fn overview(catalog: &Catalog) -> CatalogResult<ReplicationOverview> {
    let now = Utc::now();
    let mut tables: Vec<TableReplicationStatus> = Vec::new();
    for (stream, (warehouse, namespace, table)) in
        db::streams_with_status(catalog.pool(), None).await?
    {
        let kind = stream.kind;
        let destination = destination_status(stream, &namespace, &table, now);
        match tables.last_mut() {
            Some(last)
                if last.kind == kind
                    && last.warehouse == warehouse
                    && last.namespace == namespace
                    && last.table == table =>
            {
                last.destinations.push(destination)
            }
            _ => tables.push(TableReplicationStatus {
                kind,
                warehouse,
                namespace,
                table,
                source_region: catalog.region().to_string(),
                destinations: vec![destination],
                role: None,
            }),
        }
    }
    Ok(ReplicationOverview {
        region: catalog.region().to_string(),
        peers: list_peers(catalog).await?,
        tables,
    })
}

/// One destination's status; the replica's names default to the source's (with the prefix) until
/// the stream has recorded them.
fn destination_status(
    s: StreamStatusRow,
    namespace: &[String],
    table: &str,
    now: DateTime<Utc>,
) -> DestinationStatus {
    let state = if s.paused {
        StreamState::Paused
    } else if s.failed_reason.is_some() {
        StreamState::Failed
    } else if s.backfill_version.is_some() || s.applied_version == 0 {
        StreamState::Backfilling
    } else if s.applied_version < s.source_version {
        StreamState::Replicating
    } else {
        StreamState::Completed
    };
    let mut prefixed = s.namespace_prefix.clone();
    prefixed.extend(namespace.iter().cloned());
    DestinationStatus {
        peer: s.peer_region,
        warehouse: s.dest_warehouse,
        namespace: s.dest_namespace.unwrap_or(prefixed),
        table: s.dest_table.unwrap_or_else(|| table.to_string()),
        state,
        source_version: s.source_version,
        applied_version: s.applied_version,
        lag_versions: (s.source_version - s.applied_version).max(0),
        lag_seconds: s
            .oldest_pending_at
            .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0),
        last_replicated_metadata_location: s.last_applied_location,
        last_replicated_at: s.last_applied_at,
        generation: s.generation,
        attempts: s.attempts,
        failure: s.failed_reason.or(s.last_error),
        rule_id: s.rule_id,
        mode: if s.synchronous {
            ReplicationMode::Sync
        } else {
            ReplicationMode::Async
        },
        sync: s.synchronous.then_some(SyncDestinationStatus {
            confirmed: s.sync_confirmed,
            missed: s.sync_missed,
            last_missed_at: s.sync_last_missed_at,
            last_missed: s.sync_last_missed,
        }),
    }
}

/// A gauge of every stream: its name, help text, and value.
type MetricFamily = (&'static str, &'static str, fn(&DestinationStatus) -> f64);

/// Every stream's lag and state in the Prometheus text format. Computed from the database at each
/// scrape, so every instance reports the same figures (the lag is a property of the shared streams,
/// not of the instance that happens to work on them).
pub async fn metrics_text(catalog: &Catalog) -> CatalogResult<String> {
    use std::fmt::Write;
    let now = Utc::now();
    let streams = db::streams_with_status(catalog.pool(), None).await?;
    let statuses: Vec<(DestinationStatus, String, String, String)> = streams
        .into_iter()
        .map(|(row, (warehouse, namespace, table))| {
            let status = destination_status(row, &namespace, &table, now);
            (status, warehouse, namespace.join("."), table)
        })
        .collect();
    let mut out = String::new();
    let families: [MetricFamily; 3] = [
        (
            "floe_replication_lag_versions",
            "Source table versions not yet applied at the destination.",
            |d| d.lag_versions as f64,
        ),
        (
            "floe_replication_lag_seconds",
            "Age of the oldest source change not yet applied at the destination (0 when caught up).",
            |d| d.lag_seconds,
        ),
        (
            "floe_replication_attempts",
            "Failed attempts since the stream last progressed.",
            |d| f64::from(d.attempts),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (d, warehouse, namespace, table) in &statuses {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                labels(warehouse, namespace, table, d),
                value(d)
            );
        }
    }
    let name = "floe_replication_stream_state";
    let _ = writeln!(
        out,
        "# HELP {name} 1 for the state each stream is in.\n# TYPE {name} gauge"
    );
    for (d, warehouse, namespace, table) in &statuses {
        let state = serde_json::to_value(d.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{name}{{{},state=\"{state}\"}} 1",
            labels(warehouse, namespace, table, d)
        );
    }
    Ok(out)
}

fn labels(warehouse: &str, namespace: &str, table: &str, d: &DestinationStatus) -> String {
    format!(
        "warehouse=\"{}\",namespace=\"{}\",table=\"{}\",peer=\"{}\",destination_warehouse=\"{}\"",
        escape(warehouse),
        escape(namespace),
        escape(table),
        escape(&d.peer),
        escape(&d.warehouse)
    )
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Pause, resume or resync the table's streams (all, or those the selector names).
pub async fn act(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
    selector: &StreamSelector,
    action: StreamAction,
) -> CatalogResult<TableReplicationStatus> {
    let (table_id, _) = table_id(catalog, warehouse, table).await?;
    let changed = db::act_on_streams(
        catalog.pool(),
        table_id,
        selector.peer.as_deref(),
        selector.warehouse.as_deref(),
        action,
    )
    .await?;
    if changed == 0 {
        return Err(CatalogError::NotFound {
            kind: "NoSuchReplicationException",
            message: format!(
                "table {table} has no replication stream{}: create a rule that covers it",
                match (&selector.peer, &selector.warehouse) {
                    (None, None) => String::new(),
                    (peer, wh) => format!(
                        " to {}/{}",
                        peer.as_deref().unwrap_or("*"),
                        wh.as_deref().unwrap_or("*")
                    ),
                }
            ),
        });
    }
    table_status(catalog, warehouse, table).await
}
