//! `floe bench`: figures for BENCHMARKS.md, against a throwaway PostgreSQL (fsync on) and local
//! warehouses, with floe served in-process on 127.0.0.1.

pub mod commits;
pub mod files;
pub mod replication;

pub use commits::{BenchOptions, run_commits};

use std::path::Path;

use crate::pgtemp::{PgCluster, PgOptions};

/// Runs a benchmark against a throwaway PostgreSQL (durable settings) in a temporary directory,
/// stopping the cluster whatever the outcome.
async fn with_throwaway_cluster(
    run: impl AsyncFnOnce(&PgCluster, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pg_dir = dir.path().join("postgres");
    let cluster =
        tokio::task::spawn_blocking(move || PgCluster::start(&pg_dir, &PgOptions::default()))
            .await??;
    let result = run(&cluster, dir.path()).await;
    tokio::task::spawn_blocking(move || cluster.stop()).await??;
    result
}
