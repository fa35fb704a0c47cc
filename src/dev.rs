//! `floe dev`: floe on embedded defaults. A throwaway PostgreSQL in the state directory (unless a
//! database URL is configured), a local-filesystem warehouse, and the catalog on 127.0.0.1:8181.
//! The state is kept for the next start; Ctrl-C stops PostgreSQL too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;

use crate::catalog::Faults;
use crate::config::{Settings, WarehouseSettings};
use crate::pgtemp::{PgCluster, PgOptions};
use crate::server;

pub const DEV_DATABASE: &str = "floe";
pub const DEV_WAREHOUSE: &str = "demo";

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub state_dir: PathBuf,
    pub port: u16,
}

/// Where the cluster lives: in the state directory, unless the `postgres` user (which runs it when
/// floe runs as root) cannot reach that directory, e.g. under a 0700 home.
fn cluster_dir(state_dir: &Path) -> PathBuf {
    let preferred = state_dir.join("postgres");
    let reachable = !nix::unistd::geteuid().is_root()
        || Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-x"])
            .arg(state_dir)
            .status()
            .is_ok_and(|s| s.success());
    if reachable {
        return preferred;
    }
    let tag = state_dir
        .to_string_lossy()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    PathBuf::from(format!("/var/tmp/floe-dev-{tag:x}"))
}

pub async fn run(mut settings: Settings, options: DevOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.state_dir)
        .with_context(|| format!("creating {}", options.state_dir.display()))?;
    let state_dir = options.state_dir.canonicalize()?;

    let cluster = match settings.database_url {
        Some(_) => None,
        None => {
            let dir = cluster_dir(&state_dir);
            let cluster =
                tokio::task::spawn_blocking(move || PgCluster::start(&dir, &PgOptions::default()))
                    .await??;
            cluster.ensure_database(DEV_DATABASE).await?;
            settings.database_url = Some(cluster.url(DEV_DATABASE));
            Some(cluster)
        }
    };
    if settings.warehouses.is_empty() {
        let root = state_dir.join("warehouse");
        std::fs::create_dir_all(&root)?;
        settings.warehouses.push(WarehouseSettings {
            name: DEV_WAREHOUSE.to_string(),
            root: format!("file://{}", root.display()),
        });
    }
    settings.listen.set_port(options.port);
    settings.validate()?;

    let result = serve_until_interrupted(&settings).await;
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
        eprintln!(
            "floe dev: PostgreSQL stopped; state kept in {}",
            state_dir.display()
        );
    }
    result
}

async fn serve_until_interrupted(settings: &Settings) -> anyhow::Result<()> {
    let running = server::start(settings, Arc::new(Faults::default())).await?;
    print_instructions(&running.base_url(), &settings.warehouses[0].name);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("floe dev: stopping");
    running.stop().await;
    Ok(())
}

fn print_instructions(url: &str, warehouse: &str) {
    println!(
        r#"
floe is serving the Iceberg REST catalog at {url} (warehouse `{warehouse}`).

DuckDB (1.5 with the iceberg extension):
  ATTACH '{warehouse}' AS floe (TYPE iceberg, ENDPOINT '{url}', AUTHORIZATION_TYPE 'none');
  CREATE SCHEMA floe.demo; CREATE TABLE floe.demo.t (id BIGINT, s VARCHAR);

PyIceberg:
  from pyiceberg.catalog import load_catalog
  cat = load_catalog("floe", type="rest", uri="{url}", warehouse="{warehouse}")

Spark (Iceberg 1.10 runtime on the classpath):
  --conf spark.sql.catalog.floe=org.apache.iceberg.spark.SparkCatalog
  --conf spark.sql.catalog.floe.type=rest
  --conf spark.sql.catalog.floe.uri={url}
  --conf spark.sql.catalog.floe.warehouse={warehouse}

The update log: curl '{url}/management/v1/log?after=0'
Press Ctrl-C to stop (the database and warehouse are kept for the next start).
"#
    );
}
