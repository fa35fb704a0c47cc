//! `floe bench replication --tables N`: replication when the catalog is large. Two regions
//! in-process (as `floe bench replication`), PostgreSQL with pg_stat_statements, and:
//!
//! - *Large manifests* (first, while the process is small): a table whose manifests total
//!   `manifest_mb` (8 MiB manifests, Iceberg's default target size, of files with wide-table
//!   statistics) is replicated: the process's peak RSS meanwhile, its high-water mark reset before.
//! - *Commit path alone*: commits at a fixed rate to a table no rule replicates: the statements a
//!   commit costs without replication, the baseline of the statement counts below.
//! - *One table*: one replicated table at a tenth of the rate (each commit replicated alone) and
//!   at the rate: the lag and the statements per replicated commit with one table.
//! - *N tables*: N empty tables created, then one namespace rule: the time until all N replicas
//!   exist; then the rate spread round-robin over the N tables (no two commits of a second to one
//!   table): lag and statements, beside the one-table figures of the same run.
//! - *Idle*: nothing committed (for two of the replicator's full scans by default): CPU of the floe
//!   process (both regions) and of PostgreSQL (all its processes), and statements per second.
//!
//! A commit's lag runs from its acknowledgement at the primary to the COMMIT of the replica's log
//! entry for it (PostgreSQL's commit timestamp, read after the load): when the change became
//! loadable there. Nothing polls the replica, so the measurement adds no load of its own.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::PgPool;

use super::cpu::ticks_per_second;
use super::files::SnapshotWriter;
use super::replication::{Regions, ms, register_peer, start_regions};
use crate::pgtemp::{PgCluster, PgOptions};

#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub tables: usize,
    pub commits_per_second: u32,
    /// Seconds of each load (lag, then statements).
    pub seconds: u64,
    /// Seconds of the idle measurement.
    pub idle_seconds: u64,
    pub manifest_mb: u64,
}

/// Statements the benchmark itself sends carry this, and are not counted.
const OWN: &str = "/* floe-bench */";
/// Iceberg's default manifest target size (`commit.manifest.target-size-bytes`).
const MANIFEST_BYTES: usize = 8 << 20;
/// Statistics per file in the large-manifest table: 64 KiB (128 columns' bounds of 256 bytes).
const STATS_PER_FILE: usize = 64 << 10;

pub async fn run_scale(options: ScaleOptions) -> anyhow::Result<()> {
    let pg = PgOptions {
        statement_stats: true,
        commit_timestamps: true,
        ..PgOptions::default()
    };
    super::with_throwaway_cluster_options(pg, async |cluster, dir| {
        let regions = start_regions(cluster, dir).await?;
        let result = run(cluster, &regions, &options).await;
        regions.primary.stop().await;
        regions.replica.stop().await;
        result
    })
    .await
}

/// The tables a load commits to, by (namespace, name).
type Tables = Vec<(String, String)>;

/// What one load measured.
struct Load {
    commits: u64,
    seconds: f64,
    /// Acknowledged at the primary to committed at the replica, µs (for replicated tables).
    lag: Option<Histogram<u64>>,
    /// Statements per commit, at the primary and at the replica.
    statements: (f64, f64),
}

async fn run(cluster: &PgCluster, regions: &Regions, options: &ScaleOptions) -> anyhow::Result<()> {
    println!(
        "floe bench replication --tables {}: two regions in one process, PostgreSQL with fsync on, \
         local warehouses on one disk, {} cores, {} commits/s\n",
        options.tables,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.commits_per_second
    );
    let stats = Statements::connect(cluster).await?;
    register_peer(regions).await?;
    let rate = options.commits_per_second;
    let seconds = options.seconds;
    // First, while the process is small: its peak RSS is the figure.
    let manifests = large_manifests(regions, options.manifest_mb).await?;

    regions.create_namespace("plain").await?;
    regions.create_table("plain", "t").await?;
    let plain_tables: Tables = vec![("plain".into(), "t".into())];
    let plain = load(regions, &stats, &plain_tables, rate, seconds, false).await?;

    regions.create_namespace("solo").await?;
    regions.create_table("solo", "t").await?;
    regions.replicate("solo", Some("t")).await?;
    regions
        .wait_visible("solo", "t", |_| true, Duration::from_secs(60))
        .await?;
    let solo_tables: Tables = vec![("solo".into(), "t".into())];
    let sparse_rate = (rate / 10).max(1);
    let solo_sparse = load(regions, &stats, &solo_tables, sparse_rate, seconds, true).await?;
    let solo = load(regions, &stats, &solo_tables, rate, seconds, true).await?;

    regions.create_namespace("fleet").await?;
    let started = Instant::now();
    let fleet_tables = create_tables(regions, "fleet", options.tables).await?;
    let created = started.elapsed();
    stats.reset().await?;
    let started = Instant::now();
    regions.replicate("fleet", None).await?;
    stats
        .wait_for_replicas(&cluster.url("bench_replica"), "fleet", options.tables)
        .await?;
    let appeared = started.elapsed();
    stats
        .log_costliest(&format!("replicas of {} tables", options.tables))
        .await?;
    let fleet = load(regions, &stats, &fleet_tables, rate, seconds, true).await?;

    let idle = idle(cluster, &stats, options.idle_seconds).await?;

    println!(
        "| tables | created in s | replicas exist after s | replicas/s |\n|---:|---:|---:|---:|"
    );
    println!(
        "| {} | {:.1} | {:.1} | {:.0} |\n",
        options.tables,
        created.as_secs_f64(),
        appeared.as_secs_f64(),
        options.tables as f64 / appeared.as_secs_f64()
    );
    println!(
        "| load | tables | commits | commits/s | lag p50 ms | lag p90 ms | lag p99 ms | \
         lag max ms | statements per commit, primary | statements per commit, replica |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, count, load) in [
        ("commit path alone (not replicated)", 1, &plain),
        ("one table, a tenth of the rate", 1, &solo_sparse),
        ("one table", 1, &solo),
        ("spread over the tables", options.tables, &fleet),
    ] {
        let (p50, p90, p99, max) = match &load.lag {
            Some(h) => (
                format!("{:.1}", ms(h.value_at_quantile(0.5))),
                format!("{:.1}", ms(h.value_at_quantile(0.9))),
                format!("{:.1}", ms(h.value_at_quantile(0.99))),
                format!("{:.1}", ms(h.max())),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let (primary, replica) = load.statements;
        println!(
            "| {name} | {count} | {} | {:.0} | {p50} | {p90} | {p99} | {max} | {primary:.1} | {replica:.1} |",
            load.commits,
            load.commits as f64 / load.seconds,
        );
    }
    println!(
        "\n| idle, {} s | floe CPU % of a core | PostgreSQL CPU % of a core | statements/s, primary | statements/s, replica |",
        options.idle_seconds
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {} replicated tables | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        options.tables + 2,
        idle.floe_cpu,
        idle.postgres_cpu,
        idle.primary_statements,
        idle.replica_statements
    );
    println!(
        "| large manifests | manifests | MiB | files | replicated in s | RSS before MiB | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} snapshots | {} | {:.0} | {} | {:.1} | {:.0} | {:.0} |",
        manifests.snapshots,
        manifests.snapshots,
        manifests.bytes as f64 / (1 << 20) as f64,
        manifests.files,
        manifests.seconds,
        manifests.rss_before_kib as f64 / 1024.0,
        manifests.peak_kib as f64 / 1024.0
    );
    stats.close().await;
    Ok(())
}

/// Creates `count` empty tables in `namespace`, eight at a time.
async fn create_tables(regions: &Regions, namespace: &str, count: usize) -> anyhow::Result<Tables> {
    use futures::TryStreamExt;
    let names: Tables = (0..count)
        .map(|i| (namespace.to_string(), format!("t{i:05}")))
        .collect();
    futures::stream::iter(names.iter())
        .map(|(ns, name)| async move { regions.create_table(ns, name).await.map(drop) })
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    Ok(names)
}

/// Commits `rate` times a second for `seconds`, round-robin over `tables` (open loop: on schedule,
/// whether or not earlier commits have finished), each a `set-properties` of the table's counter,
/// and waits until every stream has applied them. Counts the statements of it all and, for
/// replicated tables, each commit's lag: from its acknowledgement to the commit timestamp of the
/// replica's log entry for it (when the change became loadable there).
async fn load(
    regions: &Regions,
    stats: &Statements,
    tables: &Tables,
    rate: u32,
    seconds: u64,
    replicated: bool,
) -> anyhow::Result<Load> {
    let total = u64::from(rate) * seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    // Commits to one table are made in counter order (its lock is held across the commit).
    let counters: Vec<tokio::sync::Mutex<u64>> = (0..tables.len().min(total as usize))
        .map(|_| tokio::sync::Mutex::new(0))
        .collect();
    let acknowledged: std::sync::Mutex<HashMap<(usize, u64), i64>> = Default::default();
    let replica_log = ReplicaLog::begin(&stats.database_url("bench_replica")).await?;
    stats.reset().await?;
    let write = |i: u64| {
        let index = i as usize % tables.len();
        let (namespace, table) = &tables[index];
        let (counters, acknowledged) = (&counters, &acknowledged);
        async move {
            let mut counter = counters[index].lock().await;
            *counter += 1;
            let body = json!({ "requirements": [], "updates": [
                { "action": "set-properties", "updates": { "bench.counter": counter.to_string() } }] });
            regions.commit(namespace, table, &body).await?;
            acknowledged
                .lock()
                .expect("not poisoned")
                .insert((index, *counter), epoch_us());
            anyhow::Ok(())
        }
    };
    // Writers start on schedule and run concurrently (in this task: they borrow the regions).
    let started = Instant::now();
    let mut writers = futures::stream::FuturesUnordered::new();
    let mut next = 0u64;
    while next < total || !writers.is_empty() {
        let due = started + interval * next as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()), if next < total => {
                writers.push(write(next));
                next += 1;
            }
            Some(done) = writers.next(), if !writers.is_empty() => done?,
        }
    }
    drop(writers);
    let elapsed = started.elapsed().as_secs_f64();
    stats.wait_caught_up().await?;
    let (primary, replica) = stats.counts().await?;
    stats
        .log_costliest(&format!("{} tables at {rate}/s", tables.len()))
        .await?;
    let statements = (primary as f64 / total as f64, replica as f64 / total as f64);
    let lag = if replicated {
        let index: HashMap<&(String, String), usize> =
            tables.iter().enumerate().map(|(i, t)| (t, i)).collect();
        let applied = replica_log.finish().await?;
        let acknowledged = acknowledged.into_inner().expect("not poisoned");
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for (table, counter, at) in applied {
            let Some(&i) = index.get(&table) else {
                continue;
            };
            if let Some(acked) = acknowledged.get(&(i, counter)) {
                histogram.record((at - acked).max(1) as u64)?;
            }
        }
        anyhow::ensure!(
            histogram.len() == total,
            "{} of {total} commits were seen applied at the replica",
            histogram.len()
        );
        Some(histogram)
    } else {
        replica_log.finish().await?;
        None
    };
    Ok(Load {
        commits: total,
        seconds: elapsed,
        lag,
        statements,
    })
}

/// When the replica's log entries were committed: PostgreSQL's commit timestamps
/// (`track_commit_timestamp`) of the entries after where the log stood when the load began. Read
/// after the load, so measuring adds nothing to it.
struct ReplicaLog {
    url: String,
    after_seq: i64,
}

impl ReplicaLog {
    async fn begin(url: &str) -> anyhow::Result<Self> {
        let pool = PgPool::connect(url).await?;
        let after_seq: i64 = sqlx::query_scalar(&format!(
            "{OWN} SELECT coalesce(max(seq), 0) FROM commit_log"
        ))
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        Ok(Self {
            url: url.to_string(),
            after_seq,
        })
    }

    /// ((namespace, table), counter, committed at in µs since the epoch) of each `set-properties`
    /// of the benchmark's counter the replica committed since [`ReplicaLog::begin`].
    async fn finish(self) -> anyhow::Result<Vec<((String, String), u64, i64)>> {
        let pool = PgPool::connect(&self.url).await?;
        let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(&format!(
            "{OWN} SELECT namespace[1], table_name,
                    (SELECT c->'updates'->>'bench.counter' FROM jsonb_array_elements(changes) c
                     WHERE c->>'action' = 'set-properties' LIMIT 1),
                    (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint
             FROM commit_log WHERE seq > $1 AND kind = 'commit-table'"
        ))
        .bind(self.after_seq)
        .fetch_all(&pool)
        .await?;
        pool.close().await;
        Ok(rows
            .into_iter()
            .filter_map(|(namespace, table, counter, at)| {
                Some(((namespace, table), counter?.parse().ok()?, at))
            })
            .collect())
    }
}

/// Now, in µs since the epoch (the clock PostgreSQL's commit timestamps use).
fn epoch_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

struct Idle {
    floe_cpu: f64,
    postgres_cpu: f64,
    primary_statements: f64,
    replica_statements: f64,
}

async fn idle(cluster: &PgCluster, stats: &Statements, seconds: u64) -> anyhow::Result<Idle> {
    // Let what the loads left (status updates, heartbeats of ending tasks) finish first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let postmaster = cluster
        .server_pid()
        .context("the PostgreSQL server's pid")?;
    stats.reset().await?;
    let (floe_before, pg_before) = (
        cpu_ticks(std::process::id() as i32),
        postgres_ticks(postmaster),
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (floe_after, pg_after) = (
        cpu_ticks(std::process::id() as i32),
        postgres_ticks(postmaster),
    );
    let (primary, replica) = stats.counts().await?;
    stats.log_costliest("idle").await?;
    let ticks_per_second = ticks_per_second();
    let percent = |ticks: u64| ticks as f64 / ticks_per_second / elapsed * 100.0;
    Ok(Idle {
        floe_cpu: percent(floe_after.saturating_sub(floe_before)),
        postgres_cpu: percent(pg_after.saturating_sub(pg_before)),
        primary_statements: primary as f64 / elapsed,
        replica_statements: replica as f64 / elapsed,
    })
}

/// A process's user + system CPU time so far, in clock ticks (0 when it is gone).
fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the name: state (field 3) ... utime (14), stime (15).
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// CPU of the PostgreSQL server and all its processes (backends, checkpointer, WAL writer...).
fn postgres_ticks(postmaster: i32) -> u64 {
    let mut total = cpu_ticks(postmaster);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
            });
        if parent == Some(postmaster) {
            total += cpu_ticks(pid);
        }
    }
    total
}

struct Manifests {
    snapshots: usize,
    files: usize,
    bytes: u64,
    seconds: f64,
    rss_before_kib: u64,
    peak_kib: u64,
}

/// Replicates a table whose manifests total `manifest_mb` and measures the peak RSS meanwhile.
async fn large_manifests(regions: &Regions, manifest_mb: u64) -> anyhow::Result<Manifests> {
    regions.create_namespace("wide").await?;
    let created = regions.create_table("wide", "t").await?;
    let location = created["metadata"]["location"]
        .as_str()
        .context("location")?
        .to_string();
    let files_per_manifest = MANIFEST_BYTES / STATS_PER_FILE;
    let snapshots = ((manifest_mb << 20) as usize)
        .div_ceil(MANIFEST_BYTES)
        .max(1);
    let mut writer = SnapshotWriter::default();
    writer.stats_bytes_per_file = STATS_PER_FILE;
    let mut head = created["metadata"].clone();
    for i in 0..snapshots {
        let parent = head["current-snapshot-id"].as_i64();
        let seq = head["last-sequence-number"].as_i64().unwrap_or(0) + 1;
        let id = 3_000_000 + i as i64;
        let list = {
            let location = location.clone();
            let mut moved = std::mem::take(&mut writer);
            let (list, back) = tokio::task::spawn_blocking(move || {
                let list = moved.write_snapshot(&location, id, seq, files_per_manifest, 16);
                (list, moved)
            })
            .await?;
            writer = back;
            list?
        };
        head = regions
            .append_snapshot("wide", "t", id, seq, parent, &list)
            .await?;
    }
    let bytes = manifest_bytes(&location)?;
    reset_peak_rss()?;
    let rss_before_kib = super::peak_rss_kib();
    let started = Instant::now();
    regions.replicate("wide", Some("t")).await?;
    let want = head["current-snapshot-id"].clone();
    regions
        .wait_visible(
            "wide",
            "t",
            |m| m["current-snapshot-id"] == want,
            Duration::from_secs(3600),
        )
        .await?;
    Ok(Manifests {
        snapshots,
        files: snapshots * files_per_manifest,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        rss_before_kib,
        peak_kib: super::peak_rss_kib(),
    })
}

/// The bytes of a `file://` table's manifests (its `-m0.avro` files).
fn manifest_bytes(table_location: &str) -> anyhow::Result<u64> {
    let dir = Path::new(
        table_location
            .strip_prefix("file://")
            .context("a file:// location")?,
    )
    .join("metadata");
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with("-m0.avro") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS (Linux: `5` to `clear_refs`).
fn reset_peak_rss() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")
}

/// pg_stat_statements over the two regions' databases.
struct Statements {
    pool: PgPool,
}

impl Statements {
    async fn connect(cluster: &PgCluster) -> anyhow::Result<Self> {
        let pool = PgPool::connect(&cluster.url("postgres")).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
            .context("pg_stat_statements (shipped with PostgreSQL's contrib modules)")?;
        Ok(Self { pool })
    }

    async fn reset(&self) -> anyhow::Result<()> {
        sqlx::query(&format!("{OWN} SELECT pg_stat_statements_reset()"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Statements executed since the reset in the primary's and the replica's databases, the
    /// benchmark's own left out.
    async fn counts(&self) -> anyhow::Result<(i64, i64)> {
        let count = |db: &'static str| {
            let pool = self.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(&format!(
                    "{OWN} SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s
                     JOIN pg_database d ON d.oid = s.dbid
                     WHERE d.datname = $1 AND s.query NOT LIKE '%floe-bench%'
                       AND s.query NOT ILIKE 'LISTEN%'"
                ))
                .bind(db)
                .fetch_one(&pool)
                .await
            }
        };
        Ok((count("bench_primary").await?, count("bench_replica").await?))
    }

    /// Logs (at debug) the statements that took the most time since the reset, for whoever wants
    /// to know where a load's time went.
    async fn log_costliest(&self, load: &str) -> anyhow::Result<()> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return Ok(());
        }
        let rows: Vec<(String, i64, f64, f64)> = sqlx::query_as(&format!(
            "{OWN} SELECT d.datname || ': ' || left(regexp_replace(s.query, '\\s+', ' ', 'g'), 160),
                    s.calls, s.total_exec_time, s.mean_exec_time
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE s.query NOT LIKE '%floe-bench%'
             ORDER BY s.total_exec_time DESC LIMIT 10"
        ))
        .fetch_all(&self.pool)
        .await?;
        for (query, calls, total_ms, mean_ms) in rows {
            tracing::debug!(
                load,
                calls,
                total_ms,
                mean_ms,
                query,
                "costliest statements"
            );
        }
        Ok(())
    }

    /// Waits until every stream at the primary has applied its table's last version.
    async fn wait_caught_up(&self) -> anyhow::Result<()> {
        let url = self.database_url("bench_primary");
        let pool = PgPool::connect(&url).await?;
        let started = Instant::now();
        loop {
            let behind: i64 = sqlx::query_scalar(&format!(
                "{OWN} SELECT count(*) FROM replication_stream s
                 JOIN iceberg_table t ON t.table_id = s.table_id
                 WHERE s.applied_version < t.version"
            ))
            .fetch_one(&pool)
            .await?;
            if behind == 0 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "{behind} streams did not catch up within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool.close().await;
        Ok(())
    }

    /// Waits until the replica serves `count` tables in `namespace`.
    async fn wait_for_replicas(
        &self,
        replica_url: &str,
        namespace: &str,
        count: usize,
    ) -> anyhow::Result<()> {
        let pool = PgPool::connect(replica_url).await?;
        let started = Instant::now();
        let mut reported = Instant::now();
        loop {
            let served: i64 = sqlx::query_scalar(&format!(
                "{OWN} SELECT count(*) FROM iceberg_table t
                 JOIN namespace n ON n.namespace_id = t.namespace_id WHERE n.levels = $1"
            ))
            .bind(vec![namespace.to_string()])
            .fetch_one(&pool)
            .await?;
            if served as usize >= count {
                break;
            }
            if reported.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "{served} of {count} replicas after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                reported = Instant::now();
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(1800),
                "only {served} of {count} replicas after 30 minutes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pool.close().await;
        Ok(())
    }

    fn database_url(&self, database: &str) -> String {
        let options = self.pool.connect_options();
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            options.get_port()
        )
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
