//! The prepare phase at one destination (see `replication::sync`): the change's files copied
//! under the replica's location, then the question whether the change would apply; asked again
//! while the destination is unreachable or behind (what it lacks sent first), until the rule's
//! timeout.

use std::time::Duration;

use iceberg::TableUpdate;
use tokio::time::Instant;
use uuid::Uuid;

use super::{RECHECK_FIRST, RECHECK_MAX, Shared};
use crate::catalog::Warehouse;
use crate::catalog::sync_commit::SyncChange;
use crate::contract::peer_protocol::{ApplyAction, ApplyRequest, Position, PromotionNotice};
use crate::db::replication::StreamRow;
use crate::db::sync_streams::{self as db, SyncDestination, SyncStream};
use crate::error::CatalogError;
use crate::log::{self, TableChange, TableEntry};
use crate::replication::copy::CopyError;
use crate::replication::peer_client::PeerError;
use crate::replication::push::{self, NoCopier, Target};
use crate::storage::StorageError;

/// How often a lagging stream is made due again while a commit waits for it (its lease may have
/// been another instance's, which must expire first).
const NUDGE_EVERY: Duration = Duration::from_millis(500);
/// Log entries a catch-up reads at a time.
const CATCH_UP_BATCH: i64 = 64;

/// One destination's answer to one table's change, in the prepare phase.
enum Step {
    /// It would apply the change: this request.
    Yes(Box<ApplyRequest>),
    /// It will not, whatever the wait (refused, paused, diverged...).
    No(String),
    /// Not now (unreachable, no answer yet): ask again while the timeout lasts.
    Wait(String),
    /// It promoted its replica: this region is the table's primary no more.
    Superseded(String, PromotionNotice),
    /// Its replica lacks changes before this one: at `at`, a version of the stream's generation,
    /// when the destination said so (they are sent, then it is asked again); otherwise its stream
    /// must bring it (a backfill, a rebuild).
    Behind { reason: String, at: Option<i64> },
}

/// A table's replica at one destination, as a change is sent to it: its stream and target.
struct Replica {
    stream: StreamRow,
    target: Target,
}

impl Shared {
    /// Asks one destination about one change until it answers yes or no, or the deadline passes;
    /// a destination behind is sent what it lacks first.
    pub(super) async fn ask(
        &self,
        wh: &Warehouse,
        change: &SyncChange,
        mut destination: SyncDestination,
        deadline: Instant,
    ) -> (SyncDestination, Result<ApplyRequest, String>) {
        let mut pause = RECHECK_FIRST;
        let mut nudged: Option<Instant> = None;
        let answer = loop {
            let step = match &destination.stream {
                Some(stream) => self.ask_once(wh, change, stream, deadline).await,
                None => Step::No("the rule's stream to it is not made".to_string()),
            };
            let reason = match step {
                Step::Yes(request) => break Ok(*request),
                Step::No(reason) => break Err(reason),
                Step::Superseded(reason, notice) => {
                    self.learn_promotion(change.table_id, notice);
                    break Err(reason);
                }
                Step::Wait(reason) => reason,
                Step::Behind { reason, at } => {
                    let stream = destination.stream.as_ref().expect("asked through it");
                    if let Some(at) = at {
                        match self.catch_up(wh, change, stream, at, deadline).await {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(err) => tracing::info!(%err, peer = %destination.peer_region,
                                "a synchronous commit could not catch its destination up; its \
                                 stream will"),
                        }
                    }
                    if nudged.is_none_or(|at| at.elapsed() >= NUDGE_EVERY) {
                        nudged = Some(Instant::now());
                        if let Err(err) = db::nudge(&self.pool, stream.row.stream_id).await {
                            tracing::warn!(%err, "could not make a lagging stream due");
                        }
                    }
                    reason
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(format!("{reason}, until the rule's timeout"));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(RECHECK_MAX);
            match db::reread(&self.pool, &destination).await {
                Ok(stream) => destination.stream = stream,
                Err(err) => break Err(format!("reading its stream: {err}")),
            }
        };
        let outcome = match &answer {
            Ok(_) => "ack",
            Err(_) if Instant::now() >= deadline => "timeout",
            Err(_) => "refused",
        };
        crate::telemetry::record_sync_answer(&destination.peer_region, "prepare", outcome);
        if let (Err(reason), Some(stream)) = (&answer, &destination.stream) {
            self.record_missed(&stream.row, reason).await;
        }
        (destination, answer)
    }

    /// A destination promoted the table's replica: the table becomes the new primary's replica
    /// here, as when its stream is told (`replication::worker`), so that its next writers are
    /// refused naming the new primary. Learnt apart from the commit that was told, which may hold
    /// the table's change lock that learning takes.
    fn learn_promotion(&self, table_id: Uuid, notice: PromotionNotice) {
        let Some(catalog) = self.catalog.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let learnt = async {
                if catalog.learn_promotion(table_id, &notice).await? {
                    // Its stream to the new primary goes; the new primary's stream brings it.
                    crate::db::replication::reconcile_streams(catalog.pool(), Some(&[table_id]))
                        .await?;
                }
                Ok::<_, CatalogError>(())
            };
            if let Err(err) = learnt.await {
                tracing::warn!(%err, %table_id, primary = %notice.region,
                    "a synchronous commit learnt that its table was promoted elsewhere, but \
                     could not record it");
            }
        });
    }

    /// The replica at `stream`'s destination, if the stream can carry a change now.
    async fn replica(
        &self,
        wh: &Warehouse,
        stream: &SyncStream,
        epoch: i64,
    ) -> Result<Replica, Step> {
        if let Some(reason) = &stream.failed_reason {
            return Err(Step::No(format!(
                "its stream has failed ({reason}); resume it once mended"
            )));
        }
        if stream.paused {
            return Err(Step::No("its stream is paused".to_string()));
        }
        let s = stream.row.clone();
        if s.dest_location.is_none() || s.backfill_version.is_some() {
            return Err(Step::Behind {
                reason: "its replica is being made (backfill)".to_string(),
                at: None,
            });
        }
        crate::replication::peer_url::check(&s.peer_base_url, self.allowed_peer_hosts.as_deref())
            .map_err(Step::No)?;
        let origin = (self.region.clone(), self.public_url.clone());
        let mut target = Target::open(&s, wh.clone(), &self.destinations, origin)
            .await
            .map_err(Step::No)?;
        target.epoch = epoch;
        Ok(Replica { stream: s, target })
    }

    /// Copies the change's files to one destination and asks it whether the change would apply.
    async fn ask_once(
        &self,
        wh: &Warehouse,
        change: &SyncChange,
        stream: &SyncStream,
        deadline: Instant,
    ) -> Step {
        let replica = match self.replica(wh, stream, change.epoch).await {
            Ok(replica) => replica,
            Err(step) => return step,
        };
        let metadata = &change.metadata.parsed;
        let request = self
            .update_request(
                replica,
                (change.table.namespace.levels(), &change.table.name),
                change.version,
                change.changes.clone(),
                (metadata.location(), metadata.last_updated_ms()),
                deadline,
            )
            .await;
        let request = match request {
            Ok(request) => request,
            Err(step) => return step,
        };
        let s = &stream.row;
        let credential = s
            .peer_credential
            .as_ref()
            .map(crate::secret::Secret::expose);
        let asked = self
            .client
            .prepare(&s.peer_region, &s.peer_base_url, credential, &request);
        match tokio::time::timeout_at(deadline, asked).await {
            Err(_) => Step::Wait("no answer".to_string()),
            Ok(Ok(_)) => Step::Yes(Box::new(request)),
            Ok(Err(err)) => prepare_refused(err, &request),
        }
    }

    /// The update that brings `replica` from `version - 1` to `version`, its files copied first
    /// (under the replica's location, as the stream copies them): `updates` are the source's
    /// canonical changes to the table at `table_location`, named `names` at the source then.
    async fn update_request(
        &self,
        mut replica: Replica,
        names: (&[String], &str),
        version: i64,
        updates: Vec<TableUpdate>,
        (table_location, last_updated_ms): (&str, i64),
        deadline: Instant,
    ) -> Result<ApplyRequest, Step> {
        let s = &mut replica.stream;
        let mut namespace = s.namespace_prefix.clone();
        namespace.extend(names.0.iter().cloned());
        s.dest_namespace = Some(namespace);
        s.dest_table = Some(names.1.to_string());
        let copier = push::copier(
            s,
            &replica.target,
            table_location,
            self.parallel_files,
            self.max_manifest_bytes,
        )
        .map_err(|err| match err {
            NoCopier::NoLocation => Step::Behind {
                reason: "its replica is being made (backfill)".to_string(),
                at: None,
            },
            NoCopier::Path(err) => Step::No(err.to_string()),
        })?;
        let copied = tokio::time::timeout_at(deadline, async {
            let updates =
                crate::replication::plan::translate_all(updates, &copier, s.retention).await?;
            copier.finish().await?;
            Ok::<_, CopyError>(updates)
        })
        .await;
        let updates = match copied {
            Ok(Ok(updates)) => updates,
            Ok(Err(err)) => return Err(copy_failed(err)),
            Err(_) => return Err(Step::Wait("its files were still being copied".to_string())),
        };
        Ok(push::request(
            &self.region,
            s,
            &replica.target,
            push::Change {
                from: Some(Position::at(version - 1)),
                to: Position::at(version),
                action: ApplyAction::Update { updates },
                last_updated_ms: Some(last_updated_ms),
            },
            None,
        ))
    }

    /// Sends the destination the table's committed changes it lacks, from version `at + 1` to
    /// the one before `change`'s: those a crash or an unconfirmed commit left to the stream,
    /// whose lease may be held by an instance that died and will not expire for a while. Stops
    /// at a change that is not a commit (a rename, a drop), which the stream brings. Returns
    /// whether it sent any.
    async fn catch_up(
        &self,
        wh: &Warehouse,
        change: &SyncChange,
        stream: &SyncStream,
        at: i64,
        deadline: Instant,
    ) -> Result<bool, String> {
        let entries = log::read_table(&self.pool, change.table_id, at, CATCH_UP_BATCH)
            .await
            .map_err(|e| format!("reading the log: {e}"))?;
        let mut sent = false;
        for entry in entries {
            if entry.table_version.is_none_or(|v| v >= change.version) {
                break;
            }
            let group = entry.group_size().map(|_| entry.txn_group);
            let logged = TableEntry::try_from(&entry).map_err(|e| e.to_string())?;
            let TableChange::Commit {
                updates,
                new_metadata_location,
            } = logged.change
            else {
                break;
            };
            let catalog = self.catalog.upgrade().ok_or("floe is stopping")?;
            let metadata = catalog
                .load_metadata(wh, &new_metadata_location)
                .await
                .map_err(|e| e.to_string())?;
            let replica = self
                .replica(wh, stream, change.epoch)
                .await
                .map_err(step_reason)?;
            let mut request = self
                .update_request(
                    replica,
                    (&logged.namespace, &logged.name),
                    logged.version,
                    updates,
                    (
                        metadata.parsed.location(),
                        metadata.parsed.last_updated_ms(),
                    ),
                    deadline,
                )
                .await
                .map_err(step_reason)?;
            let destination = (&stream.row.peer_region, &stream.row.dest_warehouse);
            let location = self
                .deliver(&stream.row, destination, &mut request, group, deadline)
                .await?;
            self.record_applied(&stream.row, &request, location.as_deref(), false)
                .await;
            sent = true;
        }
        Ok(sent)
    }
}

/// What a step that is not a yes says, for a catch-up that stops at it.
fn step_reason(step: Step) -> String {
    match step {
        Step::Yes(_) => "ready".to_string(),
        Step::No(reason)
        | Step::Wait(reason)
        | Step::Superseded(reason, _)
        | Step::Behind { reason, .. } => reason,
    }
}

/// What a failed copy of the change's files means for the prepare: storage that may come back is
/// waited for; anything else (a file gone or unreadable, a path refused) is a no.
fn copy_failed(err: CopyError) -> Step {
    match &err {
        CopyError::Storage(StorageError::Io { .. }) | CopyError::SizeMismatch { .. } => {
            Step::Wait(format!("copying its files: {err}"))
        }
        _ => Step::No(format!("copying its files: {err}")),
    }
}

/// What a destination's refusal of the question means (see [`Step`]).
fn prepare_refused(err: PeerError, request: &ApplyRequest) -> Step {
    match err {
        PeerError::Unavailable { message, .. } => Step::Wait(message),
        PeerError::LeaseRevoked { .. } => Step::Wait("its stream's lease moved on".to_string()),
        PeerError::Position {
            position: Some(at),
            message,
            ..
        } if at.generation == request.generation && at.position >= request.to => Step::No(format!(
            "the replica is ahead of this commit, at {}: {message}",
            at.position
        )),
        // Behind in the stream's generation, at a version: what it lacks can be sent.
        PeerError::Position {
            position: Some(at),
            message,
            ..
        } if at.generation == request.generation && at.position.step == 0 => Step::Behind {
            reason: message,
            at: Some(at.position.version),
        },
        // Being rebuilt, or of another generation: its stream brings it here.
        PeerError::Position { message, .. } => Step::Behind {
            reason: message,
            at: None,
        },
        PeerError::Superseded {
            message, promotion, ..
        } => Step::Superseded(message, promotion),
        err @ PeerError::Refused { .. } => Step::No(err.to_string()),
    }
}
