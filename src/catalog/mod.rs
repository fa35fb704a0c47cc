//! The catalog service (builtin backend): namespaces, tables, views and the commit path. It decides; the
//! `db` and `log` modules own the SQL, `storage` owns file IO, and nothing here knows about HTTP.

pub mod commit;
pub mod metadata;
pub mod metadata_cache;
pub mod namespace_replica;
pub mod namespaces;
pub mod paths;
pub mod promotion;
pub mod purge;
pub mod purge_jobs;
pub mod replica;
pub mod replica_build;
mod replica_group;
pub mod replica_home;
mod replica_prepare;
mod replica_state;
pub mod requests;
pub mod sync_commit;
pub mod table_locks;
pub mod tables;
pub mod view_replica;
pub mod views;
pub mod write_rule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Settings;
use crate::db;
use crate::error::{CatalogError, CatalogResult};
use crate::log::wake::LogWake;
use crate::storage::{self, Location, Storage};
use crate::upstream::UpstreamCatalog;
use metadata_cache::MetadataCache;
use table_locks::TableLocks;

/// A configured warehouse, as loaded at start.
#[derive(Debug, Clone)]
pub struct Warehouse {
    pub id: Uuid,
    pub name: String,
    /// Where the warehouse's files live; every table path must lie under it (see `paths`).
    pub root: Location,
    pub storage: Arc<dyn Storage>,
    /// What loadTable's `config` tells clients so they can read the files (S3 endpoint, region,
    /// path style), and the keys added for clients that ask for vended credentials.
    pub client_config: BTreeMap<String, String>,
    pub vended_credentials: BTreeMap<String, String>,
    /// The catalog that serves an `upstream` warehouse; `None` for floe's builtin catalog.
    pub upstream: Option<Arc<UpstreamCatalog>>,
}

impl Warehouse {
    /// loadTable's `config` for this warehouse; keys only when vending is on and asked for.
    pub fn table_config(&self, delegation_requested: bool) -> BTreeMap<String, String> {
        let mut config = self.client_config.clone();
        if delegation_requested {
            config.extend(self.vended_credentials.clone());
        }
        config
    }
}

/// The `config` clients need for a warehouse's storage (Iceberg's `s3.*` property names, which
/// PyIceberg, DuckDB, Spark and Trino read).
fn client_config(wh: &crate::config::WarehouseSettings) -> [BTreeMap<String, String>; 2] {
    let (mut config, mut vended) = (BTreeMap::new(), BTreeMap::new());
    let is_s3 = Location::parse(&wh.root).is_ok_and(|root| root.is_s3());
    if let Some(s3) = wh.s3.as_ref().filter(|_| is_s3) {
        if let Some(endpoint) = wh.client_s3_endpoint.as_ref().or(s3.endpoint.as_ref()) {
            config.insert("s3.endpoint".to_string(), endpoint.clone());
        }
        if let Some(region) = &s3.region {
            config.insert("s3.region".to_string(), region.clone());
            config.insert("client.region".to_string(), region.clone());
        }
        config.insert(
            "s3.path-style-access".to_string(),
            s3.path_style.to_string(),
        );
        if wh.vend_credentials
            && let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key)
        {
            vended.insert("s3.access-key-id".to_string(), key.clone());
            vended.insert(
                "s3.secret-access-key".to_string(),
                secret.expose().to_string(),
            );
        }
    }
    [config, vended]
}

/// Failures a test can inject between two steps of a commit, or into replication, to prove the
/// crash paths.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail after the metadata files and log rows are written, just before COMMIT.
    pub fail_before_commit: AtomicBool,
    /// Panic at the start of a replication stream's task.
    pub panic_in_stream_task: AtomicBool,
}

impl Faults {
    /// Panics when a test asked for a panic in a stream task.
    pub fn check_in_stream_task(&self) {
        if self.panic_in_stream_task.load(Ordering::SeqCst) {
            panic!("injected panic in a replication stream task");
        }
    }

    fn check_before_commit(&self) -> CatalogResult<()> {
        if self.fail_before_commit.load(Ordering::SeqCst) {
            return Err(CatalogError::Injected("before COMMIT of a table change"));
        }
        Ok(())
    }
}

/// The catalog service shared by all request handlers.
#[derive(Debug)]
pub struct Catalog {
    pool: PgPool,
    region: String,
    public_url: Option<String>,
    warehouses: BTreeMap<String, Warehouse>,
    default_warehouse: Option<String>,
    faults: Arc<Faults>,
    metadata: MetadataCache,
    /// View metadata by location, as `metadata` holds tables'.
    view_metadata: MetadataCache<iceberg::spec::ViewMetadata>,
    table_locks: TableLocks,
    /// `max_manifest_bytes`: the most of a manifest-like file read into memory.
    max_manifest_bytes: u64,
    /// Wakes the purge worker when a drop records a purge.
    purge_wakeup: tokio::sync::Notify,
    /// Wakes the log's readers after each commit that appended to it.
    log_wake: Arc<LogWake>,
    /// What a commit to a table under a synchronous rule asks of its destinations (set by the
    /// server at start: `replication::sync`).
    sync_replication: std::sync::OnceLock<Arc<dyn sync_commit::SyncReplication>>,
}

impl Catalog {
    /// Loads the configured warehouses, creating missing ones in the database.
    pub async fn start(
        pool: PgPool,
        settings: &Settings,
        faults: Arc<Faults>,
    ) -> CatalogResult<Self> {
        let mut warehouses = BTreeMap::new();
        for wh in &settings.warehouses {
            let root = storage::parse_root(&wh.root)?;
            let row = db::catalog::upsert_warehouse(&pool, &wh.name, &root.to_string()).await?;
            let owner = format!("warehouse `{}`", wh.name);
            let storage = storage::open(&root, wh.s3.as_ref(), &owner).await?;
            let [client_config, vended_credentials] = client_config(wh);
            let upstream = match (&wh.upstream, wh.backend) {
                (Some(upstream), crate::config::Backend::Upstream) => Some(Arc::new(
                    UpstreamCatalog::new(&wh.name, upstream, settings.max_body_bytes).map_err(
                        |e| {
                            CatalogError::BadRequest(format!(
                                "warehouse `{}`: upstream {e}",
                                wh.name
                            ))
                        },
                    )?,
                )),
                _ => None,
            };
            warehouses.insert(
                row.name.clone(),
                Warehouse {
                    id: row.warehouse_id,
                    name: row.name,
                    root,
                    storage,
                    client_config,
                    vended_credentials,
                    upstream,
                },
            );
        }
        let default_warehouse = settings
            .default_warehouse
            .clone()
            .or_else(|| (warehouses.len() == 1).then(|| warehouses.keys().next().cloned())?);
        Ok(Self {
            pool,
            region: settings.region.clone(),
            public_url: settings.replication.public_url.clone(),
            warehouses,
            default_warehouse,
            faults,
            metadata: MetadataCache::new(
                settings.metadata_cache_bytes,
                settings.max_metadata_bytes,
            ),
            // Views are few and small beside tables: a sixteenth of the budget holds many.
            view_metadata: MetadataCache::new(
                settings.metadata_cache_bytes / 16,
                settings.max_metadata_bytes,
            ),
            table_locks: TableLocks::default(),
            max_manifest_bytes: settings.max_manifest_bytes,
            purge_wakeup: tokio::sync::Notify::new(),
            log_wake: Arc::new(LogWake::default()),
            sync_replication: std::sync::OnceLock::new(),
        })
    }

    /// Installs synchronous replication (once; later calls change nothing).
    pub fn set_sync_replication(&self, sync: Arc<dyn sync_commit::SyncReplication>) {
        let _ = self.sync_replication.set(sync);
    }

    /// Where log readers in this process wait for commits (see `log::wake`).
    pub fn log_wake(&self) -> &Arc<LogWake> {
        &self.log_wake
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The most of a manifest list, manifest, position-delete or Puffin file read into memory.
    pub fn max_manifest_bytes(&self) -> u64 {
        self.max_manifest_bytes
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Where other regions' clients reach this region (`replication.public_url`), if configured.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    pub fn warehouses(&self) -> impl Iterator<Item = &Warehouse> {
        self.warehouses.values()
    }

    /// Whether every table and view of the warehouse is a replica (and it has some).
    pub async fn holds_only_replicas(&self, wh: &Warehouse) -> CatalogResult<bool> {
        Ok(db::catalog::warehouse_holds_only_replicas(&self.pool, wh.id).await?)
    }

    pub fn warehouse_by_id(&self, id: Uuid) -> Option<&Warehouse> {
        self.warehouses.values().find(|wh| wh.id == id)
    }

    /// The parsed metadata file at a location of this warehouse (cached; files are immutable).
    pub async fn load_metadata(
        &self,
        wh: &Warehouse,
        location: &str,
    ) -> CatalogResult<Arc<metadata_cache::CachedMetadata>> {
        self.metadata.load(&*wh.storage, location).await
    }

    /// Keeps metadata known to be at `location` (an upstream's answer for the state it just made),
    /// so the next commit's read of it as its state before is a cache hit, not a read and a parse.
    pub fn remember_metadata(&self, location: &str, metadata: iceberg::spec::TableMetadata) {
        match metadata_cache::CachedMetadata::from_parsed(metadata) {
            Ok(cached) => self.metadata.insert(location, Arc::new(cached)),
            Err(err) => tracing::debug!(%err, location, "metadata not cached"),
        }
    }

    /// The parsed view metadata file at a location of this warehouse (cached; files are immutable).
    pub async fn load_view_metadata(
        &self,
        wh: &Warehouse,
        location: &str,
    ) -> CatalogResult<Arc<views::CachedView>> {
        self.view_metadata.load(&*wh.storage, location).await
    }

    /// The warehouse a request names (by prefix or `?warehouse=`), or the default one.
    pub fn warehouse(&self, name: Option<&str>) -> CatalogResult<&Warehouse> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => name,
            None => self.default_warehouse.as_deref().ok_or_else(|| {
                CatalogError::BadRequest(format!(
                    "no warehouse given and no default: pass `warehouse` (one of: {})",
                    self.warehouses
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        };
        self.warehouses
            .get(name)
            .ok_or_else(|| CatalogError::no_such_warehouse(name))
    }
}
