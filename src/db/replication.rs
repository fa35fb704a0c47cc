//! SQL for replication: peers, rules and their destinations, and the (table, destination) streams
//! with their leases. Every lease of a stream takes the next fencing token (from one sequence, so
//! tokens grow across streams and across a stream made again), and every progress update is fenced
//! on the lease it was made under ([`Lease`]: owner and token), so a task that lost its lease (it
//! stalled and the lease expired to another; an operator paused or resynced the stream) cannot
//! overwrite newer progress, even on the same instance. Every change it sends carries the token
//! too, and the destination refuses one older than the newest it has accepted
//! (`db::catalog::open_replica_apply`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::contract::peer_protocol::{ReplicatedObject, Retention};
use crate::contract::replication_model::{
    Destination, Peer, PeerSpec, PeerWarehouse, ReplicationMode, Rule, RuleSpec,
};

/// Serialises stream reconciliation across instances (it inserts and deletes many rows).
const RECONCILE_LOCK_KEY: i64 = 7_380_396_369_697_861_480;

// ---- peers ----

/// A peer's base URL and whether a credential is stored, its row locked until the transaction
/// ends (so a concurrent change cannot slip between the check and the write).
pub async fn peer_for_update(
    conn: &mut PgConnection,
    region: &str,
) -> sqlx::Result<Option<(String, bool)>> {
    let row = sqlx::query(
        "SELECT base_url, credential IS NOT NULL AS has_credential FROM peer WHERE region = $1
         FOR UPDATE",
    )
    .bind(region)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.get("base_url"), r.get("has_credential"))))
}

/// Creates or replaces a peer and its warehouse mapping. A `None` credential keeps the stored one.
pub async fn upsert_peer(conn: &mut PgConnection, spec: &PeerSpec) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO peer (region, base_url, credential) VALUES ($1, $2, $3)
         ON CONFLICT (region) DO UPDATE SET base_url = EXCLUDED.base_url,
             credential = coalesce(EXCLUDED.credential, peer.credential), updated_at = now()",
    )
    .bind(&spec.region)
    .bind(&spec.base_url)
    .bind(spec.credential.as_ref().map(crate::secret::Secret::expose))
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM peer_warehouse WHERE region = $1")
        .bind(&spec.region)
        .execute(&mut *conn)
        .await?;
    for wh in &spec.warehouses {
        sqlx::query(
            "INSERT INTO peer_warehouse (region, warehouse, storage_root, s3)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&spec.region)
        .bind(&wh.warehouse)
        .bind(&wh.storage_root)
        .bind(wh.s3.as_ref().map(|s3| sqlx::types::Json(s3.clone())))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn list_peers(pool: &PgPool, region: Option<&str>) -> sqlx::Result<Vec<Peer>> {
    let rows = sqlx::query(
        "SELECT p.region, p.base_url, p.credential IS NOT NULL AS has_credential,
                coalesce(array_agg(w.warehouse ORDER BY w.warehouse)
                         FILTER (WHERE w.warehouse IS NOT NULL), '{}') AS warehouses,
                coalesce(array_agg(w.storage_root ORDER BY w.warehouse)
                         FILTER (WHERE w.warehouse IS NOT NULL), '{}') AS roots,
                coalesce(array_agg(w.s3 ORDER BY w.warehouse)
                         FILTER (WHERE w.warehouse IS NOT NULL), '{}') AS s3
         FROM peer p LEFT JOIN peer_warehouse w USING (region)
         WHERE $1::text IS NULL OR p.region = $1
         GROUP BY p.region ORDER BY p.region",
    )
    .bind(region)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let names: Vec<String> = r.get("warehouses");
            let roots: Vec<String> = r.get("roots");
            let s3: Vec<Option<sqlx::types::Json<crate::storage::S3Settings>>> = r.get("s3");
            Peer {
                region: r.get("region"),
                base_url: r.get("base_url"),
                has_credential: r.get("has_credential"),
                warehouses: names
                    .into_iter()
                    .zip(roots)
                    .zip(s3)
                    .map(|((warehouse, storage_root), s3)| PeerWarehouse {
                        warehouse,
                        storage_root,
                        // Answers never carry the secret.
                        s3: s3.map(|s3| s3.0.without_secret()),
                    })
                    .collect(),
            }
        })
        .collect())
}

/// Deletes a peer; false when there was none. Fails (foreign key) while a rule or stream uses it.
pub async fn delete_peer(pool: &PgPool, region: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM peer WHERE region = $1")
        .bind(region)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}

// ---- rules ----

fn retention_columns(retention: Retention) -> (&'static str, Option<i32>) {
    match retention {
        Retention::KeepAll => ("keep-all", None),
        Retention::FollowSource => ("follow-source", None),
        Retention::KeepDays(n) => ("keep-days", Some(n as i32)),
        Retention::KeepSnapshots(n) => ("keep-snapshots", Some(n as i32)),
    }
}

pub fn retention_of(mode: Option<&str>, value: Option<i32>) -> Retention {
    let value = value.unwrap_or(1).max(1) as u32;
    match mode {
        Some("follow-source") => Retention::FollowSource,
        Some("keep-days") => Retention::KeepDays(value),
        Some("keep-snapshots") => Retention::KeepSnapshots(value),
        _ => Retention::KeepAll,
    }
}

/// Inserts or (with an existing id) replaces a rule and its destinations.
pub async fn save_rule(
    conn: &mut PgConnection,
    rule_id: Uuid,
    warehouse_id: Uuid,
    spec: &RuleSpec,
) -> sqlx::Result<()> {
    let (mode, value) = retention_columns(spec.retention);
    let sync = spec.synchronous();
    sqlx::query(
        "INSERT INTO replication_rule (rule_id, warehouse_id, namespace, table_name,
             retention_mode, retention_value, replicate_drops, sync_min_acks, sync_timeout_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (rule_id) DO UPDATE SET warehouse_id = EXCLUDED.warehouse_id,
             namespace = EXCLUDED.namespace, table_name = EXCLUDED.table_name,
             retention_mode = EXCLUDED.retention_mode, retention_value = EXCLUDED.retention_value,
             replicate_drops = EXCLUDED.replicate_drops, sync_min_acks = EXCLUDED.sync_min_acks,
             sync_timeout_ms = EXCLUDED.sync_timeout_ms, updated_at = now()",
    )
    .bind(rule_id)
    .bind(warehouse_id)
    .bind(&spec.namespace)
    .bind(&spec.table)
    .bind(mode)
    .bind(value)
    .bind(spec.replicate_drops)
    .bind(sync.map(|s| s.min_acks as i32))
    .bind(sync.map(|s| s.timeout_ms as i32))
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM replication_destination WHERE rule_id = $1")
        .bind(rule_id)
        .execute(&mut *conn)
        .await?;
    for d in &spec.destinations {
        sqlx::query(
            "INSERT INTO replication_destination (rule_id, peer_region, warehouse, namespace_prefix)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(rule_id)
        .bind(&d.peer)
        .bind(&d.warehouse)
        .bind(&d.namespace_prefix)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn list_rules(pool: &PgPool, rule_id: Option<Uuid>) -> sqlx::Result<Vec<Rule>> {
    let rows = sqlx::query(
        "SELECT r.rule_id, w.name AS warehouse, r.namespace, r.table_name, r.retention_mode,
                r.retention_value, r.replicate_drops, r.sync_min_acks, r.sync_timeout_ms,
                r.created_at, r.updated_at,
                coalesce(jsonb_agg(jsonb_build_object('peer', d.peer_region,
                    'warehouse', d.warehouse, 'namespace-prefix', d.namespace_prefix)
                    ORDER BY d.peer_region, d.warehouse)
                    FILTER (WHERE d.rule_id IS NOT NULL), '[]') AS destinations
         FROM replication_rule r JOIN warehouse w USING (warehouse_id)
         LEFT JOIN replication_destination d USING (rule_id)
         WHERE $1::uuid IS NULL OR r.rule_id = $1
         GROUP BY r.rule_id, w.name ORDER BY r.created_at, r.rule_id",
    )
    .bind(rule_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let destinations: serde_json::Value = r.get("destinations");
            let min_acks: Option<i32> = r.get("sync_min_acks");
            let timeout_ms: Option<i32> = r.get("sync_timeout_ms");
            Rule {
                id: r.get("rule_id"),
                spec: RuleSpec {
                    warehouse: r.get("warehouse"),
                    namespace: r.get("namespace"),
                    table: r.get("table_name"),
                    destinations: serde_json::from_value::<Vec<Destination>>(destinations)
                        .unwrap_or_default(),
                    retention: retention_of(r.get("retention_mode"), r.get("retention_value")),
                    replicate_drops: r.get("replicate_drops"),
                    mode: match min_acks {
                        Some(_) => ReplicationMode::Sync,
                        None => ReplicationMode::Async,
                    },
                    min_acks: min_acks.map(|n| n as u32),
                    timeout_ms: timeout_ms.map(|n| n as u32),
                },
                created_at: r.get("created_at"),
                updated_at: r.get("updated_at"),
            }
        })
        .collect())
}

pub async fn delete_rule(conn: &mut PgConnection, rule_id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM replication_rule WHERE rule_id = $1")
        .bind(rule_id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}

// ---- streams ----

/// The channel NOTIFY'd when streams are created or an operator acts on them: the replicators
/// (on every instance) then look at every due stream, not only those of tables that changed.
pub const STREAMS_CHANNEL: &str = "floe_streams";

/// What streams replicate: every table, view and namespace, by id (a view's or a namespace's id
/// in `table_id`). A namespace has no name (so rules for one table never cover it) and is in
/// itself.
const REPLICATED_OBJECTS: &str =
    "(SELECT table_id, warehouse_id, namespace_id, name, origin_region,
        source_region, 'table' AS object_kind FROM iceberg_table
     UNION ALL
     SELECT view_id, warehouse_id, namespace_id, name, origin_region, source_region, 'view'
     FROM iceberg_view
     UNION ALL
     SELECT namespace_id, warehouse_id, namespace_id, NULL, origin_region, source_region,
            'namespace'
     FROM namespace)";

/// Whether rule `r` covers object `t` (a table, view or namespace, with `name`) in namespace `n` of
/// the rule's warehouse: its scope is the warehouse, a namespace at or above `n`, or `t` itself.
/// The most specific covering rule governs `t` (see [`reconcile_streams`]).
pub const RULE_COVERS: &str = "(r.namespace IS NULL
        OR (cardinality(n.levels) >= cardinality(r.namespace)
            AND n.levels[1:cardinality(r.namespace)] = r.namespace))
    AND (r.table_name IS NULL OR (n.levels = r.namespace AND t.name = r.table_name))";

/// Tables alone, as [`REPLICATED_OBJECTS`] has them.
pub(super) const REPLICATED_TABLES: &str = "(SELECT table_id, warehouse_id, namespace_id, name,
    origin_region, source_region, 'table' AS object_kind FROM iceberg_table)";

/// The streams the rules call for, of the objects `table_filter` picks (`t`, of `objects`:
/// [`REPLICATED_OBJECTS`] or a part of it; `$1` binds their ids): one per (object, destination
/// of the most specific rule that covers it), never back to the region a replica came from.
/// Columns: `table_id`, `warehouse_id`, `rule_id`, `object_kind`, `peer_region`, `warehouse`,
/// `namespace_prefix`.
pub(super) fn desired_streams(objects: &str, table_filter: &str) -> String {
    format!(
        "
        WITH effective AS (
            SELECT DISTINCT ON (t.table_id) t.table_id, t.warehouse_id, r.rule_id, t.object_kind,
                   coalesce(t.origin_region, '') AS origin, coalesce(t.source_region, '') AS src
            FROM {objects} t JOIN namespace n USING (namespace_id)
            JOIN replication_rule r ON r.warehouse_id = t.warehouse_id AND {RULE_COVERS}
            WHERE {table_filter}
            ORDER BY t.table_id, (r.table_name IS NOT NULL) DESC,
                     coalesce(cardinality(r.namespace), 0) DESC
        )
        SELECT e.table_id, e.warehouse_id, e.rule_id, e.object_kind, d.peer_region, d.warehouse,
               d.namespace_prefix
        FROM effective e JOIN replication_destination d USING (rule_id)
        WHERE d.peer_region <> e.origin AND d.peer_region <> e.src"
    )
}

/// Makes the streams match the rules, for every table or only for `tables`: one per (table,
/// destination of the most specific rule that matches the table), never back to the region a
/// replica came from; views and namespaces as tables. Streams of dropped tables stay until their
/// drop is replicated. Returns (created or re-ruled, removed).
pub async fn reconcile_streams(pool: &PgPool, tables: Option<&[Uuid]>) -> sqlx::Result<(u64, u64)> {
    // Two statement texts, not one with `$1 IS NULL OR ...`: PostgreSQL's generic plan for the
    // latter scans every table, which made each table's creation cost as much as a full pass.
    let (table_filter, stream_filter) = match tables {
        Some(_) => ("t.table_id = ANY($1)", "s.table_id = ANY($1)"),
        None => ("$1::uuid[] IS NULL", "$1::uuid[] IS NULL"),
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(RECONCILE_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let desired = desired_streams(REPLICATED_OBJECTS, table_filter);
    let created = sqlx::query(&format!(
        "INSERT INTO replication_stream (stream_id, table_id, warehouse_id, rule_id, peer_region,
             dest_warehouse, namespace_prefix, object_kind)
         SELECT gen_random_uuid(), table_id, warehouse_id, rule_id, peer_region, warehouse,
                namespace_prefix, object_kind
         FROM ({desired}) desired
         ON CONFLICT (table_id, peer_region, dest_warehouse) DO NOTHING"
    ))
    .bind(tables)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Not `ON CONFLICT DO UPDATE ... WHERE`: that locks every conflicting row, changed or not,
    // and a pass over every table would hold all the streams' rows while leasing skips them.
    let reruled = sqlx::query(&format!(
        "UPDATE replication_stream s SET rule_id = d.rule_id
         FROM ({desired}) d
         WHERE d.table_id = s.table_id AND d.peer_region = s.peer_region
           AND d.warehouse = s.dest_warehouse AND s.rule_id IS DISTINCT FROM d.rule_id"
    ))
    .bind(tables)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let removed = sqlx::query(&format!(
        "DELETE FROM replication_stream s
         WHERE {stream_filter}
           AND EXISTS (SELECT 1 FROM {REPLICATED_OBJECTS} t WHERE t.table_id = s.table_id)
           AND NOT EXISTS (SELECT 1 FROM ({desired}) d WHERE d.table_id = s.table_id
                           AND d.peer_region = s.peer_region AND d.warehouse = s.dest_warehouse)"
    ))
    .bind(tables)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if created > 0 {
        notify_streams_changed(&mut tx).await?;
    }
    tx.commit().await?;
    if created + removed >= REANALYZE_AFTER {
        // The planner's statistics still describe the table before this change (autovacuum
        // looks at it a minute later at best): with them it reads every new stream at every
        // lease, and sorts them, instead of taking the first few in index order.
        sqlx::query("ANALYZE replication_stream")
            .execute(pool)
            .await?;
    }
    Ok((created + reruled, removed))
}

/// Streams created or removed at once after which the table's statistics are refreshed.
const REANALYZE_AFTER: u64 = 500;

/// One lease of one stream (or job): the instance holding it and the fencing token it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The stream's (or job's) id.
    pub id: Uuid,
    pub owner: Uuid,
    pub token: i64,
}

/// A leased stream with what working on it needs.
#[derive(Debug, Clone)]
pub struct StreamRow {
    pub stream_id: Uuid,
    /// The lease this row was read under.
    pub lease: Lease,
    pub table_id: Uuid,
    pub warehouse_id: Uuid,
    pub peer_region: String,
    pub dest_warehouse: String,
    pub namespace_prefix: Vec<String>,
    pub generation: i64,
    pub applied_version: i64,
    pub backfill_version: Option<i64>,
    pub backfill_location: Option<String>,
    pub backfill_step: i32,
    pub dest_location: Option<String>,
    pub dest_namespace: Option<Vec<String>>,
    pub dest_table: Option<String>,
    pub attempts: i32,
    pub retention: Retention,
    pub replicate_drops: bool,
    pub peer_base_url: String,
    pub peer_credential: Option<crate::secret::Secret>,
    /// The destination warehouse's storage root, if the peer maps that warehouse.
    pub dest_root: Option<String>,
    /// How to reach it, when it is S3 (with the secret).
    pub dest_s3: Option<crate::storage::S3Settings>,
    /// What the stream replicates (`table_id` is a view's or a namespace's id for theirs).
    pub kind: ReplicatedObject,
}

pub(super) const STREAM_COLUMNS: &str = "s.stream_id, s.lease_owner, s.lease_token, s.table_id, s.warehouse_id, s.peer_region, \
     s.dest_warehouse, s.namespace_prefix, s.generation, s.applied_version, s.backfill_version, \
     s.backfill_location, s.backfill_step, s.dest_location, s.dest_namespace, s.dest_table, \
     s.attempts, r.retention_mode, r.retention_value, \
     coalesce(r.replicate_drops, false) AS replicate_drops, p.base_url, p.credential, \
     pw.storage_root, pw.s3, s.object_kind";

const STREAM_JOINS: &str = "FROM replication_stream s
     JOIN peer p ON p.region = s.peer_region
     LEFT JOIN replication_rule r ON r.rule_id = s.rule_id
     LEFT JOIN peer_warehouse pw ON pw.region = s.peer_region AND pw.warehouse = s.dest_warehouse";

fn object_kind(r: &sqlx::postgres::PgRow) -> ReplicatedObject {
    match r.get::<&str, _>("object_kind") {
        "view" => ReplicatedObject::View,
        "namespace" => ReplicatedObject::Namespace,
        _ => ReplicatedObject::Table,
    }
}

pub(super) fn stream_row(r: sqlx::postgres::PgRow) -> StreamRow {
    StreamRow {
        stream_id: r.get("stream_id"),
        lease: Lease {
            id: r.get("stream_id"),
            owner: r.get::<Option<Uuid>, _>("lease_owner").unwrap_or_default(),
            token: r.get("lease_token"),
        },
        table_id: r.get("table_id"),
        warehouse_id: r.get("warehouse_id"),
        peer_region: r.get("peer_region"),
        dest_warehouse: r.get("dest_warehouse"),
        namespace_prefix: r.get("namespace_prefix"),
        generation: r.get("generation"),
        applied_version: r.get("applied_version"),
        backfill_version: r.get("backfill_version"),
        backfill_location: r.get("backfill_location"),
        backfill_step: r.get("backfill_step"),
        dest_location: r.get("dest_location"),
        dest_namespace: r.get("dest_namespace"),
        dest_table: r.get("dest_table"),
        attempts: r.get("attempts"),
        retention: retention_of(r.get("retention_mode"), r.get("retention_value")),
        replicate_drops: r.get("replicate_drops"),
        peer_base_url: r.get("base_url"),
        peer_credential: r
            .get::<Option<String>, _>("credential")
            .map(crate::secret::Secret::from),
        dest_root: r.get("storage_root"),
        dest_s3: r
            .get::<Option<sqlx::types::Json<crate::storage::S3Settings>>, _>("s3")
            .map(|s3| s3.0),
        kind: object_kind(&r),
    }
}

/// Leases up to `limit` streams that have work and are due, skipping rows other instances are
/// leasing right now (`SKIP LOCKED`) and leases that have not expired. With `changed`, only the
/// streams of those tables are checked for new log entries; streams with work of their own (new,
/// backfilling, retrying) are always candidates.
pub async fn lease_streams(
    pool: &PgPool,
    owner: Uuid,
    limit: i64,
    lease_seconds: f64,
    changed: Option<&[Uuid]>,
) -> sqlx::Result<Vec<StreamRow>> {
    // Due, not paused or failed, and no live lease.
    const LEASABLE: &str = "NOT c.paused AND c.failed_reason IS NULL AND c.next_attempt_at <= now()
        AND (c.lease_expires_at IS NULL OR c.lease_expires_at < now())";
    // Work of its own: new, backfilling or retrying. The partial index
    // `replication_stream_own_work` holds exactly these streams.
    const OWN_WORK: &str =
        "(c.backfill_version IS NOT NULL OR c.applied_version = 0 OR c.attempts > 0)";
    // A namespace's versions are its properties' (migrations/0023), not log entries of its own.
    const NEW_ENTRIES: &str = "CASE WHEN c.object_kind = 'namespace'
        THEN EXISTS (SELECT 1 FROM namespace n WHERE n.namespace_id = c.table_id
                     AND n.properties_version > c.applied_version)
        ELSE EXISTS (SELECT 1 FROM commit_log l WHERE l.table_id = c.table_id
                     AND l.table_version > c.applied_version) END";
    // Each candidate set is found by an index and locked by its own `FOR UPDATE SKIP LOCKED`:
    // the changed tables' streams first (by the unique index that leads with `table_id`; their
    // commits are the ones waiting; a table being handed over to a new primary first, since its
    // writers wait for its replica to catch up (migrations/0025); then the one that applied
    // longest ago, so that a stream that yielded its worker comes after those it yielded to), then
    // streams with work of their own, oldest due first, up to the limit. A full pass reads every
    // stream instead. Separate statement texts, not one with `$4 IS NULL OR ...`, whose generic
    // plan would read every stream in every round; and `= ANY(ARRAY(...))`, not a join, so the
    // picked rows are updated by primary key, not by a hash join over every stream.
    let picked = match changed {
        Some(_) => format!(
            "WITH tail AS (
                 SELECT c.stream_id FROM replication_stream c
                 WHERE c.table_id = ANY($4) AND {LEASABLE} AND ({OWN_WORK} OR {NEW_ENTRIES})
                 ORDER BY floe_handed_over(c.table_id) DESC, c.last_applied_at NULLS FIRST
                 LIMIT $3 FOR UPDATE SKIP LOCKED),
             own AS (
                 SELECT c.stream_id FROM replication_stream c
                 WHERE {LEASABLE} AND {OWN_WORK}
                   AND c.stream_id NOT IN (SELECT stream_id FROM tail)
                 ORDER BY c.next_attempt_at
                 LIMIT greatest($3 - (SELECT count(*) FROM tail), 0)
                 FOR UPDATE SKIP LOCKED)
             SELECT stream_id FROM tail UNION ALL SELECT stream_id FROM own"
        ),
        None => format!(
            "SELECT c.stream_id FROM replication_stream c
             WHERE $4::uuid[] IS NULL AND {LEASABLE} AND ({OWN_WORK} OR {NEW_ENTRIES})
             ORDER BY c.next_attempt_at
             LIMIT $3 FOR UPDATE SKIP LOCKED"
        ),
    };
    let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
        "UPDATE replication_stream s
         SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
             lease_token = nextval('replication_lease_token')
         WHERE s.stream_id = ANY(ARRAY({picked}))
         RETURNING s.stream_id",
    ))
    .bind(owner)
    .bind(lease_seconds)
    .bind(limit)
    .bind(changed)
    .fetch_all(pool)
    .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {STREAM_COLUMNS} {STREAM_JOINS} WHERE s.stream_id = ANY($1) AND s.lease_owner = $2"
    ))
    .bind(&ids)
    .bind(owner)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(stream_row).collect())
}

/// Extends the leases still held; returns the streams whose lease was extended.
pub async fn heartbeat(
    pool: &PgPool,
    leases: &[Lease],
    lease_seconds: f64,
) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = leases.iter().map(|l| l.id).collect();
    let owners: Vec<Uuid> = leases.iter().map(|l| l.owner).collect();
    let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
    sqlx::query_scalar(
        "UPDATE replication_stream s SET lease_expires_at = now() + make_interval(secs => $4)
         FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS held(stream_id, owner, token)
         WHERE s.stream_id = held.stream_id AND s.lease_owner = held.owner
           AND s.lease_token = held.token
         RETURNING s.stream_id",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&tokens)
    .bind(lease_seconds)
    .fetch_all(pool)
    .await
}

/// One change to a leased stream; each is applied only while `owner` holds the lease.
#[derive(Debug, Clone)]
pub enum StreamUpdate {
    BackfillStarted {
        version: i64,
        location: String,
        dest_location: String,
        dest_namespace: Vec<String>,
        dest_table: String,
    },
    BackfillStep(i32),
    Applied {
        version: i64,
        metadata_location: Option<String>,
        dest_namespace: Vec<String>,
        dest_table: String,
    },
    /// Retry later; the error is kept for status.
    Retry {
        error: String,
        delay_ms: i64,
    },
    /// Stop until an operator acts.
    Failed(String),
    /// Start over with a new generation (a full backfill, built beside the replica and swapped
    /// in when complete), after `delay_ms`, with a generation above `above` if one is given (the
    /// destination's newest).
    Restart {
        reason: String,
        delay_ms: i64,
        above: Option<i64>,
    },
    Release,
}

/// Applies an update; false when the lease is no longer held (stop working on the stream).
pub async fn update_stream(
    pool: &PgPool,
    lease: &Lease,
    update: &StreamUpdate,
) -> sqlx::Result<bool> {
    // The token names one lease of the stream: a newer lease, a pause or a resync replaced it.
    let (stream_id, token) = (lease.id, lease.token);
    let query = match update {
        StreamUpdate::BackfillStarted {
            version,
            location,
            dest_location,
            dest_namespace,
            dest_table,
        } => sqlx::query(
            "UPDATE replication_stream SET backfill_version = $3, backfill_location = $4,
                 backfill_step = 0, dest_location = $5, dest_namespace = $6, dest_table = $7
             WHERE stream_id = $1 AND lease_token = $2",
        )
        .bind(stream_id)
        .bind(token)
        .bind(version)
        .bind(location)
        .bind(dest_location)
        .bind(dest_namespace)
        .bind(dest_table),
        StreamUpdate::BackfillStep(step) => sqlx::query(
            "UPDATE replication_stream SET backfill_step = $3, attempts = 0, last_error = NULL
             WHERE stream_id = $1 AND lease_token = $2",
        )
        .bind(stream_id)
        .bind(token)
        .bind(step),
        StreamUpdate::Applied {
            version,
            metadata_location,
            dest_namespace,
            dest_table,
        } => sqlx::query(
            "UPDATE replication_stream SET applied_version = $3, backfill_version = NULL,
                 backfill_location = NULL, backfill_step = 0, attempts = 0, last_error = NULL,
                 last_applied_at = now(), last_applied_location = coalesce($4, last_applied_location),
                 dest_namespace = $5, dest_table = $6
             WHERE stream_id = $1 AND lease_token = $2",
        )
        .bind(stream_id)
        .bind(token)
        .bind(version)
        .bind(metadata_location)
        .bind(dest_namespace)
        .bind(dest_table),
        StreamUpdate::Retry { error, delay_ms } => sqlx::query(
            "UPDATE replication_stream SET attempts = attempts + 1, last_error = $3,
                 next_attempt_at = now() + make_interval(secs => $4::float8 / 1000),
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE stream_id = $1 AND lease_token = $2",
        )
        .bind(stream_id)
        .bind(token)
        .bind(error)
        .bind(*delay_ms as f64),
        StreamUpdate::Failed(reason) => sqlx::query(
            "UPDATE replication_stream SET failed_reason = $3, last_error = $3,
                 attempts = attempts + 1, lease_owner = NULL, lease_expires_at = NULL
             WHERE stream_id = $1 AND lease_token = $2",
        )
        .bind(stream_id)
        .bind(token)
        .bind(reason),
        StreamUpdate::Restart {
            reason,
            delay_ms,
            above,
        } => sqlx::query(
            "UPDATE replication_stream SET generation = greatest(generation, $5) + 1,
                 applied_version = 0, backfill_version = NULL, backfill_location = NULL,
                 backfill_step = 0, dest_location = NULL, last_error = $3,
                 attempts = attempts + 1,
                 next_attempt_at = now() + make_interval(secs => $4::float8 / 1000),
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE stream_id = $1 AND lease_token = $2",
        )
        .bind(stream_id)
        .bind(token)
        .bind(reason)
        .bind(*delay_ms as f64)
        .bind(above.unwrap_or(0)),
        StreamUpdate::Release => sqlx::query(
            "UPDATE replication_stream SET lease_owner = NULL, lease_expires_at = NULL
             WHERE stream_id = $1 AND lease_token = $2",
        )
        .bind(stream_id)
        .bind(token),
    };
    let done = query.execute(pool).await?.rows_affected();
    Ok(done == 1)
}

/// Every peer's region, base URL and credential (for calls to each).
pub async fn peer_endpoints(
    pool: &PgPool,
) -> sqlx::Result<Vec<(String, String, Option<crate::secret::Secret>)>> {
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT region, base_url, credential FROM peer ORDER BY region")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(region, url, credential)| (region, url, credential.map(Into::into)))
        .collect())
}

/// Whether the table has a replication stream to `peer_region`.
pub async fn has_stream_to(
    conn: &mut PgConnection,
    table_id: Uuid,
    peer_region: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM replication_stream WHERE table_id = $1 AND peer_region = $2)",
    )
    .bind(table_id)
    .bind(peer_region)
    .fetch_one(conn)
    .await
}

/// Removes a finished stream (its table was dropped and the drop replicated).
pub async fn delete_stream(pool: &PgPool, lease: &Lease) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM replication_stream WHERE stream_id = $1 AND lease_token = $2")
        .bind(lease.id)
        .bind(lease.token)
        .execute(pool)
        .await?;
    Ok(())
}

/// A stream with the facts its status needs.
#[derive(Debug, Clone)]
pub struct StreamStatusRow {
    pub stream_id: Uuid,
    pub rule_id: Option<Uuid>,
    pub peer_region: String,
    pub dest_warehouse: String,
    pub namespace_prefix: Vec<String>,
    pub dest_namespace: Option<Vec<String>>,
    pub dest_table: Option<String>,
    pub generation: i64,
    pub applied_version: i64,
    pub backfill_version: Option<i64>,
    pub paused: bool,
    pub failed_reason: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub last_applied_at: Option<DateTime<Utc>>,
    pub last_applied_location: Option<String>,
    pub source_version: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    pub kind: ReplicatedObject,
    /// Whether the stream's rule makes commits wait for it (tables only: views and namespaces
    /// replicate asynchronously under any rule).
    pub synchronous: bool,
    /// Synchronous commits it applied, those it could not take in time, and the last of those.
    pub sync_confirmed: i64,
    pub sync_missed: i64,
    pub sync_last_missed_at: Option<DateTime<Utc>>,
    pub sync_last_missed: Option<String>,
}

pub async fn stream_status(pool: &PgPool, table_id: Uuid) -> sqlx::Result<Vec<StreamStatusRow>> {
    Ok(streams_with_status(pool, Some(table_id))
        .await?
        .into_iter()
        .map(|(row, _)| row)
        .collect())
}

/// The source table of a stream, for labelling: (warehouse, namespace, table); the namespace and
/// table are the stream's last known names at the destination once the source table is dropped.
pub type StreamSource = (String, Vec<String>, String);

/// Every stream (or a table's) with its status facts and its source table's names.
pub async fn streams_with_status(
    pool: &PgPool,
    table_id: Option<Uuid>,
) -> sqlx::Result<Vec<(StreamStatusRow, StreamSource)>> {
    let rows = sqlx::query(
        "SELECT s.stream_id, s.rule_id, s.peer_region, s.dest_warehouse, s.namespace_prefix,
                s.dest_namespace, s.dest_table, s.generation, s.applied_version,
                s.backfill_version, s.paused, s.failed_reason, s.attempts, s.last_error,
                s.last_applied_at, s.last_applied_location, s.object_kind,
                CASE WHEN s.object_kind = 'namespace' THEN n.properties_version
                     ELSE coalesce(lg.source_version, 0) END AS source_version,
                lg.oldest_pending_at, w.name AS warehouse, n.levels AS source_namespace,
                coalesce(t.name, v.name) AS source_table,
                coalesce(r.sync_min_acks IS NOT NULL AND s.object_kind = 'table', false)
                    AS synchronous,
                s.sync_confirmed, s.sync_missed, s.sync_last_missed_at, s.sync_last_missed
         FROM replication_stream s
         JOIN warehouse w USING (warehouse_id)
         LEFT JOIN replication_rule r ON r.rule_id = s.rule_id
         LEFT JOIN iceberg_table t ON t.table_id = s.table_id
         LEFT JOIN iceberg_view v ON v.view_id = s.table_id
         -- A namespace's own stream (its properties) is of the namespace, and at its version.
         LEFT JOIN namespace n ON n.namespace_id = coalesce(t.namespace_id, v.namespace_id,
                                                          s.table_id)
         LEFT JOIN LATERAL (
             SELECT max(l.table_version) AS source_version,
                    min(l.committed_at) FILTER (WHERE l.table_version > s.applied_version)
                        AS oldest_pending_at
             FROM commit_log l WHERE l.table_id = s.table_id) lg ON true
         WHERE $1::uuid IS NULL OR s.table_id = $1
         ORDER BY w.name, n.levels, source_table, s.peer_region, s.dest_warehouse",
    )
    .bind(table_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let status = StreamStatusRow {
                stream_id: r.get("stream_id"),
                rule_id: r.get("rule_id"),
                peer_region: r.get("peer_region"),
                dest_warehouse: r.get("dest_warehouse"),
                namespace_prefix: r.get("namespace_prefix"),
                dest_namespace: r.get("dest_namespace"),
                dest_table: r.get("dest_table"),
                generation: r.get("generation"),
                applied_version: r.get("applied_version"),
                backfill_version: r.get("backfill_version"),
                paused: r.get("paused"),
                failed_reason: r.get("failed_reason"),
                attempts: r.get("attempts"),
                last_error: r.get("last_error"),
                last_applied_at: r.get("last_applied_at"),
                last_applied_location: r.get("last_applied_location"),
                source_version: r.get("source_version"),
                oldest_pending_at: r.get("oldest_pending_at"),
                kind: object_kind(&r),
                synchronous: r.get("synchronous"),
                sync_confirmed: r.get("sync_confirmed"),
                sync_missed: r.get("sync_missed"),
                sync_last_missed_at: r.get("sync_last_missed_at"),
                sync_last_missed: r.get("sync_last_missed"),
            };
            let namespace: Option<Vec<String>> = r.get("source_namespace");
            let table: Option<String> = r.get("source_table");
            let source = (
                r.get("warehouse"),
                namespace
                    .or_else(|| status.dest_namespace.clone())
                    .unwrap_or_default(),
                table
                    .or_else(|| status.dest_table.clone())
                    .unwrap_or_default(),
            );
            (status, source)
        })
        .collect())
}

/// An operator action on some streams of a table.
#[derive(Debug, Clone, Copy)]
pub enum StreamAction {
    Pause,
    Resume,
    Resync,
}

/// Applies an action to the streams of a table matching the selector; returns how many.
pub async fn act_on_streams(
    pool: &PgPool,
    table_id: Uuid,
    peer: Option<&str>,
    warehouse: Option<&str>,
    action: StreamAction,
) -> sqlx::Result<u64> {
    // Pause and resync revoke the current lease (a new token, no owner): a task still working
    // on the stream is refused at its next step and stops.
    let set = match action {
        StreamAction::Pause => {
            "paused = true, lease_owner = NULL, lease_expires_at = NULL,
             lease_token = nextval('replication_lease_token')"
        }
        // Resume also clears a failure: the operator has dealt with its cause. A stream that
        // failed, or stopped inside a backfill, begins a new backfill (of a new generation, built
        // beside the replica) at the source's version now: the state it stopped at may since have
        // been repaired at the source, and replaying the log could not get past it.
        StreamAction::Resume => {
            "paused = false, failed_reason = NULL, attempts = 0, next_attempt_at = now(),
             generation = generation
                 + (failed_reason IS NOT NULL OR backfill_version IS NOT NULL)::int,
             applied_version = CASE WHEN failed_reason IS NOT NULL OR backfill_version IS NOT NULL
                                    THEN 0 ELSE applied_version END,
             backfill_version = NULL, backfill_location = NULL, backfill_step = 0,
             lease_owner = NULL, lease_expires_at = NULL,
             lease_token = nextval('replication_lease_token')"
        }
        StreamAction::Resync => {
            "generation = generation + 1, applied_version = 0, backfill_version = NULL,
             backfill_location = NULL, backfill_step = 0, dest_location = NULL,
             failed_reason = NULL, attempts = 0, next_attempt_at = now(),
             lease_owner = NULL, lease_expires_at = NULL,
             lease_token = nextval('replication_lease_token')"
        }
    };
    let mut tx = pool.begin().await?;
    let done = sqlx::query(&format!(
        "UPDATE replication_stream SET {set}
         WHERE table_id = $1 AND ($2::text IS NULL OR peer_region = $2)
           AND ($3::text IS NULL OR dest_warehouse = $3)"
    ))
    .bind(table_id)
    .bind(peer)
    .bind(warehouse)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    notify_streams_changed(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}

/// Wakes the replicators on every instance (at the transaction's commit) to look at every stream.
/// The newest lease token of a stream (`None` once it is gone): a sender outside the stream's
/// own task (a synchronous commit) sends under it.
pub async fn stream_lease_token(pool: &PgPool, stream_id: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT lease_token FROM replication_stream WHERE stream_id = $1")
        .bind(stream_id)
        .fetch_optional(pool)
        .await
}

pub(super) async fn notify_streams_changed(tx: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(STREAMS_CHANNEL)
        .execute(tx)
        .await
        .map(drop)
}
