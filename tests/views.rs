//! Views through the Iceberg REST API against real PostgreSQL, real files and real HTTP: every
//! endpoint, the log entries they append, and bad input refused with nothing changed.

mod common;

use common::TestFloe;
use common::views::{create_body, current_sql, replace_body};
use serde_json::{Value, json};

fn view_entries(log: &[Value]) -> Vec<(String, String, i64)> {
    log.iter()
        .filter(|e| e["kind"].as_str().unwrap().ends_with("-view"))
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["table-name"].as_str().unwrap().to_string(),
                e["table-version"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_view_is_created_replaced_renamed_and_dropped_with_one_entry_each() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    floe.create_namespace(&["other"]).await;
    let views = "/v1/wh/namespaces/ns/views";

    let created = floe
        .post(views, create_body("v", "SELECT id FROM t"))
        .await
        .expect(200);
    let uuid = created["metadata"]["view-uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let first_location = created["metadata-location"].as_str().unwrap().to_string();
    assert!(
        first_location.starts_with(&floe.warehouse_root()) && first_location.contains("/00000-"),
        "{first_location}"
    );
    assert_eq!(created["metadata"]["properties"]["comment"], "first");
    assert!(created["config"].is_object());
    assert_eq!(floe.head("/v1/wh/namespaces/ns/views/v").await, 204);
    assert_eq!(floe.head("/v1/wh/namespaces/ns/views/nope").await, 404);
    let listed = floe.get(views).await.expect(200);
    assert_eq!(
        listed["identifiers"],
        json!([{ "namespace": ["ns"], "name": "v" }])
    );
    // A view is not a table.
    assert_eq!(
        floe.get("/v1/wh/namespaces/ns/tables").await.expect(200)["identifiers"],
        json!([])
    );
    floe.get("/v1/wh/namespaces/ns/tables/v").await.expect(404);

    let replaced = floe
        .post(
            "/v1/wh/namespaces/ns/views/v",
            replace_body(&uuid, 2, "SELECT id, data FROM t"),
        )
        .await
        .expect(200);
    assert_eq!(current_sql(&replaced), "SELECT id, data FROM t");
    assert!(
        replaced["metadata-location"]
            .as_str()
            .unwrap()
            .contains("/00001-")
    );
    let loaded = floe.get("/v1/wh/namespaces/ns/views/v").await.expect(200);
    assert_eq!(loaded["metadata-location"], replaced["metadata-location"]);
    assert_eq!(current_sql(&loaded), "SELECT id, data FROM t");
    assert_eq!(
        loaded["metadata"]["version-log"].as_array().unwrap().len(),
        2,
        "{loaded}"
    );

    floe.post(
        "/v1/wh/views/rename",
        json!({
            "source": { "namespace": ["ns"], "name": "v" },
            "destination": { "namespace": ["other"], "name": "w" }
        }),
    )
    .await
    .expect(204);
    floe.get("/v1/wh/namespaces/ns/views/v").await.expect(404);
    let moved = floe
        .get("/v1/wh/namespaces/other/views/w")
        .await
        .expect(200);
    assert_eq!(moved["metadata-location"], replaced["metadata-location"]);

    floe.delete("/v1/wh/namespaces/other/views/w")
        .await
        .expect(204);
    assert_eq!(
        floe.get("/v1/wh/namespaces/other/views/w")
            .await
            .expect(404)["error"]["type"],
        "NoSuchViewException"
    );
    // Its namespace is empty again, so it can go.
    floe.delete("/v1/wh/namespaces/other").await.expect(204);

    // Registered again from its first metadata file.
    let registered = floe
        .post(
            "/v1/wh/namespaces/ns/register-view",
            json!({ "name": "again", "metadata-location": first_location }),
        )
        .await
        .expect(200);
    assert_eq!(registered["metadata"]["view-uuid"], uuid.as_str());
    assert_eq!(current_sql(&registered), "SELECT id FROM t");

    let log = floe.log().await;
    assert_eq!(
        view_entries(&log),
        vec![
            ("create-view".to_string(), "v".to_string(), 1),
            ("replace-view".to_string(), "v".to_string(), 2),
            ("rename-view".to_string(), "v".to_string(), 3),
            ("drop-view".to_string(), "w".to_string(), 4),
            ("register-view".to_string(), "again".to_string(), 1),
        ]
    );
    let replace = log.iter().find(|e| e["kind"] == "replace-view").unwrap();
    assert_eq!(replace["requirements"][0]["type"], "assert-view-uuid");
    assert!(
        replace["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "add-view-version"),
        "{replace}"
    );
    assert_eq!(
        replace["previous-metadata-location"],
        first_location.as_str()
    );
    let create = log.iter().find(|e| e["kind"] == "create-view").unwrap();
    assert_eq!(create["metadata"]["view-uuid"], uuid.as_str());
}

#[tokio::test]
async fn bad_view_requests_get_error_models_and_change_nothing() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    floe.create_table("ns", "t").await;
    let views = "/v1/wh/namespaces/ns/views";
    let created = floe
        .post(views, create_body("v", "SELECT 1"))
        .await
        .expect(200);
    let uuid = created["metadata"]["view-uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let entries_before = floe.log().await.len();
    let files_before = floe.warehouse_files();

    // Names: a view's name taken by a view or a table, a table's by a view.
    let taken = floe
        .post(views, create_body("v", "SELECT 2"))
        .await
        .expect(409);
    assert_eq!(taken["error"]["type"], "AlreadyExistsException");
    let by_table = floe
        .post(views, create_body("t", "SELECT 2"))
        .await
        .expect(409);
    assert!(
        by_table["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Table with same name"),
        "{by_table}"
    );
    let table_by_view = floe.create_table_reply("ns", "v").await.expect(409);
    assert!(
        table_by_view["error"]["message"]
            .as_str()
            .unwrap()
            .contains("View with same name"),
        "{table_by_view}"
    );
    floe.post(
        "/v1/wh/tables/rename",
        json!({
            "source": { "namespace": ["ns"], "name": "t" },
            "destination": { "namespace": ["ns"], "name": "v" }
        }),
    )
    .await
    .expect(409);
    floe.post(
        "/v1/wh/views/rename",
        json!({
            "source": { "namespace": ["ns"], "name": "v" },
            "destination": { "namespace": ["ns"], "name": "t" }
        }),
    )
    .await
    .expect(409);

    // Missing things.
    floe.post(
        "/v1/wh/namespaces/missing/views",
        create_body("x", "SELECT 1"),
    )
    .await
    .expect(404);
    floe.post(
        "/v1/wh/namespaces/ns/views/missing",
        replace_body(&uuid, 2, "SELECT 2"),
    )
    .await
    .expect(404);
    floe.delete("/v1/wh/namespaces/ns/views/missing")
        .await
        .expect(404);
    // A table is not a view.
    floe.delete("/v1/wh/namespaces/ns/views/t")
        .await
        .expect(404);

    // A stale UUID requirement, a version that does not exist, a location outside the root,
    // a body that is not a view request, a file that is not view metadata.
    let stale = floe
        .post(
            "/v1/wh/namespaces/ns/views/v",
            replace_body("00000000-0000-0000-0000-000000000001", 2, "SELECT 2"),
        )
        .await
        .expect(409);
    assert_eq!(stale["error"]["type"], "CommitFailedException");
    floe.post(
        "/v1/wh/namespaces/ns/views/v",
        json!({ "updates": [{ "action": "set-current-view-version", "view-version-id": 42 }] }),
    )
    .await
    .expect(400);
    floe.post(
        "/v1/wh/namespaces/ns/views/v",
        json!({ "updates": [{ "action": "set-location", "location": "file:///elsewhere/v" }] }),
    )
    .await
    .expect(400);
    let mut outside = create_body("x", "SELECT 1");
    outside["location"] = json!("file:///elsewhere/x");
    floe.post(views, outside).await.expect(400);
    floe.post(views, json!({ "name": "x" })).await.expect(400);
    let table_metadata = floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200);
    floe.post(
        "/v1/wh/namespaces/ns/register-view",
        json!({ "name": "x", "metadata-location": table_metadata["metadata-location"] }),
    )
    .await
    .expect(400);

    assert_eq!(floe.log().await.len(), entries_before, "nothing was logged");
    assert_eq!(floe.warehouse_files(), files_before, "no file was left");
    let loaded = floe.get("/v1/wh/namespaces/ns/views/v").await.expect(200);
    assert_eq!(loaded["metadata-location"], created["metadata-location"]);
    // The namespace holds a view, so it cannot be dropped.
    floe.delete("/v1/wh/namespaces/ns/tables/t")
        .await
        .expect(204);
    floe.delete("/v1/wh/namespaces/ns").await.expect(409);
}
