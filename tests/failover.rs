//! Failover with one real `floe serve` process per region (issue 14): a forced promotion of a
//! replica while its source is down, the old primary fenced when it returns (its writes refused,
//! the commits the new primary never received listed and kept), and the table replicated back to
//! it from the new primary, and its diverged state exported as a table of its own.

mod common;

use std::time::Duration;

use common::region::{Region, call, create_rule, create_table_named, get, post, register_peer};
use serde_json::{Value, json};

const A_TOKEN: &str = "region-a-token-0123456";
const B_TOKEN: &str = "region-b-token-0123456";

async fn commit_property(region: &Region, value: &str) -> (u16, Value) {
    commit_property_at(&region.base, value).await
}

async fn commit_property_at(base: &str, value: &str) -> (u16, Value) {
    commit_table_property(base, "t", value).await
}

/// Sets property `k` of `db.<table>` at the region served at `base`.
async fn commit_table_property(base: &str, table: &str, value: &str) -> (u16, Value) {
    call(
        reqwest::Method::POST,
        format!("{base}/v1/wh/namespaces/db/tables/{table}"),
        Some(json!({ "requirements": [], "updates": [
            { "action": "set-properties", "updates": { "k": value } }] })),
    )
    .await
}

async fn set_property(region: &Region, value: &str) {
    let (status, body) = commit_property(region, value).await;
    assert_eq!(status, 200, "{body}");
}

async fn property(region: &Region) -> Option<String> {
    let loaded = get(format!("{}/v1/wh/namespaces/db/tables/t", region.base)).await;
    loaded["metadata"]["properties"]["k"]
        .as_str()
        .map(str::to_string)
}

fn status_url(region: &Region) -> String {
    format!("{}/management/v1/tables/wh/db/t/replication", region.base)
}

/// Polls `region`'s status of `db.t` until `done` holds (up to `seconds`).
async fn wait_status(region: &Region, seconds: u64, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..seconds * 10 {
        last = get(status_url(region)).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the status never got there: {last}");
}

async fn wait_property(region: &Region, value: &str, seconds: u64) {
    for _ in 0..seconds * 10 {
        if property(region).await.as_deref() == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "k never became {value} at {}: {:?}",
        region.base,
        property(region).await
    );
}

fn completed(status: &Value) -> bool {
    common::replication_completed(status)
}

#[tokio::test]
async fn forced_promotion_fences_the_old_primary_and_replicates_back_to_it() {
    let mut a = Region::start("a", &[("b", B_TOKEN)], None).await;
    let mut b = Region::start("b", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    register_peer(&b, &a, "a", B_TOKEN).await;
    create_rule(&a, json!([{ "peer": "b", "warehouse": "wh" }])).await;
    create_table_named(&a, "t").await;
    set_property(&a, "a-1").await;
    set_property(&a, "a-2").await; // version 3
    wait_status(&a, 30, completed).await;
    assert_eq!(property(&b).await.as_deref(), Some("a-2"));

    // B goes down: what A commits now never reaches it. Then A is lost too.
    b.kill9();
    set_property(&a, "lost-1").await; // version 4
    let appended = append(&a).await; // version 5, with data files
    // A's stream is paused, so that A can only learn of the promotion from B's stream back to it
    // (asking its peers at start is the next test's).
    let (status, body) = post(
        format!("{}/management/v1/tables/wh/db/t/replication/pause", a.base),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    a.kill9();
    b.spawn().await;

    // Bad promotions change nothing.
    let promote = format!("{}/management/v1/tables/wh/db/t/promote", b.base);
    let (status, body) = post(promote.clone(), json!({ "mode": "sideways" })).await;
    assert_eq!(status, 400, "{body}");
    // A planned switchover needs the primary: A is down.
    let (status, body) = post(promote.clone(), json!({ "mode": "planned" })).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("forced"),
        "{body}"
    );
    let (status, body) = post(
        format!("{}/management/v1/tables/wh/db/nope/promote", b.base),
        json!({ "mode": "forced" }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = commit_property(&b, "too-early").await;
    assert_eq!(
        status, 403,
        "a replica refuses writes before its promotion: {body}"
    );

    // Forced promotion: B is the primary at once, at epoch 2.
    let (status, promoted) = post(promote.clone(), json!({ "mode": "forced" })).await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["epoch"], 2, "{promoted}");
    assert_eq!(promoted["previous-primary"], "a", "{promoted}");
    assert_eq!(promoted["promoted-at-version"], 3, "{promoted}");
    assert!(promoted["replicates-back"].is_string(), "{promoted}");
    set_property(&b, "b-1").await;
    let (status, again) = post(promote.clone(), json!({ "mode": "forced" })).await;
    assert_eq!(status, 422, "a primary is not promoted again: {again}");
    let at_b = get(status_url(&b)).await;
    assert_eq!(at_b["role"]["role"], "primary", "{at_b}");
    assert_eq!(at_b["role"]["epoch"], 2, "{at_b}");

    // B is cut off in its turn, and A returns while it is: A cannot learn of the promotion
    // yet, and takes one more write that B will never have.
    b.kill9();
    a.spawn().await;
    set_property(&a, "lost-3").await; // version 6
    let log = get(format!("{}/management/v1/log?after=0&limit=100", a.base)).await;
    let lost_locations: Vec<String> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["table-name"] == "t" && e["table-version"].as_i64() > Some(3))
        .map(|e| e["new-metadata-location"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lost_locations.len(), 3, "{lost_locations:?}");
    // B is back: the first change of its stream back to A names the table it supersedes.
    b.spawn().await;
    let fenced = wait_status(&a, 30, |s| s["role"]["role"] == "replica").await;
    let role = &fenced["role"];
    assert_eq!(role["epoch"], 2, "{fenced}");
    assert_eq!(role["primary-region"], "b", "{fenced}");
    assert_eq!(role["primary-url"], b.base.as_str(), "{fenced}");
    let diverged = &role["diverged"];
    assert_eq!(diverged["promoted-at-version"], 3, "{fenced}");
    assert_eq!(diverged["fenced-at-version"], 6, "{fenced}");
    let commits = diverged["commits"].as_array().unwrap();
    let versions: Vec<i64> = commits
        .iter()
        .map(|c| c["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, vec![4, 5, 6], "{fenced}");
    let listed: Vec<String> = commits
        .iter()
        .map(|c| c["metadata-location"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, lost_locations, "{fenced}");
    assert!(
        commits[0]["seq"].as_i64() < commits[1]["seq"].as_i64(),
        "{fenced}"
    );
    // The diverged states' files are kept.
    for location in &lost_locations {
        let path = location.strip_prefix("file://").unwrap();
        assert!(std::path::Path::new(path).exists(), "{location} is gone");
    }
    assert_eq!(
        diverged["last-metadata-location"],
        lost_locations[2].as_str()
    );
    // The fencing is in A's audit trail, saying which versions never reached B.
    let audit = get(format!("{}/management/v1/audit?limit=1000", a.base)).await;
    let fencing = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "table.fenced")
        .unwrap_or_else(|| panic!("no fencing in {audit}"))
        .to_string();
    assert!(
        fencing.contains("versions 4 to 6 here never reached it") && !fencing.contains("  "),
        "{fencing}"
    );

    // Writes at A are refused, naming the new primary; nothing changes.
    let (status, refused) = commit_property(&a, "split-brain").await;
    assert_eq!(status, 403, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("region `b`") && message.contains(&b.base),
        "{message}"
    );

    // A follows B: B's writes, before and after A came back, arrive there.
    wait_property(&a, "b-1", 30).await;
    set_property(&b, "b-2").await;
    wait_property(&a, "b-2", 30).await;
    let at_b = wait_status(&b, 30, completed).await;
    let destinations = at_b["destinations"].as_array().unwrap();
    assert_eq!(destinations.len(), 1, "{at_b}");
    assert_eq!(destinations[0]["peer"], "a", "{at_b}");
    // A's stream to B is gone: A no longer pushes the table anywhere.
    let at_a = get(status_url(&a)).await;
    assert_eq!(at_a["destinations"], json!([]), "{at_a}");
    assert_eq!(property(&b).await.as_deref(), Some("b-2"));

    export_diverged_state(&a, &b, &lost_locations, &appended).await;
}

/// At the fenced A: its last state (versions 4 to 6, which B never had) exported as
/// `t_diverged_2`, a table of A's own with its files copied, which replicates to B.
async fn export_diverged_state(
    a: &Region,
    b: &Region,
    lost_locations: &[String],
    appended: &common::Append,
) {
    let export = |region: &Region, table: &str| {
        post(
            format!(
                "{}/management/v1/tables/wh/db/{table}/export-diverged",
                region.base
            ),
            json!({}),
        )
    };
    let (status, body) = export(b, "t").await;
    assert_eq!(
        status, 422,
        "a primary never fenced has nothing to export: {body}"
    );
    let (status, body) = export(a, "nope").await;
    assert_eq!(status, 404, "{body}");

    let (status, exported) = export(a, "t").await;
    assert_eq!(status, 200, "{exported}");
    assert_eq!(exported["table"], "t_diverged_2", "{exported}");
    assert_eq!(exported["versions"], json!([4, 5, 6]), "{exported}");
    assert_eq!(exported["exported-from"], lost_locations[2].as_str());
    assert_eq!(exported["primary-region"], "b", "{exported}");
    // A's warehouse rule covers the new table: no rule of its own.
    assert!(exported.get("rule").is_none(), "{exported}");
    assert!(exported.get("note").is_none(), "{exported}");
    let (status, again) = export(a, "t").await;
    assert_eq!(status, 409, "an export is made once: {again}");

    // At A: the diverged state, in a location of its own, naming only its own copies.
    let url = |region: &Region| format!("{}/v1/wh/namespaces/db/tables/t_diverged_2", region.base);
    let at_a = get(url(a)).await;
    let metadata = &at_a["metadata"];
    assert_eq!(metadata["properties"]["k"], "lost-3", "{at_a}");
    assert_eq!(
        metadata["current-snapshot-id"], appended.snapshot_id,
        "{at_a}"
    );
    let location = metadata["location"].as_str().unwrap();
    let original = get(format!("{}/v1/wh/namespaces/db/tables/t", a.base)).await;
    assert_ne!(location, original["metadata"]["location"], "{at_a}");
    let list = metadata["snapshots"][0]["manifest-list"].as_str().unwrap();
    assert!(list.starts_with(location), "{list} is not under {location}");
    assert!(std::path::Path::new(list.strip_prefix("file://").unwrap()).exists());
    let original_location = original["metadata"]["location"].as_str().unwrap();
    let export_dir = std::path::Path::new(location.strip_prefix("file://").unwrap());
    let naming_original = common::iceberg_files::files_mentioning(export_dir, original_location);
    assert!(
        naming_original.is_empty(),
        "copies name the fenced table's files: {naming_original:?}"
    );

    // At B: the export arrives as A's table, its files copied into B's warehouse.
    let mut at_b = Value::Null;
    for _ in 0..300 {
        let (status, body) = call(reqwest::Method::GET, url(b), None).await;
        if status == 200 && body["metadata"]["current-snapshot-id"] == appended.snapshot_id {
            at_b = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(at_b["metadata"]["properties"]["k"], "lost-3", "{at_b}");
    let list = at_b["metadata"]["snapshots"][0]["manifest-list"]
        .as_str()
        .unwrap();
    assert!(list.starts_with(&b.root()), "{list}");
    assert!(std::path::Path::new(list.strip_prefix("file://").unwrap()).exists());

    // Purging the export at A takes its copies only: the fenced table's diverged files stay.
    let (status, body) = call(
        reqwest::Method::DELETE,
        format!("{}?purgeRequested=true", url(a)),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    for file in lost_locations.iter().chain(&appended.files) {
        let path = file.strip_prefix("file://").unwrap();
        assert!(
            std::path::Path::new(path).exists(),
            "{file} went with the export"
        );
    }
    let (status, _) = call(reqwest::Method::GET, url(a), None).await;
    assert_eq!(status, 404);
}

/// Appends a snapshot with real data files to `db.t` at `region`.
async fn append(region: &Region) -> common::Append {
    let loaded = get(format!("{}/v1/wh/namespaces/db/tables/t", region.base)).await;
    let mut writer = floe::bench::files::SnapshotWriter::default();
    let next = common::prepare_append(&loaded, &mut writer, &common::host_files(), 2, 1024).await;
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/tables/t", region.base),
        Some(next.body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    next
}

#[tokio::test]
async fn an_old_primary_learns_of_the_promotion_before_it_serves() {
    let mut a = Region::start("a", &[("b", B_TOKEN)], None).await;
    let mut b = Region::start("b", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    create_rule(&a, json!([{ "peer": "b", "warehouse": "wh" }])).await;
    create_table_named(&a, "t").await;
    set_property(&a, "a-1").await; // version 2
    wait_status(&a, 30, completed).await;
    b.kill9();
    set_property(&a, "lost-1").await; // version 3
    a.kill9();
    b.spawn().await;

    // B does not know region a as a peer: the table cannot replicate back by itself.
    let (status, promoted) = post(
        format!("{}/management/v1/tables/wh/db/t/promote", b.base),
        json!({ "mode": "forced" }),
    )
    .await;
    assert_eq!(status, 200, "{promoted}");
    assert!(promoted.get("replicates-back").is_none(), "{promoted}");
    assert!(
        promoted["note"]
            .as_str()
            .unwrap()
            .contains("not a registered peer"),
        "{promoted}"
    );
    set_property(&b, "b-1").await;

    // A returns. It asks its peers for promotions before it serves: its first write is refused.
    a.spawn().await;
    let (status, refused) = commit_property(&a, "first-write").await;
    assert_eq!(status, 403, "{refused}");
    let fenced = wait_status(&a, 30, |s| s["role"]["role"] == "replica").await;
    assert_eq!(fenced["role"]["epoch"], 2, "{fenced}");
    let commits = fenced["role"]["diverged"]["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 1, "{fenced}");
    assert_eq!(commits[0]["version"], 3, "{fenced}");
    let (status, refused) = commit_property(&a, "split-brain").await;
    assert_eq!(status, 403, "{refused}");
    // B never took version 3: its state is its own.
    assert_eq!(property(&b).await.as_deref(), Some("b-1"));

    // Once B knows A, a rule brings the table back to it.
    register_peer(&b, &a, "a", B_TOKEN).await;
    let (status, body) = post(
        format!("{}/management/v1/replication-rules", b.base),
        json!({ "warehouse": "wh", "namespace": ["db"], "table": "t",
                "destinations": [{ "peer": "a", "warehouse": "wh" }] }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    wait_property(&a, "b-1", 30).await;
}

#[tokio::test]
async fn planned_switchover_while_a_writer_commits_loses_nothing() {
    let a = Region::start("a", &[("b", B_TOKEN)], None).await;
    let b = Region::start("b", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    register_peer(&b, &a, "a", B_TOKEN).await;
    create_rule(&a, json!([{ "peer": "b", "warehouse": "wh" }])).await;
    create_table_named(&a, "t").await;
    set_property(&a, "w-0").await;
    wait_status(&a, 30, completed).await;
    let promote = format!("{}/management/v1/tables/wh/db/t/promote", b.base);

    // A replica that cannot catch up in time: the switchover is abandoned, A writes again.
    let pause = format!("{}/management/v1/tables/wh/db/t/replication/pause", a.base);
    let (status, body) = post(pause, json!({})).await;
    assert_eq!(status, 200, "{body}");
    set_property(&a, "behind").await;
    let (status, body) = post(
        promote.clone(),
        json!({ "mode": "planned", "timeout-ms": 1000 }),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing changed"),
        "{body}"
    );
    set_property(&a, "w-0").await;
    let at_b = get(status_url(&b)).await;
    assert_eq!(at_b["role"]["role"], "replica", "{at_b}");
    let resume = format!("{}/management/v1/tables/wh/db/t/replication/resume", a.base);
    let (status, body) = post(resume, json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_status(&a, 30, completed).await;

    // A writer commits at A without pause until it is refused.
    let base = a.base.clone();
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 1.. {
            let (status, body) = commit_property_at(&base, &format!("w-{i}")).await;
            match status {
                200 => acknowledged.push(i),
                403 => return (acknowledged, body),
                _ => panic!("commit w-{i}: {status} {body}"),
            }
        }
        unreachable!()
    });
    while get(format!("{}/v1/wh/namespaces/db/tables/t", a.base)).await["metadata"]["properties"]["k"]
        == "w-0"
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, promoted) = post(promote.clone(), json!({ "mode": "planned" })).await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["epoch"], 2, "{promoted}");
    assert_eq!(promoted["previous-primary"], "a", "{promoted}");
    assert!(promoted["writes-refused-ms"].is_u64(), "{promoted}");
    assert!(promoted["replicates-back"].is_string(), "{promoted}");
    let (acknowledged, refusal) = writer.await.unwrap();
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("region `b`") && message.contains(&b.base),
        "{message}"
    );
    // A message a person reads: its source lines joined without their indentation.
    assert!(!message.contains("  "), "{message}");

    // Every acknowledged commit is at B: the last one is its state, at the version A gave it.
    let last = acknowledged
        .last()
        .expect("the writer committed before the switchover");
    assert_eq!(property(&b).await, Some(format!("w-{last}")));
    let at_b = get(status_url(&b)).await;
    assert_eq!(at_b["role"]["role"], "primary", "{at_b}");
    // create, w-0, behind, w-0 again, then the writer's.
    let version = 4 + acknowledged.len() as i64;
    assert_eq!(promoted["promoted-at-version"], version, "{promoted}");

    // A is B's replica with nothing diverged, refuses writes, and follows B.
    let fenced = wait_status(&a, 30, |s| s["role"]["role"] == "replica").await;
    assert_eq!(fenced["role"]["epoch"], 2, "{fenced}");
    assert_eq!(fenced["role"]["diverged"]["commits"], json!([]), "{fenced}");
    let (status, refused) = commit_property(&a, "split-brain").await;
    assert_eq!(status, 403, "{refused}");
    set_property(&b, "b-1").await;
    wait_property(&a, "b-1", 30).await;

    // A region may ask for the handover of a table replicated to it only: A's t is B's
    // replica now, so B cannot take it over from A again.
    let log = get(format!("{}/management/v1/log?after=0&limit=100", a.base)).await;
    let table_id = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["table-name"] == "t")
        .and_then(|e| e["table-id"].as_str())
        .unwrap()
        .to_string();
    let refused = reqwest::Client::new()
        .post(format!(
            "{}{}",
            a.base,
            floe::contract::peer_protocol::HANDOVER_PATH
        ))
        .bearer_auth(B_TOKEN)
        .json(&json!({ "type": "begin", "table-id": table_id, "epoch": 2, "lasting-ms": 1000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let (status, still) = commit_property(&a, "split-brain").await;
    assert_eq!(status, 403, "{still}");
    assert!(
        still["error"]["message"]
            .as_str()
            .unwrap()
            .contains("read-only replica"),
        "{still}"
    );

    // The handover and the fencing are in A's audit trail.
    let audit = get(format!("{}/management/v1/audit?limit=1000", a.base)).await;
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "table.handed-over",
        "table.handover-released",
        "table.fenced",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
}

#[tokio::test]
async fn a_warehouse_switches_over_table_by_table() {
    let a = Region::start("a", &[("b", B_TOKEN)], None).await;
    let b = Region::start("b", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    register_peer(&b, &a, "a", B_TOKEN).await;
    create_rule(&a, json!([{ "peer": "b", "warehouse": "wh" }])).await;
    for table in ["t", "u", "v"] {
        create_table_named(&a, table).await;
    }
    for table in ["t", "u", "v"] {
        let url = format!("{}/management/v1/tables/wh/db/{table}/replication", a.base);
        for _ in 0..300 {
            if completed(&get(url.clone()).await) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // v cannot catch up: its stream is paused behind a commit B does not have.
    let (status, body) = post(
        format!("{}/management/v1/tables/wh/db/v/replication/pause", a.base),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = commit_table_property(&a.base, "v", "behind").await;
    assert_eq!(status, 200, "{body}");

    let promote = format!("{}/management/v1/warehouses/wh/promote", b.base);
    let (status, body) = post(promote.clone(), json!({ "mode": "sideways" })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        format!("{}/management/v1/warehouses/nope/promote", b.base),
        json!({ "mode": "planned" }),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    let (status, result) = post(
        promote.clone(),
        json!({ "mode": "planned", "timeout-ms": 1500 }),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["source-region"], "a", "{result}");
    let tables = result["tables"].as_array().unwrap();
    let names: Vec<&str> = tables
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["t", "u", "v"], "{result}");
    for outcome in &tables[..2] {
        assert_eq!(outcome["promoted"]["epoch"], 2, "{result}");
        assert!(outcome.get("error").is_none(), "{result}");
    }
    assert_eq!(tables[2]["error"]["code"], 503, "{result}");
    assert!(tables[2].get("promoted").is_none(), "{result}");

    // t and u are B's; v is still A's, and takes writes there.
    for table in ["t", "u"] {
        let (status, body) = commit_table_property(&b.base, table, "b").await;
        assert_eq!(status, 200, "{table}: {body}");
    }
    let (status, body) = commit_table_property(&a.base, "v", "still-a").await;
    assert_eq!(status, 200, "{body}");
    // The namespace still holds a replica (v): it is still A's, and takes no new table here.
    assert_eq!(result["namespaces"], json!([]), "{result}");
    let create_at_b = || {
        post(
            format!("{}/v1/wh/namespaces/db/tables", b.base),
            json!({ "name": "new_at_b", "schema": common::simple_schema() }),
        )
    };
    let (status, body) = create_at_b().await;
    assert_eq!(status, 403, "{body}");

    // Promoted again, only v is left to promote (t and u are primaries now), and then the
    // namespace is B's own.
    let (status, again) = post(promote, json!({ "mode": "forced" })).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["namespaces"], json!([["db"]]), "{again}");
    let (status, body) = create_at_b().await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = again["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v"], "{again}");
    assert_eq!(again["tables"][0]["promoted"]["epoch"], 2, "{again}");
}

#[tokio::test]
async fn the_old_primarys_other_destinations_follow_the_new_primary() {
    let a = Region::start("a", &[("b", B_TOKEN)], None).await;
    let b = Region::start("b", &[("a", A_TOKEN)], None).await;
    let c = Region::start("c", &[("a", A_TOKEN), ("b", B_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    register_peer(&a, &c, "c", A_TOKEN).await;
    register_peer(&b, &a, "a", B_TOKEN).await;
    create_rule(
        &a,
        json!([{ "peer": "b", "warehouse": "wh" }, { "peer": "c", "warehouse": "wh" }]),
    )
    .await;
    create_table_named(&a, "t").await;
    let mut files = floe::bench::files::SnapshotWriter::default();
    let loaded = get(format!("{}/v1/wh/namespaces/db/tables/t", a.base)).await;
    let next = common::prepare_append(&loaded, &mut files, &common::host_files(), 2, 1024).await;
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/tables/t", a.base),
        Some(next.body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    set_property(&a, "a-1").await;
    wait_status(&a, 30, |s| {
        completed(s) && s["destinations"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await;
    assert_eq!(property(&c).await.as_deref(), Some("a-1"));

    let (status, promoted) = post(
        format!("{}/management/v1/tables/wh/db/t/promote", b.base),
        json!({ "mode": "planned" }),
    )
    .await;
    assert_eq!(status, 200, "{promoted}");
    set_property(&b, "b-1").await;

    // C, which A replicated the table to, follows B through A: B's writes reach it, it never
    // lost A's state on the way, and it names B as the place to write.
    // A reader polling C all the while sees A's state or B's, never less.
    let mut at_c = Value::Null;
    for _ in 0..600 {
        at_c = get(format!("{}/v1/wh/namespaces/db/tables/t", c.base)).await;
        let metadata = &at_c["metadata"];
        assert_eq!(metadata["current-snapshot-id"], next.snapshot_id, "{at_c}");
        let k = metadata["properties"]["k"].as_str();
        assert!(matches!(k, Some("a-1" | "b-1")), "{at_c}");
        if k == Some("b-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(at_c["metadata"]["properties"]["k"], "b-1", "{at_c}");
    wait_property(&a, "b-1", 30).await;
    let (status, refused) = commit_property(&c, "c-1").await;
    assert_eq!(status, 403, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("region `b`"), "{message}");
}
