//! The PostgreSQL connection pool and migrations. SQL for each concern lives beside it:
//! [`catalog`] for warehouses, namespaces and tables; [`replication`] for peers, rules and streams;
//! [`audit`] for the audit trail; [`jobs`] for durable deferred work (purges);
//! `crate::log` for the update log; [`table_commit`] for the one statement of a commit.

pub mod audit;
pub mod catalog;
pub mod jobs;
pub mod replication;
pub mod table_commit;

use std::time::Duration;

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

/// Opens a pool. Connections are made lazily, so floe starts even while PostgreSQL is down and
/// answers 503 until it returns; broken connections are replaced (see [`test_if_idle`]).
pub fn connect_lazy(url: &str, settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url.parse().map_err(DbError::Url)?;
    let options = options
        .options([(
            "statement_timeout",
            settings.statement_timeout_ms.to_string(),
        )])
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

/// Tests a connection on acquire only if it sat idle: sqlx already tests every connection when it
/// is released, so one in steady use was live a moment ago, and testing it again would add a
/// round trip to every request (a commit's two statements would be three). A connection that
/// broke since (PostgreSQL restarted) fails its statement, answered 503, and is closed on release.
fn test_if_idle(
    conn: &mut sqlx::PgConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, sqlx::Result<bool>> {
    Box::pin(async move {
        if meta.idle_for > TEST_AFTER_IDLE {
            sqlx::Connection::ping(conn).await?;
        }
        Ok(true)
    })
}

/// Applies pending migrations. sqlx's migrator holds a PostgreSQL advisory lock while it runs, so
/// several floe instances starting at once apply each migration exactly once.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
