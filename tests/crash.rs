//! Crash paths: a real `floe serve` process is killed with SIGKILL while commits stream in, then
//! restarted. Every acknowledged commit must be in the log and in the table, in order, with no gap;
//! no log entry may point at a missing metadata file.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::append_commit;
use serde_json::{Value, json};

struct FloeProcess {
    child: Child,
    base: String,
}

fn spawn_floe(config: &std::path::Path) -> FloeProcess {
    let text = std::fs::read_to_string(config).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn floe");
    FloeProcess {
        child,
        base: format!("http://{listen}"),
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/v1/config")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("floe did not start at {base}");
}

async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn kill_9_during_commits_loses_no_acknowledged_commit() {
    let url = common::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("wh");
    std::fs::create_dir_all(&warehouse).unwrap();
    let config = dir.path().join("floe.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\ndatabase_url = \"{url}\"\n\n[[warehouses]]\nname = \"wh\"\nroot = \"file://{}\"\n",
            free_port(),
            warehouse.display()
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let mut floe = spawn_floe(&config);
    wait_ready(&http, &floe.base).await;
    let base = floe.base.clone();
    http.post(format!("{base}/v1/wh/namespaces"))
        .json(&json!({"namespace": ["ns"]}))
        .send()
        .await
        .unwrap();
    let created = json_of(
        http.post(format!("{base}/v1/wh/namespaces/ns/tables"))
            .json(&json!({"name": "t", "schema": common::simple_schema()})),
    )
    .await;
    let uuid = created["metadata"]["table-uuid"]
        .as_str()
        .unwrap()
        .to_string();

    // Four writers append in a loop, each retrying conflicts on fresh metadata, until floe dies.
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (http, base, uuid) = (http.clone(), base.clone(), uuid.clone());
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
                    .json(&append_commit(&uuid, parent, id, seq))
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
    floe.child.kill().unwrap(); // SIGKILL
    floe.child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 5,
        "too few commits before the kill: {}",
        acknowledged.len()
    );

    let mut floe = spawn_floe(&config);
    wait_ready(&http, &floe.base).await;
    let table = json_of(http.get(format!("{}/v1/wh/namespaces/ns/tables/t", floe.base))).await;
    let snapshot_ids = common::snapshot_ids(&table);
    for id in &acknowledged {
        assert!(snapshot_ids.contains(id), "acknowledged snapshot {id} lost");
    }
    let log: Value = http
        .get(format!(
            "{}/management/v1/log?after=0&limit=1000",
            floe.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    floe.child.kill().unwrap();
    floe.child.wait().unwrap();
}
