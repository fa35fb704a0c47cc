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
