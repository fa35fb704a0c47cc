//! `floe bench`: figures for BENCHMARKS.md, against a throwaway PostgreSQL (fsync on) and local
//! warehouses, with floe served in-process on 127.0.0.1.

pub mod auth;
pub mod commits;
mod cpu;
pub mod failover;
pub mod files;
pub mod proxy;
pub mod replication;
pub mod replication_scale;
pub mod s3;
pub mod sync;

pub use commits::{BenchOptions, run_commits};

use std::path::Path;

use crate::pgtemp::{PgCluster, PgOptions};

/// Runs a benchmark against a throwaway PostgreSQL (durable settings) in a temporary directory,
/// stopping the cluster whatever the outcome.
async fn with_throwaway_cluster(
    run: impl AsyncFnOnce(&PgCluster, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    with_throwaway_cluster_options(PgOptions::default(), run).await
}

/// The same, with the cluster's options.
async fn with_throwaway_cluster_options(
    options: PgOptions,
    run: impl AsyncFnOnce(&PgCluster, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pg_dir = dir.path().join("postgres");
    let cluster =
        tokio::task::spawn_blocking(move || PgCluster::start(&pg_dir, &options)).await??;
    let result = run(&cluster, dir.path()).await;
    tokio::task::spawn_blocking(move || cluster.stop()).await??;
    result
}

/// The process's peak resident memory (VmHWM), in KiB.
pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
