//! SQL of epochs and promotions (migrations/0024): a replica made primary, the promotion kept in
//! the fence row of the source it followed, and a former primary made a replica of its successor
//! with the commits its successor never received listed (`table_fencing`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::catalog::{ReplicaMark, TableRow};

/// What a promotion leaves behind of the source it followed.
#[derive(Debug, Clone)]
pub struct PromotedFrom {
    pub source_region: String,
    pub source_table_id: Uuid,
    /// The source's warehouse and the table's namespace there, if a change told them.
    pub source_warehouse: Option<String>,
    pub source_namespace: Option<Vec<String>>,
    pub at_version: i64,
    pub epoch: i64,
}

/// Makes the locked replica `row` (marked `mark`) a primary at `epoch`, and records the promotion
/// in its source's fence row, where changes from that source under an older epoch stop from now
/// on. A build of a newer generation in progress goes: nothing more comes from that source.
pub async fn promote_replica(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    row: &TableRow,
    mark: &ReplicaMark,
    epoch: i64,
) -> sqlx::Result<PromotedFrom> {
    sqlx::query(
        "UPDATE iceberg_table SET source_region = NULL, source_table_id = NULL,
             origin_region = NULL, origin_url = NULL, replica_generation = NULL,
             replica_version = NULL, replica_step = NULL, orphaned = false, epoch = $2,
             updated_at = now()
         WHERE table_id = $1",
    )
    .bind(row.table_id)
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    let fence = sqlx::query(
        "INSERT INTO replica_fence AS f (warehouse_id, source_region, source_table_id,
             lease_token, promoted_epoch, promoted_table_id, promoted_at_version)
         VALUES ($1, $2, $3, 0, $4, $5, $6)
         ON CONFLICT (warehouse_id, source_region, source_table_id) DO UPDATE
             SET promoted_epoch = EXCLUDED.promoted_epoch,
                 promoted_table_id = EXCLUDED.promoted_table_id,
                 promoted_at_version = EXCLUDED.promoted_at_version
         RETURNING source_warehouse, source_namespace",
    )
    .bind(warehouse_id)
    .bind(&mark.source_region)
    .bind(mark.source_table_id)
    .bind(epoch)
    .bind(row.table_id)
    .bind(mark.version)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM replica_build
         WHERE warehouse_id = $1 AND source_region = $2 AND source_table_id = $3",
    )
    .bind(warehouse_id)
    .bind(&mark.source_region)
    .bind(mark.source_table_id)
    .execute(&mut *conn)
    .await?;
    Ok(PromotedFrom {
        source_region: mark.source_region.clone(),
        source_table_id: mark.source_table_id,
        source_warehouse: fence.get(0),
        source_namespace: fence.get(1),
        at_version: mark.version,
        epoch,
    })
}

/// The source a promoted table here was a replica of, if it was promoted.
pub async fn promoted_from(pool: &PgPool, table_id: Uuid) -> sqlx::Result<Option<PromotedFrom>> {
    let row = sqlx::query(
        "SELECT source_region, source_table_id, source_warehouse, source_namespace,
                promoted_at_version, promoted_epoch
         FROM replica_fence WHERE promoted_table_id = $1
         ORDER BY promoted_epoch DESC LIMIT 1",
    )
    .bind(table_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| PromotedFrom {
        source_region: r.get(0),
        source_table_id: r.get(1),
        source_warehouse: r.get(2),
        source_namespace: r.get(3),
        at_version: r.get(4),
        epoch: r.get(5),
    }))
}

/// The replicas of warehouse `warehouse_id` that follow a live source (not orphaned), with their
/// source region, by namespace and name.
pub async fn replicas_in(
    pool: &PgPool,
    warehouse_id: Uuid,
) -> sqlx::Result<Vec<(Vec<String>, String, String)>> {
    sqlx::query_as(
        "SELECT n.levels, t.name, t.source_region
         FROM iceberg_table t JOIN namespace n USING (namespace_id)
         WHERE n.warehouse_id = $1 AND t.source_region IS NOT NULL AND NOT t.orphaned
         ORDER BY n.levels, t.name",
    )
    .bind(warehouse_id)
    .fetch_all(pool)
    .await
}

/// Makes this region's own the namespaces of warehouse `warehouse_id` that replication made from
/// `origin_region` and that hold no replica any more (every table in them promoted): clients may
/// create tables in them, and the origin's later properties are left unapplied
/// (`catalog::namespace_replica`). Their names.
pub async fn adopt_namespaces(
    pool: &PgPool,
    warehouse_id: Uuid,
    origin_region: &str,
) -> sqlx::Result<Vec<Vec<String>>> {
    sqlx::query_scalar(
        "UPDATE namespace n SET origin_region = NULL, source_region = NULL,
             source_namespace_id = NULL, replica_generation = NULL, replica_version = NULL
         WHERE n.warehouse_id = $1 AND n.origin_region = $2
           AND NOT EXISTS (SELECT 1 FROM iceberg_table t
                            WHERE t.namespace_id = n.namespace_id AND t.source_region IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM iceberg_view v
                            WHERE v.namespace_id = n.namespace_id AND v.source_region IS NOT NULL)
         RETURNING n.levels",
    )
    .bind(warehouse_id)
    .bind(origin_region)
    .fetch_all(pool)
    .await
}

/// The most promotions one answer lists (promotions are operator actions: few).
const MAX_PROMOTIONS: i64 = 10_000;

/// Every promotion here of a replica of `source_region`'s tables: (its table id there, the
/// promotion's epoch, the promoted table's id here, the version it had reached).
pub async fn promotions_from(
    pool: &PgPool,
    source_region: &str,
) -> sqlx::Result<Vec<(Uuid, i64, Uuid, i64)>> {
    sqlx::query_as(
        "SELECT source_table_id, promoted_epoch, promoted_table_id, promoted_at_version
         FROM replica_fence WHERE source_region = $1 AND promoted_epoch IS NOT NULL
         ORDER BY promoted_epoch, source_table_id LIMIT $2",
    )
    .bind(source_region)
    .bind(MAX_PROMOTIONS)
    .fetch_all(pool)
    .await
}

/// A primary's handover of a table to the region that is to become its primary (planned
/// switchover; migrations/0025): until `until`, or until it learns of the promotion, it takes no
/// client write.
#[derive(Debug, Clone)]
pub struct Handover {
    pub to_region: String,
    pub to_url: Option<String>,
    pub until: DateTime<Utc>,
    /// The table's version when it was handed over: the new primary promotes once it has it.
    pub at_version: i64,
}

/// The handover in columns `first..first + 4` of `r` (a LEFT JOIN: absent when `to_region` is).
pub(super) fn handover_at(r: &sqlx::postgres::PgRow, first: usize) -> Option<Handover> {
    let to_region: Option<String> = r.get(first);
    to_region.map(|to_region| Handover {
        to_region,
        to_url: r.get(first + 1),
        until: r.get(first + 2),
        at_version: r.get(first + 3),
    })
}

/// Hands the locked primary `row` over to `to`: no client write commits from now until the
/// handover lapses at `until` or the promotion is learned. A handover to the same region again
/// (a retried request) renews it.
pub async fn hand_over(
    conn: &mut PgConnection,
    row: &TableRow,
    to_region: &str,
    to_url: Option<&str>,
    lasting: std::time::Duration,
) -> sqlx::Result<Handover> {
    let r = sqlx::query(
        "INSERT INTO table_handover (table_id, to_region, to_url, until, at_version)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)
         ON CONFLICT (table_id) DO UPDATE SET to_region = EXCLUDED.to_region,
             to_url = EXCLUDED.to_url, until = EXCLUDED.until, at_version = EXCLUDED.at_version,
             handed_at = now()
         RETURNING to_region, to_url, until, at_version",
    )
    .bind(row.table_id)
    .bind(to_region)
    .bind(to_url)
    .bind(lasting.as_secs_f64())
    .bind(row.version)
    .fetch_one(conn)
    .await?;
    Ok(handover_at(&r, 0).expect("a handover row names its region"))
}

/// Ends a handover to `to_region` (the promotion did not happen): writes commit again.
pub async fn release_handover(
    conn: &mut PgConnection,
    table_id: Uuid,
    to_region: &str,
) -> sqlx::Result<bool> {
    Ok(
        sqlx::query("DELETE FROM table_handover WHERE table_id = $1 AND to_region = $2")
            .bind(table_id)
            .bind(to_region)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// A former primary's record of the promotion that superseded it.
#[derive(Debug, Clone)]
pub struct Fencing {
    pub epoch: i64,
    pub primary_region: String,
    pub primary_url: Option<String>,
    /// The version of this table the new primary had reached.
    pub promoted_at_version: i64,
    /// This table's version when it learned of the promotion: its versions after
    /// `promoted_at_version` up to this one never reached the new primary.
    pub fenced_at_version: i64,
    pub last_metadata_location: String,
    pub fenced_at: DateTime<Utc>,
}

/// Makes the locked primary `row` a replica of the table `primary_table_id` of `primary_region`
/// at `fencing.epoch`, at generation 0 (the new primary's stream begins a backfill of generation
/// 1, swapped in over this state), and records the fencing. `false` when the row is no longer a
/// primary of an older epoch (another learned it first), and nothing changed.
pub async fn fence_primary(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    row: &TableRow,
    primary_table_id: Uuid,
    fencing: &Fencing,
) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE iceberg_table SET source_region = $2, source_table_id = $3, origin_region = $2,
             origin_url = $4, replica_generation = 0, replica_version = 0, replica_step = 0,
             orphaned = false, epoch = $5, updated_at = now()
         WHERE table_id = $1 AND source_region IS NULL AND epoch < $5",
    )
    .bind(row.table_id)
    .bind(&fencing.primary_region)
    .bind(primary_table_id)
    .bind(&fencing.primary_url)
    .bind(fencing.epoch)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !changed {
        return Ok(false);
    }
    sqlx::query("DELETE FROM table_handover WHERE table_id = $1")
        .bind(row.table_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO table_fencing (table_id, warehouse_id, epoch, primary_region, primary_url,
             promoted_at_version, fenced_at_version, last_metadata_location, fenced_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (table_id) DO UPDATE SET epoch = EXCLUDED.epoch,
             primary_region = EXCLUDED.primary_region, primary_url = EXCLUDED.primary_url,
             promoted_at_version = EXCLUDED.promoted_at_version,
             fenced_at_version = EXCLUDED.fenced_at_version,
             last_metadata_location = EXCLUDED.last_metadata_location,
             fenced_at = EXCLUDED.fenced_at",
    )
    .bind(row.table_id)
    .bind(warehouse_id)
    .bind(fencing.epoch)
    .bind(&fencing.primary_region)
    .bind(&fencing.primary_url)
    .bind(fencing.promoted_at_version)
    .bind(fencing.fenced_at_version)
    .bind(&fencing.last_metadata_location)
    .bind(fencing.fenced_at)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The fencing of a table here, if a promotion elsewhere superseded it.
pub async fn fencing(pool: &PgPool, table_id: Uuid) -> sqlx::Result<Option<Fencing>> {
    let row = sqlx::query(
        "SELECT epoch, primary_region, primary_url, promoted_at_version, fenced_at_version,
                last_metadata_location, fenced_at
         FROM table_fencing WHERE table_id = $1",
    )
    .bind(table_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Fencing {
        epoch: r.get(0),
        primary_region: r.get(1),
        primary_url: r.get(2),
        promoted_at_version: r.get(3),
        fenced_at_version: r.get(4),
        last_metadata_location: r.get(5),
        fenced_at: r.get(6),
    }))
}
