//! `floe bench proxy`: what floe adds in front of an upstream Iceberg REST catalog. The same
//! workload (metadata-only commits over 100 tables, and loadTable of one table, by 1 and by 8
//! connections) against the upstream directly and through floe (an `upstream` warehouse, on a
//! throwaway PostgreSQL with fsync on), in alternating rounds (direct then through floe, through
//! floe then direct, ...) so that drift on shared cores, and an upstream slowing down as it fills,
//! hit both paths alike, after a warm-up that is not measured; then metadata-only commits by one
//! writer paired request by request (a direct commit, then one through floe, or the other way
//! round), the finest measure of the latency floe adds, since whatever drifts (a JIT, a store
//! filling up, the rest of the machine) falls on both paths within milliseconds. Throughput needs
//! the paths apart, so the rounds measure it. Prints Markdown tables for BENCHMARKS.md.
//!
//! The upstream is the Apache Iceberg reference catalog, started here on the same PostgreSQL
//! server (`--java-catalog`), floe's own builtin catalog in process (`--builtin-upstream`: a
//! catalog fast enough that what the proxy adds shows), or any catalog already running
//! (`--upstream` with the root of its warehouse, where floe reads the metadata files it logs).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::commits::{self, CommitKind, Endpoint, Outcome, client, ms};
use crate::catalog::Faults;
use crate::config::{Backend, Settings, UpstreamSettings, WarehouseSettings};
use crate::pgtemp::PgCluster;
use crate::server;

#[derive(Debug, Clone)]
pub struct ProxyBenchOptions {
    pub seconds: u64,
    /// Rounds of each scenario per path.
    pub rounds: usize,
    /// Seconds of commits by 8 connections on each path before the rounds, not measured.
    pub warmup: u64,
    /// The reference catalog's server with TCP_NODELAY.
    pub java_catalog_nodelay: bool,
    /// The reference catalog's `run.sh`, to start it here.
    pub java_catalog: Option<PathBuf>,
    /// floe's own builtin catalog as the upstream, in process (what the proxy adds, measured
    /// against a catalog with millisecond latencies).
    pub builtin_upstream: bool,
    /// Or a running upstream's base URL...
    pub upstream: Option<String>,
    /// ... and its warehouse root (`file://...` or `s3://...`).
    pub upstream_root: Option<String>,
}

/// The reference catalog's process group, killed when dropped.
struct JavaCatalog(Child);

impl Drop for JavaCatalog {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

pub async fn run_proxy(options: ProxyBenchOptions) -> anyhow::Result<()> {
    super::with_throwaway_cluster(async |cluster, dir| run(cluster, dir, &options).await).await
}

async fn run(cluster: &PgCluster, dir: &Path, options: &ProxyBenchOptions) -> anyhow::Result<()> {
    let http = client(None)?;
    let mut builtin = None;
    let (upstream, root, _java) = match (&options.java_catalog, &options.upstream) {
        (Some(launcher), _) => {
            let (url, root, java) =
                start_java_catalog(cluster, dir, launcher, options.java_catalog_nodelay, &http)
                    .await?;
            (url, root, Some(java))
        }
        (None, Some(url)) => {
            let root = options
                .upstream_root
                .clone()
                .context("--upstream needs --upstream-root: where its tables' files are")?;
            (url.trim_end_matches('/').to_string(), root, None)
        }
        (None, None) if options.builtin_upstream => {
            let (server, _) =
                commits::start_server_with(cluster, dir, "upstream", 8, |_| {}, None).await?;
            let url = server.base_url();
            let root = format!("file://{}", dir.join("warehouseupstream").display());
            builtin = Some(server);
            (url, root, None)
        }
        (None, None) => {
            bail!("give --java-catalog, --builtin-upstream, or --upstream and --upstream-root")
        }
    };
    cluster.ensure_database("proxy").await?;
    let mut lake = WarehouseSettings::builtin("lake", root);
    lake.backend = Backend::Upstream;
    lake.upstream = Some(UpstreamSettings::new(&upstream));
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        database_url: Some(cluster.url("proxy").into()),
        warehouses: vec![lake],
        ..Settings::default()
    };
    settings.database.max_connections = 32;
    let floe = server::start(&settings, Arc::new(Faults::default())).await?;
    let result = measure(&http, &upstream, &floe.base_url(), options).await;
    floe.stop().await;
    if let Some(builtin) = builtin {
        builtin.stop().await;
    }
    result
}

/// One scenario's figures on one path.
struct Row {
    scenario: &'static str,
    connections: usize,
    path: &'static str,
    outcome: Outcome,
}

async fn measure(
    http: &reqwest::Client,
    upstream: &str,
    floe: &str,
    options: &ProxyBenchOptions,
) -> anyhow::Result<()> {
    let direct_api = commits::catalog_api(http, upstream, None).await?;
    let floe_api = format!("{floe}/v1/lake");
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    println!(
        "floe bench proxy --upstream {upstream}: {} s per scenario, {} rounds after {} s of \
         warm-up, {} cores{}\n",
        options.seconds,
        options.rounds,
        options.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if options.java_catalog_nodelay {
            ", the reference catalog with TCP_NODELAY"
        } else {
            ""
        }
    );
    // Warm-up, not measured: the reference catalog's JIT takes seconds of commits to settle,
    // and a first round would otherwise measure it.
    if options.warmup > 0 {
        for (path, api) in [("warmup_direct", &direct_api), ("warmup_floe", &floe_api)] {
            let endpoint = Endpoint::create(http, api, &format!("proxy_{run}_{path}")).await?;
            commits::commits(
                &endpoint,
                http,
                CommitKind::MetadataOnly,
                8,
                100,
                options.warmup,
            )
            .await?;
        }
        eprintln!("warm-up done");
    }
    let mut rows = Vec::new();
    let mut namespace = 0;
    for round in 0..options.rounds {
        for connections in [1usize, 8] {
            // Each path goes first in every other round: what the upstream slows down by as
            // it fills (its store, its files) falls on both alike.
            let mut paths = [("direct", &direct_api), ("through floe", &floe_api)];
            if round % 2 == 1 {
                paths.reverse();
            }
            for (path, api) in paths {
                namespace += 1;
                let ns = format!("proxy_{run}_{namespace}");
                let endpoint = Endpoint::create(http, api, &ns).await?;
                let outcome = commits::commits(
                    &endpoint,
                    http,
                    CommitKind::MetadataOnly,
                    connections,
                    100,
                    options.seconds,
                )
                .await?;
                rows.push(Row {
                    scenario: "commit (metadata-only, 100 tables)",
                    connections,
                    path,
                    outcome,
                });
                commits::create_table(http, &endpoint, "load").await?;
                let outcome =
                    commits::loads(&endpoint, http, "load", connections, options.seconds).await?;
                rows.push(Row {
                    scenario: "loadTable",
                    connections,
                    path,
                    outcome,
                });
            }
        }
        eprintln!("round {} of {} done", round + 1, options.rounds);
    }
    let paired = paired_commits(http, &direct_api, &floe_api, run, options).await?;
    println!("| operation | connections | path | ops/s | p50 ms | p99 ms |");
    println!("|---|---:|---|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            row.scenario,
            row.connections,
            row.path,
            row.outcome.per_second(),
            ms(row.outcome.latency_us.value_at_quantile(0.5)),
            ms(row.outcome.latency_us.value_at_quantile(0.99)),
        );
    }
    println!(
        "\nThrough floe against direct, all rounds' latencies together (added p50 and p99, and \
         throughput through floe as a share of direct):\n"
    );
    println!(
        "| operation | connections | p50 added ms | p99 added ms | throughput | machine CPU ms/op \
         direct | through floe |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for scenario in ["commit (metadata-only, 100 tables)", "loadTable"] {
        for connections in [1usize, 8] {
            let pick = |path: &str| {
                let mut latency = commits::histogram();
                let (mut ops, mut seconds, mut busy) = (0u64, 0f64, Some(0f64));
                for row in rows.iter().filter(|r| {
                    r.scenario == scenario && r.connections == connections && r.path == path
                }) {
                    let _ = latency.add(&row.outcome.latency_us);
                    ops += row.outcome.committed;
                    seconds += row.outcome.elapsed.as_secs_f64();
                    busy = busy
                        .zip(row.outcome.cpu)
                        .map(|(b, cpu)| b + cpu.busy_seconds);
                }
                // What the whole machine (client, upstream, floe, PostgreSQL) spent per op.
                let cpu_ms = busy.filter(|_| ops > 0).map_or("-".to_string(), |b| {
                    format!("{:.2}", b * 1000.0 / ops as f64)
                });
                (latency, ops as f64 / seconds, cpu_ms)
            };
            let (direct, direct_rate, direct_cpu) = pick("direct");
            let (through, through_rate, through_cpu) = pick("through floe");
            let added = |q: f64| ms(through.value_at_quantile(q)) - ms(direct.value_at_quantile(q));
            println!(
                "| {scenario} | {connections} | {:+.2} | {:+.2} | {:.0}% | {direct_cpu} | \
                 {through_cpu} |",
                added(0.5),
                added(0.99),
                100.0 * through_rate / direct_rate
            );
        }
    }
    let [direct, through] = &paired;
    println!(
        "\nPaired by request (one connection to each path, each commit directly followed by one \
         through floe, or the other way round, in turn; what drifts hits both alike):\n"
    );
    println!(
        "| operation | commits per path | p50 direct | p50 through floe | p50 added ms | \
         p90 added ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let at = |h: &hdrhistogram::Histogram<u64>, q: f64| ms(h.value_at_quantile(q));
    println!(
        "| commit (metadata-only, 100 tables) | {} | {:.2} | {:.2} | {:+.2} | {:+.2} |",
        direct.len(),
        at(direct, 0.5),
        at(through, 0.5),
        at(through, 0.5) - at(direct, 0.5),
        at(through, 0.9) - at(direct, 0.9),
    );
    Ok(())
}

/// Metadata-only commits by one writer that alternates between the paths request by request
/// (direct then through floe, then the other way round), for `rounds x seconds` seconds: the
/// latency each path adds, with the upstream's drift (its JIT, its store filling up, the other
/// work on the machine) falling on both alike. Returns the latencies, direct then through floe.
async fn paired_commits(
    http: &reqwest::Client,
    direct_api: &str,
    floe_api: &str,
    run: &str,
    options: &ProxyBenchOptions,
) -> anyhow::Result<[hdrhistogram::Histogram<u64>; 2]> {
    let endpoints = [
        Endpoint::create(http, direct_api, &format!("proxy_{run}_paired")).await?,
        Endpoint::create(http, floe_api, &format!("proxy_{run}_paired_floe")).await?,
    ];
    const TABLES: usize = 100;
    for endpoint in &endpoints {
        for t in 0..TABLES {
            commits::create_table(http, endpoint, &format!("t{t}")).await?;
        }
    }
    let mut latency = [commits::histogram(), commits::histogram()];
    let deadline = Instant::now() + Duration::from_secs(options.seconds * options.rounds as u64);
    let mut i = 0usize;
    while Instant::now() < deadline {
        let order: [usize; 2] = if i.is_multiple_of(2) { [0, 1] } else { [1, 0] };
        for path in order {
            let body = serde_json::json!({"requirements": [], "updates": [
                {"action": "set-properties", "updates": {"bench.i": i.to_string()}}]});
            let url = endpoints[path].table(&format!("t{}", i % TABLES));
            let start = Instant::now();
            let reply = http.post(&url).json(&body).send().await?;
            let status = reply.status();
            reply.bytes().await?;
            if !status.is_success() {
                bail!("a paired commit answered {status}");
            }
            latency[path].record((start.elapsed().as_micros() as u64).max(1))?;
        }
        i += 1;
    }
    eprintln!("paired commits done");
    Ok(latency)
}

/// The reference catalog on 127.0.0.1, its tables in database `upstream` of `cluster` and its
/// files under `dir`; returns its URL and warehouse root.
async fn start_java_catalog(
    cluster: &PgCluster,
    dir: &Path,
    launcher: &Path,
    nodelay: bool,
    http: &reqwest::Client,
) -> anyhow::Result<(String, String, JavaCatalog)> {
    cluster.ensure_database("upstream").await?;
    let warehouse = dir.join("upstream-warehouse");
    std::fs::create_dir_all(&warehouse)?;
    let root = format!("file://{}", warehouse.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new("bash");
    if nodelay {
        // Read by the JVM at start (the JDK's HTTP server leaves Nagle on by default).
        command.env("JAVA_TOOL_OPTIONS", "-Dsun.net.httpserver.nodelay=true");
    }
    let child = command
        .arg(launcher)
        .arg(port.to_string())
        .arg(format!(
            "jdbc:postgresql://127.0.0.1:{}/upstream",
            cluster.port()
        ))
        .arg("postgres")
        .arg(&root)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", launcher.display()))?;
    let java = JavaCatalog(child);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..900 {
        if http
            .get(format!("{url}/v1/config"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok((url, root, java));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the reference catalog did not start at {url}")
}
