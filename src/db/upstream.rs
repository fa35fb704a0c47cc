//! SQL for upstream warehouses (migrations/0018, 0019): the tables floe has logged (rows of
//! `iceberg_table`, as builtin tables are) and the commits it forwards. The protocol these
//! serve is in `upstream::commit` and `upstream::table_log`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::table_commit::{self, Committed, TableWrite};
use crate::log::NewEntry;
use crate::names::{NamespaceName, TableName};

/// A table of an upstream warehouse as floe last logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTableRow {
    pub table_id: Uuid,
    pub table_uuid: Uuid,
    pub version: i64,
    pub metadata_location: String,
}

impl From<super::catalog::TableRow> for UpstreamTableRow {
    fn from(row: super::catalog::TableRow) -> Self {
        Self {
            table_id: row.table_id,
            table_uuid: row.table_uuid,
            version: row.version,
            metadata_location: row.metadata_location,
        }
    }
}

pub async fn get_table(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    table: &TableName,
) -> sqlx::Result<Option<UpstreamTableRow>> {
    let row = sqlx::query(
        "SELECT t.table_id, t.table_uuid, t.version, t.metadata_location \
         FROM iceberg_table t JOIN namespace n USING (namespace_id) \
         WHERE n.warehouse_id = $1 AND n.levels = $2 AND t.name = $3",
    )
    .bind(warehouse_id)
    .bind(table.namespace.levels())
    .bind(&table.name)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(UpstreamTableRow {
            table_id: row.try_get("table_id")?,
            table_uuid: row.try_get("table_uuid")?,
            version: row.try_get("version")?,
            metadata_location: row.try_get("metadata_location")?,
        })
    })
    .transpose()
}

/// The namespace row an upstream table's row is made in (made at the table's first entry, with
/// nothing logged: the upstream's namespaces are its own).
pub async fn ensure_namespace(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    namespace: &NamespaceName,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO namespace (namespace_id, warehouse_id, levels) VALUES ($1, $2, $3) \
         ON CONFLICT (warehouse_id, levels) DO UPDATE SET levels = EXCLUDED.levels \
         RETURNING namespace_id",
    )
    .bind(Uuid::now_v7())
    .bind(warehouse_id)
    .bind(namespace.levels())
    .fetch_one(conn)
    .await
}

/// One table of a forwarded commit, as its intent records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntentTable {
    pub namespace: Vec<String>,
    pub name: String,
    /// The metadata floe last logged for it; `None` for a table the commit creates.
    pub previous: Option<String>,
    pub requirements: Value,
    pub updates: Value,
}

/// A commit not yet settled.
#[derive(Debug, Clone)]
pub struct PendingIntent {
    pub intent_id: Uuid,
    pub txn_group: Uuid,
    pub tables: Vec<IntentTable>,
    pub principal: String,
}

/// What [`open_commit`] found under the tables' change locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The intent is recorded, against each table's row as read under the locks (`None`: no
    /// row, a table the commit creates), in the intent's order.
    Recorded(Vec<Option<UpstreamTableRow>>),
    /// A table floe has no row for, which the commit does not create: nothing recorded (catch up
    /// with the upstream first).
    Unknown,
    /// A commit naming one of the tables is pending: nothing recorded.
    Pending,
    /// A table is one clients may not write (a replica, or handed over): nothing recorded.
    Refused,
}

/// Step 1 of a forwarded commit (`floe_upstream_open_commit`, migrations/0030): takes the change
/// locks of the intent's tables for this session (unless `locked`: an earlier call took them),
/// reads the tables' rows under them and, if no commit naming one is pending, each has a row
/// (or the commit creates it, `assert-create`; or `missing_ok`: floe caught up and found none)
/// and clients may write it, records the intent against those rows (each table's `previous` set
/// to its row's metadata location, here as in PostgreSQL), committed before the request leaves,
/// in one round trip.
/// Whatever it answers, the connection holds the locks from then on, until [`settle_commit`]
/// gives them back or the connection closes.
///
/// Its commit waits for the WAL flush (migrations/0031): the client is answered before the
/// settlement, so the intent is what makes the answer safe, and must outlive a crash of
/// PostgreSQL as well as of floe.
pub async fn open_commit(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    intent: &mut PendingIntent,
    locked: bool,
    missing_ok: bool,
) -> sqlx::Result<Opened> {
    let found = sqlx::query(
        "SELECT verdict, table_id, table_uuid, version, metadata_location \
         FROM floe_upstream_open_commit($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(warehouse_id)
    .bind(intent.lock_names())
    .bind(locked)
    .bind(missing_ok)
    .bind(intent.intent_id)
    .bind(intent.txn_group)
    .bind(sqlx::types::Json(&intent.tables))
    .bind(&intent.principal)
    .fetch_all(conn)
    .await?;
    let verdict: String = match found.first() {
        Some(row) => row.try_get("verdict")?,
        None => return Err(sqlx::Error::RowNotFound),
    };
    match verdict.as_str() {
        "recorded" => {}
        "pending" => return Ok(Opened::Pending),
        "unknown" => return Ok(Opened::Unknown),
        "refused" => return Ok(Opened::Refused),
        other => {
            return Err(sqlx::Error::Protocol(format!(
                "floe_upstream_open_commit answered `{other}`"
            )));
        }
    }
    if found.len() != intent.tables.len() {
        return Err(sqlx::Error::Protocol(format!(
            "floe_upstream_open_commit answered {} rows for {} tables",
            found.len(),
            intent.tables.len()
        )));
    }
    let mut rows = Vec::with_capacity(found.len());
    for (row, table) in found.iter().zip(&mut intent.tables) {
        let read = match row.try_get::<Option<Uuid>, _>("table_id")? {
            Some(table_id) => Some(UpstreamTableRow {
                table_id,
                table_uuid: row.try_get("table_uuid")?,
                version: row.try_get("version")?,
                metadata_location: row.try_get("metadata_location")?,
            }),
            None => None,
        };
        table.previous = read.as_ref().map(|r| r.metadata_location.clone());
        rows.push(read);
    }
    Ok(Opened::Recorded(rows))
}

/// Step 2 of a forwarded commit (`floe_upstream_settle_commit`), on the connection that opened
/// it: writes `writes` and `entries` (none when the upstream refused the commit), settles the
/// intent `done` or `failed`, saying why, and gives the tables' change locks back, in one
/// statement, its own transaction, which waits for the WAL flush. On [`Committed::Moved`] or an
/// error nothing is written and the locks are still held: close the connection.
pub async fn settle_commit(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    intent: &PendingIntent,
    outcome: (bool, &str),
    writes: &[TableWrite<'_>],
    entries: &[NewEntry],
) -> sqlx::Result<Committed> {
    let (done, why) = outcome;
    let query = sqlx::query(
        "SELECT floe_upstream_settle_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(intent.intent_id)
    .bind(done)
    .bind(why);
    let query =
        table_commit::bind_commit(query, warehouse_id, intent.lock_names(), writes, entries);
    table_commit::run(query, conn).await
}

impl PendingIntent {
    /// The change-lock names of its tables (`floe_lock_tables`).
    fn lock_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| super::catalog::lock_name(&t.namespace, &t.name))
            .collect()
    }
}

/// The pending commits that name `table`, oldest first.
pub async fn pending_intents(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    table: &TableName,
) -> sqlx::Result<Vec<PendingIntent>> {
    let rows = sqlx::query(
        "SELECT intent_id, txn_group, tables, principal FROM upstream_commit_intent \
         WHERE warehouse_id = $1 AND state = 'pending' AND tables @> $2 \
         ORDER BY created_at, intent_id",
    )
    .bind(warehouse_id)
    .bind(serde_json::json!([{"namespace": table.namespace.levels(), "name": table.name}]))
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let sqlx::types::Json(tables): sqlx::types::Json<Vec<IntentTable>> =
                row.try_get("tables")?;
            Ok(PendingIntent {
                intent_id: row.try_get("intent_id")?,
                txn_group: row.try_get("txn_group")?,
                tables,
                principal: row.try_get("principal")?,
            })
        })
        .collect()
}

/// Settles a commit as `done` or `failed`, saying why; only a pending one (a settled intent is
/// never settled again).
pub async fn settle_intent(
    conn: &mut PgConnection,
    intent_id: Uuid,
    done: bool,
    outcome: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE upstream_commit_intent SET state = $2, outcome = $3, settled_at = clock_timestamp() \
         WHERE intent_id = $1 AND state = 'pending'",
    )
    .bind(intent_id)
    .bind(if done { "done" } else { "failed" })
    .bind(outcome)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a commit naming `table` is still pending.
pub async fn has_pending_intents(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    table: &TableName,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM upstream_commit_intent \
         WHERE warehouse_id = $1 AND state = 'pending' AND tables @> $2)",
    )
    .bind(warehouse_id)
    .bind(serde_json::json!([{"namespace": table.namespace.levels(), "name": table.name}]))
    .fetch_one(conn)
    .await
}

/// Every table of the warehouse floe has logged.
pub async fn list_tables(pool: &PgPool, warehouse_id: Uuid) -> sqlx::Result<Vec<TableName>> {
    let rows = sqlx::query(
        "SELECT n.levels AS namespace, t.name FROM iceberg_table t JOIN namespace n \
         USING (namespace_id) WHERE t.warehouse_id = $1 ORDER BY n.levels, t.name",
    )
    .bind(warehouse_id)
    .fetch_all(pool)
    .await?;
    let mut tables = Vec::new();
    for row in rows {
        let levels: Vec<String> = row.try_get("namespace")?;
        let name: String = row.try_get("name")?;
        // Rows were written from validated names; one that no longer validates is skipped.
        if let Ok(table) =
            crate::names::NamespaceName::new(levels).and_then(|ns| TableName::new(ns, name))
        {
            tables.push(table);
        }
    }
    Ok(tables)
}

/// Deletes the warehouse's settled intents older than `older_than_seconds` (their entries are in
/// the log; a pending one is never deleted); returns how many.
pub async fn prune_settled_intents(
    pool: &PgPool,
    warehouse_id: Uuid,
    older_than_seconds: f64,
) -> sqlx::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM upstream_commit_intent WHERE warehouse_id = $1 AND state <> 'pending' \
         AND settled_at < clock_timestamp() - make_interval(secs => $2)",
    )
    .bind(warehouse_id)
    .bind(older_than_seconds)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}
