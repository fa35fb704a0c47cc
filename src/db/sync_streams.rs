//! SQL of synchronous replication (migrations/0027): the destinations a commit to a table must
//! wait for, by the rule that governs the table now (not by the streams that exist, so a table
//! made a moment ago, whose streams the replicator has yet to make, is not let through
//! unreplicated), and a nudge to a stream that must catch up before such a commit can go on.

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::replication::{self, STREAM_COLUMNS, StreamRow};
use crate::contract::replication_model::SyncSettings;

/// A stream that carries a synchronous commit, with what says whether it can.
#[derive(Debug, Clone)]
pub struct SyncStream {
    pub row: StreamRow,
    pub paused: bool,
    pub failed_reason: Option<String>,
}

/// One destination a synchronous rule sends a table to.
#[derive(Debug, Clone)]
pub struct SyncDestination {
    pub table_id: Uuid,
    pub peer_region: String,
    pub dest_warehouse: String,
    pub settings: SyncSettings,
    /// `None` until the replicator (or [`sync_destinations`]) makes the stream.
    pub stream: Option<SyncStream>,
}

/// The destinations of the synchronous rules that govern these tables (none for a table whose
/// rule is asynchronous), each with its stream; streams the rules call for that do not exist yet
/// are made first.
pub async fn sync_destinations(
    pool: &PgPool,
    table_ids: &[Uuid],
) -> sqlx::Result<Vec<SyncDestination>> {
    let destinations = read_sync_destinations(pool, table_ids).await?;
    if destinations.iter().all(|d| d.stream.is_some()) {
        return Ok(destinations);
    }
    replication::reconcile_streams(pool, Some(table_ids)).await?;
    read_sync_destinations(pool, table_ids).await
}

async fn read_sync_destinations(
    pool: &PgPool,
    table_ids: &[Uuid],
) -> sqlx::Result<Vec<SyncDestination>> {
    let desired =
        replication::desired_streams(replication::REPLICATED_TABLES, "t.table_id = ANY($1)");
    // `r` is the rule that governs the table (it names its retention for the stream's columns).
    let rows = sqlx::query(&format!(
        "SELECT d.table_id AS sync_table_id, d.peer_region AS sync_peer,
                d.warehouse AS sync_warehouse, r.sync_min_acks, r.sync_timeout_ms,
                s.paused, s.failed_reason, {STREAM_COLUMNS}
         FROM ({desired}) d
         JOIN replication_rule r ON r.rule_id = d.rule_id
         LEFT JOIN replication_stream s ON s.table_id = d.table_id
              AND s.peer_region = d.peer_region AND s.dest_warehouse = d.warehouse
         LEFT JOIN peer p ON p.region = d.peer_region
         LEFT JOIN peer_warehouse pw ON pw.region = d.peer_region AND pw.warehouse = d.warehouse
         WHERE r.sync_min_acks IS NOT NULL
         ORDER BY d.table_id, d.peer_region, d.warehouse"
    ))
    .bind(table_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SyncDestination {
            table_id: r.get("sync_table_id"),
            peer_region: r.get("sync_peer"),
            dest_warehouse: r.get("sync_warehouse"),
            settings: SyncSettings {
                min_acks: r.get::<i32, _>("sync_min_acks").max(1) as u32,
                timeout_ms: r.get::<i32, _>("sync_timeout_ms").max(1) as u32,
            },
            stream: r
                .get::<Option<Uuid>, _>("stream_id")
                .is_some()
                .then(|| SyncStream {
                    paused: r.get("paused"),
                    failed_reason: r.get("failed_reason"),
                    row: replication::stream_row(r),
                }),
        })
        .collect())
}

/// The stream as it is now (its lease token, generation and progress move under a commit that
/// waits for it); `None` once it is gone.
pub async fn reread(
    pool: &PgPool,
    destination: &SyncDestination,
) -> sqlx::Result<Option<SyncStream>> {
    let again = read_sync_destinations(pool, &[destination.table_id]).await?;
    Ok(again
        .into_iter()
        .find(|d| {
            d.peer_region == destination.peer_region
                && d.dest_warehouse == destination.dest_warehouse
        })
        .and_then(|d| d.stream))
}

/// Makes a stream due now (a retry's backoff skipped) and wakes every replicator: a synchronous
/// commit waits for it to catch up.
pub async fn nudge(pool: &PgPool, stream_id: Uuid) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE replication_stream SET next_attempt_at = now()
         WHERE stream_id = $1 AND next_attempt_at > now()",
    )
    .bind(stream_id)
    .execute(&mut *tx)
    .await?;
    replication::notify_streams_changed(&mut tx).await?;
    tx.commit().await
}

/// Records at a stream that its destination applied `version`, sent there by a synchronous
/// commit (`confirmed`: the commit's own change, counted for the status) or its catch-up rather
/// than by the stream's own task: the stream then has nothing to send again, and its status is
/// the replica's. The record moves on only by one version of the stream's generation outside a
/// backfill, so it never skips a change the stream has yet to send; the stream's task, which
/// fences its own records on its lease, may record an older version after it and then finds this
/// one applied (a repeat).
pub async fn record_applied(
    pool: &PgPool,
    stream: &StreamRow,
    version: i64,
    metadata_location: Option<&str>,
    confirmed: bool,
) -> sqlx::Result<()> {
    // A record lost with a crash only leaves the stream to send the change again (a repeat):
    // its commit need not wait for the WAL flush.
    const MOVES: &str = "generation = $2 AND applied_version = $3 - 1 AND backfill_version IS NULL";
    sqlx::query(&format!(
        "UPDATE replication_stream SET
             applied_version = CASE WHEN {MOVES} THEN $3 ELSE applied_version END,
             last_applied_at = CASE WHEN {MOVES} THEN now() ELSE last_applied_at END,
             last_applied_location = CASE WHEN {MOVES} THEN coalesce($4, last_applied_location)
                                          ELSE last_applied_location END,
             sync_confirmed = sync_confirmed + $5::int
         FROM {}
         WHERE stream_id = $1",
        super::ASYNCHRONOUS_COMMIT
    ))
    .bind(stream.stream_id)
    .bind(stream.generation)
    .bind(version)
    .bind(metadata_location)
    .bind(i32::from(confirmed))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records at a stream that its destination could not take a synchronous commit in time, and why.
pub async fn record_missed(pool: &PgPool, stream_id: Uuid, reason: &str) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "UPDATE replication_stream SET sync_missed = sync_missed + 1,
             sync_last_missed_at = now(), sync_last_missed = $2
         FROM {}
         WHERE stream_id = $1",
        super::ASYNCHRONOUS_COMMIT
    ))
    .bind(stream_id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}
