//! Replication under faults, with each region a real `floe serve` process (its own database and
//! warehouse): the destination killed with SIGKILL during a stream of commits, the source killed
//! during a backfill's copy, and two source instances sharing one database.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{append_commit, snapshot_ids};
use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

const TOKEN: &str = "source-to-replica-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One region's `floe serve` process and what it needs to restart.
struct Region {
    child: Option<Child>,
    config: PathBuf,
    base: String,
    warehouse: PathBuf,
    _dir: tempfile::TempDir,
}

impl Region {
    /// A region on a fresh database, or on `database` (to share one with another instance).
    async fn start(region: &str, accept: Option<&str>, database: Option<String>) -> Self {
        let url = match database {
            Some(url) => url,
            None => common::new_database().await,
        };
        let dir = tempfile::tempdir().unwrap();
        let warehouse = dir.path().join("wh");
        std::fs::create_dir_all(&warehouse).unwrap();
        let port = free_port();
        let mut text = format!(
            "region = \"{region}\"\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\n\n\
             [[warehouses]]\nname = \"wh\"\nroot = \"file://{}\"\n\n[replication]\n\
             poll_interval_ms = 200\nretry_base_ms = 50\nretry_max_ms = 500\nlease_seconds = 2\n",
            warehouse.display()
        );
        if let Some(source) = accept {
            text.push_str(&format!(
                "\n[[replication.accept]]\nregion = \"{source}\"\ntoken = \"{TOKEN}\"\n"
            ));
        }
        let config = dir.path().join("floe.toml");
        std::fs::write(&config, text).unwrap();
        let mut region = Self {
            child: None,
            config,
            base: format!("http://127.0.0.1:{port}"),
            warehouse,
            _dir: dir,
        };
        region.spawn().await;
        region
    }

    fn database_url(&self) -> String {
        let text = std::fs::read_to_string(&self.config).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("database_url = "))
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_floe"))
            .args(["--config", self.config.to_str().unwrap(), "serve"])
            .env("FLOE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn floe");
        self.child = Some(child);
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/v1/config", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("floe did not start at {}", self.base);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn root(&self) -> String {
        format!("file://{}", self.warehouse.display())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(url: String, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(body)).await
}

async fn get(url: String) -> Value {
    let (status, body) = call(reqwest::Method::GET, url, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Registers `replica` as a peer of `source` and replicates the whole warehouse to it.
async fn connect(source: &Region, replica: &Region) {
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{}/management/v1/peers/replica", source.base),
        Some(
            json!({ "region": "replica", "base-url": replica.base, "credential": TOKEN,
            "warehouses": [{ "warehouse": "wh", "storage-root": replica.root() }] }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        format!("{}/management/v1/replication-rules", source.base),
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

async fn create_table(source: &Region) {
    post(
        format!("{}/v1/wh/namespaces", source.base),
        json!({ "namespace": ["db"] }),
    )
    .await;
    let (status, body) = post(
        format!("{}/v1/wh/namespaces/db/tables", source.base),
        json!({ "name": "t", "schema": common::simple_schema() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Appends a snapshot with `files` real data files; returns its id.
async fn append(source: &Region, writer: &mut SnapshotWriter, files: usize, size: usize) -> i64 {
    let url = format!("{}/v1/wh/namespaces/db/tables/t", source.base);
    let loaded = get(url.clone()).await;
    let uuid = loaded["metadata"]["table-uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let location = loaded["metadata"]["location"].as_str().unwrap().to_string();
    let parent = loaded["metadata"]["current-snapshot-id"].as_i64();
    let seq = loaded["metadata"]["last-sequence-number"].as_i64().unwrap() + 1;
    let id = 5000 + seq;
    let list = writer
        .write_snapshot(&location, id, seq, files, size)
        .unwrap();
    let mut body = append_commit(&uuid, parent, id, seq);
    body["updates"][0]["snapshot"]["manifest-list"] = json!(list);
    let (status, reply) = post(url, body).await;
    assert_eq!(status, 200, "{reply}");
    id
}

async fn wait_completed(source: &Region, seconds: u64) -> Value {
    let url = format!("{}/management/v1/tables/wh/db/t/replication", source.base);
    let mut last = Value::Null;
    for _ in 0..seconds * 10 {
        last = get(url.clone()).await;
        let d = &last["destinations"][0];
        assert_ne!(d["state"], "failed", "{last}");
        if d["state"] == "completed" && d["applied-version"] == d["source-version"] {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replication did not complete: {last}");
}

/// The replica's log entries for the table: each source position exactly once, in order.
async fn assert_applied_once_in_order(replica: &Region) -> Vec<Value> {
    let log = get(format!(
        "{}/management/v1/log?after=0&limit=1000",
        replica.base
    ))
    .await;
    let entries: Vec<Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["table-name"] == "t")
        .cloned()
        .collect();
    let versions: Vec<i64> = entries
        .iter()
        .map(|e| e["table-version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, (1..=entries.len() as i64).collect::<Vec<_>>());
    let positions: Vec<(i64, i64)> = entries
        .iter()
        .map(|e| {
            let p = &e["details"]["position"];
            (p["version"].as_i64().unwrap(), p["step"].as_i64().unwrap())
        })
        .collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        positions, sorted,
        "positions repeat or go back: {positions:?}"
    );
    entries
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(data_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

async fn assert_same_snapshots(source: &Region, replica: &Region) {
    let a = get(format!("{}/v1/wh/namespaces/db/tables/t", source.base)).await;
    let b = get(format!("{}/v1/wh/namespaces/db/tables/t", replica.base)).await;
    let (mut ids_a, mut ids_b) = (snapshot_ids(&a), snapshot_ids(&b));
    ids_a.sort_unstable();
    ids_b.sort_unstable();
    assert_eq!(ids_a, ids_b);
    assert_eq!(
        a["metadata"]["current-snapshot-id"],
        b["metadata"]["current-snapshot-id"]
    );
    assert_eq!(
        data_files(&source.warehouse).len(),
        data_files(&replica.warehouse).len()
    );
}

#[tokio::test]
async fn destination_killed_during_commits_catches_up_by_itself() {
    let mut replica = Region::start("replica", Some("source"), None).await;
    let source = Region::start("source", None, None).await;
    connect(&source, &replica).await;
    create_table(&source).await;
    let mut writer = SnapshotWriter::default();
    for _ in 0..5 {
        append(&source, &mut writer, 1, 2048).await;
    }
    wait_completed(&source, 30).await;

    // The destination dies; the source keeps committing, and every commit is acknowledged.
    replica.kill9();
    for _ in 0..15 {
        append(&source, &mut writer, 1, 2048).await;
    }
    let status = get(format!(
        "{}/management/v1/tables/wh/db/t/replication",
        source.base
    ))
    .await;
    assert!(
        status["destinations"][0]["lag-versions"].as_i64().unwrap() > 0,
        "{status}"
    );

    replica.spawn().await;
    wait_completed(&source, 60).await;
    assert_same_snapshots(&source, &replica).await;
    assert_applied_once_in_order(&replica).await;
}

#[tokio::test]
async fn source_killed_during_backfill_resumes_to_the_exact_result() {
    let replica = Region::start("replica", Some("source"), None).await;
    let mut source = Region::start("source", None, None).await;
    create_table(&source).await;
    let mut writer = SnapshotWriter::default();
    for _ in 0..40 {
        append(&source, &mut writer, 10, 64 * 1024).await;
    }
    connect(&source, &replica).await;
    // Kill the source once the backfill has copied some files but not all.
    for _ in 0..400 {
        if data_files(&replica.warehouse).len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    source.kill9();
    let copied = data_files(&replica.warehouse).len();
    eprintln!("source killed after {copied} of 400 data files were copied");
    assert!(
        copied < 400,
        "the backfill finished before the kill ({copied} files)"
    );

    source.spawn().await;
    wait_completed(&source, 120).await;
    assert_same_snapshots(&source, &replica).await;
    assert_applied_once_in_order(&replica).await;
    let leaks = common::iceberg_files::files_mentioning(
        &replica.warehouse,
        &source.warehouse.display().to_string(),
    );
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[tokio::test]
async fn two_source_instances_on_one_database_apply_each_entry_once() {
    let replica = Region::start("replica", Some("source"), None).await;
    let first = Region::start("source", None, None).await;
    let second = Region::start("source", None, Some(first.database_url())).await;
    // Both instances serve the same warehouse directory, as instances behind one load balancer.
    std::fs::remove_dir_all(&second.warehouse).unwrap();
    std::os::unix::fs::symlink(&first.warehouse, &second.warehouse).unwrap();
    connect(&first, &replica).await;
    create_table(&first).await;
    let mut writer = SnapshotWriter::default();
    for i in 0..20 {
        let instance = if i % 2 == 0 { &first } else { &second };
        append(instance, &mut writer, 1, 1024).await;
    }
    wait_completed(&first, 60).await;
    assert_same_snapshots(&first, &replica).await;
    let entries = assert_applied_once_in_order(&replica).await;
    let commits = entries
        .iter()
        .filter(|e| e["kind"] == "commit-table")
        .count();
    // The backfill's steps plus one entry per source commit after it; never more.
    assert!(
        commits <= 20 + 2,
        "{commits} commit entries for 20 source commits"
    );
}
