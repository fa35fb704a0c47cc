//! The one statement that commits table changes: change locks, each table row's compare-and-set
//! (or its insert), the log entries, COMMIT, in one round trip (`floe_commit_tables`,
//! migrations/0014).
//!
//! The invariant: a row is written only while it is still at the version its commit was planned
//! against, and all of a commit's rows and entries are written together or not at all. The
//! statement is atomic (its own transaction, or a step of the caller's, which it then aborts), so
//! a row that moved on undoes all of it ([`Committed::Moved`]) and the caller plans again from
//! what it reads then: nothing a stale plan built is ever committed. Every writer of a new table
//! row goes through it (client creates, registers and staged creates, a replica's first
//! generation, an upstream table's first state), and so does every swap of a row that is not a
//! replica.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use super::catalog::{TablePointer, location_key, table_lock_name};
use crate::log::{self, NewEntry};
use crate::names::TableName;

/// One table a commit writes or relies on.
pub struct TableWrite<'a> {
    pub table: &'a TableName,
    pub table_id: Uuid,
    pub change: RowChange<'a>,
}

pub enum RowChange<'a> {
    /// A new row, at version 1.
    Create {
        namespace_id: Uuid,
        pointer: TablePointer<'a>,
    },
    /// The row at `expected_version` moves to the next version and this pointer.
    Swap {
        expected_version: i64,
        pointer: TablePointer<'a>,
    },
    /// The row must still be at `expected_version` (its requirements were checked against it),
    /// and stays there.
    Unchanged { expected_version: i64 },
}

impl<'a> TableWrite<'a> {
    /// As `floe_commit_tables` takes it: 0 for a create.
    fn expected_version(&self) -> i64 {
        match &self.change {
            RowChange::Create { .. } => 0,
            RowChange::Swap {
                expected_version, ..
            }
            | RowChange::Unchanged { expected_version } => *expected_version,
        }
    }

    fn namespace_id(&self) -> Option<Uuid> {
        match &self.change {
            RowChange::Create { namespace_id, .. } => Some(*namespace_id),
            _ => None,
        }
    }

    fn pointer(&self) -> Option<&TablePointer<'a>> {
        match &self.change {
            RowChange::Create { pointer, .. } | RowChange::Swap { pointer, .. } => Some(pointer),
            RowChange::Unchanged { .. } => None,
        }
    }
}

/// One parameter array of `floe_commit_tables`: a field of every write.
fn column<'w, 'a, T>(
    writes: &'w [TableWrite<'a>],
    field: impl Fn(&'w TableWrite<'a>) -> T,
) -> Vec<T> {
    writes.iter().map(field).collect()
}

/// What became of a commit.
#[derive(Debug)]
pub enum Committed {
    /// Durably committed.
    Done,
    /// A row was no longer at its expected version, or a create found the name taken: nothing
    /// was written.
    Moved,
}

/// Sends the commit. An `Err` that is a database error means the statement failed and wrote
/// nothing; any other error (the connection lost on the way) leaves its outcome unknown.
pub async fn commit_tables(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    writes: &[TableWrite<'_>],
    entries: &[NewEntry],
) -> sqlx::Result<Committed> {
    let lock_names = column(writes, |w| table_lock_name(w.table));
    let query = sqlx::query("SELECT floe_commit_tables($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
    run(
        bind_commit(query, warehouse_id, lock_names, writes, entries),
        conn,
    )
    .await
}

/// Binds `floe_commit_tables`' ten arguments after those `query` already has: the change locks
/// of `lock_names` (each table `writes` names, and any other the caller's statement needs
/// held), the rows and the entries.
pub(super) fn bind_commit<'q>(
    query: Query<'q, Postgres, PgArguments>,
    warehouse_id: Uuid,
    lock_names: Vec<String>,
    writes: &'q [TableWrite<'q>],
    entries: &'q [NewEntry],
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(warehouse_id)
        .bind(lock_names)
        .bind(column(writes, |w| w.table_id))
        .bind(column(writes, TableWrite::expected_version))
        .bind(column(writes, TableWrite::namespace_id))
        .bind(column(writes, |w| w.table.name.as_str()))
        .bind(column(writes, |w| w.pointer().map(|p| p.table_uuid)))
        .bind(column(writes, |w| w.pointer().map(|p| p.metadata_location)))
        .bind(column(writes, |w| {
            w.pointer().map(|p| location_key(p.location))
        }))
        .bind(log::entries_json(entries))
}

/// Runs a statement that commits through `floe_commit_tables`: a row not as planned is
/// [`Committed::Moved`] (the statement wrote nothing).
pub(super) async fn run(
    query: Query<'_, Postgres, PgArguments>,
    conn: &mut PgConnection,
) -> sqlx::Result<Committed> {
    let started = std::time::Instant::now();
    let result = query.execute(conn).await;
    crate::telemetry::record_log_append(started.elapsed());
    match result {
        Ok(_) => Ok(Committed::Done),
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("40001") => {
            Ok(Committed::Moved)
        }
        Err(err) => Err(err),
    }
}
