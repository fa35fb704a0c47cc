//! Failover with one real `floe serve` process per region (issue 14): a forced promotion of a
//! replica while its source is down, the old primary fenced when it returns (its writes refused,
//! the commits the new primary never received listed and kept), and the table replicated back to
//! it from the new primary.

mod common;

use std::time::Duration;

use common::region::{Region, call, create_rule, create_table_named, get, post, register_peer};
use serde_json::{Value, json};

const A_TOKEN: &str = "region-a-token-0123456";
const B_TOKEN: &str = "region-b-token-0123456";

async fn commit_property(region: &Region, value: &str) -> (u16, Value) {
    call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/tables/t", region.base),
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
    set_property(&a, "lost-2").await; // version 5
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
    let (status, body) = post(promote.clone(), json!({ "mode": "planned" })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], 422, "{body}");
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
