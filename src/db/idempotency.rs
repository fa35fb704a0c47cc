//! SQL for Idempotency-Key (migrations/0020): the answers kept for keyed requests, and whether a
//! keyed request's change is in the log. The protocol is `http::idempotency`'s.

use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// A keyed request's final answer, as kept.
#[derive(Debug, Clone)]
pub struct KeptAnswer {
    pub endpoint: String,
    pub fingerprint: Vec<u8>,
    pub status: u16,
    pub content_type: Option<String>,
    /// `None` when the answer was too large to keep.
    pub body: Option<Vec<u8>>,
}

/// Waits (up to `lock_timeout`, set by the caller) for the key's lock, held until the caller's
/// transaction ends: one request per key at a time, released by PostgreSQL if this floe dies.
pub async fn lock_key(conn: &mut PgConnection, principal: &str, key: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 20))")
        .bind(format!("idempotency\u{1f}{principal}\u{1f}{key}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// The answer kept for the key, if it is younger than `lifetime_seconds`.
pub async fn kept_answer(
    conn: &mut PgConnection,
    principal: &str,
    key: Uuid,
    lifetime_seconds: f64,
) -> sqlx::Result<Option<KeptAnswer>> {
    let row = sqlx::query(
        "SELECT endpoint, fingerprint, status, content_type, body FROM idempotency_answer \
         WHERE principal = $1 AND key = $2 \
           AND created_at > now() - make_interval(secs => $3)",
    )
    .bind(principal)
    .bind(key)
    .bind(lifetime_seconds)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(KeptAnswer {
            endpoint: row.try_get("endpoint")?,
            fingerprint: row.try_get("fingerprint")?,
            status: row.try_get::<i16, _>("status")? as u16,
            content_type: row.try_get("content_type")?,
            body: row.try_get("body")?,
        })
    })
    .transpose()
}

/// Keeps the answer (replacing one of the same key that outlived its lifetime).
pub async fn keep_answer(
    conn: &mut PgConnection,
    principal: &str,
    key: Uuid,
    answer: &KeptAnswer,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO idempotency_answer \
             (principal, key, endpoint, fingerprint, status, content_type, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (principal, key) DO UPDATE SET endpoint = EXCLUDED.endpoint, \
             fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, \
             content_type = EXCLUDED.content_type, body = EXCLUDED.body, created_at = now()",
    )
    .bind(principal)
    .bind(key)
    .bind(&answer.endpoint)
    .bind(&answer.fingerprint)
    .bind(answer.status as i16)
    .bind(&answer.content_type)
    .bind(&answer.body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a request of `principal` with this key changed anything: its entries carry the key.
pub async fn took_effect(
    conn: &mut PgConnection,
    principal: &str,
    key: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM commit_log WHERE details ? 'idempotency-key' \
             AND details->>'idempotency-key' = $1 AND principal = $2)",
    )
    .bind(key.to_string())
    .bind(principal)
    .fetch_one(conn)
    .await
}

/// Deletes answers older than `older_than_seconds`; returns how many.
pub async fn prune(conn: &mut PgConnection, older_than_seconds: f64) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_answer WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than_seconds)
    .execute(conn)
    .await?
    .rows_affected())
}
