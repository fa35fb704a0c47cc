//! Idempotency-Key (Iceberg REST spec 1.11): a retry with the key of an answered request gets the
//! same answer and changes nothing; the key is the principal's, for one request only.

mod common;

use common::TestFloe;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// The status and body text of `method path` with `Idempotency-Key: key`.
async fn keyed(
    floe: &TestFloe,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method, floe.url(path))
        .header("Idempotency-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Sets table property `name = value` on `db.t` with `Idempotency-Key: key`.
async fn set_keyed(floe: &TestFloe, key: &str, name: &str, value: &str) -> (u16, String) {
    let body = Some(set_property(name, value));
    keyed(floe, Method::POST, TABLE, key, body).await
}

fn set_property(key: &str, value: &str) -> Value {
    json!({"requirements": [], "updates": [{"action": "set-properties", "updates": {key: value}}]})
}

/// The log entries of table `db.t`.
async fn table_entries(floe: &TestFloe) -> Vec<Value> {
    floe.log()
        .await
        .into_iter()
        .filter(|e| e["table-name"] == "t")
        .collect()
}

async fn floe_with_table() -> TestFloe {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["db"]).await;
    floe.create_table("db", "t").await;
    floe
}

const TABLE: &str = "/v1/wh/namespaces/db/tables/t";

/// `/v1/config` advertises the lifetime; a commit sent twice with one key is answered twice
/// alike and logged once, its entry carrying the key; the same key with another body, or on
/// another endpoint, is refused and changes nothing; a key that is not a UUID is a 400.
#[tokio::test]
async fn a_retried_commit_is_answered_again_and_applied_once() {
    let floe = floe_with_table().await;
    let config = floe.get("/v1/config?warehouse=wh").await.expect(200);
    assert_eq!(config["idempotency-key-lifetime"], "PT30M");

    let key = Uuid::now_v7().to_string();
    let first = set_keyed(&floe, &key, "a", "1").await;
    assert_eq!(first.0, 200, "{}", first.1);
    let again = set_keyed(&floe, &key, "a", "1").await;
    assert_eq!(again, first, "the retry gets the first answer");
    let entries = table_entries(&floe).await;
    assert_eq!(entries.len(), 2, "the create and one commit: {entries:#?}");
    assert_eq!(entries[1]["details"]["idempotency-key"], key.as_str());

    let other_body = set_keyed(&floe, &key, "a", "2").await;
    assert_eq!(other_body.0, 422, "{}", other_body.1);
    let error: Value = serde_json::from_str(&other_body.1).unwrap();
    assert_eq!(error["error"]["type"], "UnprocessableEntityException");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("new key"),
        "{error}"
    );
    let other_endpoint = keyed(&floe, Method::DELETE, TABLE, &key, None).await;
    assert_eq!(other_endpoint.0, 422, "{}", other_endpoint.1);
    floe.get(TABLE).await.expect(200);
    let table = floe.get(TABLE).await.expect(200);
    assert_eq!(table["metadata"]["properties"]["a"], "1");
    assert_eq!(table_entries(&floe).await.len(), 2);

    let (status, body) = keyed(&floe, Method::POST, TABLE, "not-a-uuid", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Idempotency-Key"), "{body}");
    // A keyed body is read within the same limit as any other (1 MiB in tests).
    let large = set_property("big", &"x".repeat(2 * 1024 * 1024));
    let key = Uuid::now_v7().to_string();
    let (status, body) = keyed(&floe, Method::POST, TABLE, &key, Some(large)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"code\":413"), "{body}");
    floe.server.stop().await;
}

/// A terminal 4xx is final too: replayed to a retry even once the request would succeed.
#[tokio::test]
async fn a_refusal_is_replayed_as_it_was() {
    let floe = TestFloe::start().await;
    let key = Uuid::now_v7().to_string();
    let create = json!({"name": "t", "schema": common::simple_schema()});
    let path = "/v1/wh/namespaces/db/tables";
    let refused = keyed(&floe, Method::POST, path, &key, Some(create.clone())).await;
    assert_eq!(refused.0, 404, "{}", refused.1);
    floe.create_namespace(&["db"]).await;
    let again = keyed(&floe, Method::POST, path, &key, Some(create)).await;
    assert_eq!(again, refused);
    floe.get(TABLE).await.expect(404);
    floe.server.stop().await;
}

/// Two sends of one keyed commit at once (a client retrying while the first is still served):
/// one runs, the other waits for it and gets its answer; the commit is logged once.
#[tokio::test]
async fn concurrent_sends_of_one_key_apply_once() {
    let floe = floe_with_table().await;
    for round in 0..5 {
        let key = Uuid::now_v7().to_string();
        let value = round.to_string();
        let send = || set_keyed(&floe, &key, "n", &value);
        let (one, two) = tokio::join!(send(), send());
        assert_eq!(one.0, 200, "{}", one.1);
        assert_eq!(one, two);
    }
    assert_eq!(table_entries(&floe).await.len(), 1 + 5);
    floe.server.stop().await;
}

/// The answer lost after the change committed (floe died before keeping it; here the kept
/// answer is deleted): the log says the keyed request took effect, so the retry is answered
/// from the current state and nothing runs again, for a commit and for a create.
#[tokio::test]
async fn a_retry_after_a_lost_answer_is_answered_from_the_log() {
    let floe = floe_with_table().await;
    let pool = sqlx::PgPool::connect(floe.database_url()).await.unwrap();
    let forget_answers = async || {
        sqlx::query("DELETE FROM idempotency_answer")
            .execute(&pool)
            .await
            .unwrap();
    };
    let key = Uuid::now_v7().to_string();
    // An append-like commit: run twice, its requirement would fail the second time.
    let loaded = floe.get(TABLE).await.expect(200);
    let commit = json!({
        "requirements": [{"type": "assert-table-uuid", "uuid": loaded["metadata"]["table-uuid"]},
                         {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null}],
        "updates": [{"action": "set-properties", "updates": {"k": "v"}}]
    });
    let first = keyed(&floe, Method::POST, TABLE, &key, Some(commit.clone())).await;
    assert_eq!(first.0, 200, "{}", first.1);
    forget_answers().await;
    let retry = keyed(&floe, Method::POST, TABLE, &key, Some(commit)).await;
    assert_eq!(retry.0, 200, "{}", retry.1);
    let (first, retry): (Value, Value) = (
        serde_json::from_str(&first.1).unwrap(),
        serde_json::from_str(&retry.1).unwrap(),
    );
    assert_eq!(retry["metadata-location"], first["metadata-location"]);
    assert_eq!(retry["metadata"]["properties"]["k"], "v");
    assert_eq!(table_entries(&floe).await.len(), 2);

    let key = Uuid::now_v7().to_string();
    let create = json!({"name": "u", "schema": common::simple_schema()});
    let path = "/v1/wh/namespaces/db/tables";
    let made = keyed(&floe, Method::POST, path, &key, Some(create.clone())).await;
    assert_eq!(made.0, 200, "{}", made.1);
    forget_answers().await;
    let retry = keyed(&floe, Method::POST, path, &key, Some(create)).await;
    assert_eq!(retry.0, 200, "not AlreadyExists: {}", retry.1);
    let retry: Value = serde_json::from_str(&retry.1).unwrap();
    let made: Value = serde_json::from_str(&made.1).unwrap();
    assert_eq!(retry["metadata-location"], made["metadata-location"]);
    assert!(retry["config"].is_object(), "{retry}");
    let creates = floe
        .log()
        .await
        .into_iter()
        .filter(|e| e["table-name"] == "u")
        .count();
    assert_eq!(creates, 1);
    pool.close().await;
    floe.server.stop().await;
}

/// The management API honours keys too: a rule created twice with one key is one rule.
#[tokio::test]
async fn a_management_change_sent_twice_with_one_key_is_made_once() {
    let floe = TestFloe::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let peer = json!({
        "region": "replica",
        "base-url": "http://127.0.0.1:9",
        "credential": "a-peer-token-0123456789",
        "warehouses": [{ "warehouse": "wh",
                         "storage-root": format!("file://{}", elsewhere.path().display()) }]
    });
    floe.put("/management/v1/peers/replica", peer)
        .await
        .expect(200);
    let key = Uuid::now_v7().to_string();
    let rule = json!({"warehouse": "wh", "destinations": [{"peer": "replica", "warehouse": "wh"}]});
    let path = "/management/v1/replication-rules";
    let first = keyed(&floe, Method::POST, path, &key, Some(rule.clone())).await;
    assert_eq!(first.0, 201, "{}", first.1);
    let again = keyed(&floe, Method::POST, path, &key, Some(rule)).await;
    assert_eq!(again, first);
    let rules = floe.get(path).await.expect(200);
    let rules = rules
        .as_array()
        .or_else(|| rules["rules"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    floe.server.stop().await;
}
