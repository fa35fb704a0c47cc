//! The replicator: one per floe instance. Woken by its own instance's commits in process and by
//! other instances' coalesced NOTIFY (`log::wake`; with a polling fallback), it
//! keeps the streams in line with the rules, leases due streams (`FOR UPDATE SKIP LOCKED`, so many
//! instances on one database share the work and a dead instance's leases expire to the others),
//! and drives each leased stream in its own task, bounded by `replication.workers`: first the
//! backfill, then the table's log entries strictly in version order. A stream that fails is
//! retried with exponential backoff and jitter, or stopped with its reason; the others go on, and
//! nothing here ever touches the source's commit path. While streams with work wait for a worker,
//! a running stream gives its worker up after [`STREAM_SLICE`] and queues again behind them, so
//! tables written without pause cannot keep the others' replicas behind for as long as the
//! writes go on.
//!
//! Its work follows what changed, not the catalog's size: each round reads the log entries since
//! the last round, reconciles only the tables that were created, registered or renamed (rules and
//! peers are reconciled when an operator changes them), and leases only the streams of tables that
//! changed, plus those with work of their own (new, backfilling, retrying); caught-up streams are
//! not probed. A table that changed while its stream ran here is looked at again when that task
//! ends, and every stream and table is looked at once every [`FULL_SCAN_EVERY`] as a safety net.
//! That pass over every table runs on its own timer, beside the rounds: on a large catalog it takes
//! a while, and commits to other tables must not wait behind it.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::config::ReplicationSettings;
use crate::db::catalog as catalog_db;
use crate::db::replication::{self as db, Lease, STREAMS_CHANNEL, StreamRow, StreamUpdate};
use crate::error::CatalogError;
use crate::log::{self, LogEntry, NOTIFY_CHANNEL, TableChange, TableEntry};
use crate::replication::destinations::DestinationStorages;
use crate::storage::StorageError;

use super::copy::{Copier, CopyError};
use super::peer_client::{PeerClient, PeerError};
use super::plan::{self, BackfillStep};
use super::push::{self, NoCopier, Target};

mod namespace_stream;
mod view_stream;
use crate::contract::peer_protocol::{
    ApplyAction, ApplyGroup, ApplyRequest, Position, PromotionNotice, ReplicatedObject, Superseded,
};

/// Log entries read per round of a stream's tail.
const TAIL_BATCH: i64 = 64;
/// Restarts (new backfills) in a row before a stream stops for an operator.
const MAX_RESTARTS: i32 = 5;
/// Every stream is looked at this often, and every table reconciled with the rules (a safety net:
/// work is otherwise found from what the log says changed, see the module docs).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);
/// Log entries read per round to learn which tables changed.
const CHANGES_BATCH: i64 = 10_000;
/// The least time between two rounds (see the loop in `run`): a bound on the replicator's cost
/// per second, whatever the commit rate, for at most this much added lag.
const MIN_ROUND_INTERVAL: Duration = Duration::from_millis(5);
/// How often an update the destination parks (its transaction group incomplete) is sent again,
/// and for how long before the stream retries later instead (see `deliver`).
const GROUP_RESEND: Duration = Duration::from_millis(10);
const GROUP_RESEND_FOR: Duration = Duration::from_secs(2);
/// How long a stream keeps its worker while other streams with work wait for one. Without a
/// bound, the streams of tables that are written without pause would hold every worker for as
/// long as the writes go on, and the other tables' replicas would fall behind for all that time.
const STREAM_SLICE: Duration = Duration::from_millis(250);
/// How soon to look at the log again when committed entries wait behind an older transaction
/// (half as long again each time they still wait, up to the poll interval).
const HORIZON_RECHECK_FIRST: Duration = Duration::from_millis(1);

/// Why a stream stopped before catching up.
#[derive(Debug)]
enum Failure {
    /// Retry later (peer or storage unavailable).
    Transient(String),
    /// Stop until an operator acts.
    Permanent(String),
    /// Begin again with a full backfill (the source's files for the pending state are gone, or the
    /// replica disappeared or was replaced), of a generation above the one given if any.
    Restart(String, Option<i64>),
    /// The destination is behind the stream's record (e.g. restored from a backup): resend from
    /// its version.
    Rewind(i64),
    /// The destination promoted its replica at a newer epoch: this region is no longer the
    /// table's primary (`catalog::promotion`).
    Superseded(String, PromotionNotice),
    /// Another instance holds the stream now.
    LeaseLost,
}

impl Failure {
    /// The same failure, its message prefixed with where it happened (e.g. the log entry).
    fn within(self, context: &str) -> Self {
        match self {
            Failure::Transient(m) => Failure::Transient(format!("{context}: {m}")),
            Failure::Permanent(m) => Failure::Permanent(format!("{context}: {m}")),
            Failure::Restart(m, above) => Failure::Restart(format!("{context}: {m}"), above),
            other => other,
        }
    }
}

/// The one place that decides what a storage error means for a stream: a file gone since its
/// change was logged (expired at the source before it was copied) calls for a backfill of the
/// source's state now; IO may pass; anything else (refused credentials, a location refused, a file
/// too large or not a file) needs an operator.
fn storage_failure(err: &StorageError, message: String) -> Failure {
    match err {
        StorageError::NotFound(_) => {
            Failure::Restart(format!("a source file is missing: {message}"), None)
        }
        StorageError::Io { .. } => Failure::Transient(message),
        _ => Failure::Permanent(message),
    }
}

impl From<CopyError> for Failure {
    fn from(err: CopyError) -> Self {
        match &err {
            CopyError::Storage(storage) => storage_failure(storage, err.to_string()),
            // A copy cut short: try again.
            CopyError::SizeMismatch { .. } => Failure::Transient(err.to_string()),
            // Files the source holds that floe cannot rewrite, or paths outside the table.
            CopyError::Avro { .. }
            | CopyError::DeleteFile { .. }
            | CopyError::Path(_)
            | CopyError::Unsupported(_) => Failure::Permanent(err.to_string()),
        }
    }
}

impl From<CatalogError> for Failure {
    fn from(err: CatalogError) -> Self {
        match &err {
            CatalogError::Storage(storage) => storage_failure(storage, err.to_string()),
            CatalogError::Unavailable(_) | CatalogError::Database(_) => {
                Failure::Transient(err.to_string())
            }
            _ => Failure::Permanent(err.to_string()),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        crate::db::note_failure(&err);
        Failure::Transient(format!("database: {err}"))
    }
}

/// How a stream's run ended without failure.
enum Done {
    /// Caught up with the log: release the lease.
    CaughtUp,
    /// The table's drop was replicated: the stream has nothing more to do.
    Finished,
    /// Worked for its slice while other streams waited for a worker: release the lease and come
    /// back in a later round, behind them.
    Yielded,
}

/// A running replicator; [`ReplicatorHandle::stop`] stops it and releases its leases.
pub struct ReplicatorHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ReplicatorHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub struct Replicator {
    catalog: Arc<Catalog>,
    /// The replicator's own connections (`db::background_pool`), apart from the requests' pool.
    pool: sqlx::PgPool,
    settings: ReplicationSettings,
    /// This instance's lease identity.
    owner: Uuid,
    client: PeerClient,
    /// The leases of the streams this instance is working on (heartbeats extend them), with
    /// each stream's table.
    running: Mutex<HashMap<Uuid, (Lease, Uuid)>>,
    destinations: DestinationStorages,
    /// Set while streams with work wait for a worker: a running stream then yields its worker
    /// after [`STREAM_SLICE`] (see `drive`).
    others_waiting: AtomicBool,
}

impl Replicator {
    pub fn spawn(catalog: Arc<Catalog>, settings: ReplicationSettings) -> ReplicatorHandle {
        let client = PeerClient::new(Duration::from_millis(settings.peer_timeout_ms));
        // A connection per stream at work, plus the lease and heartbeat queries.
        let pool = crate::db::background_pool(catalog.pool(), settings.workers as u32 + 2);
        let replicator = Arc::new(Self {
            catalog,
            pool,
            settings,
            owner: Uuid::new_v4(),
            client,
            running: Mutex::default(),
            destinations: DestinationStorages::default(),
            others_waiting: AtomicBool::new(false),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(replicator.run(stopped));
        ReplicatorHandle { stop, task }
    }

    fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, "replicator started");
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        // Heartbeats run on their own timer, so a slow reconcile or lease round cannot let the
        // leases of running streams expire.
        let heartbeats = tokio::spawn({
            let this = self.clone();
            let mut stop = stop.clone();
            async move {
                let every = Duration::from_secs_f64((this.settings.lease_seconds / 3.0).max(0.1));
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tick.tick() => this.heartbeat().await,
                    }
                }
            }
        });
        // The safety net reconciles every table with the rules on its own timer too: a pass over a
        // large catalog takes a while, and the rounds that serve commits must not wait for it.
        // Streams it creates are announced on the streams channel, which wakes the loop below.
        let safety_net = tokio::spawn({
            let this = self.clone();
            let mut stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(FULL_SCAN_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tick.tick() => {
                            let started = Instant::now();
                            this.reconcile(None).await;
                            tracing::debug!(ms = started.elapsed().as_millis() as u64,
                                "every table reconciled with the replication rules");
                        }
                    }
                }
            }
        });
        let mut listener: Option<PgListener> = None;
        let mut tasks: JoinSet<(Uuid, bool)> = JoinSet::new();
        let mut last_full_scan: Option<Instant> = None;
        let mut last_seq = log::max_seq(self.pool()).await.unwrap_or(0);
        let own_instance = self.catalog.log_wake().instance().to_string();
        // Set while committed log entries wait behind an older transaction (see `log`).
        let mut waiting_for_horizon: Option<Duration> = None;
        // Tables to look at in the next round: changed while their stream ran here (once that task
        // ends), or left over when the workers were all busy.
        let mut again: HashSet<Uuid> = HashSet::new();
        let mut after_task: HashSet<Uuid> = HashSet::new();
        // Set by a NOTIFY on the streams channel (streams created, an operator's action).
        let mut streams_changed = false;
        let mut last_round: Option<Instant> = None;
        loop {
            // Rounds are spaced: under a steady stream of commits every wake would otherwise be a
            // round of its own (and entries nearly always wait behind some running transaction),
            // two queries per commit that the commit path pays for in CPU. A round serves every
            // commit since the last one.
            if let Some(at) = last_round {
                let since = at.elapsed();
                if since < MIN_ROUND_INTERVAL {
                    tokio::time::sleep(MIN_ROUND_INTERVAL - since).await;
                }
            }
            last_round = Some(Instant::now());
            if listener.is_none() {
                listener = self.listen().await;
            }
            let mut changed = std::mem::take(&mut again);
            let mut structural = HashSet::new();
            match log::changes_since(self.pool(), last_seq, CHANGES_BATCH).await {
                Ok(changes) => {
                    // Committed entries wait behind an older transaction (usually one of a few
                    // milliseconds): look again soon, a little later each time it still runs.
                    waiting_for_horizon = match (changes.waiting, waiting_for_horizon) {
                        (false, _) => None,
                        (true, None) => Some(HORIZON_RECHECK_FIRST),
                        (true, Some(delay)) => Some((delay * 3 / 2).min(poll)),
                    };
                    for (seq, table, kind) in changes.entries {
                        last_seq = last_seq.max(seq);
                        if let Some(table) = table {
                            changed.insert(table);
                            if matches!(
                                kind.as_str(),
                                "create-table"
                                    | "register-table"
                                    | "observe-table"
                                    | "rename-table"
                                    | "create-view"
                                    | "register-view"
                                    | "rename-view"
                                    | "create-namespace"
                                    | "update-namespace-properties"
                            ) {
                                structural.insert(table);
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "reading the log's changes failed"),
            }
            let full_scan = last_full_scan.is_none_or(|at| at.elapsed() >= FULL_SCAN_EVERY);
            if full_scan {
                last_full_scan = Some(Instant::now());
            }
            let every_stream = full_scan || std::mem::take(&mut streams_changed);
            if !structural.is_empty() {
                let tables: Vec<Uuid> = structural.into_iter().collect();
                self.reconcile(Some(&tables)).await;
            }
            let candidates: Vec<Uuid> = changed.iter().copied().collect();
            let leased = self
                .lease_and_start(&mut tasks, (!every_stream).then_some(&candidates))
                .await;
            // What this round could not take: tables whose stream runs here are looked at once the
            // task ends; with every worker busy, the rest wait for the next round.
            let running: HashSet<Uuid> = self
                .running
                .lock()
                .expect("not poisoned")
                .values()
                .map(|(_, table)| *table)
                .collect();
            for table in changed.into_iter().filter(|t| !leased.contains(t)) {
                if running.contains(&table) {
                    after_task.insert(table);
                } else if tasks.len() >= self.settings.workers {
                    again.insert(table);
                }
            }
            self.others_waiting
                .store(!again.is_empty(), Ordering::Relaxed);
            tokio::select! {
                _ = stop.changed() => break,
                () = self.catalog.log_wake().next_commit() => {}
                woken = recv(&mut listener, &own_instance) => {
                    match woken {
                        None => listener = None,
                        Some(channel) => streams_changed |= channel == STREAMS_CHANNEL,
                    }
                    // Drain what else arrived: one round serves them all.
                    if let Some(l) = listener.as_mut() {
                        while let Some(n) = l.next_buffered() {
                            streams_changed |= n.channel() == STREAMS_CHANNEL;
                        }
                    }
                }
                _ = tokio::time::sleep(waiting_for_horizon.unwrap_or(poll)) => {}
                Some(ended) = tasks.join_next() => {
                    if let Ok((table, yielded)) = ended
                        && (after_task.remove(&table) | yielded)
                    {
                        again.insert(table);
                    }
                }
            }
        }
        tasks.shutdown().await;
        let _ = heartbeats.await;
        let _ = safety_net.await;
        let held: Vec<Lease> = self
            .running
            .lock()
            .expect("not poisoned")
            .drain()
            .map(|(_, (lease, _))| lease)
            .collect();
        for lease in held {
            let _ = db::update_stream(self.pool(), &lease, &StreamUpdate::Release).await;
        }
        // The listener holds one of the pool's connections: closing the pool waits for it.
        drop(listener);
        self.pool.close().await;
        tracing::info!(owner = %self.owner, "replicator stopped");
    }

    /// Makes the streams of `tables` (or of every table) match the rules.
    async fn reconcile(&self, tables: Option<&[Uuid]>) {
        match db::reconcile_streams(self.pool(), tables).await {
            Ok((created, removed)) if created + removed > 0 => {
                tracing::info!(created, removed, "replication streams reconciled");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "reconciling replication streams failed"),
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(self.pool()).await.ok()?;
        listener
            .listen_all([NOTIFY_CHANNEL, STREAMS_CHANNEL])
            .await
            .ok()?;
        Some(listener)
    }

    async fn heartbeat(&self) {
        let held: Vec<Lease> = self
            .running
            .lock()
            .expect("not poisoned")
            .values()
            .map(|(lease, _)| *lease)
            .collect();
        if held.is_empty() {
            return;
        }
        if let Err(err) = db::heartbeat(self.pool(), &held, self.settings.lease_seconds).await {
            tracing::warn!(%err, "replication lease heartbeat failed");
        }
    }

    /// Leases what has work (every due stream on a full scan, else the streams of `changed`
    /// tables and those with work of their own) and starts a task for each; returns the tables
    /// whose streams were leased.
    async fn lease_and_start(
        self: &Arc<Self>,
        tasks: &mut JoinSet<(Uuid, bool)>,
        changed: Option<&Vec<Uuid>>,
    ) -> HashSet<Uuid> {
        let free = self.settings.workers.saturating_sub(tasks.len());
        if free == 0 {
            return HashSet::new();
        }
        let leased = match db::lease_streams(
            self.pool(),
            self.owner,
            free as i64,
            self.settings.lease_seconds,
            changed.map(Vec::as_slice),
        )
        .await
        {
            Ok(leased) => leased,
            Err(err) => {
                tracing::warn!(%err, "leasing replication streams failed");
                return HashSet::new();
            }
        };
        let mut tables = HashSet::new();
        for stream in leased {
            let (lease, table) = (stream.lease, stream.table_id);
            tables.insert(table);
            self.running
                .lock()
                .expect("not poisoned")
                .insert(lease.id, (lease, table));
            let this = self.clone();
            tasks.spawn(async move {
                let attempts = stream.attempts;
                // A panic in one stream's task stops that attempt only: the lease is released
                // and the panic recorded as the failure, and the stream retries after a backoff.
                let ended = AssertUnwindSafe(this.run_stream(stream))
                    .catch_unwind()
                    .await;
                let yielded = matches!(ended, Ok(true));
                if let Err(panic) = ended {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_string());
                    tracing::error!(stream = %lease.id, %message, "replication task panicked");
                    let retry = StreamUpdate::Retry {
                        error: format!("the replication task panicked: {message}"),
                        delay_ms: this.backoff_ms(attempts),
                    };
                    if let Err(err) = db::update_stream(this.pool(), &lease, &retry).await {
                        tracing::warn!(%err, "could not record a replication panic");
                    }
                }
                this.running.lock().expect("not poisoned").remove(&lease.id);
                (table, yielded)
            });
        }
        tables
    }

    /// Drives one leased stream and records how it ended; true when it yielded with work left.
    async fn run_stream(&self, mut stream: StreamRow) -> bool {
        let id = stream.stream_id;
        let lease = stream.lease;
        let outcome = self.drive(&mut stream).await;
        let yielded = matches!(outcome, Ok(Done::Yielded));
        let update = match outcome {
            Ok(Done::CaughtUp | Done::Yielded) => StreamUpdate::Release,
            Ok(Done::Finished) => {
                if let Err(err) = db::delete_stream(self.pool(), &lease).await {
                    tracing::warn!(%err, stream = %id, "could not remove a finished stream");
                }
                return false;
            }
            Err(Failure::LeaseLost) => return false,
            Err(Failure::Superseded(message, notice)) => {
                match self.catalog.learn_promotion(stream.table_id, &notice).await {
                    // The table is now the new primary's replica: this stream goes (its peer is
                    // the table's origin now), and the new primary's stream brings it back.
                    Ok(true) => {
                        self.reconcile(Some(&[stream.table_id])).await;
                        return false;
                    }
                    Ok(false) => StreamUpdate::Failed(message),
                    Err(err) => StreamUpdate::Retry {
                        delay_ms: self.backoff_ms(stream.attempts),
                        error: format!("{message}; learning it failed: {err}"),
                    },
                }
            }
            Err(Failure::Transient(error)) => {
                tracing::warn!(stream = %id, peer = %stream.peer_region, %error,
                    attempts = stream.attempts + 1, "replication attempt failed; will retry");
                StreamUpdate::Retry {
                    delay_ms: self.backoff_ms(stream.attempts),
                    error,
                }
            }
            Err(Failure::Permanent(reason)) => {
                tracing::error!(stream = %id, peer = %stream.peer_region, %reason,
                    "replication stream stopped");
                StreamUpdate::Failed(reason)
            }
            Err(Failure::Restart(reason, _)) if stream.attempts + 1 >= MAX_RESTARTS => {
                let reason =
                    format!("{reason} (and {MAX_RESTARTS} new backfills in a row did not help)");
                tracing::error!(stream = %id, %reason, "replication stream stopped");
                StreamUpdate::Failed(reason)
            }
            Err(Failure::Restart(reason, above)) => {
                tracing::warn!(stream = %id, %reason, "replication stream restarts with a backfill");
                StreamUpdate::Restart {
                    delay_ms: self.backoff_ms(stream.attempts),
                    reason: format!("{reason}; a new backfill follows"),
                    above,
                }
            }
            Err(Failure::Rewind(version)) => StreamUpdate::Applied {
                version,
                metadata_location: None,
                dest_namespace: stream.dest_namespace.clone().unwrap_or_default(),
                dest_table: stream.dest_table.clone().unwrap_or_default(),
            },
        };
        let rewound = matches!(update, StreamUpdate::Applied { .. });
        if let Err(err) = db::update_stream(self.pool(), &lease, &update).await {
            tracing::warn!(%err, stream = %id, "could not record a replication outcome");
        }
        if rewound {
            let _ = db::update_stream(self.pool(), &lease, &StreamUpdate::Release).await;
        }
        yielded
    }

    /// Exponential backoff with jitter: base * 2^attempts, capped, times a random factor in
    /// [0.5, 1), so many streams failing together do not retry in lockstep.
    fn backoff_ms(&self, attempts: i32) -> i64 {
        let exp = 2u64.saturating_pow(attempts.clamp(0, 20) as u32);
        let delay = self
            .settings
            .retry_base_ms
            .saturating_mul(exp)
            .min(self.settings.retry_max_ms);
        let jitter: f64 = rand::rng().random_range(0.5..1.0);
        (delay as f64 * jitter) as i64
    }

    async fn drive(&self, s: &mut StreamRow) -> Result<Done, Failure> {
        self.catalog.faults().check_in_stream_task();
        let wh = self
            .catalog
            .warehouse_by_id(s.warehouse_id)
            .ok_or_else(|| {
                Failure::Permanent("the source warehouse is no longer configured".to_string())
            })?
            .clone();
        // Where clients must write what the stream replicates: here, or, for a replica, its own
        // origin (chains). Each kind's driver reads its object's mark.
        let origin = (
            self.catalog.region().to_string(),
            self.settings.public_url.clone(),
        );
        let mut target = Target::open(s, wh, &self.destinations, origin)
            .await
            .map_err(Failure::Permanent)?;
        match s.kind {
            ReplicatedObject::View => return self.drive_view(s, target).await,
            ReplicatedObject::Namespace => return self.drive_namespace(s, target).await,
            ReplicatedObject::Table => {}
        }
        if let Some((row, _)) = catalog_db::get_table_by_id(self.pool(), s.table_id).await? {
            target.epoch = row.epoch;
            if let Some(mark) = row.replica {
                target.origin = (mark.origin_region, mark.origin_url);
            }
        }
        let slice = Instant::now();
        loop {
            if s.applied_version == 0 && s.backfill_version.is_none() {
                let Some((row, levels)) =
                    catalog_db::get_table_by_id(self.pool(), s.table_id).await?
                else {
                    // Dropped before this generation began. A replica of an earlier generation
                    // (before a restart or resync) may still be at the destination: it learns
                    // of the drop.
                    return match self.find_drop(s).await? {
                        Some(drop) => self.deliver_drop(s, &target, drop).await,
                        None => Ok(Done::Finished),
                    };
                };
                let mut namespace = s.namespace_prefix.clone();
                namespace.extend(levels);
                let name = format!("{}-{}", row.name, row.table_uuid.simple());
                let dest_location = target
                    .dest_root
                    .join_all(&namespace)
                    .and_then(|dir| dir.join(&name))
                    .map_err(|e| Failure::Permanent(format!("replica location: {e}")))?;
                // Before the replica exists: a destination that refuses floe's credentials fails
                // the stream here, leaving nothing half-made there.
                let probe = dest_location
                    .join("metadata")
                    .and_then(|dir| dir.join(".floe-access-check"))
                    .map_err(|e| Failure::Permanent(format!("replica location: {e}")))?;
                target
                    .dest_storage
                    .size(&probe)
                    .await
                    .map_err(|e| Failure::from(CopyError::Storage(e)))?;
                let dest_location = dest_location.to_string();
                self.record(
                    s,
                    StreamUpdate::BackfillStarted {
                        version: row.version,
                        location: row.metadata_location.clone(),
                        dest_location: dest_location.clone(),
                        dest_namespace: namespace.clone(),
                        dest_table: row.name.clone(),
                    },
                )
                .await?;
                s.backfill_version = Some(row.version);
                s.backfill_location = Some(row.metadata_location);
                s.backfill_step = 0;
                s.dest_location = Some(dest_location);
                s.dest_namespace = Some(namespace);
                s.dest_table = Some(row.name);
            }
            if s.backfill_version.is_some() {
                if let Err(failure) = self.backfill(s, &target).await {
                    // The state being backfilled may be gone because the table was dropped (and
                    // purged) meanwhile: then the drop is what is left to send.
                    return match self.find_drop(s).await? {
                        Some(drop) if !matches!(failure, Failure::LeaseLost) => {
                            self.deliver_drop(s, &target, drop).await
                        }
                        _ => Err(failure),
                    };
                }
                continue;
            }
            let entries =
                log::read_table(self.pool(), s.table_id, s.applied_version, TAIL_BATCH).await?;
            if entries.is_empty() {
                return Ok(Done::CaughtUp);
            }
            for entry in entries {
                if slice.elapsed() >= STREAM_SLICE && self.others_waiting.load(Ordering::Relaxed) {
                    return Ok(Done::Yielded);
                }
                match self.apply_entry(s, &target, entry).await {
                    Ok(Some(done)) => return Ok(done),
                    Ok(None) => {}
                    // The files of the changes still to send are gone; if that is because the
                    // table was dropped (and purged) meanwhile, the drop is what is left to send.
                    Err(Failure::Restart(reason, above)) => {
                        return match self.find_drop(s).await? {
                            Some(drop) => self.deliver_drop(s, &target, drop).await,
                            None => Err(Failure::Restart(reason, above)),
                        };
                    }
                    Err(other) => return Err(other),
                }
            }
        }
    }

    /// The table's drop, if the log holds one past what the stream applied and the destination
    /// may hold a replica to drop (the stream has sent it something, in this generation or an
    /// earlier one).
    async fn find_drop(&self, s: &StreamRow) -> Result<Option<LogEntry>, Failure> {
        if s.dest_table.is_none() {
            return Ok(None);
        }
        Ok(log::find_table_drop(self.pool(), s.table_id, s.applied_version).await?)
    }

    /// Sends the table's drop (or the orphan mark, per the rule) straight from the replica's
    /// version, skipping changes whose files the drop's purge removed: the replica keeps its last
    /// state until then, and learns that its source is gone.
    async fn deliver_drop(
        &self,
        s: &mut StreamRow,
        target: &Target,
        drop: LogEntry,
    ) -> Result<Done, Failure> {
        let entry = TableEntry::try_from(&drop).map_err(|e| Failure::Permanent(e.to_string()))?;
        let TableChange::Drop { purge } = entry.change else {
            return Err(Failure::Permanent(format!(
                "log entry {} is not a drop",
                entry.seq
            )));
        };
        let action = if s.replicate_drops {
            ApplyAction::Drop { purge }
        } else {
            ApplyAction::Orphan
        };
        let from = Position::at(s.applied_version);
        self.send(
            s,
            target,
            Some(from),
            Position::at(entry.version),
            action,
            None,
        )
        .await?;
        self.record(
            s,
            StreamUpdate::Applied {
                version: entry.version,
                metadata_location: None,
                dest_namespace: s.dest_namespace.clone().unwrap_or_default(),
                dest_table: s.dest_table.clone().unwrap_or_default(),
            },
        )
        .await?;
        Ok(Done::Finished)
    }

    /// Sends the remaining backfill steps; the last lands the replica on the source version. A
    /// state whose files are missing or unusable stops the stream: another backfill of the same
    /// state cannot do better, and the replica keeps its last state meanwhile.
    async fn backfill(&self, s: &mut StreamRow, target: &Target) -> Result<(), Failure> {
        let version = s.backfill_version.expect("backfilling");
        self.backfill_steps(s, target)
            .await
            .map_err(|failure| match failure {
                Failure::Restart(reason, None) => Failure::Permanent(format!(
                    "version {version} of the source table cannot be replicated: {reason}. The \
                 replica keeps its last state; repair the source (e.g. remove the snapshot) and \
                 resume the stream"
                )),
                other => other.within(&format!("backfill of version {version}")),
            })
    }

    async fn backfill_steps(&self, s: &mut StreamRow, target: &Target) -> Result<(), Failure> {
        let version = s.backfill_version.expect("backfilling");
        let location = s.backfill_location.clone().unwrap_or_default();
        let metadata = self.catalog.load_metadata(&target.wh, &location).await?;
        let metadata = &metadata.parsed;
        let copier = self.copier(s, target, metadata.location())?;
        let steps = plan::backfill_steps(metadata);
        let last = steps.len() as i32;
        for (index, step) in steps.iter().enumerate().skip(s.backfill_step as usize) {
            let k = index as i32 + 1;
            let before = Position {
                version: version - 1,
                step: k - 1,
            };
            // The first step creates (from no replica), the last lands on the source version.
            let from = (k > 1).then_some(before);
            let to = if k == last {
                Position::at(version)
            } else {
                Position {
                    version: version - 1,
                    step: k,
                }
            };
            let (action, last_updated_ms) = match step {
                BackfillStep::Create => (
                    ApplyAction::Create {
                        metadata: plan::create_metadata(metadata, copier.map())?,
                    },
                    (k == last).then(|| metadata.last_updated_ms()),
                ),
                BackfillStep::Snapshots { snapshots, main_to } => (
                    ApplyAction::Update {
                        updates: plan::snapshot_updates(snapshots, *main_to, &copier).await?,
                    },
                    None,
                ),
                BackfillStep::Finish => (
                    ApplyAction::Update {
                        updates: plan::finish_updates(metadata, &copier).await?,
                    },
                    Some(metadata.last_updated_ms()),
                ),
            };
            copier.finish().await?;
            let response = self
                .send(s, target, from, to, action, last_updated_ms)
                .await?;
            if k == last {
                self.record(
                    s,
                    StreamUpdate::Applied {
                        version,
                        metadata_location: response,
                        dest_namespace: s.dest_namespace.clone().unwrap_or_default(),
                        dest_table: s.dest_table.clone().unwrap_or_default(),
                    },
                )
                .await?;
                s.applied_version = version;
                s.backfill_version = None;
                s.backfill_location = None;
                s.backfill_step = 0;
            } else {
                self.record(s, StreamUpdate::BackfillStep(k)).await?;
                s.backfill_step = k;
            }
        }
        Ok(())
    }

    /// Replicates one log entry; `Some` when the stream has nothing more to do after it. The entry
    /// is decoded once, first: one that does not say what its kind must stops the stream.
    async fn apply_entry(
        &self,
        s: &mut StreamRow,
        target: &Target,
        entry: LogEntry,
    ) -> Result<Option<Done>, Failure> {
        let committed_at = entry.committed_at;
        let group = self.group_at_destination(s, &entry).await?;
        let entry = TableEntry::try_from(&entry).map_err(|e| Failure::Permanent(e.to_string()))?;
        let context = format!("log entry {} (version {})", entry.seq, entry.version);
        let done = self
            .apply_table_entry(s, target, entry, group)
            .await
            .map_err(|failure| failure.within(&context))?;
        // From the change's commit here to its apply there (a backfill is not a change's lag).
        if let Ok(lag) = (chrono::Utc::now() - committed_at).to_std() {
            crate::telemetry::record_end_to_end(&s.peer_region, &s.dest_warehouse, lag);
        }
        Ok(done)
    }

    /// The transaction group a commit belongs to at this stream's destination, when other tables'
    /// commits of its transaction go there too (`catalog::replica_group` applies them together).
    async fn group_at_destination(
        &self,
        s: &StreamRow,
        entry: &LogEntry,
    ) -> Result<Option<ApplyGroup>, Failure> {
        if entry.group_size().is_none() || entry.kind != "commit-table" {
            return Ok(None);
        }
        let members = crate::db::replica_groups::members_for_destination(
            self.pool(),
            entry.txn_group,
            &s.peer_region,
            &s.dest_warehouse,
        )
        .await?;
        Ok((members > 1).then(|| ApplyGroup {
            id: entry.txn_group,
            members: u32::try_from(members).unwrap_or(u32::MAX),
        }))
    }

    async fn apply_table_entry(
        &self,
        s: &mut StreamRow,
        target: &Target,
        entry: TableEntry,
        group: Option<ApplyGroup>,
    ) -> Result<Option<Done>, Failure> {
        let version = entry.version;
        if version != s.applied_version + 1 {
            return Err(Failure::Permanent(format!(
                "the log of table {} has no version {} (found {version})",
                s.table_id,
                s.applied_version + 1
            )));
        }
        let with_prefix = |levels: &[String]| {
            let mut namespace = s.namespace_prefix.clone();
            namespace.extend(levels.iter().cloned());
            namespace
        };
        let names = (with_prefix(&entry.namespace), entry.name.clone());
        s.dest_namespace = Some(names.0.clone());
        s.dest_table = Some(names.1.clone());
        let mut after_names = names;
        let mut finished = false;
        let (action, last_updated_ms) = match entry.change {
            TableChange::Commit {
                updates,
                new_metadata_location,
            } => {
                let metadata = self
                    .catalog
                    .load_metadata(&target.wh, &new_metadata_location)
                    .await?;
                let copier = self.copier(s, target, metadata.parsed.location())?;
                let updates = plan::translate_all(updates, &copier, s.retention).await?;
                copier.finish().await?;
                (
                    ApplyAction::Update { updates },
                    Some(metadata.parsed.last_updated_ms()),
                )
            }
            TableChange::Rename { namespace, name } => {
                let namespace = with_prefix(&namespace);
                after_names = (namespace.clone(), name.clone());
                (ApplyAction::Rename { namespace, name }, None)
            }
            TableChange::Drop { purge } => {
                finished = true;
                if s.replicate_drops {
                    (ApplyAction::Drop { purge }, None)
                } else {
                    (ApplyAction::Orphan, None)
                }
            }
            TableChange::Orphan => (ApplyAction::Orphan, None),
            TableChange::Replaced { kind } => {
                return Err(Failure::Restart(
                    format!("version {version} replaced the table's metadata ({kind})"),
                    None,
                ));
            }
        };
        let mut request = self
            .request(
                s,
                target,
                Some(Position::at(version - 1)),
                Position::at(version),
                action,
                last_updated_ms,
            )
            .await?;
        request.group = group;
        let location = self.deliver(s, &request).await?;
        self.record(
            s,
            StreamUpdate::Applied {
                version,
                metadata_location: location,
                dest_namespace: after_names.0.clone(),
                dest_table: after_names.1.clone(),
            },
        )
        .await?;
        s.applied_version = version;
        s.dest_namespace = Some(after_names.0);
        s.dest_table = Some(after_names.1);
        Ok(finished.then_some(Done::Finished))
    }

    fn copier(
        &self,
        s: &StreamRow,
        target: &Target,
        source_location: &str,
    ) -> Result<Copier, Failure> {
        push::copier(
            s,
            target,
            source_location,
            self.settings.parallel_files,
            self.catalog.max_manifest_bytes(),
        )
        .map_err(|err| match err {
            NoCopier::NoLocation => {
                Failure::Restart("the stream has no replica location".to_string(), None)
            }
            NoCopier::Path(err) => Failure::from(err),
        })
    }

    /// Sends one change to the destination; returns the replica's metadata location.
    async fn send(
        &self,
        s: &StreamRow,
        target: &Target,
        from: Option<Position>,
        to: Position,
        action: ApplyAction,
        last_updated_ms: Option<i64>,
    ) -> Result<Option<String>, Failure> {
        let request = self
            .request(s, target, from, to, action, last_updated_ms)
            .await?;
        self.deliver(s, &request).await
    }

    /// The request that sends one change to the stream's destination.
    async fn request(
        &self,
        s: &StreamRow,
        target: &Target,
        from: Option<Position>,
        to: Position,
        action: ApplyAction,
        last_updated_ms: Option<i64>,
    ) -> Result<ApplyRequest, Failure> {
        // The peer may have been registered before `allowed_peer_hosts` narrowed.
        super::peer_url::check(
            &s.peer_base_url,
            self.settings.allowed_peer_hosts.as_deref(),
        )
        .map_err(|reason| Failure::Permanent(format!("peer `{}`: {reason}", s.peer_region)))?;
        // A promoted table's first change back to the region it was promoted from names the
        // table there that it supersedes.
        let supersedes = match &action {
            ApplyAction::Create { .. } => {
                crate::db::promotion::promoted_from(self.pool(), s.table_id)
                    .await?
                    .filter(|from| from.source_region == s.peer_region)
                    .map(|from| Superseded {
                        table_id: from.source_table_id,
                        at_version: from.at_version,
                    })
            }
            _ => None,
        };
        let change = push::Change {
            from,
            to,
            action,
            last_updated_ms,
        };
        Ok(push::request(
            self.catalog.region(),
            s,
            target,
            change,
            supersedes,
        ))
    }

    /// Sends a request to the stream's destination; returns the replica's metadata location. An
    /// update of a transaction group that the destination parks is sent again every
    /// [`GROUP_RESEND`] for up to [`GROUP_RESEND_FOR`] (the group's other tables' streams are
    /// usually running at the same time), then left to a retry that frees this worker.
    async fn deliver(
        &self,
        s: &StreamRow,
        request: &ApplyRequest,
    ) -> Result<Option<String>, Failure> {
        let from = request.from;
        let started = std::time::Instant::now();
        let answer = loop {
            let sent = std::time::Instant::now();
            let answer = self
                .client
                .apply(
                    &s.peer_region,
                    &s.peer_base_url,
                    s.peer_credential
                        .as_ref()
                        .map(crate::secret::Secret::expose),
                    request,
                )
                .await;
            // Each round trip, not the time a parked update waited for its group.
            crate::telemetry::record_apply(&s.peer_region, sent.elapsed());
            match answer {
                Ok(response) if response.parked => {
                    if started.elapsed() >= GROUP_RESEND_FOR {
                        return Err(Failure::Transient(format!(
                            "the destination holds this update until the other tables of its \
                             transaction group arrive (group {})",
                            request.group.map(|g| g.id.to_string()).unwrap_or_default()
                        )));
                    }
                    tokio::time::sleep(GROUP_RESEND).await;
                }
                answer => break answer,
            }
        };
        match answer {
            Ok(response) => Ok(response.metadata_location),
            Err(PeerError::Unavailable { message, .. }) => Err(Failure::Transient(message)),
            Err(PeerError::LeaseRevoked { message, .. }) => {
                tracing::info!(stream = %s.stream_id, %message, "lease revoked; stopping");
                Err(Failure::LeaseLost)
            }
            Err(PeerError::Superseded {
                message, promotion, ..
            }) => Err(Failure::Superseded(message, promotion)),
            Err(err @ PeerError::Refused { .. }) => Err(Failure::Permanent(err.to_string())),
            Err(PeerError::Position {
                position, message, ..
            }) => Err(match position {
                None => Failure::Restart(message, None),
                Some(at) if at.generation < s.generation => Failure::Restart(message, None),
                // The destination has a newer generation than this stream (the source's record
                // is older, e.g. restored): begin one above it.
                Some(at) if at.generation > s.generation => {
                    Failure::Restart(message, Some(at.generation))
                }
                Some(at)
                    if at.generation == s.generation
                        && at.position.step == 0
                        && from.is_some_and(|f| at.position < f)
                        && s.backfill_version.is_none() =>
                {
                    Failure::Rewind(at.position.version)
                }
                Some(_) => Failure::Permanent(format!("the replica diverged: {message}")),
            }),
        }
    }

    async fn record(&self, s: &StreamRow, update: StreamUpdate) -> Result<(), Failure> {
        if db::update_stream(self.pool(), &s.lease, &update).await? {
            Ok(())
        } else {
            Err(Failure::LeaseLost)
        }
    }
}

/// Waits for a notification and returns its channel; None when the listener is gone (with no
/// listener, never returns). This instance's own log notifications are passed over: its commits
/// wake it in process (`log::wake`).
async fn recv(listener: &mut Option<PgListener>, own: &str) -> Option<String> {
    let Some(l) = listener else {
        return std::future::pending().await;
    };
    loop {
        let notification = l.try_recv().await.ok().flatten()?;
        if notification.channel() != NOTIFY_CHANNEL || notification.payload() != own {
            return Some(notification.channel().to_string());
        }
    }
}
