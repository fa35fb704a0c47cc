//! The Iceberg REST catalog API against real PostgreSQL, real files and real HTTP.

mod common;

use common::{TestFloe, append_commit, simple_schema};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn config_names_the_prefix_and_lists_served_endpoints() {
    let floe = TestFloe::start().await;
    let config = floe.get("/v1/config?warehouse=wh").await.expect(200);
    assert_eq!(config["overrides"]["prefix"], "wh");
    assert_eq!(
        config["endpoints"].as_array().unwrap().len(),
        floe::http::iceberg::endpoints().len()
    );
    // The only warehouse is the default one.
    assert_eq!(
        floe.get("/v1/config").await.expect(200)["overrides"]["prefix"],
        "wh"
    );
    assert_eq!(
        floe.get("/v1/config?warehouse=nope").await.expect(404)["error"]["type"],
        "NoSuchWarehouseException"
    );
}

/// Every advertised endpoint is in the Iceberg REST spec and is routed (no 404 route miss, no 405).
#[tokio::test]
async fn advertised_endpoints_exist_in_the_spec_and_are_routed() {
    let spec = include_str!("fixtures/iceberg-rest-catalog-open-api.yaml");
    let mut spec_endpoints = Vec::new();
    let mut current_path = None;
    for line in spec.lines() {
        if let Some(path) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            current_path = Some(format!("/{path}"));
        } else if !line.starts_with("    ") && !line.trim().is_empty() && !line.starts_with("  /") {
            current_path = None;
        }
        if let Some(path) = &current_path {
            for verb in ["get", "post", "head", "delete", "put"] {
                if line == format!("    {verb}:") {
                    spec_endpoints.push(format!("{} {path}", verb.to_uppercase()));
                }
            }
        }
    }
    assert!(
        spec_endpoints.len() > 30,
        "spec parse found {}",
        spec_endpoints.len()
    );

    let floe = TestFloe::start().await;
    for (method, path) in floe::http::iceberg::endpoints() {
        let endpoint = format!("{method} {path}");
        assert!(
            spec_endpoints.contains(&endpoint),
            "{endpoint} is not in the spec"
        );
        let concrete = path
            .replace("{prefix}", "wh")
            .replace("{namespace}", "missing")
            .replace("{table}", "missing")
            .replace("{view}", "missing");
        let reply = floe
            .call(
                method.clone(),
                &concrete,
                (method == Method::POST).then(|| json!({})),
            )
            .await;
        assert_ne!(reply.status, 405, "{endpoint} not routed");
        assert_ne!(
            reply.error_type(),
            "NotFoundException",
            "{endpoint} not routed"
        );
    }
}

#[tokio::test]
async fn namespaces_create_list_page_load_update_and_drop() {
    let floe = TestFloe::start().await;
    floe.post(
        "/v1/wh/namespaces",
        json!({"namespace": ["a"], "properties": {"owner": "me"}}),
    )
    .await
    .expect(200);
    assert_eq!(
        floe.post("/v1/wh/namespaces", json!({"namespace": ["a"]}))
            .await
            .expect(409)["error"]["type"],
        "AlreadyExistsException"
    );
    // A child needs its parent.
    floe.post("/v1/wh/namespaces", json!({"namespace": ["x", "y"]}))
        .await
        .expect(404);
    for child in ["b", "c", "d"] {
        floe.create_namespace(&["a", child]).await;
    }
    floe.create_namespace(&["z"]).await;

    let top = floe.get("/v1/wh/namespaces").await.expect(200);
    assert_eq!(top["namespaces"], json!([["a"], ["z"]]));
    // Children of a, two per page.
    let page1 = floe
        .get("/v1/wh/namespaces?parent=a&pageSize=2")
        .await
        .expect(200);
    assert_eq!(page1["namespaces"], json!([["a", "b"], ["a", "c"]]));
    let token = page1["next-page-token"].as_str().unwrap();
    let page2 = floe
        .get(&format!(
            "/v1/wh/namespaces?parent=a&pageSize=2&pageToken={token}"
        ))
        .await
        .expect(200);
    assert_eq!(page2["namespaces"], json!([["a", "d"]]));
    assert!(page2.get("next-page-token").is_none());
    floe.get("/v1/wh/namespaces?pageToken=garbage!")
        .await
        .expect(400);

    // Multi-level names travel joined by 0x1F.
    let loaded = floe.get("/v1/wh/namespaces/a%1Fb").await.expect(200);
    assert_eq!(loaded["namespace"], json!(["a", "b"]));
    assert_eq!(floe.head("/v1/wh/namespaces/a%1Fb").await, 204);
    assert_eq!(floe.head("/v1/wh/namespaces/nope").await, 404);

    let update = floe
        .post(
            "/v1/wh/namespaces/a/properties",
            json!({"updates": {"team": "data"}, "removals": ["owner", "ghost"]}),
        )
        .await
        .expect(200);
    assert_eq!(update["updated"], json!(["team"]));
    assert_eq!(update["removed"], json!(["owner"]));
    assert_eq!(update["missing"], json!(["ghost"]));
    assert_eq!(
        floe.get("/v1/wh/namespaces/a").await.expect(200)["properties"],
        json!({"team": "data"})
    );
    floe.post(
        "/v1/wh/namespaces/a/properties",
        json!({"updates": {"k": "v"}, "removals": ["k"]}),
    )
    .await
    .expect(422);

    // A namespace with children cannot be dropped.
    assert_eq!(
        floe.delete("/v1/wh/namespaces/a").await.expect(409)["error"]["type"],
        "NamespaceNotEmptyException"
    );
    floe.create_table("z", "t").await;
    floe.delete("/v1/wh/namespaces/z").await.expect(409);
    floe.delete("/v1/wh/namespaces/z/tables/t")
        .await
        .expect(204);
    floe.delete("/v1/wh/namespaces/z").await.expect(204);
    floe.get("/v1/wh/namespaces/z").await.expect(404);

    let kinds: Vec<String> = floe
        .log()
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "create-namespace",
            "create-namespace",
            "create-namespace",
            "create-namespace",
            "create-namespace",
            "update-namespace-properties",
            "create-table",
            "drop-table",
            "drop-namespace"
        ]
    );
}

#[tokio::test]
async fn tables_create_list_load_etag_rename_register_metrics_and_drop() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    floe.create_namespace(&["other"]).await;
    let created = floe.create_table("ns", "t1").await;
    let location = created["metadata-location"].as_str().unwrap().to_string();
    assert!(
        location.contains("/ns/t1-") && location.contains("/metadata/00000-"),
        "{location}"
    );
    assert!(std::path::Path::new(location.trim_start_matches("file://")).exists());
    floe.create_table("ns", "t2").await;
    floe.create_table("ns", "t3").await;
    assert_eq!(
        floe.post(
            "/v1/wh/namespaces/ns/tables",
            json!({"name": "t1", "schema": simple_schema()})
        )
        .await
        .expect(409)["error"]["type"],
        "AlreadyExistsException"
    );
    floe.post(
        "/v1/wh/namespaces/nope/tables",
        json!({"name": "t", "schema": simple_schema()}),
    )
    .await
    .expect(404);

    let page = floe
        .get("/v1/wh/namespaces/ns/tables?pageSize=2")
        .await
        .expect(200);
    assert_eq!(
        page["identifiers"],
        json!([{"namespace": ["ns"], "name": "t1"}, {"namespace": ["ns"], "name": "t2"}])
    );
    let token = page["next-page-token"].as_str().unwrap();
    let page = floe
        .get(&format!(
            "/v1/wh/namespaces/ns/tables?pageSize=2&pageToken={token}"
        ))
        .await
        .expect(200);
    assert_eq!(
        page["identifiers"],
        json!([{"namespace": ["ns"], "name": "t3"}])
    );

    // Load with ETag; If-None-Match gives 304 until the table changes.
    let reply = floe.get("/v1/wh/namespaces/ns/tables/t1").await;
    let etag = reply.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(reply.expect(200)["metadata-location"], location.as_str());
    let conditional = floe
        .http
        .get(floe.url("/v1/wh/namespaces/ns/tables/t1"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(conditional.status(), 304);
    let table = common::TableId::of(&created);
    let uuid = table.uuid.clone();
    floe.commit("ns", "t1", append_commit(&table, None, 11, 1))
        .await
        .expect(200);
    floe.commit("ns", "t1", append_commit(&table, Some(11), 12, 2))
        .await
        .expect(200);
    let conditional = floe
        .http
        .get(floe.url("/v1/wh/namespaces/ns/tables/t1"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(conditional.status(), 200);

    // snapshots=refs returns only what a ref points at.
    let all = floe
        .get("/v1/wh/namespaces/ns/tables/t1?snapshots=all")
        .await
        .expect(200);
    assert_eq!(all["metadata"]["snapshots"].as_array().unwrap().len(), 2);
    let refs = floe
        .get("/v1/wh/namespaces/ns/tables/t1?snapshots=refs")
        .await
        .expect(200);
    assert_eq!(common::snapshot_ids(&refs), [12]);
    floe.get("/v1/wh/namespaces/ns/tables/t1?snapshots=some")
        .await
        .expect(400);

    assert_eq!(floe.head("/v1/wh/namespaces/ns/tables/t1").await, 204);
    assert_eq!(floe.head("/v1/wh/namespaces/ns/tables/zz").await, 404);
    assert_eq!(
        floe.get("/v1/wh/namespaces/ns/tables/zz").await.expect(404)["error"]["type"],
        "NoSuchTableException"
    );
    // Spark's metadata-table probe: namespace `ns\x1Ft1`, table `snapshots` must be a 404.
    floe.get("/v1/wh/namespaces/ns%1Ft1/tables/snapshots?snapshots=all")
        .await
        .expect(404);

    // Metrics are accepted and discarded.
    let metrics = floe
        .post(
            "/v1/wh/namespaces/ns/tables/t1/metrics",
            json!({"report-type": "scan-report"}),
        )
        .await;
    assert_eq!(metrics.status, 204);

    // Rename across namespaces.
    floe.post(
        "/v1/wh/tables/rename",
        json!({
            "source": {"namespace": ["ns"], "name": "t1"},
            "destination": {"namespace": ["other"], "name": "moved"}
        }),
    )
    .await
    .expect(204);
    floe.get("/v1/wh/namespaces/ns/tables/t1").await.expect(404);
    let moved = floe
        .get("/v1/wh/namespaces/other/tables/moved")
        .await
        .expect(200);
    assert_eq!(moved["metadata"]["table-uuid"], uuid.as_str());
    floe.post(
        "/v1/wh/tables/rename",
        json!({
            "source": {"namespace": ["ns"], "name": "t2"},
            "destination": {"namespace": ["other"], "name": "moved"}
        }),
    )
    .await
    .expect(409);
    floe.post(
        "/v1/wh/tables/rename",
        json!({
            "source": {"namespace": ["ns"], "name": "t2"},
            "destination": {"namespace": ["missing"], "name": "x"}
        }),
    )
    .await
    .expect(404);

    // Register the current metadata of `moved` under a new name, then overwrite t3's pointer with it.
    let moved_location = moved["metadata-location"].as_str().unwrap();
    floe.post(
        "/v1/wh/namespaces/ns/register",
        json!({"name": "again", "metadata-location": moved_location}),
    )
    .await
    .expect(409); // the same table UUID cannot be registered twice in a warehouse
    let t3 = floe.get("/v1/wh/namespaces/ns/tables/t3").await.expect(200);
    floe.delete("/v1/wh/namespaces/ns/tables/t3")
        .await
        .expect(204);
    let t3_location = t3["metadata-location"].as_str().unwrap();
    floe.post(
        "/v1/wh/namespaces/ns/register",
        json!({"name": "t3r", "metadata-location": t3_location}),
    )
    .await
    .expect(200);
    floe.post(
        "/v1/wh/namespaces/ns/register",
        json!({"name": "t3r", "metadata-location": t3_location}),
    )
    .await
    .expect(409);
    floe.post(
        "/v1/wh/namespaces/ns/register",
        json!({"name": "t3r", "metadata-location": t3_location, "overwrite": true}),
    )
    .await
    .expect(200);
    floe.post(
        "/v1/wh/namespaces/ns/register",
        json!({"name": "x", "metadata-location": "file:///etc/passwd"}),
    )
    .await
    .expect(400);

    // Drop with purge removes the table's files; without purge they stay.
    let t2 = floe.get("/v1/wh/namespaces/ns/tables/t2").await.expect(200);
    let t2_file = t2["metadata-location"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_string();
    floe.delete("/v1/wh/namespaces/ns/tables/t2?purgeRequested=true")
        .await
        .expect(204);
    floe.wait_for_purges().await;
    assert!(
        !std::path::Path::new(&t2_file).exists(),
        "purge left {t2_file}"
    );
    assert!(std::path::Path::new(t3_location.trim_start_matches("file://")).exists());
    floe.delete("/v1/wh/namespaces/ns/tables/t2")
        .await
        .expect(404);

    // Versions per table run 1, 2, 3 ... with no gap, across commits, renames, drops.
    let log = floe.log().await;
    let moved_versions: Vec<i64> = log
        .iter()
        .filter(|e| e["table-uuid"] == uuid.as_str())
        .map(|e| e["table-version"].as_i64().unwrap())
        .collect();
    assert_eq!(moved_versions, [1, 2, 3, 4]);
    let register = log.iter().find(|e| e["kind"] == "register-table").unwrap();
    assert!(register["metadata"].is_object());
}

/// DuckDB's CREATE TABLE: a staged create (nothing stored), then a commit with assert-create whose
/// updates build the whole table.
#[tokio::test]
async fn staged_create_then_assert_create_commit() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["dns"]).await;
    let staged = floe
        .post(
            "/v1/wh/namespaces/dns/tables",
            json!({
                "stage-create": true, "name": "t", "schema": simple_schema(),
                "partition-spec": {"spec-id": 0, "type": "struct", "fields": []},
                "write-order": {"order-id": 0, "fields": []},
                "properties": {"format-version": "2"}
            }),
        )
        .await
        .expect(200);
    assert!(staged.get("metadata-location").is_none());
    floe.get("/v1/wh/namespaces/dns/tables/t").await.expect(404);
    assert!(floe.log().await.iter().all(|e| e["kind"] != "create-table"));

    let location = staged["metadata"]["location"].as_str().unwrap();
    let uuid = staged["metadata"]["table-uuid"].as_str().unwrap();
    let create = json!({
        "identifier": {"namespace": ["dns"], "name": "t"},
        "requirements": [{"type": "assert-create"}],
        "updates": [
            {"action": "assign-uuid", "uuid": uuid},
            {"action": "upgrade-format-version", "format-version": 2},
            {"action": "add-schema", "last-column-id": 2, "schema": simple_schema()},
            {"action": "add-spec", "spec": {"spec-id": 0, "fields": []}},
            {"action": "set-default-spec", "spec-id": 0},
            {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
            {"action": "set-default-sort-order", "sort-order-id": 0},
            {"action": "set-location", "location": location},
            {"action": "set-properties", "updates": {"k": "v"}},
            {"action": "set-current-schema", "schema-id": 0}
        ]
    });
    let committed = floe
        .post("/v1/wh/namespaces/dns/tables/t", create.clone())
        .await
        .expect(200);
    assert_eq!(committed["metadata"]["table-uuid"], uuid);
    assert_eq!(committed["metadata"]["properties"]["k"], "v");
    assert_eq!(
        committed["metadata"]["schemas"].as_array().unwrap().len(),
        1
    );
    // A second assert-create for the same table conflicts.
    assert_eq!(
        floe.post("/v1/wh/namespaces/dns/tables/t", create)
            .await
            .expect(409)["error"]["type"],
        "CommitFailedException"
    );
    // DuckDB inserts through transactions/commit.
    let mut change = append_commit(&common::TableId::of(&staged), None, 5, 1);
    change["identifier"] = json!({"namespace": ["dns"], "name": "t"});
    floe.post(
        "/v1/wh/transactions/commit",
        json!({"table-changes": [change]}),
    )
    .await
    .expect(204);
    let loaded = floe.get("/v1/wh/namespaces/dns/tables/t").await.expect(200);
    assert_eq!(loaded["metadata"]["current-snapshot-id"], 5);
    let log = floe.log().await;
    let entry = log.iter().find(|e| e["kind"] == "create-table").unwrap();
    assert_eq!(entry["table-version"], 1);
    assert!(entry["metadata"].is_object());
}

/// Without tokens configured, `Authorization` is ignored (PyIceberg sends `Bearer None`).
#[tokio::test]
async fn without_auth_configured_any_authorization_header_is_ignored() {
    let floe = TestFloe::start().await;
    let reply = floe
        .http
        .get(floe.url("/v1/config?warehouse=wh"))
        .header("Authorization", "Bearer None")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    floe.create_namespace(&["ns"]).await;
    assert_eq!(floe.log().await[0]["principal"], "anonymous");
}

/// With tokens configured, every endpoint needs one; the token's principal goes into the log.
#[tokio::test]
async fn with_auth_configured_tokens_are_required_and_name_the_principal() {
    let url = common::new_database().await;
    let warehouse_dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, warehouse_dir.path());
    settings.auth.tokens = vec![floe::config::TokenSettings {
        principal: "etl-job".to_string(),
        token: "a-long-enough-test-token".into(),
        roles: vec![floe::auth::Role::Admin],
        warehouses: None,
    }];
    let floe = TestFloe::start_with(settings, warehouse_dir).await;

    for (header, path) in [
        (None, "/v1/config?warehouse=wh"),
        (Some("Bearer None"), "/v1/wh/namespaces"),
        (
            Some("Bearer a-long-enough-test-tokeX"),
            "/management/v1/log",
        ),
        (Some("Basic a-long-enough-test-token"), "/v1/wh/namespaces"),
    ] {
        let mut request = floe.http.get(floe.url(path));
        if let Some(header) = header {
            request = request.header("Authorization", header);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), 401, "{header:?} {path}");
        assert_eq!(reply.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["error"]["type"], "NotAuthorizedException");
        assert_eq!(body["error"]["code"], 401);
    }

    let token = "Bearer a-long-enough-test-token";
    let created = floe
        .http
        .post(floe.url("/v1/wh/namespaces"))
        .header("Authorization", token)
        .json(&json!({"namespace": ["ns"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let log: serde_json::Value = floe
        .http
        .get(floe.url("/management/v1/log"))
        .header("Authorization", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["entries"][0]["principal"], "etl-job");
}

/// Purge deletes the files the table's metadata references, not everything under its location: a
/// table placed at a namespace directory must not take the namespace's other tables with it.
#[tokio::test]
async fn purge_spares_other_tables_under_the_same_location() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    let inner = floe.create_table("ns", "inner").await;
    let inner_file = inner["metadata-location"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_string();
    let root = floe.settings.warehouses[0].root.clone();
    let outer = floe
        .post(
            "/v1/wh/namespaces/ns/tables",
            json!({"name": "outer", "schema": simple_schema(), "location": format!("{root}/ns")}),
        )
        .await
        .expect(200);
    let outer_file = outer["metadata-location"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_string();
    floe.delete("/v1/wh/namespaces/ns/tables/outer?purgeRequested=True")
        .await
        .expect(204);
    floe.wait_for_purges().await;
    assert!(
        !std::path::Path::new(&outer_file).exists(),
        "purge left {outer_file}"
    );
    assert!(
        std::path::Path::new(&inner_file).exists(),
        "purge deleted another table's file"
    );
    floe.get("/v1/wh/namespaces/ns/tables/inner")
        .await
        .expect(200);
}

/// The management API's OpenAPI document is served as checked in, for tools and browsers.
#[tokio::test]
async fn the_management_openapi_document_is_served() {
    let floe = TestFloe::start().await;
    let served: Value = floe.get("/management/v1/openapi.json").await.expect(200);
    let checked_in: Value =
        serde_json::from_str(include_str!("../openapi/management.json")).unwrap();
    assert_eq!(served, checked_in);
    assert!(served["paths"]["/management/v1/log"].is_object());
    floe.server.stop().await;
}
