//! Namespaces as replication sees them (migrations/0023): the source's state a namespace stream
//! sends, and the destination's replica namespace, found by name, with the sender it last applied.

use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::names::NamespaceName;

/// A namespace as its stream sends it.
#[derive(Debug, Clone)]
pub struct NamespaceState {
    pub levels: Vec<String>,
    pub properties: Value,
    pub properties_version: i64,
    /// Set when replication made the namespace here: its origin, which a further region learns.
    pub origin_region: Option<String>,
}

/// A namespace by its id, for its replication stream.
pub async fn get_namespace_state(
    pool: &PgPool,
    namespace_id: Uuid,
) -> sqlx::Result<Option<NamespaceState>> {
    let row = sqlx::query(
        "SELECT levels, properties, properties_version, origin_region FROM namespace
         WHERE namespace_id = $1",
    )
    .bind(namespace_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| NamespaceState {
        levels: r.get(0),
        properties: r.get(1),
        properties_version: r.get(2),
        origin_region: r.get(3),
    }))
}

/// Which sender a replica namespace's properties came from, and how far they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceReplicaMark {
    pub source_region: String,
    pub source_namespace_id: Uuid,
    pub generation: i64,
    pub version: i64,
}

/// A namespace at the destination, its row locked until the transaction ends.
#[derive(Debug, Clone)]
pub struct ReplicaNamespace {
    pub namespace_id: Uuid,
    pub properties: Value,
    /// `None`: the destination's own namespace.
    pub origin_region: Option<String>,
    /// `None`: no properties were replicated into it yet.
    pub mark: Option<NamespaceReplicaMark>,
}

/// The namespace of these levels, locked.
pub async fn lock_namespace(
    conn: &mut PgConnection,
    warehouse_id: Uuid,
    ns: &NamespaceName,
) -> sqlx::Result<Option<ReplicaNamespace>> {
    let row = sqlx::query(
        "SELECT namespace_id, properties, origin_region, source_region, source_namespace_id,
                replica_generation, replica_version
         FROM namespace WHERE warehouse_id = $1 AND levels = $2 FOR UPDATE",
    )
    .bind(warehouse_id)
    .bind(ns.levels())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| ReplicaNamespace {
        namespace_id: r.get(0),
        properties: r.get(1),
        origin_region: r.get(2),
        mark: r
            .get::<Option<String>, _>(3)
            .map(|source_region| NamespaceReplicaMark {
                source_region,
                source_namespace_id: r.get(4),
                generation: r.get(5),
                version: r.get(6),
            }),
    }))
}

/// Gives a (locked) replica namespace its replicated properties and mark; its own version moves
/// on, so the streams that carry it further see the change.
pub async fn set_replicated_properties(
    conn: &mut PgConnection,
    namespace_id: Uuid,
    properties: &Value,
    mark: &NamespaceReplicaMark,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE namespace SET properties = $2, properties_version = properties_version + 1,
             source_region = $3, source_namespace_id = $4, replica_generation = $5,
             replica_version = $6
         WHERE namespace_id = $1",
    )
    .bind(namespace_id)
    .bind(properties)
    .bind(&mark.source_region)
    .bind(mark.source_namespace_id)
    .bind(mark.generation)
    .bind(mark.version)
    .execute(conn)
    .await?;
    Ok(())
}
