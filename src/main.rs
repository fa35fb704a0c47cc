//! The floe command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use floe::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "floe",
    version,
    about = "An Iceberg REST catalog with a replicated update log"
)]
struct Cli {
    /// A TOML settings file; `FLOE_*` environment variables override it.
    #[arg(long, short, global = true, env = "FLOE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the catalog (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Run on embedded defaults: a throwaway PostgreSQL and a local warehouse, on 127.0.0.1:8181.
    Dev {
        /// Where the throwaway PostgreSQL and the warehouse live between runs.
        #[arg(long, default_value = ".floe")]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 8181)]
        port: u16,
        /// Port of the replica region (default: the next port).
        #[arg(long)]
        replica_port: Option<u16>,
        /// Register the replica region but create no replication rule.
        #[arg(long)]
        no_rule: bool,
    },
    /// Print the management API's OpenAPI document.
    Openapi,
    /// Measure floe against a throwaway PostgreSQL (build with --release for real figures).
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Commit latency and throughput (metadata-only and appends), and loadTable latency.
    Commits {
        /// Seconds per scenario.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent writers, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32])]
        writers: Vec<usize>,
        /// Tables the writers spread over, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 100])]
        tables: Vec<usize>,
        /// Instead of floe in-process: the base URL of any Iceberg REST catalog (floe elsewhere,
        /// or a peer), in namespaces the benchmark creates there.
        #[arg(long)]
        url: Option<String>,
        /// With --url: the catalog's prefix (default: what its /v1/config answers).
        #[arg(long, requires = "url")]
        prefix: Option<String>,
    },
    /// Replication lag between two local regions, and backfill throughput against `cp -r`.
    Replication {
        /// Commits measured per kind (metadata-only, small append).
        #[arg(long, default_value_t = 300)]
        commits: usize,
        /// Size of the backfilled table, in MiB.
        #[arg(long, default_value_t = 2048)]
        backfill_mb: u64,
        /// Data files of the backfilled table.
        #[arg(long, default_value_t = 1000)]
        backfill_files: usize,
        /// Instead: replication with this many tables (time until all replicas exist, lag and
        /// statements per commit against one table, idle CPU, peak RSS with large manifests).
        #[arg(long)]
        tables: Option<usize>,
        /// With --tables: commits per second of the loads.
        #[arg(long, default_value_t = 100)]
        commits_per_second: u32,
        /// With --tables: seconds of each load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// With --tables: seconds of the idle measurement.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        /// With --tables: total size of the large-manifest table's manifests, in MiB.
        #[arg(long, default_value_t = 1024)]
        manifest_mb: u64,
    },
    /// Failover between two local regions: a planned switchover of a warehouse's tables while
    /// writers commit (how long each table refused writes; nothing acknowledged lost), then a
    /// forced promotion back.
    Failover {
        /// Tables switched over.
        #[arg(long, default_value_t = 100)]
        tables: usize,
        /// Writers committing at the primary throughout.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Seconds of writes before the switchover.
        #[arg(long, default_value_t = 3)]
        warm_seconds: u64,
        /// Commits per second of all the writers together (0: as fast as they can, more than
        /// the replica can follow, so the switchover waits for its lag).
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
    /// What a synchronous replication rule costs a commit, beside an asynchronous one: two
    /// local regions, alternating rounds, commits/s and latency per mode.
    Sync {
        /// Tables per mode.
        #[arg(long, default_value_t = 100)]
        tables: usize,
        /// Writer counts for metadata-only commits (small appends are one writer's).
        #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
        writers: Vec<usize>,
        /// Seconds per round.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds per mode, alternating.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// What authentication adds: loadTable and commits without auth, with a static token, an OIDC
    /// JWT and a floe-issued token, and each credential check alone.
    Auth {
        /// Seconds per scenario.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// What floe adds in front of an upstream catalog: commits and loadTable, direct and through
    /// floe, in alternating rounds.
    Proxy {
        /// Seconds per scenario.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds of each scenario per path.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Seconds of commits on each path before the rounds, not measured (the upstream's JIT,
        /// both paths' connections).
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        /// Start the reference catalog's server with TCP_NODELAY
        /// (`-Dsun.net.httpserver.nodelay=true`): its answers then do not wait for the client's
        /// delayed ACK (40 ms), which otherwise comes sooner or later for either path.
        #[arg(long, requires = "java_catalog")]
        java_catalog_nodelay: bool,
        /// Start the Apache Iceberg reference catalog with this `run.sh`
        /// (../shared/tools/java-catalog/run.sh) on the benchmark's PostgreSQL.
        #[arg(long)]
        java_catalog: Option<PathBuf>,
        /// Or floe's own builtin catalog, in process, as the upstream.
        #[arg(long, conflicts_with = "java_catalog")]
        builtin_upstream: bool,
        /// Or measure a running upstream catalog at this base URL...
        #[arg(long, conflicts_with_all = ["java_catalog", "builtin_upstream"], requires = "upstream_root")]
        upstream: Option<String>,
        /// ... whose tables' files are under this root.
        #[arg(long, requires = "upstream")]
        upstream_root: Option<String>,
    },
    /// Replication's file copies against an S3-compatible server (s3s-fs), against `aws s3 cp`.
    S3Copy {
        /// The s3s-fs binary (default: ~/.cargo/bin/s3s-fs).
        #[arg(long)]
        s3s_fs: Option<PathBuf>,
        /// Total size of the objects, in MiB.
        #[arg(long, default_value_t = 1024)]
        total_mb: u64,
        /// Number of objects.
        #[arg(long, default_value_t = 256)]
        files: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fix_mmap_threshold();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLOE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            let running = floe::server::start(&settings, Arc::default()).await?;
            let grace = std::time::Duration::from_secs(settings.shutdown_grace_seconds);
            running
                .run_until_signalled(grace)
                .await
                .context("serving")?;
        }
        Command::Migrate => {
            let pool =
                floe::db::connect_lazy(settings.require_database_url()?, &settings.database)?;
            floe::db::migrate(&pool).await?;
            eprintln!("migrations applied");
        }
        Command::Dev {
            state_dir,
            port,
            replica_port,
            no_rule,
        } => {
            let options = floe::dev::DevOptions {
                state_dir,
                port,
                replica_port,
                no_rule,
            };
            floe::dev::run(settings, options).await?;
        }
        Command::Openapi => println!("{}", floe::http::management::openapi_json()),
        Command::Bench(Bench::Commits {
            seconds,
            writers,
            tables,
            url,
            prefix,
        }) => {
            let options = floe::bench::BenchOptions {
                seconds,
                writers,
                tables,
                url,
                prefix,
            };
            floe::bench::run_commits(options).await?;
        }
        Command::Bench(Bench::Replication {
            tables: Some(tables),
            commits_per_second,
            seconds,
            idle_seconds,
            manifest_mb,
            ..
        }) => {
            let options = floe::bench::replication_scale::ScaleOptions {
                tables,
                commits_per_second,
                seconds,
                idle_seconds,
                manifest_mb,
            };
            floe::bench::replication_scale::run_scale(options).await?;
        }
        Command::Bench(Bench::Replication {
            commits,
            backfill_mb,
            backfill_files,
            tables: None,
            ..
        }) => {
            let options = floe::bench::replication::ReplicationBenchOptions {
                commits,
                backfill_mb,
                backfill_files,
            };
            floe::bench::replication::run_replication(options).await?;
        }
        Command::Bench(Bench::Failover {
            tables,
            writers,
            warm_seconds,
            rate,
        }) => {
            let options = floe::bench::failover::FailoverBenchOptions {
                tables,
                writers,
                warm_seconds,
                rate,
            };
            floe::bench::failover::run_failover(options).await?;
        }
        Command::Bench(Bench::Sync {
            tables,
            writers,
            seconds,
            rounds,
        }) => {
            let options = floe::bench::sync::SyncBenchOptions {
                tables,
                writers,
                seconds,
                rounds,
            };
            floe::bench::sync::run_sync(options).await?;
        }
        Command::Bench(Bench::Auth { seconds }) => {
            floe::bench::auth::run_auth(floe::bench::auth::AuthBenchOptions { seconds }).await?;
        }
        Command::Bench(Bench::Proxy {
            seconds,
            rounds,
            warmup,
            java_catalog_nodelay,
            java_catalog,
            builtin_upstream,
            upstream,
            upstream_root,
        }) => {
            let options = floe::bench::proxy::ProxyBenchOptions {
                seconds,
                rounds,
                warmup,
                java_catalog_nodelay,
                java_catalog,
                builtin_upstream,
                upstream,
                upstream_root,
            };
            floe::bench::proxy::run_proxy(options).await?;
        }
        Command::Bench(Bench::S3Copy {
            s3s_fs,
            total_mb,
            files,
        }) => {
            let s3s_fs = s3s_fs.unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/s3s-fs")
            });
            let options = floe::bench::s3::S3BenchOptions {
                s3s_fs,
                total_mb,
                files,
            };
            floe::bench::s3::run_s3(options).await?;
        }
    }
    Ok(())
}

/// Large buffers (manifests, manifest lists, delete files: megabytes each) are mapped and unmapped
/// on their own, so their memory goes back to the system when freed. glibc raises its mmap
/// threshold each time such a buffer is freed, after which the next ones come from the per-thread
/// heaps and stay: replicating 1 GiB of 8 MiB manifests peaked at 230-259 MiB with the dynamic
/// threshold and at 64 MiB with a fixed one (`floe bench replication --tables 10`, BENCHMARKS.md).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, under the allocator's own lock.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
