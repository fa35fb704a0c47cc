//! `floe dev`: floe on embedded defaults. A throwaway PostgreSQL in the state directory (unless a
//! database URL is configured) and two regions in one process: `primary` on 127.0.0.1:8181 and
//! `replica` on the next port, each with its own database and local-filesystem warehouse, the
//! replica registered as the primary's peer and (unless `--no-rule`) a rule replicating the
//! primary's warehouse to it. The state is kept for the next start; Ctrl-C stops PostgreSQL too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;

use crate::catalog::Faults;
use crate::config::{AcceptedPeer, Settings, WarehouseSettings};
use crate::contract::replication_model::{Destination, PeerSpec, PeerWarehouse, RuleSpec};
use crate::pgtemp::{PgCluster, PgOptions};
use crate::replication::admin;
use crate::server;

pub const DEV_DATABASE: &str = "floe";
pub const DEV_REPLICA_DATABASE: &str = "floe_replica";
pub const DEV_WAREHOUSE: &str = "demo";
pub const PRIMARY_REGION: &str = "primary";
pub const REPLICA_REGION: &str = "replica";

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub state_dir: PathBuf,
    pub port: u16,
    /// The replica region's port (default: `port + 1`).
    pub replica_port: Option<u16>,
    /// Register the replica as a peer but create no rule (to try backfill by adding one later).
    pub no_rule: bool,
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

    let mut replica_database = None;
    let cluster = match settings.database_url {
        Some(_) => None,
        None => {
            let dir = cluster_dir(&state_dir);
            let cluster =
                tokio::task::spawn_blocking(move || PgCluster::start(&dir, &PgOptions::default()))
                    .await??;
            cluster.ensure_database(DEV_DATABASE).await?;
            cluster.ensure_database(DEV_REPLICA_DATABASE).await?;
            // For psql, and for tools a developer runs beside floe on the same server.
            eprintln!(
                "floe dev: PostgreSQL at {} (the replica region's database: {DEV_REPLICA_DATABASE})",
                cluster.url(DEV_DATABASE)
            );
            settings.database_url = Some(cluster.url(DEV_DATABASE).into());
            replica_database = Some(cluster.url(DEV_REPLICA_DATABASE));
            Some(cluster)
        }
    };
    if settings.region == Settings::default().region {
        settings.region = PRIMARY_REGION.to_string();
    }
    if settings.warehouses.is_empty() {
        let root = state_dir.join("warehouse");
        std::fs::create_dir_all(&root)?;
        settings.warehouses.push(WarehouseSettings::builtin(
            DEV_WAREHOUSE,
            format!("file://{}", root.display()),
        ));
    }
    settings.listen.set_port(options.port);
    settings.replication.public_url = Some(format!("http://{}", settings.listen));
    settings.validate()?;
    // The replica region needs its own database: only with the throwaway cluster.
    let replica = match replica_database {
        Some(url) => {
            let (replica, token) = replica_settings(&settings, &state_dir, url, &options)?;
            // Each region is the other's peer: a promotion at the replica replicates back.
            settings.replication.accept.push(AcceptedPeer {
                region: replica.region.clone(),
                token: token.clone().into(),
            });
            Some((replica, token))
        }
        None => {
            eprintln!("floe dev: a database URL is configured, so only the primary region runs");
            None
        }
    };

    let result = serve_until_interrupted(&settings, replica, options.no_rule).await;
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
        eprintln!(
            "floe dev: PostgreSQL stopped; state kept in {}",
            state_dir.display()
        );
    }
    result
}

/// The replica region: its own database, warehouse and port, accepting the primary's pushes with a
/// token made for this run.
fn replica_settings(
    primary: &Settings,
    state_dir: &Path,
    database_url: String,
    options: &DevOptions,
) -> anyhow::Result<(Settings, String)> {
    let root = state_dir.join("replica-warehouse");
    std::fs::create_dir_all(&root)?;
    let token = format!("dev-{}", uuid::Uuid::new_v4().simple());
    let mut replica = primary.clone();
    replica.region = REPLICA_REGION.to_string();
    replica.database_url = Some(database_url.into());
    replica.warehouses = vec![WarehouseSettings::builtin(
        DEV_WAREHOUSE,
        format!("file://{}", root.display()),
    )];
    replica.default_warehouse = None;
    let port = options
        .replica_port
        .unwrap_or_else(|| options.port.saturating_add(1));
    replica.listen.set_port(port);
    replica.replication.public_url = Some(format!("http://{}", replica.listen));
    replica.replication.accept = vec![AcceptedPeer {
        region: primary.region.clone(),
        token: token.clone().into(),
    }];
    replica.validate()?;
    Ok((replica, token))
}

/// Registers each region as the other's peer (so that a promotion at the replica replicates the
/// table back by itself) and, unless told not to, replicates the primary's warehouse to the
/// replica (the rule is created once and kept in the database).
async fn connect_regions(
    (primary, primary_settings): (&server::RunningServer, &Settings),
    (replica, replica_settings): (&server::RunningServer, &Settings),
    token: String,
    no_rule: bool,
) -> anyhow::Result<()> {
    let catalog = &primary.catalog;
    admin::put_peer(
        catalog,
        None,
        &replica_settings.region,
        peer_spec(replica, replica_settings, &token),
    )
    .await?;
    admin::put_peer(
        &replica.catalog,
        None,
        &primary_settings.region,
        peer_spec(primary, primary_settings, &token),
    )
    .await?;
    if !no_rule && admin::list_rules(catalog).await?.is_empty() {
        admin::create_rule(
            catalog,
            RuleSpec {
                warehouse: DEV_WAREHOUSE.to_string(),
                namespace: None,
                table: None,
                destinations: vec![Destination {
                    peer: replica_settings.region.clone(),
                    warehouse: DEV_WAREHOUSE.to_string(),
                    namespace_prefix: Vec::new(),
                }],
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

/// `region` as a peer reached with `token`, with its warehouses' roots.
fn peer_spec(region: &server::RunningServer, settings: &Settings, token: &str) -> PeerSpec {
    PeerSpec {
        region: settings.region.clone(),
        base_url: region.base_url(),
        credential: Some(token.to_string().into()),
        warehouses: settings
            .warehouses
            .iter()
            .map(|wh| PeerWarehouse {
                warehouse: wh.name.clone(),
                storage_root: wh.root.clone(),
                s3: wh.s3.clone(),
            })
            .collect(),
    }
}

async fn serve_until_interrupted(
    settings: &Settings,
    replica: Option<(Settings, String)>,
    no_rule: bool,
) -> anyhow::Result<()> {
    // Listening from the start: a signal while the regions start stops them once they have.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let replica = match replica {
        Some((replica_settings, token)) => {
            let running = server::start(&replica_settings, Arc::new(Faults::default())).await?;
            Some((running, replica_settings, token))
        }
        None => None,
    };
    let running = server::start(settings, Arc::new(Faults::default())).await?;
    if let Some((replica, replica_settings, token)) = &replica {
        connect_regions(
            (&running, settings),
            (replica, replica_settings),
            token.clone(),
            no_rule,
        )
        .await?;
    }
    print_instructions(&running.base_url(), &settings.warehouses[0].name);
    if let Some((replica, _, _)) = &replica {
        print_replica_instructions(&running.base_url(), &replica.base_url(), no_rule);
    }
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("floe dev: stopping");
    running.stop().await;
    if let Some((replica, _, _)) = replica {
        replica.stop().await;
    }
    Ok(())
}

fn print_replica_instructions(primary: &str, replica: &str, no_rule: bool) {
    let rule = if no_rule {
        format!(
            "No rule yet (--no-rule). Replicate the warehouse with:
  curl -X POST {primary}/management/v1/replication-rules -H 'content-type: application/json' \\
    -d '{{\"warehouse\":\"demo\",\"destinations\":[{{\"peer\":\"replica\",\"warehouse\":\"demo\"}}]}}'"
        )
    } else {
        "Every table of warehouse `demo` is replicated to the replica region.".to_string()
    };
    println!(
        r#"Region `replica` serves read-only replicas at {replica} (warehouse `demo`).
{rule}
Replication status of a table: curl '{primary}/management/v1/tables/demo/<namespace>/<table>/replication'
"#
    );
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
