//! Durable jobs' SQL (see migration 0009): recorded in the transaction whose work they finish,
//! leased with `FOR UPDATE SKIP LOCKED` and a fencing token, as replication streams are.

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::replication::Lease;

/// A leased purge job.
#[derive(Debug, Clone)]
pub struct PurgeJob {
    pub lease: Lease,
    pub warehouse_id: Uuid,
    pub table_name: String,
    pub metadata_location: String,
    pub attempts: i32,
}

/// Records a purge in the caller's (the drop's) transaction.
pub async fn insert_purge_job(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    table_name: &str,
    metadata_location: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO purge_job (job_id, warehouse_id, table_name, metadata_location)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(warehouse_id)
    .bind(table_name)
    .bind(metadata_location)
    .execute(conn)
    .await?;
    Ok(())
}

/// Leases up to `limit` due jobs whose lease is free or expired.
pub async fn lease_purge_jobs(
    pool: &PgPool,
    owner: Uuid,
    limit: i64,
    lease_seconds: f64,
) -> sqlx::Result<Vec<PurgeJob>> {
    let rows = sqlx::query(
        "UPDATE purge_job j
         SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
             lease_token = j.lease_token + 1
         FROM (SELECT job_id FROM purge_job
               WHERE next_attempt_at <= now()
                 AND (lease_expires_at IS NULL OR lease_expires_at < now())
               ORDER BY next_attempt_at LIMIT $3
               FOR UPDATE SKIP LOCKED) due
         WHERE j.job_id = due.job_id
         RETURNING j.job_id, j.lease_token, j.warehouse_id, j.table_name, j.metadata_location,
                   j.attempts",
    )
    .bind(owner)
    .bind(lease_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PurgeJob {
            lease: Lease {
                id: r.get("job_id"),
                owner,
                token: r.get("lease_token"),
            },
            warehouse_id: r.get("warehouse_id"),
            table_name: r.get("table_name"),
            metadata_location: r.get("metadata_location"),
            attempts: r.get("attempts"),
        })
        .collect())
}

/// Extends a job's lease while it runs; false when the lease is lost.
pub async fn extend_purge_lease(
    pool: &PgPool,
    lease: &Lease,
    lease_seconds: f64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE purge_job SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE job_id = $1 AND lease_token = $2",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(lease_seconds)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// A finished job goes.
pub async fn finish_purge_job(pool: &PgPool, lease: &Lease) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM purge_job WHERE job_id = $1 AND lease_token = $2")
        .bind(lease.id)
        .bind(lease.token)
        .execute(pool)
        .await?;
    Ok(())
}

/// A failed attempt: the job is free again after `delay_ms`, its error kept.
pub async fn retry_purge_job(
    pool: &PgPool,
    lease: &Lease,
    delay_ms: i64,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE purge_job SET attempts = attempts + 1, last_error = $3,
             next_attempt_at = now() + make_interval(secs => $4::float8 / 1000),
             lease_owner = NULL, lease_expires_at = NULL
         WHERE job_id = $1 AND lease_token = $2",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(error)
    .bind(delay_ms as f64)
    .execute(pool)
    .await?;
    Ok(())
}
