//! Following the update log: `GET /management/v1/log?wait=` long-polls for entries, and
//! `Accept: application/cloudevents-batch+json` gives them as CloudEvents.

mod common;

use std::time::{Duration, Instant};

use common::TestFloe;
use serde_json::{Value, json};

async fn last_seq(floe: &TestFloe) -> i64 {
    floe.log()
        .await
        .last()
        .map_or(0, |e| e["seq"].as_i64().unwrap())
}

/// A waiting read answers as soon as an entry lands (well within half a second of the commit's
/// acknowledgement), and after `wait` seconds with nothing when none does.
#[tokio::test]
async fn a_long_poll_answers_when_an_entry_lands_or_when_its_wait_is_over() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["db"]).await;
    floe.create_table("db", "t").await;
    let after = last_seq(&floe).await;
    let url = floe.url(&format!("/management/v1/log?after={after}&wait=20"));
    let waiting = tokio::spawn(async move {
        let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        (Instant::now(), page)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the read did not wait");
    let change = json!({"requirements": [], "updates": [
        {"action": "set-properties", "updates": {"k": "v"}}]});
    floe.commit("db", "t", change).await.expect(200);
    let acknowledged = Instant::now();
    let (answered, page) = waiting.await.unwrap();
    let delay = answered.saturating_duration_since(acknowledged);
    eprintln!("long-poll answered {delay:?} after the commit's acknowledgement");
    assert!(delay < Duration::from_millis(500), "{delay:?}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["kind"], "commit-table");
    assert_eq!(page["next-after"], entries[0]["seq"]);

    let after = page["next-after"].as_i64().unwrap();
    let started = Instant::now();
    let empty = floe
        .get(&format!("/management/v1/log?after={after}&wait=1"))
        .await
        .expect(200);
    let waited = started.elapsed();
    assert!(empty["entries"].as_array().unwrap().is_empty(), "{empty}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let refused = floe.get("/management/v1/log?wait=301").await;
    assert_eq!(
        refused.error_type(),
        "BadRequestException",
        "{}",
        refused.body
    );
    refused.expect(400);
    floe.server.stop().await;
}

/// A read waiting at one instance learns of an entry another instance of the region appended
/// (their only link is the database).
#[tokio::test]
async fn a_long_poll_sees_what_another_instance_appends() {
    let first = TestFloe::start().await;
    first.create_namespace(&["db"]).await;
    let second = TestFloe::start_with(first.settings.clone(), tempfile::tempdir().unwrap()).await;
    let after = last_seq(&first).await;
    let url = second.url(&format!("/management/v1/log?after={after}&wait=20"));
    let waiting = tokio::spawn(async move {
        let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        (Instant::now(), page)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.create_table("db", "t").await;
    let acknowledged = Instant::now();
    let (answered, page) = waiting.await.unwrap();
    let delay = answered.saturating_duration_since(acknowledged);
    eprintln!("the other instance's long-poll answered {delay:?} after the create");
    assert!(delay < Duration::from_secs(2), "{delay:?}");
    assert_eq!(page["entries"][0]["kind"], "create-table", "{page}");
    second.server.stop().await;
    first.server.stop().await;
}

/// With `Accept: application/cloudevents-batch+json` the entries come as CloudEvents 1.0, each
/// entry its event's `data`, the next `after` in `floe-next-after`.
#[tokio::test]
async fn entries_come_as_cloudevents_when_asked() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["db"]).await;
    floe.create_table("db", "t").await;
    let answer = reqwest::Client::new()
        .get(floe.url("/management/v1/log?after=0"))
        .header("Accept", "application/cloudevents-batch+json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["content-type"],
        "application/cloudevents-batch+json"
    );
    let next_after = answer.headers()["floe-next-after"]
        .to_str()
        .unwrap()
        .to_string();
    let events: Vec<Value> = answer.json().await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["io.floe.log.create-namespace", "io.floe.log.create-table"]
    );
    let table = &events[1];
    assert_eq!(table["specversion"], "1.0");
    assert_eq!(table["id"], table["data"]["seq"].to_string());
    assert_eq!(table["id"], next_after.as_str());
    assert_eq!(table["source"], "/floe/local/wh");
    assert_eq!(table["subject"], "db.t");
    assert_eq!(table["data"]["kind"], "create-table");
    assert!(table["time"].is_string());
    floe.server.stop().await;
}

/// Reading what is new walks the log's index from where the reader is, however long the log: the
/// replicator reads it every round, so a plan that scans the whole log (as PostgreSQL chose for the
/// probe above the horizon while it had no order) costs every round the log's length.
#[tokio::test]
async fn reading_what_is_new_does_not_scan_the_whole_log() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["db"]).await;
    floe.create_table("db", "t").await;
    for i in 0..300 {
        let change = json!({"requirements": [], "updates": [
            {"action": "set-properties", "updates": {"k": i.to_string()}}]});
        floe.commit("db", "t", change).await.expect(200);
    }
    let url = floe.database_url().to_string();
    // Nobody else reads the log from here on: only this connection's scans are counted.
    drop(floe);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let sequential_scans = || async {
        // This backend's counts reach the statistics once it is idle after this call.
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query_scalar::<_, i64>(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'commit_log'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let newest = floe::log::max_seq(&pool).await.unwrap();
    let before = sequential_scans().await;
    for _ in 0..20 {
        let changes = floe::log::changes_since(&pool, newest, 100).await.unwrap();
        assert!(changes.entries.is_empty() && !changes.waiting);
    }
    let behind = floe::log::changes_since(&pool, 0, 100).await.unwrap();
    assert_eq!(behind.entries.len(), 100);
    assert_eq!(sequential_scans().await, before);
}
