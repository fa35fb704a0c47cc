//! `floe bench sync`: what a synchronous rule costs a commit (issue 14, item 4), beside an
//! asynchronous one in the same run. Two regions in one process (`bench::replication`): `tables`
//! tables in namespace `async` replicated to the replica region by an asynchronous rule, and as
//! many in `sync` by a synchronous one (`min-acks` 1). For each kind of commit and writer count,
//! rounds alternate between the two namespaces (async, sync, async, sync, ...): `writers` writers
//! commit for `seconds`, each to its own share of the tables in turn. Metadata-only commits
//! (`set-properties`), and small appends (one 1 KiB data file with its manifest and manifest
//! list, which a synchronous commit copies to the replica before it commits). Reported per mode:
//! commits/s, latency p50/p99/max, and how many commits failed.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::files::SnapshotWriter;
use super::replication::{Regions, ms, register_peer, start_regions};
use crate::contract::replication_model::{Destination, ReplicationMode, RuleSpec};
use crate::pgtemp::PgCluster;
use crate::replication::admin;

#[derive(Debug, Clone)]
pub struct SyncBenchOptions {
    /// Tables per mode.
    pub tables: usize,
    pub writers: Vec<usize>,
    /// Seconds per round.
    pub seconds: u64,
    /// Rounds per mode, alternating.
    pub rounds: usize,
}

const MODES: [ReplicationMode; 2] = [ReplicationMode::Async, ReplicationMode::Sync];

pub async fn run_sync(options: SyncBenchOptions) -> anyhow::Result<()> {
    super::with_throwaway_cluster(async |cluster, dir| {
        run_with_cluster(cluster, dir, &options).await
    })
    .await
}

fn namespace(mode: ReplicationMode) -> &'static str {
    match mode {
        ReplicationMode::Async => "async",
        ReplicationMode::Sync => "sync",
    }
}

async fn run_with_cluster(
    cluster: &PgCluster,
    dir: &Path,
    options: &SyncBenchOptions,
) -> anyhow::Result<()> {
    println!(
        "floe bench sync: two regions in one process, PostgreSQL with fsync on, local warehouses \
         on one disk, {} cores; {} tables per mode, {} s rounds, {} rounds per mode alternating\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.tables,
        options.seconds,
        options.rounds
    );
    let regions = start_regions(cluster, dir).await?;
    register_peer(&regions).await?;
    let result = measure(&regions, options).await;
    regions.primary.stop().await;
    regions.replica.stop().await;
    result
}

/// A table a writer owns, as it last committed it, and the writer of its snapshots (which
/// carries each snapshot's manifests into the next one's list).
struct Head {
    name: String,
    location: String,
    snapshot: Option<i64>,
    sequence: i64,
    files: SnapshotWriter,
}

async fn measure(regions: &Regions, options: &SyncBenchOptions) -> anyhow::Result<()> {
    let mut tables: HashMap<&str, Vec<Head>> = HashMap::new();
    for mode in MODES {
        let ns = namespace(mode);
        regions.create_namespace(ns).await?;
        admin::create_rule(
            &regions.primary.catalog,
            RuleSpec {
                warehouse: "bench".to_string(),
                namespace: Some(vec![ns.to_string()]),
                destinations: vec![Destination {
                    peer: "replica".to_string(),
                    warehouse: "bench".to_string(),
                    namespace_prefix: Vec::new(),
                }],
                mode,
                timeout_ms: (mode == ReplicationMode::Sync).then_some(10_000),
                ..Default::default()
            },
        )
        .await?;
        let mut heads = Vec::new();
        for i in 0..options.tables {
            let name = format!("t{i}");
            let created = regions.create_table(ns, &name).await?;
            let location = created["metadata"]["location"]
                .as_str()
                .context("location")?
                .to_string();
            regions
                .wait_visible(ns, &name, |_| true, Duration::from_secs(120))
                .await?;
            heads.push(Head {
                name,
                location,
                snapshot: None,
                sequence: 0,
                files: SnapshotWriter::default(),
            });
        }
        tables.insert(ns, heads);
    }

    println!(
        "| commit | writers | mode | commits | commits/s | p50 ms | p99 ms | max ms | failed |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut next_id = 1_000_000i64;
    for append in [false, true] {
        let writer_counts: &[usize] = if append { &[1] } else { &options.writers };
        for &writers in writer_counts {
            let mut totals: HashMap<&str, (Histogram<u64>, u64, f64)> = HashMap::new();
            for _ in 0..options.rounds {
                for mode in MODES {
                    let ns = namespace(mode);
                    let heads = tables.get_mut(ns).expect("made above");
                    let (latency, failed, seconds) = round(
                        regions,
                        ns,
                        heads,
                        (writers, options.seconds),
                        append.then_some(&mut next_id),
                    )
                    .await?;
                    let total = totals.entry(ns).or_insert((
                        Histogram::new_with_bounds(1, 60_000_000, 3)?,
                        0,
                        0.0,
                    ));
                    total.0.add(&latency)?;
                    total.1 += failed;
                    total.2 += seconds;
                }
            }
            for mode in MODES {
                let (latency, failed, seconds) = &totals[namespace(mode)];
                println!(
                    "| {} | {writers} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {failed} |",
                    if append {
                        "small append"
                    } else {
                        "metadata-only"
                    },
                    namespace(mode),
                    latency.len(),
                    latency.len() as f64 / seconds,
                    ms(latency.value_at_quantile(0.5)),
                    ms(latency.value_at_quantile(0.99)),
                    ms(latency.max()),
                );
            }
        }
    }
    Ok(())
}

/// One round: `writers` writers commit to their shares of `heads` for `seconds`. Appends, when
/// given the last snapshot id used, are one writer's (its heads move on).
/// Returns the latencies, the failed commits and the round's length in seconds.
async fn round(
    regions: &Regions,
    ns: &str,
    heads: &mut [Head],
    (writers, seconds): (usize, u64),
    append: Option<&mut i64>,
) -> anyhow::Result<(Histogram<u64>, u64, f64)> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0u64;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    if let Some(next_id) = append {
        let mut turn = 0usize;
        while Instant::now() < until {
            let head = &mut heads[turn % heads.len()];
            turn += 1;
            *next_id += 1;
            let (id, sequence) = (*next_id, head.sequence + 1);
            let list = head
                .files
                .write_snapshot(&head.location, id, sequence, 1, 1024)?;
            let sent = Instant::now();
            match regions
                .append_snapshot(ns, &head.name, id, sequence, head.snapshot, &list)
                .await
            {
                Ok(_) => {
                    latency.record(sent.elapsed().as_micros().max(1) as u64)?;
                    head.snapshot = Some(id);
                    head.sequence = sequence;
                }
                Err(_) => failed += 1,
            }
        }
        return Ok((latency, failed, started.elapsed().as_secs_f64()));
    }
    let mut tasks = Vec::new();
    for w in 0..writers.max(1) {
        let own: Vec<String> = heads
            .iter()
            .skip(w)
            .step_by(writers.max(1))
            .map(|h| h.name.clone())
            .collect();
        if own.is_empty() {
            bail!("{writers} writers need at least as many tables");
        }
        let url = format!(
            "{}/v1/bench/namespaces/{ns}/tables",
            regions.primary.base_url()
        );
        let http = regions.http.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut failed = 0u64;
            let mut n = 0usize;
            while Instant::now() < until {
                let table = &own[n % own.len()];
                n += 1;
                let body: Value = json!({ "requirements": [], "updates": [
                    { "action": "set-properties", "updates": { "k": n.to_string() } }] });
                let sent = Instant::now();
                let reply = http
                    .post(format!("{url}/{table}"))
                    .json(&body)
                    .send()
                    .await?;
                if reply.status().is_success() {
                    latency.record(sent.elapsed().as_micros().max(1) as u64)?;
                } else {
                    failed += 1;
                }
            }
            Ok::<_, anyhow::Error>((latency, failed))
        }));
    }
    for task in tasks {
        let (mine, theirs) = task.await??;
        latency.add(&mine)?;
        failed += theirs;
    }
    Ok((latency, failed, started.elapsed().as_secs_f64()))
}
