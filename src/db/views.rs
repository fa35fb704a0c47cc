//! SQL for view pointers (migrations/0021). Every function that changes a row is called inside a
//! transaction that holds the view's change lock (`catalog::lock_table_names`, the same lock a
//! table of that name takes), so a view's row and its log entry are written together and a
//! table and a view cannot take one name.

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::catalog::location_key;
use crate::names::{NamespaceName, TableName};

#[derive(Debug, Clone)]
pub struct ViewRow {
    pub view_id: Uuid,
    pub view_uuid: Uuid,
    pub namespace_id: Uuid,
    pub metadata_location: String,
    pub version: i64,
    /// Set when replication made the view: where clients must change it instead.
    pub replica_of: Option<ViewOrigin>,
}

#[derive(Debug, Clone)]
pub struct ViewOrigin {
    pub origin_region: String,
    pub origin_url: Option<String>,
}

/// Where a view row points: its metadata file, that metadata's view UUID and location.
#[derive(Clone, Copy)]
pub struct ViewPointer<'a> {
    pub view_uuid: Uuid,
    pub metadata_location: &'a str,
    pub location: &'a str,
}

/// The columns [`view_row`] reads, first in every query that returns a view row.
const VIEW_COLUMNS: &str = "v.view_id, v.view_uuid, v.namespace_id, v.metadata_location, \
     v.version, v.origin_region, v.origin_url, v.source_region";

/// The number of [`VIEW_COLUMNS`]: the columns a query adds come after them.
const VIEW_COLUMN_COUNT: usize = 8;

fn view_row(r: &sqlx::postgres::PgRow) -> ViewRow {
    let source_region: Option<String> = r.get(7);
    ViewRow {
        view_id: r.get(0),
        view_uuid: r.get(1),
        namespace_id: r.get(2),
        metadata_location: r.get(3),
        version: r.get(4),
        replica_of: source_region.map(|source| ViewOrigin {
            origin_region: r.get::<Option<String>, _>(5).unwrap_or(source),
            origin_url: r.get(6),
        }),
    }
}

/// The view's name from a query's `n.levels, v.name` after the view columns.
fn view_name(r: &sqlx::postgres::PgRow) -> sqlx::Result<TableName> {
    NamespaceName::new(r.get::<Vec<String>, _>(VIEW_COLUMN_COUNT))
        .and_then(|ns| TableName::new(ns, r.get::<String, _>(VIEW_COLUMN_COUNT + 1)))
        .map_err(|e| sqlx::Error::Decode(e.to_string().into()))
}

/// Finds a view by name; with `lock`, holds its row lock until the transaction ends.
pub async fn get_view(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    name: &str,
    lock: bool,
) -> sqlx::Result<Option<ViewRow>> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS}
         FROM iceberg_view v JOIN namespace n USING (namespace_id)
         WHERE n.warehouse_id = $1 AND n.levels = $2 AND v.name = $3{}",
        if lock { " FOR UPDATE OF v" } else { "" }
    );
    let row = sqlx::query(&sql)
        .bind(warehouse_id)
        .bind(ns.levels())
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(view_row))
}

/// Only the pointer, for loads and existence checks.
pub async fn get_view_location(
    pool: &PgPool,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    name: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT v.metadata_location FROM iceberg_view v JOIN namespace n USING (namespace_id)
         WHERE n.warehouse_id = $1 AND n.levels = $2 AND v.name = $3",
    )
    .bind(warehouse_id)
    .bind(ns.levels())
    .bind(name)
    .fetch_optional(pool)
    .await
}

pub async fn list_views(
    pool: &PgPool,
    namespace_id: Uuid,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT name FROM iceberg_view WHERE namespace_id = $1 AND ($2::text IS NULL OR name > $2)
         ORDER BY name LIMIT $3",
    )
    .bind(namespace_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether a table holds this name (a view may not take it).
pub async fn table_holds_name(
    conn: &mut PgConnection,
    namespace_id: Uuid,
    name: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM iceberg_table WHERE namespace_id = $1 AND name = $2)",
    )
    .bind(namespace_id)
    .bind(name)
    .fetch_one(conn)
    .await
}

/// Whether a view holds this name (a table may not take it).
pub async fn view_holds_name(
    conn: &mut PgConnection,
    namespace_id: Uuid,
    name: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM iceberg_view WHERE namespace_id = $1 AND name = $2)",
    )
    .bind(namespace_id)
    .bind(name)
    .fetch_one(conn)
    .await
}

/// A new view row at version 1: a client's, or with `replica` its mark, a replica's (the one
/// writer of new view rows). A unique violation (the view UUID is another view's) is the caller's
/// to report.
pub async fn insert_view(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    view_id: Uuid,
    namespace_id: Uuid,
    view: &TableName,
    pointer: ViewPointer<'_>,
    replica: Option<&ViewReplicaMark>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO iceberg_view (view_id, view_uuid, warehouse_id, namespace_id, name,
             metadata_location, location, version, source_region, source_view_id, origin_region,
             origin_url, replica_generation, replica_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11, $12, $13)",
    )
    .bind(view_id)
    .bind(pointer.view_uuid)
    .bind(warehouse_id)
    .bind(namespace_id)
    .bind(&view.name)
    .bind(pointer.metadata_location)
    .bind(location_key(pointer.location))
    .bind(replica.map(|m| &m.source_region))
    .bind(replica.map(|m| m.source_view_id))
    .bind(replica.map(|m| &m.origin_region))
    .bind(replica.and_then(|m| m.origin_url.as_ref()))
    .bind(replica.map(|m| m.generation))
    .bind(replica.map(|m| m.version))
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the (locked) row to its next version and this pointer.
pub async fn swap_view_pointer(
    conn: &mut PgConnection,
    view_id: Uuid,
    version: i64,
    pointer: ViewPointer<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE iceberg_view SET view_uuid = $2, metadata_location = $3, location = $4,
             version = $5, updated_at = now()
         WHERE view_id = $1",
    )
    .bind(view_id)
    .bind(pointer.view_uuid)
    .bind(pointer.metadata_location)
    .bind(location_key(pointer.location))
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the (locked) row to a new name; `false` when a table or view already holds it.
pub async fn rename_view(
    conn: &mut PgConnection,
    view_id: Uuid,
    namespace_id: Uuid,
    name: &str,
    version: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE iceberg_view SET namespace_id = $2, name = $3, version = $4, updated_at = now()
         WHERE view_id = $1
           AND NOT EXISTS (SELECT 1 FROM iceberg_view WHERE namespace_id = $2 AND name = $3)
           AND NOT EXISTS (SELECT 1 FROM iceberg_table WHERE namespace_id = $2 AND name = $3)",
    )
    .bind(view_id)
    .bind(namespace_id)
    .bind(name)
    .bind(version)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

pub async fn delete_view(conn: &mut PgConnection, view_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM iceberg_view WHERE view_id = $1")
        .bind(view_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What makes a view a replica: its source identity, where clients write it, and how far
/// replication has brought it (migrations/0022).
#[derive(Debug, Clone)]
pub struct ViewReplicaMark {
    pub source_region: String,
    pub source_view_id: Uuid,
    pub origin_region: String,
    pub origin_url: Option<String>,
    pub generation: i64,
    /// The source view version the replica holds.
    pub version: i64,
}

/// A replica view as a replicated change finds it, its row locked.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    pub row: ViewRow,
    pub name: TableName,
    pub generation: i64,
    pub version: i64,
}

/// The replica of a source view, found by its source identity (names may have changed), its row
/// locked until the transaction ends.
pub async fn get_replica_view(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    source_region: &str,
    source_view_id: Uuid,
) -> sqlx::Result<Option<ReplicaView>> {
    let row = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS}, n.levels, v.name, v.replica_generation, v.replica_version
         FROM iceberg_view v JOIN namespace n USING (namespace_id)
         WHERE v.warehouse_id = $1 AND v.source_region = $2 AND v.source_view_id = $3
         FOR UPDATE OF v"
    ))
    .bind(warehouse_id)
    .bind(source_region)
    .bind(source_view_id)
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(ReplicaView {
        row: view_row(&r),
        name: view_name(&r)?,
        generation: r.get(VIEW_COLUMN_COUNT + 2),
        version: r.get(VIEW_COLUMN_COUNT + 3),
    }))
}

/// Moves a (locked) replica view to its next version: pointer, name and mark at once.
pub async fn update_replica_view(
    conn: &mut PgConnection,
    view_id: Uuid,
    namespace_id: Uuid,
    view: &TableName,
    version: i64,
    pointer: ViewPointer<'_>,
    mark: &ViewReplicaMark,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE iceberg_view SET namespace_id = $2, name = $3, version = $4, view_uuid = $5,
             metadata_location = $6, location = $7, origin_region = $8, origin_url = $9,
             replica_generation = $10, replica_version = $11, updated_at = now()
         WHERE view_id = $1",
    )
    .bind(view_id)
    .bind(namespace_id)
    .bind(&view.name)
    .bind(version)
    .bind(pointer.view_uuid)
    .bind(pointer.metadata_location)
    .bind(location_key(pointer.location))
    .bind(&mark.origin_region)
    .bind(&mark.origin_url)
    .bind(mark.generation)
    .bind(mark.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// A view by its id, with its name, for its replication stream.
pub async fn get_view_by_id(
    pool: &PgPool,
    view_id: Uuid,
) -> sqlx::Result<Option<(ViewRow, TableName)>> {
    let row = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS}, n.levels, v.name
         FROM iceberg_view v JOIN namespace n USING (namespace_id)
         WHERE v.view_id = $1"
    ))
    .bind(view_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok((view_row(&r), view_name(&r)?))).transpose()
}
