//! `floe bench failover`: a warehouse's tables moved between the two in-process regions of
//! `bench::replication` while writers commit.
//!
//! - Planned switchover: `tables` tables replicated from the primary to the replica; `writers`
//!   writers commit metadata-only changes at the primary (at `rate` commits/s in all, or without
//!   pause), each to its own share of the tables (so each table's last acknowledged commit is
//!   known); the replica's region promotes the warehouse, planned. Reported: each table's time with writes refused (the
//!   promotion's `writes-refused-ms`: from before the handover to the old primary's fencing, at
//!   most that), the whole promotion's time, and the check that every table's last
//!   acknowledged commit is the new primary's state (nothing acknowledged was lost).
//! - Forced promotion: the old primary, now every table's replica, takes them back, forced.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::json;

use super::replication::{Regions, register, register_peer, start_regions};
use crate::contract::replication_model::{PromotionMode, WarehousePromoteSpec};
use crate::pgtemp::PgCluster;

#[derive(Debug, Clone)]
pub struct FailoverBenchOptions {
    pub tables: usize,
    pub writers: usize,
    /// Seconds the writers commit before the switchover.
    pub warm_seconds: u64,
    /// Commits per second of all writers together; 0 for as fast as they can.
    pub rate: u64,
}

const NS: &str = "fo";

pub async fn run_failover(options: FailoverBenchOptions) -> anyhow::Result<()> {
    super::with_throwaway_cluster(async |cluster, dir| {
        run_with_cluster(cluster, dir, &options).await
    })
    .await
}

async fn run_with_cluster(
    cluster: &PgCluster,
    dir: &Path,
    options: &FailoverBenchOptions,
) -> anyhow::Result<()> {
    println!(
        "floe bench failover: two regions in one process, PostgreSQL with fsync on, local \
         warehouses on one disk, {} cores; {} tables, {} writers, {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.tables,
        options.writers,
        match options.rate {
            0 => "as fast as they can".to_string(),
            rate => format!("{rate} commits/s in all"),
        }
    );
    let regions = start_regions(cluster, dir).await?;
    register_peer(&regions).await?;
    register(
        &regions.replica,
        "primary",
        &regions.primary,
        &regions.primary_root,
    )
    .await?;
    let result = measure(&regions, options).await;
    regions.primary.stop().await;
    regions.replica.stop().await;
    result
}

async fn measure(regions: &Regions, options: &FailoverBenchOptions) -> anyhow::Result<()> {
    regions.create_namespace(NS).await?;
    let tables: Vec<String> = (0..options.tables).map(|i| format!("t{i}")).collect();
    for table in &tables {
        regions.create_table(NS, table).await?;
    }
    regions.replicate(NS, None).await?;
    for table in &tables {
        regions
            .wait_visible(NS, table, |_| true, Duration::from_secs(120))
            .await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..options.writers.max(1) {
        let own: Vec<String> = tables
            .iter()
            .skip(w)
            .step_by(options.writers.max(1))
            .cloned()
            .collect();
        // Each writer's share of the rate, as the time between its commits.
        let pace = (options.rate > 0)
            .then(|| Duration::from_secs_f64(options.writers.max(1) as f64 / options.rate as f64));
        writers.push(tokio::spawn(write_until_refused(
            regions.http.clone(),
            regions.primary.base_url(),
            own,
            pace,
            (stop.clone(), refused.clone()),
        )));
    }
    tokio::time::sleep(Duration::from_secs(options.warm_seconds)).await;

    let started = Instant::now();
    let spec = WarehousePromoteSpec {
        mode: PromotionMode::Planned,
        source_region: Some("primary".to_string()),
        timeout_ms: Some(30_000),
    };
    let results =
        crate::replication::promote::promote_warehouse(&regions.replica.catalog, "bench", spec)
            .await?
            .tables;
    let planned_ms = started.elapsed().as_secs_f64() * 1000.0;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashMap::new();
    for writer in writers {
        acknowledged.extend(writer.await??);
    }
    let mut refused_ms = Histogram::<u64>::new(3)?;
    for (table, result) in &results {
        let promoted = result
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{table}: {e}"))?;
        refused_ms.record(promoted.writes_refused_ms.unwrap_or_default())?;
    }
    if results.len() != tables.len() {
        bail!("{} of {} tables promoted", results.len(), tables.len());
    }
    let commits: u64 = acknowledged.values().map(|(count, _)| count).sum();
    // Nothing acknowledged was lost: each table's last acknowledged value is the new primary's.
    for (table, (_, last)) in &acknowledged {
        let url = format!(
            "{}/v1/bench/namespaces/{NS}/tables/{table}",
            regions.replica.base_url()
        );
        let loaded: serde_json::Value = regions.http.get(&url).send().await?.json().await?;
        let value = loaded["metadata"]["properties"]["k"].as_str().unwrap_or("");
        if value != last.to_string() {
            bail!("{table}: the new primary has k={value}, the last acknowledged was {last}");
        }
    }

    // Back again, forced: the old primary's tables are the new primary's replicas now.
    let started = Instant::now();
    let spec = WarehousePromoteSpec {
        mode: PromotionMode::Forced,
        source_region: Some("replica".to_string()),
        timeout_ms: None,
    };
    let back =
        crate::replication::promote::promote_warehouse(&regions.primary.catalog, "bench", spec)
            .await?
            .tables;
    let forced_ms = started.elapsed().as_secs_f64() * 1000.0;
    let forced_ok = back.iter().filter(|(_, r)| r.is_ok()).count();

    println!(
        "| switchover | tables | commits acknowledged before | refused commits | whole \
         promotion ms | writes refused p50 ms | p99 ms | max ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| planned | {} | {commits} | {} | {planned_ms:.0} | {} | {} | {} |",
        tables.len(),
        refused.load(Ordering::Relaxed),
        refused_ms.value_at_quantile(0.5),
        refused_ms.value_at_quantile(0.99),
        refused_ms.max()
    );
    println!(
        "| forced (back) | {forced_ok} of {} | | | {forced_ms:.0} | | | |",
        tables.len()
    );
    println!(
        "\nEvery table's last acknowledged commit at the old primary was the new primary's state."
    );
    Ok(())
}

/// Commits `k = <n>` to each of `tables` in turn at `base` (one every `pace`, if set) until
/// `stop`; a table that refuses (handed over) is written no more. Per table: the acknowledged
/// commits and the last value.
async fn write_until_refused(
    http: reqwest::Client,
    base: String,
    mut tables: Vec<String>,
    pace: Option<Duration>,
    (stop, refused): (Arc<AtomicBool>, Arc<AtomicU64>),
) -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let mut acknowledged: HashMap<String, (u64, u64)> = HashMap::new();
    let mut n = 0u64;
    let mut ticks = pace.map(|pace| {
        let mut ticks = tokio::time::interval(pace);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    while !stop.load(Ordering::Relaxed) && !tables.is_empty() {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        n += 1;
        let index = (n as usize) % tables.len();
        let table = &tables[index];
        let url = format!("{base}/v1/bench/namespaces/{NS}/tables/{table}");
        let body = json!({ "requirements": [], "updates": [
            { "action": "set-properties", "updates": { "k": n.to_string() } }] });
        let reply = http.post(&url).json(&body).send().await?;
        match reply.status().as_u16() {
            200 => {
                let entry = acknowledged.entry(table.clone()).or_default();
                *entry = (entry.0 + 1, n);
            }
            403 => {
                refused.fetch_add(1, Ordering::Relaxed);
                tables.remove(index);
            }
            status => {
                let text = reply.text().await.unwrap_or_default();
                return Err(anyhow::anyhow!("{status}: {text}"))
                    .context(format!("commit to {table}"));
            }
        }
    }
    Ok(acknowledged)
}
