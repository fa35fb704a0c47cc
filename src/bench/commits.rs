//! `floe bench commits`: commit and loadTable latency and throughput. By default against floe
//! served in-process on 127.0.0.1 over a throwaway PostgreSQL (durable settings: fsync on) and a
//! local warehouse, a fresh one per scenario; with `--url`, the same workload against any Iceberg
//! REST catalog (floe elsewhere, or a peer), so that floe and its peers are measured by one tool in
//! one run. The benchmark creates the namespaces and tables it uses. Prints Markdown tables for
//! BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};

use super::cpu::{CpuSample, CpuUse};
use crate::catalog::Faults;
use crate::config::{Settings, WarehouseSettings};
use crate::pgtemp::PgCluster;
use crate::server::{self, RunningServer};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub seconds: u64,
    pub writers: Vec<usize>,
    pub tables: Vec<usize>,
    /// Another catalog's base URL (the one clients are given); `None`: floe in-process.
    pub url: Option<String>,
    /// With `url`: the catalog's prefix (default: what its `/v1/config` says, if anything).
    pub prefix: Option<String>,
}

/// Where the benchmark's requests go: a catalog's `/v1[/{prefix}]` and the namespace that holds
/// the benchmark's tables.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    api: String,
    namespace: String,
}

impl Endpoint {
    /// Namespace `b` of warehouse `bench` of a floe started by [`start_server_with`].
    pub(crate) fn of_server(server: &RunningServer) -> Self {
        Self {
            api: format!("{}/v1/bench", server.base_url()),
            namespace: "b".to_string(),
        }
    }

    /// A namespace of its own at the catalog whose API is at `api`, created now.
    pub(crate) async fn create(
        http: &reqwest::Client,
        api: &str,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let reply = http
            .post(format!("{api}/namespaces"))
            .json(&json!({ "namespace": [namespace] }))
            .send()
            .await?;
        if !reply.status().is_success() {
            bail!("creating namespace {namespace}: {}", reply.text().await?);
        }
        Ok(Self {
            api: api.to_string(),
            namespace: namespace.to_string(),
        })
    }

    fn tables(&self) -> String {
        format!("{}/namespaces/{}/tables", self.api, self.namespace)
    }

    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}/{name}", self.tables())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitKind {
    /// set-properties: no conflicts between writers, the commit path alone.
    MetadataOnly,
    /// add-snapshot + set-snapshot-ref guarded by assert-ref-snapshot-id, retried on 409 as clients do.
    SmallAppend,
}

/// What one writer or reader task did: its latencies, successes and 409 conflicts.
type TaskResult = anyhow::Result<(Histogram<u64>, u64, u64)>;

/// What the tasks of one scenario did, added up.
pub(crate) struct Outcome {
    pub(crate) latency_us: Histogram<u64>,
    /// Successful commits (or loads).
    pub(crate) committed: u64,
    conflicts: u64,
    pub(crate) elapsed: Duration,
    /// The whole machine's CPU over the scenario (see `bench::cpu`).
    pub(crate) cpu: Option<CpuUse>,
}

impl Outcome {
    /// Joins the tasks, each returning (latencies, successes, conflicts), and sums their results.
    /// `started`: when the tasks began, and the machine's CPU counters then.
    async fn gather(
        tasks: Vec<tokio::task::JoinHandle<TaskResult>>,
        (started, cpu_before): (Instant, Option<CpuSample>),
    ) -> anyhow::Result<Self> {
        let mut outcome = Outcome {
            latency_us: histogram(),
            committed: 0,
            conflicts: 0,
            elapsed: Duration::ZERO,
            cpu: None,
        };
        for task in tasks {
            let (latency, committed, conflicts) = task.await.context("bench task")??;
            outcome.latency_us.add(latency)?;
            outcome.committed += committed;
            outcome.conflicts += conflicts;
        }
        outcome.elapsed = started.elapsed();
        outcome.cpu = cpu_before.zip(CpuSample::now()).map(|(a, b)| a.until(&b));
        Ok(outcome)
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.committed as f64 / self.elapsed.as_secs_f64()
    }

    /// The machine's CPU milliseconds per success, and the steal share, as two table cells.
    fn cpu_cells(&self) -> String {
        match self.cpu {
            Some(cpu) if self.committed > 0 => format!(
                "{:.2} | {:.0}",
                cpu.busy_seconds * 1000.0 / self.committed as f64,
                cpu.steal_percent
            ),
            _ => "- | -".to_string(),
        }
    }
}

/// The fields of a table's metadata a writer needs for its next append. Parsing only these keeps
/// the client's share of the two cores small.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Head {
    current_snapshot_id: Option<i64>,
    #[serde(default)]
    last_sequence_number: i64,
    /// Where the table's files go (a commit's paths must lie under its warehouse).
    location: String,
}

#[derive(Debug, Deserialize)]
struct TableReply {
    metadata: Head,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Latencies in nanoseconds, up to a second.
pub(crate) fn histogram_ns() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000, 3).expect("histogram bounds")
}

pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub async fn run_commits(options: BenchOptions) -> anyhow::Result<()> {
    if let Some(url) = &options.url {
        return run_against(url, &options).await;
    }
    super::with_throwaway_cluster(async |cluster, dir| {
        run_with_cluster(cluster, dir, &options).await
    })
    .await
}

/// The workload against the catalog at `url`, in namespaces of this run's own.
async fn run_against(url: &str, options: &BenchOptions) -> anyhow::Result<()> {
    let http = client(None)?;
    let url = url.trim_end_matches('/');
    let api = catalog_api(&http, url, options.prefix.as_deref()).await?;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    println!(
        "floe bench commits --url {url}: {} s per scenario, {} cores, namespaces floe_bench_{run}_*\n",
        options.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    commit_scenarios(options, async |scenario, kind, writers, tables| {
        let endpoint =
            Endpoint::create(&http, &api, &format!("floe_bench_{run}_{scenario}")).await?;
        commits(&endpoint, &http, kind, writers, tables, options.seconds).await
    })
    .await?;
    let endpoint = Endpoint::create(&http, &api, &format!("floe_bench_{run}_load")).await?;
    load_scenarios(&endpoint, &http, options.seconds).await
}

/// A catalog's `/v1[/{prefix}]`: with `prefix`, or the one its `/v1/config` answers, if any.
pub(crate) async fn catalog_api(
    http: &reqwest::Client,
    url: &str,
    prefix: Option<&str>,
) -> anyhow::Result<String> {
    let prefix = match prefix {
        Some(prefix) => Some(prefix.to_string()),
        None => {
            let config: Value = http
                .get(format!("{url}/v1/config"))
                .send()
                .await?
                .error_for_status()
                .context("GET /v1/config")?
                .json()
                .await?;
            config["overrides"]["prefix"].as_str().map(str::to_string)
        }
    };
    Ok(match prefix {
        Some(prefix) => format!("{url}/v1/{prefix}"),
        None => format!("{url}/v1"),
    })
}

/// Runs every commit scenario (kind x tables x writers), numbered from 1, and prints its row.
async fn commit_scenarios(
    options: &BenchOptions,
    mut run: impl AsyncFnMut(usize, CommitKind, usize, usize) -> anyhow::Result<Outcome>,
) -> anyhow::Result<usize> {
    println!(
        "| commit | writers | tables | commits/s | p50 ms | p99 ms | max ms | 409 retries | \
         machine CPU ms/commit | steal % |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut scenario = 0;
    for kind in [CommitKind::MetadataOnly, CommitKind::SmallAppend] {
        for &tables in &options.tables {
            for &writers in &options.writers {
                scenario += 1;
                let outcome = run(scenario, kind, writers, tables).await?;
                print_commit_row(kind, writers, tables, &outcome);
            }
        }
    }
    Ok(scenario)
}

fn print_commit_row(kind: CommitKind, writers: usize, tables: usize, o: &Outcome) {
    println!(
        "| {} | {writers} | {tables} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
        match kind {
            CommitKind::MetadataOnly => "metadata-only",
            CommitKind::SmallAppend => "small append",
        },
        o.per_second(),
        ms(o.latency_us.value_at_quantile(0.5)),
        ms(o.latency_us.value_at_quantile(0.99)),
        ms(o.latency_us.max()),
        o.conflicts,
        o.cpu_cells()
    );
}

/// loadTable of a table of 1 and of 100 snapshots, by 1 and 8 readers.
async fn load_scenarios(
    endpoint: &Endpoint,
    http: &reqwest::Client,
    seconds: u64,
) -> anyhow::Result<()> {
    println!(
        "\n| loadTable | readers | snapshots | loads/s | p50 ms | p99 ms | machine CPU ms/load | \
         steal % |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for snapshots in [1usize, 100] {
        let table = format!("load{snapshots}");
        let mut current = create_table(http, endpoint, &table).await?;
        for i in 0..snapshots {
            current = append(http, endpoint, &table, &current, i as i64).await?;
        }
        for readers in [1usize, 8] {
            let o = loads(endpoint, http, &table, readers, seconds).await?;
            println!(
                "| full metadata | {readers} | {snapshots} | {:.0} | {:.2} | {:.2} | {} |",
                o.per_second(),
                ms(o.latency_us.value_at_quantile(0.5)),
                ms(o.latency_us.value_at_quantile(0.99)),
                o.cpu_cells()
            );
        }
    }
    Ok(())
}

async fn run_with_cluster(
    cluster: &PgCluster,
    dir: &std::path::Path,
    options: &BenchOptions,
) -> anyhow::Result<()> {
    println!(
        "floe bench commits: {} s per scenario, PostgreSQL with fsync on, local warehouse, {} cores\n",
        options.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let scenarios = commit_scenarios(options, async |scenario, kind, writers, tables| {
        let (server, http) = start_server(cluster, dir, scenario, writers).await?;
        let endpoint = Endpoint::of_server(&server);
        let outcome = commits(&endpoint, &http, kind, writers, tables, options.seconds).await;
        server.stop().await;
        outcome
    })
    .await?;
    let (server, http) = start_server(cluster, dir, scenarios + 1, 8).await?;
    let result = load_scenarios(&Endpoint::of_server(&server), &http, options.seconds).await;
    server.stop().await;
    result
}

async fn start_server(
    cluster: &PgCluster,
    dir: &std::path::Path,
    scenario: usize,
    writers: usize,
) -> anyhow::Result<(RunningServer, reqwest::Client)> {
    start_server_with(cluster, dir, &format!("{scenario}"), writers, |_| {}, None).await
}

/// floe on its own database and warehouse (named by `scenario`), its settings changed by
/// `configure`, with namespace `b` created; and a client that sends `bearer` with every request.
pub(crate) async fn start_server_with(
    cluster: &PgCluster,
    dir: &std::path::Path,
    scenario: &str,
    writers: usize,
    configure: impl FnOnce(&mut Settings),
    bearer: Option<&str>,
) -> anyhow::Result<(RunningServer, reqwest::Client)> {
    let database = format!("bench{scenario}");
    cluster.ensure_database(&database).await?;
    let root = dir.join(format!("warehouse{scenario}"));
    std::fs::create_dir_all(&root)?;
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        database_url: Some(cluster.url(&database).into()),
        warehouses: vec![WarehouseSettings::builtin(
            "bench",
            format!("file://{}", root.display()),
        )],
        ..Settings::default()
    };
    settings.database.max_connections = settings.database.max_connections.max(writers as u32);
    configure(&mut settings);
    let server = server::start(&settings, Arc::new(Faults::default())).await?;
    let http = client(bearer)?;
    let endpoint = Endpoint::of_server(&server);
    Endpoint::create(&http, &endpoint.api, &endpoint.namespace).await?;
    Ok((server, http))
}

/// An HTTP client for many concurrent requests, sending `bearer` with each.
pub(crate) fn client(bearer: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = bearer {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .default_headers(headers)
        .build()?)
}

pub(crate) async fn create_table(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    name: &str,
) -> anyhow::Result<Head> {
    let schema = json!({"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "type": "long", "required": false}]});
    let reply = http
        .post(endpoint.tables())
        .json(&json!({"name": name, "schema": schema}))
        .send()
        .await?;
    if !reply.status().is_success() {
        bail!("creating {name}: {}", reply.text().await?);
    }
    Ok(reply.json::<TableReply>().await?.metadata)
}

/// One append on top of `current` (the table's metadata as last seen); returns the new metadata.
async fn append(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    table: &str,
    current: &Head,
    salt: i64,
) -> anyhow::Result<Head> {
    let body = append_body(current, salt);
    let reply = http.post(endpoint.table(table)).json(&body).send().await?;
    if !reply.status().is_success() {
        bail!("append to {table}: {}", reply.text().await?);
    }
    Ok(reply.json::<TableReply>().await?.metadata)
}

fn append_body(current: &Head, salt: i64) -> Value {
    // -1 is how older writers (Apache Iceberg's Java catalog) say "no current snapshot".
    let parent = current.current_snapshot_id.filter(|id| *id >= 0);
    let sequence = current.last_sequence_number + 1;
    let id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 2) as i64 ^ salt;
    let now = chrono::Utc::now().timestamp_millis();
    let mut snapshot = json!({
        "snapshot-id": id, "sequence-number": sequence, "timestamp-ms": now,
        "manifest-list": format!("{}/metadata/snap-{id}.avro", current.location),
        "summary": {"operation": "append", "added-data-files": "1", "added-records": "10"},
        "schema-id": 0
    });
    if let Some(parent) = parent {
        snapshot["parent-snapshot-id"] = json!(parent);
    }
    json!({
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": parent}],
        "updates": [
            {"action": "add-snapshot", "snapshot": snapshot},
            {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": id}
        ]
    })
}

pub(crate) async fn commits(
    endpoint: &Endpoint,
    http: &reqwest::Client,
    kind: CommitKind,
    writers: usize,
    tables: usize,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let mut metadata = Vec::with_capacity(tables);
    for t in 0..tables {
        metadata.push(create_table(http, endpoint, &format!("t{t}")).await?);
    }
    let started = (Instant::now(), CpuSample::now());
    let deadline = started.0 + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let http = http.clone();
        let endpoint = endpoint.clone();
        let mut metadata = metadata.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let (mut committed, mut conflicts) = (0u64, 0u64);
            let mut i = 0usize;
            while Instant::now() < deadline {
                let t = (writer + i * writers) % tables;
                i += 1;
                let url = endpoint.table(&format!("t{t}"));
                let body = match kind {
                    CommitKind::MetadataOnly => json!({"requirements": [], "updates": [
                        {"action": "set-properties", "updates": {"bench.writer": writer.to_string(),
                                                                 "bench.i": i.to_string()}}]}),
                    CommitKind::SmallAppend => append_body(&metadata[t], writer as i64),
                };
                let start = Instant::now();
                let reply = http.post(&url).json(&body).send().await?;
                let status = reply.status();
                if status.is_success() {
                    metadata[t] = reply.json::<TableReply>().await?.metadata;
                    latency.record((start.elapsed().as_micros() as u64).max(1))?;
                    committed += 1;
                } else if status == reqwest::StatusCode::CONFLICT {
                    // As clients do: reload, then try again on the fresh metadata.
                    conflicts += 1;
                    let fresh: TableReply = http.get(&url).send().await?.json().await?;
                    metadata[t] = fresh.metadata;
                } else {
                    bail!("commit answered {status}: {}", reply.text().await?);
                }
            }
            Ok::<_, anyhow::Error>((latency, committed, conflicts))
        }));
    }
    Outcome::gather(tasks, started).await
}

pub(crate) async fn loads(
    endpoint: &Endpoint,
    http: &reqwest::Client,
    table: &str,
    readers: usize,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let url = endpoint.table(table);
    let started = (Instant::now(), CpuSample::now());
    let deadline = started.0 + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut loads = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                let reply = http.get(&url).send().await?;
                if !reply.status().is_success() {
                    bail!("loadTable answered {}", reply.status());
                }
                reply.bytes().await?;
                latency.record((start.elapsed().as_micros() as u64).max(1))?;
                loads += 1;
            }
            Ok::<_, anyhow::Error>((latency, loads, 0))
        }));
    }
    Outcome::gather(tasks, started).await
}
