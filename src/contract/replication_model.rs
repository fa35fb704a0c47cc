//! Peers, rules and stream status as the management API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::contract::peer_protocol::Retention;

/// Another region's floe, as this floe pushes to it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PeerSpec {
    /// The peer's region name (its `region` setting).
    pub region: String,
    /// The peer floe's base URL, e.g. `http://replica.example:8181`.
    pub base_url: String,
    /// The bearer token floe presents to the peer. Write-only: never returned.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<String>)]
    pub credential: Option<crate::secret::Secret>,
    /// For each of the peer's warehouses this floe writes to: the storage root replica files go to.
    pub warehouses: Vec<PeerWarehouse>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PeerWarehouse {
    pub warehouse: String,
    /// The warehouse's storage root as the peer configures it, e.g. `file:///srv/replica-wh` or
    /// `s3://replica-bucket/wh`.
    pub storage_root: String,
    /// For an `s3://` root: how floe reaches that bucket, with the destination's own keys (the
    /// secret is write-only: never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::storage::S3Settings>,
}

/// A peer as read back.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Peer {
    pub region: String,
    pub base_url: String,
    /// Whether a credential is stored (the credential itself is never returned).
    pub has_credential: bool,
    pub warehouses: Vec<PeerWarehouse>,
}

/// Where a rule replicates to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Destination {
    /// A registered peer's region.
    pub peer: String,
    /// The peer's warehouse.
    pub warehouse: String,
    /// Namespace levels put in front of the source namespace at the destination, so several
    /// sources can aggregate into one warehouse without clashes.
    #[serde(default)]
    pub namespace_prefix: Vec<String>,
}

/// A replication rule as created or updated.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleSpec {
    /// The source warehouse.
    pub warehouse: String,
    /// Scope: a namespace (and its children); absent for the whole warehouse.
    #[serde(default)]
    pub namespace: Option<Vec<String>>,
    /// Scope: one table of `namespace`.
    #[serde(default)]
    pub table: Option<String>,
    /// 1..N destinations.
    pub destinations: Vec<Destination>,
    /// The replicas' retention (default: keep everything, ignoring the source's expiry).
    #[serde(default)]
    pub retention: Retention,
    /// Drop replicas when the source table is dropped (default: keep them, marked orphaned).
    #[serde(default)]
    pub replicate_drops: bool,
    /// `async` (the default): commits never wait for replication. `sync`: a table commit is
    /// acknowledged only once `min-acks` destinations have applied it, and fails, committed
    /// nowhere, when they cannot take it within `timeout-ms` (`replication::sync`).
    #[serde(default)]
    pub mode: ReplicationMode,
    /// Sync only: how many destinations must apply a commit before it is acknowledged
    /// (default 1; at most the number of destinations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_acks: Option<u32>,
    /// Sync only: how long a commit waits for its destinations to take it, and as long again for
    /// them to confirm it once committed here (default 5000, at most 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

/// Whether a rule's commits wait for its destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    #[default]
    Async,
    Sync,
}

/// A synchronous rule's settings, with their defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    pub min_acks: u32,
    pub timeout_ms: u32,
}

impl SyncSettings {
    pub const DEFAULT_MIN_ACKS: u32 = 1;
    pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;
    pub const MAX_TIMEOUT_MS: u32 = 600_000;
}

impl RuleSpec {
    /// The rule's synchronous settings (defaults filled in), `None` for an asynchronous rule.
    pub fn synchronous(&self) -> Option<SyncSettings> {
        (self.mode == ReplicationMode::Sync).then(|| SyncSettings {
            min_acks: self.min_acks.unwrap_or(SyncSettings::DEFAULT_MIN_ACKS),
            timeout_ms: self.timeout_ms.unwrap_or(SyncSettings::DEFAULT_TIMEOUT_MS),
        })
    }
}

/// A rule as read back.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Rule {
    pub id: Uuid,
    #[serde(flatten)]
    pub spec: RuleSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The state of one (table, destination) stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StreamState {
    Backfilling,
    Replicating,
    Completed,
    Failed,
    Paused,
}

/// GetTableReplicationStatus: one destination of a table.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DestinationStatus {
    pub peer: String,
    pub warehouse: String,
    /// The replica's namespace and name at the destination.
    pub namespace: Vec<String>,
    pub table: String,
    pub state: StreamState,
    /// The source table's newest version.
    pub source_version: i64,
    /// The newest source version the destination has applied.
    pub applied_version: i64,
    pub lag_versions: i64,
    /// Age of the oldest source change not yet applied (0 when caught up).
    pub lag_seconds: f64,
    /// The replica's metadata file after the last replicated change, and when it was applied.
    pub last_replicated_metadata_location: Option<String>,
    pub last_replicated_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub attempts: i32,
    /// Why the stream stopped (failed) or why the last attempt did not succeed.
    pub failure: Option<String>,
    pub rule_id: Option<Uuid>,
    /// `sync` when the table's commits wait for this destination (its rule is synchronous).
    pub mode: ReplicationMode,
    /// With `mode` `sync`: what this destination made of the table's synchronous commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncDestinationStatus>,
}

/// A synchronous destination's record (counted since its stream was made).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct SyncDestinationStatus {
    /// Commits it applied before they were acknowledged.
    pub confirmed: i64,
    /// Commits it could not take in time (refused, unreachable, or behind past the rule's
    /// timeout): each failed or went unconfirmed, unless other destinations made up the rule's
    /// `min-acks`.
    pub missed: i64,
    pub last_missed_at: Option<DateTime<Utc>>,
    /// Why the last one was missed.
    pub last_missed: Option<String>,
}

/// GetTableReplicationStatus.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TableReplicationStatus {
    /// What replicates: a table, a view, or a namespace's properties (whose `table` is empty).
    pub kind: crate::contract::peer_protocol::ReplicatedObject,
    pub warehouse: String,
    pub namespace: Vec<String>,
    pub table: String,
    pub source_region: String,
    pub destinations: Vec<DestinationStatus>,
    /// A table's role here: its epoch, and whether this region is its primary (absent for views
    /// and namespaces, and in the overview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<TableRole>,
}

/// Which region is a table's primary, as this region knows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TableRole {
    pub epoch: i64,
    /// `primary` (clients write here) or `replica` (read-only, written by replication).
    pub role: String,
    /// The region clients write the table to (this one when it is the primary).
    pub primary_region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_url: Option<String>,
    /// Set at a former primary that a promotion elsewhere superseded: its commits that never
    /// reached the new primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<DivergedCommits>,
}

/// A former primary's commits that the new primary never received. Their log entries and files
/// are kept; `last-metadata-location` is the state they made.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DivergedCommits {
    /// The epoch of the promotion that superseded this table.
    pub epoch: i64,
    pub primary_region: String,
    /// This table's version the new primary had reached, and the one it was at when it learned
    /// of the promotion.
    pub promoted_at_version: i64,
    pub fenced_at_version: i64,
    pub fenced_at: DateTime<Utc>,
    pub last_metadata_location: String,
    pub commits: Vec<DivergedCommit>,
}

/// One diverged commit, from this region's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DivergedCommit {
    pub seq: i64,
    pub version: i64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_location: Option<String>,
    /// Snapshots the commit added.
    pub snapshot_ids: Vec<i64>,
}

/// PromoteTable: how to make this region's replica the table's primary.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PromoteSpec {
    pub mode: PromotionMode,
    /// Planned only: how long the source may refuse writes while this replica catches up
    /// (default 30000). The switchover is abandoned, and nothing changes, past it.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PromotionMode {
    /// At once, whether or not the source can be reached: what it committed after the replica's
    /// position is kept there as diverged, not applied here.
    Forced,
    /// Without data loss: the source hands over once this replica has everything.
    Planned,
}

/// PromoteWarehouse: promote every replica of a warehouse that follows one source region.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WarehousePromoteSpec {
    pub mode: PromotionMode,
    /// The region whose replicas to promote; needed when the warehouse holds replicas of more
    /// than one.
    #[serde(default)]
    pub source_region: Option<String>,
    /// As [`PromoteSpec`]'s, for each table.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What a promotion did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct PromotionResult {
    pub warehouse: String,
    pub namespace: Vec<String>,
    pub table: String,
    /// The table's epoch now, with this region its primary.
    pub epoch: i64,
    pub previous_primary: String,
    /// The previous primary's version this replica had reached.
    pub promoted_at_version: i64,
    /// Planned only: how long the previous primary refused writes, from the handover to its
    /// learning of the promotion (as measured here, so at most that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_refused_ms: Option<u64>,
    /// The rule that replicates the table back to the previous primary, if one could be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicates_back: Option<Uuid>,
    /// Why the table does not replicate back by itself, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What an export of a fenced table's diverged state did (`replication::diverged`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DivergedExport {
    pub warehouse: String,
    pub namespace: Vec<String>,
    /// The new table, `<table>_diverged_<epoch>`: this region's, with the diverged state's
    /// files copied under a location of its own.
    pub table: String,
    /// The epoch of the promotion that fenced the table.
    pub epoch: i64,
    /// The new primary, where the export replicates to.
    pub primary_region: String,
    /// The fenced table's last state, the one exported.
    pub exported_from: String,
    /// The fenced table's versions that never reached the new primary.
    pub versions: Vec<i64>,
    /// The new table's metadata file.
    pub metadata_location: String,
    /// The rule made to replicate the new table to the new primary (none when a rule here
    /// covered it already, or when none could be made: then `note` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// GetReplicationOverview: this region, its peers, and every replicated table's destinations
/// (what the operator's dashboard shows).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicationOverview {
    pub region: String,
    pub peers: Vec<Peer>,
    /// Each table, view and namespace with streams, by warehouse, namespace and name.
    pub tables: Vec<TableReplicationStatus>,
}

/// Pause, resume or resync, for all destinations or one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StreamSelector {
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub warehouse: Option<String>,
}
