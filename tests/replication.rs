//! Replication between regions served in-process, each with its own database and warehouse, over
//! real HTTP: backfill then tail, path rewriting, the read-only replica, renames and drops, the
//! peer endpoint's fencing, and the management API's answers to bad input.

mod common;

use std::time::Duration;

use common::iceberg_files::files_mentioning;
use common::{TestFloe, snapshot_ids};
use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

const TOKEN: &str = "primary-to-replica-token";

/// A primary and a replica region, the replica registered as the primary's peer.
async fn two_regions() -> (TestFloe, TestFloe) {
    let primary = TestFloe::start_region("primary", &[]).await;
    let replica = TestFloe::start_region("replica", &[("primary", TOKEN)]).await;
    register_peer(&primary, &replica, "replica").await;
    (primary, replica)
}

/// Two regions with `db.<table>` created at the primary and replicated (warehouse-wide rule).
async fn replicated_table(table: &str) -> (TestFloe, TestFloe) {
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", table).await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    wait_completed(&primary, table).await;
    (primary, replica)
}

async fn register_peer(source: &TestFloe, destination: &TestFloe, region: &str) {
    register_peer_with(source, destination, region, TOKEN).await;
}

async fn register_peer_with(source: &TestFloe, destination: &TestFloe, region: &str, token: &str) {
    source
        .put(
            &format!("/management/v1/peers/{region}"),
            json!({
                "region": region,
                "base-url": destination.server.base_url(),
                "credential": token,
                "warehouses": [{ "warehouse": "wh", "storage-root": destination.warehouse_root() }]
            }),
        )
        .await
        .expect(200);
}

async fn create_rule(source: &TestFloe, body: Value) -> Value {
    source
        .post("/management/v1/replication-rules", body)
        .await
        .expect(201)
}

/// Waits until every destination of the table reports `completed` at the source's version.
async fn wait_completed(source: &TestFloe, table: &str) -> Value {
    wait_completed_in(source, "db", table).await
}

async fn wait_completed_in(source: &TestFloe, namespace: &str, table: &str) -> Value {
    let path = format!("/management/v1/tables/wh/{namespace}/{table}/replication");
    let mut last = Value::Null;
    for _ in 0..300 {
        last = source.get(&path).await.expect(200);
        if common::replication_completed(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replication did not complete: {last}");
}

/// Appends a snapshot with real files under the table's location; returns the new snapshot id.
async fn append(floe: &TestFloe, files: &mut SnapshotWriter, table: &str, files_per: usize) -> i64 {
    let loaded = floe
        .get(&format!("/v1/wh/namespaces/db/tables/{table}"))
        .await
        .expect(200);
    let next = common::prepare_append(&loaded, files, &common::host_files(), files_per, 4096).await;
    floe.commit("db", table, next.body).await.expect(200);
    next.snapshot_id
}

#[tokio::test]
async fn backfill_then_tail_with_paths_rewritten() {
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "events").await;
    let mut files = SnapshotWriter::default();
    for _ in 0..3 {
        append(&primary, &mut files, "events", 2).await;
    }
    primary
        .commit(
            "db",
            "events",
            json!({ "requirements": [], "updates": [{ "action": "set-properties", "updates": { "owner": "ops" } }] }),
        )
        .await
        .expect(200);

    // The rule comes after the table: the replica is backfilled from the retained history.
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    let status = wait_completed(&primary, "events").await;
    assert_eq!(status["destinations"][0]["applied-version"], 5, "{status}");
    assert_eq!(status["destinations"][0]["lag-versions"], 0);

    let source = primary
        .get("/v1/wh/namespaces/db/tables/events")
        .await
        .expect(200);
    let copy = replica
        .get("/v1/wh/namespaces/db/tables/events")
        .await
        .expect(200);
    assert_eq!(
        copy["metadata"]["table-uuid"],
        source["metadata"]["table-uuid"]
    );
    assert_eq!(sorted_ids(&copy), sorted_ids(&source));
    assert_eq!(
        copy["metadata"]["current-snapshot-id"],
        source["metadata"]["current-snapshot-id"]
    );
    assert_eq!(copy["metadata"]["properties"]["owner"], "ops");
    for (a, b) in by_id(&source).iter().zip(by_id(&copy)) {
        assert_eq!(a["sequence-number"], b["sequence-number"]);
        assert_eq!(a["timestamp-ms"], b["timestamp-ms"]);
        assert_eq!(a["parent-snapshot-id"], b["parent-snapshot-id"]);
    }
    let replica_root = replica.warehouse_root();
    assert!(
        copy["metadata"]["location"]
            .as_str()
            .unwrap()
            .starts_with(&replica_root),
        "{}",
        copy["metadata"]["location"]
    );
    let source_root = primary.warehouse_dir.path().display().to_string();
    let leaks = files_mentioning(replica.warehouse_dir.path(), &source_root);
    assert!(leaks.is_empty(), "replica files name the source: {leaks:?}");
    // 3 snapshots x 2 data files were copied.
    let data_files = |dir: &std::path::Path| {
        common::files_under(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    assert_eq!(data_files(replica.warehouse_dir.path()), 6);

    // The tail: a new commit at the source reaches the replica without any action.
    let newest = append(&primary, &mut files, "events", 1).await;
    wait_completed(&primary, "events").await;
    let copy = replica
        .get("/v1/wh/namespaces/db/tables/events")
        .await
        .expect(200);
    assert_eq!(copy["metadata"]["current-snapshot-id"], newest);
    assert_eq!(snapshot_ids(&copy).len(), 4);
    assert_eq!(data_files(replica.warehouse_dir.path()), 7);

    // The replica's own log records the replicated changes, marked with their origin: the
    // backfill as one entry (it was built beside and swapped in whole), then the tail's commit.
    let log = replica.log().await;
    let table_entries: Vec<&Value> = log.iter().filter(|e| e["table-name"] == "events").collect();
    let kinds: Vec<&str> = table_entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["create-table", "commit-table"], "{log:?}");
    assert_eq!(
        table_entries[0]["metadata"]["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(
        table_entries
            .iter()
            .all(|e| e["origin-region"] == "primary")
    );
    let versions: Vec<i64> = table_entries
        .iter()
        .map(|e| e["table-version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
    primary.server.stop().await;
    replica.server.stop().await;
}

/// Snapshot ids in order (iceberg lists snapshots in no particular order).
fn sorted_ids(load_result: &Value) -> Vec<i64> {
    let mut ids = snapshot_ids(load_result);
    ids.sort_unstable();
    ids
}

fn by_id(load_result: &Value) -> Vec<Value> {
    let mut snapshots = load_result["metadata"]["snapshots"]
        .as_array()
        .unwrap()
        .clone();
    snapshots.sort_by_key(|s| s["snapshot-id"].as_i64());
    snapshots
}

#[tokio::test]
async fn replicas_refuse_every_client_change() {
    let (primary, replica) = replicated_table("t").await;
    let before = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    let uuid = before["metadata"]["table-uuid"]
        .as_str()
        .unwrap()
        .to_string();

    let forbidden = [
        replica
            .commit(
                "db",
                "t",
                json!({ "requirements": [], "updates": [{ "action": "set-properties", "updates": { "x": "1" } }] }),
            )
            .await,
        replica
            .post(
                "/v1/wh/transactions/commit",
                json!({ "table-changes": [{
                    "identifier": { "namespace": ["db"], "name": "t" },
                    "requirements": [{ "type": "assert-table-uuid", "uuid": uuid }],
                    "updates": [{ "action": "set-properties", "updates": { "x": "1" } }] }] }),
            )
            .await,
        replica.delete("/v1/wh/namespaces/db/tables/t").await,
        replica
            .post(
                "/v1/wh/tables/rename",
                json!({ "source": { "namespace": ["db"], "name": "t" },
                        "destination": { "namespace": ["db"], "name": "t2" } }),
            )
            .await,
        replica
            .post(
                "/v1/wh/namespaces/db/tables",
                json!({ "name": "new", "schema": common::simple_schema() }),
            )
            .await,
        replica
            .post(
                "/v1/wh/namespaces/db/register",
                json!({ "name": "t", "metadata-location": before["metadata-location"], "overwrite": true }),
            )
            .await,
        replica.delete("/v1/wh/namespaces/db").await,
        replica
            .post(
                "/v1/wh/namespaces/db/properties",
                json!({ "updates": { "a": "b" }, "removals": [] }),
            )
            .await,
        replica
            .post("/v1/wh/namespaces", json!({ "namespace": ["db", "child"] }))
            .await,
    ];
    for reply in forbidden {
        let message = reply.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(reply.error_type(), "ForbiddenException", "{}", reply.body);
        reply.expect(403);
        assert!(message.contains("primary"), "{message}");
    }
    // Only peers may call the apply endpoint.
    let reply = replica
        .post(
            "/internal/v1/replication/apply",
            json!({ "source-region": "primary", "origin-region": "primary",
                    "source-table-id": uuid, "warehouse": "wh", "namespace": ["db"],
                    "name": "t", "generation": 1, "lease-token": 1, "from": null,
                    "to": { "version": 1, "step": 0 }, "action": { "type": "orphan" } }),
        )
        .await;
    reply.expect(403);

    let after = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    assert_eq!(after["metadata-location"], before["metadata-location"]);
    assert_eq!(
        replica.get("/v1/wh/namespaces/db").await.expect(200)["properties"],
        json!({})
    );
    // A warehouse of replicas only advertises only reads.
    let config = replica.get("/v1/config?warehouse=wh").await.expect(200);
    let endpoints: Vec<&str> = config["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(!endpoints.is_empty());
    assert!(
        endpoints
            .iter()
            .all(|e| e.starts_with("GET ") || e.starts_with("HEAD ")),
        "{endpoints:?}"
    );
    primary.server.stop().await;
    replica.server.stop().await;
}

#[tokio::test]
async fn renames_follow_and_drops_orphan_by_default() {
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    primary.create_namespace(&["other"]).await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh",
                "namespace-prefix": ["from_primary"] }] }),
    )
    .await;
    // Created after the rule: replicated from its creation.
    primary.create_table("db", "t").await;
    wait_completed(&primary, "t").await;
    let path = "/v1/wh/namespaces/from_primary%1Fdb/tables/t";
    replica.get(path).await.expect(200);

    primary
        .post(
            "/v1/wh/tables/rename",
            json!({ "source": { "namespace": ["db"], "name": "t" },
                    "destination": { "namespace": ["db"], "name": "renamed" } }),
        )
        .await
        .expect(204);
    wait_completed(&primary, "renamed").await;
    replica.get(path).await.expect(404);
    replica
        .get("/v1/wh/namespaces/from_primary%1Fdb/tables/renamed")
        .await
        .expect(200);

    primary
        .delete("/v1/wh/namespaces/db/tables/renamed")
        .await
        .expect(204);
    // The drop is replicated as "orphaned": the replica stays readable.
    let mut orphaned = false;
    for _ in 0..200 {
        let log = replica.log().await;
        if log.iter().any(|e| e["kind"] == "orphan-table") {
            orphaned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(orphaned, "the replica was not marked orphaned");
    replica
        .get("/v1/wh/namespaces/from_primary%1Fdb/tables/renamed")
        .await
        .expect(200);
    primary.server.stop().await;
    replica.server.stop().await;
}

#[tokio::test]
async fn management_api_refuses_bad_rules_and_peers() {
    let (primary, replica) = two_regions().await;
    let unknown_peer = primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [{ "peer": "nowhere", "warehouse": "wh" }] }),
        )
        .await;
    unknown_peer.expect(422);
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [] }),
        )
        .await
        .expect(400);
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "nope", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(404);
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "table": "t",
                    "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(400);
    primary
        .put(
            "/management/v1/peers/x",
            json!({ "region": "x", "base-url": "ftp://h", "warehouses": [] }),
        )
        .await
        .expect(400);
    primary
        .put(
            "/management/v1/peers/primary",
            json!({ "region": "primary", "base-url": "http://h", "warehouses": [] }),
        )
        .await
        .expect(400);
    primary
        .get("/management/v1/replication-rules/not-a-uuid")
        .await
        .expect(400);
    // Nothing was created by the refused requests; the credential is never shown.
    assert_eq!(
        primary
            .get("/management/v1/replication-rules")
            .await
            .expect(200),
        json!([])
    );
    let peers = primary.get("/management/v1/peers").await.expect(200);
    assert_eq!(peers.as_array().unwrap().len(), 1);
    assert_eq!(peers[0]["has-credential"], true);
    assert!(!peers.to_string().contains(TOKEN));

    let rule = create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(409);
    primary
        .delete("/management/v1/peers/replica")
        .await
        .expect(409);
    let id = rule["id"].as_str().unwrap();
    primary
        .delete(&format!("/management/v1/replication-rules/{id}"))
        .await
        .expect(204);
    primary.server.stop().await;
    replica.server.stop().await;
}

#[tokio::test]
async fn pause_resume_and_resync() {
    let (primary, replica) = replicated_table("t").await;
    let base = "/management/v1/tables/wh/db/t/replication";
    let paused = primary
        .post(&format!("{base}/pause"), json!({}))
        .await
        .expect(200);
    assert_eq!(paused["destinations"][0]["state"], "paused");
    primary
        .commit(
            "db",
            "t",
            json!({ "requirements": [], "updates": [{ "action": "set-properties", "updates": { "k": "v" } }] }),
        )
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = primary.get(base).await.expect(200);
    assert_eq!(status["destinations"][0]["state"], "paused");
    assert_eq!(status["destinations"][0]["lag-versions"], 1);
    // The same figures for Prometheus.
    let metrics = primary.get_text("/management/v1/metrics").await;
    let labels =
        r#"warehouse="wh",namespace="db",table="t",peer="replica",destination_warehouse="wh""#;
    assert!(
        metrics.contains(&format!("floe_replication_lag_versions{{{labels}}} 1\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "floe_replication_stream_state{{{labels},state=\"paused\"}} 1"
        )),
        "{metrics}"
    );
    primary
        .post(&format!("{base}/resume"), json!({}))
        .await
        .expect(200);
    wait_completed(&primary, "t").await;
    let copy = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    assert_eq!(copy["metadata"]["properties"]["k"], "v");
    // This instance's own figures (`telemetry`) beside the streams' (the recorder is the test
    // process's, shared by its servers: only their presence is this test's to check).
    let metrics = primary.get_text("/management/v1/metrics").await;
    for expected in [
        "# TYPE floe_http_request_duration_seconds histogram",
        r#"route="/v1/{prefix}/namespaces/{namespace}/tables/{table}""#,
        "floe_http_requests_total{",
        r#"floe_commits_total{warehouse="wh"}"#,
        "floe_log_append_duration_seconds_bucket{",
        r#"floe_db_pool_connections{state="idle"}"#,
        r#"floe_replication_apply_duration_seconds_count{peer="replica"}"#,
        r#"floe_replication_end_to_end_lag_seconds_count{peer="replica",destination_warehouse="wh"}"#,
        "floe_replication_lag_versions{",
    ] {
        assert!(metrics.contains(expected), "no `{expected}` in {metrics}");
    }

    let resynced = primary
        .post(&format!("{base}/resync"), json!({}))
        .await
        .expect(200);
    assert_eq!(resynced["destinations"][0]["generation"], 2);
    wait_completed(&primary, "t").await;
    let again = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    assert_eq!(
        again["metadata"]["table-uuid"],
        copy["metadata"]["table-uuid"]
    );
    assert_eq!(again["metadata"]["properties"]["k"], "v");
    primary
        .post(&format!("{base}/pause"), json!({ "peer": "elsewhere" }))
        .await
        .expect(404);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// Expires every snapshot but the current one at the source (as `expire_snapshots` does).
async fn expire_all_but_current(floe: &TestFloe, table: &str) {
    let loaded = floe
        .get(&format!("/v1/wh/namespaces/db/tables/{table}"))
        .await
        .expect(200);
    let current = loaded["metadata"]["current-snapshot-id"].as_i64().unwrap();
    let old: Vec<i64> = snapshot_ids(&loaded)
        .into_iter()
        .filter(|id| *id != current)
        .collect();
    floe.commit(
        "db",
        table,
        json!({ "requirements": [], "updates": [
            { "action": "remove-snapshots", "snapshot-ids": old }] }),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn retention_is_the_replicas_own_unless_the_rule_follows_the_source() {
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    for (table, retention) in [
        ("keep_all", json!({ "mode": "keep-all" })),
        ("follow", json!({ "mode": "follow-source" })),
        ("keep_two", json!({ "mode": "keep-snapshots", "value": 2 })),
    ] {
        primary.create_table("db", table).await;
        create_rule(
            &primary,
            json!({ "warehouse": "wh", "namespace": ["db"], "table": table,
                    "retention": retention,
                    "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await;
        let mut files = SnapshotWriter::default();
        for _ in 0..4 {
            append(&primary, &mut files, table, 1).await;
        }
        expire_all_but_current(&primary, table).await;
        wait_completed(&primary, table).await;
    }
    let count = async |table: &str| {
        let loaded = replica
            .get(&format!("/v1/wh/namespaces/db/tables/{table}"))
            .await
            .expect(200);
        snapshot_ids(&loaded).len()
    };
    // The source kept 1 snapshot of 4 in each table.
    assert_eq!(
        count("keep_all").await,
        4,
        "history expired at the source survives"
    );
    assert_eq!(
        count("follow").await,
        1,
        "the rule follows the source's expiry"
    );
    assert_eq!(
        count("keep_two").await,
        2,
        "the replica keeps its own 2 newest"
    );
    primary.server.stop().await;
    replica.server.stop().await;
}

#[tokio::test]
async fn drops_replicate_when_the_rule_says_so() {
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "replicate-drops": true,
                "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    primary.create_table("db", "gone").await;
    wait_completed(&primary, "gone").await;
    replica
        .get("/v1/wh/namespaces/db/tables/gone")
        .await
        .expect(200);
    primary
        .delete("/v1/wh/namespaces/db/tables/gone")
        .await
        .expect(204);
    let mut dropped = false;
    for _ in 0..200 {
        if replica.get("/v1/wh/namespaces/db/tables/gone").await.status == 404 {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped, "the drop did not reach the replica");
    let log = replica.log().await;
    assert!(
        log.iter()
            .any(|e| e["kind"] == "drop-table" && e["origin-region"] == "primary")
    );
    primary.server.stop().await;
    replica.server.stop().await;
}

#[tokio::test]
async fn a_stream_that_cannot_progress_stops_alone() {
    let (primary, replica) = two_regions().await;
    // The destination already has a table of its own named db.clash: the replica cannot be made.
    replica.create_namespace(&["db"]).await;
    replica.create_table("db", "clash").await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "clash").await;
    primary.create_table("db", "fine").await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    wait_completed(&primary, "fine").await;
    let path = "/management/v1/tables/wh/db/clash/replication";
    let mut status = Value::Null;
    for _ in 0..200 {
        status = primary.get(path).await.expect(200);
        if status["destinations"][0]["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let destination = &status["destinations"][0];
    assert_eq!(destination["state"], "failed", "{status}");
    assert!(
        destination["failure"]
            .as_str()
            .unwrap_or_default()
            .contains("already exists"),
        "{status}"
    );
    // The other stream goes on, and commits at the source are not held back.
    primary
        .commit(
            "db",
            "fine",
            json!({ "requirements": [], "updates": [
                { "action": "set-properties", "updates": { "still": "flowing" } }] }),
        )
        .await
        .expect(200);
    wait_completed(&primary, "fine").await;
    primary
        .commit(
            "db",
            "clash",
            json!({ "requirements": [], "updates": [
                { "action": "set-properties", "updates": { "k": "v" } }] }),
        )
        .await
        .expect(200);
    // The destination's own table is untouched.
    let theirs = replica
        .get("/v1/wh/namespaces/db/tables/clash")
        .await
        .expect(200);
    assert_eq!(theirs["metadata"]["properties"].get("k"), None);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// The source's table id of `db.<table>` (the replica's identity), from the primary's log.
async fn source_table_id(primary: &TestFloe, table: &str) -> Value {
    primary
        .log()
        .await
        .iter()
        .find(|e| e["table-name"] == table)
        .map(|e| e["table-id"].clone())
        .unwrap()
}

/// A replicated change to `db.t` from region `primary`, as its replicator sends one.
fn replicated_change(
    source_id: &Value,
    generation: i64,
    lease_token: i64,
    (from, to): (Value, Value),
    action: Value,
) -> Value {
    json!({ "source-region": "primary", "origin-region": "primary",
        "source-table-id": source_id, "warehouse": "wh", "namespace": ["db"], "name": "t",
        "generation": generation, "lease-token": lease_token, "from": from, "to": to,
        "action": action })
}

/// The position of a source version (step 0).
fn at(version: i64) -> Value {
    json!({ "version": version, "step": 0 })
}

/// Calls the replica's apply endpoint as the primary would.
async fn apply(replica: &TestFloe, body: Value) -> (u16, Value) {
    let response = replica
        .http
        .post(replica.url("/internal/v1/replication/apply"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_apply_endpoint_acknowledges_repeats_and_refuses_gaps() {
    let (primary, replica) = replicated_table("t").await;
    let status = wait_completed(&primary, "t").await;
    let applied = status["destinations"][0]["applied-version"]
        .as_i64()
        .unwrap();
    let source_id = source_table_id(&primary, "t").await;
    let before = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    let lease_token = accepted_lease_token(&replica).await;
    let change = |from: i64, to: i64| {
        replicated_change(
            &source_id,
            1,
            lease_token,
            (at(from), at(to)),
            json!({ "type": "update", "updates": [
                { "action": "set-properties", "updates": { "sneaky": "yes" } }] }),
        )
    };
    // A repeat of the applied version: acknowledged, nothing changes.
    let (code, body) = apply(&replica, change(applied - 1, applied)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"], false);
    // A gap: refused with the position the replica is at.
    let (code, body) = apply(&replica, change(applied + 1, applied + 2)).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["type"], "ReplicaPositionMismatchException");
    assert_eq!(body["replica-position"]["position"]["version"], applied);
    let after = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    assert_eq!(after["metadata-location"], before["metadata-location"]);
    assert_eq!(after["metadata"]["properties"].get("sneaky"), None);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// The newest lease token the replica region has accepted a table's or view's change under (one
/// replica here; the namespace's properties have a stream, and a fence, of their own).
async fn accepted_lease_token(replica: &TestFloe) -> i64 {
    let pool = sqlx::PgPool::connect(replica.database_url()).await.unwrap();
    let token = sqlx::query_scalar(
        "SELECT lease_token FROM replica_fence WHERE source_table_id NOT IN
             (SELECT source_namespace_id FROM namespace WHERE source_namespace_id IS NOT NULL)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    token
}

/// Apply requests are fenced on the source's lease: once a change under a newer lease of the
/// stream has applied, one sent under an older lease (a task whose lease was paused, resynced or
/// expired away) is refused with a 409 and changes nothing, while the newer lease goes on.
#[tokio::test]
async fn a_change_sent_under_a_revoked_lease_is_refused() {
    let (primary, replica) = replicated_table("t").await;
    let source_id = source_table_id(&primary, "t").await;
    let first_lease = accepted_lease_token(&replica).await;
    assert!(first_lease > 0);
    // Pause and resume revoke the lease; the next commit replicates under a newer one.
    let base = "/management/v1/tables/wh/db/t/replication";
    primary
        .post(&format!("{base}/pause"), json!({}))
        .await
        .expect(200);
    primary
        .post(&format!("{base}/resume"), json!({}))
        .await
        .expect(200);
    primary
        .commit(
            "db",
            "t",
            json!({ "requirements": [], "updates": [{ "action": "set-properties", "updates": { "k": "v" } }] }),
        )
        .await
        .expect(200);
    let status = wait_completed(&primary, "t").await;
    let applied = status["destinations"][0]["applied-version"]
        .as_i64()
        .unwrap();
    let newer_lease = accepted_lease_token(&replica).await;
    assert!(
        newer_lease > first_lease,
        "{newer_lease} after {first_lease}"
    );

    let before = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    let change = |lease: i64, from: i64, to: i64| {
        replicated_change(
            &source_id,
            1,
            lease,
            (at(from), at(to)),
            json!({ "type": "update", "updates": [
                { "action": "set-properties", "updates": { "late": "yes" } }] }),
        )
    };
    // The next change, sent under the revoked lease: refused, not applied.
    let (code, body) = apply(&replica, change(first_lease, applied, applied + 1)).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["type"], "StaleLeaseException", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("lease {first_lease}")),
        "{message}"
    );
    let after = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    assert_eq!(after["metadata-location"], before["metadata-location"]);
    assert_eq!(after["metadata"]["properties"].get("late"), None);
    assert_eq!(accepted_lease_token(&replica).await, newer_lease);
    // The current lease still passes the fence (here: a repeat, acknowledged without effect).
    let (code, body) = apply(&replica, change(newer_lease, applied - 1, applied)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"], false);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// A drop of a newer generation than the serving replica's (the source table went while its
/// stream rebuilt the replica) ends both: the build under way goes, and the serving replica is
/// dropped from the last complete state it has.
#[tokio::test]
async fn a_drop_ends_the_build_under_way_and_the_serving_replica() {
    let (primary, replica) = replicated_table("t").await;
    let status = wait_completed(&primary, "t").await;
    let applied = status["destinations"][0]["applied-version"]
        .as_i64()
        .unwrap();
    let source_id = source_table_id(&primary, "t").await;
    let lease_token = accepted_lease_token(&replica).await;
    let serving = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    let change = |from: Value, to: Value, action: Value| {
        replicated_change(&source_id, 2, lease_token, (from, to), action)
    };
    // Generation 2 begins: a build beside the serving replica.
    let (code, body) = apply(
        &replica,
        change(
            Value::Null,
            json!({ "version": applied, "step": 1 }),
            json!({ "type": "create", "metadata": serving["metadata"] }),
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let pool = sqlx::PgPool::connect(replica.database_url()).await.unwrap();
    let builds = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM replica_build")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(builds().await, 1);
    replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    // The drop, of generation 2, before the build completed.
    let drop = change(
        json!({ "version": applied, "step": 1 }),
        json!({ "version": applied + 1, "step": 0 }),
        json!({ "type": "drop", "purge": false }),
    );
    let (code, body) = apply(&replica, drop.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(builds().await, 0);
    replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(404);
    // Sent again: acknowledged, nothing left to change.
    let (code, body) = apply(&replica, drop).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"], false);
    pool.close().await;
    primary.server.stop().await;
    replica.server.stop().await;
}

/// A panic in a stream's task stops that attempt only: the lease is released at once (not left to
/// expire), the panic is the stream's recorded failure, and the next attempt goes on.
#[tokio::test]
async fn a_panicking_stream_task_releases_its_lease_and_retries() {
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "t").await;
    primary
        .faults
        .panic_in_stream_task
        .store(true, std::sync::atomic::Ordering::SeqCst);
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    let path = "/management/v1/tables/wh/db/t/replication";
    let mut status = Value::Null;
    for _ in 0..200 {
        status = primary.get(path).await.expect(200);
        if status["destinations"][0]["attempts"].as_i64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let failure = status["destinations"][0]["failure"]
        .as_str()
        .unwrap_or_default();
    assert!(failure.contains("panicked"), "{status}");
    // Were the lease kept, the stream would wait out its 30 s lease before a second attempt; the
    // released lease lets the retry (50 ms backoff here) panic again long before that.
    let pool = sqlx::PgPool::connect(primary.database_url()).await.unwrap();
    let lease_seconds = primary.settings.replication.lease_seconds;
    let started = std::time::Instant::now();
    let mut attempts = 0;
    while started.elapsed().as_secs_f64() < lease_seconds / 2.0 {
        attempts = sqlx::query_scalar(
            "SELECT attempts FROM replication_stream WHERE object_kind = 'table'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if attempts >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        attempts >= 2,
        "the panicked task kept its lease ({attempts} attempts)"
    );
    primary
        .faults
        .panic_in_stream_task
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let status = wait_completed(&primary, "t").await;
    assert_eq!(
        status["destinations"][0]["failure"],
        Value::Null,
        "{status}"
    );
    replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    pool.close().await;
}

/// A drop at a source whose stream lags (here: paused) still reaches the replica once the stream
/// goes on, although the drop's purge removed the files of the changes in between: the stream
/// sends the drop straight from the replica's version.
#[tokio::test]
async fn a_lagging_stream_delivers_the_drop_after_the_purge() {
    lagging_stream_delivers_the_drop(false).await;
}

/// The same when the stream was resynced before the drop: its new generation never began (the
/// table was gone first), and the drop reaches the replica of the generation before.
#[tokio::test]
async fn a_drop_reaches_the_replica_of_the_generation_before_a_resync() {
    lagging_stream_delivers_the_drop(true).await;
}

async fn lagging_stream_delivers_the_drop(resync_first: bool) {
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "t").await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }],
                "replicate-drops": true }),
    )
    .await;
    let mut files = SnapshotWriter::default();
    append(&primary, &mut files, "t", 1).await;
    wait_completed(&primary, "t").await;
    let base = "/management/v1/tables/wh/db/t/replication";
    primary
        .post(&format!("{base}/pause"), json!({}))
        .await
        .expect(200);
    if resync_first {
        let resynced = primary
            .post(&format!("{base}/resync"), json!({}))
            .await
            .expect(200);
        assert_eq!(resynced["destinations"][0]["generation"], 2);
    }
    append(&primary, &mut files, "t", 2).await;
    append(&primary, &mut files, "t", 2).await;
    let table_id = primary.log().await.last().unwrap()["table-id"].clone();
    primary
        .delete("/v1/wh/namespaces/db/tables/t?purgeRequested=true")
        .await
        .expect(204);
    primary.wait_for_purges().await;
    replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    // The stream's status is no longer reachable by the table's name: resume by table id.
    let pool = sqlx::PgPool::connect(primary.database_url()).await.unwrap();
    // As the management API's resume does: unpause, then wake the replicators.
    sqlx::query("UPDATE replication_stream SET paused = false, next_attempt_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('floe_streams', '')")
        .execute(&pool)
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..200 {
        if replica.get("/v1/wh/namespaces/db/tables/t").await.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the drop never reached the replica");
    // The source removes the finished stream once the destination has answered the drop.
    let mut remaining = -1i64;
    for _ in 0..200 {
        remaining = sqlx::query_scalar(
            "SELECT count(*) FROM replication_stream WHERE object_kind <> 'namespace'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remaining, 0, "the finished stream stayed ({table_id})");
    pool.close().await;
}

/// Waits until `path` at `floe` answers `status`.
async fn wait_for_status(floe: &TestFloe, path: &str, status: u16) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let reply = floe.get(path).await;
        if reply.status.as_u16() == status {
            return reply.body;
        }
        last = reply.body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} did not answer {status}: {last}");
}

/// Views replicate as their states: created, replaced, renamed and dropped at the source, the
/// replica follows with its location in its own warehouse and its versions and history, refuses
/// client changes, and an older state sent again does not move it back.
#[tokio::test]
async fn views_replicate_and_stay_read_only_at_the_replica() {
    use common::views::{create_body, current_sql, replace_body};
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "replicate-drops": true,
                "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    let created = primary
        .post("/v1/wh/namespaces/db/views", create_body("v", "SELECT 1"))
        .await
        .expect(200);
    let uuid = created["metadata"]["view-uuid"]
        .as_str()
        .unwrap()
        .to_string();
    wait_completed_in(&primary, "db", "v").await;
    let copy = replica
        .get("/v1/wh/namespaces/db/views/v")
        .await
        .expect(200);
    assert_eq!(copy["metadata"]["view-uuid"], uuid.as_str());
    assert_eq!(current_sql(&copy), "SELECT 1");
    for path in [&copy["metadata-location"], &copy["metadata"]["location"]] {
        assert!(
            path.as_str()
                .unwrap()
                .starts_with(&replica.warehouse_root()),
            "{path} is not in the replica's warehouse"
        );
    }

    primary
        .post(
            "/v1/wh/namespaces/db/views/v",
            replace_body(&uuid, 2, "SELECT 2"),
        )
        .await
        .expect(200);
    let status = wait_completed_in(&primary, "db", "v").await;
    assert_eq!(status["destinations"][0]["applied-version"], 2);
    let copy = replica
        .get("/v1/wh/namespaces/db/views/v")
        .await
        .expect(200);
    assert_eq!(current_sql(&copy), "SELECT 2");
    assert_eq!(copy["metadata"]["versions"].as_array().unwrap().len(), 2);
    assert_eq!(copy["metadata"]["version-log"].as_array().unwrap().len(), 2);

    // Read-only at the replica: replace, drop, rename, and a new view in its namespace.
    let before = copy["metadata-location"].clone();
    for reply in [
        replica
            .post(
                "/v1/wh/namespaces/db/views/v",
                replace_body(&uuid, 3, "SELECT 3"),
            )
            .await,
        replica.delete("/v1/wh/namespaces/db/views/v").await,
        replica
            .post(
                "/v1/wh/views/rename",
                json!({ "source": { "namespace": ["db"], "name": "v" },
                        "destination": { "namespace": ["db"], "name": "w" } }),
            )
            .await,
        replica
            .post(
                "/v1/wh/namespaces/db/views",
                create_body("mine", "SELECT 0"),
            )
            .await,
    ] {
        let refused = reply.expect(403);
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("primary"),
            "{refused}"
        );
    }
    let still = replica
        .get("/v1/wh/namespaces/db/views/v")
        .await
        .expect(200);
    assert_eq!(still["metadata-location"], before);

    // An older state sent again (a stream that restarted, a late duplicate) is acknowledged
    // without effect.
    let source_id = source_table_id(&primary, "v").await;
    let lease_token = accepted_lease_token(&replica).await;
    let mut stale = replicated_change(
        &source_id,
        1,
        lease_token,
        (Value::Null, at(1)),
        json!({ "type": "view-state", "metadata": created["metadata"],
                "namespace": ["db"], "name": "v" }),
    );
    stale["name"] = json!("v");
    let (code, body) = apply(&replica, stale).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"], false);
    let still = replica
        .get("/v1/wh/namespaces/db/views/v")
        .await
        .expect(200);
    assert_eq!(still["metadata-location"], before);

    // Rename and drop follow.
    primary
        .post(
            "/v1/wh/views/rename",
            json!({ "source": { "namespace": ["db"], "name": "v" },
                    "destination": { "namespace": ["db"], "name": "w" } }),
        )
        .await
        .expect(204);
    wait_for_status(&replica, "/v1/wh/namespaces/db/views/w", 200).await;
    replica
        .get("/v1/wh/namespaces/db/views/v")
        .await
        .expect(404);
    primary
        .delete("/v1/wh/namespaces/db/views/w")
        .await
        .expect(204);
    wait_for_status(&replica, "/v1/wh/namespaces/db/views/w", 404).await;

    let kinds: Vec<(String, String)> = replica
        .log()
        .await
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().ends_with("-view"))
        .map(|e| {
            assert_eq!(e["origin-region"], "primary");
            (
                e["kind"].as_str().unwrap().to_string(),
                e["table-name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("create-view", "v"),
            ("replace-view", "v"),
            ("replace-view", "v"),
            ("drop-view", "w")
        ]
        .map(|(k, n)| (k.to_string(), n.to_string()))
    );
    primary.server.stop().await;
    replica.server.stop().await;
}

/// Waits until the replica's namespace has properties that `ready` accepts; returns them.
async fn wait_for_properties(
    floe: &TestFloe,
    namespace: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/v1/wh/namespaces/{namespace}");
    let mut last = Value::Null;
    for _ in 0..300 {
        let reply = floe.get(&path).await;
        if reply.status.as_u16() == 200 && ready(&reply.body["properties"]) {
            return reply.body["properties"].clone();
        }
        last = reply.body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never had the properties expected: {last}");
}

/// One value from a region's database.
async fn query_one<T>(floe: &TestFloe, sql: &str, levels: &[&str]) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let pool = sqlx::PgPool::connect(floe.database_url()).await.unwrap();
    let levels: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
    let value = sqlx::query_scalar(sql)
        .bind(levels)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    value
}

/// Namespace properties replicate as the namespace's state: set at the source (at its creation,
/// then by an update with no table change at all), they appear at the replica, with a `location`
/// moved into the replica's warehouse; clients cannot change them there; an older state sent again
/// does not move them back; and a namespace that is the replica region's own keeps its properties.
#[tokio::test]
async fn namespace_properties_set_at_the_source_appear_at_the_replica() {
    let (primary, replica) = two_regions().await;
    let location = format!("{}/custom/db", primary.warehouse_root());
    primary
        .post(
            "/v1/wh/namespaces",
            json!({ "namespace": ["db"],
                    "properties": { "owner": "data-eng", "location": location } }),
        )
        .await
        .expect(200);
    for (floe, owner) in [(&replica, "replica-team"), (&primary, "primary-team")] {
        floe.post(
            "/v1/wh/namespaces",
            json!({ "namespace": ["mine"], "properties": { "owner": owner } }),
        )
        .await
        .expect(200);
    }
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    let properties = wait_for_properties(&replica, "db", |p| p["owner"] == "data-eng").await;
    assert_eq!(
        properties["location"],
        format!("{}/custom/db", replica.warehouse_root()).as_str(),
        "{properties}"
    );

    // A change of properties alone reaches the replica.
    primary
        .post(
            "/v1/wh/namespaces/db/properties",
            json!({ "updates": { "owner": "analytics", "tier": "gold" }, "removals": ["location"] }),
        )
        .await
        .expect(200);
    let properties = wait_for_properties(&replica, "db", |p| p.get("tier").is_some()).await;
    assert_eq!(properties, json!({ "owner": "analytics", "tier": "gold" }));
    let refused = replica
        .post(
            "/v1/wh/namespaces/db/properties",
            json!({ "updates": { "owner": "me" }, "removals": [] }),
        )
        .await
        .expect(403);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("primary"),
        "{refused}"
    );

    // The first state, sent again (a restarted stream, a late duplicate): acknowledged, no effect.
    let source_id: uuid::Uuid = query_one(
        &primary,
        "SELECT namespace_id FROM namespace WHERE levels = $1",
        &["db"],
    )
    .await;
    let lease_token: i64 = query_one(
        &replica,
        "SELECT f.lease_token FROM replica_fence f JOIN namespace n
             ON n.source_namespace_id = f.source_table_id WHERE n.levels = $1",
        &["db"],
    )
    .await;
    let (code, body) = apply(
        &replica,
        json!({ "source-region": "primary", "origin-region": "primary",
                "source-table-id": source_id, "warehouse": "wh", "namespace": ["db"],
                "name": "", "generation": 1, "lease-token": lease_token, "from": null,
                "to": at(1), "action": { "type": "namespace-properties",
                                          "properties": { "owner": "data-eng" } } }),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"], false, "{body}");
    assert_eq!(
        replica.get("/v1/wh/namespaces/db").await.expect(200)["properties"],
        json!({ "owner": "analytics", "tier": "gold" })
    );

    // The replica region's own `mine` keeps its properties once its stream has been through.
    let mut overview = Value::Null;
    for _ in 0..300 {
        overview = primary.get("/management/v1/replication").await.expect(200);
        let state = overview["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "namespace" && t["namespace"] == json!(["mine"]))
            .map(|t| t["destinations"][0]["state"].clone());
        if state == Some(json!("completed")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db_stream = overview["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "namespace" && t["namespace"] == json!(["db"]))
        .unwrap_or_else(|| panic!("no stream for namespace db: {overview}"));
    assert_eq!(db_stream["destinations"][0]["applied-version"], 2);
    assert_eq!(
        replica.get("/v1/wh/namespaces/mine").await.expect(200)["properties"],
        json!({ "owner": "replica-team" })
    );

    // The replica's log records each change, with its origin.
    let kinds: Vec<String> = replica
        .log()
        .await
        .iter()
        .filter(|e| e["namespace"] == json!(["db"]))
        .map(|e| {
            assert_eq!(e["origin-region"], "primary", "{e}");
            e["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kinds, ["create-namespace", "update-namespace-properties"]);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// One transaction's change to both tables: `round` set to `k` on each.
fn both_tables_to(k: usize) -> Value {
    let change = |name: &str| {
        json!({
            "identifier": { "namespace": ["db"], "name": name },
            "requirements": [],
            "updates": [{ "action": "set-properties", "updates": { "round": k.to_string() } }]
        })
    };
    json!({ "table-changes": [change("left"), change("right")] })
}

/// The `round` property of `db.<table>` at the catalog at `base` (0 before the first round).
async fn round_of(http: &reqwest::Client, base: &str, table: &str) -> usize {
    let answer: Value = http
        .get(format!("{base}/v1/wh/namespaces/db/tables/{table}"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["metadata"]["properties"]["round"]
        .as_str()
        .map_or(0, |round| round.parse().unwrap())
}

/// A transaction over two tables at the source is applied at the replica in one transaction
/// (issue 14, item 5): a reader polling the replica in a loop sees both tables' changes or
/// neither, and the replica's log keeps them as one group for regions further down a chain.
#[tokio::test]
async fn a_transaction_over_two_tables_reaches_the_replica_whole() {
    const ROUNDS: usize = 25;
    let (primary, replica) = two_regions().await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "left").await;
    primary.create_table("db", "right").await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    wait_completed(&primary, "left").await;
    wait_completed(&primary, "right").await;

    // The reader reads left, right, left: when both reads of left agree, no transaction was
    // applied in between, so right must be at that same round.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let (base, stop) = (replica.server.base_url(), stop.clone());
        async move {
            let http = reqwest::Client::new();
            let (mut torn, mut settled, mut partway) = (Vec::new(), 0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let before = round_of(&http, &base, "left").await;
                let right = round_of(&http, &base, "right").await;
                let after = round_of(&http, &base, "left").await;
                if before != after {
                    continue;
                }
                settled += 1;
                if right != before {
                    torn.push((before, right));
                } else if (1..ROUNDS).contains(&right) {
                    partway += 1;
                }
            }
            (torn, settled, partway)
        }
    });
    for k in 1..=ROUNDS {
        primary
            .post("/v1/wh/transactions/commit", both_tables_to(k))
            .await
            .expect(204);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_completed(&primary, "left").await;
    wait_completed(&primary, "right").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (torn, settled, partway) = reader.await.unwrap();
    assert!(
        torn.is_empty(),
        "the reader saw left and right at different rounds: {torn:?}"
    );
    assert!(
        partway > 0,
        "the reader never saw the replica between the first round and the last ({settled} reads)"
    );
    let base = replica.server.base_url();
    assert_eq!(round_of(&replica.http, &base, "left").await, ROUNDS);
    assert_eq!(round_of(&replica.http, &base, "right").await, ROUNDS);

    // Each round is one group in the replica's log, its two entries marked with its size.
    let commits: Vec<Value> = replica
        .log()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "commit-table")
        .collect();
    assert_eq!(commits.len(), 2 * ROUNDS, "{commits:?}");
    let groups: std::collections::BTreeSet<&str> = commits
        .iter()
        .map(|e| {
            assert_eq!(e["details"]["group-size"], 2, "{e}");
            e["txn-group"].as_str().unwrap()
        })
        .collect();
    assert_eq!(groups.len(), ROUNDS);
    let metrics = replica.get_text("/management/v1/metrics").await;
    assert!(
        metrics.contains("floe_replica_transaction_groups_total{outcome=\"together\"}"),
        "{metrics}"
    );
    primary.server.stop().await;
    replica.server.stop().await;
}

/// The `n` property of `db.busy` at the replica (0 before the first).
async fn busy_at(replica: &TestFloe) -> usize {
    let answer = replica
        .get("/v1/wh/namespaces/db/tables/busy")
        .await
        .expect(200);
    answer["metadata"]["properties"]["n"]
        .as_str()
        .map_or(0, |n| n.parse().unwrap())
}

/// A stream with a long backlog does not keep the only worker while another table's change
/// waits: it yields after its slice, and the other table's replica gets its change before the
/// backlog has drained.
#[tokio::test]
async fn a_long_backlog_does_not_hold_the_only_worker() {
    const BACKLOG: usize = 400;
    let (mut settings, dir) = common::region_settings("primary", &[]).await;
    settings.replication.workers = 1;
    let primary = TestFloe::start_with(settings, dir).await;
    let replica = TestFloe::start_region("replica", &[("primary", TOKEN)]).await;
    register_peer(&primary, &replica, "replica").await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "busy").await;
    primary.create_table("db", "quiet").await;
    create_rule(
        &primary,
        json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
    )
    .await;
    wait_completed(&primary, "busy").await;
    wait_completed(&primary, "quiet").await;

    let busy = "/management/v1/tables/wh/db/busy/replication";
    primary
        .post(&format!("{busy}/pause"), json!({}))
        .await
        .expect(200);
    let set = |key: &str, value: String| {
        json!({ "requirements": [],
                "updates": [{ "action": "set-properties", "updates": { key: value } }] })
    };
    for n in 1..=BACKLOG {
        primary
            .commit("db", "busy", set("n", n.to_string()))
            .await
            .expect(200);
    }
    primary
        .post(&format!("{busy}/resume"), json!({}))
        .await
        .expect(200);
    // Once the busy stream is at work on its backlog, the quiet table changes.
    for _ in 0..200 {
        if busy_at(&replica).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    primary
        .commit("db", "quiet", set("seen", "yes".to_string()))
        .await
        .expect(200);
    let mut busy_when_seen = None;
    for _ in 0..1_000 {
        let quiet = replica
            .get("/v1/wh/namespaces/db/tables/quiet")
            .await
            .expect(200);
        if quiet["metadata"]["properties"]["seen"] == "yes" {
            busy_when_seen = Some(busy_at(&replica).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy_when_seen =
        busy_when_seen.expect("the quiet table's change never reached the replica");
    assert!(
        busy_when_seen < BACKLOG,
        "the quiet table's change waited for the whole backlog of the busy one"
    );
    wait_completed(&primary, "busy").await;
    assert_eq!(busy_at(&replica).await, BACKLOG);
    primary.server.stop().await;
    replica.server.stop().await;
}
