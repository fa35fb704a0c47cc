//! `floe bench replication`: two regions in-process (their own databases in one throwaway cluster,
//! their own warehouses on the same disk), the replica registered as the primary's peer.
//!
//! - Lag: one writer commits to the primary; after each acknowledgement the replica's loadTable is
//!   polled (conditional GETs) until the change is loadable there. Metadata-only commits and small
//!   appends (one 1 KiB data file each, copied with its manifest and manifest list).
//! - Backfill: a table of `files` data files totalling `backfill_mb` is written, then a rule is
//!   created; the time until the replica is complete is compared with `cp -r` of the same table
//!   directory on the same disk, and the process's peak memory (VmHWM) is read.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::files::SnapshotWriter;
use crate::catalog::Faults;
use crate::config::{AcceptedPeer, Settings, WarehouseSettings};
use crate::contract::replication_model::{Destination, PeerSpec, PeerWarehouse, RuleSpec};
use crate::pgtemp::PgCluster;
use crate::replication::admin;
use crate::server::{self, RunningServer};

#[derive(Debug, Clone)]
pub struct ReplicationBenchOptions {
    /// Commits measured per kind.
    pub commits: usize,
    pub backfill_mb: u64,
    pub backfill_files: usize,
}

const TOKEN: &str = "bench-replication-token";
/// How often the replica is polled while waiting for a change: the lag's resolution.
const POLL: Duration = Duration::from_millis(1);

/// The two regions of a replication benchmark, the replica registered as the primary's peer
/// (see [`register_peer`]), and a client for both.
pub(super) struct Regions {
    pub primary: RunningServer,
    pub replica: RunningServer,
    pub replica_root: std::path::PathBuf,
    pub primary_root: std::path::PathBuf,
    pub http: reqwest::Client,
}

pub async fn run_replication(options: ReplicationBenchOptions) -> anyhow::Result<()> {
    super::with_throwaway_cluster(async |cluster, dir| {
        run_with_cluster(cluster, dir, &options).await
    })
    .await
}

async fn run_with_cluster(
    cluster: &PgCluster,
    dir: &Path,
    options: &ReplicationBenchOptions,
) -> anyhow::Result<()> {
    println!(
        "floe bench replication: two regions in one process, PostgreSQL with fsync on, local \
         warehouses on one disk, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let regions = start_regions(cluster, dir).await?;
    register_peer(&regions).await?;
    let result = async {
        println!("| commit | commits | lag p50 ms | lag p90 ms | lag p99 ms | lag max ms |");
        println!("|---|---:|---:|---:|---:|---:|");
        for append in [false, true] {
            let lag = lag(&regions, options.commits, append).await?;
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                if append {
                    "small append"
                } else {
                    "metadata-only"
                },
                lag.len(),
                ms(lag.value_at_quantile(0.5)),
                ms(lag.value_at_quantile(0.9)),
                ms(lag.value_at_quantile(0.99)),
                ms(lag.max())
            );
        }
        backfill(&regions, options).await
    }
    .await;
    regions.primary.stop().await;
    regions.replica.stop().await;
    result
}

pub(super) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(super) async fn start_regions(cluster: &PgCluster, dir: &Path) -> anyhow::Result<Regions> {
    let mut servers = Vec::new();
    let mut roots = Vec::new();
    for region in ["primary", "replica"] {
        cluster.ensure_database(&format!("bench_{region}")).await?;
        let root = dir.join(format!("{region}-warehouse"));
        std::fs::create_dir_all(&root)?;
        let mut settings = Settings {
            region: region.to_string(),
            listen: "127.0.0.1:0".parse()?,
            database_url: Some(cluster.url(&format!("bench_{region}")).into()),
            warehouses: vec![WarehouseSettings::builtin(
                "bench",
                format!("file://{}", root.display()),
            )],
            ..Settings::default()
        };
        // Each accepts the other (a switchover reverses the stream: `bench::failover`).
        let other = if region == "replica" {
            "primary"
        } else {
            "replica"
        };
        settings.replication.accept = vec![AcceptedPeer {
            region: other.to_string(),
            token: TOKEN.into(),
        }];
        servers.push(server::start(&settings, Arc::new(Faults::default())).await?);
        roots.push(root);
    }
    let replica = servers.pop().expect("two servers");
    let primary = servers.pop().expect("two servers");
    let replica_root = roots.pop().expect("two roots");
    let regions = Regions {
        primary,
        replica,
        replica_root,
        primary_root: roots.pop().expect("two roots"),
        http: reqwest::Client::new(),
    };
    regions.create_namespace(NS).await?;
    Ok(regions)
}

/// Registers the replica as the primary's peer.
pub(super) async fn register_peer(regions: &Regions) -> anyhow::Result<()> {
    register(
        &regions.primary,
        "replica",
        &regions.replica,
        &regions.replica_root,
    )
    .await
}

/// Registers `peer` (region `region`, its warehouse under `root`) as a peer of `at`.
pub(super) async fn register(
    at: &RunningServer,
    region: &str,
    peer: &RunningServer,
    root: &Path,
) -> anyhow::Result<()> {
    admin::put_peer(
        &at.catalog,
        None,
        region,
        PeerSpec {
            region: region.to_string(),
            base_url: peer.base_url(),
            credential: Some(TOKEN.into()),
            warehouses: vec![PeerWarehouse {
                warehouse: "bench".to_string(),
                storage_root: format!("file://{}", root.display()),
                s3: None,
            }],
        },
    )
    .await?;
    Ok(())
}

/// The namespace of the lag and backfill tables.
const NS: &str = "b";

impl Regions {
    pub async fn create_namespace(&self, namespace: &str) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/v1/bench/namespaces", self.primary.base_url()))
            .json(&json!({ "namespace": [namespace] }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// A rule that replicates a namespace, or one table of it, to the replica (backfilling what
    /// it holds).
    pub async fn replicate(&self, namespace: &str, table: Option<&str>) -> anyhow::Result<()> {
        admin::create_rule(
            &self.primary.catalog,
            RuleSpec {
                warehouse: "bench".to_string(),
                namespace: Some(vec![namespace.to_string()]),
                table: table.map(str::to_string),
                destinations: vec![Destination {
                    peer: "replica".to_string(),
                    warehouse: "bench".to_string(),
                    namespace_prefix: Vec::new(),
                }],
                ..Default::default()
            },
        )
        .await?;
        Ok(())
    }

    fn table_url(server: &RunningServer, namespace: &str, table: &str) -> String {
        format!(
            "{}/v1/bench/namespaces/{namespace}/tables/{table}",
            server.base_url()
        )
    }

    pub async fn create_table(&self, namespace: &str, name: &str) -> anyhow::Result<Value> {
        let schema = json!({"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "id", "type": "long", "required": false}]});
        let reply = self
            .http
            .post(format!(
                "{}/v1/bench/namespaces/{namespace}/tables",
                self.primary.base_url()
            ))
            .json(&json!({ "name": name, "schema": schema }))
            .send()
            .await?;
        if !reply.status().is_success() {
            bail!("creating {name}: {}", reply.text().await?);
        }
        Ok(reply.json().await?)
    }

    /// Commits to the primary and returns the committed table.
    pub async fn commit(
        &self,
        namespace: &str,
        table: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let reply = self
            .http
            .post(Self::table_url(&self.primary, namespace, table))
            .json(body)
            .send()
            .await?;
        if !reply.status().is_success() {
            bail!("commit to {table}: {}", reply.text().await?);
        }
        Ok(reply.json().await?)
    }

    /// Commits an append snapshot (`id`, `seq`, on `parent`) whose manifest list is `list`, and
    /// makes it `main`; returns the table's new metadata.
    pub async fn append_snapshot(
        &self,
        namespace: &str,
        table: &str,
        id: i64,
        seq: i64,
        parent: Option<i64>,
        list: &str,
    ) -> anyhow::Result<Value> {
        let mut snapshot = json!({ "snapshot-id": id, "sequence-number": seq,
            "timestamp-ms": chrono::Utc::now().timestamp_millis(), "manifest-list": list,
            "summary": { "operation": "append" }, "schema-id": 0 });
        if let Some(parent) = parent {
            snapshot["parent-snapshot-id"] = json!(parent);
        }
        let body = json!({ "requirements": [], "updates": [
            { "action": "add-snapshot", "snapshot": snapshot },
            { "action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": id }] });
        Ok(self.commit(namespace, table, &body).await?["metadata"].clone())
    }

    /// Polls the replica until `visible` holds for its metadata; returns when it does.
    pub async fn wait_visible(
        &self,
        namespace: &str,
        table: &str,
        visible: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let url = Self::table_url(&self.replica, namespace, table);
        let started = Instant::now();
        let mut etag: Option<String> = None;
        loop {
            let mut request = self.http.get(&url);
            if let Some(tag) = &etag {
                request = request.header("if-none-match", tag);
            }
            let reply = request.send().await?;
            if reply.status() == StatusCode::OK {
                etag = reply
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body: Value = reply.json().await?;
                if visible(&body["metadata"]) {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                bail!("the change to {table} did not reach the replica within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn lag(regions: &Regions, commits: usize, append: bool) -> anyhow::Result<Histogram<u64>> {
    let table = if append { "lag_append" } else { "lag_meta" };
    let created = regions.create_table(NS, table).await?;
    let location = created["metadata"]["location"]
        .as_str()
        .context("location")?
        .to_string();
    regions.replicate(NS, Some(table)).await?;
    // Let the table's backfill finish before measuring the tail.
    regions
        .wait_visible(NS, table, |_| true, Duration::from_secs(30))
        .await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut files = SnapshotWriter::default();
    let mut head = created["metadata"].clone();
    for i in 0..commits {
        let marker = format!("{i}");
        let body = if append {
            let parent = head["current-snapshot-id"].as_i64();
            let seq = head["last-sequence-number"].as_i64().unwrap_or(0) + 1;
            let id = 1_000_000 + i as i64;
            let list = files.write_snapshot(&location, id, seq, 1, 1024)?;
            let mut snapshot = json!({ "snapshot-id": id, "sequence-number": seq,
                "timestamp-ms": chrono::Utc::now().timestamp_millis(), "manifest-list": list,
                "summary": { "operation": "append" }, "schema-id": 0 });
            if let Some(parent) = parent {
                snapshot["parent-snapshot-id"] = json!(parent);
            }
            json!({ "requirements": [], "updates": [
                { "action": "add-snapshot", "snapshot": snapshot },
                { "action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": id }] })
        } else {
            json!({ "requirements": [], "updates": [
                { "action": "set-properties", "updates": { "bench.marker": marker } }] })
        };
        let committed = regions.commit(NS, table, &body).await?;
        let acknowledged = Instant::now();
        head = committed["metadata"].clone();
        let want_snapshot = head["current-snapshot-id"].clone();
        regions
            .wait_visible(
                NS,
                table,
                |m| {
                    if append {
                        m["current-snapshot-id"] == want_snapshot
                    } else {
                        m["properties"]["bench.marker"] == marker.as_str()
                    }
                },
                Duration::from_secs(30),
            )
            .await?;
        histogram.record(acknowledged.elapsed().as_micros().max(1) as u64)?;
    }
    Ok(histogram)
}

async fn backfill(regions: &Regions, options: &ReplicationBenchOptions) -> anyhow::Result<()> {
    let files_total = options.backfill_files.max(1);
    let file_size = (options.backfill_mb * 1024 * 1024 / files_total as u64).max(1) as usize;
    let per_snapshot = 50.min(files_total);
    let snapshots = files_total.div_ceil(per_snapshot);
    let created = regions.create_table(NS, "big").await?;
    let location = created["metadata"]["location"]
        .as_str()
        .context("location")?
        .to_string();
    let mut head = created["metadata"].clone();
    let mut writer = SnapshotWriter::default();
    for i in 0..snapshots {
        let files = per_snapshot.min(files_total - i * per_snapshot);
        let parent = head["current-snapshot-id"].as_i64();
        let seq = head["last-sequence-number"].as_i64().unwrap_or(0) + 1;
        let id = 2_000_000 + i as i64;
        let list = writer.write_snapshot(&location, id, seq, files, file_size)?;
        head = regions
            .append_snapshot(NS, "big", id, seq, parent, &list)
            .await?;
    }
    let table_dir = location
        .strip_prefix("file://")
        .context("a file:// location")?
        .to_string();
    let total_bytes = dir_bytes(Path::new(&table_dir))?;
    // The baseline: the same files copied by `cp -r` on the same disk (then synced, since floe's
    // copies are durable before the replica commits).
    let target = regions.replica_root.join("cp-baseline");
    let started = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&table_dir)
        .arg(&target)
        .status()?;
    anyhow::ensure!(status.success(), "cp -r failed");
    let cp = started.elapsed();
    std::process::Command::new("sync").status()?;
    let cp_sync = started.elapsed();
    std::fs::remove_dir_all(&target)?;

    let hwm_before = super::peak_rss_kib();
    let started = Instant::now();
    regions.replicate(NS, Some("big")).await?;
    let want = head["current-snapshot-id"].clone();
    regions
        .wait_visible(
            NS,
            "big",
            |m| m["current-snapshot-id"] == want,
            Duration::from_secs(3600),
        )
        .await?;
    let floe_time = started.elapsed();
    let hwm_after = super::peak_rss_kib();
    println!(
        "\n| backfill | files | GiB | floe s | floe MiB/s | cp -r s | cp -r + sync s | ratio to cp -r | ratio to cp -r + sync | peak RSS MiB (before → after) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let gib = total_bytes as f64 / (1u64 << 30) as f64;
    println!(
        "| {snapshots} snapshots | {files_total} | {gib:.2} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} → {:.0} |",
        floe_time.as_secs_f64(),
        total_bytes as f64 / (1 << 20) as f64 / floe_time.as_secs_f64(),
        cp.as_secs_f64(),
        cp_sync.as_secs_f64(),
        cp.as_secs_f64() / floe_time.as_secs_f64(),
        cp_sync.as_secs_f64() / floe_time.as_secs_f64(),
        hwm_before as f64 / 1024.0,
        hwm_after as f64 / 1024.0
    );
    Ok(())
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
