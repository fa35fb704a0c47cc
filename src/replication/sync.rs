//! Synchronous replication (issue 14, item 4): a commit to a table whose governing rule is
//! synchronous (`mode = "sync"`, `min-acks`, `timeout-ms`) is acknowledged only once at least
//! `min-acks` of the rule's destinations have applied it, files included; when they cannot take
//! it in time it fails, committed nowhere. The commit path calls this through
//! `catalog::sync_commit`, in two phases around its own commit.
//!
//! **Prepare** (before the source commits). For each destination, concurrently: the change's files
//! are copied under the replica's location (what the stream would copy, so its later push finds
//! them there), then the destination is asked whether the update would apply to its replica now
//! (`catalog::replica_prepare`: fences, position, the updates themselves; nothing is written). A
//! destination that is behind (its stream lags, or it is being rebuilt) is waited for: its stream
//! is made due and the replicators woken, and the question asked again until the rule's timeout.
//! One that is down is asked again until then too. Fewer than `min-acks` yeses for any table of the
//! commit fail the commit with 409 (`CommitFailedException`) before anything is committed: the
//! source's metadata files are removed, and no destination applied anything (a yes writes nothing
//! there), so the commit is applied nowhere. Files copied for it stay under the replica's location,
//! referenced by nothing, as an interrupted copy's do.
//!
//! **Confirm** (after the source committed). The same update is applied at each destination that
//! said yes, and the commit is acknowledged once each table has `min-acks` applies (a repeat, when
//! the stream got there first, counts). A destination that said yes and then cannot apply in time
//! leaves the commit committed here but unconfirmed: the client gets 500
//! (`CommitStateUnknownException`), never a success, and the destination receives the change
//! from its stream. So an acknowledged commit is at `min-acks` destinations, durably (each applies
//! in a PostgreSQL transaction after the files it names are synced), and a failed one is nowhere.
//!
//! **A crash mid-way** leaves one of two states, both settled before the table's next synchronous
//! commit goes on. Killed before the source's commit: nothing was committed anywhere, and the next
//! commit makes the same version again. Killed after it: the source's log holds the change, its
//! stream delivers it, and the next commit's prepare, which needs the replica at the version before
//! its own, waits until it has (or fails in time, committed nowhere). No destination is ever ahead
//! of its source, since nothing is applied there before the source has committed it.
//!
//! A yes is not a promise (the destination holds nothing for the commit): the price is that a
//! destination lost between its yes and the apply turns an otherwise good commit into an
//! unconfirmed one, rather than a destination holding prepared changes that it would have to
//! settle, by asking a source that may be gone, before it could be promoted.
//!
//! Only table updates (commitTable and transactions) are synchronous; creates, renames, drops and
//! views replicate as in an asynchronous rule. Each request uses the stream's latest lease token,
//! so the stream's own task and this path fence each other as two leases of one stream would.

mod ask;
mod deliver;

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::catalog::sync_commit::{PreparedSync, SyncChange, SyncReplication};
use crate::catalog::{Catalog, Warehouse};
use crate::config::ReplicationSettings;
use crate::contract::peer_protocol::ApplyRequest;
use crate::db::sync_streams::{self as db, SyncDestination};
use crate::error::{CatalogError, CatalogResult};
use crate::names::TableName;

use super::destinations::DestinationStorages;
use super::peer_client::PeerClient;

/// How soon a destination that must catch up (or come back) is asked again, doubling up to
/// [`RECHECK_MAX`] while the timeout lasts.
const RECHECK_FIRST: Duration = Duration::from_millis(5);
const RECHECK_MAX: Duration = Duration::from_millis(100);

/// Synchronous replication, one per instance (installed in the catalog by the server).
pub struct SyncReplicator {
    shared: Arc<Shared>,
}

/// What both phases need, owned so that a prepared commit outlives the call that prepared it.
struct Shared {
    /// The catalog this replicator serves (which holds it): its metadata cache, and what a
    /// destination's promotion makes of a table.
    catalog: Weak<Catalog>,
    pool: PgPool,
    region: String,
    public_url: Option<String>,
    allowed_peer_hosts: Option<Vec<String>>,
    parallel_files: usize,
    max_manifest_bytes: u64,
    client: PeerClient,
    destinations: DestinationStorages,
}

impl std::fmt::Debug for SyncReplicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncReplicator")
            .field("region", &self.shared.region)
            .finish_non_exhaustive()
    }
}

impl SyncReplicator {
    /// Synchronous replication for `catalog`, which is to hold it.
    pub fn new(catalog: &Arc<Catalog>, settings: &ReplicationSettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                catalog: Arc::downgrade(catalog),
                pool: catalog.pool().clone(),
                region: catalog.region().to_string(),
                public_url: settings.public_url.clone(),
                allowed_peer_hosts: settings.allowed_peer_hosts.clone(),
                parallel_files: settings.parallel_files,
                max_manifest_bytes: catalog.max_manifest_bytes(),
                client: PeerClient::new(Duration::from_millis(settings.peer_timeout_ms)),
                destinations: DestinationStorages::default(),
            }),
        }
    }
}

/// A change a destination said it would take, to apply once committed here.
struct Send {
    destination: SyncDestination,
    request: ApplyRequest,
}

/// A table of the commit and how many applies its rule requires.
struct Quorum {
    table: TableName,
    table_id: Uuid,
    min_acks: u32,
}

#[async_trait]
impl SyncReplication for SyncReplicator {
    async fn prepare(
        &self,
        wh: &Warehouse,
        changes: Vec<SyncChange>,
    ) -> CatalogResult<Option<Box<dyn PreparedSync>>> {
        let started = Instant::now();
        let ids: Vec<Uuid> = changes.iter().map(|c| c.table_id).collect();
        let destinations = db::sync_destinations(&self.shared.pool, &ids).await?;
        let Some(timeout) = destinations.iter().map(|d| d.settings.timeout_ms).min() else {
            return Ok(None);
        };
        let timeout = Duration::from_millis(u64::from(timeout));
        let deadline = started + timeout;
        let quorums: Vec<Quorum> = changes
            .iter()
            .filter_map(|change| {
                let first = destinations
                    .iter()
                    .find(|d| d.table_id == change.table_id)?;
                Some(Quorum {
                    table: change.table.clone(),
                    table_id: change.table_id,
                    min_acks: first.settings.min_acks,
                })
            })
            .collect();
        let asks: FuturesUnordered<_> = destinations
            .into_iter()
            .filter_map(|d| {
                let change = changes.iter().find(|c| c.table_id == d.table_id)?;
                Some(self.shared.ask(wh, change, d, deadline))
            })
            .collect();
        // Those that have not answered once every table has its yeses are not waited for: they
        // are not sent the change now, and their streams bring it.
        let answers = until_quorums(asks, &quorums).await;
        if let Some(short) = shortfall(&answers, &quorums, "could take it") {
            crate::telemetry::record_sync_commit("refused", started.elapsed());
            return Err(CatalogError::CommitFailed(format!(
                "Commit not applied, here or anywhere: synchronous replication could not have it \
                 taken within {} ms. {short}. Retry once the destinations can take it, or make \
                 the rule asynchronous",
                timeout.as_millis(),
            )));
        }
        let sends = answers
            .into_iter()
            .filter_map(|(destination, answer)| {
                Some(Send {
                    destination,
                    request: answer.ok()?,
                })
            })
            .collect();
        Ok(Some(Box::new(Prepared {
            shared: self.shared.clone(),
            sends,
            quorums,
            timeout,
            started,
            prepared: Instant::now(),
        })))
    }
}

/// One destination's answer in a phase: the destination, and what it said (`Err`: why not).
type Answer<T> = (SyncDestination, Result<T, String>);

/// Collects `pending` answers as they come, until every table of `quorums` has its successes or
/// every answer is in; the answers still pending then are dropped.
async fn until_quorums<T>(
    mut pending: FuturesUnordered<impl Future<Output = Answer<T>>>,
    quorums: &[Quorum],
) -> Vec<Answer<T>> {
    let mut answers = Vec::with_capacity(pending.len());
    while let Some(answer) = pending.next().await {
        answers.push(answer);
        let met = |quorum: &Quorum| {
            answers
                .iter()
                .filter(|(d, result)| d.table_id == quorum.table_id && result.is_ok())
                .count()
                >= quorum.min_acks as usize
        };
        if quorums.iter().all(met) {
            break;
        }
    }
    answers
}

/// What falls short: for each table with fewer successes than its rule requires, how many it had
/// (each a destination that `succeeded` in the phase's words) and why the others did not.
fn shortfall<T>(answers: &[Answer<T>], quorums: &[Quorum], succeeded: &str) -> Option<String> {
    let short: Vec<String> = quorums
        .iter()
        .filter_map(|quorum| {
            let mine: Vec<&Answer<T>> = answers
                .iter()
                .filter(|(d, _)| d.table_id == quorum.table_id)
                .collect();
            let ok = mine.iter().filter(|(_, result)| result.is_ok()).count();
            if ok >= quorum.min_acks as usize {
                return None;
            }
            let reasons: Vec<String> = mine
                .iter()
                .filter_map(|(d, result)| {
                    let reason = result.as_ref().err()?;
                    Some(format!("{}/{}: {reason}", d.peer_region, d.dest_warehouse))
                })
                .collect();
            Some(format!(
                "{} needs {} of its {} destination(s) and {ok} {succeeded} ({})",
                quorum.table,
                quorum.min_acks,
                mine.len(),
                reasons.join("; ")
            ))
        })
        .collect();
    (!short.is_empty()).then(|| short.join(". "))
}

/// Changes prepared at their destinations (see the module docs: confirm).
struct Prepared {
    shared: Arc<Shared>,
    sends: Vec<Send>,
    quorums: Vec<Quorum>,
    timeout: Duration,
    /// When the prepare began (the commit's whole wait is measured from it), and ended.
    started: Instant,
    prepared: Instant,
}

#[async_trait]
impl PreparedSync for Prepared {
    async fn confirm(self: Box<Self>, txn_group: Option<Uuid>) -> CatalogResult<()> {
        let Prepared {
            shared,
            sends,
            quorums,
            timeout,
            started,
            prepared,
        } = *self;
        let deadline = Instant::now() + timeout;
        // Each apply in a task of its own: those still running once every table has its applies
        // go on without the commit waiting for them.
        let applies: FuturesUnordered<_> = sends
            .into_iter()
            .map(|send| {
                let destination = send.destination.clone();
                let shared = shared.clone();
                let task =
                    tokio::spawn(
                        async move { shared.confirm_one(send, txn_group, deadline).await },
                    );
                async move {
                    task.await.unwrap_or_else(|err| {
                        (destination, Err(format!("its apply task failed: {err}")))
                    })
                }
            })
            .collect();
        let results = until_quorums(applies, &quorums).await;
        if let Some(short) = shortfall(&results, &quorums, "applied it") {
            crate::telemetry::record_sync_commit("unconfirmed", started.elapsed());
            return Err(CatalogError::CommitStateUnknown(format!(
                "committed in region `{}`, but its synchronous destinations did not confirm it \
                 within {} ms: {short}. They receive it from their streams; reload the table \
                 before retrying",
                shared.region,
                timeout.as_millis(),
            )));
        }
        tracing::debug!(
            prepare_ms = (prepared - started).as_secs_f64() * 1000.0,
            confirm_ms = prepared.elapsed().as_secs_f64() * 1000.0,
            "synchronous commit acknowledged"
        );
        crate::telemetry::record_sync_commit("acknowledged", started.elapsed());
        Ok(())
    }
}
