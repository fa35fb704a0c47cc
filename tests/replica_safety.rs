//! A replica never regresses: a source state that cannot be replicated (a manifest list that does
//! not exist, a corrupt manifest, a manifest over the bound, a position-delete file that is not
//! Parquet) stops the stream with a reason naming the file, while the replica keeps every snapshot
//! it had and its log does not grow; once the bad snapshot is removed at the source and the
//! stream resumed, replication goes on. A resync builds the new generation beside the replica and
//! swaps it in whole: a reader polling the replica meanwhile only ever sees complete states.

mod common;

use std::time::Duration;

use common::{TestFloe, snapshot_ids};
use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

const TOKEN: &str = "primary-to-replica-token";

/// Two regions with `db.t` replicated (its `snapshots` good appends done first), the source
/// reading manifests of at most `max_manifest_bytes`.
async fn replicated(
    snapshots: usize,
    max_manifest_bytes: u64,
) -> (TestFloe, TestFloe, SnapshotWriter) {
    let (mut settings, dir) = common::region_settings("primary", &[]).await;
    settings.replication.poll_interval_ms = 100;
    settings.replication.retry_base_ms = 20;
    settings.replication.retry_max_ms = 200;
    settings.max_manifest_bytes = max_manifest_bytes;
    let primary = TestFloe::start_with(settings, dir).await;
    let replica = TestFloe::start_region("replica", &[("primary", TOKEN)]).await;
    primary
        .put(
            "/management/v1/peers/replica",
            json!({ "region": "replica", "base-url": replica.server.base_url(), "credential": TOKEN,
                    "warehouses": [{ "warehouse": "wh", "storage-root": replica.warehouse_root() }] }),
        )
        .await
        .expect(200);
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "t").await;
    let mut writer = SnapshotWriter::default();
    for _ in 0..snapshots {
        append(&primary, &mut writer, 1).await;
    }
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(201);
    wait_state(&primary, "completed").await;
    (primary, replica, writer)
}

/// An append with real files; `tamper` may damage them before the commit.
async fn append_with(
    floe: &TestFloe,
    writer: &mut SnapshotWriter,
    files: usize,
    tamper: impl FnOnce(&common::Append),
) -> i64 {
    let loaded = floe.get("/v1/wh/namespaces/db/tables/t").await.expect(200);
    let next = common::prepare_append(&loaded, writer, &common::host_files(), files, 1024).await;
    tamper(&next);
    floe.commit("db", "t", next.body.clone()).await.expect(200);
    next.snapshot_id
}

async fn append(floe: &TestFloe, writer: &mut SnapshotWriter, files: usize) -> i64 {
    append_with(floe, writer, files, |_| {}).await
}

/// Waits until the stream is in `state` (at the source's version, for `completed`).
async fn wait_state(primary: &TestFloe, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = primary
            .get("/management/v1/tables/wh/db/t/replication")
            .await
            .expect(200);
        let done = match state {
            "completed" => common::replication_completed(&last),
            other => last["destinations"][0]["state"] == other,
        };
        if done {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the stream did not become {state}: {last}");
}

fn local(location: &str) -> std::path::PathBuf {
    floe::storage::Location::parse(location)
        .unwrap()
        .local_path()
        .unwrap()
}

fn file_ending(next: &common::Append, suffix: &str) -> std::path::PathBuf {
    local(next.files.iter().find(|f| f.ends_with(suffix)).unwrap())
}

async fn replica_state(replica: &TestFloe) -> (Vec<i64>, usize) {
    let table = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    let mut ids = snapshot_ids(&table);
    ids.sort_unstable();
    (ids, replica.log().await.len())
}

/// Rolls `main` back past the bad snapshot and removes it at the source, as an operator would,
/// then resumes the stream.
async fn repair_and_resume(primary: &TestFloe, bad: i64, good: i64) {
    primary
        .commit(
            "db",
            "t",
            json!({ "requirements": [], "updates": [
                { "action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": good },
                { "action": "remove-snapshots", "snapshot-ids": [bad] }] }),
        )
        .await
        .expect(200);
    primary
        .post(
            "/management/v1/tables/wh/db/t/replication/resume",
            json!({}),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn unreplicable_source_states_stop_the_stream_not_the_replica() {
    let (primary, replica, mut writer) = replicated(5, 48 * 1024).await;
    let (mut good, mut log_len) = replica_state(&replica).await;
    assert_eq!(good.len(), 5);
    let mut head = *good.last().unwrap();

    type Tamper = fn(&common::Append);
    let cases: [(&str, usize, Tamper, &str); 4] = [
        (
            "a manifest list that does not exist",
            1,
            |next| {
                std::fs::remove_file(file_ending(
                    next,
                    &format!("snap-{}.avro", next.snapshot_id),
                ))
                .unwrap()
            },
            "snap-",
        ),
        (
            "a corrupt manifest",
            1,
            |next| std::fs::write(file_ending(next, "-m0.avro"), b"this is not avro").unwrap(),
            "-m0.avro",
        ),
        // 600 entries make a manifest above the source's 48 KiB bound.
        ("a manifest over the bound", 600, |_| {}, "-m0.avro"),
        (
            "a position-delete file that is not Parquet",
            1,
            |_| {},
            ".parquet",
        ),
    ];
    for (what, files, tamper, named) in cases {
        if what.starts_with("a position-delete") {
            writer.position_deletes_as = Some("AVRO".to_string());
        }
        let bad = append_with(&primary, &mut writer, files, tamper).await;
        writer.position_deletes_as = None;
        writer.forget_last_snapshot();
        let status = wait_state(&primary, "failed").await;
        let failure = status["destinations"][0]["failure"].as_str().unwrap();
        assert!(
            failure.contains(named),
            "{what}: the reason does not name the file: {failure}"
        );
        assert!(
            failure.contains("version"),
            "{what}: the reason does not name the entry: {failure}"
        );
        // The replica has what it had; its log did not grow.
        assert_eq!(
            replica_state(&replica).await,
            (good.clone(), log_len),
            "{what}"
        );
        // Nothing loops meanwhile.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let again = wait_state(&primary, "failed").await;
        assert!(
            again["destinations"][0]["generation"].as_i64()
                <= Some(status["destinations"][0]["generation"].as_i64().unwrap() + 1),
            "{what}: {again}"
        );
        assert_eq!(
            replica_state(&replica).await,
            (good.clone(), log_len),
            "{what}"
        );

        repair_and_resume(&primary, bad, head).await;
        wait_state(&primary, "completed").await;
        let (ids, _) = replica_state(&replica).await;
        assert_eq!(
            ids, good,
            "{what}: after the repair the replica holds its snapshots"
        );
        // And the stream goes on.
        head = append(&primary, &mut writer, 1).await;
        wait_state(&primary, "completed").await;
        good.push(head);
        good.sort_unstable();
        let (ids, _) = replica_state(&replica).await;
        assert_eq!(ids, good, "{what}");
        let copy = replica
            .get("/v1/wh/namespaces/db/tables/t")
            .await
            .expect(200);
        assert_eq!(copy["metadata"]["current-snapshot-id"], head, "{what}");
        log_len = replica_state(&replica).await.1;
    }
    primary.server.stop().await;
    replica.server.stop().await;
}

/// A resync of a table with 300 snapshots, while a reader loads the replica in a loop: every
/// answer is a complete state (all 300 snapshots, the current one), never an empty or partial one;
/// a second resync racing the first ends with one healthy stream.
#[tokio::test]
async fn a_resync_is_swapped_in_whole_while_readers_read() {
    let primary = TestFloe::start_region("primary", &[]).await;
    let replica = TestFloe::start_region("replica", &[("primary", TOKEN)]).await;
    primary
        .put(
            "/management/v1/peers/replica",
            json!({ "region": "replica", "base-url": replica.server.base_url(), "credential": TOKEN,
                    "warehouses": [{ "warehouse": "wh", "storage-root": replica.warehouse_root() }] }),
        )
        .await
        .expect(200);
    primary.create_namespace(&["db"]).await;
    let table = common::TableId::of(&primary.create_table("db", "t").await);
    // 300 snapshots of no files: each manifest list is an empty one, which the copier rewrites.
    let empty_list = empty_manifest_list();
    let mut parent: Option<i64> = None;
    for i in 0..300 {
        let id = 10_000 + i;
        let list = local(&format!("{}/metadata/snap-{id}.avro", table.location));
        std::fs::create_dir_all(list.parent().unwrap()).unwrap();
        std::fs::write(list, &empty_list).unwrap();
        primary
            .commit("db", "t", common::append_commit(&table, parent, id, i + 1))
            .await
            .expect(200);
        parent = Some(id);
    }
    let stage = |value: &str| {
        json!({ "requirements": [], "updates": [
            { "action": "set-properties", "updates": { "stage": value } }] })
    };
    primary.commit("db", "t", stage("before")).await.expect(200);
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(201);
    wait_state(&primary, "completed").await;
    assert_eq!(replica_state(&replica).await.0.len(), 300);

    let reader = tokio::spawn({
        let url = replica.url("/v1/wh/namespaces/db/tables/t");
        async move {
            let http = reqwest::Client::new();
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..20_000 {
                let reply: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
                let snapshots = reply["metadata"]["snapshots"]
                    .as_array()
                    .map_or(0, Vec::len);
                let stage = reply["metadata"]["properties"]["stage"].to_string();
                assert_eq!(snapshots, 300, "a reader saw a partial replica ({stage})");
                assert_eq!(reply["metadata"]["current-snapshot-id"], 10_299);
                seen.insert(stage.clone());
                if stage == "\"after\"" {
                    break;
                }
            }
            seen
        }
    });
    // A resync, and a second one racing the first one's backfill, then a change at the source.
    for _ in 0..2 {
        primary
            .post(
                "/management/v1/tables/wh/db/t/replication/resync",
                json!({}),
            )
            .await
            .expect(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    primary.commit("db", "t", stage("after")).await.expect(200);
    let status = wait_state(&primary, "completed").await;
    assert_eq!(status["destinations"].as_array().unwrap().len(), 1);
    assert_eq!(
        status["destinations"][0]["failure"],
        Value::Null,
        "{status}"
    );
    assert!(
        status["destinations"][0]["generation"].as_i64() >= Some(3),
        "{status}"
    );
    let seen = reader.await.unwrap();
    assert!(seen.contains("\"after\""), "{seen:?}");
    let copy = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    assert_eq!(snapshot_ids(&copy).len(), 300);
    assert_eq!(copy["metadata"]["properties"]["stage"], "after");
    primary.server.stop().await;
    replica.server.stop().await;
}

fn empty_manifest_list() -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"manifest_file","fields":[
            {"name":"manifest_path","type":"string","field-id":500},
            {"name":"manifest_length","type":"long","field-id":501}]}"#,
    )
    .unwrap();
    apache_avro::Writer::new(&schema, Vec::new())
        .into_inner()
        .unwrap()
}
