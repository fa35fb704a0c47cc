//! SQL of transaction groups (migrations/0026): at a source, how many of a group's entries go to
//! one destination warehouse; at a destination, the group's updates parked until the last arrives
//! (`catalog::replica_group` says why each step is safe).

use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::contract::peer_protocol::ApplyRequest;

/// How many table commits of the transaction group `txn_group` replicate to `dest_warehouse` at
/// `peer_region` by a stream that has not stopped: the members a destination waits for.
pub async fn members_for_destination(
    pool: &PgPool,
    txn_group: Uuid,
    peer_region: &str,
    dest_warehouse: &str,
) -> sqlx::Result<i64> {
    // `details ? 'group-size'` is the partial index's own predicate (migrations/0026).
    sqlx::query_scalar(
        "SELECT count(*) FROM commit_log l
         JOIN replication_stream s ON s.table_id = l.table_id
         WHERE l.txn_group = $1 AND l.details ? 'group-size' AND l.kind = 'commit-table'
           AND s.peer_region = $2 AND s.dest_warehouse = $3 AND s.failed_reason IS NULL",
    )
    .bind(txn_group)
    .bind(peer_region)
    .bind(dest_warehouse)
    .fetch_one(pool)
    .await
}

/// Serialises the arrivals of one group's members until COMMIT: exactly one of them finds all
/// the others parked.
pub async fn lock_group(conn: &mut PgConnection, group_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 26))")
        .bind(group_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// One parked update.
#[derive(Debug, Clone)]
pub struct ParkedMember {
    pub request: ApplyRequest,
    /// How long ago it first arrived.
    pub waited_ms: i64,
}

/// The updates of a group parked in this warehouse.
pub async fn parked(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    group_id: Uuid,
) -> sqlx::Result<Vec<ParkedMember>> {
    let rows = sqlx::query(
        "SELECT request,
                (extract(epoch FROM now() - parked_at) * 1000)::bigint AS waited_ms
         FROM replica_group_member WHERE group_id = $1 AND warehouse_id = $2
         ORDER BY parked_at",
    )
    .bind(group_id)
    .bind(warehouse_id)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(ParkedMember {
                request: row.try_get::<Json<ApplyRequest>, _>("request")?.0,
                waited_ms: row.try_get("waited_ms")?,
            })
        })
        .collect()
}

/// The update of `request`'s replica parked for a group now (its newest send), if any.
pub async fn parked_request(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    group_id: Uuid,
    request: &ApplyRequest,
) -> sqlx::Result<Option<ApplyRequest>> {
    let parked: Option<Json<ApplyRequest>> = sqlx::query_scalar(
        "SELECT request FROM replica_group_member
         WHERE group_id = $1 AND warehouse_id = $2 AND source_region = $3
           AND source_table_id = $4",
    )
    .bind(group_id)
    .bind(warehouse_id)
    .bind(&request.source_region)
    .bind(request.source_table_id)
    .fetch_optional(conn)
    .await?;
    Ok(parked.map(|request| request.0))
}

/// Parks an update (or, sent again, keeps its newest form and when it first arrived), and clears
/// that replica's updates parked for older groups: a newer update supersedes them.
pub async fn park(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    group_id: Uuid,
    request: &ApplyRequest,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM replica_group_member
         WHERE source_region = $1 AND source_table_id = $2 AND group_id <> $3",
    )
    .bind(&request.source_region)
    .bind(request.source_table_id)
    .bind(group_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO replica_group_member
             (group_id, warehouse_id, source_region, source_table_id, request)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (group_id, source_region, source_table_id)
         DO UPDATE SET request = EXCLUDED.request",
    )
    .bind(group_id)
    .bind(warehouse_id)
    .bind(&request.source_region)
    .bind(request.source_table_id)
    .bind(Json(request))
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes one parked update: its group was given up on, and it is applied apart.
pub async fn unpark(
    conn: &mut PgConnection,
    group_id: Uuid,
    request: &ApplyRequest,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM replica_group_member
         WHERE group_id = $1 AND source_region = $2 AND source_table_id = $3",
    )
    .bind(group_id)
    .bind(&request.source_region)
    .bind(request.source_table_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes a group's parked updates: it completed.
pub async fn dissolve(conn: &mut PgConnection, group_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM replica_group_member WHERE group_id = $1")
        .bind(group_id)
        .execute(conn)
        .await?;
    Ok(())
}
