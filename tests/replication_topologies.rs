//! Replication topologies with one real `floe serve` process per region (each its own database and
//! warehouse): fan-out to two destinations, aggregation of two sources into one destination with
//! namespace prefixes, and a chain A -> B -> C (tables, namespace properties and views).

mod common;

use common::iceberg_files::files_mentioning;
use common::region::{
    Region, append_to, call, create_rule, create_table_named, get, register_peer,
    wait_completed_for,
};
use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

const EAST: &str = "east-token-0123456";
const WEST: &str = "west-token-0123456";

async fn set_property(source: &Region, key: &str, value: &str) {
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/tables/t", source.base),
        Some(json!({ "requirements": [], "updates": [
            { "action": "set-properties", "updates": { key: value } }] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

fn sorted_ids(loaded: &Value) -> Vec<i64> {
    let mut ids = common::snapshot_ids(loaded);
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn fan_out_and_aggregation_with_namespace_prefixes() {
    let east = Region::start("east", &[], None).await;
    let west = Region::start("west", &[], None).await;
    let hub = Region::start("hub", &[("east", EAST), ("west", WEST)], None).await;
    let backup = Region::start("backup", &[("east", EAST)], None).await;
    register_peer(&east, &hub, "hub", EAST).await;
    register_peer(&east, &backup, "backup", EAST).await;
    register_peer(&west, &hub, "hub", WEST).await;
    // East fans out to two destinations; east and west aggregate into the hub under prefixes.
    create_rule(
        &east,
        json!([{ "peer": "hub", "warehouse": "wh", "namespace-prefix": ["east"] },
               { "peer": "backup", "warehouse": "wh" }]),
    )
    .await;
    create_rule(
        &west,
        json!([{ "peer": "hub", "warehouse": "wh", "namespace-prefix": ["west"] }]),
    )
    .await;
    let mut uuids = Vec::new();
    for (source, owner) in [(&east, "e"), (&west, "w")] {
        create_table_named(source, "t").await;
        set_property(source, "owner", owner).await;
        let loaded = get(format!("{}/v1/wh/namespaces/db/tables/t", source.base)).await;
        uuids.push(loaded["metadata"]["table-uuid"].clone());
    }
    let status = wait_completed_for(&east, "t", 30).await;
    assert_eq!(
        status["destinations"].as_array().unwrap().len(),
        2,
        "{status}"
    );
    wait_completed_for(&west, "t", 30).await;

    // The same name at both sources, no clash at the hub thanks to the prefixes.
    let from_east = get(format!("{}/v1/wh/namespaces/east%1Fdb/tables/t", hub.base)).await;
    let from_west = get(format!("{}/v1/wh/namespaces/west%1Fdb/tables/t", hub.base)).await;
    assert_eq!(from_east["metadata"]["table-uuid"], uuids[0]);
    assert_eq!(from_west["metadata"]["table-uuid"], uuids[1]);
    assert_eq!(from_east["metadata"]["properties"]["owner"], "e");
    assert_eq!(from_west["metadata"]["properties"]["owner"], "w");
    let in_backup = get(format!("{}/v1/wh/namespaces/db/tables/t", backup.base)).await;
    assert_eq!(in_backup["metadata"]["table-uuid"], uuids[0]);

    // A token speaks for its own region only: east's token cannot push west's tables.
    let response = reqwest::Client::new()
        .post(format!("{}/internal/v1/replication/apply", hub.base))
        .bearer_auth(EAST)
        .json(&json!({ "source-region": "west", "origin-region": "west",
            "source-table-id": uuids[1], "warehouse": "wh", "namespace": ["west", "db"],
            "name": "t", "generation": 1, "lease-token": 1, "from": { "version": 2, "step": 0 },
            "to": { "version": 3, "step": 0 }, "action": { "type": "orphan" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("belongs to region `east`")
    );
}

#[tokio::test]
async fn chains_replicate_a_replica_onwards() {
    let a = Region::start("a", &[("b", "b-token-0123456789")], None).await;
    let b = Region::start("b", &[("a", "a-token-0123456789")], None).await;
    let c = Region::start("c", &[("b", "b-token-0123456789")], None).await;
    register_peer(&a, &b, "b", "a-token-0123456789").await;
    register_peer(&b, &c, "c", "b-token-0123456789").await;
    // b's rule names a as well: a replica never flows back to the region it came from.
    register_peer(&b, &a, "a", "b-token-0123456789").await;
    create_rule(&a, json!([{ "peer": "b", "warehouse": "wh" }])).await;
    create_rule(
        &b,
        json!([{ "peer": "c", "warehouse": "wh" }, { "peer": "a", "warehouse": "wh" }]),
    )
    .await;

    create_table_named(&a, "t").await;
    let mut files = SnapshotWriter::default();
    append_to(&a, "t", &mut files, 2, 4096).await;
    let last = append_to(&a, "t", &mut files, 1, 4096).await;
    wait_completed_for(&a, "t", 30).await;
    let at_b = wait_completed_for(&b, "t", 30).await;
    let destinations = at_b["destinations"].as_array().unwrap();
    assert_eq!(destinations.len(), 1, "{at_b}");
    assert_eq!(destinations[0]["peer"], "c");

    let at_a = get(format!("{}/v1/wh/namespaces/db/tables/t", a.base)).await;
    let at_c = get(format!("{}/v1/wh/namespaces/db/tables/t", c.base)).await;
    assert_eq!(
        at_c["metadata"]["table-uuid"],
        at_a["metadata"]["table-uuid"]
    );
    assert_eq!(at_c["metadata"]["current-snapshot-id"], last);
    assert_eq!(sorted_ids(&at_c), sorted_ids(&at_a));
    for source in [&a, &b] {
        let root = source.warehouse.display().to_string();
        let leaks = files_mentioning(&c.warehouse, &root);
        assert!(leaks.is_empty(), "c's files name {root}: {leaks:?}");
    }
    // C names the origin, not the intermediate region, as the place to write.
    let (status, refused) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/tables/t", c.base),
        Some(json!({ "requirements": [], "updates": [] })),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("region `a`"), "{message}");

    // The namespace's properties follow the same chain, and c names the origin for them too.
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/properties", a.base),
        Some(json!({ "updates": { "steward": "team-a" }, "removals": [] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut at_c = Value::Null;
    for _ in 0..600 {
        at_c = get(format!("{}/v1/wh/namespaces/db", c.base)).await;
        if at_c["properties"]["steward"] == "team-a" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(at_c["properties"]["steward"], "team-a", "{at_c}");
    let (status, refused) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/properties", c.base),
        Some(json!({ "updates": { "steward": "team-c" }, "removals": [] })),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("region `a`"), "{message}");

    // So does a view, and c names the origin for it as well.
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/namespaces/db/views", a.base),
        Some(common::views::create_body("v", "SELECT 1")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let view_at_c = format!("{}/v1/wh/namespaces/db/views/v", c.base);
    let mut found = 0;
    for _ in 0..600 {
        found = call(reqwest::Method::GET, view_at_c.clone(), None).await.0;
        if found == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(found, 200, "the view never reached c");
    let (status, refused) = call(reqwest::Method::DELETE, view_at_c, None).await;
    assert_eq!(status, 403, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("region `a`"), "{message}");

    // A transaction over two tables reaches c as one group too: b applied it together and kept
    // it as a group in its own log, from which its stream to c sends it.
    create_table_named(&a, "u").await;
    wait_completed_for(&a, "u", 30).await;
    wait_completed_for(&b, "u", 30).await;
    let change = |name: &str| {
        json!({ "identifier": { "namespace": ["db"], "name": name }, "requirements": [],
                "updates": [{ "action": "set-properties", "updates": { "pair": "1" } }] })
    };
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/v1/wh/transactions/commit", a.base),
        Some(json!({ "table-changes": [change("t"), change("u")] })),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    wait_completed_for(&a, "u", 30).await;
    wait_completed_for(&b, "u", 30).await;
    wait_completed_for(&b, "t", 30).await;
    let at_c = get(format!("{}/management/v1/log?after=0&limit=1000", c.base)).await;
    let paired: Vec<&Value> = at_c["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "commit-table" && e["details"]["group-size"] == 2)
        .collect();
    assert_eq!(paired.len(), 2, "{at_c}");
    assert_eq!(paired[0]["txn-group"], paired[1]["txn-group"], "{at_c}");
    for table in ["t", "u"] {
        let loaded = get(format!("{}/v1/wh/namespaces/db/tables/{table}", c.base)).await;
        assert_eq!(loaded["metadata"]["properties"]["pair"], "1", "{loaded}");
    }

    let log = get(format!("{}/management/v1/log?after=0&limit=1000", a.base)).await;
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["origin-region"] == "a")
    );
}
