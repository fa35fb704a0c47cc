//! SQL for warehouses, namespaces and table pointers. Functions take a connection so the catalog
//! service can compose them inside one transaction.

use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::replication::RULE_COVERS;
use crate::names::{NamespaceName, TableName};
use crate::storage::Location;

#[derive(Debug, Clone)]
pub struct WarehouseRow {
    pub warehouse_id: Uuid,
    pub name: String,
    pub storage_root: String,
}

/// Creates the warehouse if missing, or points an existing one at the configured root.
pub async fn upsert_warehouse(
    pool: &PgPool,
    name: &str,
    storage_root: &str,
) -> sqlx::Result<WarehouseRow> {
    let row = sqlx::query(
        "INSERT INTO warehouse (warehouse_id, name, storage_root) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET storage_root = EXCLUDED.storage_root
         RETURNING warehouse_id, name, storage_root",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(storage_root)
    .fetch_one(pool)
    .await?;
    Ok(WarehouseRow {
        warehouse_id: row.get(0),
        name: row.get(1),
        storage_root: row.get(2),
    })
}

#[derive(Debug, Clone)]
pub struct NamespaceRow {
    pub namespace_id: Uuid,
    pub levels: Vec<String>,
    pub properties: Value,
    /// Set when replication created the namespace: clients cannot change it.
    pub origin_region: Option<String>,
}

pub async fn get_namespace(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    lock: bool,
) -> sqlx::Result<Option<NamespaceRow>> {
    let sql = if lock {
        "SELECT namespace_id, levels, properties, origin_region FROM namespace
         WHERE warehouse_id = $1 AND levels = $2 FOR UPDATE"
    } else {
        "SELECT namespace_id, levels, properties, origin_region FROM namespace
         WHERE warehouse_id = $1 AND levels = $2"
    };
    let row = sqlx::query(sql)
        .bind(warehouse_id)
        .bind(ns.levels())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| NamespaceRow {
        namespace_id: r.get(0),
        levels: r.get(1),
        properties: r.get(2),
        origin_region: r.get(3),
    }))
}

/// Children of `parent` (or top-level namespaces), in name order, after the `after` cursor.
pub async fn list_namespaces(
    pool: &PgPool,
    warehouse_id: Uuid,
    parent: &[String],
    after: Option<&[String]>,
    limit: i64,
) -> sqlx::Result<Vec<Vec<String>>> {
    sqlx::query_scalar(
        "SELECT levels FROM namespace
         WHERE warehouse_id = $1
           AND cardinality(levels) = cardinality($2::text[]) + 1
           AND levels[1:cardinality($2::text[])] = $2::text[]
           AND ($3::text[] IS NULL OR levels > $3::text[])
         ORDER BY levels
         LIMIT $4",
    )
    .bind(warehouse_id)
    .bind(parent)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn insert_namespace(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    properties: &Value,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO namespace (namespace_id, warehouse_id, levels, properties)
         VALUES ($1, $2, $3, $4) ON CONFLICT (warehouse_id, levels) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(warehouse_id)
    .bind(ns.levels())
    .bind(properties)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Whether the namespace holds tables, views or child namespaces.
pub async fn namespace_has_children(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    namespace_id: Uuid,
    levels: &[String],
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM iceberg_table WHERE namespace_id = $2)
             OR EXISTS (SELECT 1 FROM iceberg_view WHERE namespace_id = $2)
             OR EXISTS (SELECT 1 FROM namespace WHERE warehouse_id = $1
                        AND cardinality(levels) > cardinality($3::text[])
                        AND levels[1:cardinality($3::text[])] = $3::text[])",
    )
    .bind(warehouse_id)
    .bind(namespace_id)
    .bind(levels)
    .fetch_one(conn)
    .await
}

pub async fn delete_namespace(conn: &mut PgConnection, namespace_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM namespace WHERE namespace_id = $1")
        .bind(namespace_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_namespace_properties(
    conn: &mut PgConnection,
    namespace_id: Uuid,
    properties: &Value,
) -> sqlx::Result<()> {
    // The version counts the changes, so the namespace's replication streams see there is more.
    sqlx::query(
        "UPDATE namespace SET properties = $2, properties_version = properties_version + 1
         WHERE namespace_id = $1",
    )
    .bind(namespace_id)
    .bind(properties)
    .execute(conn)
    .await?;
    Ok(())
}

/// A table's pointer row.
#[derive(Debug, Clone)]
pub struct TableRow {
    pub table_id: Uuid,
    pub table_uuid: Uuid,
    pub namespace_id: Uuid,
    pub name: String,
    pub metadata_location: String,
    pub version: i64,
    /// The epoch this row is at: a primary's own (1 when made, raised by each promotion), a
    /// replica's that of the primary it follows (migrations/0024).
    pub epoch: i64,
    /// Set when the table is a read-only replica of a table in another region.
    pub replica: Option<ReplicaMark>,
    /// Set while this primary hands the table over to another region (read by [`get_table`]
    /// only, for the write rule; migrations/0025).
    pub handover: Option<super::promotion::Handover>,
    /// Whether a synchronous replication rule covers the table (read by [`get_table`] only): a
    /// commit to it then asks which destinations must take it first (`replication::sync`).
    pub under_sync_rule: bool,
}

/// What makes a table a replica, and how far replication has brought it.
#[derive(Debug, Clone)]
pub struct ReplicaMark {
    /// The region that pushes this table here.
    pub source_region: String,
    /// The table's id in the source region.
    pub source_table_id: Uuid,
    /// The region clients must write to (the source, or the source's own origin in a chain).
    pub origin_region: String,
    pub origin_url: Option<String>,
    pub generation: i64,
    pub version: i64,
    pub step: i32,
    pub orphaned: bool,
    /// The epoch of the primary the replica follows (carried by every replicated change).
    pub epoch: i64,
}

fn table_row(r: sqlx::postgres::PgRow) -> TableRow {
    table_row_at(&r, 0)
}

/// The columns of [`TABLE_COLUMNS`], in its order, from column `first` of `r` on.
fn table_row_at(r: &sqlx::postgres::PgRow, first: usize) -> TableRow {
    let source_region: Option<String> = r.get(first + 6);
    TableRow {
        table_id: r.get(first),
        table_uuid: r.get(first + 1),
        namespace_id: r.get(first + 2),
        name: r.get(first + 3),
        metadata_location: r.get(first + 4),
        version: r.get(first + 5),
        epoch: r.get(first + 14),
        replica: source_region.map(|source_region| ReplicaMark {
            source_region,
            source_table_id: r.get(first + 7),
            origin_region: r.get(first + 8),
            origin_url: r.get(first + 9),
            generation: r.get(first + 10),
            version: r.get(first + 11),
            step: r.get(first + 12),
            orphaned: r.get(first + 13),
            epoch: r.get(first + 14),
        }),
        handover: None,
        under_sync_rule: false,
    }
}

const TABLE_COLUMNS: &str = "t.table_id, t.table_uuid, t.namespace_id, t.name, \
     t.metadata_location, t.version, t.source_region, t.source_table_id, t.origin_region, \
     t.origin_url, t.replica_generation, t.replica_version, t.replica_step, t.orphaned, t.epoch";

/// Finds a table by name; with `lock`, holds its row lock until the transaction ends (a drop, a
/// rename, a replica's change). Commits read without it and write with a compare-and-set
/// (`db::table_commit`).
pub async fn get_table(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    name: &str,
    lock: bool,
) -> sqlx::Result<Option<TableRow>> {
    let sql = format!(
        "SELECT {TABLE_COLUMNS}, {HANDOVER_COLUMNS},
             EXISTS (SELECT 1 FROM replication_rule r
                     WHERE r.warehouse_id = n.warehouse_id AND r.sync_min_acks IS NOT NULL
                       AND {RULE_COVERS}) AS under_sync_rule
         FROM iceberg_table t JOIN namespace n USING (namespace_id)
             LEFT JOIN table_handover h ON h.table_id = t.table_id AND h.until > now()
         WHERE n.warehouse_id = $1 AND n.levels = $2 AND t.name = $3{}",
        if lock { " FOR UPDATE OF t" } else { "" }
    );
    let row = sqlx::query(&sql)
        .bind(warehouse_id)
        .bind(ns.levels())
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| {
        let mut table = table_row_at(&r, 0);
        table.handover = super::promotion::handover_at(&r, 15);
        table.under_sync_rule = r.get("under_sync_rule");
        table
    }))
}

/// A table's handover, if one is in force, after [`TABLE_COLUMNS`] in [`get_table`].
const HANDOVER_COLUMNS: &str = "h.to_region, h.to_url, h.until, h.at_version";

/// Only the pointer, for cheap existence checks and conditional loads.
pub async fn get_table_location(
    pool: &PgPool,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    name: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT t.metadata_location FROM iceberg_table t JOIN namespace n USING (namespace_id)
         WHERE n.warehouse_id = $1 AND n.levels = $2 AND t.name = $3",
    )
    .bind(warehouse_id)
    .bind(ns.levels())
    .bind(name)
    .fetch_optional(pool)
    .await
}

pub async fn list_tables(
    pool: &PgPool,
    namespace_id: Uuid,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT name FROM iceberg_table WHERE namespace_id = $1 AND ($2::text IS NULL OR name > $2)
         ORDER BY name LIMIT $3",
    )
    .bind(namespace_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A table location as `iceberg_table.location` holds it, so the stored and the queried forms
/// cannot differ: one spelling per file ([`Location`]'s), no trailing slash.
pub(super) fn location_key(location: &str) -> String {
    Location::parse(location)
        .map(|location| location.to_string())
        .unwrap_or_else(|_| location.to_string())
}

/// Where a table row points: its metadata file and that metadata's table location.
#[derive(Clone, Copy)]
pub struct TablePointer<'a> {
    pub table_uuid: Uuid,
    pub metadata_location: &'a str,
    pub location: &'a str,
}

/// Binds a pointer and its row's new version, in the order the pointer update takes them
/// (`table_uuid`, `metadata_location`, `version`, `location`).
fn bind_pointer<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    pointer: &TablePointer<'q>,
    version: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(pointer.table_uuid)
        .bind(pointer.metadata_location)
        .bind(version)
        .bind(location_key(pointer.location))
}

/// Moves a locked table row to `version` without changing what it points to.
pub async fn bump_table_version(
    conn: &mut PgConnection,
    table_id: Uuid,
    version: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE iceberg_table SET version = $2, updated_at = now() WHERE table_id = $1")
        .bind(table_id)
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether any table or view (in any warehouse) has its location at `location` or under it, or
/// has no recorded location (table rows from before migration 0004), so might.
pub async fn location_may_hold_tables(pool: &PgPool, location: &Location) -> sqlx::Result<bool> {
    let location = location.to_string();
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM iceberg_table
             WHERE location IS NULL OR location = $1 OR starts_with(location, $2))
             OR EXISTS (SELECT 1 FROM iceberg_view
             WHERE location = $1 OR starts_with(location, $2))",
    )
    .bind(&location)
    .bind(format!("{location}/"))
    .fetch_one(pool)
    .await
}

pub async fn rename_table(
    conn: &mut PgConnection,
    table_id: Uuid,
    namespace_id: Uuid,
    name: &str,
    version: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE iceberg_table SET namespace_id = $2, name = $3, version = $4, updated_at = now()
         WHERE table_id = $1
           AND NOT EXISTS (SELECT 1 FROM iceberg_table WHERE namespace_id = $2 AND name = $3)
           AND NOT EXISTS (SELECT 1 FROM iceberg_view WHERE namespace_id = $2 AND name = $3)",
    )
    .bind(table_id)
    .bind(namespace_id)
    .bind(name)
    .bind(version)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

pub async fn delete_table(conn: &mut PgConnection, table_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM iceberg_table WHERE table_id = $1")
        .bind(table_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A replica's next generation while it is built (see migration 0008).
#[derive(Debug, Clone)]
pub struct ReplicaBuild {
    pub generation: i64,
    pub version: i64,
    pub step: i32,
    pub metadata_location: String,
}

/// Takes the change locks of tables by name, held until the transaction ends. Every transaction
/// that gives an existing table a new log entry takes its table's lock first, before its first
/// write: its transaction id, and so its entries' `seq`s, then come after those of the table's
/// previous change, which committed before the lock was free (see `log`: a table's entries are
/// in version order along the log). Advisory locks assign no transaction id, as a row lock
/// would; the row locks taken next never wait. The locks are taken in one order (by key), so two
/// transactions over the same tables cannot deadlock; two names sharing a key only queue
/// behind each other.
pub async fn lock_table_names(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    tables: &[&TableName],
) -> sqlx::Result<()> {
    let names: Vec<String> = tables.iter().map(|t| table_lock_name(t)).collect();
    sqlx::query("SELECT floe_lock_tables($1, $2)")
        .bind(warehouse_id)
        .bind(&names)
        .execute(conn)
        .await?;
    Ok(())
}

/// A table's name as `floe_lock_tables` keys its change lock (migrations/0014).
pub(super) fn table_lock_name(table: &TableName) -> String {
    lock_name(table.namespace.levels(), &table.name)
}

/// [`table_lock_name`] of a table given by its namespace's levels and its name.
pub(super) fn lock_name(namespace: &[String], name: &str) -> String {
    format!("{}\u{1e}{}", namespace.join("\u{1f}"), name)
}

/// What a replica's apply finds once it holds its locks (see [`open_replica_apply`]).
#[derive(Debug)]
pub struct ReplicaApplyStart {
    /// The replica, found by its source identity (names may have changed), its row locked.
    pub replica: Option<TableRow>,
    /// The build of its next generation, its row locked.
    pub build: Option<ReplicaBuild>,
}

/// Where a promoted replica's source finds its table now: kept in the fence row of the source
/// it followed (migrations/0024).
#[derive(Debug, Clone, Copy)]
pub struct Promotion {
    /// The epoch the promotion began.
    pub epoch: i64,
    /// The promoted table's id here.
    pub table_id: Uuid,
    /// The source version the replica had reached when it was promoted.
    pub at_version: i64,
}

/// How a replica's apply opened (see [`open_replica_apply`]).
#[derive(Debug)]
pub enum ReplicaApplyOpening {
    /// The change may apply: its replica and build, their rows locked.
    Open(Box<ReplicaApplyStart>),
    /// A change under a larger lease token was accepted before: the sender's lease was revoked.
    StaleLease,
    /// The replica was promoted here at a newer epoch than the change's: its sender is no longer
    /// the primary.
    StaleEpoch(Promotion),
}

/// The identity and fencing tokens of a replicated change, as [`open_replica_apply`] checks them.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSender<'a> {
    pub source_region: &'a str,
    pub source_table_id: Uuid,
    /// The source table's warehouse and namespace, kept for a promotion to replicate back into.
    pub source_warehouse: Option<&'a str>,
    pub source_namespace: Option<&'a [String]>,
    pub lease_token: i64,
    pub epoch: i64,
}

/// Opens a replica's apply, in one round trip (`floe_open_replica_apply`, migrations/0016 and
/// 0024): takes the table's change lock (see [`lock_table_names`]), refuses a change under an
/// epoch older than a promotion of the replica seen here, records that a change arrived under
/// the sender's lease token (refused when a larger one was accepted before: the lease was
/// revoked, paused, resynced or expired to another instance), then reads the replica and its
/// build with their rows locked. The fence row stays locked until the transaction ends, so
/// changes to one replica pass it one at a time.
pub async fn open_replica_apply(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    table: &TableName,
    sender: ReplicaSender<'_>,
) -> sqlx::Result<ReplicaApplyOpening> {
    let r = sqlx::query("SELECT * FROM floe_open_replica_apply($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(warehouse_id)
        .bind([table_lock_name(table)])
        .bind(sender.source_region)
        .bind(sender.source_table_id)
        .bind(sender.lease_token)
        .bind(sender.epoch)
        .bind(sender.source_warehouse)
        .bind(sender.source_namespace)
        .fetch_one(conn)
        .await?;
    match r.get::<Option<String>, _>(0).as_deref() {
        None => {}
        Some("stale-epoch") => {
            return Ok(ReplicaApplyOpening::StaleEpoch(Promotion {
                epoch: r.get(20),
                table_id: r.get(21),
                at_version: r.get(22),
            }));
        }
        Some(_) => return Ok(ReplicaApplyOpening::StaleLease),
    }
    let replica = r.get::<Option<Uuid>, _>(1).map(|_| table_row_at(&r, 1));
    let build = r.get::<Option<i64>, _>(16).map(|generation| ReplicaBuild {
        generation,
        version: r.get(17),
        step: r.get(18),
        metadata_location: r.get(19),
    });
    Ok(ReplicaApplyOpening::Open(Box::new(ReplicaApplyStart {
        replica,
        build,
    })))
}

/// Passes the lease fence of a replica view or namespace (`replica_fence`, shared with replica
/// tables, whose apply passes it inside `floe_open_replica_apply`): `false` when a newer lease of
/// the stream has been seen, and the change must not apply. The fence row stays locked, so
/// changes to one replica pass one at a time.
pub async fn pass_replica_fence(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    source_region: &str,
    source_id: Uuid,
    lease_token: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO replica_fence AS f (warehouse_id, source_region, source_table_id, lease_token)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (warehouse_id, source_region, source_table_id) DO UPDATE
             SET lease_token = EXCLUDED.lease_token
             WHERE f.lease_token <= EXCLUDED.lease_token",
    )
    .bind(warehouse_id)
    .bind(source_region)
    .bind(source_id)
    .bind(lease_token)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Records a build's progress. A build of an older generation never replaces a newer one.
pub async fn save_replica_build(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    source_region: &str,
    source_table_id: Uuid,
    build: &ReplicaBuild,
) -> sqlx::Result<bool> {
    let saved = sqlx::query(
        "INSERT INTO replica_build
             (warehouse_id, source_region, source_table_id, generation, version, step,
              metadata_location)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (warehouse_id, source_region, source_table_id) DO UPDATE
             SET generation = EXCLUDED.generation, version = EXCLUDED.version,
                 step = EXCLUDED.step, metadata_location = EXCLUDED.metadata_location
             WHERE replica_build.generation <= EXCLUDED.generation",
    )
    .bind(warehouse_id)
    .bind(source_region)
    .bind(source_table_id)
    .bind(build.generation)
    .bind(build.version)
    .bind(build.step)
    .bind(&build.metadata_location)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(saved == 1)
}

/// Removes a finished (swapped in) or abandoned build.
pub async fn delete_replica_build(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    source_region: &str,
    source_table_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM replica_build
         WHERE warehouse_id = $1 AND source_region = $2 AND source_table_id = $3",
    )
    .bind(warehouse_id)
    .bind(source_region)
    .bind(source_table_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a table row as a replica and records the source position it has reached.
pub async fn set_replica_mark(
    conn: &mut PgConnection,
    table_id: Uuid,
    mark: &ReplicaMark,
) -> sqlx::Result<()> {
    let sql = format!("UPDATE iceberg_table SET {REPLICA_MARK_SET} WHERE table_id = $1");
    bind_replica_mark(sqlx::query(&sql).bind(table_id), mark)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves a replica's row to `version` and this pointer, with its mark, in one statement.
pub async fn update_replica_pointer(
    conn: &mut PgConnection,
    table_id: Uuid,
    pointer: &TablePointer<'_>,
    version: i64,
    mark: &ReplicaMark,
) -> sqlx::Result<()> {
    let sql = format!(
        "UPDATE iceberg_table SET {REPLICA_MARK_SET}, table_uuid = $11, metadata_location = $12,
             version = $13, location = $14, updated_at = now()
         WHERE table_id = $1"
    );
    let query = bind_replica_mark(sqlx::query(&sql).bind(table_id), mark);
    bind_pointer(query, pointer, version).execute(conn).await?;
    Ok(())
}

/// A replica's mark columns, set from parameters $2 to $10 ([`bind_replica_mark`]).
const REPLICA_MARK_SET: &str = "source_region = $2, source_table_id = $3, origin_region = $4, \
     origin_url = $5, replica_generation = $6, replica_version = $7, replica_step = $8, \
     orphaned = $9, epoch = $10";

fn bind_replica_mark<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    mark: &'q ReplicaMark,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&mark.source_region)
        .bind(mark.source_table_id)
        .bind(&mark.origin_region)
        .bind(&mark.origin_url)
        .bind(mark.generation)
        .bind(mark.version)
        .bind(mark.step)
        .bind(mark.orphaned)
        .bind(mark.epoch)
}

/// Creates a namespace (and its missing parents) for replicated tables, marked with their origin.
pub async fn ensure_replicated_namespace(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
    origin_region: &str,
) -> sqlx::Result<Uuid> {
    let levels = ns.levels();
    for depth in 1..=levels.len() {
        sqlx::query(
            "INSERT INTO namespace (namespace_id, warehouse_id, levels, origin_region)
             VALUES ($1, $2, $3, $4) ON CONFLICT (warehouse_id, levels) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(warehouse_id)
        .bind(&levels[..depth])
        .bind(origin_region)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query_scalar("SELECT namespace_id FROM namespace WHERE warehouse_id = $1 AND levels = $2")
        .bind(warehouse_id)
        .bind(levels)
        .fetch_one(conn)
        .await
}

/// Whether the warehouse holds tables or views and every one of them is a replica.
pub async fn warehouse_holds_only_replicas(
    pool: &PgPool,
    warehouse_id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT count(*) > 0 AND bool_and(source_region IS NOT NULL)
         FROM (SELECT source_region FROM iceberg_table WHERE warehouse_id = $1
               UNION ALL
               SELECT source_region FROM iceberg_view WHERE warehouse_id = $1) objects",
    )
    .bind(warehouse_id)
    .fetch_one(pool)
    .await
}

/// A table by floe's id, with its namespace's levels (`None` once dropped).
/// A table by id, in the caller's transaction, with its warehouse and name; with `lock`, its row
/// lock held until the transaction ends.
pub async fn find_table_by_id(
    conn: &mut PgConnection,
    table_id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<(TableRow, Uuid, TableName)>> {
    let sql = format!(
        "SELECT {TABLE_COLUMNS}, n.levels, n.warehouse_id
         FROM iceberg_table t JOIN namespace n USING (namespace_id)
         WHERE t.table_id = $1{}",
        if lock { " FOR UPDATE OF t" } else { "" }
    );
    let Some(r) = sqlx::query(&sql)
        .bind(table_id)
        .fetch_optional(conn)
        .await?
    else {
        return Ok(None);
    };
    let levels: Vec<String> = r.get(15);
    let warehouse_id: Uuid = r.get(16);
    let row = table_row_at(&r, 0);
    let name = NamespaceName::new(levels)
        .and_then(|ns| TableName::new(ns, row.name.clone()))
        .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?;
    Ok(Some((row, warehouse_id, name)))
}

pub async fn get_table_by_id(
    pool: &PgPool,
    table_id: Uuid,
) -> sqlx::Result<Option<(TableRow, Vec<String>)>> {
    let sql = format!(
        "SELECT {TABLE_COLUMNS}, n.levels FROM iceberg_table t JOIN namespace n USING (namespace_id)
         WHERE t.table_id = $1"
    );
    let row = sqlx::query(&sql)
        .bind(table_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| {
        let levels: Vec<String> = r.get(15);
        (table_row(r), levels)
    }))
}
