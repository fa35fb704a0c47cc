//! The update log: appended inside the transaction that makes each change, read back in `seq` order.
//!
//! Ordering, without a lock held through COMMIT (migrations/0012): an entry's `seq` is its
//! transaction's id times 2^20 plus its place among that transaction's entries, so `seq` order is
//! transaction-id order and appends to different tables never wait for each other. Readers take
//! only the entries below the horizon of their snapshot, `floe_log_horizon()` (the oldest running
//! transaction's id times 2^20, leaving out transactions seen to be another database's:
//! migrations/0013). The argument that a reader paging with `after=` never skips an entry:
//! - every transaction whose id is below the horizon has ended, so the set of entries below it
//!   never grows: what a reader was not given there, it will never be given;
//! - an entry that becomes visible later belongs to a transaction that was still running, or had
//!   not begun, when the reader's snapshot was taken: its id, and so its `seq`, is at or above that
//!   horizon, and so above every `seq` the reader was given.
//!
//! The price: a committed entry becomes readable once every transaction older than its own has
//! ended (commits are short; [`changes_since`] says when committed entries wait, so a reader can
//! look again soon). Per-table versions stay gap-free and in order without this: a commit
//! writes its table's row only while the row is still at the version it read, under the table's
//! change lock (`db::table_commit`), so version v+1 commits after version v.

pub mod table_entry;
pub mod wake;

pub use table_entry::{TableChange, TableEntry, UndecodableEntry};

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use utoipa::ToSchema;
use uuid::Uuid;

/// The channel NOTIFY'd after commits that appended to the log, coalesced, with the committing
/// instance's id (see [`wake`]).
pub const NOTIFY_CHANNEL: &str = "floe_log";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    CreateTable,
    CommitTable,
    DropTable,
    RenameTable,
    RegisterTable,
    CreateNamespace,
    DropNamespace,
    UpdateNamespaceProperties,
    /// A replica whose source table was dropped (the rule keeps replicas of dropped tables).
    OrphanTable,
    /// A state of an upstream warehouse's table that floe read from the upstream rather than
    /// committed itself (a table it had not seen, commits made past it): the whole metadata.
    ObserveTable,
    CreateView,
    /// A replaceView: the view's changes, as a commit-table holds a table's.
    ReplaceView,
    DropView,
    RenameView,
    RegisterView,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::CreateTable => "create-table",
            EntryKind::CommitTable => "commit-table",
            EntryKind::DropTable => "drop-table",
            EntryKind::RenameTable => "rename-table",
            EntryKind::RegisterTable => "register-table",
            EntryKind::CreateNamespace => "create-namespace",
            EntryKind::DropNamespace => "drop-namespace",
            EntryKind::UpdateNamespaceProperties => "update-namespace-properties",
            EntryKind::OrphanTable => "orphan-table",
            EntryKind::ObserveTable => "observe-table",
            EntryKind::CreateView => "create-view",
            EntryKind::ReplaceView => "replace-view",
            EntryKind::DropView => "drop-view",
            EntryKind::RenameView => "rename-view",
            EntryKind::RegisterView => "register-view",
        }
    }
}

/// The table an entry is about, with the version this entry gives it.
#[derive(Debug, Clone)]
pub struct TableVersionRef {
    pub table_id: Uuid,
    pub table_uuid: Uuid,
    pub name: String,
    pub version: i64,
}

/// One entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub warehouse_id: Uuid,
    pub txn_group: Uuid,
    pub kind: EntryKind,
    pub namespace: Vec<String>,
    pub table: Option<TableVersionRef>,
    pub changes: Value,
    pub requirements: Value,
    pub metadata: Option<Value>,
    pub details: Value,
    pub principal: String,
    pub origin_region: String,
    pub previous_metadata_location: Option<String>,
    pub new_metadata_location: Option<String>,
}

/// Appends entries within the caller's transaction (their `seq`s follow its transaction id, see
/// the module docs). The caller wakes the log's readers once it has committed ([`wake`]).
pub async fn append(conn: &mut PgConnection, entries: &[NewEntry]) -> sqlx::Result<()> {
    sqlx::query("SELECT floe_log_append_entries($1)")
        .bind(entries_json(entries))
        .execute(conn)
        .await?;
    Ok(())
}

tokio::task_local! {
    /// The Idempotency-Key of the request being served, set by `http::idempotency` around the
    /// request's handler: every entry the request appends carries it (`details.idempotency-key`),
    /// in the transaction of the change itself, so whether a keyed request took effect is in the
    /// log even when its answer was lost (migrations/0020).
    pub static REQUEST_IDEMPOTENCY_KEY: Uuid;
}

/// The detail that marks the entries of a transaction that changed several tables, with their
/// number: replication applies such a group at a destination in one transaction
/// (`catalog::replica_group`), and finds its members by the partial index on it (migrations/0026).
pub const GROUP_SIZE_DETAIL: &str = "group-size";

/// Marks the entries of one transaction as a group when there are several.
pub fn mark_transaction_group(entries: &mut [NewEntry]) {
    let size = entries.len();
    if size > 1 {
        for entry in entries {
            entry.details[GROUP_SIZE_DETAIL] = serde_json::json!(size);
        }
    }
}

impl LogEntry {
    /// The number of entries of this entry's transaction group, when it has several.
    pub fn group_size(&self) -> Option<u64> {
        self.details
            .get(GROUP_SIZE_DETAIL)
            .and_then(Value::as_u64)
            .filter(|size| *size > 1)
    }
}

/// Entries as `floe_log_append_entries` takes them (migrations/0014): one JSON array, so that
/// any number of entries is one round trip. Serialised straight from the entries, not copied
/// (but for the details of a keyed request's entries, which gain its key).
pub fn entries_json(entries: &[NewEntry]) -> sqlx::types::Json<Vec<EntryArguments<'_>>> {
    sqlx::types::Json(entries.iter().map(EntryArguments::from).collect())
}

/// One entry as `floe_log_append_entries` reads it: commit_log's columns by name.
#[derive(Serialize)]
pub struct EntryArguments<'a> {
    warehouse_id: Uuid,
    txn_group: Uuid,
    kind: &'static str,
    namespace: &'a [String],
    table_name: Option<&'a str>,
    table_id: Option<Uuid>,
    table_uuid: Option<Uuid>,
    table_version: Option<i64>,
    changes: &'a Value,
    requirements: &'a Value,
    metadata: Option<&'a Value>,
    details: Cow<'a, Value>,
    principal: &'a str,
    origin_region: &'a str,
    previous_metadata_location: Option<&'a str>,
    new_metadata_location: Option<&'a str>,
}

impl<'a> From<&'a NewEntry> for EntryArguments<'a> {
    fn from(e: &'a NewEntry) -> Self {
        let table = e.table.as_ref();
        EntryArguments {
            warehouse_id: e.warehouse_id,
            txn_group: e.txn_group,
            kind: e.kind.as_str(),
            namespace: &e.namespace,
            table_name: table.map(|t| t.name.as_str()),
            table_id: table.map(|t| t.table_id),
            table_uuid: table.map(|t| t.table_uuid),
            table_version: table.map(|t| t.version),
            changes: &e.changes,
            requirements: &e.requirements,
            metadata: e.metadata.as_ref(),
            details: match REQUEST_IDEMPOTENCY_KEY.try_with(|key| *key) {
                Ok(key) => {
                    let mut details = e.details.clone();
                    if let Some(fields) = details.as_object_mut() {
                        fields.insert("idempotency-key".to_string(), key.to_string().into());
                    }
                    Cow::Owned(details)
                }
                Err(_) => Cow::Borrowed(&e.details),
            },
            principal: &e.principal,
            origin_region: &e.origin_region,
            previous_metadata_location: e.previous_metadata_location.as_deref(),
            new_metadata_location: e.new_metadata_location.as_deref(),
        }
    }
}

/// An entry as read back.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct LogEntry {
    /// Position in the log: unique, increasing along the log (by transaction id), skipping
    /// numbers; a reader paging with `after=` is never given a smaller one later.
    pub seq: i64,
    pub warehouse: String,
    /// Shared by all entries of one multi-table transaction.
    pub txn_group: Uuid,
    /// create-table, commit-table, drop-table, rename-table, register-table, orphan-table,
    /// observe-table, create-namespace, drop-namespace, update-namespace-properties, or for
    /// views create-view, replace-view, drop-view, rename-view, register-view.
    pub kind: String,
    pub namespace: Vec<String>,
    /// The table's (or, for a view's entries, the view's) name.
    pub table_name: Option<String>,
    /// floe's id for the table or view entry (stable across renames).
    pub table_id: Option<Uuid>,
    /// The Iceberg table (or view) UUID.
    pub table_uuid: Option<Uuid>,
    /// 1 for the entry that created the table or view, then 2, 3, ... with no gaps.
    pub table_version: Option<i64>,
    /// Canonical Iceberg TableUpdates (ViewUpdates for a view), as the REST spec serialises them.
    #[schema(value_type = Vec<Object>)]
    pub changes: Value,
    /// The TableRequirements (ViewRequirements) that were checked.
    #[schema(value_type = Vec<Object>)]
    pub requirements: Value,
    /// The whole table metadata, for entries that establish a table.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[schema(value_type = Object)]
    pub details: Value,
    pub principal: String,
    pub origin_region: String,
    pub committed_at: DateTime<Utc>,
    pub previous_metadata_location: Option<String>,
    pub new_metadata_location: Option<String>,
}

/// Filters for reading the log.
#[derive(Debug, Clone, Default)]
pub struct ReadFilter {
    pub after: i64,
    pub limit: i64,
    /// floe's table id or the Iceberg table UUID.
    pub table: Option<Uuid>,
    pub warehouse_id: Option<Uuid>,
}

const ENTRY_COLUMNS: &str = "l.seq, w.name, l.txn_group, l.kind, l.namespace, l.table_name, \
     l.table_id, l.table_uuid, l.table_version, l.changes, l.requirements, l.metadata, l.details, \
     l.principal, l.origin_region, l.committed_at, l.previous_metadata_location, \
     l.new_metadata_location";

/// Entries with `seq > after` below the horizon (see the module docs), in `seq` order.
pub async fn read(pool: &PgPool, filter: &ReadFilter) -> sqlx::Result<Vec<LogEntry>> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS}
         FROM commit_log l JOIN warehouse w USING (warehouse_id)
         WHERE l.seq > $1 AND l.seq < floe_log_horizon()
           AND ($3::uuid IS NULL OR l.table_id = $3 OR l.table_uuid = $3)
           AND ($4::uuid IS NULL OR l.warehouse_id = $4)
         ORDER BY l.seq LIMIT $2"
    ))
    .bind(filter.after)
    .bind(filter.limit)
    .bind(filter.table)
    .bind(filter.warehouse_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(entry).collect())
}

/// Whether committed entries after `after` wait above the horizon (an older transaction still
/// runs; see the module docs).
pub async fn waiting_after(pool: &PgPool, after: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM commit_log WHERE seq >= floe_log_horizon() AND seq > $1)",
    )
    .bind(after)
    .fetch_one(pool)
    .await
}

/// One table's entries with `table_version > after_version`, in version order.
pub async fn read_table(
    pool: &PgPool,
    table_id: Uuid,
    after_version: i64,
    limit: i64,
) -> sqlx::Result<Vec<LogEntry>> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS}
         FROM commit_log l JOIN warehouse w USING (warehouse_id)
         WHERE l.table_id = $1 AND l.table_version > $2
         ORDER BY l.table_version LIMIT $3"
    ))
    .bind(table_id)
    .bind(after_version)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(entry).collect())
}

/// The newest readable `seq` (0 for an empty log): where a reader that wants only what comes
/// next begins.
pub async fn max_seq(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(max(seq), 0) FROM commit_log WHERE seq < floe_log_horizon()",
    )
    .fetch_one(pool)
    .await
}

/// What changed after `after`, as far as it is readable.
#[derive(Debug, Default)]
pub struct Changes {
    /// (seq, table id, kind) of the readable entries, in `seq` order; a namespace's creation or
    /// properties change gives the namespace's id, the id of its replication streams.
    pub entries: Vec<(i64, Option<Uuid>, String)>,
    /// Whether committed entries wait above the horizon (an older transaction still runs): look
    /// again soon.
    pub waiting: bool,
}

/// The entries after `after` (at most `limit`) and whether more wait above the horizon, in one
/// statement (one snapshot, one horizon). Both parts walk the `seq` index from where they begin:
/// the probe above the horizon is ordered too, for without an order PostgreSQL may take `LIMIT 1`
/// for a cheap sequential scan and read the whole log each time nothing waits (as it did, once per
/// replicator round).
pub async fn changes_since(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Changes> {
    let rows: Vec<(i64, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "WITH h AS MATERIALIZED (SELECT floe_log_horizon() AS horizon)
         (SELECT seq,
                 CASE WHEN kind IN ('create-namespace', 'update-namespace-properties')
                      THEN (SELECT n.namespace_id FROM namespace n
                            WHERE n.warehouse_id = l.warehouse_id AND n.levels = l.namespace)
                      ELSE table_id END,
                 kind
          FROM commit_log l
          WHERE seq > $1 AND seq < (SELECT horizon FROM h) ORDER BY seq LIMIT $2)
         UNION ALL
         (SELECT seq, NULL, NULL FROM commit_log
          WHERE seq >= (SELECT horizon FROM h) AND seq > $1 ORDER BY seq LIMIT 1)",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut changes = Changes::default();
    for (seq, table, kind) in rows {
        match kind {
            Some(kind) => changes.entries.push((seq, table, kind)),
            None => changes.waiting = true,
        }
    }
    Ok(changes)
}

/// The table's (or view's) drop, if one was logged after `after_version`.
pub async fn find_table_drop(
    pool: &PgPool,
    table_id: Uuid,
    after_version: i64,
) -> sqlx::Result<Option<LogEntry>> {
    let row = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS}
         FROM commit_log l JOIN warehouse w USING (warehouse_id)
         WHERE l.table_id = $1 AND l.table_version > $2 AND l.kind IN ('drop-table', 'drop-view')
         ORDER BY l.table_version LIMIT 1"
    ))
    .bind(table_id)
    .bind(after_version)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(entry))
}

fn entry(r: sqlx::postgres::PgRow) -> LogEntry {
    LogEntry {
        seq: r.get(0),
        warehouse: r.get(1),
        txn_group: r.get(2),
        kind: r.get(3),
        namespace: r.get(4),
        table_name: r.get(5),
        table_id: r.get(6),
        table_uuid: r.get(7),
        table_version: r.get(8),
        changes: r.get(9),
        requirements: r.get(10),
        metadata: r.get(11),
        details: r.get(12),
        principal: r.get(13),
        origin_region: r.get(14),
        committed_at: r.get(15),
        previous_metadata_location: r.get(16),
        new_metadata_location: r.get(17),
    }
}
