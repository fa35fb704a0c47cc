//! What a source floe sends a destination floe: one replicated change, fenced on the replica's
//! position. Shared by the sender (`replication::peer_client`) and the receiver (`catalog::replica`).

use iceberg::TableUpdate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The path of the peer endpoint that applies one change.
pub const APPLY_PATH: &str = "/internal/v1/replication/apply";

/// The path of the peer endpoint that answers whether a table update would apply to its replica
/// now (fences, position, the updates themselves), applying and writing nothing: a synchronous
/// commit asks it of its destinations before it commits at its source (`replication::sync`). Its
/// body is an [`ApplyRequest`] whose action is an update; it is answered as an apply is, with
/// `applied: false` and the replica's position when the update would apply.
pub const PREPARE_PATH: &str = "/internal/v1/replication/prepare";

/// The error type of the 409 a destination answers a change sent under a revoked lease with.
pub const STALE_LEASE_TYPE: &str = "StaleLeaseException";

/// The member of a 409 answer that carries the replica's position.
pub const POSITION_MEMBER: &str = "replica-position";

/// The path of the peer endpoint that lists the promotions a destination made of the calling
/// region's tables (a region asks each peer at start, before it serves writes).
pub const PROMOTIONS_PATH: &str = "/internal/v1/replication/promotions";

/// The path of the peer endpoint through which the region that is to become a table's primary
/// asks its primary to hand the table over (planned switchover), and tells it how that ended.
pub const HANDOVER_PATH: &str = "/internal/v1/replication/handover";

/// A step of a planned switchover, sent by the replica's region to the table's primary; the
/// table is named by its id at the primary (the replica's source table id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum HandoverRequest {
    /// Take no client write for the table from now, for `lasting_ms` at most, and answer the
    /// version the caller must apply before it promotes. `epoch` is the caller's replica's.
    Begin {
        table_id: Uuid,
        epoch: i64,
        #[serde(default)]
        url: Option<String>,
        lasting_ms: u64,
    },
    /// The caller did not promote (its replica did not catch up in time): take writes again.
    Release { table_id: Uuid },
    /// The caller promoted its replica: become its replica now (as a stream's refusal would
    /// make it, with nothing diverged).
    Promoted {
        table_id: Uuid,
        promotion: PromotionNotice,
    },
}

/// The primary's answer to a [`HandoverRequest`]: the table's version there.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HandoverAnswer {
    pub at_version: i64,
}

/// The error type of the 409 a destination answers a change with when it promoted the replica
/// at a newer epoch: the sender is no longer the table's primary.
pub const STALE_EPOCH_TYPE: &str = "StaleEpochException";

/// The member of a stale-epoch answer that says where the table's primary is now.
pub const PROMOTION_MEMBER: &str = "promotion";

/// A destination's promotion of a replica, as its former source learns of it: the new primary
/// (this region), its epoch, the promoted table's id there, and the source version the replica
/// had reached (the former source's later commits never reached the new primary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct PromotionNotice {
    pub region: String,
    /// The new primary's public URL, to name it to clients (none when it has no `public_url`).
    #[serde(default)]
    pub url: Option<String>,
    pub epoch: i64,
    pub table_id: Uuid,
    pub at_version: i64,
}

/// How far a replica has come, in the source's terms. `step` is 0 at a source version; during a
/// backfill towards version V the steps are `(V - 1, 1)`, `(V - 1, 2)`, ... and the last lands on
/// `(V, 0)` (a backfill of one step, a create, lands there at once), so positions only grow.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub struct Position {
    pub version: i64,
    pub step: i32,
}

impl Position {
    pub const fn at(version: i64) -> Self {
        Self { version, step: 0 }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.step == 0 {
            write!(f, "version {}", self.version)
        } else {
            write!(f, "version {} step {}", self.version, self.step)
        }
    }
}

/// Where a replica is: its generation (bumped by resync) and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaPosition {
    pub generation: i64,
    pub position: Position,
}

/// Retention the destination applies to the replica after each change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(tag = "mode", content = "value", rename_all = "kebab-case")]
pub enum Retention {
    /// Keep every snapshot the replica ever received (the source's expiry is not sent).
    #[default]
    KeepAll,
    /// Apply the source's `remove-snapshots`.
    FollowSource,
    /// Keep snapshots younger than this many days (and every snapshot a ref points to).
    KeepDays(u32),
    /// Keep this many newest snapshots (and every snapshot a ref points to).
    KeepSnapshots(u32),
}

/// What to do to the replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ApplyAction {
    /// Create the replica (or replace one of an older generation) with this whole metadata, whose
    /// paths already point into the destination.
    Create { metadata: Value },
    /// Apply these updates (paths already translated) to the replica's current metadata.
    Update { updates: Vec<TableUpdate> },
    /// The source renamed the table.
    Rename {
        namespace: Vec<String>,
        name: String,
    },
    /// The source dropped the table and the rule replicates drops.
    Drop { purge: bool },
    /// The source dropped the table; the replica stays, marked orphaned.
    Orphan,
    /// A view's whole state (views replicate as states: they are small and hold no data files):
    /// its metadata, whose location already points into the destination, and its name there.
    ViewState {
        metadata: Value,
        namespace: Vec<String>,
        name: String,
    },
    /// The source dropped the view and the rule replicates drops.
    DropView,
    /// A namespace's whole state, its properties (a `location` among them already points into
    /// the destination); the request's `namespace` names it at the destination.
    NamespaceProperties {
        properties: std::collections::BTreeMap<String, String>,
    },
}

/// What a change (or a stream) is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicatedObject {
    Table,
    View,
    Namespace,
}

impl ApplyAction {
    pub fn object(&self) -> ReplicatedObject {
        match self {
            ApplyAction::ViewState { .. } | ApplyAction::DropView => ReplicatedObject::View,
            ApplyAction::NamespaceProperties { .. } => ReplicatedObject::Namespace,
            _ => ReplicatedObject::Table,
        }
    }
}

/// One replicated change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApplyRequest {
    /// The region sending this change.
    pub source_region: String,
    /// Where clients must write this table (the source, or its own origin in a chain).
    pub origin_region: String,
    #[serde(default)]
    pub origin_url: Option<String>,
    /// The table's id in the source region: the replica's identity across renames (a view's or
    /// a namespace's id for theirs).
    pub source_table_id: Uuid,
    /// The destination warehouse.
    pub warehouse: String,
    /// The replica's namespace and name at the destination (before a rename).
    pub namespace: Vec<String>,
    pub name: String,
    pub generation: i64,
    /// The fencing token of the source's lease on the stream: the destination refuses a change
    /// under a token older than the newest it has accepted for this replica.
    pub lease_token: i64,
    /// The epoch of the table at its primary: a destination that promoted the replica at a
    /// newer epoch refuses it (409 [`STALE_EPOCH_TYPE`]).
    #[serde(default = "first_epoch")]
    pub epoch: i64,
    /// The source table's warehouse and namespace (a promotion of the replica replicates back
    /// into them).
    #[serde(default)]
    pub source_warehouse: Option<String>,
    #[serde(default)]
    pub source_namespace: Option<Vec<String>>,
    /// Sent with the first change of a stream from a promoted table to the region it was
    /// promoted from: that region's table, which this one superseded. The destination, if it
    /// still holds it as a primary of an older epoch, becomes its replica first.
    #[serde(default)]
    pub supersedes: Option<Superseded>,
    /// The position the replica must be at; `None` when the change creates the replica.
    pub from: Option<Position>,
    pub to: Position,
    pub action: ApplyAction,
    #[serde(default)]
    pub retention: Retention,
    /// The source's `last-updated-ms` after this change, so the replica's timeline matches.
    #[serde(default)]
    pub last_updated_ms: Option<i64>,
    /// Set on a table update the source committed in one transaction with other tables' updates
    /// that go to the same destination warehouse: the destination holds each until all have
    /// arrived and applies them together (`catalog::replica_group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<ApplyGroup>,
}

/// A transaction group as a destination sees it: the source's `txn_group` and how many of its
/// table updates this destination warehouse receives (each in its own stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApplyGroup {
    pub id: Uuid,
    pub members: u32,
}

/// A peer's promotion of one of the calling region's tables (`source_table_id`, its id there).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PromotionOf {
    pub source_table_id: Uuid,
    pub promotion: PromotionNotice,
}

/// The answer of [`PROMOTIONS_PATH`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Promotions {
    pub promotions: Vec<PromotionOf>,
}

/// The table a promotion superseded: its id in the destination region, which was its source,
/// and the version the promoted replica had reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Superseded {
    pub table_id: Uuid,
    pub at_version: i64,
}

/// A table's epoch when it is made (migrations/0024).
pub const fn first_epoch() -> i64 {
    1
}

/// The destination's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApplyResponse {
    /// False when the change had been applied before (a repeat is acknowledged without effect).
    pub applied: bool,
    pub position: Position,
    /// The replica's metadata file after the change (none after a drop).
    pub metadata_location: Option<String>,
    /// The change is held until the rest of its transaction group arrives (nothing applied yet):
    /// send it again shortly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}
