//! Nothing a caller sends reaches outside its warehouse: every way of naming a path outside the
//! root (climbing with `..`, its encoded and backslash forms, another directory or bucket, a
//! symbolic link planted inside the warehouse) is refused through the REST API with a 400
//! ErrorModel naming the path and the root, on a local warehouse and on S3 (s3s-fs), and the file
//! placed outside is still there, unchanged, after every attempt and after a purge.

mod common;

use std::time::Duration;

use common::lake::{Lake, loc, local_lake, s3_lake};
use common::{TestFloe, simple_schema};
use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

const VICTIM: &[u8] = b"a file that is nobody's table";

/// A file outside the warehouse, named through the root in several ways.
struct Outside {
    /// Where it really is.
    location: String,
    /// The same file written as `<root>/../...`.
    climbing: String,
    /// `<root>/%2e%2e/...` and `<root>/..%5c...`: forms some layer might decode into `..`.
    disguised: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

async fn place_outside(lake: &Lake) -> Outside {
    if lake.root.starts_with("s3://") {
        // Same bucket, beside the warehouse's prefix.
        let location = lake.root.replace("/wh", "/outside/victim.json");
        write_s3(lake, &location, VICTIM).await;
        return Outside {
            location,
            climbing: format!("{}/db/../../outside/victim.json", lake.root),
            disguised: vec![
                format!("{}/%2e%2e/outside/victim.json", lake.root),
                format!("{}/..%5coutside/victim.json", lake.root),
            ],
            _dir: None,
        };
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("victim.json"), VICTIM).unwrap();
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // The warehouse root is another directory of the same parent (the system's temp dir).
    Outside {
        location: format!("file://{}/victim.json", dir.path().display()),
        climbing: format!("{}/db/../../{name}/victim.json", lake.root),
        disguised: vec![
            format!("{}/%2e%2e/{name}/victim.json", lake.root),
            format!("{}/%252e%252e/{name}/victim.json", lake.root),
            format!("{}/..\\{name}\\victim.json", lake.root),
        ],
        _dir: Some(dir),
    }
}

/// An object written beside the warehouse with the test's own S3 client (floe's storage for the
/// warehouse would refuse the location, which is the point).
async fn write_s3(lake: &Lake, location: &str, bytes: &[u8]) {
    let (bucket, _) = loc(location)
        .s3_bucket_and_key()
        .map(|(b, k)| (b.to_string(), k))
        .unwrap();
    let storage = floe::storage::S3Storage::new(
        lake.floe.settings.warehouses[0].s3.as_ref().unwrap(),
        loc(&format!("s3://{bucket}")),
    )
    .await;
    use floe::storage::Storage;
    let mut reader = std::io::Cursor::new(bytes.to_vec());
    storage
        .write_stream(&loc(location), &mut reader, true)
        .await
        .unwrap();
}

async fn read_outside(lake: &Lake, outside: &Outside) -> Option<Vec<u8>> {
    if outside.location.starts_with("s3://") {
        let bucket = loc(&outside.location)
            .s3_bucket_and_key()
            .unwrap()
            .0
            .to_string();
        let storage = floe::storage::S3Storage::new(
            lake.floe.settings.warehouses[0].s3.as_ref().unwrap(),
            loc(&format!("s3://{bucket}")),
        )
        .await;
        use floe::storage::Storage;
        return storage.read(&loc(&outside.location), 1 << 20).await.ok();
    }
    std::fs::read(loc(&outside.location).local_path().unwrap()).ok()
}

/// Asserts a 400 ErrorModel that names `path` (or the part of it that is refused) and changes
/// nothing: no log entry, the outside file as it was.
async fn refused(
    lake: &Lake,
    outside: &Outside,
    reply: common::Reply,
    path: &str,
    log_before: usize,
) {
    let body = reply.expect(400);
    assert_eq!(body["error"]["type"], "BadRequestException", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    let named = message.contains(path)
        || path
            .split('/')
            .filter(|s| s.contains("..") || s.contains('%'))
            .any(|s| message.contains(s));
    assert!(named, "the refusal does not name {path}: {message}");
    assert_eq!(
        lake.floe.log().await.len(),
        log_before,
        "a refused request was logged"
    );
    assert_eq!(
        read_outside(lake, outside).await.as_deref(),
        Some(VICTIM),
        "the outside file changed"
    );
}

fn set_statistics(path: &str) -> Value {
    json!({ "requirements": [], "updates": [{ "action": "set-statistics", "snapshot-id": 1,
        "statistics": { "snapshot-id": 1, "statistics-path": path, "file-size-in-bytes": 10,
                        "file-footer-size-in-bytes": 4, "blob-metadata": [] } }] })
}

fn metadata_with(location: &str, extra: Value) -> Value {
    let mut metadata = json!({
        "format-version": 2, "table-uuid": uuid::Uuid::new_v4().to_string(), "location": location,
        "last-sequence-number": 0, "last-updated-ms": 1_700_000_000_000i64, "last-column-id": 2,
        "current-schema-id": 0, "schemas": [simple_schema()], "default-spec-id": 0,
        "partition-specs": [{ "spec-id": 0, "fields": [] }], "last-partition-id": 999,
        "default-sort-order-id": 0, "sort-orders": [{ "order-id": 0, "fields": [] }],
        "properties": {}, "snapshots": [], "snapshot-log": [], "metadata-log": [], "refs": {}
    });
    for (key, value) in extra.as_object().unwrap() {
        metadata[key] = value.clone();
    }
    metadata
}

async fn every_path_a_client_names_stays_in_the_warehouse(lake: Lake) {
    let outside = place_outside(&lake).await;
    lake.floe.create_namespace(&["db"]).await;
    let table = lake.create("t", json!({})).await;
    let location = table["metadata"]["location"].as_str().unwrap().to_string();
    let before = lake.floe.log().await.len();

    let mut paths = vec![outside.location.clone(), outside.climbing.clone()];
    paths.extend(outside.disguised.iter().cloned());
    for path in &paths {
        // A commit's statistics, manifest list, location and write paths.
        let reply = lake.floe.commit("db", "t", set_statistics(path)).await;
        refused(&lake, &outside, reply, path, before).await;
        let snapshot = json!({ "requirements": [], "updates": [{ "action": "add-snapshot", "snapshot": {
            "snapshot-id": 7, "sequence-number": 1, "timestamp-ms": chrono::Utc::now().timestamp_millis(),
            "manifest-list": path, "summary": { "operation": "append" }, "schema-id": 0 } }] });
        let reply = lake.floe.commit("db", "t", snapshot).await;
        refused(&lake, &outside, reply, path, before).await;
        let reply = lake
            .floe
            .commit(
                "db",
                "t",
                json!({ "requirements": [], "updates": [
            { "action": "set-location", "location": path }] }),
            )
            .await;
        refused(&lake, &outside, reply, path, before).await;
        for property in [
            "write.data.path",
            "write.metadata.path",
            "write.object-storage.path",
        ] {
            let reply = lake
                .floe
                .commit(
                    "db",
                    "t",
                    json!({ "requirements": [], "updates": [
                { "action": "set-properties", "updates": { property: path } }] }),
                )
                .await;
            refused(&lake, &outside, reply, path, before).await;
        }
        // A create's location and properties, staged or not.
        for stage in [false, true] {
            let reply = lake
                .floe
                .post(
                    "/v1/wh/namespaces/db/tables",
                    json!({ "name": "escape",
                "schema": simple_schema(), "location": path, "stage-create": stage }),
                )
                .await;
            refused(&lake, &outside, reply, path, before).await;
            let reply = lake
                .floe
                .post(
                    "/v1/wh/namespaces/db/tables",
                    json!({ "name": "escape",
                "schema": simple_schema(), "stage-create": stage,
                "properties": { "write.data.path": path } }),
                )
                .await;
            refused(&lake, &outside, reply, path, before).await;
        }
        // A register's metadata file.
        let reply = lake
            .floe
            .post(
                "/v1/wh/namespaces/db/register",
                json!({ "name": "escape", "metadata-location": path }),
            )
            .await;
        refused(&lake, &outside, reply, path, before).await;
    }

    // A registered metadata file inside the warehouse whose own paths point outside.
    let log_entry = json!([{ "timestamp-ms": 1, "metadata-file": outside.location }]);
    let write_path = json!({ "write.data.path": outside.climbing });
    for (i, (metadata, named)) in [
        (
            metadata_with(&outside.climbing, json!({})),
            &outside.climbing,
        ),
        (
            metadata_with(&location, json!({ "metadata-log": log_entry })),
            &outside.location,
        ),
        (
            metadata_with(&location, json!({ "properties": write_path })),
            &outside.climbing,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let file = format!("{location}/metadata/crafted-{i}.metadata.json");
        lake.put(&file, metadata.to_string().as_bytes()).await;
        let reply = lake
            .floe
            .post(
                "/v1/wh/namespaces/db/register",
                json!({ "name": format!("crafted{i}"), "metadata-location": file }),
            )
            .await;
        refused(&lake, &outside, reply, named, before).await;
    }

    // A metadata file too large to read is refused without being read whole.
    let big = format!("{location}/metadata/huge.metadata.json");
    let mut bytes = vec![b' '; 3 * 1024 * 1024];
    bytes[0] = b'{';
    lake.put(&big, &bytes).await;
    let reply = lake
        .floe
        .post(
            "/v1/wh/namespaces/db/register",
            json!({ "name": "huge", "metadata-location": big }),
        )
        .await;
    let body = reply.expect(400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{body}"
    );

    // The table the refused commits named purges without touching the outside file.
    lake.purge("t").await;
    assert_eq!(read_outside(&lake, &outside).await.as_deref(), Some(VICTIM));
}

/// The lake's floe reads metadata files of at most 2 MiB, so the size bound is tested cheaply.
async fn with_small_metadata_bound(lake: Lake) -> Lake {
    lake.reconfigured(|settings| settings.max_metadata_bytes = 2 * 1024 * 1024)
        .await
}

#[tokio::test]
async fn local_paths_outside_the_warehouse_are_refused() {
    let lake = with_small_metadata_bound(local_lake().await).await;
    every_path_a_client_names_stays_in_the_warehouse(lake).await;
}

#[tokio::test]
async fn s3_paths_outside_the_warehouse_are_refused() {
    if let Some(lake) = s3_lake().await {
        let lake = with_small_metadata_bound(lake).await;
        every_path_a_client_names_stays_in_the_warehouse(lake).await;
    }
}

/// A registration of a device outside the warehouse (`/dev/zero`, endless) is refused at once.
#[tokio::test]
async fn register_of_an_endless_file_is_refused_at_once() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["db"]).await;
    let root = floe.warehouse_root();
    let link = floe.warehouse_dir.path().join("db-zero.metadata.json");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    for path in [
        format!("{root}/../../../../../../dev/zero"),
        "file:///dev/zero".to_string(),
        format!("file://{}", link.display()),
    ] {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            floe.post(
                "/v1/wh/namespaces/db/register",
                json!({ "name": "zero", "metadata-location": path }),
            ),
        )
        .await
        .expect("the register did not answer within 5 s");
        let body = reply.expect(400);
        assert_eq!(body["error"]["type"], "BadRequestException");
    }
    assert!(floe.log().await.len() == 1, "only the namespace was logged");
}

/// A symbolic link inside a local warehouse that points outside it is not followed by any
/// operation: reads (register), writes (create, commit), copies (replication) and deletes (purge).
#[tokio::test]
async fn symlinks_out_of_the_warehouse_are_not_followed() {
    let source = TestFloe::start_region("src", &[]).await;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.metadata.json");
    source.create_namespace(&["db"]).await;
    let root = source.warehouse_root();
    let valid = source.create_table("db", "model").await;
    let model = std::fs::read(
        loc(valid["metadata-location"].as_str().unwrap())
            .local_path()
            .unwrap(),
    )
    .unwrap();
    std::fs::write(&victim, &model).unwrap();
    let link = source.warehouse_dir.path().join("db").join("link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let log_before = source.log().await.len();
    let outside_files = || {
        let mut names: Vec<String> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let untouched = outside_files();

    // Read: register a metadata file behind the link.
    let reply = source.post("/v1/wh/namespaces/db/register",
        json!({ "name": "stolen", "metadata-location": format!("{root}/db/link/victim.metadata.json") })).await;
    let body = reply.expect(400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{body}"
    );
    // Write: a table located behind the link.
    let reply = source.post("/v1/wh/namespaces/db/tables",
        json!({ "name": "behind", "schema": simple_schema(), "location": format!("{root}/db/link/behind") })).await;
    let body = reply.expect(400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{body}"
    );
    assert_eq!(outside_files(), untouched);
    assert_eq!(source.log().await.len(), log_before);

    // A table whose metadata directory becomes a link: its next commit writes nothing there.
    let t = source.create_table("db", "t").await;
    let t_dir = loc(t["metadata"]["location"].as_str().unwrap())
        .local_path()
        .unwrap();
    std::fs::rename(
        t_dir.join("metadata"),
        outside.path().join("moved-metadata"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("moved-metadata"),
        t_dir.join("metadata"),
    )
    .unwrap();
    let moved = std::fs::read_dir(outside.path().join("moved-metadata"))
        .unwrap()
        .count();
    let reply = source
        .commit(
            "db",
            "t",
            json!({ "requirements": [], "updates": [
        { "action": "set-properties", "updates": { "k": "v" } }] }),
        )
        .await;
    assert!(
        reply.status.is_client_error() || reply.status.is_server_error(),
        "{}",
        reply.body
    );
    assert_eq!(
        std::fs::read_dir(outside.path().join("moved-metadata"))
            .unwrap()
            .count(),
        moved
    );

    // Copies and deletes: a table whose data directory is a link out of the warehouse. A client
    // (beside floe, not through it) writes its data files there; floe's copy and purge must not
    // follow the link.
    let d = source.create_table("db", "d").await;
    let d_dir = loc(d["metadata"]["location"].as_str().unwrap())
        .local_path()
        .unwrap();
    let data_outside = outside.path().join("data");
    std::fs::create_dir_all(&data_outside).unwrap();
    // Relative, so the client's own storage (rooted at `/`) follows it, while floe's (rooted at
    // the warehouse) sees it climb out.
    let up = "../".repeat(d_dir.components().count() - 1);
    let relative = format!("{up}{}", data_outside.strip_prefix("/").unwrap().display());
    std::os::unix::fs::symlink(relative, d_dir.join("data")).unwrap();
    let loaded = source
        .get("/v1/wh/namespaces/db/tables/d")
        .await
        .expect(200);
    let mut writer = SnapshotWriter::default();
    let next = common::prepare_append(&loaded, &mut writer, &common::host_files(), 2, 1024).await;
    source.commit("db", "d", next.body).await.expect(200);
    let data_files = std::fs::read_dir(&data_outside).unwrap().count();
    assert_eq!(data_files, 2, "the client's data files are behind the link");

    let replica = TestFloe::start_region("dst", &[("src", "a-token-for-src-0123456789")]).await;
    source
        .put(
            "/management/v1/peers/dst",
            json!({ "region": "dst", "base-url": replica.server.base_url(),
        "credential": "a-token-for-src-0123456789",
        "warehouses": [{ "warehouse": "wh", "storage-root": replica.warehouse_root() }] }),
        )
        .await
        .expect(200);
    source
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "namespace": ["db"], "table": "d",
        "destinations": [{ "peer": "dst", "warehouse": "wh" }] }),
        )
        .await
        .expect(201);
    let mut status = Value::Null;
    for _ in 0..200 {
        status = source
            .get("/management/v1/tables/wh/db/d/replication")
            .await
            .expect(200);
        if status["destinations"][0]["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["destinations"][0]["state"], "failed", "{status}");
    let failure = status["destinations"][0]["failure"].as_str().unwrap();
    assert!(failure.contains("symbolic link"), "{failure}");
    let copied: Vec<_> = common::files_under(replica.warehouse_dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(
        copied.is_empty(),
        "data behind the link was copied: {copied:?}"
    );

    source
        .delete("/v1/wh/namespaces/db/tables/d?purgeRequested=true")
        .await
        .expect(204);
    source.wait_for_purges().await;
    assert_eq!(
        std::fs::read_dir(&data_outside).unwrap().count(),
        data_files,
        "purge followed the link"
    );
    assert!(victim.exists());
    for floe in [source, replica] {
        floe.server.stop().await;
    }
}

/// The peer endpoint holds a peer to the same rule as a client: every path it sends lies in the
/// destination warehouse, or the change is refused and nothing is written.
#[tokio::test]
async fn a_peer_cannot_name_paths_outside_the_destination_warehouse() {
    const PEER_TOKEN: &str = "peer-token-0123456789abc";
    let replica = TestFloe::start_region("dst", &[("src", PEER_TOKEN)]).await;
    let root = replica.warehouse_root();
    let apply = async |to: i64, from: Value, action: Value| {
        let body = json!({ "source-region": "src", "origin-region": "src",
            "source-table-id": "0191c1f4-0000-7000-8000-00000000000a", "warehouse": "wh",
            "namespace": ["db"], "name": "t", "generation": 1, "lease-token": 1, "from": from,
            "to": { "version": to, "step": 0 }, "action": action });
        let response = replica
            .http
            .post(replica.url("/internal/v1/replication/apply"))
            .bearer_auth(PEER_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let outside = format!("{root}/../elsewhere/t");
    let (status, body) = apply(
        1,
        Value::Null,
        json!({ "type": "create", "metadata": metadata_with(&outside, json!({})) }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("elsewhere"),
        "{body}"
    );
    assert!(
        !replica
            .warehouse_dir
            .path()
            .parent()
            .unwrap()
            .join("elsewhere")
            .exists()
    );

    let inside = format!("{root}/db/t-0191c1f4");
    let (status, body) = apply(
        1,
        Value::Null,
        json!({ "type": "create", "metadata": metadata_with(&inside, json!({})) }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = apply(
        2,
        json!({ "version": 1, "step": 0 }),
        json!({ "type": "update", "updates": [
        { "action": "add-snapshot", "snapshot": { "snapshot-id": 5, "sequence-number": 1,
          "timestamp-ms": 1_700_000_000_001i64, "manifest-list": "file:///etc/snap-5.avro",
          "summary": { "operation": "append" }, "schema-id": 0 } }] }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/etc/snap-5.avro"),
        "{body}"
    );
    replica.server.stop().await;
}
