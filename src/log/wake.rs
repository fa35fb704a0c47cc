//! Wake-ups for the log's readers, with no NOTIFY inside any commit's transaction.
//!
//! A NOTIFY in a transaction takes PostgreSQL's one notification lock at COMMIT and holds it
//! through the commit's WAL flush, so commits to unrelated tables would queue on it. Instead,
//! after a change that appended to the log has committed, [`LogWake::committed`]:
//! - wakes this process's readers (the replicator) at once, in process;
//! - asks the [`LogNotifier`] task to NOTIFY [`NOTIFY_CHANNEL`] for other instances, on its own
//!   connection after the fact. A NOTIFY is a transaction of its own (PostgreSQL gives it a
//!   transaction id and flushes its commit), so the task sends at most one per
//!   [`NOTIFY_INTERVAL`]: every commit meanwhile is folded into the next one. Under load that is
//!   a hundred small transactions a second whatever the commit rate, where one per commit (as
//!   measured: 4,360 NOTIFYs for 6,218 commits) cost PostgreSQL a transaction for nearly every
//!   commit. Another instance learns of a commit at most that much later.
//!
//! A wake-up says only "look at the log": readers find what changed there, so one lost or folded
//! NOTIFY loses nothing but a little time, and readers poll on a timer as well. The payload is the
//! sending instance's id, so that an instance can ignore its own.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::NOTIFY_CHANNEL;

/// The shortest time between two NOTIFYs of one instance (see the module docs).
pub const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

/// Where committers announce log appends, and where readers in this process wait for them.
#[derive(Debug)]
pub struct LogWake {
    instance: Uuid,
    local: Notify,
    remote: Notify,
    /// How many appends this process has committed: every long-polling reader of the log
    /// (`http::management::log`) watches it.
    commits: watch::Sender<u64>,
}

impl Default for LogWake {
    fn default() -> Self {
        Self {
            instance: Uuid::now_v7(),
            local: Notify::new(),
            remote: Notify::new(),
            commits: watch::Sender::new(0),
        }
    }
}

impl LogWake {
    /// This process's id in the NOTIFY payload.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Called after a transaction that appended to the log has committed (never before: a
    /// reader woken early could look before the entries exist and then sleep past them).
    pub fn committed(&self) {
        self.local.notify_one();
        self.remote.notify_one();
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A watch of this process's commits, for any number of readers (each sees every change of
    /// the count after it subscribed; commits of other instances are not in it).
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Resolves at the next [`LogWake::committed`] (or at once, if one came since the last
    /// wait). For the one reader in this process.
    pub async fn next_commit(&self) {
        self.local.notified().await;
    }
}

/// The task that sends the NOTIFYs of [`LogWake`] for other instances.
pub struct LogNotifier {
    task: JoinHandle<()>,
}

impl LogNotifier {
    pub fn spawn(wake: Arc<LogWake>, pool: PgPool) -> Self {
        let task = tokio::spawn(async move {
            let payload = wake.instance.to_string();
            loop {
                wake.remote.notified().await;
                if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(NOTIFY_CHANNEL)
                    .bind(&payload)
                    .execute(&pool)
                    .await
                {
                    // Other instances still find the change at their next poll.
                    tracing::debug!(%err, "could not notify other instances of a log append");
                }
                // Commits meanwhile leave their wake-up stored in `remote`: the next NOTIFY
                // carries them all.
                tokio::time::sleep(NOTIFY_INTERVAL).await;
            }
        });
        Self { task }
    }

    /// Stops the task (after the last commit that could announce anything).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
