//! The purge worker: runs the purges drops record (`purge_job`, written in the drop's transaction).
//!
//! One worker per instance leases due jobs with `FOR UPDATE SKIP LOCKED`, extends the lease while a
//! purge runs, and deletes the job only when the purge has finished; a failed purge is retried
//! with backoff. A crash mid-purge leaves the job and its lease expires, so the purge resumes
//! (in this instance after a restart, or in another one). Purges delete a table's metadata files
//! last (`purge::purge_table`), so a resumed purge reads the same metadata and finds every file
//! again; a job whose metadata file is already gone finished before.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::db::jobs::{self, PurgeJob};
use crate::error::{CatalogError, CatalogResult};
use crate::storage::StorageError;

use super::Catalog;

/// Retries of a failing purge wait this long, doubling, up to ten minutes.
const RETRY_BASE_MS: u64 = 1_000;
const RETRY_MAX_MS: u64 = 600_000;

/// A running purge worker; [`PurgeWorker::stop`] stops it.
pub struct PurgeWorker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PurgeWorker {
    /// Starts the worker: it wakes when a drop records a purge, and every `poll` otherwise; a
    /// dead instance's purge is resumed once its lease (`lease_seconds`) has expired.
    pub fn spawn(catalog: Arc<Catalog>, poll: Duration, lease_seconds: f64) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(catalog, poll, lease_seconds, stopped));
        Self { stop, task }
    }

    /// Stops the worker; a purge it was running is released to resume later.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Catalog {
    /// Tells the purge worker a purge was recorded.
    pub(crate) fn wake_purges(&self) {
        self.purge_wakeup.notify_one();
    }

    /// Deletes a dropped table's files (see `purge::purge_table`).
    async fn purge(&self, job: &PurgeJob) -> CatalogResult<()> {
        let wh = self.warehouse_by_id(job.warehouse_id).ok_or_else(|| {
            CatalogError::Unavailable(format!(
                "the warehouse of {} is no longer configured",
                job.table_name
            ))
        })?;
        let metadata = match self
            .metadata
            .load(&*wh.storage, &job.metadata_location)
            .await
        {
            Ok(metadata) => metadata,
            Err(CatalogError::Storage(StorageError::NotFound(_))) => {
                tracing::info!(table = %job.table_name, "purge finished before (its metadata is gone)");
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let exclusive =
            super::purge::location_is_exclusive(&self.pool, &wh.root, &metadata.parsed).await?;
        let report = super::purge::purge_table(
            &*wh.storage,
            self.max_manifest_bytes,
            &metadata.parsed,
            &job.metadata_location,
            exclusive,
        )
        .await?;
        if !report.unreadable.is_empty() {
            tracing::warn!(table = %job.table_name, unreadable = ?report.unreadable,
                "purge could not read some manifests; their files remain");
        }
        if !report.refused.is_empty() {
            tracing::warn!(table = %job.table_name, refused = ?report.refused,
                "purge left files the storage refused to delete");
        }
        tracing::info!(table = %job.table_name, deleted = report.deleted, listed = report.listed,
            unreferenced = report.unreferenced, outside_root = report.outside_root,
            data_files_kept = report.data_files_kept, "purged dropped table");
        Ok(())
    }
}

async fn run(
    catalog: Arc<Catalog>,
    poll: Duration,
    lease_seconds: f64,
    mut stop: watch::Receiver<bool>,
) {
    let owner = Uuid::new_v4();
    let pool = catalog.pool().clone();
    loop {
        let jobs = match jobs::lease_purge_jobs(&pool, owner, 1, lease_seconds).await {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::warn!(%err, "leasing purge jobs failed");
                Vec::new()
            }
        };
        let idle = jobs.is_empty();
        for job in jobs {
            let extend = async {
                loop {
                    tokio::time::sleep(Duration::from_secs_f64(lease_seconds / 3.0)).await;
                    if !matches!(
                        jobs::extend_purge_lease(&pool, &job.lease, lease_seconds).await,
                        Ok(true)
                    ) {
                        return;
                    }
                }
            };
            let outcome = tokio::select! {
                outcome = catalog.purge(&job) => Some(outcome),
                () = extend => None,
                _ = stop.changed() => {
                    let _ = jobs::retry_purge_job(&pool, &job.lease, 0, "stopped; resumes").await;
                    return;
                }
            };
            let recorded = match outcome {
                Some(Ok(())) => jobs::finish_purge_job(&pool, &job.lease).await,
                Some(Err(err)) => {
                    tracing::warn!(table = %job.table_name, %err, "purge failed; will retry");
                    jobs::retry_purge_job(
                        &pool,
                        &job.lease,
                        backoff_ms(job.attempts),
                        &err.to_string(),
                    )
                    .await
                }
                None => {
                    tracing::warn!(table = %job.table_name, "lost the purge's lease; another instance resumes it");
                    Ok(())
                }
            };
            if let Err(err) = recorded {
                tracing::warn!(%err, "could not record a purge's outcome");
            }
        }
        if idle {
            tokio::select! {
                _ = stop.changed() => return,
                () = catalog.purge_wakeup.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Exponential backoff with jitter.
fn backoff_ms(attempts: i32) -> i64 {
    let delay = RETRY_BASE_MS
        .saturating_mul(2u64.saturating_pow(attempts.clamp(0, 20) as u32))
        .min(RETRY_MAX_MS);
    (delay as f64 * rand::rng().random_range(0.5..1.0)) as i64
}
