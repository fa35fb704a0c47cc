//! A warehouse on S3 (s3s-fs, which checks SigV4 signatures): the catalog writes and reads its
//! metadata there, loadTable's `config` tells clients how to reach the files (with the keys only
//! when vending is on and the client asks, and from loadCredentials), and wrong keys give a
//! clear error and leave nothing.

mod common;

use common::TestFloe;
use common::s3::{BUCKET, S3Server, SECRET_KEY, objects, s3_settings, start_s3};
use serde_json::{Value, json};

async fn floe_on_s3(server: &S3Server, secret: &str, vend: bool) -> TestFloe {
    let url = common::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, dir.path());
    settings.warehouses[0].root = format!("s3://{BUCKET}/wh");
    settings.warehouses[0].s3 = Some(s3_settings(server, secret));
    settings.warehouses[0].vend_credentials = vend;
    TestFloe::start_with(settings, dir).await
}

async fn load(floe: &TestFloe, delegation: Option<&str>) -> Value {
    let mut request = floe.http.get(floe.url("/v1/wh/namespaces/db/tables/t"));
    if let Some(mode) = delegation {
        request = request.header("X-Iceberg-Access-Delegation", mode);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn tables_live_in_s3_and_clients_get_the_config_to_read_them() {
    let Some(server) = start_s3().await else {
        return;
    };
    let floe = floe_on_s3(&server, SECRET_KEY, true).await;
    floe.create_namespace(&["db"]).await;
    let created = floe.create_table("db", "t").await;
    assert!(
        created["metadata-location"]
            .as_str()
            .unwrap()
            .starts_with(&format!("s3://{BUCKET}/wh/db/t-")),
        "{created}"
    );
    floe.commit(
        "db",
        "t",
        json!({ "requirements": [], "updates": [
            { "action": "set-properties", "updates": { "owner": "ops" } }] }),
    )
    .await
    .expect(200);
    // Both metadata files are objects in the bucket.
    let metadata_files = objects(&server)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .count();
    assert_eq!(metadata_files, 2);

    let plain = load(&floe, None).await;
    assert_eq!(plain["metadata"]["properties"]["owner"], "ops");
    let config = &plain["config"];
    assert_eq!(config["s3.endpoint"], server.endpoint.as_str());
    assert_eq!(config["s3.path-style-access"], "true");
    assert_eq!(config["s3.region"], "us-east-1");
    assert!(config.get("s3.secret-access-key").is_none(), "{config}");
    let vended = load(&floe, Some("vended-credentials")).await;
    assert_eq!(vended["config"]["s3.access-key-id"], common::s3::ACCESS_KEY);
    assert_eq!(vended["config"]["s3.secret-access-key"], SECRET_KEY);
    // loadCredentials: the same keys and settings, for the warehouse root they cover.
    let credentials = floe.get(CREDENTIALS).await.expect(200);
    let credentials = credentials["storage-credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0]["prefix"], format!("s3://{BUCKET}/wh"));
    assert_eq!(credentials[0]["config"], vended["config"]);
    // A keyed create that asked for vended keys: its answer (keys included) is not kept in the
    // database; the retry gets the table with keys vended afresh, and nothing is made twice.
    let key = uuid::Uuid::now_v7().to_string();
    let keyed_create = async || {
        let answer = floe
            .http
            .post(floe.url("/v1/wh/namespaces/db/tables"))
            .header("Idempotency-Key", &key)
            .header("X-Iceberg-Access-Delegation", "vended-credentials")
            .json(&json!({"name": "keyed", "schema": common::simple_schema()}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json::<Value>().await.unwrap()
    };
    let made = keyed_create().await;
    let again = keyed_create().await;
    assert_eq!(again["metadata-location"], made["metadata-location"]);
    assert_eq!(again["config"]["s3.secret-access-key"], SECRET_KEY);
    let pool = sqlx::PgPool::connect(floe.database_url()).await.unwrap();
    let kept: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT body FROM idempotency_answer")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kept, [None], "the answer's body, keys and all, is not kept");
    pool.close().await;
    let creates = floe
        .log()
        .await
        .into_iter()
        .filter(|e| e["table-name"] == "keyed")
        .count();
    assert_eq!(creates, 1);
    let missing = floe
        .get("/v1/wh/namespaces/db/tables/nope/credentials")
        .await;
    assert_eq!(missing.error_type(), "NoSuchTableException");
    missing.expect(404);
    floe.server.stop().await;

    // Without vending, no keys even when asked.
    let floe = floe_on_s3(&server, SECRET_KEY, false).await;
    floe.create_namespace(&["db"]).await;
    floe.create_table("db", "t").await;
    let asked = load(&floe, Some("vended-credentials")).await;
    assert!(asked["config"].get("s3.secret-access-key").is_none());
    let none = floe.get(CREDENTIALS).await.expect(200);
    assert_eq!(none["storage-credentials"], json!([]));
    floe.server.stop().await;
}

const CREDENTIALS: &str = "/v1/wh/namespaces/db/tables/t/credentials";

#[tokio::test]
async fn wrong_keys_give_a_clear_error_and_write_nothing() {
    let Some(server) = start_s3().await else {
        return;
    };
    let floe = floe_on_s3(&server, "definitely-not-the-secret", false).await;
    floe.create_namespace(&["db"]).await;
    let reply = floe.create_table_reply("db", "t").await;
    let message = reply.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    reply.expect(503);
    assert!(message.contains("refused access"), "{message}");
    assert!(message.contains("warehouse `wh`"), "{message}");
    assert!(
        message.contains(&format!("s3://{BUCKET}/wh/db/t-")),
        "{message}"
    );
    floe.get("/v1/wh/namespaces/db/tables/t").await.expect(404);
    assert!(objects(&server).is_empty());
    floe.server.stop().await;
}

#[tokio::test]
async fn large_objects_are_copied_on_the_server_in_parts() {
    let Some(server) = start_s3().await else {
        return;
    };
    use floe::storage::Location;
    use floe::storage::Storage;
    let storage = floe::storage::S3Storage::new(
        &s3_settings(&server, SECRET_KEY),
        Location::parse(&format!("s3://{BUCKET}")).unwrap(),
    )
    .await;
    let size = 12 * 1024 * 1024;
    let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let source = Location::parse(&format!("s3://{BUCKET}/big/source.bin")).unwrap();
    let target = Location::parse(&format!("s3://{BUCKET}/big/copy.bin")).unwrap();
    let mut reader = std::io::Cursor::new(bytes.clone());
    // 12 MiB goes up in two 8 MiB-or-less parts.
    let written = storage
        .write_stream(&source, &mut reader, true)
        .await
        .unwrap();
    assert_eq!(written, size as u64);
    // Copied by S3 in 5 MiB ranges (UploadPartCopy): 5 + 5 + 2.
    storage
        .copy_object(&source, &target, size as u64, 5 * 1024 * 1024)
        .await
        .unwrap();
    assert_eq!(storage.size(&target).await.unwrap(), Some(size as u64));
    assert!(storage.read(&target, size as u64).await.unwrap() == bytes);
    // A missing source is reported as such, and nothing is left at the target.
    let missing = storage
        .copy_object(
            &Location::parse(&format!("s3://{BUCKET}/big/none.bin")).unwrap(),
            &Location::parse(&format!("s3://{BUCKET}/big/none-copy.bin")).unwrap(),
            size as u64,
            5 * 1024 * 1024,
        )
        .await;
    assert!(missing.is_err());
    assert_eq!(
        storage
            .size(&Location::parse(&format!("s3://{BUCKET}/big/none-copy.bin")).unwrap())
            .await
            .unwrap(),
        None
    );
}
