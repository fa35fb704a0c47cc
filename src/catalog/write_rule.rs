//! The rule that keeps client changes away from replicas, in one place: a replica table or view
//! changes only by replication, and a namespace that replication made changes only at its origin.
//!
//! Every client write reads the table, view or namespace it changes through [`table_for_write`],
//! [`view_for_write`] or [`namespace_for_write`], on the connection (and under the lock or compare-and-set) that guards
//! the write itself, so what was checked is what is written: a row read before its lock could have
//! become a replica in between (dropped, and made again by replication). Replication's own
//! changes (`replica`, `replica_build`) read rows without this rule. A table its primary is
//! handing over to another region (`promotion`) takes no client write either. Writes to an upstream
//! warehouse, forwarded rather than made by floe, pass [`check_forwarded_write`] first.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::catalog::{self as db, NamespaceRow, ReplicaMark, TableRow};
use crate::db::promotion::Handover;
use crate::db::views::{self, ViewRow};
use crate::error::{CatalogError, CatalogResult};
use crate::names::{NamespaceName, TableName};

/// The table a client changes (`None`: there is none); a replica is refused (403). With `lock`,
/// its row lock is held until the transaction ends.
pub async fn table_for_write(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    table: &TableName,
    lock: bool,
) -> CatalogResult<Option<TableRow>> {
    let row = db::get_table(conn, warehouse_id, &table.namespace, &table.name, lock).await?;
    if let Some(mark) = row.as_ref().and_then(|row| row.replica.as_ref()) {
        return Err(read_only_table(table, mark));
    }
    if let Some(handover) = row.as_ref().and_then(|row| row.handover.as_ref()) {
        return Err(handed_over_table(table, handover));
    }
    Ok(row)
}

/// The view a client changes (`None`: there is none); a replica is refused (403). With `lock`, its
/// row lock is held until the transaction ends.
pub(super) async fn view_for_write(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    view: &TableName,
    lock: bool,
) -> CatalogResult<Option<ViewRow>> {
    let row = views::get_view(conn, warehouse_id, &view.namespace, &view.name, lock).await?;
    if let Some(origin) = row.as_ref().and_then(|row| row.replica_of.as_ref()) {
        let target = match &origin.origin_url {
            Some(url) => format!("region `{}`'s catalog at {url}", origin.origin_region),
            None => format!("region `{}`'s catalog", origin.origin_region),
        };
        return Err(CatalogError::Forbidden(format!(
            "View {view} is a read-only replica of region `{}`; it changes only by replication. \
             Write to {target} instead",
            origin.origin_region
        )));
    }
    Ok(row)
}

/// The namespace a client changes (`None`: there is none); one that replication made is refused
/// (403). With `lock`, its row lock is held until the transaction ends.
pub(super) async fn namespace_for_write(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    lock: bool,
) -> CatalogResult<Option<NamespaceRow>> {
    let row = db::get_namespace(conn, warehouse_id, ns, lock).await?;
    if let Some(origin) = row.as_ref().and_then(|row| row.origin_region.as_ref()) {
        return Err(read_only_namespace(ns, origin));
    }
    Ok(row)
}

/// The namespace a client makes a table in, or moves one into: it must exist (404) and not be one
/// that replication created (403).
pub(super) async fn writable_namespace(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
) -> CatalogResult<NamespaceRow> {
    namespace_for_write(conn, warehouse_id, ns, false)
        .await?
        .ok_or_else(|| CatalogError::no_such_namespace(ns))
}

/// The 403 a client gets for trying to change a replica table.
fn read_only_table(table: &TableName, mark: &ReplicaMark) -> CatalogError {
    let target = match &mark.origin_url {
        Some(url) => format!("region `{}`'s catalog at {url}", mark.origin_region),
        None => format!("region `{}`'s catalog", mark.origin_region),
    };
    CatalogError::Forbidden(format!(
        "Table {table} is a read-only replica of region `{}`; it changes only by replication. \
         Write to {target} instead",
        mark.origin_region
    ))
}

/// The 403 a client gets for writing a table this region is handing over (planned switchover).
fn handed_over_table(table: &TableName, handover: &Handover) -> CatalogError {
    let target = match &handover.to_url {
        Some(url) => format!("region `{}`'s catalog at {url}", handover.to_region),
        None => format!("region `{}`'s catalog", handover.to_region),
    };
    CatalogError::Forbidden(format!(
        "Table {table} is being handed over to region `{}` (a planned switchover), its primary \
         from now on; it takes no more writes here. Write to {target} instead",
        handover.to_region
    ))
}

/// The 403 a client gets for changing a namespace that replication created.
fn read_only_namespace(ns: &NamespaceName, origin_region: &str) -> CatalogError {
    CatalogError::Forbidden(format!(
        "Namespace {ns} holds replicas of region `{origin_region}` and is read-only here; create, \
         drop or change it in region `{origin_region}`'s catalog instead"
    ))
}

/// A write forwarded to an upstream warehouse's catalog (floe's rows record its tables): refused
/// when it changes one of `tables` that is a replica, or one of `namespaces` that replication
/// made, before anything is sent.
pub async fn check_forwarded_write(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    tables: &[&TableName],
    namespaces: &[&NamespaceName],
) -> CatalogResult<()> {
    for table in tables {
        table_for_write(conn, warehouse_id, table, false).await?;
    }
    for ns in namespaces {
        namespace_for_write(conn, warehouse_id, ns, false).await?;
    }
    Ok(())
}
