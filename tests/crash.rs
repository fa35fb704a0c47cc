//! Crash paths: a real `floe serve` process is killed with SIGKILL while commits stream in, then
//! restarted. Every acknowledged commit must be in the log and in the table, in order, with no gap;
//! no log entry may point at a missing metadata file.

mod common;

use std::time::Duration;

use common::append_commit;
use common::region::{Region, get, post};
use serde_json::{Value, json};

#[tokio::test]
async fn kill_9_during_commits_loses_no_acknowledged_commit() {
    let mut floe = Region::start("local", &[], None).await;
    let http = reqwest::Client::new();
    let base = floe.base.clone();
    post(
        format!("{base}/v1/wh/namespaces"),
        json!({"namespace": ["ns"]}),
    )
    .await;
    let (status, created) = post(
        format!("{base}/v1/wh/namespaces/ns/tables"),
        json!({"name": "t", "schema": common::simple_schema()}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let table = common::TableId::of(&created);
    let uuid = table.uuid.clone();

    // Four writers append in a loop, each retrying conflicts on fresh metadata, until floe dies.
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (http, base, table) = (http.clone(), base.clone(), table.clone());
        writers.push(tokio::spawn(async move {
            let url = format!("{base}/v1/wh/namespaces/ns/tables/t");
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let Ok(reply) = http.get(&url).send().await else {
                    break;
                };
                let Ok(current) = reply.json::<Value>().await else {
                    break;
                };
                let parent = current["metadata"]["current-snapshot-id"].as_i64();
                let seq = current["metadata"]["last-sequence-number"]
                    .as_i64()
                    .unwrap_or(0)
                    + 1;
                let id = 1_000_000 * (w + 1) + i;
                match http
                    .post(&url)
                    .json(&append_commit(&table, parent, id, seq))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => acknowledged.push(id),
                    Ok(r) if r.status() == 409 => {}
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => break, // floe is gone: this commit's outcome is unknown
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    floe.kill9();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 5,
        "too few commits before the kill: {}",
        acknowledged.len()
    );

    floe.spawn().await;
    let table = get(format!("{base}/v1/wh/namespaces/ns/tables/t")).await;
    let snapshot_ids = common::snapshot_ids(&table);
    for id in &acknowledged {
        assert!(snapshot_ids.contains(id), "acknowledged snapshot {id} lost");
    }
    let log = get(format!("{base}/management/v1/log?after=0&limit=1000")).await;
    let entries: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["table-uuid"] == uuid.as_str())
        .collect();
    let versions: Vec<i64> = entries
        .iter()
        .map(|e| e["table-version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, (1..=entries.len() as i64).collect::<Vec<_>>());
    // One commit entry per snapshot (possibly one more committed whose reply was lost to the kill).
    assert_eq!(entries.len() - 1, snapshot_ids.len());
    for entry in &entries {
        let file = entry["new-metadata-location"]
            .as_str()
            .unwrap()
            .trim_start_matches("file://");
        assert!(
            std::path::Path::new(file).exists(),
            "log entry points at missing {file}"
        );
    }
    assert_eq!(
        entries.last().unwrap()["new-metadata-location"],
        table["metadata-location"],
        "the pointer is the last logged metadata"
    );
    floe.kill9();
}
