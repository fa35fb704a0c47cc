//! The PostgreSQL connection pool and migrations. SQL for each concern lives beside it:
//! [`catalog`] for warehouses, namespaces and tables; [`replication`] for peers, rules and streams;
//! [`audit`] for the audit trail; [`jobs`] for durable deferred work (purges);
//! [`views`] for view pointers; [`replica_namespaces`] for namespaces that replicate; `crate::log` for the update log; [`table_commit`] for the one
//! statement of a commit.

pub mod audit;
pub mod catalog;
pub mod idempotency;
pub mod jobs;
pub mod promotion;
pub mod replica_groups;
pub mod replica_namespaces;
pub mod replication;
pub mod sync_streams;
pub mod table_commit;
pub mod upstream;
pub mod views;

/// A `FROM` item that makes the statement's own transaction commit without waiting for the WAL
/// flush (`set_config(..., true)` holds until that commit): for a record whose loss in a crash of
/// PostgreSQL costs nothing that is acknowledged, written in one round trip rather than four
/// (BEGIN, SET LOCAL synchronous_commit, the statement, COMMIT).
pub const ASYNCHRONOUS_COMMIT: &str =
    "(SELECT set_config('synchronous_commit', 'off', true)) asynchronous_commit";

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::config::DatabaseSettings;

/// The SQL migrations in migrations/, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "invalid database URL (the URL itself is not shown because it may hold a password): {0}"
    )]
    Url(sqlx::Error),
    #[error("connecting to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// PostgreSQL probes a connection idle for 30 s every 10 s and drops it after 3 probes go
/// unanswered: a session whose floe host vanished without closing its socket (a power loss, a
/// partition) ends within about a minute instead of the kernel's two hours, and with it whatever
/// it held, such as the change locks an intercepted commit holds across its forward
/// (`upstream::commit`). (Over TCP only; a Unix socket cannot outlive its host.)
const DEAD_PEER_KEEPALIVES: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
];

/// Opens a pool. Connections are made lazily, so floe starts even while PostgreSQL is down and
/// answers 503 until it returns; broken connections are replaced (see [`test_if_idle`]).
pub fn connect_lazy(url: &str, settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url.parse().map_err(DbError::Url)?;
    let options = options
        .options([(
            "statement_timeout",
            settings.statement_timeout_ms.to_string(),
        )])
        .options(DEAD_PEER_KEEPALIVES)
        .application_name("floe")
        .disable_statement_logging();
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(test_if_idle)
        .connect_lazy_with(options))
}

/// A second, small pool on the same database, for background work (the replicator): it cannot
/// take the connections client requests wait for, so replication never slows commits down.
pub fn background_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections.max(2))
        .acquire_timeout(Duration::from_secs(30))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(test_if_idle)
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// A connection idle for longer than this is tested (a round trip) before it is handed out.
const TEST_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Tests a connection on acquire only if it may have broken unseen: it sat idle for more than
/// [`TEST_AFTER_IDLE`], or it was last released before this process last saw PostgreSQL drop a
/// connection ([`note_failure`]). sqlx already tests every connection when it is released, so one
/// in steady use was live a moment ago, and testing it again would add a round trip to every
/// request (a commit's two statements would be three). When PostgreSQL restarts, every pooled
/// connection dies at once but only the ones in use notice; without the second rule the idle ones
/// would each fail one request with 503 after PostgreSQL is back.
fn test_if_idle(
    conn: &mut sqlx::PgConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, sqlx::Result<bool>> {
    Box::pin(async move {
        if meta.idle_for > TEST_AFTER_IDLE || connection_loss_since(meta.idle_for) {
            sqlx::Connection::ping(conn).await?;
        }
        Ok(true)
    })
}

/// When this process last saw a connection to PostgreSQL lost, in milliseconds since
/// [`process_clock`]'s origin, plus one (0: never).
static LAST_CONNECTION_LOSS: AtomicU64 = AtomicU64::new(0);

fn process_clock() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// Records that PostgreSQL dropped a connection, if `err` says so, so that connections idle
/// since then are tested before their next use. Called wherever a database error is classified.
pub fn note_failure(err: &sqlx::Error) {
    if crate::error::is_lost_connection(err) {
        let now = process_clock().as_millis() as u64 + 1;
        LAST_CONNECTION_LOSS.fetch_max(now, Ordering::Relaxed);
    }
}

/// Whether a connection loss was seen since a connection idle for `idle_for` was released.
fn connection_loss_since(idle_for: Duration) -> bool {
    let lost = LAST_CONNECTION_LOSS.load(Ordering::Relaxed);
    if lost == 0 {
        return false;
    }
    let released = process_clock().saturating_sub(idle_for).as_millis() as u64 + 1;
    lost >= released
}

/// Applies pending migrations. sqlx's migrator holds a PostgreSQL advisory lock while it runs, so
/// several floe instances starting at once apply each migration exactly once.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The migrations this binary embeds that the database has not applied (empty: up to date).
/// An error means the database cannot be asked.
pub async fn missing_migrations(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .or_else(|err| match &err {
                // No migration table: none applied.
                sqlx::Error::Database(e) if e.code().as_deref() == Some("42P01") => Ok(Vec::new()),
                _ => Err(err),
            })?;
    Ok(MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|version| !applied.contains(version))
        .collect())
}
