//! The audit trail's SQL: append one event, read a page in order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use utoipa::ToSchema;

/// How a request ended, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Refused for its credential or role (401, 403).
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "succeeded" => Self::Succeeded,
            "refused" => Self::Refused,
            _ => Self::Failed,
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub principal: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub status: u16,
    pub detail: Option<String>,
}

/// One recorded event.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct AuditEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub principal: String,
    /// The route's audit name, e.g. `peer.put` or `table.commit`.
    pub action: String,
    /// The request's method and path.
    pub target: String,
    pub outcome: Outcome,
    pub status: u16,
    /// Why it failed or was refused.
    pub detail: Option<String>,
}

/// Appends one event, on the pool or in the caller's transaction (an event that is part of a
/// change commits with it).
pub async fn record<'e>(executor: impl sqlx::PgExecutor<'e>, event: &NewEvent) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_event (principal, action, target, outcome, status, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event.principal)
    .bind(&event.action)
    .bind(&event.target)
    .bind(event.outcome.as_str())
    .bind(i32::from(event.status))
    .bind(&event.detail)
    .execute(executor)
    .await?;
    Ok(())
}

/// Events with a larger `seq` than `after`, in order.
pub async fn read(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Vec<AuditEvent>> {
    let rows = sqlx::query(
        "SELECT seq, at, principal, action, target, outcome, status, detail FROM audit_event
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| AuditEvent {
            seq: row.get("seq"),
            at: row.get("at"),
            principal: row.get("principal"),
            action: row.get("action"),
            target: row.get("target"),
            outcome: Outcome::parse(row.get::<&str, _>("outcome")),
            status: u16::try_from(row.get::<i32, _>("status")).unwrap_or(0),
            detail: row.get("detail"),
        })
        .collect())
}
