//! Replication under faults, with each region a real `floe serve` process (its own database and
//! warehouse): the destination killed with SIGKILL during a stream of commits, the source killed
//! during a backfill's copy, and two source instances sharing one database.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::region::{
    Region, append_to, create_rule, create_table_named, get, register_peer, wait_completed_for,
};
use common::snapshot_ids;
use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

const TOKEN: &str = "source-to-replica-token";

/// Registers `replica` as a peer of `source` and replicates the whole warehouse to it.
async fn connect(source: &Region, replica: &Region) {
    register_peer(source, replica, "replica", TOKEN).await;
    create_rule(source, json!([{ "peer": "replica", "warehouse": "wh" }])).await;
}

async fn create_table(source: &Region) {
    create_table_named(source, "t").await;
}

async fn append(source: &Region, writer: &mut SnapshotWriter, files: usize, size: usize) -> i64 {
    append_to(source, "t", writer, files, size).await
}

async fn wait_completed(source: &Region, seconds: u64) -> Value {
    wait_completed_for(source, "t", seconds).await
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
    common::files_under(dir)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "parquet"))
        .collect()
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
    let mut replica = Region::start("replica", &[("source", TOKEN)], None).await;
    let source = Region::start("source", &[], None).await;
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
    let replica = Region::start("replica", &[("source", TOKEN)], None).await;
    let mut source = Region::start("source", &[], None).await;
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
    let replica = Region::start("replica", &[("source", TOKEN)], None).await;
    let first = Region::start("source", &[], None).await;
    // Both instances serve the same database and warehouse, as instances behind one load balancer.
    let second = Region::start("source", &[], Some(&first)).await;
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

/// A table state as a reader sees it: the current snapshot and every snapshot held.
fn state_of(table: &Value) -> (Value, Vec<i64>) {
    let mut ids: Vec<i64> = table["metadata"]["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["snapshot-id"].as_i64())
        .collect();
    ids.sort_unstable();
    (table["metadata"]["current-snapshot-id"].clone(), ids)
}

/// kill -9 of the source at 20 random points of replication (copying files, rewriting manifests,
/// the apply request, recording progress), and of the destination at random too: the replica ends
/// exactly at the source's state, applies every position once, and every state a reader saw at
/// the replica meanwhile was one the source had.
#[tokio::test]
async fn random_kills_of_both_regions_leave_no_invented_state() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::rng().random();
    eprintln!("random kill points from seed {seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let mut replica = Region::start("replica", &[("source", TOKEN)], None).await;
    let mut source = Region::start("source", &[], None).await;
    create_table(&source).await;
    connect(&source, &replica).await;
    let table_url = |region: &Region| format!("{}/v1/wh/namespaces/db/tables/t", region.base);
    // The table as created (no snapshot) is a state the source had too.
    let mut source_states =
        std::collections::HashSet::from([state_of(&get(table_url(&source)).await)]);
    let mut writer = SnapshotWriter::default();

    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let (url, seen, stop) = (table_url(&replica), seen.clone(), stop.clone());
        async move {
            let http = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(reply) = http.get(&url).send().await
                    && reply.status() == 200
                    && let Ok(table) = reply.json::<Value>().await
                {
                    seen.lock().unwrap().insert(state_of(&table));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    });

    for round in 0..20 {
        for _ in 0..random.random_range(1..=3) {
            append(&source, &mut writer, 4, 256 * 1024).await;
            source_states.insert(state_of(&get(table_url(&source)).await));
        }
        tokio::time::sleep(Duration::from_millis(random.random_range(0..150))).await;
        source.kill9();
        if random.random_bool(0.35) {
            replica.kill9();
            tokio::time::sleep(Duration::from_millis(random.random_range(0..50))).await;
            replica.spawn().await;
        }
        source.spawn().await;
        eprintln!("round {round}: killed and restarted");
    }
    wait_completed(&source, 120).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.await.unwrap();
    assert_same_snapshots(&source, &replica).await;
    assert_applied_once_in_order(&replica).await;
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the reader saw nothing");
    let invented: Vec<_> = seen
        .iter()
        .filter(|s| !source_states.contains(*s))
        .collect();
    assert!(
        invented.is_empty(),
        "the replica served states the source never had: {invented:?}"
    );
}
