//! Starting and stopping a floe server: migrations, the catalog, the HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::purge_jobs::PurgeWorker;
use crate::catalog::{Catalog, Faults};
use crate::config::Settings;
use crate::db;
use crate::http::{self, AppState};
use crate::log::wake::LogNotifier;
use crate::replication::sync::SyncReplicator;
use crate::replication::{Replicator, ReplicatorHandle};
use crate::upstream::observer::UpstreamObserver;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Settings(#[from] crate::config::SettingsError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("starting the catalog: {0}")]
    Catalog(#[from] crate::error::CatalogError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server; dropping it does not stop it, [`RunningServer::stop`] does.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub catalog: Arc<Catalog>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    replicator: Option<ReplicatorHandle>,
    purges: PurgeWorker,
    observer: UpstreamObserver,
    notifier: LogNotifier,
}

impl RunningServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, and closes the database pool.
    pub async fn stop(self) {
        if let Some(replicator) = self.replicator {
            replicator.stop().await;
        }
        self.purges.stop().await;
        self.observer.stop().await;
        let _ = self.shutdown.send(());
        let _ = self.task.await;
        crate::upstream::settle_in_flight(&self.catalog).await;
        self.notifier.stop().await;
        self.catalog.pool().close().await;
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: no new connections, in-flight
    /// requests finish (up to `grace`), the replicator stops and releases its leases, the pools
    /// close. A second signal exits at once.
    pub async fn run_until_signalled(self, grace: Duration) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let RunningServer {
            catalog,
            shutdown,
            mut task,
            replicator,
            purges,
            observer,
            notifier,
            ..
        } = self;
        tokio::select! {
            result = &mut task => {
                catalog.pool().close().await;
                return result.unwrap_or(Ok(()));
            }
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!(
            grace_seconds = grace.as_secs_f64(),
            "shutting down: no new connections, draining requests, stopping the replicator \
             (a second signal exits at once)"
        );
        let graceful = async {
            let _ = shutdown.send(());
            if let Some(replicator) = replicator {
                replicator.stop().await;
            }
            purges.stop().await;
            observer.stop().await;
            let _ = task.await;
            crate::upstream::settle_in_flight(&catalog).await;
            notifier.stop().await;
            catalog.pool().close().await;
        };
        tokio::select! {
            _ = graceful => tracing::info!("floe stopped"),
            _ = tokio::time::sleep(grace) => {
                tracing::warn!("requests still running after the grace period; exiting");
            }
            _ = terminate.recv() => {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
            _ = interrupt.recv() => {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
        Ok(())
    }
}

/// Migrates the database and serves the catalog on `settings.listen` (port 0 picks a free port).
pub async fn start(settings: &Settings, faults: Arc<Faults>) -> Result<RunningServer, ServerError> {
    let url = settings.require_database_url()?;
    let pool = db::connect_lazy(url, &settings.database)?;
    start_with_pool(settings, pool, faults).await
}

pub async fn start_with_pool(
    settings: &Settings,
    pool: PgPool,
    faults: Arc<Faults>,
) -> Result<RunningServer, ServerError> {
    db::migrate(&pool).await?;
    let catalog = Arc::new(Catalog::start(pool, settings, faults).await?);
    catalog.set_sync_replication(Arc::new(SyncReplicator::new(
        &catalog,
        &settings.replication,
    )));
    let authenticator = Arc::new(crate::auth::Authenticator::new(
        &settings.auth,
        &settings.replication.accept,
        &settings.region,
    ));
    crate::telemetry::install();
    let state = Arc::new(AppState {
        catalog: catalog.clone(),
        authenticator,
        allowed_peer_hosts: settings.replication.allowed_peer_hosts.clone(),
        idempotency: http::idempotency::Idempotency::new(
            catalog.pool(),
            std::time::Duration::from_secs(settings.idempotency_key_lifetime_seconds),
            settings.max_body_bytes,
            settings.database.max_connections,
        ),
    });
    let app = http::router(state, settings.max_body_bytes);
    if settings.replication.enabled {
        // Before the first write is served: tables a peer took over are fenced here first.
        crate::replication::promote::learn_promotions(
            &catalog,
            Duration::from_millis(settings.replication.peer_timeout_ms.min(5_000)),
        )
        .await;
    }
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: settings.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: settings.listen,
        source,
    })?;
    // Answers go out as they are written (TCP_NODELAY): an answer streamed in parts (a forwarded
    // loadTable, say) would otherwise wait, after its first part, for the client's delayed ACK
    // (Nagle's algorithm; 40 ms on Linux).
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set on a client connection");
        }
    });
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, region = %settings.region, "floe is serving the Iceberg REST catalog");
    let replicator = settings
        .replication
        .enabled
        .then(|| Replicator::spawn(catalog.clone(), settings.replication.clone()));
    let purges = PurgeWorker::spawn(
        catalog.clone(),
        Duration::from_millis(settings.replication.poll_interval_ms.max(100)),
        settings.replication.lease_seconds,
    );
    let observer = UpstreamObserver::spawn(catalog.clone());
    let notifier = LogNotifier::spawn(catalog.log_wake().clone(), catalog.pool().clone());
    Ok(RunningServer {
        addr,
        catalog,
        shutdown,
        task,
        replicator,
        purges,
        observer,
        notifier,
    })
}
