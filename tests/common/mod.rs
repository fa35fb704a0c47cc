//! Test harness: one throwaway PostgreSQL cluster per test binary (stopped at exit), a fresh database
//! and warehouse directory per test, and floe served in-process on 127.0.0.1.
#![allow(dead_code)]

pub mod iceberg_files;
pub mod java_catalog;
pub mod jwt;
pub mod lake;
pub mod region;
pub mod relay;
pub mod s3;
pub mod views;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use floe::catalog::Faults;
use floe::config::{Settings, WarehouseSettings};
use floe::pgtemp::{PgCluster, PgOptions};
use floe::server::{self, RunningServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static DIRS: OnceLock<tempfile::TempDir> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Some(cluster) = CLUSTER.get() {
        let _ = cluster.stop();
    }
}

/// The shared cluster, started on first use.
pub fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| {
        let dir = DIRS.get_or_init(|| tempfile::tempdir().expect("tempdir"));
        let cluster = PgCluster::start(
            &dir.path().join("pg"),
            &PgOptions {
                fast_unsafe: true,
                ..PgOptions::default()
            },
        )
        .expect("start the throwaway PostgreSQL");
        // Statics are never dropped; stop PostgreSQL when the test process exits.
        unsafe { nix::libc::atexit(stop_cluster) };
        cluster
    })
}

/// A fresh, empty database; returns its URL.
pub async fn new_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let cluster = tokio::task::spawn_blocking(cluster).await.unwrap();
    cluster
        .ensure_database(&name)
        .await
        .expect("create database");
    cluster.url(&name)
}

pub fn settings(database_url: &str, warehouse_root: &std::path::Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database_url.into()),
        max_body_bytes: 1024 * 1024,
        warehouses: vec![WarehouseSettings::builtin(
            "wh",
            format!("file://{}", warehouse_root.display()),
        )],
        ..Settings::default()
    }
}

/// The settings of [`TestFloe::start_region`], on a fresh database and warehouse directory,
/// for a test to change before it starts the region.
pub async fn region_settings(
    region: &str,
    accept: &[(&str, &str)],
) -> (Settings, tempfile::TempDir) {
    let url = new_database().await;
    let warehouse_dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&url, warehouse_dir.path());
    settings.region = region.to_string();
    settings.replication.poll_interval_ms = 200;
    settings.replication.retry_base_ms = 50;
    settings.replication.retry_max_ms = 1_000;
    settings.replication.accept = accept
        .iter()
        .map(|(region, token)| floe::config::AcceptedPeer {
            region: region.to_string(),
            token: (*token).into(),
        })
        .collect();
    (settings, warehouse_dir)
}

/// floe on a fresh database and warehouse.
pub struct TestFloe {
    pub server: RunningServer,
    pub settings: Settings,
    pub warehouse_dir: tempfile::TempDir,
    pub faults: Arc<Faults>,
    pub http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the status and, for errors, the ErrorModel shape.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        if status >= 400 {
            let error = &self.body["error"];
            assert_eq!(error["code"], status, "ErrorModel code: {}", self.body);
            assert!(
                error["type"].as_str().is_some_and(|t| !t.is_empty()),
                "{}",
                self.body
            );
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{}",
                self.body
            );
        }
        self.body
    }

    pub fn error_type(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap_or_default()
    }
}

impl TestFloe {
    pub async fn start() -> Self {
        let url = new_database().await;
        let warehouse_dir = tempfile::tempdir().unwrap();
        let settings = settings(&url, warehouse_dir.path());
        Self::start_with(settings, warehouse_dir).await
    }

    /// A region: its own database and warehouse, accepting replication from `accept`
    /// (region, token) and polling quickly so tests need not wait for the default interval.
    pub async fn start_region(region: &str, accept: &[(&str, &str)]) -> Self {
        if let Ok(filter) = std::env::var("FLOE_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let (settings, warehouse_dir) = region_settings(region, accept).await;
        Self::start_with(settings, warehouse_dir).await
    }

    /// The warehouse root as a `file://` URI.
    pub fn warehouse_root(&self) -> String {
        format!("file://{}", self.warehouse_dir.path().display())
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn start_with(settings: Settings, warehouse_dir: tempfile::TempDir) -> Self {
        let faults = Arc::new(Faults::default());
        let server = server::start(&settings, faults.clone())
            .await
            .expect("start floe");
        Self {
            server,
            settings,
            warehouse_dir,
            faults,
            http: reqwest::Client::new(),
        }
    }

    /// Stops this server and starts a new one on the same database and warehouse.
    pub async fn restart(self) -> Self {
        let Self {
            server,
            settings,
            warehouse_dir,
            ..
        } = self;
        server.stop().await;
        Self::start_with(settings, warehouse_dir).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url(), path)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A GET's body as text (an answer that is not JSON), once it answered 200.
    pub async fn get_text(&self, path: &str) -> String {
        let answer = self.http.get(self.url(path)).send().await.expect("request");
        assert_eq!(answer.status(), 200, "{path}");
        answer.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    /// commitTable on `namespace.table`.
    pub async fn commit(&self, namespace: &str, table: &str, body: Value) -> Reply {
        self.post(
            &format!("/v1/wh/namespaces/{namespace}/tables/{table}"),
            body,
        )
        .await
    }

    /// The status of a HEAD request.
    pub async fn head(&self, path: &str) -> u16 {
        self.call(Method::HEAD, path, None).await.status.as_u16()
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    pub async fn create_namespace(&self, levels: &[&str]) {
        self.post("/v1/wh/namespaces", json!({ "namespace": levels }))
            .await
            .expect(200);
    }

    /// Creates `ns.name` with a two-column schema; returns the LoadTableResult.
    pub async fn create_table(&self, ns: &str, name: &str) -> Value {
        self.create_table_reply(ns, name).await.expect(200)
    }

    pub async fn create_table_reply(&self, ns: &str, name: &str) -> Reply {
        self.post(
            &format!("/v1/wh/namespaces/{ns}/tables"),
            json!({ "name": name, "schema": simple_schema() }),
        )
        .await
    }

    /// All log entries, in order.
    pub async fn log(&self) -> Vec<Value> {
        let page = self
            .get("/management/v1/log?after=0&limit=1000")
            .await
            .expect(200);
        page["entries"].as_array().unwrap().clone()
    }

    /// The URL of the database this floe runs on, for a test's own connections.
    pub fn database_url(&self) -> &str {
        self.settings.database_url.as_ref().unwrap().expose()
    }

    /// Waits (up to 20 s) until every purge a drop recorded has run.
    pub async fn wait_for_purges(&self) {
        let pool = sqlx::PgPool::connect(self.database_url()).await.unwrap();
        for _ in 0..400 {
            let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM purge_job")
                .fetch_one(&pool)
                .await
                .unwrap();
            if pending == 0 {
                pool.close().await;
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("purges did not finish");
    }

    /// Number of files under the warehouse directory.
    pub fn warehouse_files(&self) -> usize {
        fn count(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| {
                            if e.path().is_dir() {
                                count(&e.path())
                            } else {
                                1
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(self.warehouse_dir.path())
    }
}

/// Every file under a directory, at any depth.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Whether a table's replication status shows every destination `completed` at the source's version
/// (and there is at least one).
pub fn replication_completed(status: &Value) -> bool {
    let destinations = status["destinations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    !destinations.is_empty()
        && destinations
            .iter()
            .all(|d| d["state"] == "completed" && d["applied-version"] == d["source-version"])
}

/// The snapshot ids in a LoadTableResult's metadata, in the order it lists them.
pub fn snapshot_ids(load_result: &Value) -> Vec<i64> {
    load_result["metadata"]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot-id"].as_i64().unwrap())
        .collect()
}

pub fn simple_schema() -> Value {
    json!({
        "type": "struct",
        "schema-id": 0,
        "fields": [
            { "id": 1, "name": "id", "type": "long", "required": false },
            { "id": 2, "name": "data", "type": "string", "required": false }
        ]
    })
}

/// A table as a commit names it: its UUID (for `assert-table-uuid`) and its location (which every
/// path a commit adds must lie under).
#[derive(Debug, Clone)]
pub struct TableId {
    pub uuid: String,
    pub location: String,
}

impl TableId {
    /// From a loadTable or createTable answer.
    pub fn of(answer: &Value) -> Self {
        Self {
            uuid: answer["metadata"]["table-uuid"]
                .as_str()
                .unwrap()
                .to_string(),
            location: answer["metadata"]["location"].as_str().unwrap().to_string(),
        }
    }
}

/// A commit that adds a snapshot on top of `parent` and moves `main` to it, asserting `main` is at
/// `parent` (metadata only: the manifest list, named under the table's location, is not read by
/// the catalog).
pub fn append_commit(table: &TableId, parent: Option<i64>, snapshot_id: i64, seq: i64) -> Value {
    let table_uuid = &table.uuid;
    let mut snapshot = json!({
        "snapshot-id": snapshot_id,
        "sequence-number": seq,
        "timestamp-ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        "manifest-list": format!("{}/metadata/snap-{snapshot_id}.avro", table.location),
        "summary": { "operation": "append" },
        "schema-id": 0
    });
    if let Some(parent) = parent {
        snapshot["parent-snapshot-id"] = json!(parent);
    }
    json!({
        "requirements": [
            { "type": "assert-table-uuid", "uuid": table_uuid },
            { "type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": parent }
        ],
        "updates": [
            { "action": "add-snapshot", "snapshot": snapshot },
            { "action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": snapshot_id }
        ]
    })
}

/// This machine's files as a storage (root `/`), for tests that write table files the way a
/// client would, beside floe.
pub fn host_files() -> floe::storage::LocalStorage {
    floe::storage::LocalStorage::new(floe::storage::Location::parse("file:///").unwrap()).unwrap()
}

/// The next append to a table, its files already written.
pub struct Append {
    pub snapshot_id: i64,
    /// The commit request that adds the snapshot on top of the table's current one.
    pub body: Value,
    /// Every file written: data files, the manifest, the manifest list.
    pub files: Vec<String>,
}

/// Writes the next snapshot of a table (`loaded` is its loadTable answer) into its location
/// through `storage`: `files` data files of `size` bytes, a manifest and the manifest list; the
/// commit is the caller's, over whichever harness serves the table.
pub async fn prepare_append(
    loaded: &Value,
    writer: &mut floe::bench::files::SnapshotWriter,
    storage: &dyn floe::storage::Storage,
    files: usize,
    size: usize,
) -> Append {
    let metadata = &loaded["metadata"];
    let location = metadata["location"].as_str().unwrap();
    let parent = metadata["current-snapshot-id"].as_i64();
    let seq = metadata["last-sequence-number"].as_i64().unwrap() + 1;
    let snapshot_id = 1000 + seq;
    let mut written = Vec::new();
    let list = writer
        .write_snapshot_to(location, snapshot_id, seq, files, size, |file, bytes| {
            written.push((file.to_string(), bytes.to_vec()));
            Ok(())
        })
        .unwrap();
    for (file, bytes) in &written {
        let mut reader = bytes.as_slice();
        let location = floe::storage::Location::parse(file).unwrap();
        storage
            .write_stream(&location, &mut reader, false)
            .await
            .unwrap();
    }
    let mut body = append_commit(&TableId::of(loaded), parent, snapshot_id, seq);
    body["updates"][0]["snapshot"]["manifest-list"] = json!(list);
    Append {
        snapshot_id,
        body,
        files: written.into_iter().map(|(file, _)| file).collect(),
    }
}
